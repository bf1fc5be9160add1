"""Issue 4: composing the 6-card Weekly Winddown (MJML compiled once, Jinja per user) next to
compiling the MJML for every user with mjml-python and, when present, MJML's JavaScript.

The figures are CPU time per email (best of 3 loops), because a median of wall times per call
doubles when other work shares the two cores; `bench_render`'s wall-time medians and p90s are
kept in the details. MJML JS is timed by node itself (median of hrtime per call).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mjml import mjml2html

from benchmarks import compose_render as compose_bench
from benchmarks.compose_render import bench_render
from benchmarks.core import BenchContext, Figure, Goal, Section
from calm_mail.campaign import load_campaign
from calm_mail.compose.composer import Composer
from calm_mail.compose.templates import expand_includes, html_environment
from calm_mail.records import Item

EMAILS_PER_S = 10_000
NPM_HINT = "npm install --prefix .bench/node mjml"
ROUNDS = 3


@dataclass(frozen=True, slots=True)
class RenderCase:
    """`bench_render`'s case: the 6-card email for one user, ready to compose or to compile."""

    composer: Composer
    items: list[Item]
    context: dict[str, Any]
    mjml: str  # the layout with every include spliced in, Jinja not yet rendered

    @classmethod
    def build(cls, root: Path) -> RenderCase:
        campaign = load_campaign("weekly_winddown", root)
        catalog = compose_bench._catalog()
        shown = [item for key, item in catalog.items() if not key.endswith("-1")]
        composer = Composer(campaign, catalog, compose_bench.EDITION, share_renders=False)
        compiled = composer.templates.for_locale("en-US")
        context = composer.builder.context(
            compiled.strings, compiled.subject, compiled.preheader, shown, "bench-0"
        )
        return cls(composer, shown, context, expand_includes(campaign.template_dir).text)

    def compose(self, i: int) -> object:
        delivery = compose_bench._delivery(tuple(item.item_id for item in self.items))
        return self.composer.compose(delivery, f"bench-{i:017d}")

    def filled_mjml(self) -> str:
        return html_environment().from_string(self.mjml).render(self.context)

    def mjml_python_per_user(self) -> Callable[[int], object]:
        template = html_environment().from_string(self.mjml)
        return lambda i: mjml2html(template.render(self.context), disable_comments=True, fonts={})


def cpu_us_per_call(call: Callable[[int], object], n: int, rounds: int = ROUNDS) -> float:
    """Best of `rounds` loops of `n` calls, in CPU microseconds per call (after a warm-up)."""
    for i in range(min(20, n)):
        call(i)
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for i in range(n):
            call(i)
        best = min(best, time.process_time() - started)
    return best / n * 1e6


def _use_local_npm_mjml(ctx: BenchContext) -> None:
    """Let node find an npm mjml installed under the bench cache (see NPM_HINT)."""
    modules = ctx.cache / "node" / "node_modules"
    if (modules / "mjml").is_dir() and "NODE_PATH" not in os.environ:
        os.environ["NODE_PATH"] = str(modules)


def mjml_js_us(case: RenderCase, root: Path, n: int) -> tuple[float | None, str]:
    """Median us of MJML JS per user (compose.bench's node script), or None and why."""
    us, why = compose_bench.mjml_js_us(case.filled_mjml(), n, root)
    if us is None and "not installed (npm" in why:
        why = f"the npm package mjml is not installed ({NPM_HINT})"
    return us, why


def run_render(ctx: BenchContext) -> Section:
    _use_local_npm_mjml(ctx)
    n = ctx.sizes.render_emails
    ctx.say(f"render: bench_render({n:,}) for the wall-time medians")
    medians = bench_render(n, ctx.root)
    case = RenderCase.build(ctx.root)
    ctx.say(f"render: CPU time of composing {n:,} emails and of MJML per user, best of {ROUNDS}")
    compose_us = cpu_us_per_call(case.compose, n)
    mjml_us = cpu_us_per_call(case.mjml_python_per_user(), max(20, n // 4))
    ctx.say("render: MJML JS per user (node)")
    js_us, js_note = mjml_js_us(case, ctx.root, max(20, min(300, n // 10)))
    section = Section(
        name="render",
        title=f"Render (issue 4) - Weekly Winddown, {medians['cards']} cards",
        method=f"CPU time (time.process_time) per email, best of {ROUNDS} loops of {n:,} "
        f"(MJML per user: {max(20, n // 4):,}); MJML JS: node's own median per call",
        details={
            "compose_cpu_us": round(compose_us, 1),
            "mjml_python_per_user_cpu_us": round(mjml_us, 1),
            "mjml_js_per_user_us_median": None if js_us is None else round(js_us, 1),
            "mjml_js": js_note,
            "bench_render": medians,
        },
    )
    section.figures += [
        Figure(
            key="render.emails_per_s",
            label="render: emails/s (1 core)",
            value=1e6 / compose_us,
            unit="emails/s",
            baseline=1e6 / mjml_us,
            baseline_label="mjml-python per user",
            goal=Goal(target=EMAILS_PER_S, text=f">= {EMAILS_PER_S:,} emails/s"),
        ),
        Figure(
            key="render.vs_mjml_js",
            label="render: vs MJML JS per user",
            value=1e6 / compose_us if js_us else None,
            unit="emails/s",
            baseline=1e6 / js_us if js_us else None,
            baseline_label="MJML JS per user",
            note="" if js_us else f"skipped: {js_note}",
        ),
    ]
    return section
