"""Work measured in a fresh process, so its peak memory is its own.

``python -m benchmarks.child TASK [ARGS]`` imports the same modules for every task (so the
``idle`` task is the baseline to subtract), does the task, and prints one JSON line: CPU and wall
seconds of the task, and the process's peak RSS at the end.

Peak RSS is ``VmHWM`` from /proc/self/status: on Linux ``ru_maxrss`` survives fork and exec, so
a child started by a large parent would report the parent's size. ``ru_maxrss`` is the fallback
where /proc is missing.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

# Imported here, outside the measured task: importing (numpy and pyarrow among them) is not
# planning work.
from benchmarks.core import BenchContext
from benchmarks.edition_run import bench_campaign
from calm_mail.edition import Edition
from calm_mail.inputs.catalog import read_catalog
from calm_mail.inputs.personalize import iter_recommendations
from calm_mail.plan.assign import MemoryStore
from calm_mail.plan.planner import plan_edition
from calm_mail.records import SkipCounter


def peak_rss_kb() -> int:
    """This process image's peak resident set, in KiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _idle() -> dict[str, Any]:
    return {}


def _read(prefix: str, catalog: str = "") -> dict[str, Any]:
    """Stream every Personalize line; with `catalog`, check item ids as the planner does."""
    known = read_catalog(catalog, skips=SkipCounter()).keys() if catalog else None
    skips = SkipCounter()
    users = sum(1 for _ in iter_recommendations(prefix, skips=skips, known_items=known))
    return {"users": users, "skipped": skips.skipped}


def _plan(root: str, folder: str, edition: str) -> dict[str, Any]:
    campaign = bench_campaign(Path(root), Path(folder))
    ed = Edition.parse(edition)
    now = datetime.combine(ed.send_date, datetime.min.time(), UTC) - timedelta(days=1)
    result = plan_edition(campaign, ed, store=MemoryStore(), now=now)
    return {
        "audience": result.summary.audience,
        "deliveries": len(result.deliveries),
        "exclusions": len(result.exclusions),
    }


TASKS: dict[str, Callable[..., dict[str, Any]]] = {"idle": _idle, "read": _read, "plan": _plan}


def main(argv: list[str]) -> None:
    task, *args = argv
    cpu, wall = time.process_time(), time.perf_counter()
    result = TASKS[task](*args)
    result["cpu_s"] = time.process_time() - cpu
    result["wall_s"] = time.perf_counter() - wall
    result["peak_rss_kb"] = peak_rss_kb()
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


def run_child(task: str, *args: str, timeout_s: float = 1800) -> dict[str, Any]:
    """Run `task` in a fresh interpreter and return its JSON line; RuntimeError if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", task, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench child {task!r} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def peak_rss_mb(ctx: BenchContext, task: str, *args: str) -> tuple[float, dict[str, Any]]:
    """Peak RSS of `task` in a fresh process, minus that of a process that only imports, and
    the task's JSON line."""
    idle = ctx.remember("child:idle", lambda: run_child("idle"))
    result = run_child(task, *args)
    return (result["peak_rss_kb"] - idle["peak_rss_kb"]) / 1024, result


if __name__ == "__main__":
    main(sys.argv[1:])
