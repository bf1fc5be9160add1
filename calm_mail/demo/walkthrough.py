"""`calm-mail demo` / `make demo`: the whole loop locally, on the embedded defaults.

1. demo data for the upcoming edition (generated once into data/demo, kept until --regenerate);
2. `validate` of the shipped campaign;
3. a dry-run edition into out/outbox (one .eml per recipient + manifest.jsonl);
4. the same edition sent over HTTP to the local SendGrid sandbox, whose signed Event Webhook
   posts reach the real receiver, into a demo ledger (data/demo/ledger.db, made anew each time
   so the demo can be re-run);
5. simulated in-app completions from the generator's hidden tastes, imported like real ones;
6. the experiment report (terminal, and out/report.html).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from calm_mail.campaign import load_campaign
from calm_mail.demo.data import generate
from calm_mail.demo.live import LoopOptions, run_live_loop
from calm_mail.edition import Edition
from calm_mail.ops.checks import problems_of, validate_campaign
from calm_mail.ops.pipeline import RunOptions, run_edition
from calm_mail.ops.run_report import print_run_report
from calm_mail.store import Ledger

CAMPAIGN = "weekly_winddown"


def ensure_demo_data(
    root: Path, *, users: int, seed: int, edition: Edition, regenerate: bool, console: Console
) -> Path:
    data = root / "data" / "demo"
    manifest = data / "manifest.json"
    if manifest.exists() and not regenerate:
        meta = orjson.loads(manifest.read_bytes())
        if (
            meta.get("edition") == edition.key
            and meta.get("users") == users
            and meta.get("seed") == seed
        ):
            console.print(f"demo data: {data} (kept; --regenerate to make it again)")
            return data
    console.print(f"demo data: generating {users} users for {edition} into {data} ...")
    generate(data, users=users, seed=seed, edition=edition.key)
    return data


def run_demo(
    root: Path,
    *,
    users: int,
    seed: int,
    regenerate: bool,
    console: Console,
    edition: Edition | None = None,
) -> dict[str, Any]:
    edition = edition or Edition.upcoming()
    ensure_demo_data(
        root, users=users, seed=seed, edition=edition, regenerate=regenerate, console=console
    )
    campaign = load_campaign(CAMPAIGN, root)
    problems = problems_of(validate_campaign(campaign, edition))
    for problem in problems:
        console.print(f"[yellow]validate: {problem}[/yellow]")
    console.print(f"validate: {len(problems)} problem(s)")

    ledger_path = root / "data" / "demo" / "ledger.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{ledger_path}{suffix}").unlink(missing_ok=True)
    outbox = root / "out" / "outbox"
    with Ledger.connect(f"sqlite:///{ledger_path}") as ledger:
        report = run_edition(campaign, edition, ledger, RunOptions(dry_run=True, outbox=outbox))
        print_run_report(report, console)
    results: dict[str, Any] = {"dry_run": report.as_dict()}
    html = root / "out" / "report.html"
    results["live"] = run_live_loop(
        root,
        campaign,
        edition,
        ledger_path,
        console=console,
        options=LoopOptions(seed=seed, html=html),
    )
    _say_truth(results["live"], campaign.experiment.control_arm, console)
    return results


def _say_truth(live: dict[str, Any], control: str, console: Console) -> None:
    """Put the simulator's known truth next to what the report estimated."""
    report = live["report"]
    for comparison in report.comparisons:
        if comparison.metric != "completed_after_open" or comparison.arm == control:
            continue
        truth = live["true_lift"].get(comparison.arm)
        effect = comparison.relative
        if truth is None or not effect.ok or effect.ci_low is None or effect.ci_high is None:
            continue
        low, high = effect.ci_low, effect.ci_high
        assert effect.estimate is not None
        inside = "inside" if low <= truth <= high else "OUTSIDE"
        console.print(
            f"{comparison.arm}: true lift {truth:+.1%} (simulated); estimated "
            f"{effect.estimate:+.1%}, 95% CI [{low:+.1%}, {high:+.1%}] — truth {inside}"
        )
    console.print(f"live loop took {live['seconds']:.1f}s")
