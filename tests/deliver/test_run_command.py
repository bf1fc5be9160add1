"""`calm-mail run` as an operator runs it: against the sandbox, announcing every real run."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from calm_mail.cli import main
from calm_mail.edition import Edition
from tests.deliver.conftest import sender_env


@pytest.fixture
def slack() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local stand-in for a Slack incoming webhook that records what it is sent."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/services/T000/B000/secret-path", received
    server.shutdown()
    server.server_close()


def _env(root: Path, tmp_path: Path, url: str, slack_url: str) -> dict[str, str]:
    return sender_env(
        root,
        f"sqlite:///{tmp_path}/ledger.db",
        url,
        key="SG.operator-key-must-not-leak",
        CALM_MAIL_SLACK_WEBHOOK_URL=slack_url,
    )


def test_a_real_run_sends_announces_and_a_rerun_sends_nothing(
    project: tuple[Path, Edition],
    tmp_path: Path,
    sandbox_factory: Any,
    slack: tuple[str, list[dict[str, Any]]],
) -> None:
    root, edition = project
    sandbox = sandbox_factory()
    slack_url, received = slack
    args = ["--root", str(root), "run", "weekly_winddown", "--edition", edition.key, "--json"]
    env = _env(root, tmp_path, sandbox.url, slack_url)
    first = CliRunner().invoke(main, args, env=env)
    assert first.exit_code == 0, first.output
    summary = orjson.loads(first.output.strip().splitlines()[-1])
    assert summary["ok"] and summary["state"] == "sent"
    sent = sum(summary["sent_this_run"].values())
    assert sent == len(sandbox.messages()) > 50
    assert len(received) == 1 and "weekly_winddown" in json.dumps(received[0])
    second = CliRunner().invoke(main, args, env=env)
    assert second.exit_code == 0, second.output
    assert sum(orjson.loads(second.output.strip().splitlines()[-1])["sent_this_run"].values()) == 0
    assert len(sandbox.messages()) == sent  # nothing twice
    assert "operator-key-must-not-leak" not in first.output + second.output


def test_a_failed_preflight_sends_nothing_and_sends_a_failure_alert(
    project: tuple[Path, Edition],
    tmp_path: Path,
    sandbox_factory: Any,
    slack: tuple[str, list[dict[str, Any]]],
) -> None:
    root, edition = project
    sandbox = sandbox_factory(api_keys=frozenset({"SG.the-only-valid-key"}))
    slack_url, received = slack
    result = CliRunner().invoke(
        main,
        ["--root", str(root), "run", "weekly_winddown", "--edition", edition.key],
        env=_env(root, tmp_path, sandbox.url, slack_url),
    )
    assert result.exit_code == 1, result.output
    assert "pre-flight" in result.output.lower() or "preflight" in result.output.lower()
    assert sandbox.messages() == []
    assert len(received) == 1
    text = json.dumps(received[0])
    assert "fail" in text.lower() and "operator-key-must-not-leak" not in text
    assert "secret-path" not in result.output
