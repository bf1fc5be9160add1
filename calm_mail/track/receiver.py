"""The SendGrid Event Webhook receiver: an ASGI app that answers 2xx only once events are stored.

One POST is a JSON array of events. The handler is a fixed sequence: credentials -> read the raw
body under a size limit -> verify the signature -> parse -> normalize -> store (one ledger
transaction, in a worker thread) -> apply suppressions -> 200. Every refusal is a `WebhookError`
with its status; a storage failure is 503 so SendGrid retries (its retries are deduplicated by
event id, and suppression changes are idempotent, so a retry never doubles anything).

One event never decides the fate of its batch: an event the ledger cannot hold (a value longer
than its column, a NUL character, a number out of range) is kept raw in ``rejected_events`` with
its reason, in the same transaction as its neighbours, and counted in the answer's ``kept_raw``;
503 means the database itself failed. A client that goes away mid-body is logged in one line and
nothing is stored.

Statuses: 200 stored (or all duplicates, or kept raw), 400 malformed (or the client went away
mid-body: nobody reads that answer), 401 missing/wrong credentials or missing signature headers,
403 wrong/garbled/stale signature, 413 too large, 503 the database failed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from calm_mail.errors import ConfigError, WebhookError
from calm_mail.records import Event
from calm_mail.store.events import EventsStored, RejectedEvent
from calm_mail.track.normalize import NormalizedBatch, normalize_batch
from calm_mail.track.suppress import suppression_changes
from calm_mail.track.verify import DEFAULT_MAX_AGE_S, Credentials, SignatureVerifier, decode_body

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
PATHS = ("/webhooks/sendgrid", "/")


class EventStore(Protocol):
    def store(
        self, events: Sequence[Event], rejected: Sequence[RejectedEvent] = ()
    ) -> EventsStored:
        """Insert-or-ignore events by event id and `rejected` by raw text, in one transaction;
        a row the database refuses is kept raw too (counted as `refused`), never raised."""
        ...


class SuppressionStore(Protocol):
    def add_suppressions(self, rows: Iterable[tuple[str, str, str]]) -> int:
        """(email, reason, source) rows; idempotent."""
        ...

    def remove_suppression(self, email: str, reason: str) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where events and suppression changes go: the ledger's `events` and `suppressions`."""

    @property
    def events(self) -> EventStore: ...

    @property
    def suppressions(self) -> SuppressionStore: ...


class OwnedSink(Sink, Protocol):
    """A sink the receiver opened itself (from a factory) and closes at shutdown."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What one store call did."""

    received: int
    new: int
    suppressed: int
    unsuppressed: int
    kept_raw: int = 0  # objects kept in rejected_events: unfit ones and rows the database refused
    refused: int = 0  # of `received`, the events the database refused (also in `kept_raw`)

    @property
    def duplicates(self) -> int:
        return self.received - self.new - self.refused


def store_events(
    sink: Sink, events: Sequence[Event], unfit: Sequence[RejectedEvent] = ()
) -> StoreResult:
    """Store `events` and keep `unfit` objects raw, then apply the events' suppression changes.
    Blocking; safe to repeat.

    Suppressions come after the events commit; if they fail the caller reports failure, and the
    retry finds the events already stored and applies the (idempotent) suppressions again.
    """
    stored = sink.events.store(events, unfit) if events or unfit else EventsStored(0)
    changes = suppression_changes(events)
    if changes.add:
        sink.suppressions.add_suppressions(changes.add)
    for email, reason in changes.remove:
        sink.suppressions.remove_suppression(email, reason)
    return StoreResult(
        received=len(events),
        new=stored.new,
        suppressed=len(changes.add),
        unsuppressed=len(changes.remove),
        kept_raw=len(unfit) + stored.refused,
        refused=stored.refused,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverConfig:
    """How the receiver admits requests. The public key and credentials never appear in repr.

    `public_key` None is refused unless `insecure_no_signature` says so explicitly (local demos).
    `max_age_s` None disables the freshness check. `clock` gives unix seconds (tests move it).
    """

    public_key: str | None = field(default=None, repr=False)
    max_age_s: float | None = DEFAULT_MAX_AGE_S
    insecure_no_signature: bool = False
    credentials: Credentials = field(default_factory=Credentials)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    clock: Callable[[], float] = time.time

    def verifier(self) -> SignatureVerifier | None:
        if self.public_key:
            return SignatureVerifier(self.public_key, max_age_s=self.max_age_s)
        if self.insecure_no_signature:
            return None
        raise ConfigError(
            "no Event Webhook public key: set SENDGRID_WEBHOOK_PUBLIC_KEY or pass --public-key"
            " (or --insecure-no-signature for a local test only)"
        )


def create_receiver(sink: Sink | Callable[[], OwnedSink], config: ReceiverConfig) -> Starlette:
    """The ASGI app. `sink` is a Sink, or a factory called at startup (closed at shutdown)."""
    verifier = config.verifier()
    state: dict[str, Sink] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if isinstance(sink, Sink):
            state["sink"] = sink
            yield
            return
        opened = await run_in_threadpool(sink)
        state["sink"] = opened
        try:
            yield
        finally:
            await run_in_threadpool(opened.close)

    async def receive(request: Request) -> JSONResponse:
        try:
            batch = await _admit(request, config, verifier)
        except WebhookError as exc:
            return _refuse(exc)
        except ClientDisconnect:
            # Expected (a client timed out or was killed): nothing was read whole, nothing stored.
            log.info("webhook client disconnected before its body was complete; nothing stored")
            return JSONResponse({"error": "client disconnected"}, status_code=400)
        target = state.get("sink") or (sink if isinstance(sink, Sink) else None)
        if target is None:
            return JSONResponse({"error": "not ready, retry"}, status_code=503)
        try:
            result = await run_in_threadpool(store_events, target, batch.events, batch.unfit)
        except Exception as exc:
            # Never lose an event: 503 makes SendGrid retry this batch later.
            log.error(
                "storing %d events failed (%s); answered 503",
                len(batch.events) + len(batch.unfit),
                type(exc).__name__,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return JSONResponse(
                {"error": "storage unavailable, retry later"},
                status_code=503,
                headers={"Retry-After": "30"},
            )
        return JSONResponse(_summary(batch, result))

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    routes = [Route(path, receive, methods=["POST"]) for path in PATHS]
    routes.append(Route("/healthz", healthz, methods=["GET"]))
    return Starlette(routes=routes, lifespan=lifespan)


async def _admit(
    request: Request, config: ReceiverConfig, verifier: SignatureVerifier | None
) -> NormalizedBatch:
    """Credentials, body, signature, parse, normalize; raises `WebhookError` with a status."""
    config.credentials.check(request.headers.get("authorization"))
    body = await read_body(request, config.max_body_bytes)
    if verifier is None:
        decode_body(body)
    else:
        verifier.verify(request.headers, body, now=config.clock())
    batch = parse_batch(body)
    if batch.rejected.skipped:
        log.warning(
            "rejected %d of %d webhook events: %s",
            batch.rejected.skipped,
            batch.rejected.total,
            dict(batch.rejected.counts),
        )
    return batch


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes `limit` bytes (never buffered whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise WebhookError(f"body larger than {limit} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise WebhookError(f"body larger than {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_batch(body: bytes) -> NormalizedBatch:
    """A JSON array of event objects -> normalized batch; 400 if not an array or all invalid."""
    items = loads(body)
    if not isinstance(items, list):
        raise WebhookError("body is not a JSON array of events", status=400)
    batch = normalize_batch(items)
    if batch.all_invalid:
        reasons = ", ".join(f"{k}: {n}" for k, n in sorted(batch.rejected.counts.items()))
        raise WebhookError(f"no valid event in the batch ({reasons})", status=400)
    return batch


def loads(body: bytes) -> object:
    """Parse JSON with orjson; JSON it refuses (a number beyond a double, a lone surrogate) with
    the standard parser, so one such event is set aside by normalization instead of refusing
    its whole batch. 400 if the body is not JSON at all."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body, parse_int=_parse_int)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise WebhookError("body is not JSON", status=400) from exc


def _parse_int(digits: str) -> int | float:
    """An integer as orjson reads it: exact within 64 bits, else a float (infinite if huge),
    never Python's 4,300-digit ValueError."""
    if len(digits.lstrip("-")) <= 19:
        return int(digits)
    return float(digits)


def _refuse(exc: WebhookError) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="calm-mail"'} if exc.status == 401 else None
    if exc.status >= 401:
        log.info("refused webhook request: %s %s", exc.status, exc)
    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)


def _summary(batch: NormalizedBatch, result: StoreResult) -> dict[str, object]:
    return {
        "received": batch.rejected.total,
        "stored": result.new,
        "duplicates": result.duplicates + batch.in_batch_duplicates,
        "rejected": dict(batch.rejected.counts),
        "kept_raw": result.kept_raw,
        "ignored": dict(batch.ignored),
        "suppressed": result.suppressed,
        "unsuppressed": result.unsuppressed,
    }
