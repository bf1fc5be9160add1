"""Planning the large data set through the reader and every rule, on one core, next to the
bare orjson parse of the same files; and the planner's peak memory.
"""

from __future__ import annotations

from benchmarks.child import peak_rss_mb
from benchmarks.core import BenchContext, Figure, Goal, Section
from benchmarks.data import EDITION, dataset
from benchmarks.reader import bare_parse

USERS_PER_S = 20_000
TIME_RATIO = 2.5


def run_plan(ctx: BenchContext) -> Section:
    big, small = dataset(ctx, ctx.sizes.users), dataset(ctx, ctx.sizes.small_users)
    bares, plans = [], []
    rounds = ctx.sizes.rounds  # bare parse and plan alternate: the machine is shared and noisy
    for r in range(rounds):
        ctx.say(f"plan: round {r + 1}/{rounds}: bare orjson pass over {big.users:,} users")
        bares.append(bare_parse(big.recommendations))
        ctx.say(f"plan: round {r + 1}/{rounds}: plan_edition in a fresh process")
        plans.append(peak_rss_mb(ctx, "plan", str(ctx.root), str(big.folder), EDITION))
    bare = min(bares, key=lambda b: b.cpu_s)
    big_mb, big_run = min(plans, key=lambda p: float(p[1]["cpu_s"]))
    ctx.say(f"plan: plan_edition over {small.users:,} users (memory baseline)")
    small_mb, small_run = peak_rss_mb(ctx, "plan", str(ctx.root), str(small.folder), EDITION)
    users = big_run["audience"]
    cpu_s = big_run["cpu_s"]
    section = Section(
        name="plan",
        title=f"Plan - {users:,} users x {ctx.sizes.recs} recs, every rule",
        method="CPU time (time.process_time, all threads) of plan_edition with an in-memory "
        "store in a fresh process; baseline: a bare orjson pass over the same files, CPU "
        f"time; the two alternate, best of {rounds} each; peak RSS minus an import-only "
        "process",
        details={
            "bare_parse": {"lines": bare.lines, "mb": bare.mb, "cpu_s": bare.cpu_s},
            "bare_parse_rounds_cpu_s": [round(b.cpu_s, 3) for b in bares],
            "plan_rounds_cpu_s": [round(float(p[1]["cpu_s"]), 3) for p in plans],
            "big": big_run,
            "small": small_run,
        },
    )
    section.figures += [
        Figure(
            key="plan.users_per_s",
            label="plan: users/s (1 core)",
            value=users / cpu_s,
            unit="users/s",
            baseline=bare.lines_per_s,
            baseline_label="bare orjson",
            goal=Goal(target=USERS_PER_S, text=f">= {USERS_PER_S:,} users/s"),
        ),
        Figure(
            key="plan.us_per_user",
            label="plan: CPU time per user",
            value=cpu_s / users * 1e6,
            unit="us",
            baseline=bare.cpu_s / bare.lines * 1e6,
            baseline_label="bare orjson",
            goal=Goal(
                target=TIME_RATIO, at_least=False, on_ratio=True, text=f"<= {TIME_RATIO}x bare"
            ),
        ),
        Figure(
            key="plan.peak_rss_mb",
            label=f"plan: peak RSS at {big.users:,} users",
            value=round(big_mb, 1),
            unit="MB",
            baseline=round(small_mb, 1),
            baseline_label=f"at {small.users:,}",
            note="the audience and the plan are held per shard; the recommendations stream",
        ),
    ]
    return section
