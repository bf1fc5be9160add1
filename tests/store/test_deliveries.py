"""The `deliveries` repository contract, on SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from calm_mail.records import ContentSource, DeliveryState
from calm_mail.store import Ledger, delivery_id_for, shard_of
from tests.store.helpers import CAMPAIGN, EDITION, edition_id, plan, planned


def test_delivery_ids_are_deterministic_and_opaque() -> None:
    one = delivery_id_for(CAMPAIGN, EDITION, "user-1")
    assert one == delivery_id_for(CAMPAIGN, EDITION, "user-1")
    assert len(one) == 22 and "user" not in one
    assert one.replace("-", "").replace("_", "").isalnum()
    assert one != delivery_id_for(CAMPAIGN, "2026-W49", "user-1")
    assert one != delivery_id_for("other", EDITION, "user-1")


def test_shard_of_is_stable_and_nested() -> None:
    for user in ("a", "user-42", "ü"):
        full = shard_of(user)
        assert 0 <= full < 1024
        assert shard_of(user, 4) == full % 4 and shard_of(user, 1) == 0
    with pytest.raises(ValueError):
        shard_of("a", 3)


def test_add_planned_is_insert_or_ignore(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    assert ledger.deliveries.add_planned(eid, CAMPAIGN, iter(plan(12))) == 12
    changed = [planned(f"u{i}", email="new@example.com") for i in range(12)]
    assert ledger.deliveries.add_planned(eid, CAMPAIGN, [*changed, planned("u99")]) == 1
    row = ledger.deliveries.get_delivery(delivery_id_for(CAMPAIGN, EDITION, "u0"))
    assert row is not None and row.email == "u0@example.com"  # first plan wins


def test_add_planned_row_contents(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    send_at = datetime(2026, 11, 28, 8, 0, tzinfo=timezone(timedelta(hours=9)))
    p = planned(
        "u1",
        arm="personalized",
        source=ContentSource.PERSONALIZE,
        fallback=True,
        item_ids=("x", "y"),
        send_at=send_at,
        timezone="Asia/Tokyo",
        locale="ja-JP",
    )
    ledger.deliveries.add_planned(eid, CAMPAIGN, [p])
    row = ledger.deliveries.get_delivery(delivery_id_for(CAMPAIGN, EDITION, "u1"))
    assert row is not None
    assert (row.edition_id, row.user_id, row.email, row.locale, row.arm) == (
        eid,
        "u1",
        "u1@example.com",
        "ja-JP",
        "personalized",
    )
    assert (row.source, row.fallback, row.item_ids, row.timezone) == (
        "personalize",
        True,
        ("x", "y"),
        "Asia/Tokyo",
    )
    assert row.send_at == send_at and row.send_at.tzinfo is UTC
    assert (row.state, row.attempts, row.message_id, row.last_error) == (
        DeliveryState.PLANNED,
        0,
        None,
        None,
    )
    assert row.claimed_at is None and row.sent_at is None


def test_holdouts_are_skipped_rows(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.deliveries.add_planned(
        eid, CAMPAIGN, [planned("h1", arm="holdout", source=ContentSource.HOLDOUT), planned("u1")]
    )
    assert ledger.deliveries.counts(eid) == {("skipped", "holdout"): 1, ("planned", "control"): 1}
    assert ledger.deliveries.failure_reasons(eid) == {"holdout": 1}
    assert [r.user_id for r in ledger.deliveries.claim(eid, worker="w", limit=10)] == ["u1"]


def test_add_planned_refuses_another_editions_rows(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    with pytest.raises(ValueError, match="2026-W49"):
        ledger.deliveries.add_planned(
            eid, CAMPAIGN, [planned("u1"), planned("u2", edition="2026-W49")]
        )
    assert ledger.deliveries.counts(eid) == {}  # the bad row's chunk is not written
    with pytest.raises(LookupError):
        ledger.deliveries.add_planned(eid + 1000, CAMPAIGN, [planned("u1")])


def test_claim_moves_planned_rows_once(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.deliveries.add_planned(eid, CAMPAIGN, plan(10))
    first = ledger.deliveries.claim(eid, worker="w1", limit=4)
    second = ledger.deliveries.claim(eid, worker="w2", limit=100)
    assert len(first) == 4 and len(second) == 6
    assert not {r.delivery_id for r in first} & {r.delivery_id for r in second}
    assert ledger.deliveries.claim(eid, worker="w3", limit=100) == []
    assert ledger.deliveries.claim(eid, worker="w3", limit=0) == []
    for row in first + second:
        assert row.state is DeliveryState.CLAIMED and row.attempts == 1
        assert row.claimed_at is not None and row.claimed_at.tzinfo is UTC
    assert ledger.deliveries.counts(eid) == {
        ("claimed", "control"): 5,
        ("claimed", "personalized"): 5,
    }


def test_claim_by_shard_partitions_the_edition(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.deliveries.add_planned(eid, CAMPAIGN, plan(200))
    seen: set[str] = set()
    for k in range(4):
        rows = ledger.deliveries.claim(eid, worker=f"w{k}", limit=1000, shard=(k, 4))
        assert rows and all(shard_of(r.user_id, 4) == k for r in rows)
        seen |= {r.delivery_id for r in rows}
    assert len(seen) == 200
    with pytest.raises(ValueError):
        ledger.deliveries.claim(eid, worker="w", limit=1, shard=(0, 3))
    with pytest.raises(ValueError):
        ledger.deliveries.claim(eid, worker="w", limit=1, shard=(4, 4))


def test_claim_only_touches_its_edition(ledger: Ledger) -> None:
    a, b = edition_id(ledger, "2026-W48"), edition_id(ledger, "2026-W49")
    ledger.deliveries.add_planned(a, CAMPAIGN, plan(3))
    ledger.deliveries.add_planned(b, CAMPAIGN, plan(3, edition="2026-W49"))
    assert {r.edition_id for r in ledger.deliveries.claim(a, worker="w", limit=10)} == {a}
    assert ledger.deliveries.counts(b) == {
        ("planned", "control"): 2,
        ("planned", "personalized"): 1,
    }


def test_mark_sent_only_from_claimed(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.deliveries.add_planned(eid, CAMPAIGN, plan(2))
    planned_id = delivery_id_for(CAMPAIGN, EDITION, "u1")
    assert ledger.deliveries.mark_sent(planned_id, message_id="m") is False  # never claimed
    (row,) = ledger.deliveries.claim(eid, worker="w", limit=1)
    assert ledger.deliveries.mark_sent(row.delivery_id, message_id="msg-1") is True
    sent = ledger.deliveries.get_delivery(row.delivery_id)
    assert sent is not None and sent.state is DeliveryState.SENT and sent.message_id == "msg-1"
    assert sent.sent_at is not None and sent.sent_at.tzinfo is UTC
    # sent never goes back
    assert ledger.deliveries.mark_sent(row.delivery_id, message_id="other") is False
    assert ledger.deliveries.mark_failed(row.delivery_id, error="x", retriable=True) is False
    assert ledger.deliveries.mark_skipped(row.delivery_id, reason="x") is False
    assert ledger.deliveries.release_claims([row.delivery_id]) == 0
    after = ledger.deliveries.get_delivery(row.delivery_id)
    assert after == sent
    assert ledger.deliveries.mark_sent("no-such-id", message_id=None) is False


def test_mark_failed_retriable_goes_back_to_planned(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.deliveries.add_planned(eid, CAMPAIGN, plan(1))
    (row,) = ledger.deliveries.claim(eid, worker="w", limit=1)
    assert ledger.deliveries.mark_failed(row.delivery_id, error="503 busy", retriable=True)
    again = ledger.deliveries.get_delivery(row.delivery_id)
    assert again is not None and again.state is DeliveryState.PLANNED
    assert again.last_error == "503 busy"
    (row2,) = ledger.deliveries.claim(eid, worker="w", limit=1)
    assert row2.attempts == 2
    assert ledger.deliveries.mark_failed(row2.delivery_id, error="400 bad address", retriable=False)
    final = ledger.deliveries.get_delivery(row2.delivery_id)
    assert final is not None and final.state is DeliveryState.FAILED
    assert ledger.deliveries.mark_failed(row2.delivery_id, error="x", retriable=True) is False
    assert ledger.deliveries.failure_reasons(eid) == {"400 bad address": 1}


def test_mark_failed_refused_on_planned(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.deliveries.add_planned(eid, CAMPAIGN, plan(1))
    delivery_id = delivery_id_for(CAMPAIGN, EDITION, "u0")
    assert ledger.deliveries.mark_failed(delivery_id, error="x", retriable=False) is False
    row = ledger.deliveries.get_delivery(delivery_id)
    assert row is not None and row.state is DeliveryState.PLANNED and row.last_error is None


def test_mark_skipped_from_planned_or_claimed(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.deliveries.add_planned(eid, CAMPAIGN, plan(2))
    (claimed,) = ledger.deliveries.claim(eid, worker="w", limit=1)
    other = (
        {delivery_id_for(CAMPAIGN, EDITION, u) for u in ("u0", "u1")} - {claimed.delivery_id}
    ).pop()
    assert ledger.deliveries.mark_skipped(claimed.delivery_id, reason="suppressed")
    assert ledger.deliveries.mark_skipped(other, reason="render_error")
    assert ledger.deliveries.mark_skipped(other, reason="again") is False
    assert ledger.deliveries.failure_reasons(eid) == {"suppressed": 1, "render_error": 1}
    assert ledger.deliveries.claim(eid, worker="w", limit=5) == []


def test_release_claims_and_claimed_before(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.deliveries.add_planned(eid, CAMPAIGN, plan(5))
    rows = ledger.deliveries.claim(eid, worker="w", limit=3)
    ids = [r.delivery_id for r in rows]
    later = datetime.now(UTC) + timedelta(seconds=5)
    assert {r.delivery_id for r in ledger.deliveries.claimed_before(eid, later)} == set(ids)
    assert ledger.deliveries.claimed_before(eid, datetime.now(UTC) - timedelta(hours=1)) == []
    assert ledger.deliveries.release_claims([*ids[:2], "unknown"]) == 2
    assert {r.delivery_id for r in ledger.deliveries.claimed_before(eid, later)} == {ids[2]}
    assert ledger.deliveries.release_claims([]) == 0
    with pytest.raises(ValueError, match="aware"):
        ledger.deliveries.claimed_before(eid, datetime(2026, 1, 1))


def test_delete_deliveries_forgets_one_edition_and_audits_it(ledger: Ledger) -> None:
    dry, other = edition_id(ledger, "2026-W48"), edition_id(ledger, "2026-W49")
    ledger.deliveries.add_planned(dry, CAMPAIGN, plan(4))
    ledger.deliveries.add_planned(other, CAMPAIGN, plan(2, edition="2026-W49"))
    ledger.deliveries.claim(dry, worker="w", limit=2)
    assert ledger.deliveries.delete_deliveries(dry) == 4
    assert ledger.deliveries.counts(dry) == {}
    assert sum(ledger.deliveries.counts(other).values()) == 2
    assert [(e.action, e.detail) for e in ledger.editions.edition_log(dry)] == [
        ("delete_deliveries", {"deleted": 4})
    ]
    assert ledger.deliveries.add_planned(dry, CAMPAIGN, plan(4)) == 4  # planned afresh


def test_iter_deliveries_pages_through_everything(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.deliveries.add_planned(eid, CAMPAIGN, plan(5100))
    ledger.deliveries.claim(eid, worker="w", limit=100)
    every = list(ledger.deliveries.iter_deliveries(eid))
    assert len(every) == 5100 and len({r.delivery_id for r in every}) == 5100
    assert [r.delivery_id for r in every] == sorted(r.delivery_id for r in every)
    claimed = list(ledger.deliveries.iter_deliveries(eid, state=DeliveryState.CLAIMED))
    assert len(claimed) == 100 and all(r.state is DeliveryState.CLAIMED for r in claimed)
    assert list(ledger.deliveries.iter_deliveries(eid + 1)) == []
