"""Pre-flight checks, one failure at a time, on generated data and real servers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from calm_mail.campaign import Campaign, load_campaign
from calm_mail.demo.data import generate
from calm_mail.edition import Edition
from calm_mail.errors import PreflightError
from calm_mail.ops.checks import (
    CONFIG_CHECKS,
    CheckContext,
    CheckFailed,
    Status,
    check_catalog,
    check_recommendations,
)
from calm_mail.ops.preflight import check_fresh, preflight, widest_window
from calm_mail.plan.srm import srm_check
from calm_mail.records import ContentSource, PlannedDelivery
from calm_mail.sandbox.config import SandboxConfig
from calm_mail.sandbox.server import run_sandbox
from tests.ops.conftest import make_root

EDITION = Edition.parse("2026-W48")  # Saturday 2026-11-28
FRIDAY = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
NO_KEY = ("sendgrid_key",)
QUICK = ("sendgrid_key", *CONFIG_CHECKS)  # the campaign's files are tested on their own


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ops-data")
    generate(folder, users=30, edition=EDITION.key, recs=20, parts=1)
    return folder


@pytest.fixture
def campaign(tmp_path: Path, data: Path) -> Campaign:
    root = make_root(tmp_path)
    (root / "data").symlink_to(data, target_is_directory=True)
    stamp = (FRIDAY - timedelta(hours=6)).timestamp()
    for part in (data / "personalize" / EDITION.key).iterdir():
        os.utime(part, (stamp, stamp))
    return load_campaign("weekly_winddown", root)


def _failed(report: Any) -> dict[str, str]:
    return {c.name: c.detail for c in report.checks if not c.ok}


def test_passes_with_every_check_named(campaign: Campaign) -> None:
    with run_sandbox() as sandbox:
        report = preflight(campaign, EDITION, now=FRIDAY, api_key="SG.x", api_host=sandbox.url)
    assert report.ok, report.text()
    assert [c.name for c in report.checks] == [
        *CONFIG_CHECKS,
        "personalize_fresh",
        "send_window",
        "sendgrid_key",
    ]
    assert all(c.status is Status.OK for c in report.checks)
    report.raise_if_failed()  # no error


def test_every_problem_is_reported_at_once(campaign: Campaign, data: Path) -> None:
    stale = (FRIDAY - timedelta(days=9)).timestamp()
    for part in (data / "personalize" / EDITION.key).iterdir():
        os.utime(part, (stale, stale))
    monday = FRIDAY - timedelta(days=4)
    report = preflight(campaign, EDITION, now=monday, api_key=None, api_host="http://x")
    failed = _failed(report)
    assert set(failed) == {"send_window"}  # monday: 5 days early, not stale
    # The provider is not asked once a check failed: reported as not tried, not as failed.
    key = report.checks[-1]
    assert key.name == "sendgrid_key" and key.status is Status.SKIPPED and key.ok
    report = preflight(campaign, EDITION, now=FRIDAY, api_key=None, api_host="http://x")
    failed = _failed(report)
    assert set(failed) == {"personalize_fresh"}
    fresh = next(c for c in report.checks if c.name == "personalize_fresh")
    assert (fresh.code, fresh.key) == ("stale", "inputs.max_age_days")
    assert "older than inputs.max_age_days = 7" in failed["personalize_fresh"]
    with pytest.raises(PreflightError) as caught:
        report.raise_if_failed()
    text = str(caught.value)
    assert text.startswith("pre-flight weekly_winddown 2026-W48: FAILED (1 of 11)")
    assert "FAIL personalize_fresh" in text and "Nothing was sent." in text
    assert caught.value.report == report.as_dict()


def test_a_missing_editorial_locale_fails(campaign: Campaign, tmp_path: Path) -> None:
    source = campaign.root / "data" / "editorial" / f"{EDITION.key}.toml"
    text = source.read_text().replace('"ja-JP" = [', '"xx-XX" = [')
    (tmp_path / "editorial.toml").write_text(text)
    inputs = campaign.inputs.model_copy(update={"editorial": str(tmp_path / "editorial.toml")})
    changed = campaign.model_copy(update={"inputs": inputs})
    report = preflight(changed, EDITION, now=FRIDAY, api_key=None, api_host="x", skip=NO_KEY)
    assert "ja-JP" in _failed(report)["editorial"]


def test_a_rejected_key_fails_after_one_request(campaign: Campaign) -> None:
    with run_sandbox(SandboxConfig(api_keys=frozenset({"SG.good"}))) as sandbox:
        report = preflight(
            campaign, EDITION, now=FRIDAY, api_key="SG.wrong-secret", api_host=sandbox.url
        )
        requests = sum(sandbox.stats()["by_status"].values())
    detail = _failed(report)["sendgrid_key"]
    assert "401" in detail or "403" in detail
    assert "SG.wrong-secret" not in report.text()
    assert requests == 1


@dataclass
class _Summary:
    srm: Any
    arms: dict[str, Any]


@dataclass
class _Plan:
    deliveries: tuple[PlannedDelivery, ...]
    summary: _Summary
    personalize_covered: int | None = 0  # none of these made-up users has a Personalize line


def _delivery(n: int, arm: str, send_at: datetime) -> PlannedDelivery:
    source = ContentSource.EDITORIAL if arm == "control" else ContentSource.PERSONALIZE
    return PlannedDelivery(
        edition=EDITION.key,
        user_id=f"u{n:05d}",
        email=f"u{n}@example.com",
        locale="en-US",
        arm=arm,
        source=source,
        fallback=False,
        item_ids=("a",),
        send_at=send_at,
        timezone="UTC",
    )


def test_srm_and_coverage_and_window_from_the_plan(campaign: Campaign) -> None:
    send_at = FRIDAY + timedelta(hours=14)
    deliveries = tuple(
        [_delivery(n, "control", send_at) for n in range(300)]
        + [_delivery(n, "personalized", send_at + timedelta(days=3)) for n in range(300, 400)]
    )
    srm = srm_check({"control": 300, "personalized": 100}, campaign.experiment.weights)
    plan = _Plan(deliveries=deliveries, summary=_Summary(srm=srm, arms={}))
    report = preflight(
        campaign, EDITION, now=FRIDAY, api_key=None, api_host="x", plan=plan, skip=QUICK
    )
    failed = _failed(report)
    assert "sample ratio mismatch" in failed["srm"]
    assert "covers 0 of 400 eligible users" in failed["personalize_coverage"]
    assert "100 send time(s) are more than 72 h after" in failed["send_window"]
    checks = {c.name: c for c in report.checks}
    assert checks["srm"].code == "srm" and checks["send_window"].code == "too_early"
    assert checks["personalize_coverage"].key == "inputs.min_coverage"


def test_a_plan_that_could_not_be_made_is_a_failed_check(campaign: Campaign) -> None:
    report = preflight(
        campaign,
        EDITION,
        now=FRIDAY,
        api_key=None,
        api_host="x",
        plan_error="users.csv: missing column EMAIL",
        skip=NO_KEY,
    )
    first = report.checks[0]
    assert (first.name, first.ok, first.detail) == (
        "plan",
        False,
        "users.csv: missing column EMAIL",
    )
    assert not report.ok


def test_the_widest_window_spans_every_zone(campaign: Campaign) -> None:
    first, last = widest_window(campaign, EDITION)
    assert first == datetime(2026, 11, 27, 18, 0, tzinfo=UTC)  # Sat 08:00 at UTC+14
    assert last == datetime(2026, 11, 28, 20, 0, tzinfo=UTC)  # Sat 08:00 at UTC-12


def test_freshness_of_s3_output_uses_last_modified(
    campaign: Campaign, s3_server: str, data: Path
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="recs")
    s3.put_object(Bucket="recs", Key="2026-W48/part-0.json.out", Body=b'{"input":{}}\n')
    inputs = campaign.inputs.model_copy(update={"recommendations": "s3://recs/{edition}/"})
    on_s3 = campaign.model_copy(update={"inputs": inputs})
    now = datetime.now(UTC)
    ctx = CheckContext(campaign=on_s3, edition=EDITION)
    assert "1 part file(s)" in check_fresh(ctx, now)
    with pytest.raises(CheckFailed, match=r"older than inputs\.max_age_days"):
        check_fresh(ctx, now + timedelta(days=8))


def test_validate_samples_the_first_1000_lines_of_each_part(
    campaign: Campaign, tmp_path: Path
) -> None:
    """Junk after the sample is the run's to find; the note says what was sampled."""
    folder = tmp_path / "recs"
    folder.mkdir()
    first = orjson.loads((_parts(campaign)[0]).read_bytes().splitlines()[0])
    lines = [orjson.dumps({**first, "input": {"userId": f"u{i}"}}) for i in range(1200)] + [
        b"not json"
    ] * 3000
    (folder / "part-0.out").write_bytes(b"\n".join(lines) + b"\n")
    ctx = CheckContext(campaign=_with_recs(campaign, folder), edition=EDITION)
    check_catalog(ctx)
    assert check_recommendations(ctx).startswith(
        "personalize output: 1,000 lines of 1 part(s) sampled, 0 bad (0.00%)"
    )
    (folder / "part-1.out").write_bytes(b"\n".join([*lines[:150], *[b'{"input":'] * 100]) + b"\n")
    with pytest.raises(CheckFailed) as caught:
        check_recommendations(ctx)
    assert (caught.value.code, caught.value.key) == ("gate", "inputs.max_bad_share")
    assert "100 of 1,250 Personalize lines in the first 1,000 lines of each part" in str(
        caught.value
    )


def _parts(campaign: Campaign) -> list[Path]:
    folder = Path(campaign.input_path("recommendations", EDITION))
    return sorted(p for p in folder.iterdir() if p.name.endswith(".out"))


def _with_recs(campaign: Campaign, folder: Path) -> Campaign:
    inputs = campaign.inputs.model_copy(update={"recommendations": f"{folder}/"})
    return campaign.model_copy(update={"inputs": inputs})
