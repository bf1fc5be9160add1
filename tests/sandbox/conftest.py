"""Fixtures: a running sandbox and a tiny Event Webhook receiver, both on 127.0.0.1 sockets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from calm_mail.sandbox import SandboxConfig, SandboxHandle, run_sandbox

KEY = "SG.test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def mail(to: str = "user@example.com", **extra: Any) -> dict[str, Any]:
    """A minimal valid mail/send body; keyword arguments override top-level keys."""
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": to}]}],
        "from": {"email": "winddown@example.com", "name": "Weekly Winddown"},
        "subject": "Your weekly winddown",
        "content": [
            {"type": "text/plain", "value": "hello"},
            {
                "type": "text/html",
                "value": '<p>hello <a href="https://app.example/x">listen</a></p>',
            },
        ],
    }
    body.update(extra)
    return body


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxHandle]:
    with run_sandbox(SandboxConfig()) as handle:
        yield handle


@pytest.fixture
def sandbox(shared_sandbox: SandboxHandle) -> SandboxHandle:
    """A fault-free sandbox, emptied before each test."""
    shared_sandbox.reset()
    return shared_sandbox


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.body)
        return events


@dataclass
class Receiver:
    """Records every POST; answers 500 to the first `fail_first` of them."""

    url: str = ""
    fail_first: int = 0
    posts: list[Received] = field(default_factory=list)
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[Received]:
        with self.lock:
            return list(self.posts)

    def events(self) -> list[dict[str, Any]]:
        return [e for post in self.accepted() for e in post.events]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                fail = state.failed < state.fail_first
                if fail:
                    state.failed += 1
                else:
                    state.posts.append(Received(body, dict(self.headers.items())))
            self.send_response(500 if fail else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/events"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    """One pooled client: creating an httpx client per call costs ~50 ms (TLS context)."""
    with httpx.Client(timeout=10) as client:
        yield client
