"""`calm-mail sandbox`: run the local SendGrid until Ctrl-C."""

from __future__ import annotations

import time

import click

from calm_mail.errors import UsageError
from calm_mail.sandbox.config import ArmBehaviour, BehaviourModel, SandboxConfig
from calm_mail.sandbox.server import start_sandbox


def parse_outage(text: str) -> tuple[float, float]:
    """`5:10` -> (5.0, 10.0): seconds after start during which mail/send answers 503."""
    start, sep, end = text.partition(":")
    try:
        window = (float(start), float(end))
    except ValueError:
        window = (-1.0, -1.0)
    if not sep or not 0 <= window[0] < window[1]:
        raise UsageError(f"--outage {text!r}: expected START:END in seconds, e.g. 5:10")
    return window


def _rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"{name} must be between 0 and 1, got {value}")
    return value


@click.command("sandbox")
@click.option("--port", type=click.IntRange(0, 65535), default=3030, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--latency-ms", type=float, default=0.0, help="Delay before every v3 answer.")
@click.option("--fail-rate", type=float, default=0.0, help="Share of sends answered 500/503.")
@click.option("--rate-limit", type=int, default=None, help="Sends per second before 429.")
@click.option(
    "--drop-rate",
    type=float,
    default=0.0,
    help="Share of sends whose connection is closed without an answer.",
)
@click.option(
    "--accept-then-fail-rate",
    type=float,
    default=0.0,
    help="Share of sends kept, then answered 500 or dropped (fate unknown).",
)
@click.option(
    "--outage",
    "outages",
    multiple=True,
    metavar="START:END",
    help="Seconds after start during which sends get 503 (repeatable).",
)
@click.option("--webhook-url", default=None, help="Where to POST signed Event Webhook batches.")
@click.option("--open-rate", type=float, default=None, help="Share of delivered mail opened.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM private key for webhook signing; created when missing.",
)
def sandbox(
    port: int,
    host: str,
    latency_ms: float,
    fail_rate: float,
    rate_limit: int | None,
    drop_rate: float,
    accept_then_fail_rate: float,
    outages: tuple[str, ...],
    webhook_url: str | None,
    open_rate: float | None,
    seed: int,
    key_file: str | None,
) -> None:
    """Run a local SendGrid v3 server (mail send, batches, scheduled sends, Event Webhook)."""
    behaviour = (
        BehaviourModel()
        if open_rate is None
        else BehaviourModel(default=ArmBehaviour(open_rate=_rate("--open-rate", open_rate)))
    )
    try:
        config = SandboxConfig(
            host=host,
            port=port,
            seed=seed,
            latency_ms=latency_ms,
            fail_rate=_rate("--fail-rate", fail_rate),
            rate_limit=rate_limit,
            drop_rate=_rate("--drop-rate", drop_rate),
            accept_then_fail_rate=_rate("--accept-then-fail-rate", accept_then_fail_rate),
            outages=tuple(parse_outage(o) for o in outages),
            webhook_url=webhook_url,
            key_file=key_file,
            behaviour=behaviour,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        handle = start_sandbox(config)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    click.echo(f"SendGrid sandbox listening on {handle.url}")
    click.echo(f"Event Webhook public key (base64 DER): {handle.public_key_b64}")
    click.echo("Point calm-mail at it:")
    click.echo(f"  export SENDGRID_API_HOST={handle.url}")
    click.echo("  export SENDGRID_API_KEY=SG.sandbox")
    click.echo(f"  export SENDGRID_WEBHOOK_PUBLIC_KEY={handle.public_key_b64}")
    click.echo(f"Inbox: {handle.url}/_sandbox/   (Ctrl-C to stop)")
    try:
        while handle.running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("stopping")
    finally:
        handle.stop()
