"""The exactly-once send engine.

Every delivery is a ledger row moving planned -> claimed -> sent | failed | skipped. The engine
claims a chunk, composes and sends each row with bounded concurrency at a steady rate, and
records each outcome. What a crash can leave behind is a claimed row whose request may or may
not have reached SendGrid; the engine never resends those itself (see `reconcile`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from calm_mail import collector
from calm_mail.deliver.ratelimit import RateLimiter
from calm_mail.deliver.sendgrid import UnknownFate
from calm_mail.deliver.transport import Transport
from calm_mail.errors import (
    CalmMailError,
    DeliveryError,
    FatalDeliveryError,
    RecipientRejected,
    RetriableDeliveryError,
)
from calm_mail.records import ComposedMessage, ContentSource, PlannedDelivery

log = logging.getLogger(__name__)


class Row(Protocol):
    """What the engine reads of a claimed ledger row (store.DeliveryRow); read-only."""

    @property
    def delivery_id(self) -> str: ...

    @property
    def user_id(self) -> str: ...

    @property
    def email(self) -> str: ...

    @property
    def locale(self) -> str: ...

    @property
    def arm(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def fallback(self) -> bool: ...

    @property
    def item_ids(self) -> tuple[str, ...]: ...

    @property
    def send_at(self) -> datetime: ...

    @property
    def timezone(self) -> str: ...


class Deliveries(Protocol):
    """What the engine does to delivery rows (the ledger's `deliveries`)."""

    def claim(
        self, edition_id: int, *, worker: str, limit: int, shard: tuple[int, int] | None = None
    ) -> Sequence[Row]: ...
    def mark_sent_many(self, sent: Sequence[tuple[str, str | None]]) -> int: ...
    def mark_failed(self, delivery_id: str, *, error: str, retriable: bool) -> object: ...
    def release_claims(self, delivery_ids: Sequence[str]) -> object: ...


class EditionStates(Protocol):
    """Where the engine reads whether the edition was paused or cancelled (`editions`)."""

    def get_edition_state(self, edition_id: int) -> str | None: ...


class Composer(Protocol):
    def compose(self, delivery: PlannedDelivery, delivery_id: str) -> ComposedMessage: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    max_rate: float = 500.0
    concurrency: int = 32
    max_tries: int = 6
    base_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    # Rows claimed per ledger round trip. A crash leaves claimed rows whose fate is unknown,
    # and those wait out the reconciliation grace, so keep the claim small: with the pipeline
    # two chunks in flight keep every connection busy. None: twice the concurrency (64-512).
    chunk: int | None = None
    circuit_breaker: int = 50  # consecutive failed attempts that pause the run ...
    circuit_seconds: float = 30.0  # ... once the streak of failures has lasted this long
    limit: int | None = None
    shard: tuple[int, int] | None = None
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    @property
    def claim_size(self) -> int:
        return self.chunk if self.chunk is not None else min(512, max(64, 2 * self.concurrency))

    def backoff(self, attempt: int, hint: float | None) -> float:
        """Exponential backoff with full jitter; a server's Retry hint wins when longer."""
        ceiling = min(self.max_backoff_s, self.base_backoff_s * 2 ** (attempt - 1))
        return max(hint or 0.0, random.uniform(ceiling / 2, ceiling))


@dataclass(slots=True)
class SendTally:
    """What one run did, for the summary, `status` and the alert."""

    sent: Counter[str] = field(default_factory=Counter)  # by arm
    failed: Counter[str] = field(default_factory=Counter)  # by reason
    unknown: int = 0
    retried: int = 0
    released: int = 0
    stopped: str | None = None  # why the run stopped early
    fatal: bool = False  # stopped by an error every later send would hit too (401, 403)
    circuit_open: str | None = None  # the circuit breaker's reason, when it tripped

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())


@dataclass(frozen=True, slots=True)
class Outcome:
    row: Row
    kind: str  # sent | failed | retry | unknown | release
    detail: str | None = None


def to_planned(row: Row, edition: str) -> PlannedDelivery:
    return PlannedDelivery(
        edition=edition,
        user_id=row.user_id,
        email=row.email,
        locale=row.locale,
        arm=row.arm,
        source=ContentSource(row.source),
        fallback=row.fallback,
        item_ids=row.item_ids,
        send_at=row.send_at,
        timezone=row.timezone,
    )


class Engine:
    """Sends one edition's planned rows through a transport; safe to run in several processes."""

    def __init__(
        self,
        deliveries: Deliveries,
        editions: EditionStates,
        composer: Composer,
        transport: Transport,
        *,
        edition_id: int,
        edition: str,
        batch_id: str | None,
        config: EngineConfig,
        on_progress: Callable[[SendTally, int], None] | None = None,
    ):
        self.deliveries = deliveries
        self.editions = editions
        self.composer = composer
        self.transport = transport
        self.edition_id = edition_id
        self.edition = edition
        self.batch_id = batch_id
        self.config = config
        self.tally = SendTally()
        # An outbox or null transport is not a provider: nothing to pace.
        self.limiter = RateLimiter(0 if transport.dry_run else config.max_rate)
        self.semaphore = asyncio.Semaphore(config.concurrency)
        self._on_progress = on_progress
        self._stop: str | None = None
        self._failures_in_a_row = 0
        self._streak_started = 0.0

    def stop(self, reason: str) -> None:
        """Finish in-flight sends, claim nothing more (SIGTERM, cancel, fatal error)."""
        self._stop = self._stop or reason

    async def run(self) -> SendTally:
        """Claim, send and record as a pipeline: the next chunk is claimed while the last one
        is still in flight, and outcomes are written in batches by one background flush, so
        the connection pool never idles waiting on the ledger."""
        with collector_tuned():
            return await self._run()

    async def _run(self) -> SendTally:
        remaining = self.config.limit
        chunk = self.config.claim_size
        window = asyncio.Semaphore(2 * chunk)  # claimed but not yet recorded
        recorder = _Recorder(self)
        tasks: set[asyncio.Task[None]] = set()
        while self._stop is None and (remaining is None or remaining > 0):
            state = await asyncio.to_thread(self.editions.get_edition_state, self.edition_id)
            if state in ("cancelled", "paused"):
                self.stop(f"edition {state}")
                break
            size = chunk if remaining is None else min(chunk, remaining)
            rows = await asyncio.to_thread(
                self.deliveries.claim,
                self.edition_id,
                worker=self.config.worker,
                limit=size,
                shard=self.config.shard,
            )
            if not rows:
                break
            if remaining is not None:
                remaining -= len(rows)
            for row in rows:
                await window.acquire()
                task = asyncio.create_task(self._deliver_and_record(row, recorder, window))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        await recorder.close()
        self.tally.stopped = self._stop
        return self.tally

    async def _deliver_and_record(
        self, row: Row, recorder: _Recorder, window: asyncio.Semaphore
    ) -> None:
        try:
            outcome = await self._deliver(row)
        except Exception as exc:  # a bug must not strand a claimed row: leave it reconcilable
            log.exception("delivery %s: unexpected error", row.delivery_id)
            outcome = Outcome(row, "unknown", f"{type(exc).__name__}: {exc}")
        if outcome.kind == "retry":
            self.stop("retries exhausted: the provider keeps refusing; re-run to resume")
        recorder.add(outcome)
        window.release()

    async def _deliver(self, row: Row) -> Outcome:
        if self._stop is not None:
            return Outcome(row, "release", self._stop)
        try:
            message = self.composer.compose(to_planned(row, self.edition), row.delivery_id)
        except CalmMailError as exc:
            return Outcome(row, "failed", f"render: {exc}")
        if self.batch_id and message.batch_id != self.batch_id:
            message = _with_batch(message, self.batch_id)
        return await self._send(row, message)

    async def _send(self, row: Row, message: ComposedMessage) -> Outcome:
        for attempt in range(1, self.config.max_tries + 1):
            if self._stop is not None:
                return Outcome(row, "release", self._stop)
            await self.limiter.acquire()
            try:
                async with self.semaphore:
                    # Checked again after the waits: a stop (SIGTERM, cancel, a fatal error)
                    # must not let queued sends go out, only those already on the wire.
                    if self._stop is not None:
                        return Outcome(row, "release", self._stop)
                    result = await self.transport.send(message)
                self._failures_in_a_row = 0
                return Outcome(row, "sent", result.message_id)
            except UnknownFate as exc:
                self._failed(str(exc))
                return Outcome(row, "unknown", str(exc))
            except RetriableDeliveryError as exc:
                if exc.status != 429:  # throttling is not failure: the shared hold handles it
                    self._failed(str(exc))
                self.tally.retried += 1
                wait = self.config.backoff(attempt, exc.retry_after)
                if exc.status == 429:
                    self.limiter.hold(wait)
                last = str(exc)
                await asyncio.sleep(wait)
            except FatalDeliveryError as exc:
                self.tally.fatal = True
                self.stop(f"fatal: {exc}")
                return Outcome(row, "release", str(exc))
            except RecipientRejected as exc:
                return Outcome(row, "failed", str(exc))
            except DeliveryError as exc:  # any other: treat as unknown, never resend blindly
                return Outcome(row, "unknown", str(exc))
        return Outcome(row, "retry", last)

    def _failed(self, error: str) -> None:
        """Count a failed attempt; a sustained streak trips the circuit breaker (at least
        `circuit_breaker` failures in a row over at least `circuit_seconds`, so a blip or a
        short outage rides on retries): the provider is down or refusing, and hammering it only
        burns retries. The run pauses, the reason is recorded, and `calm-mail run ... --resume`
        continues once it is fixed."""
        now = time.monotonic()
        if self._failures_in_a_row == 0:
            self._streak_started = now
        self._failures_in_a_row += 1
        lasted = now - self._streak_started
        if (
            self._failures_in_a_row >= self.config.circuit_breaker
            and lasted >= self.config.circuit_seconds
            and self._stop is None
        ):
            reason = f"{self._failures_in_a_row} failed attempts in a row; last: {error}"
            self.tally.circuit_open = reason
            self.stop(f"circuit breaker: {reason}")

    def _record(self, outcomes: Sequence[Outcome]) -> None:
        sent: list[tuple[str, str | None]] = []
        release: list[str] = []
        for outcome in outcomes:
            row = outcome.row
            if outcome.kind == "sent":
                sent.append((row.delivery_id, outcome.detail))
                self.tally.sent[row.arm] += 1
            elif outcome.kind == "failed":
                self.deliveries.mark_failed(
                    row.delivery_id, error=outcome.detail or "", retriable=False
                )
                self.tally.failed[_reason(outcome.detail)] += 1
            elif outcome.kind == "retry":
                self.deliveries.mark_failed(
                    row.delivery_id, error=outcome.detail or "", retriable=True
                )
                self.tally.failed["retries exhausted (left planned)"] += 1
            elif outcome.kind == "unknown":
                # Left claimed on purpose: reconcile() decides from webhook events.
                self.tally.unknown += 1
                log.warning(
                    "delivery %s: fate unknown (%s); left for reconciliation",
                    row.delivery_id,
                    outcome.detail,
                )
            else:
                release.append(row.delivery_id)
        self.deliveries.mark_sent_many(sent)
        if release:
            self.deliveries.release_claims(release)
            self.tally.released += len(release)
        if self._on_progress:
            self._on_progress(self.tally, len(outcomes))


#: Young-generation threshold of the cyclic garbage collector while sending (CPython's default
#: is 700). Each send allocates a few hundred container objects (aiohttp's request and response,
#: the task, the message), so with the default the collector ran ~90 times per 1,000 sends,
#: and its full passes walked the whole catalog, plan and composer caches (the send section of
#: `make bench` shows what that costs).
SEND_GC_THRESHOLD = 50_000


def collector_tuned() -> contextlib.AbstractContextManager[None]:
    """For the length of a send run, see `calm_mail.collector.tuned`."""
    return collector.tuned(SEND_GC_THRESHOLD)


class _Recorder:
    """Writes outcomes to the ledger in batches, one flush at a time, off the event loop."""

    BATCH = 256

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._buffer: list[Outcome] = []
        self._flushing: asyncio.Task[None] | None = None

    def add(self, outcome: Outcome) -> None:
        self._buffer.append(outcome)
        if len(self._buffer) >= self.BATCH and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer, []
            await asyncio.to_thread(self._engine._record, batch)

    async def close(self) -> None:
        if self._flushing is not None:
            await self._flushing
        await self._flush()


def _reason(detail: str | None) -> str:
    """A short, countable reason: the status and first message, no addresses."""
    text = (detail or "unknown").split(";")[0]
    return text[:120]


def _with_batch(message: ComposedMessage, batch_id: str) -> ComposedMessage:
    return replace(message, batch_id=batch_id)
