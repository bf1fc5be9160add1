"""The pipeline's commands: validate, plan, run, status, cancel, history, demo.

Thin: each parses options, calls one function of a stage, and prints. Errors are CalmMailError
subclasses; cli.py turns them into a message and an exit code.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from calm_mail.campaign import Campaign, load_campaign, project_root
from calm_mail.edition import Edition
from calm_mail.errors import CalmMailError, ConfigError, UsageError

# Wide enough for the report's tables when the output is a file or a CI log, not a terminal.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 132)


class EditionType(click.ParamType):
    name = "EDITION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Edition:
        if isinstance(value, Edition):
            return value
        try:
            return Edition.parse(str(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


EDITION = EditionType()
edition_option = click.option(
    "--edition",
    type=EDITION,
    default=lambda: Edition.upcoming().key,
    show_default="upcoming",
    help="ISO week of the edition, e.g. 2026-W48.",
)


def _campaign(ctx: click.Context, name: str) -> Campaign:
    return load_campaign(name, ctx.obj.get("root") if ctx.obj else None)


def _ledger(ctx: click.Context) -> Any:
    from calm_mail.store import Ledger

    return Ledger.connect(None, root=project_root(ctx.obj.get("root") if ctx.obj else None))


# ----------------------------------------------------------------------------- validate


@click.command()
@click.argument("campaign")
@edition_option
@click.pass_context
def validate(ctx: click.Context, campaign: str, edition: Edition) -> None:
    """Check config, inputs, rules and templates: every problem at once."""
    from calm_mail.validate import validate_campaign

    camp = _campaign(ctx, campaign)
    problems, notes = validate_campaign(camp, edition)
    for note in notes:
        console.print(f"  ok  {note}")
    if problems:
        raise ConfigError([f"{len(problems)} problem(s) in {camp.name} {edition}:", *problems])
    console.print(f"[green]{camp.name} {edition}: valid[/green]")


# ----------------------------------------------------------------------------- plan


@click.command()
@click.argument("campaign")
@edition_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the plan (JSON Lines; Parquet when the name ends in .parquet).",
)
@click.option("--explain", "explain_user", metavar="USER", help="Show one user's full trace.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def plan(
    ctx: click.Context,
    campaign: str,
    edition: Edition,
    out: Path | None,
    explain_user: str | None,
    as_json: bool,
) -> None:
    """Who gets what: eligibility, arms, items and send time for every user."""
    from calm_mail.plan import planner

    camp = _campaign(ctx, campaign)
    with _ledger(ctx) as ledger:
        from calm_mail.deliver.run import ReadOnlyAssignments

        result = planner.plan_edition(
            camp,
            edition,
            store=ReadOnlyAssignments(ledger),
            now=datetime.now(UTC),
            explain=explain_user,
        )
        if out is not None:
            planner.write_plan(result, out)
    if explain_user:
        console.print(planner.explain(result, explain_user))
        return
    if as_json:
        click.echo(orjson.dumps(_jsonable(result.summary), option=orjson.OPT_INDENT_2).decode())
    else:
        console.print(planner.format_summary(result.summary))
    if out is not None:
        console.print(f"plan written to {out}")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    return obj


# ----------------------------------------------------------------------------- run


@click.command()
@click.argument("campaign")
@edition_option
@click.option("--dry-run", is_flag=True, help="Write .eml files to an outbox instead of sending.")
@click.option(
    "--outbox",
    type=click.Path(file_okay=False, path_type=Path),
    help="Outbox folder for --dry-run (default: out/outbox).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Send at most N in this run.")
@click.option("--max-rate", type=click.FloatRange(min=0.1), help="Sends per second ceiling.")
@click.option("--concurrency", type=click.IntRange(1, 512), help="Requests in flight at most.")
@click.option("--shard", metavar="K/N", help="Only users of shard K of N (N divides 1024).")
@click.option(
    "--reconcile-after",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds before a claimed row counts as abandoned.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=1800.0,
    show_default=True,
    help="Seconds without a webhook event before an abandoned row is resent.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an edition paused by the circuit breaker or `cancel --pause`.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON line.")
@click.pass_context
def run(
    ctx: click.Context,
    campaign: str,
    edition: Edition,
    dry_run: bool,
    outbox: Path | None,
    limit: int | None,
    max_rate: float | None,
    concurrency: int | None,
    shard: str | None,
    reconcile_after: float,
    grace: float,
    resume: bool,
    as_json: bool,
) -> None:
    """Plan, record and send an edition. Re-running sends only what was never sent."""
    from calm_mail.deliver.run import RunOptions, run_edition

    camp = _campaign(ctx, campaign)
    if outbox is not None and not dry_run:
        raise UsageError("--outbox goes with --dry-run")
    options = RunOptions(
        dry_run=dry_run,
        outbox=outbox,
        limit=limit,
        max_rate=max_rate,
        concurrency=concurrency,
        api_key=os.environ.get("SENDGRID_API_KEY"),
        api_host=os.environ.get("SENDGRID_API_HOST") or "https://api.sendgrid.com",
        stale_after=timedelta(seconds=reconcile_after),
        grace=timedelta(seconds=grace),
        shard=_parse_shard(shard),
        resume=resume,
    )
    started = time.monotonic()
    with _ledger(ctx) as ledger, _Progress(enabled=sys.stderr.isatty() and not as_json) as bar:
        try:
            report = run_edition(
                camp, edition, ledger, options, on_progress=bar.advance, on_total=bar.start
            )
        except CalmMailError as exc:
            if not dry_run:  # a failed real run is announced with its reason, then reported
                _announce_failure(camp, edition, ledger, exc, time.monotonic() - started)
            raise
        if not dry_run:
            _announce(camp, edition, ledger, report)
    if as_json:
        click.echo(orjson.dumps(report.as_dict()).decode())
    else:
        print_run_report(report)
    if not report.ok:
        ctx.exit(1)


def _announce(camp: Campaign, edition: Edition, ledger: Any, report: Any) -> None:
    """Every real run ends with one JSON summary line in the log (and Slack when configured)."""
    from calm_mail.ops import alerts

    info = ledger.editions.get_edition(camp.name, edition.key)
    preflight = info.preflight if info is not None else None
    alerts.announce(alerts.run_summary(report, preflight=preflight, seconds=report.seconds), camp)


def _announce_failure(
    camp: Campaign, edition: Edition, ledger: Any, exc: CalmMailError, seconds: float
) -> None:
    from calm_mail.ops import alerts

    info = ledger.editions.get_edition(camp.name, edition.key)
    preflight = info.preflight if info is not None else None
    reason = str(exc).splitlines()[0]
    alerts.announce(
        alerts.failure_summary(
            camp.name, edition.key, reason, seconds=seconds, preflight=preflight
        ),
        camp,
    )


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        k, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise UsageError(f"--shard {value!r}: expected K/N, e.g. 0/4") from None
    if not (0 <= k < n and 1024 % n == 0):
        raise UsageError(f"--shard {value!r}: need 0 <= K < N and N dividing 1024")
    return k, n


class _Progress:
    """A rich progress bar with sends/s, errors and time left, only on a terminal."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("sending"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.0f}/s"),
                TextColumn("errors {task.fields[errors]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._bar.__enter__()
        return self

    def start(self, total: int) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task("send", total=total, rate=0.0, errors=0)

    def advance(self, tally: Any, n: int) -> None:
        if self._bar is None or self._task is None:
            return
        task = self._bar.tasks[0]
        elapsed = task.elapsed or 1e-9
        self._bar.update(
            self._task,
            completed=tally.total_sent + sum(tally.failed.values()),
            rate=tally.total_sent / elapsed,
            errors=sum(tally.failed.values()) + tally.unknown,
        )

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def print_run_report(report: Any) -> None:
    title = f"{report.campaign} {report.edition}" + (" (dry run)" if report.dry_run else "")
    table = Table(title=title, title_justify="left")
    table.add_column("arm")
    for state in ("planned", "claimed", "sent", "failed", "skipped"):
        table.add_column(state, justify="right")
    arms = sorted({arm for (_, arm) in report.counts})
    for arm in arms:
        table.add_row(
            arm,
            *(
                str(report.counts.get((s, arm), 0))
                for s in ("planned", "claimed", "sent", "failed", "skipped")
            ),
        )
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
    for warning in report.warnings:
        console.print(f"[yellow]warning: {warning}[/yellow]")
    if report.outbox:
        console.print(f"outbox: {report.outbox} (manifest.jsonl + one .eml per recipient)")


# ----------------------------------------------------------------------------- status / cancel


@click.command()
@click.argument("campaign")
@edition_option
@click.option("--dry-run", is_flag=True, help="The dry-run edition's status.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(
    ctx: click.Context, campaign: str, edition: Edition, dry_run: bool, as_json: bool
) -> None:
    """Counts by state and arm, failures by reason, the batch and its scheduled status."""
    from calm_mail.deliver.run import DRY_SUFFIX

    camp = _campaign(ctx, campaign)
    name = camp.name + (DRY_SUFFIX if dry_run else "")
    with _ledger(ctx) as ledger:
        info = ledger.editions.get_edition(name, edition.key)
        if info is None:
            raise UsageError(
                f"{name} {edition}: no such edition in the ledger "
                f"({ledger.url_for_display}); run it first"
            )
        counts = ledger.deliveries.counts(info.edition_id)
        failures = ledger.deliveries.failure_reasons(info.edition_id)
        log = ledger.editions.edition_log(info.edition_id)
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "campaign": name,
                    "edition": edition.key,
                    "state": info.state,
                    "batch_id": info.batch_id,
                    "scheduled_status": info.scheduled_status,
                    "counts": {f"{s}/{a}": n for (s, a), n in sorted(counts.items())},
                    "failures": failures,
                }
            ).decode()
        )
        return
    table = Table(title=f"{name} {edition}: {info.state}", title_justify="left")
    states = ("planned", "claimed", "sent", "failed", "skipped")
    table.add_column("arm")
    for state in states:
        table.add_column(state, justify="right")
    for arm in sorted({a for (_, a) in counts}):
        table.add_row(arm, *(str(counts.get((s, arm), 0)) for s in states))
    table.add_row(
        "[b]total[/b]", *(str(sum(n for (s, _), n in counts.items() if s == st)) for st in states)
    )
    console.print(table)
    console.print(
        f"batch: {info.batch_id or '-'}; scheduled send: "
        f"{info.scheduled_status or 'not paused or cancelled'}"
    )
    for reason, n in sorted(failures.items(), key=lambda kv: -kv[1]):
        console.print(f"  {n:>7} × {reason}")
    for entry in log[-5:]:
        console.print(f"  log: {entry}")


@click.command()
@click.argument("campaign")
@edition_option
@click.option("--pause", "action", flag_value="pause", help="Pause the scheduled batch.")
@click.option("--resume", "action", flag_value="resume", help="Resume a paused batch.")
@click.option("--cancel", "action", flag_value="cancel", default=True, hidden=True)
@click.pass_context
def cancel(ctx: click.Context, campaign: str, edition: Edition, action: str) -> None:
    """Cancel (or pause/resume) an edition: its scheduled batch at SendGrid and the ledger."""
    from calm_mail.deliver.control import change_edition

    camp = _campaign(ctx, campaign)
    with _ledger(ctx) as ledger:
        message = asyncio.run(
            change_edition(
                camp,
                edition,
                ledger.editions,
                ledger.deliveries,
                action,
                api_key=os.environ.get("SENDGRID_API_KEY"),
                api_host=os.environ.get("SENDGRID_API_HOST") or "https://api.sendgrid.com",
                now=datetime.now(UTC),
            )
        )
    console.print(message)


@click.command()
@click.argument("campaign")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def history(ctx: click.Context, campaign: str, as_json: bool) -> None:
    """Past editions with their state, counts and outcome."""
    camp = _campaign(ctx, campaign)
    rows = []
    with _ledger(ctx) as ledger:
        for info in ledger.editions.list_editions(camp.name):
            counts = ledger.deliveries.counts(info.edition_id)
            rows.append(
                {
                    "edition": info.edition,
                    "state": info.state,
                    "batch_id": info.batch_id,
                    "sent": sum(n for (s, _), n in counts.items() if s == "sent"),
                    "failed": sum(n for (s, _), n in counts.items() if s == "failed"),
                    "open": sum(n for (s, _), n in counts.items() if s in ("planned", "claimed")),
                    "updated_at": info.updated_at.isoformat(),
                }
            )
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    table = Table(title=f"{camp.name}: editions", title_justify="left")
    for col in ("edition", "state", "sent", "failed", "open", "updated_at"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            *(str(row[c]) for c in ("edition", "state", "sent", "failed", "open", "updated_at"))
        )
    console.print(table)


# ----------------------------------------------------------------------------- demo


@click.command()
@click.option("--users", type=click.IntRange(min=10), default=2000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--regenerate", is_flag=True, help="Make the demo data again.")
@click.pass_context
def demo(ctx: click.Context, users: int, seed: int, regenerate: bool) -> None:
    """The whole loop locally on demo data (no keys, no network)."""
    from calm_mail.demo.walkthrough import run_demo

    run_demo(
        project_root(ctx.obj.get("root") if ctx.obj else None),
        users=users,
        seed=seed,
        regenerate=regenerate,
        console=console,
    )
