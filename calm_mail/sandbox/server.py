"""Run the sandbox with uvicorn in a background thread: for tests, the demo and benchmarks.

    with run_sandbox(SandboxConfig(latency_ms=50)) as sandbox:
        client = SendGridAPIClient("SG.test", host=sandbox.url)
        ...
        sandbox.messages()

The handle talks to the server's event loop through `run_coroutine_threadsafe`, so reading the
store from the test thread never races with the server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import uvicorn

from calm_mail.sandbox.app import Sandbox, create_app
from calm_mail.sandbox.config import SandboxConfig
from calm_mail.sandbox.webhook import WebhookSigner

T = TypeVar("T")


class _QuietDrops(logging.Filter):
    """Uvicorn logs an error for every connection the sandbox drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("ASGI callable should return None")


_drop_filter = _QuietDrops()


class SandboxHandle:
    """A running sandbox: its URL, webhook public key, store and a way to stop it."""

    def __init__(
        self,
        server: uvicorn.Server,
        thread: threading.Thread,
        sandbox: Sandbox,
        host: str,
        port: int,
    ) -> None:
        self._server = server
        self._thread = thread
        self._sandbox = sandbox
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self.public_key_b64 = sandbox.signer.public_key_b64

    def __repr__(self) -> str:
        return f"SandboxHandle(url={self.url!r})"

    def _call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        async def run() -> T:
            return fn()

        loop = self._sandbox_loop()
        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout)

    def _sandbox_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._sandbox.loop
        if loop is None:
            raise RuntimeError("the sandbox is not running")
        return loop

    def messages(self, *, full: bool = False) -> list[dict[str, Any]]:
        """Every accepted message, as `GET /_sandbox/messages` shows it."""
        return self._call(lambda: list(self._sandbox.store.iter_json(full=full)))

    def stats(self) -> dict[str, Any]:
        return self._call(
            lambda: {
                "by_status": dict(self._sandbox.requests),
                "webhook": dict(self._sandbox.emitter.stats),
            }
        )

    def advance_clock(self, seconds: float) -> None:
        """Move the sandbox clock forward and release mail that became due."""

        def step() -> None:
            self._sandbox.store.advance(seconds)
            self._sandbox.store.release_due(self._sandbox.release)

        self._call(step)

    def reset(self) -> None:
        """Back to a fresh sandbox: no messages, batches, pauses or clock moves."""
        self._call(lambda: self._sandbox.store.reset(everything=True))

    def wait_webhooks_idle(self, timeout: float = 10.0, settle_s: float = 0.2) -> bool:
        """Wait until no event is due or in flight for `settle_s`; False on timeout."""
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            if self._call(self._sandbox.emitter.idle):
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle_s:
                    return True
            else:
                quiet_since = None
            time.sleep(0.02)
        return False

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (several times the throughput of the default loop)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return None
    return uvloop.new_event_loop


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def start_sandbox(
    config: SandboxConfig, *, signer: WebhookSigner | None = None, startup_timeout_s: float = 10.0
) -> SandboxHandle:
    """Start uvicorn on `config.host:config.port` (0 = a free port) in a daemon thread."""
    app = create_app(config, signer=signer)
    sandbox: Sandbox = app.state.sandbox
    sock = _bind(config.host, config.port)
    port = sock.getsockname()[1]
    uv_config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        backlog=2048,
        timeout_keep_alive=30,
        log_level="warning",
    )
    server = uvicorn.Server(uv_config)
    logging.getLogger("uvicorn.error").addFilter(_drop_filter)

    def serve() -> None:
        async def main() -> None:
            sandbox.loop = asyncio.get_running_loop()
            await server.serve(sockets=[sock])

        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())

    thread = threading.Thread(target=serve, name=f"calm-mail-sandbox:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the sandbox did not start on {config.host}:{port}")
        time.sleep(0.01)
    return SandboxHandle(server, thread, sandbox, config.host, port)


@contextmanager
def run_sandbox(
    config: SandboxConfig | None = None, *, signer: WebhookSigner | None = None
) -> Iterator[SandboxHandle]:
    """A running sandbox for the duration of the block; stopped (and joined) afterwards."""
    handle = start_sandbox(config or SandboxConfig(), signer=signer)
    try:
        yield handle
    finally:
        handle.stop()
