"""Pre-flight: everything that must hold before an edition sends a single email.

Every check runs, even after one failed, so the report lists every problem at once (except the
SendGrid call, see below):

- ``inputs``: the catalog, audience and history exist;
- ``personalize_fresh``: the newest Personalize part file is younger than
  ``inputs.max_age_days`` (file mtime locally, ``LastModified`` on S3);
- ``personalize_coverage`` (with a plan): the Personalize output has a line for at least
  ``inputs.min_coverage`` of the eligible audience (the plan's users);
- ``editorial``: the editors' list exists for the edition and every locale of the audience;
- ``config``: templates, rules and inputs validate (`calm_mail.validate.validate_campaign`);
- ``srm`` (with a plan): the arm split matches the weights (p >= 0.001);
- ``send_window``: every recipient's send time is within SendGrid's 72 hours — from the plan
  when given, else the widest possible window (UTC+14 to UTC-12) of the campaign's schedule;
- ``sendgrid_key``: one cheap authenticated call succeeds. It runs last and only when every
  other check passed, so an edition that fails pre-flight sends no request to SendGrid at all.

The report is stored with the edition (``editions.preflight``) and in its action log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from calm_mail.campaign import Campaign
from calm_mail.edition import Edition
from calm_mail.errors import CalmMailError, PreflightError
from calm_mail.inputs.personalize import SUFFIXES
from calm_mail.records import ContentSource, PlannedDelivery

log = logging.getLogger(__name__)

SENDGRID_WINDOW = timedelta(hours=72)
# The widest spread of local clocks on Earth: a local time happens first at UTC+14, last at -12.
EARLIEST_ZONE = timezone(timedelta(hours=14))
LATEST_ZONE = timezone(timedelta(hours=-12))


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str


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
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }

    def text(self) -> str:
        """One multi-line report: a headline, then one line per check."""
        verdict = "passed" if self.ok else f"FAILED ({len(self.failed)} of {len(self.checks)})"
        lines = [f"pre-flight {self.campaign} {self.edition}: {verdict}"]
        lines += [f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise PreflightError(self.text() + "\nNothing was sent.")


class PlanLike(Protocol):
    """What pre-flight reads of a plan (calm_mail.plan's result)."""

    @property
    def deliveries(self) -> Sequence[PlannedDelivery]: ...

    @property
    def summary(self) -> Any: ...

    @property
    def personalize_covered(self) -> int | None: ...


class PreflightEditions(Protocol):
    def ensure_edition(self, campaign: str, edition: str, *, experiment: str) -> Any: ...
    def update_edition(
        self, edition_id: int, *, preflight: dict[str, Any] | None = None
    ) -> None: ...
    def log_action(
        self, edition_id: int, action: str, detail: dict[str, Any] | None = None
    ) -> None: ...


class PreflightLedger(Protocol):
    @property
    def editions(self) -> PreflightEditions: ...


def preflight(
    campaign: Campaign,
    edition: Edition,
    ledger: PreflightLedger | None,
    *,
    now: datetime,
    api_key: str | None,
    api_host: str,
    plan: PlanLike | None = None,
    plan_error: str | None = None,
    skip: Collection[str] = (),
) -> PreflightReport:
    """Run every check, store the report with the edition (when a ledger is given), return it.

    `plan_error` is why the plan could not be made (its inputs are unfit); it is reported as a
    failed ``plan`` check and the plan-based checks fall back to what needs no plan.
    `skip` names checks not to run (e.g. ``sendgrid_key`` for a dry run); they are reported as
    skipped, not as passed silently. Call `PreflightReport.raise_if_failed` to stop a run.
    """
    deliveries = list(plan.deliveries) if plan is not None else None
    checks: list[tuple[str, Callable[[], str]]] = [
        ("inputs", lambda: check_inputs(campaign, edition)),
        ("personalize_fresh", lambda: check_fresh(campaign, edition, now)),
        ("editorial", lambda: check_editorial(campaign, edition, deliveries)),
        ("config", lambda: check_config(campaign, edition)),
        ("send_window", lambda: check_send_window(campaign, edition, now, deliveries)),
    ]
    if plan is not None:
        checks.insert(
            2,
            (
                "personalize_coverage",
                lambda: check_coverage(
                    campaign, edition, deliveries or [], covered=plan.personalize_covered
                ),
            ),
        )
        checks.insert(5, ("srm", lambda: check_srm(campaign, plan, deliveries or [])))
    results = [_run(name, fn, skip) for name, fn in checks]
    if plan_error is not None:
        results.insert(0, Check("plan", False, plan_error))
    # The provider is called last, and only for an edition that would go: a failed pre-flight
    # sends no request at all to SendGrid.
    if all(check.ok for check in results):
        results.append(_run("sendgrid_key", lambda: check_key(api_key, api_host), skip))
    else:
        results.append(Check("sendgrid_key", False, "not tried: an earlier check failed"))
    report = PreflightReport(
        campaign=campaign.name, edition=edition.key, at=now, checks=tuple(results)
    )
    if ledger is not None:
        record(ledger, campaign, edition, report)
    return report


def record(
    ledger: PreflightLedger, campaign: Campaign, edition: Edition, report: PreflightReport
) -> None:
    """Store the report on the edition row and in its action log."""
    info = ledger.editions.ensure_edition(
        campaign.name, edition.key, experiment=campaign.experiment.name
    )
    ledger.editions.update_edition(info.edition_id, preflight=report.as_dict())
    ledger.editions.log_action(
        info.edition_id,
        "preflight",
        {"ok": report.ok, "failed": [c.name for c in report.failed]},
    )


def _run(name: str, fn: Callable[[], str], skip: Collection[str]) -> Check:
    if name in skip:
        return Check(name, True, "skipped")
    try:
        return Check(name, True, fn())
    except CheckFailed as exc:
        return Check(name, False, str(exc))
    except CalmMailError as exc:
        return Check(name, False, str(exc))
    except Exception as exc:  # a broken check is a failed check, never a crashed run
        log.debug("pre-flight check %s raised", name, exc_info=True)
        return Check(name, False, f"{type(exc).__name__}: {exc}")


class CheckFailed(Exception):
    """A check's verdict: the message is the detail shown in the report."""


# --------------------------------------------------------------------------- the checks


def check_inputs(campaign: Campaign, edition: Edition) -> str:
    missing = [
        f"{key} ({path})"
        for key in ("catalog", "audience", "history")
        if not path_exists(path := campaign.input_path(key, edition))
    ]
    if missing:
        raise CheckFailed("missing: " + "; ".join(missing))
    return "catalog, audience and history exist"


def check_fresh(campaign: Campaign, edition: Edition, now: datetime) -> str:
    prefix = campaign.input_path("recommendations", edition)
    parts = list_parts(prefix)
    if not parts:
        raise CheckFailed(f"{prefix}: no Personalize output (*.out) for edition {edition}")
    newest = max(modified for _, modified in parts)
    age = now - newest
    limit = timedelta(days=campaign.inputs.max_age_days)
    summary = f"{len(parts)} part file(s), newest {_age(age)} old"
    if age > limit:
        raise CheckFailed(
            f"{summary}: older than inputs.max_age_days = {campaign.inputs.max_age_days}; "
            "run the Personalize batch job for this edition"
        )
    return summary


def check_coverage(
    campaign: Campaign,
    edition: Edition,
    deliveries: Sequence[PlannedDelivery],
    *,
    covered: int | None = None,
) -> str:
    """The share of the eligible audience (the plan's users) with a Personalize line.

    `covered` is the plan's own count (`PlanResult.personalize_covered`), so the output is not
    read a second time; without it, each line's structure is read here.
    """
    eligible = {d.user_id for d in deliveries}
    if not eligible:
        return "nobody is eligible"
    if covered is None:
        covered = _covered(campaign, edition, eligible)
    share = covered / len(eligible)
    detail = (
        f"the Personalize output covers {covered:,} of {len(eligible):,} eligible users "
        f"({share:.1%})"
    )
    if share < campaign.inputs.min_coverage:
        raise CheckFailed(
            f"{detail}, less than inputs.min_coverage = {campaign.inputs.min_coverage:.0%}; was "
            "the batch job run on the whole audience?"
        )
    return detail


def _covered(campaign: Campaign, edition: Edition, eligible: set[str]) -> int:
    """How many `eligible` users have a well-formed Personalize line (structure only: no
    line's 500 ids become strings)."""
    from calm_mail.inputs import iter_recommendations
    from calm_mail.records import SkipCounter

    prefix = campaign.input_path("recommendations", edition)
    lines = iter_recommendations(prefix, skips=SkipCounter(), wanted=(), scores=False)
    return len({rec.user_id for rec in lines if rec.user_id in eligible})


def check_editorial(
    campaign: Campaign, edition: Edition, deliveries: Sequence[PlannedDelivery] | None
) -> str:
    from calm_mail.inputs import read_editorial

    picks = read_editorial(campaign.input_path("editorial", edition), edition.key)
    locales = set(campaign.audience.locales)
    if deliveries is not None:
        locales |= {d.locale for d in deliveries if d.source is ContentSource.EDITORIAL}
    missing = sorted(loc for loc in locales if not picks.for_locale(loc))
    if missing:
        raise CheckFailed(f"{picks.source}: no editorial list for locale(s) {', '.join(missing)}")
    return f"{len(locales)} locale(s) covered"


def check_config(campaign: Campaign, edition: Edition) -> str:
    from calm_mail.validate import validate_campaign

    problems, _ = validate_campaign(campaign, edition)
    if problems:
        raise CheckFailed(f"{len(problems)} problem(s): " + "; ".join(problems))
    return "templates, rules and inputs validate"


def check_srm(campaign: Campaign, plan: PlanLike, deliveries: Iterable[PlannedDelivery]) -> str:
    srm = getattr(plan.summary, "srm", None)
    if srm is None:
        from calm_mail.plan.srm import srm_check

        srm = srm_check(Counter(d.arm for d in deliveries), campaign.experiment.weights)
    detail = f"chi-square {srm.chi_square:.3f}, p = {srm.p_value:.3g}"
    if srm.flagged:
        raise CheckFailed(
            f"sample ratio mismatch ({detail} < 0.001): the arm split does not match the "
            "weights; do not send until it is explained"
        )
    return detail


def check_key(api_key: str | None, api_host: str) -> str:
    if not api_key:
        raise CheckFailed("SENDGRID_API_KEY is not set")
    from calm_mail.deliver.sendgrid import SendGridTransport

    async def probe() -> None:
        transport = SendGridTransport(api_key, host=api_host, timeout_s=10.0)
        try:
            await transport.check_credentials()
        finally:
            await transport.aclose()

    asyncio.run(probe())
    return f"the key works at {api_host}"


def check_send_window(
    campaign: Campaign,
    edition: Edition,
    now: datetime,
    deliveries: Sequence[PlannedDelivery] | None,
) -> str:
    if deliveries is not None:
        from calm_mail.deliver.run import check_window

        sending = [d for d in deliveries if not d.is_holdout]
        problems = check_window(sending, now)
        if any("more than 72 h" in p for p in problems):
            raise CheckFailed("; ".join(problems))
        return "; ".join(problems) or f"{len(sending):,} send times within 72 h"
    first, last = widest_window(campaign, edition)
    if last - now > SENDGRID_WINDOW:
        raise CheckFailed(
            f"the last time zone's send time ({last:%Y-%m-%d %H:%M} UTC) is more than 72 h "
            f"ahead; run after {last - SENDGRID_WINDOW:%Y-%m-%d %H:%M} UTC"
        )
    if last < now:
        raise CheckFailed(f"the edition's send window ended at {last:%Y-%m-%d %H:%M} UTC")
    late = " (the earliest zones' time has passed: they get it at once)" if first < now else ""
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


# --------------------------------------------------------------------------- file helpers


def path_exists(path: str) -> bool:
    if not path.startswith("s3://"):
        return Path(path).exists()
    from botocore.exceptions import ClientError

    from calm_mail.inputs.sources import s3_client, split_s3

    bucket, key = split_s3(path)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def list_parts(prefix: str) -> list[tuple[str, datetime]]:
    """(path, modified time in UTC) of the Personalize part files under `prefix`."""
    if not prefix.startswith("s3://"):
        from calm_mail.inputs import list_prefix

        return [
            (p, datetime.fromtimestamp(Path(p).stat().st_mtime, UTC))
            for p in list_prefix(prefix, SUFFIXES)
        ]
    from calm_mail.inputs.sources import s3_client, split_s3

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
