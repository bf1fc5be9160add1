"""`calm-mail suppressions`: import and list the addresses calm-mail must never mail.

The webhook adds bounces, spam reports and unsubscribes by itself; this is for lists that come
from elsewhere (a previous ESP, a legal request, support tickets).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from calm_mail.campaign import project_root
from calm_mail.errors import InputError
from calm_mail.records import SkipCounter
from calm_mail.store import Ledger

REASON_MAX = 64


def _ledger(ctx: click.Context) -> Ledger:
    return Ledger.connect(None, root=project_root(ctx.obj["root"]))


def read_suppression_csv(
    path: Path, *, reason: str, source: str, skips: SkipCounter
) -> Iterator[tuple[str, str, str]]:
    """(email, reason, source) for every good row; bad rows are counted in `skips` by reason.

    Needs an ``email`` column; an optional ``reason`` column overrides `reason` per row.
    Raises InputError when the file cannot be read or has no ``email`` column.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            if "email" not in columns:
                found = ", ".join(columns) or "nothing"
                raise InputError(
                    f"needs an 'email' column (found: {found})", path=str(path), line=1
                )
            reader.fieldnames = columns
            for row in reader:
                skips.seen()
                parsed = _parse_row(row, reason, source)
                if isinstance(parsed, str):
                    skips.add(parsed, f"{path}:{reader.line_num}")
                else:
                    yield parsed
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason})", path=str(path)) from exc
    except csv.Error as exc:
        raise InputError(f"not a readable CSV file: {exc}", path=str(path)) from exc
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=str(path)) from exc


def _parse_row(row: dict[str, Any], default_reason: str, source: str) -> tuple[str, str, str] | str:
    """The row's (email, reason, source), or why it is bad."""
    email = (row.get("email") or "").strip().lower()
    reason = (row.get("reason") or "").strip() or default_reason
    if not email:
        return "empty_email"
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in email):
        return "bad_email"
    if len(email) > 320:
        return "email_too_long"
    if len(reason) > REASON_MAX:
        return "reason_too_long"
    return email, reason, source


@click.group()
def suppressions() -> None:
    """Addresses that are never mailed (bounces, complaints, unsubscribes, manual lists)."""


@suppressions.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--reason",
    default="manual",
    show_default=True,
    help="Reason for rows without a 'reason' column value.",
)
@click.option("--source", default=None, help="Where the list came from (default: file name).")
@click.pass_context
def import_(ctx: click.Context, file: Path, reason: str, source: str | None) -> None:
    """Import a CSV with an 'email' column (and optionally 'reason'). Idempotent."""
    skips = SkipCounter()
    with _ledger(ctx) as ledger:
        added = ledger.suppressions.add_suppressions(
            read_suppression_csv(file, reason=reason, source=source or file.name, skips=skips)
        )
    good = skips.total - skips.skipped
    click.echo(
        f"{file}: {skips.total} rows, {added} new suppressions, "
        f"{good - added} already suppressed or repeated, {skips.skipped} bad rows"
    )
    for why, count in sorted(skips.counts.items()):
        places = ", ".join(skips.examples.get(why, []))
        click.echo(f"  {why}: {count} (e.g. {places})")


@suppressions.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.pass_context
def list_(ctx: click.Context, limit: int) -> None:
    """Show the newest suppressions."""
    with _ledger(ctx) as ledger:
        rows = ledger.suppressions.list_suppressions(limit)
    if not rows:
        click.echo("no suppressions")
        return
    for row in rows:
        at = row.created_at.strftime("%Y-%m-%d %H:%M:%SZ")
        click.echo(f"{row.email}\t{row.reason}\t{row.source}\t{at}")


@suppressions.command("remove")
@click.argument("email")
@click.option("--reason", required=True, help="Which suppression to lift, e.g. blocked.")
@click.pass_context
def remove(ctx: click.Context, email: str, reason: str) -> None:
    """Lift one suppression of an address (e.g. a temporary block), keeping the others."""
    with _ledger(ctx) as ledger:
        before = {(s.email, s.reason) for s in ledger.suppressions.list_suppressions()}
        ledger.suppressions.remove_suppression(email, reason)
        left = sorted(r for (e, r) in before if e == email.strip().lower() and r != reason)
    click.echo(
        f"{email}: {reason} lifted" + (f"; still suppressed for {', '.join(left)}" if left else "")
    )
