"""Reconciling deliveries whose fate is unknown.

SendGrid has no idempotency key. If a sender dies (or a request times out) between the HTTP call
and the ledger update, the row stays `claimed` and nobody knows whether SendGrid queued the
message. Resending it blindly risks a duplicate email, which costs more than a late one. So:

1. a claimed row older than `stale_after` (no live sender still works on it) is checked against
   the webhook events stored in the ledger: any event carrying its delivery id (processed,
   delivered, dropped, ...) proves SendGrid accepted it, and the row becomes `sent`;
2. a row with no event is released back to `planned` (and so resent) only once `grace` has
   passed since the later of its claim and its send_at — SendGrid reports `processed` for
   scheduled mail when it processes it, so the wait starts at send time;
3. anything younger is left alone and counted as still pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol


class ClaimedRow(Protocol):
    """What reconciling reads of a claimed row (store.DeliveryRow); read-only."""

    @property
    def delivery_id(self) -> str: ...

    @property
    def claimed_at(self) -> datetime | None: ...

    @property
    def send_at(self) -> datetime: ...


class ClaimedDeliveries(Protocol):
    """The claimed rows and their two ways out (the ledger's `deliveries`)."""

    def claimed_before(self, edition_id: int, cutoff: datetime) -> Sequence[ClaimedRow]: ...
    def mark_sent(self, delivery_id: str, *, message_id: str | None) -> object: ...
    def release_claims(self, delivery_ids: Sequence[str]) -> object: ...


class AcceptedDeliveries(Protocol):
    """Which deliveries a webhook event proves SendGrid accepted (the ledger's `events`)."""

    def processed_delivery_ids(self, delivery_ids: Sequence[str]) -> set[str]: ...


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    confirmed: int  # had an event: marked sent, not resent
    released: int  # no event after the grace period: back to planned
    pending: int  # too young to decide


def reconcile(
    deliveries: ClaimedDeliveries,
    events: AcceptedDeliveries,
    edition_id: int,
    *,
    now: datetime,
    stale_after: timedelta,
    grace: timedelta,
) -> ReconcileResult:
    rows = deliveries.claimed_before(edition_id, now - stale_after)
    if not rows:
        return ReconcileResult(0, 0, 0)
    ids = [row.delivery_id for row in rows]
    seen = events.processed_delivery_ids(ids)
    release: list[str] = []
    pending = 0
    for row in rows:
        delivery_id = row.delivery_id
        if delivery_id in seen:
            deliveries.mark_sent(delivery_id, message_id=None)
            continue
        started = max(row.claimed_at or now, row.send_at)
        if now - started >= grace:
            release.append(delivery_id)
        else:
            pending += 1
    if release:
        deliveries.release_claims(release)
    return ReconcileResult(len(seen), len(release), pending)
