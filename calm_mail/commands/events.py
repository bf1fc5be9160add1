"""``calm-mail events serve|import`` and ``calm-mail completions import``."""

from __future__ import annotations

import logging

import click
import uvicorn

from calm_mail.campaign import project_root
from calm_mail.errors import InputError
from calm_mail.records import SkipCounter
from calm_mail.store import Ledger
from calm_mail.track.importer import describe_skips, import_completions, import_events
from calm_mail.track.receiver import DEFAULT_MAX_BODY_BYTES, ReceiverConfig, create_receiver
from calm_mail.track.verify import DEFAULT_MAX_AGE_S, Credentials, parse_basic_auth

INSECURE_WARNING = "\n".join(
    [
        "!" * 72,
        "!! WARNING: --insecure-no-signature: webhook signatures are NOT checked.",
        "!! Anyone who can reach this port can write events and suppressions.",
        "!" * 72,
    ]
)


def _ledger(ctx: click.Context) -> Ledger:
    return Ledger.connect(None, root=project_root((ctx.obj or {}).get("root")))


@click.group()
def events() -> None:
    """SendGrid Event Webhook: receive it (serve) or load exported event files (import)."""


@events.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--public-key",
    envvar="SENDGRID_WEBHOOK_PUBLIC_KEY",
    help="Signed Event Webhook verification key (base64, as SendGrid shows it). "
    "Default: $SENDGRID_WEBHOOK_PUBLIC_KEY (prefer the variable: arguments are "
    "visible to other users of the machine).",
)
@click.option(
    "--max-age",
    default=DEFAULT_MAX_AGE_S,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Refuse signatures whose timestamp is further than this many seconds from "
    "now, either way (0: no check).",
)
@click.option(
    "--max-body",
    default=DEFAULT_MAX_BODY_BYTES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest accepted request body, in bytes.",
)
@click.option(
    "--basic-auth",
    envvar="CALM_MAIL_WEBHOOK_BASIC_AUTH",
    metavar="USER:PASS",
    help="Also require HTTP basic auth. Default: $CALM_MAIL_WEBHOOK_BASIC_AUTH.",
)
@click.option(
    "--bearer-token",
    "bearer_tokens",
    envvar="CALM_MAIL_WEBHOOK_BEARER_TOKEN",
    multiple=True,
    metavar="TOKEN",
    help="Also accept this OAuth bearer token (repeatable). "
    "Default: $CALM_MAIL_WEBHOOK_BEARER_TOKEN (space-separated).",
)
@click.option(
    "--insecure-no-signature",
    is_flag=True,
    help="Accept unsigned requests. For a local test only, never in production.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    public_key: str | None,
    max_age: float,
    max_body: int,
    basic_auth: str | None,
    bearer_tokens: tuple[str, ...],
    insecure_no_signature: bool,
) -> None:
    """Run the Event Webhook receiver (POST /webhooks/sendgrid, GET /healthz)."""
    credentials = Credentials(
        bearer_tokens=bearer_tokens, basic=parse_basic_auth(basic_auth) if basic_auth else None
    )
    config = ReceiverConfig(
        public_key=public_key or None,
        max_age_s=max_age or None,
        insecure_no_signature=insecure_no_signature,
        credentials=credentials,
        max_body_bytes=max_body,
    )
    config.verifier()  # refuses a missing or unreadable key before anything starts
    if not public_key:
        click.secho(INSECURE_WARNING, fg="red", bold=True, err=True)
    with _ledger(ctx) as ledger:
        app = create_receiver(ledger, config)
        click.echo(
            f"Event Webhook receiver on http://{host}:{port}/webhooks/sendgrid "
            f"(ledger {ledger.url_for_display})",
            err=True,
        )
        uvicorn.run(
            app,
            host=host,
            port=port,
            ws="none",
            access_log=False,
            log_level="info" if _verbose() else "warning",
        )


@events.command("import")
@click.argument("file")
@click.pass_context
def import_(ctx: click.Context, file: str) -> None:
    """Load an exported event FILE (JSON array or JSON Lines; local or s3://) into the ledger.

    Same path as the webhook: normalized, deduplicated by event id, suppressions applied.
    Importing a file twice adds nothing.
    """
    with _ledger(ctx) as ledger:
        result = import_events(ledger, file)
    click.echo(
        f"{file}: {result.new} new, {result.duplicates} duplicate, "
        f"{result.rejected.skipped} rejected ({result.kept_raw} kept raw), "
        f"{sum(result.ignored.values())} ignored "
        f"(account events), {result.suppressed} suppression(s) applied"
    )
    _echo_skips("rejected", result.rejected)
    if result.rejected.skipped and not (result.new or result.duplicates or result.kept_raw):
        raise InputError("no valid SendGrid event in the file", path=file)


@click.group()
def completions() -> None:
    """In-app completions: the outcome the Weekly Winddown experiment measures."""


@completions.command("import")
@click.argument("path")
@click.pass_context
def import_completions_command(ctx: click.Context, path: str) -> None:
    """Load completions from PATH: a CSV, Parquet or JSON Lines file, or a prefix of many;
    local or s3://. Columns: user id, content id, completed_at (UTC). Idempotent."""
    with _ledger(ctx) as ledger:
        result = import_completions(ledger.completions, path)
    click.echo(
        f"{path}: {result.read} row(s) read, {result.imported} imported, "
        f"{result.already_present} already present, {result.skips.skipped} bad"
    )
    _echo_skips("bad", result.skips)
    if result.skips.skipped and not result.read:
        raise InputError("no valid completion row", path=path)


def _echo_skips(label: str, skips: SkipCounter) -> None:
    for line in describe_skips(skips):
        click.echo(f"  {label} {line}")


def _verbose() -> bool:
    return logging.getLogger().isEnabledFor(logging.INFO)
