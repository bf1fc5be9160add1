"""The edition job: what the scheduler (and ``schedule --once``) runs for a campaign.

`run_due_edition` works out the due edition (`Edition.upcoming(now)`) and, under the edition
lock: skips an edition already sent, cancelled or paused; runs the Personalize batch job when
the campaign asks for it; then runs the edition through the composition root
(`pipeline.run_edition`: plan, pre-flight, record, send, announce). A failure has been announced
with its reason by then, and is raised as the `CalmMailError` it is, so ``--once`` can turn it
into an exit code.

The job functions are top-level and take only simple arguments (campaign name, root), because
APScheduler's job store pickles a reference to them, not the function.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from calm_mail.campaign import Campaign, load_campaign, project_root
from calm_mail.deliver.sendgrid import DEFAULT_HOST
from calm_mail.edition import Edition
from calm_mail.errors import CalmMailError, LockHeld
from calm_mail.inputs import iter_audience
from calm_mail.inputs.sources import s3_client
from calm_mail.ops.personalize_job import run_batch_job
from calm_mail.ops.pipeline import RunOptions, run_edition
from calm_mail.plan.context import edition_instant
from calm_mail.plan.eligibility import Eligibility
from calm_mail.records import SkipCounter
from calm_mail.store import Ledger
from calm_mail.store.locks import edition_lock

log = logging.getLogger(__name__)

# Set when the scheduler is asked to stop (SIGTERM/SIGINT): running editions finish their
# in-flight sends and claim nothing more; the next start picks the edition up.
SHUTDOWN = threading.Event()
DONE_STATES = ("sent", "cancelled", "paused")


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
    with Ledger.connect(database_url, root=project_root(root)) as ledger:
        done = _already_done(ledger, campaign, edition)
        if done is not None:
            return done
        # The lock is held across the Personalize job too; `run_edition` takes it again
        # (it is re-entrant for this holder).
        with edition_lock(ledger.locks, campaign.name, edition):
            done = _already_done(ledger, campaign, edition)  # another worker may have sent it
            if done is not None:
                return done
            if campaign.personalize is not None and campaign.personalize.enabled:
                _personalize(campaign, edition, ledger)
            options = RunOptions(
                api_key=os.environ.get("SENDGRID_API_KEY"),
                api_host=os.environ.get("SENDGRID_API_HOST") or DEFAULT_HOST,
                now=now,
                should_stop=(stop or SHUTDOWN).is_set,
            )
            run = run_edition(campaign, edition, ledger, options)
    stopped = f"; stopped: {run.tally.stopped}" if run.tally.stopped else ""
    return JobOutcome(
        campaign=campaign.name,
        edition=edition.key,
        status="sent" if run.ok else "not_finished",
        detail=f"{run.tally.total_sent} sent this run; state {run.state}{stopped}",
    )


def _already_done(ledger: Ledger, campaign: Campaign, edition: Edition) -> JobOutcome | None:
    info = ledger.editions.get_edition(campaign.name, edition.key)
    if info is None or info.state not in DONE_STATES:
        return None
    return JobOutcome(
        campaign=campaign.name,
        edition=edition.key,
        status="nothing_to_do",
        detail=f"the edition is {info.state}",
    )


def _personalize(campaign: Campaign, edition: Edition, ledger: Ledger) -> None:
    job = run_batch_job(
        boto3.client("personalize"),
        campaign,
        edition,
        s3=s3_client(),
        user_ids=eligible_user_ids(campaign, edition, ledger),
    )
    log.info("Personalize job %s is ACTIVE; output under %s", job.name, job.output_prefix)


def eligible_user_ids(campaign: Campaign, edition: Edition, ledger: Ledger) -> Iterator[str]:
    """The users who may get the edition (streamed), for the Personalize batch input."""
    rules = Eligibility(
        campaign,
        edition,
        now=edition_instant(edition),
        suppressed=ledger.suppressions.all_suppressed(),
    )
    for user in iter_audience(campaign.input_path("audience", edition), skips=SkipCounter()):
        if rules.reason(user) is None:
            yield user.user_id
