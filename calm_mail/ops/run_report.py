"""What one run of an edition did (`RunReport`), and how it reads on a terminal."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from calm_mail.deliver.engine import SendTally
from calm_mail.deliver.reconcile import ReconcileResult
from calm_mail.ops.preflight import PreflightReport
from calm_mail.plan.summary import PlanSummary

STATES = ("planned", "claimed", "sent", "failed", "skipped")


@dataclass(slots=True, kw_only=True)
class RunReport:
    campaign: str
    edition: str
    dry_run: bool
    planned_new: int
    tally: SendTally
    reconciled: ReconcileResult | None
    counts: dict[tuple[str, str], int]
    state: str
    seconds: float
    outbox: Path | None = None
    plan_summary: PlanSummary | None = None
    preflight: PreflightReport | None = None
    # Process CPU seconds per stage: plan, preflight, record, compose, send, finish.
    stage_cpu: dict[str, float] = field(default_factory=dict)
    partial: bool = False  # a --shard or --limit run: the edition may go on without it
    outbox_files: tuple[int, int] | None = None  # a dry run's (.eml files written, composed)

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
            "stage_cpu_seconds": {k: round(v, 4) for k, v in self.stage_cpu.items()},
            "counts": {f"{s}/{a}": n for (s, a), n in sorted(self.counts.items())},
            "reconciled": None if self.reconciled is None else asdict(self.reconciled),
            "outbox": str(self.outbox) if self.outbox else None,
            "outbox_files": None
            if self.outbox_files is None
            else dict(zip(("written", "composed"), self.outbox_files, strict=True)),
            "warnings": self.warnings,
        }

    @property
    def warnings(self) -> list[str]:
        return list(self.plan_summary.warnings) if self.plan_summary is not None else []


def print_run_report(report: RunReport, console: Console) -> None:
    title = f"{report.campaign} {report.edition}" + (" (dry run)" if report.dry_run else "")
    table = Table(title=title, title_justify="left")
    table.add_column("arm")
    for state in STATES:
        table.add_column(state, justify="right")
    for arm in sorted({arm for (_, arm) in report.counts}):
        table.add_row(arm, *(str(report.counts.get((s, arm), 0)) for s in STATES))
    console.print(table)
    console.print(
        f"sent this run: {report.tally.total_sent} in {report.seconds:.1f}s; state: {report.state}"
    )
    for reason, n in sorted(report.tally.failed.items()):
        console.print(f"  failed: {n} × {reason}")
    if report.state == "sent" and not report.ok:
        console.print(
            "[red]nothing is left to send, but too many recipients failed: look at "
            "the reasons above before the next edition[/red]"
        )
    _print_fates(report, console)
    for warning in report.warnings:
        console.print(f"[yellow]warning: {warning}[/yellow]")
    if report.outbox:
        console.print(f"outbox: {report.outbox} (manifest.jsonl lists every recipient)")
    if report.outbox_files is not None:
        written, composed = report.outbox_files
        console.print(f"  {written} .eml files written of {composed} composed")


def _print_fates(report: RunReport, console: Console) -> None:
    if report.tally.unknown:
        console.print(
            f"  [yellow]{report.tally.unknown} of unknown fate: reconciled from "
            "webhook events on the next run[/yellow]"
        )
    if report.reconciled and (report.reconciled.confirmed or report.reconciled.released):
        console.print(
            f"  reconciled: {report.reconciled.confirmed} confirmed by events, "
            f"{report.reconciled.released} resent, {report.reconciled.pending} pending"
        )
    if report.tally.stopped:
        console.print(f"[red]stopped: {report.tally.stopped}[/red]")
