"""The demo's live loop: a real edition through the SendGrid sandbox, back to a report.

    run_edition ──HTTP──► sandbox ──signed Event Webhook──► receiver ──► ledger
                                                    simulated app usage ──► completions import
                                                                    ledger ──► report

Everything talks over sockets on 127.0.0.1, exactly as in production. The sandbox's recipients
open with the generator's hidden open propensity (the same in every arm), and the app simulator
(calm_mail.demo.app_usage) gives the personalized arm a known true lift, so the report can be
checked against the truth.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from rich.console import Console

from calm_mail.analyze.attribution import AttributionConfig, compute_metrics, load_frames
from calm_mail.analyze.report import build_report, render_html, render_terminal
from calm_mail.campaign import Campaign
from calm_mail.demo.app_usage import Taste, UsageModel, simulate_completions
from calm_mail.edition import Edition
from calm_mail.inputs import iter_audience
from calm_mail.inputs.writes import write_text
from calm_mail.ops.pipeline import RunOptions, run_edition
from calm_mail.ops.run_report import print_run_report
from calm_mail.records import ContentSource, DeliveryState, EventType, SkipCounter
from calm_mail.sandbox import SandboxConfig, run_sandbox
from calm_mail.sandbox.config import ArmBehaviour, BehaviourModel
from calm_mail.sandbox.webhook import WebhookSigner
from calm_mail.store import Ledger
from calm_mail.track.importer import import_completions
from calm_mail.track.receiver import ReceiverConfig, create_receiver
from calm_mail.track.server import serve_in_thread

DEMO_KEY = "SG.demo-sandbox-key"
DEFAULT_LIFT = {"personalized": 0.15, "personalize": 0.15, "popular": 0.05}


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopOptions:
    lift: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_LIFT))
    seed: int = 0
    open_rate: float = 0.5  # × 2 × the user's open propensity (0-1): P(open) = propensity
    machine_open_share: float = 0.3
    html: Path | None = None
    webhook_timeout_s: float = 120.0


def demo_now(edition: Edition, real_now: datetime) -> datetime:
    """The clock the demo runs at: now, or the Friday 18:00 UTC before the edition when now is
    too early for SendGrid's 72-hour window."""
    friday = datetime.combine(edition.send_date - timedelta(days=1), datetime.min.time(), UTC)
    prepare = friday + timedelta(hours=18)
    return real_now if real_now >= prepare - timedelta(hours=24) else prepare


def _audience_and_tastes(
    campaign: Campaign, edition: Edition, tastes_path: Path
) -> tuple[dict[str, float], dict[str, Any]]:

    table = pq.read_table(tastes_path, columns=["user_id", "open_propensity", "completion_rate"])
    rows = table.to_pydict()
    tastes = {
        uid: Taste(completion_rate=float(c), open_weight=float(o))
        for uid, o, c in zip(
            rows["user_id"], rows["open_propensity"], rows["completion_rate"], strict=True
        )
    }
    propensity: dict[str, float] = {}
    for user in iter_audience(campaign.input_path("audience", edition), skips=SkipCounter()):
        taste = tastes.get(user.user_id)
        if taste is not None:
            propensity[user.email.strip().lower()] = taste.open_weight
    return propensity, tastes


def run_live_loop(
    root: Path,
    campaign: Campaign,
    edition: Edition,
    ledger_path: Path,
    *,
    console: Console,
    options: LoopOptions | None = None,
) -> dict[str, Any]:

    opts = options or LoopOptions()
    data = root / "data" / "demo"
    propensity, tastes = _audience_and_tastes(campaign, edition, data / "tastes.parquet")
    real_now = datetime.now(UTC)
    now = demo_now(edition, real_now)
    signer = WebhookSigner.generate()
    behaviour = BehaviourModel(
        default=ArmBehaviour(open_rate=opts.open_rate, machine_open_share=opts.machine_open_share),
        propensity=lambda r: 2.0 * propensity.get(r.email.strip().lower(), 0.2),
    )
    started = time.monotonic()
    with Ledger.connect(f"sqlite:///{ledger_path}") as ledger:
        receiver = create_receiver(ledger, ReceiverConfig(public_key=signer.public_key_b64))
        with serve_in_thread(receiver) as receiver_url:
            config = SandboxConfig(
                seed=opts.seed,
                webhook_url=f"{receiver_url}/webhooks/sendgrid",
                clock_offset_s=(now - real_now).total_seconds(),
                behaviour=behaviour,
            )
            with run_sandbox(config, signer=signer) as sandbox:
                console.print(f"sandbox: {sandbox.url}  receiver: {receiver_url}")
                report = run_edition(
                    campaign,
                    edition,
                    ledger,
                    RunOptions(api_key=DEMO_KEY, api_host=sandbox.url, now=now),
                )
                info = ledger.editions.get_edition(campaign.name, edition.key)
                assert info is not None  # run_edition recorded it
                recipients = list(ledger.deliveries.iter_deliveries(info.edition_id))
                # Scheduled mail is held until its send_at: move the sandbox's clock past the
                # last local morning so every message is delivered and its events posted.
                last = max((r.send_at for r in recipients), default=now)
                sandbox.advance_clock(max(0.0, (last - now).total_seconds()) + 60)
                sandbox.wait_webhooks_idle(timeout=opts.webhook_timeout_s)
                accepted = len(sandbox.messages())
        print_run_report(report, console)
        events = list(ledger.events.events_for(edition.key, campaign.name))
        console.print(
            f"sandbox accepted {accepted} messages; the receiver stored "
            f"{len(events)} webhook events"
        )
        simulated = _simulate(campaign, recipients, events, tastes, data, opts)
        imported = import_completions(ledger.completions, str(simulated.path))
        console.print(
            f"app usage: {simulated.completions} completions simulated, "
            f"{imported.imported} imported"
        )
        built = _report(ledger, campaign, edition, opts.html, console)
    return {
        "sent": report.tally.total_sent,
        "accepted": accepted,
        "events": len(events),
        "true_lift": dict(simulated.true_lift),
        "report": built,
        "seconds": time.monotonic() - started,
    }


def _simulate(
    campaign: Campaign,
    recipients: list[Any],
    events: list[Any],
    tastes: Mapping[str, Any],
    data: Path,
    opts: LoopOptions,
) -> Any:

    first_open: dict[str, datetime] = {}
    for event in events:
        if event.event_type is EventType.OPENED and not event.machine_open and event.delivery_id:
            seen = first_open.get(event.delivery_id)
            if seen is None or event.occurred_at < seen:
                first_open[event.delivery_id] = event.occurred_at
    mailed = [
        r for r in recipients if r.state is DeliveryState.SENT or r.source == ContentSource.HOLDOUT
    ]
    catalog_ids = [
        line.split(",", 1)[0].strip('"')
        for line in (data / "catalog.csv").read_text(encoding="utf-8").splitlines()[1:]
    ]
    holdouts = [a.name for a in campaign.experiment.arms if a.source is ContentSource.HOLDOUT]
    return simulate_completions(
        mailed,
        first_open,
        tastes,
        catalog_ids,
        UsageModel(lift=opts.lift, seed=opts.seed),
        control=campaign.experiment.control_arm,
        holdout_arms=holdouts,
        out=data / "app_completions.csv",
    )


def _report(
    ledger: Any, campaign: Campaign, edition: Edition, html: Path | None, console: Console
) -> Any:

    settings = AttributionConfig()
    frames = load_frames(ledger, campaign.name, [edition.key], settings)
    built = build_report(compute_metrics(frames, settings), campaign.experiment)
    console.print(render_terminal(built))
    if html is not None:
        write_text(html, render_html(built))
        console.print(f"HTML report: {html}")
    return built
