"""Running an ASGI app on uvicorn in a background thread (tests, benches, the demo loop)."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp


@contextmanager
def serve_in_thread(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 10.0
) -> Iterator[str]:
    """Serve `app` until the block ends; yields the base URL (port 0 picks a free port)."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", ws="none", lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout_s)


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (for servers in other processes)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    base: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0, path: str = "/healthz"
) -> None:
    """Poll ``base + path`` until it answers 200; RuntimeError if the process dies or stalls."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base}{path}", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:  # not listening yet, reset, timed out, or an error status
            time.sleep(0.05)
    raise RuntimeError("the server did not become ready in time")


@contextmanager
def cli_server(
    args: Sequence[str], *, ready_path: str, env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``calm-mail ARGS --port P`` in its own process on a free port until the block ends:
    (its base URL, the process). When it does not answer 200 on `ready_path`, RuntimeError
    with the end of its output (which is kept out of sight otherwise)."""
    port = free_port()
    command = [sys.executable, "-m", "calm_mail.cli", *args, "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_healthy(base, process, path=ready_path)
            except RuntimeError as exc:
                log.seek(0)
                output = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{' '.join(args[:2])}: {exc}:\n{output}") from None
            yield base, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
