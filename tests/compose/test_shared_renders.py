"""Shared renderings: an item list many users share is rendered once with a placeholder id,
and every such user's email must be exactly what a full rendering gives them."""

from __future__ import annotations

import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.campaign import Campaign
from calm_mail.compose.composer import Composer
from calm_mail.compose.templates import load_template_set
from calm_mail.records import Item

from .conftest import EDITION, LOCALES, ROOT, DeliveryFactory

LISTS = [("m1", "c3", "s1"), ("x1", "sc1", "mu1", "m1"), ("c1", "x1")]
URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_shared_renderings_equal_full_ones_for_every_user(
    campaign: Campaign, catalog: dict[str, Item], delivery: DeliveryFactory
) -> None:
    shared = Composer(campaign, catalog, EDITION)
    full = Composer(campaign, catalog, EDITION, share_renders=False)
    assert shared.shared is not None and full.shared is None
    for n in range(60):
        d = delivery(
            user_id=f"u{n}",
            email=f"u{n}@example.com",
            locale=LOCALES[n % len(LOCALES)],
            item_ids=LISTS[n % len(LISTS)],
        )
        delivery_id = f"id{n:03d}-" + "x" * 16
        assert shared.compose(d, delivery_id) == full.compose(d, delivery_id)
    # 21 (locale, list) pairs, each seen ~3 times: the second sight renders for sharing and
    # the third is a copy, so the shared path really ran.
    assert shared.shared.hits > 0
    assert len(shared.shared.renders) <= 21


def test_an_id_that_needs_quoting_is_rendered_in_full(
    composer: Composer, catalog: dict[str, Item], delivery: DeliveryFactory
) -> None:
    full = Composer(composer.campaign, catalog, EDITION, share_renders=False)
    for delivery_id in ("a/b c", "a/b c", "a/b c"):
        assert composer.compose(delivery(), delivery_id) == full.compose(delivery(), delivery_id)


def test_a_template_that_changes_the_id_turns_sharing_off(
    tmp_path: Path, campaign: Campaign, catalog: dict[str, Item], delivery: DeliveryFactory
) -> None:
    folder = tmp_path / "weekly_winddown"
    shutil.copytree(ROOT / "templates" / "weekly_winddown", folder)
    footer = folder / "partials" / "footer.mjml"
    footer.write_text(footer.read_text().replace("{{ links.app }}", "{{ links.app|upper }}"))
    templates = load_template_set(folder)
    composer = Composer(campaign, catalog, EDITION, templates=templates)
    assert composer.shared is None
    d = delivery()
    first, second = composer.compose(d, "aaaa" * 5 + "zz"), composer.compose(d, "bbbb" * 5 + "zz")
    assert "RID=AAAAAAAAAAAAAAAAAAAAZZ" in first.html
    assert "RID=BBBBBBBBBBBBBBBBBBBBZZ" in second.html


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    picks=st.lists(
        st.tuples(
            st.sampled_from(LOCALES),
            st.lists(st.sampled_from(["m1", "s1", "x1", "sc1", "mu1", "c2", "c5"]), max_size=6),
            st.text(URL_SAFE, min_size=1, max_size=30),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_any_sequence_of_users_gets_what_a_full_rendering_gives(
    composer: Composer,
    catalog: dict[str, Item],
    delivery: DeliveryFactory,
    picks: list[tuple[str, list[str], str]],
) -> None:
    shared = Composer(composer.campaign, catalog, EDITION, templates=composer.templates)
    full = Composer(
        composer.campaign, catalog, EDITION, templates=composer.templates, share_renders=False
    )
    for locale, items, delivery_id in picks + picks:  # every pick twice: sharing kicks in
        d = delivery(locale=locale, item_ids=tuple(items))
        assert shared.compose(d, delivery_id) == full.compose(d, delivery_id)
