"""Running one edition: the composition root.

Every way of sending an edition (``run``, ``run --dry-run``, ``schedule --once``, the scheduler's
job, ``demo``) calls `run_edition`, which calls each stage once, in this order:

    lock → edition row → plan → pre-flight → record → compose + deliver → finish

The plan is made once, recording nothing, and handed to pre-flight; only an edition that passes
pre-flight records its assignments and deliveries. A real run ends by storing and announcing
its summary (`alerts`), a failed one by announcing why.

A dry run records its deliveries under ``<campaign>:dry-run``, reset at each start (so re-running
it reproduces the same outbox), records no assignment (a dry run is not an exposure), skips
pre-flight and never touches the real edition's rows.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from calm_mail.campaign import Campaign
from calm_mail.compose.composer import Composer
from calm_mail.deliver.engine import Engine, EngineConfig, SendTally
from calm_mail.deliver.outbox import ManifestComposer, OutboxTransport
from calm_mail.deliver.reconcile import ReconcileResult, reconcile
from calm_mail.deliver.sendgrid import DEFAULT_HOST, SendGridTransport
from calm_mail.deliver.transport import Transport
from calm_mail.edition import Edition
from calm_mail.errors import CalmMailError, UsageError
from calm_mail.ops import alerts
from calm_mail.ops.preflight import PreflightReport, preflight
from calm_mail.ops.run_report import RunReport
from calm_mail.plan.assign import record_exposures
from calm_mail.plan.planner import PlanResult, plan_edition
from calm_mail.records import ComposedMessage, PlannedDelivery
from calm_mail.store import EditionInfo, Ledger
from calm_mail.store.locks import edition_lock

DRY_SUFFIX = ":dry-run"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    dry_run: bool = False
    outbox: Path | None = None
    limit: int | None = None
    max_rate: float | None = None
    concurrency: int | None = None
    api_key: str | None = None
    api_host: str = DEFAULT_HOST
    stale_after: timedelta = timedelta(minutes=5)
    grace: timedelta = timedelta(minutes=30)
    now: datetime | None = None
    shard: tuple[int, int] | None = None
    preflight: bool = True  # False only where a test or bench measures the other stages
    should_stop: Callable[[], bool] | None = None  # polled: scheduler shutdown
    resume: bool = False  # continue an edition the circuit breaker (or an operator) paused
    circuit_seconds: float = 30.0  # how long a streak of failures lasts before it pauses
    sample: int | None = None  # a dry run writes this many .eml files (every one is composed)

    def __post_init__(self) -> None:
        if self.sample is not None and not self.dry_run:
            raise UsageError("--sample goes with --dry-run: a real run sends every message")
        if self.sample is not None and self.sample < 1:
            raise UsageError(f"--sample {self.sample}: need at least 1 .eml file")


class Progress(Protocol):
    """What a progress display is told: the recipients to send, then each recorded chunk."""

    def start(self, total: int) -> None: ...
    def advance(self, tally: SendTally, n: int) -> None: ...


def plan_only(
    campaign: Campaign,
    edition: Edition,
    ledger: Ledger,
    *,
    now: datetime | None = None,
    shard: tuple[int, int] | None = None,
    explain: str | None = None,
) -> PlanResult:
    """The plan a run would make now (`calm-mail plan`); planning records nothing."""
    return plan_edition(
        campaign, edition, store=ledger, now=now or datetime.now(UTC), shard=shard, explain=explain
    )


def run_edition(
    campaign: Campaign,
    edition: Edition,
    ledger: Ledger,
    options: RunOptions,
    *,
    progress: Progress | None = None,
) -> RunReport:
    """Plan, check, record and send one edition; re-running sends only what was never sent.

    A real run holds the edition's lock (two schedulers, or a scheduler and a hand-started run,
    never send one edition at once; shards of one edition each hold their own), passes
    pre-flight before anything is recorded or sent, and announces its outcome.
    """
    run = _Run(campaign, edition, ledger, options, progress)
    if options.dry_run:
        return run.go()
    scope = f"{edition}#{options.shard[0]}of{options.shard[1]}" if options.shard else edition
    with edition_lock(ledger.locks, campaign.name, scope) as lease:
        run.lease_lost = lease.lost.is_set
        try:
            report = run.go()
        except CalmMailError as exc:
            run.announce_failure(exc)
            raise
    run.announce(report)
    return report


class _Run:
    """One call of `run_edition`: the stages in order, each timed in process CPU seconds."""

    def __init__(
        self,
        campaign: Campaign,
        edition: Edition,
        ledger: Ledger,
        options: RunOptions,
        progress: Progress | None,
    ) -> None:
        self.campaign = campaign
        self.edition = edition
        self.ledger = ledger
        self.options = options
        self.progress = progress
        self.now = options.now or datetime.now(UTC)
        self.name = campaign.name + (DRY_SUFFIX if options.dry_run else "")
        self.started = time.monotonic()
        self.stage_cpu: dict[str, float] = {}
        self.preflight: PreflightReport | None = None
        self.lease_lost: Callable[[], bool] = lambda: False
        self.outbox_files: tuple[int, int] | None = None  # (.eml written, composed)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.process_time()
        try:
            yield
        finally:
            self.stage_cpu[name] = self.stage_cpu.get(name, 0.0) + time.process_time() - started

    def go(self) -> RunReport:
        info = self.open_edition()
        with self.stage("plan"):
            plan, plan_error = self.make_plan()
        if not self.options.dry_run and self.options.preflight:
            with self.stage("preflight"):
                self.check(info, plan, plan_error)
        if plan is None:
            assert plan_error is not None
            raise plan_error
        with self.stage("record"):
            planned_new = self.record(info, plan)
        reconciled, tally = self.deliver(info, plan)
        with self.stage("finish"):
            state, counts = self.finish(info, tally)
        return RunReport(
            campaign=self.campaign.name,
            edition=self.edition.key,
            dry_run=self.options.dry_run,
            planned_new=planned_new,
            tally=tally,
            reconciled=reconciled,
            counts=counts,
            state=state,
            seconds=time.monotonic() - self.started,
            outbox=outbox_folder(self.campaign, self.options) if self.options.dry_run else None,
            plan_summary=plan.summary,
            preflight=self.preflight,
            stage_cpu=dict(self.stage_cpu),
            partial=self.options.shard is not None or self.options.limit is not None,
            outbox_files=self.outbox_files,
        )

    def open_edition(self) -> EditionInfo:
        """The edition's row; a cancelled edition sends nothing, a paused one needs --resume."""
        info = self.ledger.editions.ensure_edition(
            self.name, self.edition.key, experiment=self.campaign.experiment.name
        )
        if info.state == "cancelled":
            raise UsageError(
                f"{self.campaign.name} {self.edition}: the edition was cancelled; nothing is "
                "sent. Plan a new edition instead."
            )
        if self.options.dry_run:
            self.ledger.deliveries.delete_deliveries(info.edition_id)
        else:
            require_api_key(self.options)
            if info.state == "paused":
                self.resume_or_refuse(info)
        return info

    def make_plan(self) -> tuple[PlanResult | None, CalmMailError | None]:
        """The plan, or why it could not be made (unfit inputs: pre-flight reports it with the
        other checks, then the run stops)."""
        try:
            plan = plan_only(
                self.campaign, self.edition, self.ledger, now=self.now, shard=self.options.shard
            )
        except CalmMailError as exc:
            if self.options.dry_run or not self.options.preflight:
                raise
            return None, exc
        return plan, None

    def check(
        self, info: EditionInfo, plan: PlanResult | None, plan_error: CalmMailError | None
    ) -> None:
        """Pre-flight on this plan; the report is stored with the edition either way."""
        report = preflight(
            self.campaign,
            self.edition,
            now=self.now,
            api_key=self.options.api_key,
            api_host=self.options.api_host,
            plan=plan,
            plan_error=None if plan_error is None else str(plan_error),
        )
        self.preflight = report
        self.ledger.editions.update_edition(info.edition_id, preflight=report.as_dict())
        self.ledger.editions.log_action(
            info.edition_id,
            "preflight",
            {"ok": report.ok, "failed": [c.name for c in report.failed]},
        )
        report.raise_if_failed()

    def record(self, info: EditionInfo, plan: PlanResult) -> int:
        """The plan's exposures (a real run) and its deliveries, as ledger rows."""
        if not self.options.dry_run:
            record_exposures(
                self.ledger.assignments,
                self.campaign.experiment,
                self.edition.key,
                plan.new_assignments,
                source=str(self.campaign.path),
            )
        return self.ledger.deliveries.add_planned(info.edition_id, self.name, list(plan.deliveries))

    def deliver(
        self, info: EditionInfo, plan: PlanResult
    ) -> tuple[ReconcileResult | None, SendTally]:
        transport = make_transport(self.campaign, self.options)
        composer = _TimedComposer(Composer(self.campaign, plan.catalog, self.edition))
        sink = (
            ManifestComposer(composer, transport)
            if isinstance(transport, OutboxTransport)
            else composer
        )
        if self.progress is not None:
            self.progress.start(sum(1 for d in plan.deliveries if not d.is_holdout))
        started = time.process_time()
        reconciled, tally = asyncio.run(self.send(info, transport, sink))
        spent = time.process_time() - started
        self.stage_cpu["compose"] = composer.cpu
        self.stage_cpu["send"] = spent - composer.cpu
        if isinstance(transport, OutboxTransport):
            self.outbox_files = (transport.written, transport.composed)
        return reconciled, tally

    async def send(
        self, info: EditionInfo, transport: Transport, composer: ManifestComposer | _TimedComposer
    ) -> tuple[ReconcileResult | None, SendTally]:
        try:
            batch_id = info.batch_id
            reconciled = None
            if not transport.dry_run:
                if batch_id is None and (created := await transport.create_batch()) is not None:
                    batch_id = self.ledger.editions.claim_batch_id(info.edition_id, created)
                reconciled = reconcile(
                    self.ledger.deliveries,
                    self.ledger.events,
                    info.edition_id,
                    now=self.now,
                    stale_after=self.options.stale_after,
                    grace=self.options.grace,
                )
            self.ledger.editions.update_edition(info.edition_id, state="sending")
            engine = Engine(
                self.ledger.deliveries,
                self.ledger.editions,
                composer,
                transport,
                edition_id=info.edition_id,
                edition=self.edition.key,
                batch_id=batch_id,
                config=self.engine_config(),
                on_progress=None if self.progress is None else self.progress.advance,
            )
            return reconciled, await _run_engine(engine, self.should_stop)
        finally:
            await transport.aclose()

    def engine_config(self) -> EngineConfig:
        schedule = self.campaign.schedule
        return EngineConfig(
            max_rate=self.options.max_rate or schedule.max_rate,
            concurrency=self.options.concurrency or schedule.concurrency,
            limit=self.options.limit,
            shard=self.options.shard,
            circuit_seconds=self.options.circuit_seconds,
        )

    def should_stop(self) -> str | None:
        if self.lease_lost():
            return "stopped: the edition's lease was lost to another worker"
        if self.options.should_stop is not None and self.options.should_stop():
            return "stopped: the scheduler is shutting down"
        return None

    def finish(self, info: EditionInfo, tally: SendTally) -> tuple[str, dict[tuple[str, str], int]]:
        """The edition's state after this run (sent when no row is left open), and its counts."""
        counts = self.ledger.deliveries.counts(info.edition_id)
        open_rows = sum(n for (state, _), n in counts.items() if state in ("planned", "claimed"))
        if tally.circuit_open:
            self.ledger.editions.update_edition(info.edition_id, state="paused")
            self.ledger.editions.log_action(
                info.edition_id, "circuit_breaker", {"reason": tally.circuit_open}
            )
        state = "sent" if open_rows == 0 else ("failed" if tally.fatal else "sending")
        current = self.ledger.editions.get_edition_state(info.edition_id)
        if current in ("cancelled", "paused"):
            return current, counts
        self.ledger.editions.update_edition(info.edition_id, state=state)
        return state, counts

    def resume_or_refuse(self, info: EditionInfo) -> None:
        """A paused edition sends nothing until someone says --resume (which also lifts a
        pause of its SendGrid batch made with `cancel --pause`)."""
        if not self.options.resume:
            reasons = [
                e.detail
                for e in self.ledger.editions.edition_log(info.edition_id)
                if e.action in ("circuit_breaker", "pause")
            ]
            why = f" ({_why(reasons[-1])})" if reasons else ""
            name, edition = self.campaign.name, self.edition
            raise UsageError(
                f"{name} {edition}: the edition is paused{why}. Fix the cause, then "
                f"continue with `calm-mail run {name} --edition {edition} --resume`."
            )
        if info.batch_id and info.scheduled_status == "pause":
            asyncio.run(_unpause(make_transport(self.campaign, self.options), info.batch_id))
        self.ledger.editions.update_edition(info.edition_id, state="sending", scheduled_status=None)
        self.ledger.editions.log_action(info.edition_id, "resume", {"by": "run --resume"})

    def announce(self, report: RunReport) -> None:
        """Every real run ends with one summary: stored with the edition, logged as one JSON
        line, and posted to Slack when configured."""
        summary = alerts.run_summary(report)
        info = self.ledger.editions.get_edition(self.campaign.name, self.edition.key)
        if info is not None:
            self.ledger.editions.update_edition(info.edition_id, summary=summary)
            self.ledger.editions.log_action(
                info.edition_id, "run", {"ok": summary["ok"], "state": summary["state"]}
            )
        alerts.announce(summary, self.campaign)

    def announce_failure(self, exc: CalmMailError) -> None:
        alerts.announce(
            alerts.failure_summary(
                self.campaign.name,
                self.edition.key,
                str(exc).splitlines()[0],
                seconds=time.monotonic() - self.started,
                preflight=None if self.preflight is None else self.preflight.as_dict(),
            ),
            self.campaign,
        )


class _TimedComposer:
    """The composer, with the process CPU time its calls take (compose and send interleave
    in the engine, and the run reports each stage's share)."""

    def __init__(self, composer: Composer) -> None:
        self._composer = composer
        self.cpu = 0.0

    def compose(self, delivery: PlannedDelivery, delivery_id: str) -> ComposedMessage:
        started = time.process_time()
        try:
            return self._composer.compose(delivery, delivery_id)
        finally:
            self.cpu += time.process_time() - started


def require_api_key(options: RunOptions) -> str:
    """The SendGrid key a real run needs; a usage error (said before any work) without it."""
    if not options.api_key:
        raise UsageError(
            "SENDGRID_API_KEY is not set. Export it (or point SENDGRID_API_HOST at "
            "`calm-mail sandbox` and use any SG.* key), or use --dry-run to write an outbox."
        )
    return options.api_key


def outbox_folder(campaign: Campaign, options: RunOptions) -> Path:
    return options.outbox or campaign.root / "out" / "outbox"


def make_transport(campaign: Campaign, options: RunOptions) -> Transport:
    if options.dry_run:
        return OutboxTransport(outbox_folder(campaign, options), sample=options.sample)
    concurrency = options.concurrency or campaign.schedule.concurrency
    return SendGridTransport(
        require_api_key(options), host=options.api_host, concurrency=concurrency
    )


async def _unpause(transport: Transport, batch_id: str) -> None:
    try:
        await transport.scheduled_send(batch_id, None)
    finally:
        await transport.aclose()


def _why(detail: object) -> str:
    if isinstance(detail, dict):
        return str(detail.get("reason") or detail.get("at") or "paused by an operator")
    return str(detail)


async def _run_engine(engine: Engine, should_stop: Callable[[], str | None]) -> SendTally:
    """The engine's run, stopped (in-flight sends finish, nothing more is claimed) on SIGTERM,
    SIGINT or when `should_stop` gives a reason, polled every 0.2 s."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, engine.stop, f"stopped by {sig.name}")
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            break

    async def watch() -> None:
        while (reason := should_stop()) is None:
            await asyncio.sleep(0.2)
        engine.stop(reason)

    watcher = asyncio.create_task(watch())
    try:
        return await engine.run()
    finally:
        watcher.cancel()


__all__ = [
    "DRY_SUFFIX",
    "Progress",
    "RunOptions",
    "make_transport",
    "plan_only",
    "run_edition",
]
