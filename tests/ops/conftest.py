"""Fixtures for the ops tests: a recording HTTP endpoint, moto's S3 server, a project root."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

try:  # the inputs engineer's shared fixture, once it exists
    from tests.s3server import s3_server
except ImportError:

    @pytest.fixture
    def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
        """moto's S3 as a real HTTP server on 127.0.0.1; boto3 pointed at it by env."""
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        port = server._server.server_port  # type: ignore[attr-defined]
        url = f"http://127.0.0.1:{port}"
        for key, value in {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        try:
            yield url
        finally:
            server.stop()


@dataclass
class Recorder:
    """What a local HTTP endpoint received; `status` is what it answers."""

    url: str
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def http_endpoint() -> Iterator[Recorder]:
    """A tiny HTTP server on 127.0.0.1 that records every request (a Slack webhook stand-in)."""
    recorder = Recorder(url="")

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorder.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": json.loads(body) if body.startswith((b"{", b"[")) else body,
                }
            )
            self.send_response(recorder.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_POST = do_GET = _record

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def make_root(tmp_path: Path, *, prepare: str = "fri 18:00", extra: str = "") -> Path:
    """A project root with the shipped templates and rules and a weekly_winddown campaign
    whose inputs live in ``<root>/data`` and whose schedule prepares at `prepare`."""
    root = tmp_path / "project"
    (root / "campaigns").mkdir(parents=True)
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "rules", root / "rules")
    text = (REPO / "campaigns" / "weekly_winddown.toml").read_text()
    text = text.replace("{root}/data/demo/", "{root}/data/")
    text = text.replace("max_bad_share = 0.01", "max_bad_share = 0.05")
    text = text.replace('prepare = "fri 18:00"', f'prepare = "{prepare}"')
    (root / "campaigns" / "weekly_winddown.toml").write_text(text + extra)
    return root


@dataclass
class Weekend:
    """A project root with generated data for `edition`, a sandbox SendGrid whose clock (like
    the job's, through `offset_s`) reads `friday` — the edition's Friday 18:00 UTC."""

    root: Path
    edition: Any
    friday: Any
    offset_s: float
    sandbox: Any

    def requests(self) -> int:
        return int(sum(self.sandbox.stats()["by_status"].values()))


@pytest.fixture
def weekend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Weekend]:
    from datetime import UTC, datetime, time, timedelta

    from calm_mail.demo.data import generate
    from calm_mail.edition import Edition
    from calm_mail.sandbox.config import SandboxConfig
    from calm_mail.sandbox.server import run_sandbox

    now = datetime.now(UTC)
    edition = Edition.upcoming(now)
    friday = datetime.combine(edition.send_date - timedelta(days=1), time(18, 0), UTC)
    offset = (friday - now).total_seconds()
    fire = now + timedelta(seconds=4)  # the scheduler fires (real clock) a few seconds from now
    prepare = f"{fire:%a} {fire:%H:%M:%S}".lower()
    root = make_root(tmp_path, prepare=prepare)
    generate(root / "data", users=40, edition=edition.key, recs=40, parts=1)
    monkeypatch.delenv("CALM_MAIL_DATABASE_URL", raising=False)
    monkeypatch.delenv("CALM_MAIL_SLACK_WEBHOOK_URL", raising=False)
    with run_sandbox(SandboxConfig(clock_offset_s=offset, simulate=False)) as sandbox:
        monkeypatch.setenv("SENDGRID_API_KEY", "SG.ops-test-key")
        monkeypatch.setenv("SENDGRID_API_HOST", sandbox.url)
        yield Weekend(root=root, edition=edition, friday=friday, offset_s=offset, sandbox=sandbox)
