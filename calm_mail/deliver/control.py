"""Cancel, pause and resume an edition: at SendGrid (its scheduled batch) and in the ledger.

SendGrid only guarantees a pause or cancel made at least 10 minutes before a message's send_at.
An edition's messages go out at each user's local morning, so some may be past that point and
others not: we refuse when none is still ahead of the cut-off, and otherwise say how many may
still go out. Senders check the edition's state before each chunk and stop claiming.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Protocol

from calm_mail.campaign import Campaign
from calm_mail.deliver.sendgrid import SendGridTransport
from calm_mail.edition import Edition
from calm_mail.errors import UsageError
from calm_mail.records import DeliveryState

CUT_OFF = timedelta(minutes=10)


class EditionRow(Protocol):
    """What changing an edition reads of its row (store.EditionInfo); read-only."""

    @property
    def edition_id(self) -> int: ...

    @property
    def state(self) -> str: ...

    @property
    def batch_id(self) -> str | None: ...


class Editions(Protocol):
    """The edition's row and audit log (the ledger's `editions`)."""

    def get_edition(self, campaign: str, edition: str) -> EditionRow | None: ...
    def update_edition(
        self, edition_id: int, *, state: str | None = ..., scheduled_status: str | None = ...
    ) -> None: ...
    def log_action(
        self, edition_id: int, action: str, detail: dict[str, Any] | None = ...
    ) -> None: ...


class SentRow(Protocol):
    @property
    def send_at(self) -> datetime: ...


class Deliveries(Protocol):
    """The edition's sent rows and counts (the ledger's `deliveries`)."""

    def iter_deliveries(
        self, edition_id: int, *, state: DeliveryState | None = ...
    ) -> Iterator[SentRow]: ...
    def counts(self, edition_id: int) -> dict[tuple[str, str], int]: ...


def _split_by_cut_off(deliveries: Deliveries, edition_id: int, now: datetime) -> tuple[int, int]:
    """(sent messages still ahead of the cut-off, sent messages inside it or gone)."""
    ahead = inside = 0
    for row in deliveries.iter_deliveries(edition_id, state=DeliveryState.SENT):
        if row.send_at - now >= CUT_OFF:
            ahead += 1
        else:
            inside += 1
    return ahead, inside


async def change_edition(
    campaign: Campaign,
    edition: Edition,
    editions: Editions,
    deliveries: Deliveries,
    action: str,
    *,
    api_key: str | None,
    api_host: str,
    now: datetime,
) -> str:
    info = editions.get_edition(campaign.name, edition.key)
    if info is None:
        raise UsageError(f"{campaign.name} {edition}: no such edition in the ledger")
    target = {"cancel": "cancelled", "pause": "paused", "resume": "sending"}[action]
    if info.state == "cancelled":
        raise UsageError(f"{campaign.name} {edition}: already cancelled; a cancel is final")
    if action == "resume" and info.state != "paused":
        raise UsageError(f"{campaign.name} {edition}: not paused (state {info.state})")
    ahead, inside = _split_by_cut_off(deliveries, info.edition_id, now)
    if action != "resume" and info.batch_id and ahead == 0 and inside > 0:
        raise UsageError(
            f"{campaign.name} {edition}: too late to {action}: all {inside} sent messages go out "
            "within SendGrid's 10-minute cut-off or have gone. Nothing was changed."
        )
    if info.batch_id:
        if not api_key:
            raise UsageError("SENDGRID_API_KEY is not set; it is needed to change the batch")
        transport = SendGridTransport(api_key, host=api_host)
        try:
            await transport.scheduled_send(info.batch_id, None if action == "resume" else action)  # type: ignore[arg-type]
        finally:
            await transport.aclose()
    editions.update_edition(
        info.edition_id, state=target, scheduled_status=None if action == "resume" else action
    )
    editions.log_action(
        info.edition_id, action, {"ahead": ahead, "inside_cut_off": inside, "at": now.isoformat()}
    )
    unsent = sum(
        n for (s, _), n in deliveries.counts(info.edition_id).items() if s in ("planned", "claimed")
    )
    lines = [f"{campaign.name} {edition}: {target}."]
    if info.batch_id and action != "resume":
        lines.append(
            f"SendGrid batch {info.batch_id}: {action} requested; {ahead} scheduled "
            f"messages held back."
        )
        if inside:
            lines.append(
                f"{inside} messages were inside the 10-minute cut-off or already "
                "delivered and may still go out."
            )
    if action != "resume":
        lines.append(f"{unsent} planned messages will not be sent by any run.")
    return "\n".join(lines)
