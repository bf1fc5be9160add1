"""What the edition commands share: the console, the --edition option, campaign and ledger."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console

from calm_mail.campaign import Campaign, load_campaign, project_root
from calm_mail.edition import Edition
from calm_mail.errors import UsageError
from calm_mail.store import Ledger

# Wide enough for the report's tables when the output is a file or a CI log, not a terminal.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 132)


class EditionType(click.ParamType[Edition, object]):
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


def root_of(ctx: click.Context) -> str | None:
    root: str | None = ctx.obj.get("root") if ctx.obj else None
    return root


def open_campaign(ctx: click.Context, name: str) -> Campaign:
    return load_campaign(name, root_of(ctx))


def open_ledger(ctx: click.Context) -> Ledger:
    return Ledger.connect(None, root=project_root(root_of(ctx)))
