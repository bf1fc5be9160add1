"""One edition, end to end: plan -> ledger -> compose -> deliver.

A dry run records its deliveries under the campaign name suffixed `:dry-run`, is reset at each
start (so re-running it reproduces the same outbox), reads sticky assignments without writing
them (a dry run is not an exposure), and never touches the real edition's rows.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from calm_mail.campaign import Campaign
from calm_mail.deliver.engine import Engine, EngineConfig, Tally
from calm_mail.deliver.outbox import OutboxTransport
from calm_mail.deliver.reconcile import ReconcileResult, reconcile
from calm_mail.deliver.sendgrid import DEFAULT_HOST, SendGridTransport
from calm_mail.deliver.transport import Transport
from calm_mail.edition import Edition
from calm_mail.errors import PreflightError, UsageError
from calm_mail.records import ComposedMessage, PlannedDelivery
from calm_mail.store import Ledger
from calm_mail.store.assignments import Assignments

SENDGRID_WINDOW = timedelta(hours=72)
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
    preflight: bool = True  # real runs check inputs, plan, key and window before any send
    should_stop: Callable[[], bool] | None = None  # polled: scheduler shutdown, lease lost
    resume: bool = False  # continue an edition the circuit breaker (or an operator) paused
    circuit_seconds: float = 30.0  # how long a streak of failures lasts before it pauses


@dataclass(slots=True, kw_only=True)
class RunReport:
    campaign: str
    edition: str
    dry_run: bool
    planned_new: int
    tally: Tally
    reconciled: ReconcileResult | None
    counts: dict[tuple[str, str], int]
    state: str
    seconds: float
    outbox: Path | None = None
    plan_summary: Any = None
    warnings: list[str] = field(default_factory=list)
    partial: bool = False  # a --shard or --limit run: the edition may go on without it

    @property
    def ok(self) -> bool:
        """This run did its whole share of the work, with no systemic failure.

        Its share: the edition (state `sent`), or its shard / its --limit (then other work may
        remain for other runs). Not ok: stopped early, deliveries of unknown fate left for
        reconciliation, or more than 1% of its recipients (at least 10) refused — that is a
        problem with the run, not with addresses.
        """
        failed = sum(self.tally.failed.values())
        allowed = max(10, self.tally.total_sent // 100)
        finished = self.state == "sent" or self.partial
        return finished and not self.tally.stopped and not self.tally.unknown and failed <= allowed

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "campaign": self.campaign,
            "edition": self.edition,
            "dry_run": self.dry_run,
            "state": self.state,
            "planned_new": self.planned_new,
            "sent_this_run": dict(self.tally.sent),
            "failed_this_run": dict(self.tally.failed),
            "unknown_fate": self.tally.unknown,
            "retried": self.tally.retried,
            "stopped": self.tally.stopped,
            "seconds": round(self.seconds, 3),
            "counts": {f"{s}/{a}": n for (s, a), n in sorted(self.counts.items())},
            "reconciled": None if self.reconciled is None else asdict(self.reconciled),
            "outbox": str(self.outbox) if self.outbox else None,
            "warnings": self.warnings,
        }


class ReadOnlyAssignments:
    """A dry run's view of the ledger for the planner: sticky assignments and seeds are read,
    none recorded (a dry run is not an exposure)."""

    def __init__(self, ledger: Ledger) -> None:
        self.assignments = _ReadOnlyArms(ledger.assignments)
        self.suppressions = ledger.suppressions
        self.editions = ledger.editions


class _ReadOnlyArms:
    def __init__(self, assignments: Assignments) -> None:
        self._assignments = assignments

    def get_assignments(self, experiment: str, user_ids: Sequence[str]) -> dict[str, str]:
        return self._assignments.get_assignments(experiment, user_ids)

    def experiment_seed(self, experiment: str) -> str | None:
        return self._assignments.experiment_seed(experiment)

    def record_assignments(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def record_experiment(self, *args: Any, **kwargs: Any) -> None:
        return None


class ManifestComposer:
    """Wraps the composer to hand the outbox what the manifest needs (user, source, items)."""

    def __init__(self, composer: Any, outbox: OutboxTransport) -> None:
        self._composer = composer
        self._outbox = outbox

    def compose(self, delivery: PlannedDelivery, delivery_id: str) -> ComposedMessage:
        message: ComposedMessage = self._composer.compose(delivery, delivery_id)
        self._outbox.manifest_extra[delivery_id] = {
            "user_id": delivery.user_id,
            "source": str(delivery.source),
            "fallback": delivery.fallback,
            "item_ids": list(delivery.item_ids),
        }
        return message


def require_api_key(options: RunOptions) -> str:
    """The SendGrid key a real run needs; a usage error (said before any work) without it."""
    if not options.api_key:
        raise UsageError(
            "SENDGRID_API_KEY is not set. Export it (or point SENDGRID_API_HOST at "
            "`calm-mail sandbox` and use any SG.* key), or use --dry-run to write an outbox."
        )
    return options.api_key


def make_transport(campaign: Campaign, options: RunOptions) -> Transport:
    if options.dry_run:
        folder = options.outbox or campaign.root / "out" / "outbox"
        return OutboxTransport(folder)
    api_key = require_api_key(options)
    concurrency = options.concurrency or campaign.schedule.concurrency
    return SendGridTransport(api_key, host=options.api_host, concurrency=concurrency)


def check_window(deliveries: list[PlannedDelivery], now: datetime) -> list[str]:
    """SendGrid refuses send_at more than 72 h ahead; a past send_at goes out at once."""
    too_early = [d for d in deliveries if d.send_at - now > SENDGRID_WINDOW]
    late = sum(1 for d in deliveries if d.send_at < now)
    problems = []
    if too_early:
        first = min(d.send_at for d in too_early) - SENDGRID_WINDOW
        problems.append(
            f"{len(too_early)} recipients' send time is more than 72 h ahead (SendGrid refuses "
            f"it); run this edition after {first:%Y-%m-%d %H:%M} UTC"
        )
    if late:
        problems.append(f"{late} recipients' local send time has passed; they get it at once")
    return problems


def run_edition(
    campaign: Campaign,
    edition: Edition,
    ledger: Any,
    options: RunOptions,
    *,
    on_progress: Callable[[Tally, int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> RunReport:
    """Plan, record and send one edition; re-running sends only what was never sent.

    A real run holds the edition's lock (two schedulers, or a scheduler and a hand-started run,
    never send one edition at once) and passes pre-flight before anything is recorded or sent.
    """
    if options.dry_run:
        return _run_edition(campaign, edition, ledger, options, on_progress, on_total)
    from calm_mail.store.locks import edition_lock

    # One lock per shard: shards of one edition run side by side (row claims keep each
    # delivery exactly-once); two workers on the same shard, or two whole runs, do not.
    scope = f"{edition}#{options.shard[0]}of{options.shard[1]}" if options.shard else edition
    with edition_lock(ledger.locks, campaign.name, scope):
        return _run_edition(campaign, edition, ledger, options, on_progress, on_total)


def _run_edition(
    campaign: Campaign,
    edition: Edition,
    ledger: Any,
    options: RunOptions,
    on_progress: Callable[[Tally, int], None] | None,
    on_total: Callable[[int], None] | None,
) -> RunReport:
    from calm_mail.compose.composer import Composer
    from calm_mail.plan.planner import plan_edition

    started = time.monotonic()
    now = options.now or datetime.now(UTC)
    name = campaign.name + (DRY_SUFFIX if options.dry_run else "")
    info = ledger.editions.ensure_edition(name, edition.key, experiment=campaign.experiment.name)
    if info.state == "cancelled":
        raise UsageError(
            f"{campaign.name} {edition}: the edition was cancelled; nothing is sent. "
            "Plan a new edition instead."
        )
    if options.dry_run:
        ledger.deliveries.delete_deliveries(info.edition_id)
    else:
        require_api_key(options)
        if info.state == "paused":
            _resume_or_refuse(campaign, edition, ledger, info, options)
    store = ReadOnlyAssignments(ledger) if options.dry_run else ledger
    plan = plan_edition(campaign, edition, store=store, now=now, shard=options.shard)
    if options.preflight and not options.dry_run:
        _preflight(campaign, edition, ledger, info.edition_id, plan, options, now)
    deliveries = list(plan.deliveries)
    warnings = check_window(deliveries, now) if not options.dry_run else []
    if not options.dry_run and any("more than 72 h" in w for w in warnings):
        raise PreflightError(warnings[0])
    planned_new = ledger.deliveries.add_planned(info.edition_id, name, deliveries)
    transport = make_transport(campaign, options)
    composer: Any = Composer(campaign, plan.catalog, edition)
    if isinstance(transport, OutboxTransport):
        composer = ManifestComposer(composer, transport)
    if on_total:
        on_total(sum(1 for d in deliveries if not d.is_holdout))
    reconciled, tally = asyncio.run(
        _send(campaign, edition, ledger, info, transport, composer, options, now, on_progress)
    )
    counts = ledger.deliveries.counts(info.edition_id)
    open_rows = sum(n for (state, _), n in counts.items() if state in ("planned", "claimed"))
    fatal = bool(tally.stopped and "fatal" in tally.stopped)
    if tally.circuit_open:
        ledger.editions.update_edition(info.edition_id, state="paused")
        ledger.editions.log_action(
            info.edition_id, "circuit_breaker", {"reason": tally.circuit_open}
        )
    state = "sent" if open_rows == 0 else ("failed" if fatal else "sending")
    current = ledger.editions.get_edition_state(info.edition_id)
    if current not in ("cancelled", "paused"):
        ledger.editions.update_edition(info.edition_id, state=state)
    else:
        state = current
    return RunReport(
        campaign=campaign.name,
        edition=edition.key,
        dry_run=options.dry_run,
        planned_new=planned_new,
        tally=tally,
        reconciled=reconciled,
        counts=counts,
        state=state,
        seconds=time.monotonic() - started,
        outbox=getattr(transport, "folder", None),
        plan_summary=plan.summary,
        warnings=warnings,
        partial=options.shard is not None or options.limit is not None,
    )


def _resume_or_refuse(
    campaign: Campaign, edition: Edition, ledger: Any, info: Any, options: RunOptions
) -> None:
    """A paused edition sends nothing until someone says --resume (which also lifts a pause
    of its SendGrid batch made with `cancel --pause`)."""
    if not options.resume:
        reasons = [
            e.detail
            for e in ledger.editions.edition_log(info.edition_id)
            if e.action in ("circuit_breaker", "pause")
        ]
        why = f" ({_why(reasons[-1])})" if reasons else ""
        raise UsageError(
            f"{campaign.name} {edition}: the edition is paused{why}. Fix the cause, then "
            f"continue with `calm-mail run {campaign.name} --edition {edition} --resume`."
        )
    if info.batch_id and info.scheduled_status == "pause":
        transport = make_transport(campaign, options)

        async def unpause() -> None:
            try:
                await transport.scheduled_send(info.batch_id, None)
            finally:
                await transport.aclose()

        asyncio.run(unpause())
    ledger.editions.update_edition(info.edition_id, state="sending", scheduled_status=None)
    ledger.editions.log_action(info.edition_id, "resume", {"by": "run --resume"})


def _why(detail: Any) -> str:
    if isinstance(detail, dict):
        return str(detail.get("reason") or detail.get("at") or "paused by an operator")
    return str(detail)


def _preflight(
    campaign: Campaign,
    edition: Edition,
    ledger: Any,
    edition_id: int,
    plan: Any,
    options: RunOptions,
    now: datetime,
) -> None:
    """Check before any send; the report is stored with the edition either way."""
    from calm_mail.ops.preflight import preflight

    report = preflight(
        campaign,
        edition,
        ledger,
        now=now,
        api_key=options.api_key,
        api_host=options.api_host,
        plan=plan,
    )
    ledger.editions.update_edition(edition_id, preflight=report.as_dict())
    ledger.editions.log_action(edition_id, "preflight", {"ok": report.ok})
    report.raise_if_failed()


async def _send(
    campaign: Campaign,
    edition: Edition,
    ledger: Any,
    info: Any,
    transport: Transport,
    composer: Any,
    options: RunOptions,
    now: datetime,
    on_progress: Callable[[Tally, int], None] | None,
) -> tuple[ReconcileResult | None, Tally]:
    try:
        batch_id = info.batch_id
        if not transport.dry_run and batch_id is None:
            created = await transport.create_batch()
            if created is not None:
                batch_id = ledger.editions.claim_batch_id(info.edition_id, created)
        reconciled = None
        if not transport.dry_run:
            reconciled = reconcile(
                ledger.deliveries,
                ledger.events,
                info.edition_id,
                now=now,
                stale_after=options.stale_after,
                grace=options.grace,
            )
        ledger.editions.update_edition(info.edition_id, state="sending")
        config = EngineConfig(
            max_rate=options.max_rate or campaign.schedule.max_rate,
            concurrency=options.concurrency or campaign.schedule.concurrency,
            limit=options.limit,
            shard=options.shard,
            circuit_seconds=options.circuit_seconds,
        )
        engine = Engine(
            ledger.deliveries,
            ledger.editions,
            composer,
            transport,
            edition_id=info.edition_id,
            edition=edition.key,
            batch_id=batch_id,
            config=config,
            on_progress=on_progress,
        )
        _stop_on_signals(engine)
        watcher = _watch(engine, options.should_stop)
        try:
            tally = await engine.run()
        finally:
            if watcher is not None:
                watcher.cancel()
        return reconciled, tally
    finally:
        await transport.aclose()


def _watch(engine: Engine, should_stop: Callable[[], bool] | None) -> asyncio.Task[None] | None:
    """Poll the caller's stop condition (scheduler shutdown, a lost lease) every 0.2 s."""
    if should_stop is None:
        return None

    async def poll() -> None:
        while True:
            if should_stop():
                engine.stop("stopped: scheduler shutting down or edition lease lost")
                return
            await asyncio.sleep(0.2)

    return asyncio.create_task(poll())


def _stop_on_signals(engine: Engine) -> None:
    """SIGTERM/SIGINT: finish in-flight sends, claim nothing more, leave the ledger consistent."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, engine.stop, f"stopped by {sig.name}")
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            return
