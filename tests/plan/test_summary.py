"""The plan summary's arithmetic, on hand-made deliveries whose right answer is known."""

from __future__ import annotations

from datetime import UTC, datetime

from calm_mail.plan.summary import Tally
from calm_mail.records import ContentSource, Exclusion, PlannedDelivery

from .conftest import item

CATALOG = {
    i.item_id: i
    for i in [
        item("m1", content_type="meditation"),
        item("m2", content_type="meditation"),
        item("s1", content_type="sleep_story"),
        item("k1", content_type="kids", is_kids=True),
    ]
}
NEW = frozenset({"m1", "k1"})
KIDS = frozenset({"k1"})


def delivery(
    user: str, arm: str, items: tuple[str, ...], *, fallback: bool = False
) -> PlannedDelivery:
    return PlannedDelivery(
        edition="2026-W48",
        user_id=user,
        email=f"{user}@example.com",
        locale="en-US",
        arm=arm,
        source=ContentSource.EDITORIAL,
        fallback=fallback,
        item_ids=items,
        send_at=datetime(2026, 11, 29, 8, tzinfo=UTC),
        timezone="UTC",
    )


def test_the_summary_counts_items_types_new_share_and_kids_leaks() -> None:
    tally = Tally({"a": "editorial", "b": "personalize"}, CATALOG, NEW, KIDS)
    tally.audience = 5
    tally.add(delivery("u1", "a", ("m1", "s1")), adult=True)
    tally.add(delivery("u2", "a", ("m1", "m2", "k1"), fallback=True), adult=True)  # a leak
    tally.add(delivery("u3", "a", ("k1",)), adult=False)  # kids content for a kids profile
    tally.add(delivery("u4", "b", ("s1", "m2")), adult=True)
    tally.add(Exclusion(edition="2026-W48", user_id="u5", reason="no_opt_in"), adult=True)
    s = tally.summary(
        campaign="c",
        edition="2026-W48",
        experiment="x",
        weights={"a": 1, "b": 1},
        shard=None,
        dropped_by_step={},
        skips={},
        warnings=[],
    )
    a, b = s.arms["a"], s.arms["b"]
    assert (a.users, a.fallback, b.users, b.fallback) == (3, 1, 1, 0)
    assert a.items_mean == 6 / 3 and b.items_mean == 2.0
    assert a.type_mix == {"kids": 2, "meditation": 3, "sleep_story": 1}
    assert b.type_mix == {"meditation": 1, "sleep_story": 1}
    assert a.new_share == 4 / 6  # m1 twice, k1 twice
    assert b.new_share == 0.0
    assert (a.kids_leaks, b.kids_leaks, s.kids_leaks) == (1, 0, 1)
    assert s.excluded == {"no_opt_in": 1} and s.eligible == 4
