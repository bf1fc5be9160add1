"""The ledger contract suite: every test runs on SQLite and on PostgreSQL (see conftest)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from calm_mail.records import Completion, ContentSource, DeliveryState, Event, EventType
from calm_mail.store import Ledger, delivery_id_for, shard_of
from calm_mail.store import schema as s
from calm_mail.store.db import normalize_url
from calm_mail.store.migrate import MIGRATIONS, current_version
from tests.store.helpers import EDITION, SEND_AT, plan, planned

CAMPAIGN = "weekly_winddown"


def edition_id(ledger: Ledger, edition: str = EDITION) -> int:
    return ledger.editions.ensure_edition(CAMPAIGN, edition, experiment="exp").edition_id


def event(
    event_id: str,
    *,
    delivery_id: str | None = "d1",
    kind: EventType = EventType.DELIVERED,
    edition: str = EDITION,
    at: datetime = SEND_AT,
) -> Event:
    return Event(
        event_id=event_id,
        event_type=kind,
        email="a@example.com",
        occurred_at=at,
        delivery_id=delivery_id,
        campaign=CAMPAIGN,
        edition=edition,
        arm="control",
        message_id="m1",
        raw='{"event":"x"}',
    )


# ------------------------------------------------------------------------- schema


def test_connect_creates_schema_and_reconnect_is_idempotent(empty_ledger_url: str) -> None:
    ledger_url = empty_ledger_url
    engine = sa.create_engine(normalize_url(ledger_url))
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []
    engine.dispose()
    for _ in range(3):
        with Ledger.connect(ledger_url) as ledger, ledger.engine.connect() as conn:
            assert current_version(conn) == len(MIGRATIONS)
            tables = set(sa.inspect(conn).get_table_names())
            assert set(s.metadata.tables) <= tables
            assert conn.execute(
                sa.select(sa.func.count()).select_from(s.schema_version)
            ).scalar() == len(MIGRATIONS)


def test_connect_concurrently_on_an_empty_database(empty_ledger_url: str) -> None:
    ledger_url = empty_ledger_url
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def connect() -> None:
        try:
            barrier.wait(timeout=30)
            Ledger.connect(ledger_url).close()
        except BaseException as exc:  # collected and re-raised by the test
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with Ledger.connect(ledger_url) as ledger, ledger.engine.connect() as conn:
        assert current_version(conn) == len(MIGRATIONS)


def test_dialect_and_password_masked(ledger: Ledger) -> None:
    assert ledger.dialect in {"sqlite", "postgresql"}
    assert ledger.url_for_display.startswith(ledger.dialect)
    password = ledger.engine.url.password
    if password:
        assert f":{password}@" not in ledger.url_for_display
        assert f":{password}@" not in repr(ledger)
        assert ":***@" in ledger.url_for_display


def test_postgres_urls_use_psycopg() -> None:
    assert normalize_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_default_url_is_a_sqlite_file_in_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALM_MAIL_DATABASE_URL", raising=False)
    with Ledger.connect(None, root=tmp_path) as ledger:
        assert ledger.dialect == "sqlite"
    assert (tmp_path / "calm_mail.db").exists()


# ------------------------------------------------------------------------- editions


def test_ensure_edition_is_idempotent(ledger: Ledger) -> None:
    first = ledger.editions.ensure_edition(CAMPAIGN, EDITION, experiment="exp")
    again = ledger.editions.ensure_edition(CAMPAIGN, EDITION, experiment="exp")
    assert again == first
    assert first.state == "planned" and first.batch_id is None and first.preflight is None
    assert ledger.editions.get_edition(CAMPAIGN, EDITION) == first
    assert ledger.editions.get_edition_by_id(first.edition_id) == first
    assert ledger.editions.get_edition(CAMPAIGN, "2026-W47") is None
    assert ledger.editions.get_edition_state(first.edition_id) == "planned"
    assert ledger.editions.get_edition_state(first.edition_id + 100) is None


def test_list_editions_newest_first(ledger: Ledger) -> None:
    for key in ("2026-W47", "2026-W49", "2026-W48"):
        ledger.editions.ensure_edition(CAMPAIGN, key, experiment="exp")
    ledger.editions.ensure_edition("other", "2026-W50", experiment="exp")
    assert [e.edition for e in ledger.editions.list_editions(CAMPAIGN)] == [
        "2026-W49",
        "2026-W48",
        "2026-W47",
    ]


def test_update_edition_fields(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.editions.update_edition(
        eid,
        state="sending",
        batch_id="b-1",
        scheduled_status="pause",
        preflight={"ok": True, "checks": [1, 2]},
        summary={"sent": 3},
    )
    info = ledger.editions.get_edition_by_id(eid)
    assert info is not None
    assert (info.state, info.batch_id, info.scheduled_status) == ("sending", "b-1", "pause")
    assert info.preflight == {"ok": True, "checks": [1, 2]} and info.summary == {"sent": 3}
    ledger.editions.update_edition(eid, state="sent")  # scheduled_status left alone
    info = ledger.editions.get_edition_by_id(eid)
    assert info is not None and info.scheduled_status == "pause" and info.batch_id == "b-1"
    ledger.editions.update_edition(eid, scheduled_status=None)  # None clears it
    info = ledger.editions.get_edition_by_id(eid)
    assert info is not None and info.scheduled_status is None and info.state == "sent"
    assert info.updated_at >= info.created_at


def test_update_edition_refuses_unknown_state_and_edition(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    with pytest.raises(ValueError, match="bogus"):
        ledger.editions.update_edition(eid, state="bogus")
    with pytest.raises(LookupError):
        ledger.editions.update_edition(eid + 1000, state="sent")


def test_last_sent_edition_needs_a_sent_delivery(ledger: Ledger) -> None:
    w46, w47 = edition_id(ledger, "2026-W46"), edition_id(ledger, "2026-W47")
    edition_id(ledger, "2026-W48")
    for eid, key in ((w46, "2026-W46"), (w47, "2026-W47")):
        ledger.deliveries.add_planned(eid, CAMPAIGN, [planned("u1", edition=key)])
    assert ledger.editions.last_sent_edition(CAMPAIGN, "2026-W48") is None
    (row,) = ledger.deliveries.claim(w46, worker="w", limit=5)
    ledger.deliveries.mark_sent(row.delivery_id, message_id="m")
    found = ledger.editions.last_sent_edition(CAMPAIGN, "2026-W48")
    assert found is not None and found.edition == "2026-W46"
    assert ledger.editions.last_sent_edition(CAMPAIGN, "2026-W46") is None
    assert ledger.editions.last_sent_edition("other", "2026-W48") is None


def test_edition_log_keeps_actions_in_order(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.editions.log_action(eid, "pause", {"by": "oncall"})
    ledger.editions.log_action(eid, "resume", None)
    log = ledger.editions.edition_log(eid)
    assert [(e.action, e.detail) for e in log] == [("pause", {"by": "oncall"}), ("resume", None)]
    assert all(e.at.tzinfo is UTC for e in log)
    assert ledger.editions.edition_log(eid + 1) == []


# ------------------------------------------------------------------------- assignments


def test_assignments_are_sticky_first_exposure_wins(ledger: Ledger) -> None:
    assert (
        ledger.assignments.record_assignments(
            "exp", "2026-W47", [("u1", "control"), ("u2", "perso")]
        )
        == 2
    )
    assert (
        ledger.assignments.record_assignments("exp", "2026-W48", [("u1", "perso"), ("u3", "perso")])
        == 1
    )
    got = ledger.assignments.get_assignments("exp", ["u1", "u2", "u3", "u4"])
    assert got == {"u1": "control", "u2": "perso", "u3": "perso"}
    assert ledger.assignments.get_assignments("other", ["u1"]) == {}
    assert ledger.assignments.record_assignments("other", "2026-W48", [("u1", "perso")]) == 1


def test_get_assignments_chunks_large_lookups(ledger: Ledger) -> None:
    pairs = [(f"u{i}", "a" if i % 3 else "b") for i in range(2500)]
    assert ledger.assignments.record_assignments("exp", EDITION, iter(pairs)) == 2500
    got = ledger.assignments.get_assignments("exp", [u for u, _ in pairs] + ["nobody"])
    assert got == dict(pairs)


# ------------------------------------------------------------------------- deliveries


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


# ------------------------------------------------------------------------- suppressions


def test_suppressions_are_lowercased_and_idempotent(ledger: Ledger) -> None:
    rows = [
        ("A@Example.com", "bounce", "webhook"),
        ("a@example.com", "bounce", "webhook"),
        ("a@example.com", "unsubscribe", "webhook"),
        ("b@example.com", "manual", "csv"),
    ]
    assert ledger.suppressions.add_suppressions(rows) == 3
    assert ledger.suppressions.add_suppressions(rows) == 0
    assert ledger.suppressions.suppressed(["A@EXAMPLE.COM", "c@example.com", "b@example.com"]) == {
        "A@EXAMPLE.COM",
        "b@example.com",
    }
    assert ledger.suppressions.all_suppressed() == {"a@example.com", "b@example.com"}
    ledger.suppressions.remove_suppression("A@example.com", "bounce")
    assert ledger.suppressions.all_suppressed() == {"a@example.com", "b@example.com"}
    ledger.suppressions.remove_suppression("a@example.com", "unsubscribe")
    assert ledger.suppressions.all_suppressed() == {"b@example.com"}
    (only,) = ledger.suppressions.list_suppressions(limit=10)
    assert (only.email, only.reason, only.source) == ("b@example.com", "manual", "csv")
    assert only.created_at.tzinfo is UTC


def test_suppressed_chunks_large_lookups(ledger: Ledger) -> None:
    ledger.suppressions.add_suppressions(
        (f"x{i}@example.com", "bounce", "t") for i in range(0, 3000, 2)
    )
    asked = [f"x{i}@example.com" for i in range(3000)]
    assert ledger.suppressions.suppressed(asked) == set(asked[::2])


# ------------------------------------------------------------------------- events


def test_add_events_dedups_on_event_id(ledger: Ledger) -> None:
    batch = [event("e1"), event("e2", kind=EventType.OPENED), event("e1")]
    assert ledger.events.add_events(batch) == 2
    assert ledger.events.add_events([event("e2"), event("e3", kind=EventType.CLICKED)]) == 1
    got = list(ledger.events.events_for(EDITION, CAMPAIGN))
    assert sorted(e.event_id for e in got) == ["e1", "e2", "e3"]
    first = next(e for e in got if e.event_id == "e1")
    assert first == event("e1")
    assert list(ledger.events.events_for("2026-W01", CAMPAIGN)) == []


def test_events_for_is_ordered_and_keeps_unknown_types(ledger: Ledger) -> None:
    at = [SEND_AT + timedelta(seconds=i) for i in (3, 1, 2)]
    ledger.events.add_events([event(f"e{i}", at=t) for i, t in enumerate(at)])
    with ledger.engine.begin() as conn:  # a type from a future calm-mail
        conn.execute(
            sa.update(s.events).where(s.events.c.event_id == "e0").values(event_type="brand_new")
        )
    got = list(ledger.events.events_for(EDITION, CAMPAIGN))
    assert [e.event_id for e in got] == ["e1", "e2", "e0"]
    assert got[-1].event_type is EventType.UNKNOWN
    assert all(e.occurred_at.tzinfo is UTC for e in got)


def test_add_events_sustains_well_over_5000_per_second(ledger: Ledger) -> None:
    batch = [event(f"e{i}", delivery_id=f"d{i % 97}") for i in range(10_000)]
    started = time.perf_counter()
    assert ledger.events.add_events(batch) == 10_000
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"{10_000 / elapsed:.0f} events/s"  # 5,000/s; ~40,000/s measured


def test_processed_delivery_ids(ledger: Ledger) -> None:
    ledger.events.add_events(
        [
            event("e1", delivery_id="d1", kind=EventType.PROCESSED),
            event("e2", delivery_id="d2", kind=EventType.DROPPED),
            event("e3", delivery_id=None, kind=EventType.OPENED),
        ]
    )
    assert ledger.events.processed_delivery_ids(["d1", "d2", "d3"]) == {"d1", "d2"}
    assert ledger.events.processed_delivery_ids([]) == set()


def test_add_events_is_one_transaction(ledger: Ledger) -> None:
    bad = event("e2")
    object.__setattr__(bad, "email", None)  # violates NOT NULL: the whole call must fail
    with pytest.raises(sa.exc.IntegrityError):
        ledger.events.add_events([event("e1"), bad])
    assert list(ledger.events.events_for(EDITION, CAMPAIGN)) == []


# ------------------------------------------------------------------------- completions


def test_completions_are_idempotent_and_filtered_by_time(ledger: Ledger) -> None:
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    rows = [
        Completion(user_id=f"u{i % 3}", item_id=f"i{i}", completed_at=t0 + timedelta(hours=i))
        for i in range(10)
    ]
    assert ledger.completions.add_completions(iter(rows), source="app.csv") == 10
    assert ledger.completions.add_completions(rows[:5], source="again.csv") == 0
    got = list(
        ledger.completions.completions_between(t0 + timedelta(hours=2), t0 + timedelta(hours=5))
    )
    assert [c.item_id for c in got] == ["i2", "i3", "i4"]  # end excluded
    assert all(c.completed_at.tzinfo is UTC for c in got)
    paris = timezone(timedelta(hours=1))
    got = list(
        ledger.completions.completions_between(
            t0.astimezone(paris), (t0 + timedelta(hours=1)).astimezone(paris)
        )
    )
    assert got == [rows[0]]


def test_completions_same_instant_in_another_zone_is_a_duplicate(ledger: Ledger) -> None:
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    tokyo = t0.astimezone(timezone(timedelta(hours=9)))
    assert (
        ledger.completions.add_completions(
            [Completion(user_id="u", item_id="i", completed_at=t0)], source="a"
        )
        == 1
    )
    assert (
        ledger.completions.add_completions(
            [Completion(user_id="u", item_id="i", completed_at=tokyo)], source="b"
        )
        == 0
    )


def test_completions_between_pages(ledger: Ledger) -> None:
    t0 = datetime(2026, 11, 28, tzinfo=UTC)
    rows = [
        Completion(user_id=f"u{i}", item_id="i", completed_at=t0 + timedelta(seconds=i // 7))
        for i in range(5300)
    ]
    ledger.completions.add_completions(rows, source="bulk")
    got = list(ledger.completions.completions_between(t0, t0 + timedelta(days=1)))
    assert len(got) == 5300 and len({(c.user_id, c.completed_at) for c in got}) == 5300


# ------------------------------------------------------------------------- time


def test_datetimes_come_back_aware_utc(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    kolkata = timezone(timedelta(hours=5, minutes=30))
    send_at = datetime(2026, 11, 28, 8, 0, 0, 123456, tzinfo=kolkata)
    ledger.deliveries.add_planned(eid, CAMPAIGN, [planned("u1", send_at=send_at)])
    row = ledger.deliveries.get_delivery(delivery_id_for(CAMPAIGN, EDITION, "u1"))
    assert row is not None and row.send_at == send_at
    assert row.send_at.tzinfo is UTC and row.send_at.hour == 2 and row.send_at.minute == 30
    assert row.send_at.microsecond == 123456
    info = ledger.editions.get_edition_by_id(eid)
    assert info is not None and info.created_at.tzinfo is UTC


def test_naive_datetimes_are_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="aware"):
        list(ledger.completions.completions_between(datetime(2026, 1, 1), datetime(2026, 1, 2)))


# ------------------------------------------------------------------------- locks


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_lock_lease_is_exclusive_renewable_and_expires(ledger: Ledger) -> None:
    clock = Clock()
    ledger.db.clock = clock
    assert ledger.locks.acquire_lock("edition:w48", "a", ttl_s=60)
    assert ledger.locks.acquire_lock("edition:w48", "a", ttl_s=60)  # re-entrant for its holder
    assert not ledger.locks.acquire_lock("edition:w48", "b", ttl_s=60)
    assert ledger.locks.acquire_lock("edition:w49", "b", ttl_s=60)  # other names are independent
    clock.now += timedelta(seconds=50)
    assert ledger.locks.renew_lock("edition:w48", "a", ttl_s=60)
    clock.now += timedelta(seconds=50)
    assert not ledger.locks.acquire_lock("edition:w48", "b", ttl_s=60)  # renewed: still held
    clock.now += timedelta(seconds=11)  # a crashed "a" stops renewing: the lease runs out
    assert ledger.locks.acquire_lock("edition:w48", "b", ttl_s=60)
    assert not ledger.locks.renew_lock("edition:w48", "a", ttl_s=60)
    ledger.locks.release_lock("edition:w48", "a")  # not the holder: no effect
    assert ledger.locks.lock_holder("edition:w48") == ("b", clock.now + timedelta(seconds=60))
    ledger.locks.release_lock("edition:w48", "b")
    assert ledger.locks.lock_holder("edition:w48") is None
    assert ledger.locks.acquire_lock("edition:w48", "a", ttl_s=60)
