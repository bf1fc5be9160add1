"""Webhook events: what SendGrid reported about each message, stored once per event id.

An event the ledger cannot hold as an event (normalization found a value that does not fit, or
the database refused its row) is kept raw in ``rejected_events`` with the reason, once per raw
text: one odd event never fails the others of its batch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from calm_mail.records import Event, EventType
from calm_mail.store import schema
from calm_mail.store.db import CHUNK, IN_CHUNK, Database, chunks

log = logging.getLogger(__name__)

REASON_LENGTH = 64  # schema.rejected_events.c.reason


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """A webhook object kept raw: `reason` is a short key, `raw` JSON text either database
    can hold (no NUL character, no lone surrogate: escape them, as ``json.dumps`` does)."""

    reason: str
    raw: str

    @property
    def digest(self) -> str:
        """The row's key: the SHA-256 of the raw text, so a retried batch adds nothing."""
        return hashlib.sha256(self.raw.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class EventsStored:
    """What one `Events.store` call did: events new to the ledger, and how many of the
    given events the database refused (each kept raw in ``rejected_events``)."""

    new: int
    refused: int = 0


class Events:
    """Normalized webhook events, insert-or-ignore on event_id."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add_events(self, events: Sequence[Event]) -> int:
        """`store` without rejected objects; returns how many events were new."""
        return self.store(events).new

    def store(
        self, events: Sequence[Event], rejected: Sequence[RejectedEvent] = ()
    ) -> EventsStored:
        """Store webhook events (insert-or-ignore on event_id) and `rejected` objects
        (insert-or-ignore on their raw text), all in ONE transaction, so a receiver can answer
        2xx only once they are durable.

        A row the database refuses (a value too long for its column, a NUL character, a NOT
        NULL) is kept raw in ``rejected_events`` instead, never failing its neighbours; only a
        failure of the database itself (connection, lock, disk) raises, and then nothing of
        the call is stored.
        """
        now = self._db.clock()
        with self._db.write() as conn:
            new, refused = _insert_events(conn, self._db.insert, events, now)
            _insert_rejected(conn, self._db.insert, [*rejected, *refused], now)
        if refused:
            reasons = sorted({r.reason for r in refused})
            log.warning("the database refused %d events, kept raw: %s", len(refused), reasons)
        return EventsStored(new, len(refused))

    def rejected_counts(self) -> dict[str, int]:
        """How many objects ``rejected_events`` holds, by reason."""
        table = schema.rejected_events
        query = sa.select(table.c.reason, sa.func.count()).group_by(table.c.reason)
        with self._db.read() as conn:
            return {str(reason): int(n) for reason, n in conn.execute(query).all()}

    def rejected(self) -> Iterator[RejectedEvent]:
        """Every object kept raw, in the order of their keys."""
        table = schema.rejected_events
        for row in self._db.pages(sa.select(table), (table.c.raw_sha256,)):
            yield RejectedEvent(row.reason, row.raw)

    def events_for(self, edition: str, campaign: str) -> Iterator[Event]:
        """The edition's events, oldest first."""
        ev = schema.events
        query = sa.select(ev).where(ev.c.campaign == campaign, ev.c.edition == edition)
        for row in self._db.pages(query, (ev.c.occurred_at, ev.c.event_id)):
            yield _event(row)

    def processed_delivery_ids(self, delivery_ids: Sequence[str]) -> set[str]:
        """Those of `delivery_ids` that any webhook event mentions: SendGrid accepted them
        (processed, delivered, deferred, dropped, bounced, opened, ... all imply it)."""
        ev = schema.events
        found: set[str] = set()
        with self._db.read() as conn:
            for chunk in chunks(delivery_ids, IN_CHUNK):
                query = sa.select(ev.c.delivery_id).where(ev.c.delivery_id.in_(chunk)).distinct()
                found.update(conn.execute(query).scalars())
        return found


Insert = Callable[[sa.Table], Any]  # the dialect's insert (its on_conflict_do_nothing)


def _row(ev: Event, now: datetime) -> dict[str, Any]:
    return {
        "event_id": ev.event_id,
        "event_type": str(ev.event_type),
        "email": ev.email,
        "occurred_at": ev.occurred_at,
        "delivery_id": ev.delivery_id,
        "campaign": ev.campaign,
        "edition": ev.edition,
        "arm": ev.arm,
        "message_id": ev.message_id,
        "machine_open": ev.machine_open,
        "url": ev.url,
        "reason": ev.reason,
        "raw": ev.raw,
        "received_at": now,
    }


def _refused_by_row(exc: Exception) -> bool:
    """True for an error about the row's values, False for one about the database itself."""
    if isinstance(exc, sa.exc.DBAPIError):
        return isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError)
    # Raised while binding values (a bind processor, the driver's encoding), before any SQL ran.
    return isinstance(exc, sa.exc.StatementError | ValueError | TypeError)


def _insert_events(
    conn: sa.Connection, insert: Insert, events: Sequence[Event], now: datetime
) -> tuple[int, list[RejectedEvent]]:
    """Insert-or-ignore `events`, CHUNK rows per executemany, each chunk in a savepoint; a
    chunk the database refuses is retried row by row, and the rows it still refuses return."""
    stmt = insert(schema.events).on_conflict_do_nothing()
    conn.execution_options(preserve_rowcount=True)  # else psycopg's executemany rowcount is -1
    new = 0
    refused: list[RejectedEvent] = []
    for chunk in chunks(events, CHUNK):
        try:
            with conn.begin_nested():
                new += conn.execute(stmt, [_row(ev, now) for ev in chunk]).rowcount
            continue
        except Exception as exc:
            if not _refused_by_row(exc):
                raise
        for ev in chunk:
            try:
                with conn.begin_nested():
                    new += conn.execute(stmt, [_row(ev, now)]).rowcount
            except Exception as exc:
                if not _refused_by_row(exc):
                    raise
                refused.append(RejectedEvent(_reason(exc), ev.raw))
    return new, refused


def _insert_rejected(
    conn: sa.Connection, insert: Insert, rejected: Iterable[RejectedEvent], now: datetime
) -> None:
    stmt = insert(schema.rejected_events).on_conflict_do_nothing()
    rows = [
        {
            "raw_sha256": r.digest,
            "reason": r.reason[:REASON_LENGTH],
            "raw": r.raw,
            "received_at": now,
        }
        for r in rejected
    ]
    for chunk in chunks(rows, CHUNK):
        conn.execute(stmt, chunk)


def _reason(exc: Exception) -> str:
    """The same key on both databases: SQLAlchemy's class (DataError, IntegrityError), or the
    error raised while binding the values."""
    if isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError):
        exc = exc.orig if isinstance(exc.orig, Exception) else exc
    return f"refused_by_database:{type(exc).__name__}"


def _event(row: sa.Row[Any]) -> Event:
    try:
        kind = EventType(row.event_type)
    except ValueError:
        kind = EventType.UNKNOWN
    return Event(
        event_id=row.event_id,
        event_type=kind,
        email=row.email,
        occurred_at=row.occurred_at,
        delivery_id=row.delivery_id,
        campaign=row.campaign,
        edition=row.edition,
        arm=row.arm,
        message_id=row.message_id,
        machine_open=bool(row.machine_open),
        url=row.url,
        reason=row.reason,
        raw=row.raw,
    )
