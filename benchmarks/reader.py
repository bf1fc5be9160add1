"""Issue 2: the Personalize reader's throughput next to a bare orjson loop, and its peak memory
at two file sizes (each in a fresh process) to show that memory does not grow with the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from benchmarks.child import run_child
from benchmarks.core import BenchContext, Figure, Goal, Section
from benchmarks.data import dataset
from benchmarks.inputs_reader import bench_reader
from calm_mail.inputs.catalog import read_catalog
from calm_mail.inputs.personalize import SUFFIXES
from calm_mail.inputs.sources import list_prefix, open_source
from calm_mail.records import SkipCounter

MB = 1e6
# calm_mail/inputs/bench.py: "the reader should stay within ~1.3x of the bare loop".
READER_TIME_RATIO = 1.3
MEMORY_GROWTH = 1.25  # peak RSS at 10x the file may be at most this much higher


@dataclass(frozen=True, slots=True, kw_only=True)
class BareParse:
    """One pass of ``orjson.loads`` over every line of a Personalize prefix, in CPU seconds."""

    lines: int
    mb: float
    cpu_s: float

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.cpu_s


def bare_parse(prefix: str) -> BareParse:
    lines = size = 0
    started = time.process_time()
    for part in list_prefix(prefix, SUFFIXES):
        with open_source(part) as stream:
            for raw in stream:
                orjson.loads(raw)
                lines += 1
                size += len(raw)
    return BareParse(lines=lines, mb=size / MB, cpu_s=time.process_time() - started)


def peak_rss_mb(
    ctx: BenchContext, task: str, *args: str, env: dict[str, str] | None = None
) -> tuple[float, dict[str, Any]]:
    """Peak RSS of `task` in a fresh process, minus that of a process that only imports."""
    idle = ctx.remember("child:idle", lambda: run_child("idle"))
    result = run_child(task, *args, env=env)
    return (result["peak_rss_kb"] - idle["peak_rss_kb"]) / 1024, result


def run_reader(ctx: BenchContext) -> Section:
    big, small = dataset(ctx, ctx.sizes.users), dataset(ctx, ctx.sizes.small_users)
    ctx.say(f"reader: bare orjson loop, then the reader, over {big.users:,} users")
    catalog = str(big.folder / "catalog.csv")
    known = read_catalog(catalog, skips=SkipCounter()).keys()  # as the planner reads
    result = bench_reader(big.recommendations, known_items=known)
    ctx.say("reader: peak memory in fresh processes")
    small_catalog = str(small.folder / "catalog.csv")
    small_mb, small_run = peak_rss_mb(ctx, "read", small.recommendations, small_catalog)
    big_mb, big_run = peak_rss_mb(ctx, "read", big.recommendations, catalog)
    section = Section(
        name="reader",
        title=f"Personalize reader (issue 2) - {big.users:,} users x {ctx.sizes.recs} recs, "
        f"{result['mb']:,.0f} MB",
        method="CPU time (time.process_time) of one pass each, bare loop first; the reader "
        "checks item ids against the catalog, as the planner calls it; peak RSS = "
        "VmHWM of a fresh process reading the files minus one that only imports",
        details={"throughput": result, "memory": {"small": small_run, "big": big_run}},
    )
    bare_label = "bare orjson"
    section.figures += [
        Figure(
            key="reader.users_per_s",
            label="reader: users/s (1 core)",
            value=result["users"] / result["reader_s"],
            unit="users/s",
            baseline=result["lines"] / result["bare_s"],
            baseline_label=bare_label,
            goal=Goal(
                target=1 / READER_TIME_RATIO,
                on_ratio=True,
                text=f"time <= {READER_TIME_RATIO}x bare",
            ),
        ),
        Figure(
            key="reader.mb_per_s",
            label="reader: MB/s (1 core)",
            value=result["mb"] / result["reader_s"],
            unit="MB/s",
            baseline=result["mb"] / result["bare_s"],
            baseline_label=bare_label,
        ),
        Figure(
            key="reader.peak_rss_mb",
            label=f"reader: peak RSS at {big.users:,} users",
            value=round(big_mb, 1),
            unit="MB",
            baseline=round(small_mb, 1),
            baseline_label=f"at {small.users:,}",
            goal=Goal(
                target=MEMORY_GROWTH,
                at_least=False,
                on_ratio=True,
                text=f"<= {MEMORY_GROWTH}x (no growth)",
            ),
            note="above an import-only process",
        ),
    ]
    return section
