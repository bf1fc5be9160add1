"""The `events` repository contract, on SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import overload

import pytest
import sqlalchemy as sa

from calm_mail.records import Event, EventType
from calm_mail.store import Ledger
from calm_mail.store import schema as s
from calm_mail.store.events import EventsStored, RejectedEvent
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


def test_a_row_the_database_refuses_is_kept_raw_and_its_neighbours_stored(ledger: Ledger) -> None:
    bad = event("e2")
    object.__setattr__(bad, "email", None)  # violates NOT NULL on both databases
    object.__setattr__(bad, "raw", '{"event":"bad"}')
    long = event("e3")
    object.__setattr__(long, "email", "a" * 400 + "@example.com")  # longer than its column
    stored = ledger.events.store([event("e1"), bad, long, event("e4")])
    got = {e.event_id for e in ledger.events.events_for(EDITION, CAMPAIGN)}
    kept = {r.raw: r.reason for r in ledger.events.rejected()}
    assert {"e1", "e4"} <= got and "e2" not in got
    assert kept['{"event":"bad"}'] == "refused_by_database:IntegrityError"
    # SQLite does not enforce a VARCHAR's length, PostgreSQL does: kept either way, never lost.
    assert ("e3" in got) != (long.raw in kept and ledger.dialect == "postgresql")
    assert stored.new == len(got) and stored.refused == len(kept)
    again = ledger.events.store([event("e1"), bad, long, event("e4")])
    assert (again.new, again.refused) == (0, stored.refused)
    assert len(list(ledger.events.rejected())) == len(kept)  # a retry adds nothing


class Breaks(Sequence[Event]):
    """A batch whose reading fails after its first event, like a lost connection midway."""

    def __init__(self, first: Event) -> None:
        self.first = first

    def __len__(self) -> int:
        return 2

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Event]: ...
    def __getitem__(self, index: int | slice) -> Event | Sequence[Event]:
        if index == 0:
            return self.first
        raise ConnectionError("gone")


def test_store_is_one_transaction(ledger: Ledger) -> None:
    kept = RejectedEvent("too_long_arm", '{"arm":"x"}')
    with pytest.raises(ConnectionError):
        ledger.events.store(Breaks(event("e1")), [kept])
    assert list(ledger.events.events_for(EDITION, CAMPAIGN)) == []
    assert list(ledger.events.rejected()) == []
    assert ledger.events.store([event("e1")], [kept, kept]) == EventsStored(1, 0)
    assert ledger.events.rejected_counts() == {"too_long_arm": 1}
