"""The weekend schedule: APScheduler 3 with its jobs stored in the ledger's database.

One job per campaign, id ``calm-mail:<campaign>``, fired by a cron trigger built from the
campaign's ``[schedule] prepare`` (``"fri 18:00"``, UTC: days as cron's ``day_of_week`` —
``fri``, ``sat,sun``, ``mon-fri`` — then ``HH:MM`` or ``HH:MM:SS``). The job
(`calm_mail.ops.job.scheduled_job`) runs the edition that is due at that moment: plan,
pre-flight, send through SendGrid with each user's local ``send_at``, announce.

The job store is APScheduler's ``SQLAlchemyJobStore`` on the ledger's own database (table
``apscheduler_jobs``), so a restarted scheduler remembers when each job runs next and there is
one database to back up. The job is stored as a reference (``module:function``) plus simple
arguments (campaign name, root), never as a pickled object graph.

The choices, deliberately:

- ``coalesce = True``: when the scheduler was down across several firing times, it runs the job
  once, not once per missed firing. The job sends the edition due *now*, so a backlog of firings
  could only ever mean the same edition repeated (harmless, but noise) — never old editions.
- ``max_instances = 1``: a long send must not overlap the next firing in the same process. Across
  processes (two schedulers, a scheduler and a hand-started ``calm-mail run``) the edition lock
  in the ledger does the same job: the second worker exits with `LockHeld` and sends nothing.
- ``misfire_grace_time = 12 h``: a firing that comes up to 12 hours late (the host was down on
  Friday evening, a deploy took the scheduler away) still runs: with ``prepare = "fri 18:00"``
  UTC it is still Saturday early morning UTC, so Europe and the Americas get the edition on time
  and only the zones whose local send time has passed get it at once. Later than that, most of
  the world's Saturday morning is gone: the run is skipped (and logged) and a person decides
  with ``calm-mail schedule --once`` or ``calm-mail run``.

Two schedulers may share the job store; APScheduler 3 does not coordinate them, so both may
fire the job — the edition lock and the "already sent" check make the second a no-op.

SIGTERM and SIGINT stop it gracefully (`serve`): no new job starts; a running edition finishes
the sends in flight, claims nothing more and leaves the ledger consistent (rows never sent stay
``planned``; a row whose fate is unknown stays ``claimed`` for reconciliation); the next start
picks the edition up. A second signal stops at once — still safe, the ledger reconciles.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler

from calm_mail.campaign import Campaign
from calm_mail.ops import job as edition_job
from calm_mail.ops.trigger import trigger_for

log = logging.getLogger(__name__)

JOB_FUNC = "calm_mail.ops.job:scheduled_job"
JOB_PREFIX = "calm-mail:"
JOB_TABLE = "apscheduler_jobs"
COALESCE = True
MAX_INSTANCES = 1
MISFIRE_GRACE_S = 12 * 3600
WORKERS = 4  # campaigns that may send at the same time in one scheduler


def job_id(campaign: str) -> str:
    return JOB_PREFIX + campaign


def make_scheduler(engine_or_url: Any, *, workers: int = WORKERS) -> BackgroundScheduler:
    """A (not started) scheduler with the job store on the ledger's database."""
    store = (
        SQLAlchemyJobStore(url=engine_or_url, tablename=JOB_TABLE)
        if isinstance(engine_or_url, str)
        else SQLAlchemyJobStore(engine=engine_or_url, tablename=JOB_TABLE)
    )
    return BackgroundScheduler(
        jobstores={"default": store},
        executors={"default": ThreadPoolExecutor(max_workers=workers)},
        job_defaults={
            "coalesce": COALESCE,
            "max_instances": MAX_INSTANCES,
            "misfire_grace_time": MISFIRE_GRACE_S,
        },
        timezone=UTC,
    )


def sync_jobs(
    scheduler: BaseScheduler,
    campaigns: Iterable[Campaign],
    root: Path | str,
    **hidden: Any,
) -> list[Job]:
    """Make the stored jobs match the campaigns: add or replace one per campaign, drop others.

    `hidden` goes to the job's keyword arguments (tests: ``clock_offset_s``).
    """
    jobs = []
    wanted = set()
    for campaign in campaigns:
        wanted.add(job_id(campaign.name))
        jobs.append(
            scheduler.add_job(
                JOB_FUNC,
                trigger_for(campaign),
                args=[campaign.name, str(root)],
                kwargs=hidden,
                id=job_id(campaign.name),
                name=f"{campaign.name}: prepare and send the due edition",
                replace_existing=True,
            )
        )
    for stale in scheduler.get_jobs():
        if stale.id.startswith(JOB_PREFIX) and stale.id not in wanted:
            log.info("removing the job of a campaign that is gone: %s", stale.id)
            stale.remove()
    return jobs


@dataclass(frozen=True, slots=True, kw_only=True)
class NextRun:
    campaign: str
    prepare: str
    at_utc: datetime | None
    zone: str
    at_local: datetime | None


def next_runs(campaigns: Sequence[Campaign], now: datetime) -> list[NextRun]:
    """Each campaign's next run after `now`, in UTC and in its fallback zone."""
    rows = []
    for campaign in campaigns:
        at = trigger_for(campaign).get_next_fire_time(None, now)
        zone = campaign.schedule.fallback_timezone
        rows.append(
            NextRun(
                campaign=campaign.name,
                prepare=campaign.schedule.prepare,
                at_utc=at,
                zone=zone,
                at_local=at.astimezone(ZoneInfo(zone)) if at is not None else None,
            )
        )
    return rows


def serve(
    campaigns: Sequence[Campaign],
    root: Path | str,
    engine_or_url: Any,
    *,
    stop: threading.Event | None = None,
    on_started: Callable[[BaseScheduler], None] | None = None,
    job_kwargs: dict[str, Any] | None = None,
) -> None:
    """Run the scheduler in the foreground until SIGTERM/SIGINT (or `stop` is set).

    Signal handlers are installed only in the main thread; tests drive `stop` instead.
    `job_kwargs` go to every job (hidden test hooks such as ``clock_offset_s``).
    """
    stop = stop or threading.Event()
    edition_job.SHUTDOWN.clear()
    restore = _handle_signals(stop)
    scheduler = make_scheduler(engine_or_url)
    try:
        sync_jobs(scheduler, campaigns, root, **(job_kwargs or {}))
        scheduler.start()
        for job in scheduler.get_jobs():
            log.warning("scheduled %s: next run %s", job.id, job.next_run_time)
        if on_started is not None:
            on_started(scheduler)
        while not stop.wait(1.0):
            pass
        log.warning("stopping: no new runs; running editions finish their in-flight sends")
        scheduler.pause()
        edition_job.SHUTDOWN.set()
        scheduler.shutdown(wait=True)
    finally:
        restore()


def _handle_signals(stop: threading.Event) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, _frame: Any) -> None:
        log.warning(
            "%s received: stopping gracefully (again to stop at once)", signal.Signals(signum).name
        )
        stop.set()
        for sig, old in previous.items():  # a second signal gets the default behaviour
            signal.signal(sig, old)

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
