"""Builders and worker functions for the ledger suite (importable by spawned processes)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from calm_mail.records import ContentSource, Event, EventType, PlannedDelivery
from calm_mail.store import Ledger

CAMPAIGN = "weekly_winddown"
EDITION = "2026-W48"
SEND_AT = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def planned(
    user_id: str,
    *,
    edition: str = EDITION,
    arm: str = "control",
    source: ContentSource = ContentSource.EDITORIAL,
    **overrides: Any,
) -> PlannedDelivery:
    fields: dict[str, Any] = {
        "edition": edition,
        "user_id": user_id,
        "email": f"{user_id}@example.com",
        "locale": "en-US",
        "arm": arm,
        "source": source,
        "fallback": False,
        "item_ids": ("i1", "i2", "i3"),
        "send_at": SEND_AT + timedelta(minutes=len(user_id)),
        "timezone": "Europe/Paris",
    }
    fields.update(overrides)
    return PlannedDelivery(**fields)


def plan(n: int, *, prefix: str = "u", edition: str = EDITION) -> list[PlannedDelivery]:
    arms = ("control", "personalized")
    return [planned(f"{prefix}{i}", edition=edition, arm=arms[i % 2]) for i in range(n)]


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


def claim_until_empty(url: str, edition_id: int, worker: str, limit: int) -> list[str]:
    """Claim in a loop until nothing is left; the delivery ids this worker got."""
    got: list[str] = []
    with Ledger.connect(url) as ledger:
        while rows := ledger.deliveries.claim(edition_id, worker=worker, limit=limit):
            got.extend(row.delivery_id for row in rows)
    return got


def process_claimer(url: str, edition_id: int, limit: int, barrier: Any, out: Any) -> None:
    """A spawned process: connect, wait for the others, claim everything it can."""
    worker = f"proc-{os.getpid()}"
    with Ledger.connect(url) as ledger:
        barrier.wait(timeout=60)
        got: list[str] = []
        while rows := ledger.deliveries.claim(edition_id, worker=worker, limit=limit):
            got.extend(row.delivery_id for row in rows)
    out.put((worker, got))


def crash_holding_lock(url: str, name: str, ttl_s: float) -> None:
    """A spawned process that takes a lease and dies without releasing it."""
    ledger = Ledger.connect(url)
    if not ledger.locks.acquire_lock(name, "crashed-holder", ttl_s):
        os._exit(3)
    os._exit(0)  # no release, no close: like kill -9


def crash_in_session_lock(url: str, name: str, ttl_s: float) -> None:
    """A spawned process that dies inside `session_lock`."""
    ledger = Ledger.connect(url)
    with ledger.locks.session_lock(name, "crashed-holder", ttl_s) as got:
        os._exit(0 if got else 3)
