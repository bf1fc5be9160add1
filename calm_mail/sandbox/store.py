"""The sandbox's memory: accepted messages, batches, scheduled-send statuses and the clock.

Single-threaded by design: only the server's event loop touches a `SandboxStore`; other
threads read through the HTTP endpoints or `SandboxHandle.messages()` (which copies).

A message is held ("scheduled") until its send_at on the sandbox clock, then released
("delivered"); a cancelled batch turns its held mail into "cancelled" at send_at, a paused one
keeps it held until resumed, and held mail 72 h past its send_at becomes "expired".
"""

from __future__ import annotations

import heapq
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

HELD = "scheduled"
RELEASED = "delivered"
CANCELLED = "cancelled"
EXPIRED = "expired"
PAUSE, CANCEL = "pause", "cancel"
MAX_STOPPED_BATCHES = 10
CUTOFF_S = 600
EXPIRY_S = 72 * 3600


def new_message_id() -> str:
    """A 22-character URL-safe id, the shape of SendGrid's `X-Message-Id`."""
    return secrets.token_urlsafe(16)


def new_batch_id() -> str:
    """A 32-character id of letters and digits, like SendGrid's batch ids."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(32))


@dataclass(slots=True, kw_only=True)
class StoredPersonalization:
    """One personalization of an accepted request, with everything merged in."""

    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    custom_args: dict[str, str]
    send_at: int | None
    status: str = HELD
    was_paused: bool = False

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.to + self.cc + self.bcc


@dataclass(slots=True, kw_only=True)
class StoredMessage:
    """One accepted `mail/send` request (one `X-Message-Id`)."""

    message_id: str
    received_at: float
    personalizations: list[StoredPersonalization]
    from_email: str
    categories: tuple[str, ...]
    batch_id: str | None
    asm_group_id: int | None
    content: list[dict[str, str]]
    headers: dict[str, str]
    body: dict[str, Any] = field(repr=False)

    @property
    def status(self) -> str:
        states = {p.status for p in self.personalizations}
        return states.pop() if len(states) == 1 else "mixed"

    @property
    def html(self) -> str | None:
        return next((c["value"] for c in self.content if c.get("type") == "text/html"), None)

    def as_json(self, *, full: bool = False) -> dict[str, Any]:
        first = self.personalizations[0]
        out: dict[str, Any] = {
            "message_id": self.message_id,
            "to": [a for p in self.personalizations for a in p.to],
            "subject": first.subject,
            "custom_args": first.custom_args,
            "categories": list(self.categories),
            "send_at": first.send_at,
            "batch_id": self.batch_id,
            "status": self.status,
            "received_at": self.received_at,
        }
        if len(self.personalizations) > 1:
            out["personalizations"] = [
                {
                    "to": list(p.to),
                    "cc": list(p.cc),
                    "bcc": list(p.bcc),
                    "subject": p.subject,
                    "custom_args": p.custom_args,
                    "send_at": p.send_at,
                    "status": p.status,
                }
                for p in self.personalizations
            ]
        if full:
            out["from"] = self.from_email
            out["content"] = self.content
            out["headers"] = self.headers
            out["asm_group_id"] = self.asm_group_id
        return out


def _emails(entries: Any) -> tuple[str, ...]:
    return tuple(e["email"] for e in entries or ())


def message_from_body(body: Mapping[str, Any], *, message_id: str, now: float) -> StoredMessage:
    """Build the stored form of a validated body (personalization values override top-level)."""
    top_args = body.get("custom_args") or {}
    top_send_at = body.get("send_at")
    personalizations = []
    for p in body["personalizations"]:
        send_at = p.get("send_at", top_send_at)
        personalizations.append(
            StoredPersonalization(
                to=_emails(p.get("to")),
                cc=_emails(p.get("cc")),
                bcc=_emails(p.get("bcc")),
                subject=p.get("subject", body.get("subject", "")),
                custom_args={**top_args, **(p.get("custom_args") or {})},
                send_at=None if send_at is None else int(send_at),
            )
        )
    categories = body.get("categories") or ()
    return StoredMessage(
        message_id=message_id,
        received_at=now,
        personalizations=personalizations,
        from_email=body["from"]["email"],
        categories=tuple(categories),
        batch_id=body.get("batch_id"),
        asm_group_id=(body.get("asm") or {}).get("group_id"),
        content=list(body.get("content") or ()),
        headers=dict(body.get("headers") or {}),
        body=dict(body),
    )


class ScheduleRefused(ValueError):
    """A scheduled-send change SendGrid would refuse; the message is SendGrid-like."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


# Called with (message, personalization index, released_at on the sandbox clock) on release.
ReleaseHook = Callable[[StoredMessage, int, float], None]


class SandboxStore:
    """Messages (list + dict by id), batches, scheduled-send statuses, the clock, the stats."""

    def __init__(self, *, clock: Callable[[], float] = time.time, offset_s: float = 0.0) -> None:
        self._clock = clock
        self.offset_s = offset_s
        self._initial_offset_s = offset_s
        self.messages: list[StoredMessage] = []
        self.by_id: dict[str, StoredMessage] = {}
        self.batches: dict[str, float] = {}  # batch id -> created at
        self.batch_send_at: dict[str, int] = {}  # batch id -> earliest send_at seen
        self.scheduled: dict[str, str] = {}  # batch id -> pause | cancel
        self.stats: Counter[str] = Counter()
        self._held: list[tuple[int, int, str, int]] = []  # (send_at, seq, message id, index)
        self._seq = 0

    # ----------------------------------------------------------------- clock

    def now(self) -> float:
        return self._clock() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds

    # ----------------------------------------------------------------- messages

    def add(self, message: StoredMessage, release: ReleaseHook) -> None:
        """Keep an accepted message; release at once what is not scheduled for later."""
        self.messages.append(message)
        self.by_id[message.message_id] = message
        now = self.now()
        for index, p in enumerate(message.personalizations):
            if p.send_at is not None and message.batch_id is not None:
                earliest = self.batch_send_at.get(message.batch_id, p.send_at)
                self.batch_send_at[message.batch_id] = min(earliest, p.send_at)
            due = now if p.send_at is None else p.send_at
            if due > now or not self._settle(message, index, now, release):
                self._seq += 1
                heapq.heappush(self._held, (int(due), self._seq, message.message_id, index))

    def release_due(self, release: ReleaseHook) -> int:
        """Release (or drop) held mail whose send_at has come; returns how many were settled."""
        now = self.now()
        settled, still_paused = 0, []
        while self._held and self._held[0][0] <= now:
            item = heapq.heappop(self._held)
            message = self.by_id.get(item[2])
            if message is None:  # reset meanwhile
                continue
            if self._settle(message, item[3], now, release):
                settled += 1
            else:
                still_paused.append(item)
        for item in still_paused:
            heapq.heappush(self._held, item)
        return settled

    def _settle(self, message: StoredMessage, index: int, now: float, release: ReleaseHook) -> bool:
        """Deliver, cancel or expire one personalization; False while its batch is paused."""
        p = message.personalizations[index]
        state = self.scheduled.get(message.batch_id or "")
        if state == CANCEL:
            p.status = CANCELLED
        elif state == PAUSE:
            if p.send_at is not None and now > p.send_at + EXPIRY_S:
                p.status = EXPIRED
                return True
            p.was_paused = True
            return False
        else:
            p.status = RELEASED
            on_time = p.send_at is not None and p.send_at > message.received_at
            at = float(p.send_at) if p.send_at is not None and on_time and not p.was_paused else now
            release(message, index, at)
        return True

    def reset(self, *, everything: bool = False) -> None:
        """Forget all messages; with `everything`, batches, pauses and clock moves too."""
        self.messages.clear()
        self.by_id.clear()
        self._held.clear()
        if everything:
            self.batches.clear()
            self.batch_send_at.clear()
            self.scheduled.clear()
            self.offset_s = self._initial_offset_s

    # ----------------------------------------------------------------- batches

    def create_batch(self) -> str:
        batch_id = new_batch_id()
        self.batches[batch_id] = self.now()
        return batch_id

    def set_schedule(self, batch_id: str, status: str, *, creating: bool) -> None:
        """Pause or cancel a batch, with SendGrid's refusals (raises ScheduleRefused)."""
        if status not in (PAUSE, CANCEL):
            raise ScheduleRefused("status must be either pause or cancel")
        if batch_id not in self.batches:
            raise ScheduleRefused("invalid batch id")
        current = self.scheduled.get(batch_id)
        if creating and current is not None:
            raise ScheduleRefused(f"batch id {batch_id} is already {current}d")
        if not creating and current is None:
            raise ScheduleRefused("batch id not found", 404)
        if creating and len(self.scheduled) >= MAX_STOPPED_BATCHES:
            raise ScheduleRefused(
                "max limit reached: at most 10 batches can be paused or cancelled at one time"
            )
        earliest = self.batch_send_at.get(batch_id)
        if earliest is not None and self.now() > earliest - CUTOFF_S:
            raise ScheduleRefused(
                "cannot pause or cancel a batch less than 10 minutes before its send_at"
            )
        self.scheduled[batch_id] = status

    def clear_schedule(self, batch_id: str, release: ReleaseHook) -> None:
        """Delete a pause or cancel; paused mail that is due goes out now."""
        if self.scheduled.pop(batch_id, None) is None:
            raise ScheduleRefused("batch id not found", 404)
        self.release_due(release)

    def iter_json(self, *, full: bool = False) -> Iterator[dict[str, Any]]:
        return (m.as_json(full=full) for m in self.messages)
