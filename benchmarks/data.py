"""The bench data sets: generated once under ``.bench/data-<size>``, reused while their
generator arguments match. `bench_campaign` (the shipped campaign pointed at one) is defined in
`edition_run`, which a baseline commit's code must be able to run too.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.core import BenchContext, Figure, Section
from benchmarks.edition_run import CAMPAIGN as CAMPAIGN
from benchmarks.edition_run import bench_campaign as bench_campaign
from calm_mail.demo.data import generate

EDITION = "2026-W48"  # fixed, so cached data and plans are the same whenever the bench runs
SEED = 2026
PARTS = 4
_KEY_FILE = "bench-key.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataset:
    folder: Path
    users: int
    generated_s: float | None  # None when the cache was reused

    @property
    def recommendations(self) -> str:
        return f"{self.folder}/personalize/{EDITION}/"


def folder_name(users: int) -> str:
    """``data-200k`` for 200,000 users, ``data-1500`` for 1,500."""
    return f"data-{users // 1000}k" if users % 1000 == 0 else f"data-{users}"


def generator_args(users: int, recs: int) -> dict[str, Any]:
    return {"users": users, "seed": SEED, "edition": EDITION, "recs": recs, "parts": PARTS}


def ensure_dataset(ctx: BenchContext, users: int) -> Dataset:
    """The cached data set for `users`, generating it (into a temporary folder renamed at the
    end, so an interrupted run never leaves a half set that looks complete) when missing,
    made with other arguments, or when --regenerate was given."""
    args = generator_args(users, ctx.sizes.recs)
    folder = ctx.cache / folder_name(users)
    key_file = folder / _KEY_FILE
    if not ctx.regenerate and key_file.exists() and orjson.loads(key_file.read_bytes()) == args:
        return Dataset(folder=folder, users=users, generated_s=None)
    ctx.say(f"generating {users:,} users x {ctx.sizes.recs} recommendations into {folder}")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    generate(partial, **args)
    seconds = time.perf_counter() - started
    (partial / _KEY_FILE).write_bytes(orjson.dumps(args))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return Dataset(folder=folder, users=users, generated_s=seconds)


def dataset(ctx: BenchContext, users: int) -> Dataset:
    """`ensure_dataset`, once per run and size."""
    found: Dataset = ctx.remember(f"data:{users}", lambda: ensure_dataset(ctx, users))
    return found


def run_data(ctx: BenchContext) -> Section:
    """Make sure both data sets exist; print how long generating took when it happened."""
    section = Section(
        name="data",
        title="Data",
        method=f"generate(seed={SEED}, edition={EDITION}, parts={PARTS}); wall time; "
        f"cached under {ctx.cache} keyed by the generator's arguments",
    )
    for users in sorted({ctx.sizes.small_users, ctx.sizes.users}):
        found = dataset(ctx, users)
        size = sum(p.stat().st_size for p in Path(found.recommendations).iterdir())
        section.details[folder_name(users)] = {
            "folder": str(found.folder),
            "users": users,
            "recommendation_bytes": size,
            "generated_s": found.generated_s,
        }
        section.figures.append(
            Figure(
                key=f"data.generate_{folder_name(users).removeprefix('data-')}_s",
                label=f"data: generate {users:,} users x {ctx.sizes.recs} recs",
                value=None if found.generated_s is None else round(found.generated_s, 1),
                unit="s",
                tag="cached",
                note=f"reused {found.folder}"
                if found.generated_s is None
                else f"{size / 1e6:,.0f} MB of Personalize output",
            )
        )
    return section
