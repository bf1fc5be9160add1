"""Webhook events: what SendGrid reported about each message, stored once per event id."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from calm_mail.records import Event, EventType
from calm_mail.store import schema
from calm_mail.store.db import IN_CHUNK, Database, chunks


class Events:
    """Normalized webhook events, insert-or-ignore on event_id."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add_events(self, events: Sequence[Event]) -> int:
        """Store webhook events, insert-or-ignore on event_id, all in ONE transaction (so a
        receiver can answer 2xx only once they are durable). Returns how many were new."""
        now = self._db.clock()
        rows = (
            {
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
            for ev in events
        )
        return self._db.insert_ignore(schema.events, rows, atomic=True)

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
