"""Hand-built attribution frames: one small table per ledger table, times relative to a send."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd

from calm_mail.analyze.attribution import (
    COMPLETION_COLUMNS,
    DELIVERY_COLUMNS,
    EVENT_COLUMNS,
    Frames,
)

SEND = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)


def hours(h: float) -> datetime:
    return SEND + timedelta(hours=h)


@dataclass
class FrameBuilder:
    """Collects rows and turns them into `Frames`; ids and emails are derived from user ids."""

    campaign: str = "weekly_winddown"
    deliveries: list[dict[str, object]] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)
    completions: list[dict[str, object]] = field(default_factory=list)

    def delivery(
        self,
        user: str,
        arm: str,
        *,
        edition: str = "2026-W48",
        state: str = "sent",
        items: Sequence[str] = ("i1", "i2"),
        send_at: datetime = SEND,
        holdout: bool = False,
        fallback: bool = False,
    ) -> str:
        delivery_id = f"{edition}:{user}"
        self.deliveries.append(
            {
                "delivery_id": delivery_id,
                "edition": edition,
                "user_id": user,
                "arm": arm,
                "source": "holdout" if holdout else "personalize",
                "fallback": fallback,
                "state": "skipped" if holdout else state,
                "last_error": "holdout" if holdout else None,
                "send_at": send_at,
                "sent_at": None if holdout else send_at,
                "item_ids": tuple(items),
            }
        )
        return delivery_id

    def event(self, delivery_id: str, kind: str, at: datetime, *, machine: bool = False) -> None:
        self.events.append(
            {
                "delivery_id": delivery_id,
                "event_type": kind,
                "occurred_at": at,
                "machine_open": machine,
            }
        )

    def completion(self, user: str, at: datetime, item: str = "other") -> None:
        self.completions.append({"user_id": user, "item_id": item, "completed_at": at})

    def frames(self, editions: Iterable[str] | None = None) -> Frames:
        keys = (
            tuple(editions)
            if editions is not None
            else tuple(sorted({str(d["edition"]) for d in self.deliveries}))
        )
        return Frames(
            campaign=self.campaign,
            editions=keys,
            deliveries=pd.DataFrame(self.deliveries, columns=list(DELIVERY_COLUMNS)),
            events=pd.DataFrame(self.events, columns=list(EVENT_COLUMNS)),
            completions=pd.DataFrame(self.completions, columns=list(COMPLETION_COLUMNS)),
        )
