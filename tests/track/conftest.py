"""Fixtures for the track stage: a signer, a fake Sink, and the receiver on a real uvicorn."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from calm_mail.records import Event
from calm_mail.sandbox.webhook import WebhookSigner
from calm_mail.store.events import EventsStored, RejectedEvent
from calm_mail.track.receiver import ReceiverConfig, Sink, create_receiver
from calm_mail.track.server import serve_in_thread
from tests.s3server import s3_server  # noqa: F401 - re-exported fixture

TS = int(time.time())


@dataclass
class MemoryEvents:
    """A fake of the ledger's `events`; `fail` makes store raise like a lost database."""

    stored: dict[str, Event] = field(default_factory=dict)
    kept_raw: dict[str, RejectedEvent] = field(default_factory=dict)
    fail: bool = False

    def store(
        self, events: Sequence[Event], rejected: Sequence[RejectedEvent] = ()
    ) -> EventsStored:
        if self.fail:
            raise ConnectionError("database is down")
        new = [e for e in events if e.event_id not in self.stored]
        self.stored.update((e.event_id, e) for e in new)
        self.kept_raw.update((r.digest, r) for r in rejected)
        return EventsStored(len(new))


@dataclass
class MemorySuppressions:
    """A fake of the ledger's `suppressions`: (email, reason) -> source."""

    rows: dict[tuple[str, str], str] = field(default_factory=dict)

    def add_suppressions(self, rows: Iterable[tuple[str, str, str]]) -> int:
        before = len(self.rows)
        for email, reason, source in rows:
            self.rows.setdefault((email, reason), source)
        return len(self.rows) - before

    def remove_suppression(self, email: str, reason: str) -> None:
        self.rows.pop((email, reason), None)


@dataclass
class MemorySink:
    """A fake of the `Sink` protocol, shaped like the ledger."""

    events: MemoryEvents = field(default_factory=MemoryEvents)
    suppressions: MemorySuppressions = field(default_factory=MemorySuppressions)


@dataclass
class Receiver:
    """A running receiver: its URL, its signer, and a keep-alive client."""

    url: str
    signer: WebhookSigner
    client: httpx.Client

    def post(
        self,
        body: bytes,
        *,
        timestamp: int | None = None,
        path: str = "/webhooks/sendgrid",
        headers: dict[str, str] | None = None,
        sign: bool = True,
    ) -> httpx.Response:
        signed = self.signer.headers(body, timestamp) if sign else {}
        return self.client.post(
            self.url + path, content=body, headers={**signed, **(headers or {})}
        )


ServeReceiver = Callable[..., AbstractContextManager[Receiver]]


@pytest.fixture
def signer() -> WebhookSigner:
    return WebhookSigner()


@contextmanager
def running_receiver(sink: Sink, signer: WebhookSigner, **config: Any) -> Iterator[Receiver]:
    """The receiver app on uvicorn (127.0.0.1, free port), checking `signer`'s signatures."""
    options: dict[str, Any] = {"public_key": signer.public_key, **config}
    app = create_receiver(sink, ReceiverConfig(**options))
    with serve_in_thread(app) as url, httpx.Client(timeout=10) as client:
        yield Receiver(url, signer, client)


@pytest.fixture
def serve_receiver(signer: WebhookSigner) -> ServeReceiver:
    """serve_receiver(sink, **ReceiverConfig fields) -> context manager yielding a Receiver."""
    return lambda sink, **config: running_receiver(sink, signer, **config)


def sg_event(n: int, event: str = "delivered", **fields: object) -> dict[str, object]:
    """A SendGrid-shaped event joined to delivery d<n> of edition 2026-W48."""
    base: dict[str, object] = {
        "email": f"user{n}@example.com",
        "timestamp": TS,
        "event": event,
        "sg_event_id": f"ev-{event}-{n}",
        "sg_message_id": f"msg{n}.filter0001",
        "delivery_id": f"d{n}",
        "campaign": "weekly_winddown",
        "edition": "2026-W48",
        "arm": "personalized" if n % 2 else "editorial",
        "category": ["weekly_winddown"],
    }
    base.update(fields)
    return base


def half_a_body(url: str, path: str, body: bytes, headers: dict[str, str]) -> None:
    """POST to ``url + path`` on a raw socket: the headers and half of `body`, then close, as a
    client that times out or is killed mid-request does."""
    host, port = url.removeprefix("http://").split(":")
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body[: len(body) // 2])
        time.sleep(0.2)  # the server is now waiting for the rest
