"""`calm-mail demo`: the whole loop locally on demo data."""

from __future__ import annotations

import click

from calm_mail.campaign import project_root
from calm_mail.commands.common import console, root_of
from calm_mail.demo.walkthrough import run_demo


@click.command()
@click.option("--users", type=click.IntRange(min=10), default=2000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--regenerate", is_flag=True, help="Make the demo data again.")
@click.pass_context
def demo(ctx: click.Context, users: int, seed: int, regenerate: bool) -> None:
    """The whole loop locally on demo data (no keys, no network)."""
    run_demo(
        project_root(root_of(ctx)),
        users=users,
        seed=seed,
        regenerate=regenerate,
        console=console,
    )
