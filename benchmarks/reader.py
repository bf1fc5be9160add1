"""The Personalize reader's throughput next to a bare ``orjson.loads`` loop over the same files,
and its peak memory at two file sizes (each in a fresh process) to show that memory does not
grow with the file.
"""

from __future__ import annotations

import time
from collections.abc import Container
from dataclasses import dataclass

import orjson

from benchmarks.child import peak_rss_mb
from benchmarks.core import BenchContext, Figure, Goal, Section
from benchmarks.data import dataset
from calm_mail.inputs.catalog import read_catalog
from calm_mail.inputs.personalize import SUFFIXES, iter_recommendations
from calm_mail.inputs.sources import list_prefix, open_source
from calm_mail.records import SkipCounter

MB = 1e6
READER_TIME_RATIO = 1.3  # the reader may take this much longer than the bare loop
MEMORY_GROWTH = 1.25  # peak RSS at 10x the file may be at most this much higher


@dataclass(frozen=True, slots=True, kw_only=True)
class BareParse:
    """One pass of ``orjson.loads`` over every line of a Personalize prefix, in CPU seconds;
    MB counts decompressed bytes."""

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


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderPass:
    """One pass of `iter_recommendations` over a prefix, in CPU seconds."""

    users: int
    skipped: int
    cpu_s: float


def reader_pass(prefix: str, known_items: Container[str] | None) -> ReaderPass:
    skips = SkipCounter()
    started = time.process_time()
    users = sum(1 for _ in iter_recommendations(prefix, skips=skips, known_items=known_items))
    return ReaderPass(users=users, skipped=skips.skipped, cpu_s=time.process_time() - started)


def run_reader(ctx: BenchContext) -> Section:
    big, small = dataset(ctx, ctx.sizes.users), dataset(ctx, ctx.sizes.small_users)
    ctx.say(f"reader: bare orjson loop, then the reader, over {big.users:,} users")
    catalog = str(big.folder / "catalog.csv")
    known = read_catalog(catalog, skips=SkipCounter()).keys()  # as the planner reads
    bare = bare_parse(big.recommendations)
    reader = reader_pass(big.recommendations, known)
    ctx.say("reader: peak memory in fresh processes")
    small_catalog = str(small.folder / "catalog.csv")
    small_mb, small_run = peak_rss_mb(ctx, "read", small.recommendations, small_catalog)
    big_mb, big_run = peak_rss_mb(ctx, "read", big.recommendations, catalog)
    section = Section(
        name="reader",
        title=f"Personalize reader - {big.users:,} users x {ctx.sizes.recs} recs, "
        f"{bare.mb:,.0f} MB",
        method="CPU time (time.process_time) of one pass each, bare loop first; the reader "
        "checks item ids against the catalog, as the planner calls it; peak RSS = "
        "VmHWM of a fresh process reading the files minus one that only imports",
        details={
            "bare": {"lines": bare.lines, "mb": round(bare.mb, 1), "cpu_s": round(bare.cpu_s, 3)},
            "reader": {
                "users": reader.users,
                "skipped": reader.skipped,
                "cpu_s": round(reader.cpu_s, 3),
            },
            "memory": {"small": small_run, "big": big_run},
        },
    )
    bare_label = "bare orjson"
    section.figures += [
        Figure(
            key="reader.users_per_s",
            label="reader: users/s (1 core)",
            value=reader.users / reader.cpu_s,
            unit="users/s",
            baseline=bare.lines_per_s,
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
            value=bare.mb / reader.cpu_s,
            unit="MB/s",
            baseline=bare.mb / bare.cpu_s,
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
