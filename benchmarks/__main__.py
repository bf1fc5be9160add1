"""``python -m benchmarks``: run the selected sections, print a table per section and a
summary, optionally write every figure to a JSON file. A missed goal never fails the command;
a section that crashes does (exit 1), after the other sections have run.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click
import orjson
from rich.console import Console

from benchmarks.core import (
    DEFAULT_BASELINE,
    FULL,
    QUICK,
    BenchContext,
    Figure,
    Section,
    load_text,
    report_json,
    section_table,
    summary_table,
)
from calm_mail.campaign import project_root


def _sections() -> dict[str, Callable[[BenchContext], Section]]:
    # Imported here so `--help` and a bad --only answer at once.
    from benchmarks.data import run_data
    from benchmarks.edition import run_whole_edition
    from benchmarks.plan import run_plan
    from benchmarks.reader import run_reader
    from benchmarks.receiver import run_receiver
    from benchmarks.render import run_render
    from benchmarks.send import run_send

    return {
        "edition": run_whole_edition,
        "data": run_data,
        "reader": run_reader,
        "plan": run_plan,
        "render": run_render,
        "send": run_send,
        "receiver": run_receiver,
    }


NAMES = ("edition", "data", "reader", "plan", "render", "send", "receiver")
NEEDS_DATA = {"reader", "plan", "send"}  # the edition makes only its own data set


def selected(only: str | None) -> list[str]:
    """Section names in run order; data before the sections that read both data sets."""
    if not only:
        return list(NAMES)
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    unknown = sorted(wanted - set(NAMES))
    if unknown:
        raise click.BadParameter(
            f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}",
            param_hint="--only",
        )
    if wanted & NEEDS_DATA:
        wanted.add("data")
    return [name for name in NAMES if name in wanted]


def _local_no_proxy() -> None:
    """Every request of the bench goes to 127.0.0.1: never through a configured proxy."""
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in os.environ.get(name, "").split(",") if h]
        os.environ[name] = ",".join(dict.fromkeys([*hosts, "127.0.0.1", "localhost"]))


def _failed(name: str, exc: Exception) -> Section:
    return Section(
        name=name,
        title=f"{name} (failed)",
        method="",
        figures=[
            Figure(
                key=f"{name}.error",
                label=f"{name}: the section failed",
                value=None,
                unit="",
                note=f"{type(exc).__name__}: {str(exc)[:300]}",
                error=True,
            )
        ],
    )


@click.command()
@click.option("--quick", is_flag=True, help="Smaller sizes: a smoke run of about a minute.")
@click.option("--only", default=None, help="Comma-separated sections: " + ",".join(NAMES))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Project root.")
@click.option("--cache", type=click.Path(file_okay=False), default=None, help="[ROOT/.bench]")
@click.option("--users", type=click.IntRange(min=100), default=None, help="Large data set.")
@click.option("--small-users", type=click.IntRange(min=100), default=None)
@click.option("--edition-users", type=click.IntRange(min=100), default=None)
@click.option(
    "--baseline",
    default=DEFAULT_BASELINE,
    show_default=True,
    metavar="REV",
    help="The commit whose code the edition section runs beside this tree's.",
)
@click.option("--regenerate", is_flag=True, help="Generate the data sets even if cached.")
def main(
    quick: bool,
    only: str | None,
    json_path: str | None,
    root: str | None,
    cache: str | None,
    users: int | None,
    small_users: int | None,
    edition_users: int | None,
    baseline: str,
    regenerate: bool,
) -> None:
    """Print calm-mail's performance figures next to their same-run baselines."""
    names = selected(only)
    sizes = QUICK if quick else FULL
    sizes = dataclasses.replace(
        sizes,
        users=users or sizes.users,
        small_users=small_users or sizes.small_users,
        edition_users=edition_users or sizes.edition_users,
    )
    if sizes.small_users > sizes.users:
        raise click.BadParameter("must not exceed --users", param_hint="--small-users")
    base = project_root(root)
    _local_no_proxy()
    ctx = BenchContext(
        sizes=sizes,
        root=base,
        cache=Path(cache).resolve() if cache else base / ".bench",
        console=Console(width=None if sys.stdout.isatty() else 150),
        regenerate=regenerate,
        baseline=baseline,
    )
    ctx.cache.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    sections = _run_all(ctx, names)
    ctx.console.print(summary_table(sections, load_text(load_before, os.getloadavg())))
    if json_path:
        report = report_json(sections, sizes, quick, load_before)
        Path(json_path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        ctx.console.print(f"figures written to {json_path}")
    if any(f.error for s in sections for f in s.figures):
        sys.exit(1)


def _run_all(ctx: BenchContext, names: list[str]) -> list[Section]:
    runners = _sections()
    sections = []
    for name in names:
        try:
            section = runners[name](ctx)
        except Exception as exc:  # report it, run the other sections, exit 1 at the end
            ctx.console.print_exception(max_frames=8)
            section = _failed(name, exc)
        ctx.console.print(section_table(section))
        sections.append(section)
    return sections


if __name__ == "__main__":
    main()
