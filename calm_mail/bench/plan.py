"""Issue 3: planning the large data set through the reader and every rule, on one core, next to
the bare orjson parse of the same files; and the planner's peak memory.
"""

from __future__ import annotations

from calm_mail.bench.core import BenchContext, Figure, Goal, Section
from calm_mail.bench.data import EDITION, dataset
from calm_mail.bench.reader import peak_rss_mb, remembered_bare_parse

USERS_PER_S = 20_000
TIME_RATIO = 2.5


def run_plan(ctx: BenchContext) -> Section:
    big, small = dataset(ctx, ctx.sizes.users), dataset(ctx, ctx.sizes.small_users)
    bare = remembered_bare_parse(ctx, big)
    ctx.say(f"plan: plan_edition over {big.users:,} users in a fresh process")
    big_mb, big_run = peak_rss_mb(ctx, "plan", str(ctx.root), str(big.folder), EDITION)
    ctx.say(f"plan: plan_edition over {small.users:,} users (memory baseline)")
    small_mb, small_run = peak_rss_mb(ctx, "plan", str(ctx.root), str(small.folder), EDITION)
    users = big_run["audience"]
    cpu_s = big_run["cpu_s"]
    section = Section(
        name="plan",
        title=f"Plan (issue 3) - {users:,} users x {ctx.sizes.recs} recs, every rule",
        method="CPU time (time.process_time, all threads) of plan_edition with an in-memory "
        "store in a fresh process; baseline: one bare orjson pass over the same files, CPU "
        "time; peak RSS minus an import-only process",
        details={
            "bare_parse": {"lines": bare.lines, "mb": bare.mb, "cpu_s": bare.cpu_s},
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
