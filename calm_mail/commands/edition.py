"""`calm-mail validate`, `plan` and `run`: check an edition, plan it, send it.

Thin: each parses options, calls one function of the orchestration layer (`calm_mail.ops`)
and prints. Errors are CalmMailError subclasses; cli.py turns them into a message and an exit
code.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, is_dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from calm_mail.commands.common import console, edition_option, open_campaign, open_ledger
from calm_mail.deliver.engine import SendTally
from calm_mail.deliver.sendgrid import DEFAULT_HOST
from calm_mail.edition import Edition
from calm_mail.errors import ConfigError, UsageError
from calm_mail.ops.checks import problems_of, validate_campaign
from calm_mail.ops.pipeline import RunOptions, plan_only, run_edition
from calm_mail.ops.run_report import print_run_report
from calm_mail.plan import output, summary


@click.command()
@click.argument("campaign")
@edition_option
@click.pass_context
def validate(ctx: click.Context, campaign: str, edition: Edition) -> None:
    """Check config, inputs, rules and templates: every problem at once."""
    camp = open_campaign(ctx, campaign)
    checks = validate_campaign(camp, edition)
    console.print(f"  ok  campaign file {camp.path}")
    for check in checks:
        if check.ok:
            console.print(f"  ok  {check.detail}")
    problems = problems_of(checks)
    if problems:
        raise ConfigError([f"{len(problems)} problem(s) in {camp.name} {edition}:", *problems])
    console.print(f"[green]{camp.name} {edition}: valid[/green]")


@click.command()
@click.argument("campaign")
@edition_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Write the plan (JSON Lines; Parquet when the name ends in .parquet; - for stdout).",
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
    camp = open_campaign(ctx, campaign)
    with open_ledger(ctx) as ledger:
        result = plan_only(camp, edition, ledger, explain=explain_user)
    if explain_user is not None and explain_user in result.absent:
        audience = camp.input_path("audience", edition)
        raise UsageError(
            f"--explain {explain_user!r}: user {explain_user!r} is not in the audience of "
            f"{camp.name} {edition} ({audience})"
        )
    to_stdout = out is not None and str(out) == "-"  # then the rest goes to stderr
    shown = Console(stderr=True) if to_stdout else console
    if out is not None:
        output.write_plan(result, out)
    if explain_user is not None:
        shown.print(output.explain(result, explain_user), markup=False)
        return
    if as_json:
        text = orjson.dumps(_jsonable(result.summary), option=orjson.OPT_INDENT_2).decode()
        click.echo(text, err=to_stdout)
    else:
        shown.print(summary.format_summary(result.summary))
    if out is not None and not to_stdout:
        console.print(f"plan written to {out}")


def _jsonable(obj: object) -> Any:
    as_dict = getattr(obj, "as_dict", None)
    if callable(as_dict):
        return as_dict()
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return obj


# The longest --reconcile-after or --grace that makes sense (and that timedelta holds).
_A_WEEK_S = 7 * 86400.0


class _Finite(click.FloatRange):
    """A FloatRange that also refuses nan (which every comparison lets through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


@click.command()
@click.argument("campaign")
@edition_option
@click.option("--dry-run", is_flag=True, help="Write .eml files to an outbox instead of sending.")
@click.option(
    "--outbox",
    type=click.Path(file_okay=False, path_type=Path),
    help="Outbox folder for --dry-run (default: out/outbox).",
)
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    metavar="N",
    help="With --dry-run: compose everyone, write N .eml files (spread over arms and locales).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Send at most N in this run.")
@click.option("--max-rate", type=_Finite(min=0.1, max=100_000), help="Sends per second ceiling.")
@click.option("--concurrency", type=click.IntRange(1, 512), help="Requests in flight at most.")
@click.option("--shard", metavar="K/N", help="Only users of shard K of N (N divides 1024).")
@click.option(
    "--reconcile-after",
    type=_Finite(min=0, max=_A_WEEK_S),
    default=300.0,
    show_default=True,
    help="Seconds before a claimed row counts as abandoned.",
)
@click.option(
    "--grace",
    type=_Finite(min=0, max=_A_WEEK_S),
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
    sample: int | None,
    limit: int | None,
    max_rate: float | None,
    concurrency: int | None,
    shard: str | None,
    reconcile_after: float,
    grace: float,
    resume: bool,
    as_json: bool,
) -> None:
    """Plan, check, record and send an edition. Re-running sends only what was never sent."""
    camp = open_campaign(ctx, campaign)
    if outbox is not None and not dry_run:
        raise UsageError("--outbox goes with --dry-run")
    options = RunOptions(
        dry_run=dry_run,
        outbox=outbox,
        api_key=os.environ.get("SENDGRID_API_KEY"),
        api_host=os.environ.get("SENDGRID_API_HOST") or DEFAULT_HOST,
        stale_after=timedelta(seconds=reconcile_after),
        grace=timedelta(seconds=grace),
        limit=limit,
        max_rate=max_rate,
        concurrency=concurrency,
        shard=_parse_shard(shard),
        resume=resume,
        sample=sample,
    )
    with open_ledger(ctx) as ledger, _Progress(enabled=sys.stderr.isatty() and not as_json) as bar:
        report = run_edition(camp, edition, ledger, options, progress=bar)
    if as_json:
        click.echo(orjson.dumps(report.as_dict()).decode())
    else:
        print_run_report(report, console)
    if not report.ok:
        ctx.exit(1)


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
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> _Progress:
        if self.enabled:
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

    def advance(self, tally: SendTally, n: int) -> None:
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
