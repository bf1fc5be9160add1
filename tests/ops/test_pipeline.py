"""The composition root: each stage once, in order; pre-flight on the plan it is handed;
nothing recorded before pre-flight passes. Real sandbox over HTTP, real SQLite ledger."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from calm_mail.campaign import load_campaign
from calm_mail.errors import PreflightError
from calm_mail.ops import pipeline
from calm_mail.ops.pipeline import RunOptions, plan_only, run_edition
from calm_mail.store import Ledger
from tests.ops.conftest import Weekend

STAGES = {"plan", "preflight", "record", "compose", "send", "finish"}


def _options(weekend: Weekend, **changes: Any) -> RunOptions:
    options = RunOptions(
        api_key=os.environ["SENDGRID_API_KEY"], api_host=weekend.sandbox.url, now=weekend.friday
    )
    return replace(options, **changes)


@pytest.fixture
def plans_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The editions the root planned, in order (the real planner runs; this only counts)."""
    made: list[str] = []
    real = pipeline.plan_edition

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(str(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "plan_edition", counting)
    return made


def test_a_run_plans_once_and_times_every_stage(weekend: Weekend, plans_made: list[str]) -> None:
    campaign = load_campaign("weekly_winddown", weekend.root)
    with Ledger.connect(None, root=weekend.root) as ledger:
        report = run_edition(campaign, weekend.edition, ledger, _options(weekend))
        info = ledger.editions.get_edition(campaign.name, weekend.edition.key)
        users = [d.user_id for d in plan_only(campaign, weekend.edition, ledger).deliveries]
        recorded = ledger.assignments.get_assignments(campaign.experiment.name, users)
    assert plans_made[0] == weekend.edition.key and len(plans_made) == 2  # the run, then ours
    assert report.ok and report.state == "sent"
    assert set(report.stage_cpu) == STAGES and all(v >= 0 for v in report.stage_cpu.values())
    assert report.preflight is not None and report.preflight.ok
    assert info is not None and info.preflight == report.preflight.as_dict()
    assert info.summary is not None and info.summary["ok"] is True
    assert len(recorded) == len(users) > 0  # every planned user's arm is now sticky
    assert report.tally.total_sent == len(weekend.sandbox.messages()) > 0


def test_a_failed_preflight_records_nothing(weekend: Weekend, plans_made: list[str]) -> None:
    campaign = load_campaign("weekly_winddown", weekend.root)
    too_early = weekend.friday - timedelta(days=4)  # the send times are 5 days away
    with Ledger.connect(None, root=weekend.root) as ledger:
        with pytest.raises(PreflightError) as caught:
            run_edition(campaign, weekend.edition, ledger, _options(weekend, now=too_early))
        info = ledger.editions.get_edition(campaign.name, weekend.edition.key)
        assert info is not None
        users = [d.user_id for d in plan_only(campaign, weekend.edition, ledger).deliveries]
        arms = ledger.assignments.get_assignments(campaign.experiment.name, users)
        assert arms == {}  # no exposure
        assert ledger.deliveries.counts(info.edition_id) == {}  # no delivery row
        log = [(e.action, e.detail) for e in ledger.editions.edition_log(info.edition_id)]
    assert len(plans_made) == 2  # the run planned once; pre-flight used that plan
    assert caught.value.report == info.preflight and info.preflight is not None
    failed = [c["name"] for c in info.preflight["checks"] if not c["ok"]]
    assert failed == ["send_window"]
    assert log == [("preflight", {"ok": False, "failed": ["send_window"]})]
    assert weekend.requests() == 0  # SendGrid was never asked


def test_a_plan_that_cannot_be_made_is_reported_by_preflight(weekend: Weekend) -> None:
    campaign = load_campaign("weekly_winddown", weekend.root)
    audience = weekend.root / "data" / "users.csv"
    audience.write_text("user_id,locale\nu1,en-US\n", encoding="utf-8")  # no email column
    with Ledger.connect(None, root=weekend.root) as ledger, pytest.raises(PreflightError) as caught:
        run_edition(campaign, weekend.edition, ledger, _options(weekend))
    report = caught.value.report
    assert report is not None
    first = report["checks"][0]  # type: ignore[index]
    assert first["name"] == "plan" and not first["ok"] and "email" in first["detail"].lower()


def test_a_dry_run_records_no_exposure_and_skips_preflight(
    weekend: Weekend, plans_made: list[str]
) -> None:
    campaign = load_campaign("weekly_winddown", weekend.root)
    outbox = weekend.root / "out" / "outbox"
    with Ledger.connect(None, root=weekend.root) as ledger:
        report = run_edition(
            campaign, weekend.edition, ledger, RunOptions(dry_run=True, outbox=outbox)
        )
        users = [d.user_id for d in plan_only(campaign, weekend.edition, ledger).deliveries]
        assert ledger.assignments.get_assignments(campaign.experiment.name, users) == {}
        assert ledger.editions.get_edition(campaign.name, weekend.edition.key) is None
    assert report.ok and report.preflight is None and "preflight" not in report.stage_cpu
    assert len(list(outbox.glob("*.eml"))) == report.tally.total_sent > 0
    assert weekend.requests() == 0
