"""Run summaries: one JSON log line, and a Slack webhook on a local HTTP endpoint."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from calm_mail.campaign import Campaign, load_campaign
from calm_mail.deliver.engine import SendTally
from calm_mail.ops import alerts
from calm_mail.ops.checks import Check, Status
from calm_mail.ops.preflight import PreflightReport
from calm_mail.ops.run_report import RunReport
from tests.ops.conftest import Recorder, make_root

SECRET_PATH = "/services/T000/B000/XXXXSECRETXXXX"


@pytest.fixture
def campaign(tmp_path: Path) -> Campaign:
    return load_campaign("weekly_winddown", make_root(tmp_path))


def _report(
    state: str = "sent", stopped: str | None = None, preflight: PreflightReport | None = None
) -> RunReport:
    tally = SendTally(
        sent=Counter(control=3, personalized=4), failed=Counter({"400 bad address": 1})
    )
    tally.stopped = stopped
    return RunReport(
        campaign="weekly_winddown",
        edition="2026-W48",
        dry_run=False,
        planned_new=9,
        tally=tally,
        reconciled=None,
        counts={
            ("sent", "control"): 3,
            ("sent", "personalized"): 4,
            ("failed", "personalized"): 1,
            ("skipped", "holdout"): 1,
        },
        state=state,
        seconds=1.23456,
        preflight=preflight,
    )


PREFLIGHT = PreflightReport(
    campaign="weekly_winddown",
    edition="2026-W48",
    at=datetime(2026, 11, 27, 18, tzinfo=UTC),
    checks=(Check(name="srm", status=Status.OK, detail="p = 0.6"),),
)


def test_the_summary_is_one_json_line(caplog: pytest.LogCaptureFixture) -> None:
    summary = alerts.run_summary(_report(preflight=PREFLIGHT))
    with caplog.at_level(logging.INFO, logger="calm_mail.run"):
        alerts.announce(summary)
    records = [r for r in caplog.records if r.name == "calm_mail.run"]
    assert len(records) == 1 and "\n" not in records[0].getMessage()
    line = orjson.loads(records[0].getMessage())
    assert line["arms"] == {
        "control": {"sent": 3},
        "holdout": {"skipped": 1},
        "personalized": {"failed": 1, "sent": 4},
    }
    assert line["failures"] == {"400 bad address": 1}
    assert line["seconds"] == 1.235 and line["ok"] is True
    assert line["preflight"] == {"ok": True, "failed": []}


def test_posts_to_slack_when_configured(
    campaign: Campaign,
    http_endpoint: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CALM_MAIL_SLACK_WEBHOOK_URL", http_endpoint.url + SECRET_PATH)
    with caplog.at_level(logging.DEBUG):
        alerts.announce(alerts.run_summary(_report(preflight=PREFLIGHT)), campaign)
    [request] = http_endpoint.requests
    assert request["method"] == "POST" and request["path"] == SECRET_PATH
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["body"]
    assert "weekly_winddown 2026-W48 sent" in body["text"]
    assert "*personalized*: failed 1, sent 4" in body["blocks"][1]["text"]["text"]
    assert "SECRET" not in caplog.text


def test_a_failed_run_alerts_with_its_reason(
    campaign: Campaign, http_endpoint: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALM_MAIL_SLACK_WEBHOOK_URL", http_endpoint.url + SECRET_PATH)
    preflight = {
        "ok": False,
        "checks": [{"name": "personalize_fresh", "ok": False, "detail": "9 days old"}],
    }
    summary = alerts.failure_summary(
        "weekly_winddown",
        "2026-W48",
        "pre-flight weekly_winddown 2026-W48: FAILED (1 of 7)",
        seconds=0.5,
        preflight=preflight,
    )
    alerts.announce(summary, campaign)
    body = http_endpoint.requests[0]["body"]
    assert body["text"].startswith(":red_circle: weekly_winddown 2026-W48 failed: pre-flight")
    assert "pre-flight failed: personalize_fresh" in body["blocks"][1]["text"]["text"]


def test_a_stopped_run_is_not_reported_as_sent() -> None:
    summary = alerts.run_summary(_report(state="sending", stopped="stopped by SIGTERM"))
    assert summary["ok"] is False
    assert "not finished: stopped by SIGTERM" in alerts.slack_message(summary)["text"]


def test_the_campaign_url_is_used_without_the_env(
    tmp_path: Path, http_endpoint: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALM_MAIL_SLACK_WEBHOOK_URL", raising=False)
    extra = f'\n[alerts]\nslack_webhook_url = "{http_endpoint.url}/hook"\ntimeout_s = 2\n'
    campaign = load_campaign("weekly_winddown", make_root(tmp_path, extra=extra))
    alerts.announce(alerts.run_summary(_report()), campaign)
    assert [r["path"] for r in http_endpoint.requests] == ["/hook"]


@pytest.mark.parametrize("status", [500, 404])
def test_a_refusing_webhook_is_logged_never_fatal(
    campaign: Campaign,
    http_endpoint: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    http_endpoint.status = status
    monkeypatch.setenv("CALM_MAIL_SLACK_WEBHOOK_URL", http_endpoint.url + SECRET_PATH)
    with caplog.at_level(logging.WARNING, logger="calm_mail.ops.alerts"):
        alerts.announce(alerts.run_summary(_report()), campaign)
    assert f"refused: HTTP {status}" in caplog.text
    assert "SECRET" not in caplog.text and "127.0.0.1" in caplog.text


def test_an_unreachable_webhook_is_logged_never_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="calm_mail.ops.alerts"):
        sent = alerts.post_slack(
            f"http://127.0.0.1:{port}{SECRET_PATH}", {"text": "x"}, timeout_s=1
        )
    assert sent is False
    assert "not sent: ConnectionRefusedError" in caplog.text and "SECRET" not in caplog.text
