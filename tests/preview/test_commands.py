"""`calm-mail preview`: the same email a real send carries, for users, personas and other arms."""

from __future__ import annotations

import email
import tomllib
from collections import Counter
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calm_mail.campaign import Campaign
from calm_mail.errors import UsageError
from calm_mail.inputs import iter_audience
from calm_mail.ops.pipeline import DRY_SUFFIX
from calm_mail.preview.personas import PERSONAS
from calm_mail.preview.preview import EditionPreview, UnknownUser
from calm_mail.records import SkipCounter
from calm_mail.store import Ledger, delivery_id_for
from tests.preview.conftest import CAMPAIGN, EDITION, Cli, DryRun

PREVIEW = ["preview", CAMPAIGN, "--edition", EDITION.key]


@pytest.fixture(scope="module")
def prepared(campaign: Campaign) -> EditionPreview:
    """The edition prepared for previews, with an empty ledger (hash arms)."""
    return EditionPreview(campaign, EDITION)


def eml_parts(path: Path) -> tuple[str, str]:
    """The (html, text) parts of an outbox .eml, decoded, with the wire's CRLF line ends
    turned back into the newlines the composer wrote."""
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    html, text = message.get_body(("html",)), message.get_body(("plain",))
    assert html is not None and text is not None
    return html.get_content().replace("\r\n", "\n"), text.get_content().replace("\r\n", "\n")


def as_mime_part(body: str) -> str:
    """A body as its outbox MIME part decodes (the same text). The body must not hold a CR
    of its own, or turning CRLF back into LF would not be exact."""
    assert "\r" not in body
    return body


def pick_users(rows: dict[str, dict[str, Any]], per_kind: int = 3) -> list[str]:
    """A few users of each (arm, fallback) kind, so every path of the plan is compared."""
    chosen: list[str] = []
    seen: Counter[tuple[str, bool]] = Counter()
    for user_id, row in sorted(rows.items()):
        kind = (row["arm"], bool(row["fallback"]))
        if seen[kind] < per_kind:
            seen[kind] += 1
            chosen.append(user_id)
    return chosen


# ----------------------------------------------------------------------------- byte-identical


def test_preview_is_byte_identical_to_the_dry_run_send(campaign: Campaign, dry_run: DryRun) -> None:
    users = pick_users(dry_run.rows)
    kinds = {(dry_run.rows[u]["arm"], dry_run.rows[u]["fallback"]) for u in users}
    assert {arm for arm, _ in kinds} == {"control", "personalized"}
    assert any(fallback for _, fallback in kinds), "the demo data plants fallback users"
    with Ledger.connect(dry_run.ledger_url) as ledger:
        prepared = EditionPreview(
            campaign,
            EDITION,
            store=ledger,
            ledger_campaign=campaign.name + DRY_SUFFIX,
        )
        for user_id in users:
            row = dry_run.rows[user_id]
            shown = prepared.user(user_id).for_arm()
            assert shown.message is not None and shown.delivery is not None
            html, text = eml_parts(dry_run.outbox / row["file"])
            assert as_mime_part(shown.message.html) == html, user_id
            assert as_mime_part(shown.message.text) == text, user_id
            assert shown.message.subject == row["subject"]
            assert list(shown.delivery.item_ids) == row["item_ids"]
            assert shown.delivery.fallback == row["fallback"]


def test_cli_html_is_the_real_send_html(cli: Cli, dry_run: DryRun, tmp_path: Path) -> None:
    """The CLI uses the real send's delivery id; the dry run's differs only in that id."""
    user_id = pick_users(dry_run.rows, per_kind=1)[0]
    row = dry_run.rows[user_id]
    out = tmp_path / "preview.html"
    result = cli(*PREVIEW, "--user", user_id, "--out", str(out))
    assert result.exit_code == 0, result.output
    html, _ = eml_parts(dry_run.outbox / row["file"])
    real_id = delivery_id_for(CAMPAIGN, EDITION.key, user_id)
    dry_id = delivery_id_for(CAMPAIGN + DRY_SUFFIX, EDITION.key, user_id)
    assert dry_id in html and real_id not in html
    assert as_mime_part(out.read_text(encoding="utf-8")) == html.replace(dry_id, real_id)
    assert f"arm {row['arm']}" in result.stderr


def test_cli_writes_html_to_stdout_and_text_with_text(cli: Cli, dry_run: DryRun) -> None:
    user_id = pick_users(dry_run.rows, per_kind=1)[0]
    html = cli(*PREVIEW, "--user", user_id)
    text = cli(*PREVIEW, "--user", user_id, "--text")
    assert html.exit_code == 0 and text.exit_code == 0
    assert html.stdout.lstrip().lower().startswith("<!doctype html")
    _, eml_text = eml_parts(dry_run.outbox / dry_run.rows[user_id]["file"])
    real_id = delivery_id_for(CAMPAIGN, EDITION.key, user_id)
    dry_id = delivery_id_for(CAMPAIGN + DRY_SUFFIX, EDITION.key, user_id)
    assert as_mime_part(text.stdout) == eml_text.replace(dry_id, real_id)
    assert "<html" not in text.stdout


# ----------------------------------------------------------------------------- arms


def test_arm_shows_the_other_source_with_the_same_rules(
    cli: Cli, prepared: EditionPreview, dry_run: DryRun
) -> None:
    user_id = next(
        u for u, r in sorted(dry_run.rows.items()) if r["arm"] == "control" and not r["fallback"]
    )
    own = cli(*PREVIEW, "--user", user_id)
    other = cli(*PREVIEW, "--user", user_id, "--arm", "personalized")
    assert own.exit_code == 0 and other.exit_code == 0
    assert "arm personalized (source personalize" in other.stderr and "forced" in other.stderr
    result = prepared.user(user_id, arms=["personalized"])
    control, personalized = result.for_arm("control"), result.for_arm("personalized")
    assert control.own and not personalized.own
    assert (control.source, personalized.source) == ("editorial", "personalize")
    assert [s.step for s in control.trace.steps] == [s.step for s in personalized.trace.steps]
    assert personalized.delivery is not None and control.delivery is not None
    if not personalized.fallback:
        assert personalized.delivery.item_ids != control.delivery.item_ids
        assert own.stdout != other.stdout
    # The forced arm keeps the user's delivery id: same links, tokens and unsubscribe.
    assert result.delivery_id in other.stdout


def test_unknown_arm_is_a_usage_error(cli: Cli, dry_run: DryRun) -> None:
    user_id = next(iter(sorted(dry_run.rows)))
    result = cli(*PREVIEW, "--user", user_id, "--arm", "nope")
    assert result.exit_code == 2
    assert "no arm 'nope'" in result.stderr and "control, personalized" in result.stderr


# ----------------------------------------------------------------------------- personas


def _strings(root: Path, locale: str) -> dict[str, Any]:
    with (root / "templates" / CAMPAIGN / "strings" / f"{locale}.toml").open("rb") as fh:
        return tomllib.load(fh)


@pytest.mark.parametrize("name", sorted(PERSONAS))
def test_every_persona_renders(cli: Cli, demo_root: Path, name: str) -> None:
    persona = PERSONAS[name]
    result = cli(*PREVIEW, "--persona", name)
    assert result.exit_code == 0, result.output
    heading = _strings(demo_root, persona.locale)["heading"]
    assert heading.replace("&", "&amp;").replace("'", "&#39;") in result.stdout
    assert f"persona:{name}" in result.stderr
    text = cli(*PREVIEW, "--persona", name, "--text")
    assert text.exit_code == 0 and heading in text.stdout


def test_personas_go_through_the_planner(campaign: Campaign, prepared: EditionPreview) -> None:
    arms = prepared.arms
    missing = prepared.persona("missing", arms=arms)
    assert missing.for_arm("personalized").fallback
    assert "no usable Personalize line" in missing.for_arm("personalized").trace.fallback_why
    sleep = prepared.persona("sleep", arms=arms).for_arm("personalized")
    assert not sleep.fallback and sleep.delivery is not None
    kinds = {prepared.catalog[i].content_type for i in sleep.delivery.item_ids}
    assert kinds & {"sleep_story", "soundscape", "music"}
    spanish = prepared.persona("spanish", arms=arms).for_arm("personalized")
    assert spanish.message is not None and spanish.delivery is not None
    assert "es" in {prepared.catalog[i].language for i in spanish.delivery.item_ids}
    experienced = prepared.persona("experienced", arms=arms)
    completed = [
        d
        for arm in experienced.arms
        for s in arm.trace.steps
        if s.step == "exclude_completed"
        for d in s.dropped
    ]
    assert completed, "the experienced persona's history is applied by exclude_completed"
    # Same inputs, same email: personas are deterministic.
    again = EditionPreview(campaign, EDITION).persona("sleep", arms=arms).for_arm("personalized")
    assert again.message == sleep.message


def test_unknown_persona_is_a_usage_error(cli: Cli) -> None:
    result = cli(*PREVIEW, "--persona", "pirate")
    assert result.exit_code == 2
    assert "beginner" in result.stderr  # click lists the choices


# ----------------------------------------------------------------------------- no email


def test_unknown_user_exits_2(cli: Cli) -> None:
    result = cli(*PREVIEW, "--user", "no-such-user")
    assert result.exit_code == 2
    assert "'no-such-user' is not in the audience" in result.stderr
    assert "Traceback" not in result.output


def test_excluded_user_names_the_reason(
    cli: Cli, campaign: Campaign, prepared: EditionPreview
) -> None:
    path = campaign.input_path("audience", EDITION)
    user = next(u for u in iter_audience(path, skips=SkipCounter()) if not u.email_opt_in)
    assert prepared.user(user.user_id).for_arm().exclusion == "no_opt_in"
    result = cli(*PREVIEW, "--user", user.user_id)
    assert result.exit_code == 1
    assert "has not opted in to email" in result.stderr and "no_opt_in" in result.stderr


def test_needs_exactly_one_of_user_and_persona(cli: Cli) -> None:
    neither = cli(*PREVIEW)
    both = cli(*PREVIEW, "--user", "1", "--persona", "sleep")
    assert neither.exit_code == both.exit_code == 2
    assert "exactly one of --user ID or --persona NAME" in neither.stderr


@settings(max_examples=25, deadline=None)
@given(user_id=st.text(min_size=1, max_size=40).filter(lambda s: not s.strip().isdigit()))
def test_junk_user_ids_are_unknown_users(prepared: EditionPreview, user_id: str) -> None:
    with pytest.raises(UnknownUser) as caught:
        prepared.user(user_id)
    assert isinstance(caught.value, UsageError) and repr(user_id) in str(caught.value)


def test_the_holdout_arm_has_no_email(cli: Cli, demo_root: Path) -> None:
    args = ["preview", "winddown_abc", "--edition", EDITION.key, "--persona", "sleep"]
    result = cli(*args, "--arm", "holdout")
    assert result.exit_code == 1
    assert "holdout arm 'holdout'" in result.stderr and "gets no email" in result.stderr
    popular = cli(*args, "--arm", "popular")
    assert popular.exit_code == 0 and "source popular" in popular.stderr


def test_a_changed_seed_is_refused_as_the_real_send_refuses_it(
    cli: Cli, campaign: Campaign, tmp_path: Path
) -> None:
    experiment = campaign.experiment
    with Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        ledger.assignments.record_experiment(experiment.name, "an-older-seed", experiment.weights)
    result = cli(*PREVIEW, "--persona", "beginner")
    assert result.exit_code == 2
    assert "already ran with seed 'an-older-seed'" in result.stderr
