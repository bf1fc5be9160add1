"""`calm-mail schedule`: run the weekend schedule, list it, or run one campaign's due edition.

Exit codes of ``schedule --once CAMPAIGN`` (for cron, Airflow, Kubernetes CronJobs):

- 0: the due edition was sent, or there was nothing to do (already sent, cancelled or paused);
- 1: the job failed — pre-flight failed (nothing was sent), sending failed, or the run stopped
  with mail left to send; the alert says why. Re-running is safe: only unsent mail is sent;
- 2: bad usage or configuration (unknown campaign, a wrong campaign file, missing inputs);
- 3: another process holds the edition's lock (a scheduler or a hand-started run is on it);
  nothing is wrong — try again later, or let the other process finish.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import orjson
from rich.console import Console

from calm_mail.campaign import Campaign, list_campaigns, load_campaign, project_root
from calm_mail.errors import UsageError
from calm_mail.ops.job import run_due_edition
from calm_mail.ops.scheduler import next_runs, serve
from calm_mail.store import Ledger

console = Console(highlight=False)


@click.command()
@click.option("--list", "list_jobs", is_flag=True, help="Each campaign's next run, UTC and local.")
@click.option("--once", metavar="CAMPAIGN", help="Run CAMPAIGN's due edition now and exit.")
@click.option(
    "--campaign",
    "only",
    multiple=True,
    metavar="NAME",
    help="Schedule only these campaigns (default: every campaign in campaigns/).",
)
@click.option("--json", "as_json", is_flag=True, help="With --list: one JSON document.")
@click.option("--clock-offset", type=float, default=0.0, hidden=True)
@click.pass_context
def schedule(
    ctx: click.Context,
    list_jobs: bool,
    once: str | None,
    only: tuple[str, ...],
    as_json: bool,
    clock_offset: float,
) -> None:
    """Run the weekend schedule in the foreground (SIGTERM/SIGINT stop it gracefully).

    \b
    --once CAMPAIGN exits with: 0 sent or nothing to do; 1 the job failed (pre-flight, send,
    or stopped with mail left); 2 usage or configuration; 3 the edition is locked by another
    process (try again later).
    """
    root = ctx.obj.get("root") if ctx.obj else None
    if list_jobs and once:
        raise UsageError("--list and --once exclude each other")
    _log_runs()
    now = datetime.now(UTC) + timedelta(seconds=clock_offset)
    if once:
        _once(ctx, once, root, clock_offset)
    elif list_jobs:
        _list(_campaigns(root, only), now, as_json)
    else:
        _foreground(_campaigns(root, only), root, clock_offset)


def _campaigns(root: str | None, only: tuple[str, ...]) -> list[Campaign]:
    names = list(only) or list_campaigns(root)
    if not names:
        raise UsageError(f"no campaigns in {project_root(root) / 'campaigns'}")
    return [load_campaign(name, root) for name in names]


def _log_runs() -> None:
    """The run summary line and the scheduler's decisions reach stderr at the default -v."""
    for name in ("calm_mail.run", "calm_mail.ops"):
        logging.getLogger(name).setLevel(logging.INFO)


def _once(ctx: click.Context, name: str, root: str | None, clock_offset: float) -> None:
    outcome = run_due_edition(name, root, clock_offset_s=clock_offset)
    console.print(f"{outcome.campaign} {outcome.edition}: {outcome.status} ({outcome.detail})")
    ctx.exit(outcome.exit_code)


def _list(campaigns: list[Campaign], now: datetime, as_json: bool) -> None:
    rows = next_runs(campaigns, now)
    if as_json:
        click.echo(orjson.dumps([_row_dict(r) for r in rows]).decode())
        return
    for r in rows:  # plain lines: cron and CI logs have no terminal width to wrap to
        click.echo(
            f"{r.campaign}: prepare {r.prepare!r} UTC; next run {_fmt(r.at_utc)} "
            f"= {_fmt(r.at_local)} ({r.zone})"
        )


def _row_dict(r: Any) -> dict[str, Any]:
    return {
        "campaign": r.campaign,
        "prepare": r.prepare,
        "next_run_utc": r.at_utc.isoformat() if r.at_utc else None,
        "next_run_local": r.at_local.isoformat() if r.at_local else None,
        "zone": r.zone,
    }


def _fmt(at: datetime | None) -> str:
    return at.strftime("%a %Y-%m-%d %H:%M %Z") if at is not None else "never"


def _foreground(campaigns: list[Campaign], root: str | None, clock_offset: float) -> None:
    hidden = {"clock_offset_s": clock_offset} if clock_offset else {}
    with Ledger.connect(None, root=project_root(root)) as ledger:
        console.print(
            f"scheduling {', '.join(c.name for c in campaigns)} on {ledger.url_for_display}; "
            "Ctrl-C or SIGTERM stops gracefully"
        )
        serve(campaigns, project_root(root), ledger.engine, job_kwargs=hidden)
