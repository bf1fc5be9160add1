"""`calm-mail status`, `cancel` and `history`: an edition's state, stopping it, past editions."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime

import click
import orjson
from rich.table import Table

from calm_mail.commands.common import console, edition_option, open_campaign, open_ledger
from calm_mail.deliver.control import change_edition
from calm_mail.edition import Edition
from calm_mail.errors import UsageError
from calm_mail.ops.pipeline import DRY_SUFFIX
from calm_mail.ops.run_report import STATES


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
    camp = open_campaign(ctx, campaign)
    name = camp.name + (DRY_SUFFIX if dry_run else "")
    with open_ledger(ctx) as ledger:
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
    states = STATES
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
    camp = open_campaign(ctx, campaign)
    with open_ledger(ctx) as ledger:
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
    camp = open_campaign(ctx, campaign)
    rows = []
    with open_ledger(ctx) as ledger:
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
