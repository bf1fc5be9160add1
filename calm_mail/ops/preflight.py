"""Pre-flight: everything that must hold before an edition sends a single email.

Every check runs, even after one failed, so the report lists every problem at once:

- ``plan`` (only when it failed): why the plan could not be made;
- the campaign's files, as `calm-mail validate` checks them (`checks.config_checks`), the
  editorial check also covering every locale the plan gives the editors' list;
- ``personalize_fresh``: the newest Personalize part file is younger than
  ``inputs.max_age_days`` (file mtime locally, ``LastModified`` on S3);
- ``personalize_coverage`` (with a plan): the Personalize output has a line for at least
  ``inputs.min_coverage`` of the eligible audience (the plan's users);
- ``srm`` (with a plan): the assigned arm split matches the weights;
- ``send_window``: every recipient's send time is within SendGrid's window — from the plan
  when given, else the widest possible window (UTC+14 to UTC-12) of the campaign's schedule;
- ``sendgrid_key``: one cheap authenticated call succeeds. It runs last and only when every
  other check passed, so an edition that fails pre-flight sends no request to SendGrid at all.

The report is stored with the edition (``editions.preflight``) and in its action log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from calm_mail.campaign import Campaign
from calm_mail.deliver.sendgrid import SendGridTransport
from calm_mail.edition import Edition
from calm_mail.errors import PreflightError
from calm_mail.inputs import list_prefix
from calm_mail.inputs.personalize import SUFFIXES
from calm_mail.inputs.sources import s3_client, split_s3
from calm_mail.ops.checks import (
    Check,
    CheckContext,
    CheckFailed,
    CheckFn,
    Status,
    config_checks,
    run_check,
    run_checks,
)
from calm_mail.plan.sendtime import SendWindow, send_window
from calm_mail.plan.srm import SrmResult
from calm_mail.records import ContentSource, PlannedDelivery

# The widest spread of local clocks on Earth: a local time happens first at UTC+14, last at -12.
EARLIEST_ZONE = timezone(timedelta(hours=14))
LATEST_ZONE = timezone(timedelta(hours=-12))


@dataclass(frozen=True, slots=True, kw_only=True)
class PreflightReport:
    campaign: str
    edition: str
    at: datetime
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "at": self.at.isoformat(),
            "checks": [check.as_dict() for check in self.checks],
        }

    def text(self) -> str:
        """One multi-line report: a headline, then one line per check."""
        verdict = "passed" if self.ok else f"FAILED ({len(self.failed)} of {len(self.checks)})"
        lines = [f"pre-flight {self.campaign} {self.edition}: {verdict}"]
        lines += [f"  {_mark(c)} {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise PreflightError(self.text() + "\nNothing was sent.", report=self.as_dict())


def _mark(check: Check) -> str:
    return {Status.OK: "ok  ", Status.FAILED: "FAIL", Status.SKIPPED: "skip"}[check.status]


class SummaryLike(Protocol):
    @property
    def srm(self) -> SrmResult: ...


class PlanLike(Protocol):
    """What pre-flight reads of a plan (`calm_mail.plan`'s result)."""

    @property
    def deliveries(self) -> Sequence[PlannedDelivery]: ...

    @property
    def summary(self) -> SummaryLike: ...

    @property
    def personalize_covered(self) -> int | None: ...


def preflight(
    campaign: Campaign,
    edition: Edition,
    *,
    now: datetime,
    api_key: str | None,
    api_host: str,
    plan: PlanLike | None = None,
    plan_error: str | None = None,
    skip: Collection[str] = (),
) -> PreflightReport:
    """Run every check and return the report; `PreflightReport.raise_if_failed` stops a run.

    `plan_error` is why the plan could not be made (its inputs are unfit); it is reported as a
    failed ``plan`` check and the plan-based checks fall back to what needs no plan.
    `skip` names checks not to run (e.g. ``sendgrid_key``); they are reported as skipped.
    """
    ctx = CheckContext(campaign=campaign, edition=edition)
    deliveries = list(plan.deliveries) if plan is not None else None
    editors = {d.locale for d in deliveries or () if d.source is ContentSource.EDITORIAL}
    checks: list[tuple[str, CheckFn]] = [
        *config_checks(editorial_locales=editors),
        ("personalize_fresh", lambda c: check_fresh(c, now)),
    ]
    if plan is not None:
        checks += [
            ("personalize_coverage", lambda c: check_coverage(c, plan)),
            ("srm", lambda c: check_srm(plan.summary.srm)),
        ]
    checks.append(("send_window", lambda c: check_send_window(c, now, deliveries)))
    results = run_checks(ctx, checks, skip)
    if plan_error is not None:
        results.insert(0, Check(name="plan", status=Status.FAILED, detail=plan_error, code="plan"))
    # The provider is called last, and only for an edition that would go: a failed pre-flight
    # sends no request at all to SendGrid.
    if all(check.ok for check in results):
        results.append(run_check("sendgrid_key", lambda c: check_key(api_key, api_host), ctx, skip))
    else:
        results.append(
            Check(
                name="sendgrid_key",
                status=Status.SKIPPED,
                detail="not tried: an earlier check failed",
                code="not_tried",
            )
        )
    return PreflightReport(
        campaign=campaign.name, edition=edition.key, at=now, checks=tuple(results)
    )


def check_fresh(ctx: CheckContext, now: datetime) -> str:
    prefix = ctx.path("recommendations")
    parts = list_parts(prefix)
    if not parts:
        raise CheckFailed(
            f"{prefix}: no Personalize output (*.out) for edition {ctx.edition}",
            code="missing",
            key="inputs.recommendations",
        )
    newest = max(modified for _, modified in parts)
    age = now - newest
    max_days = ctx.campaign.inputs.max_age_days
    summary = f"{len(parts)} part file(s), newest {_age(age)} old"
    if age > timedelta(days=max_days):
        raise CheckFailed(
            f"{summary}: older than inputs.max_age_days = {max_days}; "
            "run the Personalize batch job for this edition",
            code="stale",
            key="inputs.max_age_days",
        )
    return summary


def check_coverage(ctx: CheckContext, plan: PlanLike) -> str:
    """The share of the eligible audience (the plan's users) with a Personalize line."""
    eligible = len({d.user_id for d in plan.deliveries})
    if not eligible:
        return "nobody is eligible"
    covered = plan.personalize_covered
    if covered is None:
        return "no arm reads the Personalize output"
    share = covered / eligible
    detail = (
        f"the Personalize output covers {covered:,} of {eligible:,} eligible users ({share:.1%})"
    )
    minimum = ctx.campaign.inputs.min_coverage
    if share < minimum:
        raise CheckFailed(
            f"{detail}, less than inputs.min_coverage = {minimum:.0%}; was the batch job run "
            "on the whole audience?",
            code="low_coverage",
            key="inputs.min_coverage",
        )
    return detail


def check_srm(srm: SrmResult) -> str:
    if srm.flagged:
        raise CheckFailed(
            f"sample ratio mismatch ({srm.describe()} < {srm.threshold:g}): the arm split does "
            "not match the weights; do not send until it is explained",
            code="srm",
            key="experiment.weights",
        )
    return srm.describe()


def check_key(api_key: str | None, api_host: str) -> str:
    if not api_key:
        raise CheckFailed("SENDGRID_API_KEY is not set", code="no_key")

    async def probe() -> None:
        transport = SendGridTransport(api_key, host=api_host, timeout_s=10.0)
        try:
            await transport.check_credentials()
        finally:
            await transport.aclose()

    asyncio.run(probe())
    return f"the key works at {api_host}"


def check_send_window(
    ctx: CheckContext, now: datetime, deliveries: Sequence[PlannedDelivery] | None
) -> str:
    if deliveries is not None:
        window = send_window((d.send_at for d in deliveries if not d.is_holdout), now)
        if window.refused:
            raise CheckFailed("; ".join(window.problems()), code="too_early")
        return "; ".join(window.problems()) or f"{window.total:,} send times within 72 h"
    return _widest_window_detail(send_window(widest_window(ctx.campaign, ctx.edition), now))


def _widest_window_detail(window: SendWindow) -> str:
    """The window check without a plan: the first and the last zone's send time."""
    if window.refused:
        assert window.run_after is not None
        raise CheckFailed(
            "the last time zone's send time is more than 72 h ahead; run after "
            f"{window.run_after:%Y-%m-%d %H:%M} UTC",
            code="too_early",
        )
    if window.passed == window.total:
        raise CheckFailed("the edition's send window has ended", code="ended")
    late = " (the earliest zones' time has passed: they get it at once)" if window.passed else ""
    return f"every zone's send time is within 72 h{late}"


def widest_window(campaign: Campaign, edition: Edition) -> tuple[datetime, datetime]:
    """(first, last) possible send time in UTC of the edition, over every time zone."""
    day = edition.send_date + timedelta(days=1 if campaign.schedule.weekday == "sunday" else 0)
    if campaign.schedule.use_preferred_hour:
        early, late = time(0, 0), time(23, 59)
    else:
        early = late = campaign.schedule.local_time
    first = datetime.combine(day, early, EARLIEST_ZONE).astimezone(UTC)
    last = datetime.combine(day, late, LATEST_ZONE).astimezone(UTC)
    return first, last


def list_parts(prefix: str) -> list[tuple[str, datetime]]:
    """(path, modified time in UTC) of the Personalize part files under `prefix`."""
    if not prefix.startswith("s3://"):
        return [
            (p, datetime.fromtimestamp(Path(p).stat().st_mtime, UTC))
            for p in list_prefix(prefix, SUFFIXES)
        ]
    bucket, key_prefix = split_s3(prefix)
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix)
    return [
        (f"s3://{bucket}/{entry['Key']}", entry["LastModified"].astimezone(UTC))
        for page in pages
        for entry in page.get("Contents", ())
        if entry["Key"].endswith(SUFFIXES)
    ]


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"
