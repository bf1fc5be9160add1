"""`calm-mail preview`: one user's email as the real send renders it, and the editors' page.

    calm-mail preview CAMPAIGN --edition W (--user ID | --persona NAME) [--arm A] [--out F] [--text]
    calm-mail preview serve CAMPAIGN [--port P] [--edition W]

`preview CAMPAIGN ...` runs the hidden default subcommand `show`: the group inserts it when the
first word is not a subcommand, so a campaign may be called anything but `serve` or `show`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from calm_mail.campaign import load_campaign, project_root
from calm_mail.edition import Edition
from calm_mail.errors import UsageError
from calm_mail.inputs.writes import write_text
from calm_mail.preview.personas import PERSONAS
from calm_mail.preview.preview import EditionPreview, NoEmail, describe_exclusion
from calm_mail.preview.server import PreviewApp, serve_forever
from calm_mail.store import Ledger

DEFAULT_COMMAND = "show"


class DefaultGroup(click.Group):
    """A group whose first word, when it is no subcommand, starts the default subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        help_only = args and args[0] in ctx.help_option_names
        if args and not help_only and args[0] not in self.commands:
            args = [DEFAULT_COMMAND, *args]
        elif not args:
            args = [DEFAULT_COMMAND]
        return super().parse_args(ctx, args)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The default subcommand's options (what `preview CAMPAIGN ...` takes), then the
        subcommands."""
        show = self.commands[DEFAULT_COMMAND]
        show.format_options(click.Context(show, info_name=DEFAULT_COMMAND, parent=ctx), formatter)
        self.format_commands(ctx, formatter)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(
            ctx.command_path,
            "CAMPAIGN --edition W (--user ID | --persona NAME) [--arm A] [--out FILE] [--text]",
        )
        formatter.write_usage(ctx.command_path, "serve CAMPAIGN [--port P] [--edition W]")


def _edition(value: str | None) -> Edition:
    return Edition.parse(value) if value else Edition.upcoming()


@contextlib.contextmanager
def _store(root: Path) -> Iterator[Ledger]:
    """The ledger: sticky arms and suppressions as the real send sees them (a preview reads,
    never records)."""
    with Ledger.connect(None, root=root) as ledger:
        yield ledger


@click.group(
    "preview",
    cls=DefaultGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def preview() -> None:
    """See one user's email exactly as a real send renders it, or open the editors' page.

    \b
    calm-mail preview weekly_winddown --edition 2026-W48 --user 100042
    calm-mail preview weekly_winddown --persona sleep --arm personalized --out sleep.html
    calm-mail preview serve weekly_winddown
    """


@preview.command(DEFAULT_COMMAND, hidden=True)
@click.argument("campaign")
@click.option("--edition", metavar="W", help="ISO week, e.g. 2026-W48 (default: upcoming).")
@click.option("--user", "user_id", metavar="ID", help="A user id from the audience.")
@click.option(
    "--persona",
    type=click.Choice(sorted(PERSONAS)),
    metavar="NAME",
    help=f"A built-in sample user instead of a real one: {', '.join(PERSONAS)}.",
)
@click.option("--arm", metavar="ARM", help="Show what the user would get in another arm.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the HTML here (default: stdout).",
)
@click.option("--text", "as_text", is_flag=True, help="Print the plain-text part instead.")
@click.pass_context
def show(
    ctx: click.Context,
    campaign: str,
    edition: str | None,
    user_id: str | None,
    persona: str | None,
    arm: str | None,
    out: Path | None,
    as_text: bool,
) -> None:
    """Render one user's (or persona's) email of an edition, byte-identical to the real send."""
    if (user_id is None) == (persona is None):
        raise UsageError("preview: give exactly one of --user ID or --persona NAME")
    root = ctx.obj.get("root") if ctx.obj else None
    camp = load_campaign(campaign, root)
    with _store(project_root(root)) as store:
        prepared = EditionPreview(camp, _edition(edition), store=store)
        arms = [arm] if arm else None
        result = (
            prepared.user(user_id, arms=arms)
            if user_id is not None
            else prepared.persona(str(persona), arms=arms)
        )
    shown = result.for_arm(arm)
    if shown.message is None:
        raise NoEmail(describe_exclusion(result, shown))
    body = shown.message.text if as_text else shown.message.html
    summary = (
        f"preview: {result.user.user_id} {result.edition} arm {shown.arm} "
        f"(source {shown.source}{', fallback' if shown.fallback else ''}"
        f"{', forced' if not shown.own else ''}): {shown.message.subject}"
    )
    if out is None:
        click.echo(summary, err=True)  # stdout carries the email alone
        sys.stdout.write(body)
        sys.stdout.flush()
        return
    write_text(out, body)
    click.echo(f"{summary}\n  -> {out}", err=True)


@preview.command("serve")
@click.argument("campaign")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8400,
    show_default=True,
    help="Port on 127.0.0.1 (0: any free port).",
)
@click.option("--edition", metavar="W", help="Edition shown first (default: newest with data).")
@click.pass_context
def serve(ctx: click.Context, campaign: str, port: int, edition: str | None) -> None:
    """The editors' page on http://127.0.0.1:PORT/: every arm at desktop and mobile width."""
    root = ctx.obj.get("root") if ctx.obj else None
    camp = load_campaign(campaign, root)
    with _store(project_root(root)) as store:
        app = PreviewApp(
            campaign,
            root=root,
            store=store,
            edition=Edition.parse(edition) if edition else None,
            loaded=camp,
        )
        serve_forever(app, port=port, announce=lambda url: click.echo(f"preview: {url}"))
