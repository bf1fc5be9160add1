"""`calm-mail schedule`: --list, and --once with the exit codes cron and Airflow react to."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from calm_mail.cli import main
from calm_mail.store import Ledger
from calm_mail.store.locks import edition_lock
from tests.ops.conftest import Recorder, Weekend, make_root


def _schedule(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--root", str(root), "schedule", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_list_shows_utc_and_the_campaigns_zone(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    code, out = _schedule(root, "--list", "--json")
    assert code == 0
    [row] = orjson.loads(out)
    assert row["campaign"] == "weekly_winddown" and row["zone"] == "America/New_York"
    assert row["next_run_utc"].endswith("18:00:00+00:00")
    local = row["next_run_local"]
    assert local.endswith(("13:00:00-05:00", "14:00:00-04:00"))  # EST or EDT
    code, out = _schedule(root, "--list")
    assert code == 0
    assert "weekly_winddown" in out and "fri 18:00" in out and "America/New_York" in out


def test_list_refuses_a_bad_campaign_with_exit_2(tmp_path: Path) -> None:
    root = make_root(tmp_path, prepare="someday")
    code, out = _schedule(root, "--list")
    assert code == 2 and "schedule.prepare" in out


def test_once_unknown_campaign_is_exit_2(tmp_path: Path) -> None:
    code, out = _schedule(make_root(tmp_path), "--once", "nope")
    assert code == 2 and "no campaign 'nope'" in out


def _age_personalize_output(weekend: Weekend, days: float) -> None:
    folder = weekend.root / "data" / "personalize" / weekend.edition.key
    stamp = (weekend.friday - timedelta(days=days)).timestamp()
    for part in folder.iterdir():
        os.utime(part, (stamp, stamp))


@pytest.mark.slow
def test_a_failed_preflight_sends_nothing_and_alerts(
    weekend: Weekend, http_endpoint: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALM_MAIL_SLACK_WEBHOOK_URL", http_endpoint.url + "/services/T/B/secret")
    _age_personalize_output(weekend, days=10)
    offset = str(weekend.offset_s)
    code, out = _schedule(weekend.root, "--once", "weekly_winddown", "--clock-offset", offset)
    assert code == 1
    assert "FAIL personalize_fresh" in out and "Nothing was sent." in out
    assert weekend.requests() == 0  # not even the key check reached the sandbox
    [alert] = http_endpoint.requests
    assert "failed: pre-flight" in alert["body"]["text"]
    with Ledger.connect(None, root=weekend.root) as ledger:
        info = ledger.editions.get_edition("weekly_winddown", weekend.edition.key)
        assert info is not None and info.preflight is not None
        assert info.preflight["ok"] is False
        failed = [c["name"] for c in info.preflight["checks"] if not c["ok"]]
        assert failed == ["personalize_fresh"]
        key = info.preflight["checks"][-1]  # not tried once a check failed: not a failure
        assert (key["name"], key["status"], key["code"]) == ("sendgrid_key", "skipped", "not_tried")
        assert ledger.deliveries.counts(info.edition_id) == {}

    # Fixed inputs: the same command sends the edition (0), and a re-run has nothing to do (0).
    _age_personalize_output(weekend, days=1)
    code, out = _schedule(weekend.root, "--once", "weekly_winddown", "--clock-offset", offset)
    assert code == 0, out
    assert ": sent (" in out
    sent = len(weekend.sandbox.messages())
    assert sent > 0
    code, out = _schedule(weekend.root, "--once", "weekly_winddown", "--clock-offset", offset)
    assert code == 0 and "nothing_to_do" in out
    assert len(weekend.sandbox.messages()) == sent


def test_once_on_a_locked_edition_is_exit_3(weekend: Weekend) -> None:
    with (
        Ledger.connect(None, root=weekend.root) as ledger,
        edition_lock(ledger.locks, "weekly_winddown", weekend.edition, holder="other-host:77"),
    ):
        code, out = _schedule(
            weekend.root, "--once", "weekly_winddown", "--clock-offset", str(weekend.offset_s)
        )
    assert code == 3 and "other-host:77" in out
    assert weekend.requests() == 0
