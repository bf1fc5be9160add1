"""run_edition: a circuit-broken edition is paused with its reason and continues on --resume."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from calm_mail.campaign import load_campaign
from calm_mail.edition import Edition
from calm_mail.errors import UsageError
from calm_mail.ops.pipeline import RunOptions, run_edition
from calm_mail.store import Ledger
from tests.deliver.conftest import KEY

REPO = Path(__file__).resolve().parents[2]


def test_paused_by_the_breaker_then_resumed(
    project: tuple[Path, Edition], tmp_path: Path, sandbox_factory: Any
) -> None:
    root, edition = project
    campaign = load_campaign("weekly_winddown", root)
    sandbox = sandbox_factory(outages=((0.0, 4.0),))  # SendGrid is down for its first 4 s
    started = time.monotonic()
    now = datetime.now(UTC)
    with Ledger.connect(f"sqlite:///{tmp_path}/ledger.db") as ledger:
        options = RunOptions(
            api_key=KEY, api_host=sandbox.url, now=now, preflight=False, circuit_seconds=0.5
        )
        report = run_edition(campaign, edition, ledger, options)
        assert report.state == "paused" and report.tally.circuit_open
        assert "503" in report.tally.circuit_open and not report.ok
        edition_id = ledger.editions.get_edition(campaign.name, edition.key).edition_id
        assert any(e.action == "circuit_breaker" for e in ledger.editions.edition_log(edition_id))
        with pytest.raises(UsageError, match=r"paused .*--resume"):
            run_edition(campaign, edition, ledger, options)
        time.sleep(max(0.0, 4.5 - (time.monotonic() - started)))
        resumed = run_edition(campaign, edition, ledger, replace(options, resume=True))
        assert resumed.state == "sent" and resumed.ok
        sent = sum(n for (state, _), n in resumed.counts.items() if state == "sent")
        per_address = Counter(a for m in sandbox.messages() for a in m["to"])
        assert sent > 50 and len(per_address) == sent and set(per_address.values()) == {1}


def test_a_run_where_most_recipients_fail_is_not_ok(
    project: tuple[Path, Edition], tmp_path: Path, sandbox_factory: Any
) -> None:
    root, edition = project
    campaign = load_campaign("weekly_winddown", root)
    sandbox = sandbox_factory()
    with Ledger.connect(f"sqlite:///{tmp_path}/ledger.db") as ledger:
        # A batch id this SendGrid does not know: every send is a 400 for its recipient.
        info = ledger.editions.ensure_edition(campaign.name, edition.key, experiment="x")
        ledger.editions.update_edition(info.edition_id, batch_id="not-a-batch-of-this-account")
        report = run_edition(
            campaign,
            edition,
            ledger,
            RunOptions(api_key=KEY, api_host=sandbox.url, now=datetime.now(UTC), preflight=False),
        )
    assert not report.ok and report.tally.total_sent == 0
    assert sum(report.tally.failed.values()) > 50
    assert report.state == "sent"  # nothing left to send ...
    assert not report.as_dict()["ok"]  # ... but the run says loudly that it went wrong
