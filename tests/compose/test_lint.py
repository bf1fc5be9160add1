"""Template lint: the shipped template is clean; planted problems are found with file:line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from calm_mail.campaign import Campaign
from calm_mail.compose.lint import lint_templates

from .conftest import ROOT


@pytest.fixture
def copy(tmp_path: Path, campaign: Campaign) -> tuple[Campaign, Path]:
    """The campaign pointed at a private copy of its template folder."""
    folder = tmp_path / "templates" / campaign.campaign.template
    shutil.copytree(campaign.template_dir, folder)
    return campaign.model_copy(update={"root": tmp_path}), folder


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def test_shipped_template_is_clean(campaign: Campaign) -> None:
    assert campaign.template_dir == ROOT / "templates" / "weekly_winddown"
    assert lint_templates(campaign) == []


def test_undeclared_variable_is_reported_with_file_and_line(copy: tuple[Campaign, Path]) -> None:
    campaign, folder = copy
    footer = folder / "partials" / "footer.mjml"
    edit(footer, "{{ t.signoff }}", "{{ t.signoff }} {{ user_first_name }}")
    line = line_of(footer, "user_first_name")
    problems = lint_templates(campaign)
    assert any(
        p.startswith(f"partials/footer.mjml:{line}: {{{{ user_first_name }}}}") for p in problems
    ), problems


def test_unknown_string_key_and_card_field_are_reported(copy: tuple[Campaign, Path]) -> None:
    campaign, folder = copy
    card = folder / "partials" / "item_card.mjml"
    edit(card, "{{ card.duration }}", "{{ card.durration }} {{ t.listen_now }}")
    line = line_of(card, "durration")
    problems = lint_templates(campaign)
    assert f"partials/item_card.mjml:{line}: card.durration does not exist" in problems
    assert f"partials/item_card.mjml:{line}: t.listen_now does not exist" in problems


def test_locale_missing_a_key_is_reported(copy: tuple[Campaign, Path]) -> None:
    campaign, folder = copy
    strings = folder / "strings" / "de-DE.toml"
    edit(strings, 'sleep_story = "Einschlafgeschichte"\n', "")
    edit(strings, 'unsubscribe = "Abmelden"', 'unsubscrbe = "Abmelden"')
    problems = lint_templates(campaign)
    types_line = line_of(strings, "[types]")
    assert (
        f"strings/de-DE.toml:{types_line}: missing key 'types.sleep_story' (en-US has it)"
        in problems
    )
    assert "strings/de-DE.toml:1: missing key 'unsubscribe' (en-US has it)" in problems
    typo_line = line_of(strings, "unsubscrbe")
    assert f"strings/de-DE.toml:{typo_line}: key 'unsubscrbe' is not in en-US (a typo?)" in problems


def test_placeholder_mismatch_and_bad_subject_are_reported(copy: tuple[Campaign, Path]) -> None:
    campaign, folder = copy
    strings = folder / "strings" / "fr-FR.toml"
    edit(strings, 'sessions = "{n} séances"', 'sessions = "{count} séances"')
    edit(strings, '{{ first_title }}"\n', '{{ first_name }}"\n')
    problems = lint_templates(campaign)
    assert any(
        p.startswith(f"strings/fr-FR.toml:{line_of(strings, 'sessions =')}: 'sessions'")
        for p in problems
    ), problems
    assert any(
        p.startswith(f"strings/fr-FR.toml:{line_of(strings, 'subject =')}: subject uses")
        and "first_name" in p
        for p in problems
    ), problems


def test_image_without_alt_is_reported_in_source_and_render(copy: tuple[Campaign, Path]) -> None:
    campaign, folder = copy
    card = folder / "partials" / "item_card.mjml"
    edit(card, ' alt="{{ card.alt }}"', "")
    line = line_of(card, "<mj-image")
    problems = lint_templates(campaign)
    assert f"partials/item_card.mjml:{line}: <mj-image> has no alt text" in problems
    assert any("rendered en-US: <img src=" in p and "has no alt text" in p for p in problems)


def test_mjml_that_does_not_parse_names_the_partial(copy: tuple[Campaign, Path]) -> None:
    campaign, folder = copy
    card = folder / "partials" / "collection_card.mjml"
    edit(card, "</mj-column>\n", "\n")
    problems = lint_templates(campaign)
    assert any(
        p.startswith("partials/collection_card.mjml:") and "MJML does not parse" in p
        for p in problems
    ), problems


def test_missing_unsubscribe_and_address_are_reported(copy: tuple[Campaign, Path]) -> None:
    campaign, folder = copy
    footer = folder / "partials" / "footer.mjml"
    edit(footer, '<a href="{{ links.unsubscribe }}">{{ t.unsubscribe }}</a>', "")
    edit(footer, "{{ sender.postal_address }}", "")
    text = folder / "text.txt.j2"
    edit(text, "{{ t.unsubscribe }}: {{ links.unsubscribe }}\n", "")
    problems = lint_templates(campaign)
    joined = "\n".join(problems)
    assert "rendered ja-JP: HTML has no unsubscribe link" in joined
    assert "rendered ja-JP: text part has no unsubscribe link" in joined
    assert "rendered en-US: HTML lacks the postal address" in joined


def test_oversized_email_is_reported(copy: tuple[Campaign, Path]) -> None:
    campaign, folder = copy
    card = folder / "partials" / "item_card.mjml"
    padding = "".join('<a href="{{ card.url }}">.</a>' for _ in range(40))
    edit(
        card, "{{ card.narrated_by }}</mj-text>", "{{ card.narrated_by }}" + padding + "</mj-text>"
    )
    problems = lint_templates(campaign)
    assert any("after click tracking rewrites its links" in p for p in problems), problems


def test_mrml_pitfalls_are_reported(copy: tuple[Campaign, Path]) -> None:
    campaign, folder = copy
    card = folder / "partials" / "item_card.mjml"
    edit(card, 'width="180px"', 'width="{{ 180 }}px"')
    edit(card, '<mj-text mj-class="label"', '<mj-txt></mj-txt><mj-text mj-class="label"')
    problems = "\n".join(lint_templates(campaign))
    assert "Jinja in width= is dropped by mjml-python" in problems
    assert "<mj-txt> is not an MJML component" in problems
