"""The `events` repository contract, on SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

import time
from datetime import UTC, timedelta

import pytest
import sqlalchemy as sa

from calm_mail.records import EventType
from calm_mail.store import Ledger
from calm_mail.store import schema as s
from tests.store.helpers import CAMPAIGN, EDITION, SEND_AT, event


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
