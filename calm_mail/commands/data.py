"""``calm-mail data ...``: make the demo data set."""

from __future__ import annotations

import click

from calm_mail.demo.data import generate as run
from calm_mail.edition import Edition
from calm_mail.errors import UsageError


@click.group("data")
def data() -> None:
    """Demo data for trying calm-mail locally."""


@data.command("generate")
@click.option("--users", type=click.IntRange(min=1), required=True, help="How many users.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder to write into (created if missing).",
)
@click.option("--seed", type=int, default=2026, show_default=True, help="Same seed, same bytes.")
@click.option(
    "--edition", default=None, help="ISO week like 2026-W48 (default: the upcoming edition)."
)
@click.option(
    "--recs",
    type=click.IntRange(min=1, max=500),
    default=500,
    show_default=True,
    help="Personalize items per user (capped by the catalog size).",
)
@click.option(
    "--parts",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Personalize part files; the last one is gzip'd when there are several.",
)
def generate(users: int, out: str, seed: int, edition: str | None, recs: int, parts: int) -> None:
    """Write a realistic, fictional data set: catalog, users, Personalize output, tastes,
    editorial picks and completions, plus manifest.json."""
    key = Edition.parse(edition).key if edition else Edition.upcoming().key
    try:
        run(out, users=users, seed=seed, edition=key, recs=recs, parts=parts, progress=click.echo)
    except OSError as exc:
        raise UsageError(f"cannot write the demo data under {out}: {exc}") from exc
