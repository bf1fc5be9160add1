"""`calm-mail report CAMPAIGN (--edition W | --experiment NAME)`: read the test from the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import click
from rich.console import Console

from calm_mail.analyze.attribution import AttributionConfig, compute_metrics, load_frames
from calm_mail.analyze.report import build_report, render_html, render_terminal, to_json
from calm_mail.campaign import Campaign, load_campaign, project_root
from calm_mail.edition import Edition
from calm_mail.errors import UsageError
from calm_mail.inputs.writes import write_text
from calm_mail.store import Ledger


class _Listed(Protocol):
    @property
    def edition(self) -> str: ...

    @property
    def experiment(self) -> str: ...


class _EditionLister(Protocol):
    """The ledger's `editions`, as far as choosing the report's editions goes."""

    def list_editions(self, campaign: str) -> Sequence[_Listed]: ...


@click.command("report")
@click.argument("campaign")
@click.option("--edition", "edition", help="One edition (ISO week, e.g. 2026-W48).")
@click.option(
    "--experiment",
    "experiment",
    help="Pool every edition of this experiment, one observation per user.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML page to this file.",
)
@click.option(
    "--window-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    help="Completion window after the open or the delivery.",
)
@click.pass_context
def report(
    ctx: click.Context,
    campaign: str,
    edition: str | None,
    experiment: str | None,
    as_json: bool,
    html_path: Path | None,
    window_hours: float,
) -> None:
    """Read the experiment: funnel, lifts with CIs, SRM and MDE per arm."""
    if (edition is None) == (experiment is None):
        raise UsageError("report: give exactly one of --edition W or --experiment NAME")
    root = (ctx.obj or {}).get("root")
    config = load_campaign(campaign, root)
    settings = AttributionConfig(window_hours=window_hours)
    with Ledger.connect(None, root=project_root(root)) as ledger:
        editions = _editions(ledger.editions, config, edition, experiment)
        frames = load_frames(ledger, config.name, editions, settings)
    notes = []
    if experiment is not None and experiment != config.experiment.name:
        notes.append(
            f"experiment {experiment!r} is read with the arms and weights the campaign "
            f"configures now (for {config.experiment.name!r})"
        )
    built = build_report(
        compute_metrics(frames, settings, pooled=experiment is not None),
        config.experiment,
        notes=notes,
    )
    if html_path is not None:
        write_text(html_path, render_html(built))
    if as_json:
        click.echo(to_json(built), nl=False)
    else:
        Console().print(render_terminal(built))
        if html_path is not None:
            click.echo(f"HTML report written to {html_path}", err=True)


def _editions(
    editions: _EditionLister, campaign: Campaign, edition: str | None, experiment: str | None
) -> list[str]:
    """The edition keys to read: the one given, or every edition of the named experiment."""
    if edition is not None:
        return [Edition.parse(edition).key]
    listed = editions.list_editions(campaign.name)
    keys = sorted(info.edition for info in listed if info.experiment == experiment)
    if not keys:
        known = sorted({info.experiment for info in listed})
        hint = f" Experiments in the ledger: {', '.join(known)}." if known else ""
        raise UsageError(
            f"campaign {campaign.name!r} has no edition of experiment {experiment!r}.{hint}"
        )
    return keys
