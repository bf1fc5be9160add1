"""The edition job: what the scheduler (and ``schedule --once``) runs for a campaign.

`run_due_edition` works out the due edition (`Edition.upcoming(now)`), and under the edition
lock: skips an edition already sent, cancelled or paused; runs the Personalize batch job when
the campaign asks for it; plans (without recording anything), runs pre-flight and stores its
report; sends with `run_edition`; and announces the summary (`calm_mail.ops.alerts`). A failure
is announced with its reason, then raised as the `CalmMailError` it is, so ``--once`` can turn
it into an exit code.

The job functions are top-level and take only simple arguments (campaign name, root), because
APScheduler's job store pickles a reference to them, not the function.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from calm_mail.campaign import Campaign, load_campaign, project_root
from calm_mail.edition import Edition
from calm_mail.errors import CalmMailError, LockHeld
from calm_mail.ops import alerts
from calm_mail.ops.preflight import preflight
from calm_mail.store.locks import edition_lock

log = logging.getLogger(__name__)

# Set when the scheduler is asked to stop (SIGTERM/SIGINT): running editions finish their
# in-flight sends and claim nothing more; the next start picks the edition up.
SHUTDOWN = threading.Event()
DONE_STATES = ("sent", "cancelled", "paused")
LEASE_TTL_S = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOutcome:
    campaign: str
    edition: str
    status: str  # sent | nothing_to_do | not_finished
    detail: str

    @property
    def exit_code(self) -> int:
        return 0 if self.status in ("sent", "nothing_to_do") else 1


def scheduled_job(campaign_name: str, root: str, **hidden: Any) -> None:
    """The scheduler's entry point: `run_due_edition`, with expected outcomes logged, not raised.

    A held lock is normal (another scheduler or a hand-started run has the edition); a failed
    run has already been announced; neither needs APScheduler's traceback.
    """
    try:
        outcome = run_due_edition(campaign_name, root, **hidden)
    except LockHeld as exc:
        log.info("%s: skipped, %s", campaign_name, exc)
    except CalmMailError as exc:
        log.error("%s: the edition failed: %s", campaign_name, str(exc).splitlines()[0])
    else:
        log.info(
            "%s %s: %s (%s)", outcome.campaign, outcome.edition, outcome.status, outcome.detail
        )


def run_due_edition(
    campaign_name: str,
    root: str | None,
    *,
    database_url: str | None = None,
    clock_offset_s: float = 0.0,
    stop: threading.Event | None = None,
) -> JobOutcome:
    """Run the campaign's due edition now (see the module docstring). Raises CalmMailError."""
    campaign = load_campaign(campaign_name, root)
    now = datetime.now(UTC) + timedelta(seconds=clock_offset_s)
    edition = Edition.upcoming(now)
    from calm_mail.store import Ledger

    with Ledger.connect(database_url, root=project_root(root)) as ledger:
        done = _already_done(ledger, campaign, edition)
        if done is not None:
            return done
        shutdown = stop or SHUTDOWN
        with edition_lock(ledger.locks, campaign.name, edition, ttl_s=LEASE_TTL_S) as lease:
            # Stop claiming when the scheduler shuts down or the lease is lost to another worker.
            return _run_locked(
                campaign,
                edition,
                ledger,
                now,
                lambda: shutdown.is_set() or lease.lost.is_set(),
            )


def _already_done(ledger: Any, campaign: Campaign, edition: Edition) -> JobOutcome | None:
    info = ledger.editions.get_edition(campaign.name, edition.key)
    if info is None or info.state not in DONE_STATES:
        return None
    return JobOutcome(
        campaign=campaign.name,
        edition=edition.key,
        status="nothing_to_do",
        detail=f"the edition is {info.state}",
    )


def _run_locked(
    campaign: Campaign,
    edition: Edition,
    ledger: Any,
    now: datetime,
    should_stop: Callable[[], bool],
) -> JobOutcome:
    # Checked again under the lock: another worker may have finished it while we waited.
    done = _already_done(ledger, campaign, edition)
    if done is not None:
        return done
    started = time.monotonic()
    report_dict: dict[str, Any] | None = None
    api_key, api_host = sendgrid_env()
    try:
        if campaign.personalize is not None and campaign.personalize.enabled:
            _personalize(campaign, edition, ledger)
        plan, plan_error = _plan(campaign, edition, ledger, now)
        report = preflight(
            campaign,
            edition,
            ledger,
            now=now,
            api_key=api_key,
            api_host=api_host,
            plan=plan,
            plan_error=plan_error,
        )
        report_dict = report.as_dict()
        report.raise_if_failed()
        run = _send(campaign, edition, ledger, now, should_stop, api_key, api_host)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if isinstance(exc, CalmMailError) else repr(exc)
        alerts.announce(
            alerts.failure_summary(
                campaign.name,
                edition.key,
                reason,
                seconds=time.monotonic() - started,
                preflight=report_dict,
            ),
            campaign,
        )
        raise
    summary = alerts.run_summary(run, preflight=report_dict, seconds=time.monotonic() - started)
    _store_summary(ledger, campaign, edition, summary)
    alerts.announce(summary, campaign)
    status = "sent" if summary["ok"] else "not_finished"
    return JobOutcome(
        campaign=campaign.name,
        edition=edition.key,
        status=status,
        detail=f"{run.tally.total_sent} sent this run; state {run.state}"
        + (f"; stopped: {run.tally.stopped}" if run.tally.stopped else ""),
    )


def sendgrid_env() -> tuple[str | None, str]:
    from calm_mail.deliver.sendgrid import DEFAULT_HOST

    return os.environ.get("SENDGRID_API_KEY"), os.environ.get("SENDGRID_API_HOST") or DEFAULT_HOST


def _plan(
    campaign: Campaign, edition: Edition, ledger: Any, now: datetime
) -> tuple[Any, str | None]:
    """(the plan pre-flight judges, None) or (None, why it could not be made).

    Records nothing: run_edition plans again (deterministically the same) and records.
    """
    from calm_mail.deliver.run import ReadOnlyAssignments
    from calm_mail.plan.planner import plan_edition

    try:
        plan = plan_edition(
            campaign, edition, store=ReadOnlyAssignments(ledger), now=now, record=False
        )
    except CalmMailError as exc:  # unfit inputs: a pre-flight failure, reported with the rest
        return None, str(exc)
    return plan, None


def _send(
    campaign: Campaign,
    edition: Edition,
    ledger: Any,
    now: datetime,
    should_stop: Callable[[], bool],
    api_key: str | None,
    api_host: str,
) -> Any:
    from calm_mail.deliver.run import RunOptions, run_edition

    # Pre-flight already ran on this edition's plan (above), so run_edition skips its own.
    options = RunOptions(
        api_key=api_key, api_host=api_host, now=now, should_stop=should_stop, preflight=False
    )
    return run_edition(campaign, edition, ledger, options)


def _store_summary(
    ledger: Any, campaign: Campaign, edition: Edition, summary: dict[str, Any]
) -> None:
    info = ledger.editions.get_edition(campaign.name, edition.key)
    if info is not None:
        ledger.editions.update_edition(info.edition_id, summary=summary)
        ledger.editions.log_action(
            info.edition_id, "run", {"ok": summary["ok"], "state": summary["state"]}
        )


def _personalize(campaign: Campaign, edition: Edition, ledger: Any) -> None:
    import boto3

    from calm_mail.inputs.sources import s3_client
    from calm_mail.ops.personalize_job import run_batch_job

    job = run_batch_job(
        boto3.client("personalize"),
        campaign,
        edition,
        s3=s3_client(),
        user_ids=eligible_user_ids(campaign, edition, ledger),
    )
    log.info("Personalize job %s is ACTIVE; output under %s", job.name, job.output_prefix)


def eligible_user_ids(campaign: Campaign, edition: Edition, ledger: Any) -> Iterator[str]:
    """The users who may get the edition (streamed), for the Personalize batch input."""
    from calm_mail.inputs import iter_audience
    from calm_mail.plan.eligibility import Eligibility
    from calm_mail.plan.planner import edition_instant
    from calm_mail.records import SkipCounter

    rules = Eligibility(
        campaign,
        edition,
        now=edition_instant(edition),
        suppressed=ledger.suppressions.all_suppressed(),
    )
    for user in iter_audience(campaign.input_path("audience", edition), skips=SkipCounter()):
        if rules.reason(user) is None:
            yield user.user_id
