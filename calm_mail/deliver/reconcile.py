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


class ReconcileLedger(Protocol):
    def claimed_before(self, edition_id: int, cutoff: datetime) -> Sequence[object]: ...
    def processed_delivery_ids(self, delivery_ids: Sequence[str]) -> set[str]: ...
    def mark_sent(self, delivery_id: str, *, message_id: str | None) -> object: ...
    def release_claims(self, delivery_ids: Sequence[str]) -> object: ...


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    confirmed: int  # had an event: marked sent, not resent
    released: int  # no event after the grace period: back to planned
    pending: int  # too young to decide


def reconcile(
    ledger: ReconcileLedger,
    edition_id: int,
    *,
    now: datetime,
    stale_after: timedelta,
    grace: timedelta,
) -> ReconcileResult:
    rows = ledger.claimed_before(edition_id, now - stale_after)
    if not rows:
        return ReconcileResult(0, 0, 0)
    ids = [row.delivery_id for row in rows]  # type: ignore[attr-defined]
    seen = ledger.processed_delivery_ids(ids)
    release: list[str] = []
    pending = 0
    for row in rows:
        delivery_id = row.delivery_id  # type: ignore[attr-defined]
        if delivery_id in seen:
            ledger.mark_sent(delivery_id, message_id=None)
            continue
        started = max(row.claimed_at or now, row.send_at)  # type: ignore[attr-defined]
        if now - started >= grace:
            release.append(delivery_id)
        else:
            pending += 1
    if release:
        ledger.release_claims(release)
    return ReconcileResult(len(seen), len(release), pending)
