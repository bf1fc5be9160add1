"""Composing the 6-card Weekly Winddown (MJML compiled once, Jinja per user) next to compiling
the MJML for every user with mjml-python and, when present, MJML's JavaScript; and writing its
.eml (a dry run's outbox) next to the `email` package writing it.

`bench_render` times single calls in wall time (medians and p90s, kept in the details). The
section's figures are CPU time per email, best of 3 loops, because a median of wall times per
call doubles when other work shares the two cores. MJML JS is timed by node itself (median of
hrtime per call).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from mjml import mjml2html

from benchmarks.core import BenchContext, Figure, Goal, Section
from calm_mail.campaign import load_campaign, project_root
from calm_mail.compose.composer import Composer
from calm_mail.compose.mime import DELIVERY_HEADER, message_id, to_eml_bytes
from calm_mail.compose.templates import CompiledLocale, expand_includes, html_environment
from calm_mail.records import ComposedMessage, ContentSource, Item, PlannedDelivery

EDITION = "2026-W27"
CARDS = 6
EMAILS_PER_S = 10_000
NPM_HINT = "npm install --prefix .bench/node mjml"
ROUNDS = 3

_NODE_BENCH = """
const mjml2html = require('mjml');
const fs = require('fs');
const src = fs.readFileSync(process.argv[2], 'utf8');
const n = parseInt(process.argv[3], 10);
(async () => {
  for (let i = 0; i < 20; i++) await mjml2html(src, {validationLevel: 'soft'});
  const times = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await mjml2html(src, {validationLevel: 'soft'});
    times.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({median_us: times[Math.floor(n / 2)]}));
})();
"""


def bench_catalog() -> dict[str, Item]:
    """`CARDS` cards: music singles, and two-part series whose first part the email skips."""
    created = datetime(2026, 6, 29, tzinfo=UTC)
    items = []
    for i in range(CARDS):
        series = i % 2 == 1
        for position in (1, 2) if series else (None,):
            items.append(
                Item(
                    item_id=f"b{i}-{position}",
                    content_type="sleep_story" if series else "music",
                    title=f"An Unhurried Evening, Chapter {i}",
                    narrator="Ava Stone",
                    duration_s=1500 + 60 * i,
                    language="en",
                    level="all",
                    is_kids=False,
                    topics=("sleep",),
                    collection_id=f"series-{i}" if series else None,
                    collection_position=position,
                    created_at=created,
                    image_url=f"https://img.calm.example/{i}.jpg",
                    deep_link=f"https://calm.example/app/session/{i}",
                )
            )
    return {item.item_id: item for item in items}


def bench_delivery(item_ids: tuple[str, ...]) -> PlannedDelivery:
    return PlannedDelivery(
        edition=EDITION,
        user_id="bench",
        email="bench@example.com",
        locale="en-US",
        arm="personalized",
        source=ContentSource.PERSONALIZE,
        fallback=False,
        item_ids=item_ids,
        send_at=datetime(2026, 7, 4, 12, tzinfo=UTC),
        timezone="UTC",
    )


@dataclass(frozen=True, slots=True)
class RenderCase:
    """The 6-card email for one user, ready to compose or to compile per user."""

    composer: Composer
    compiled: CompiledLocale  # the en-US templates the composer uses
    delivery: PlannedDelivery
    context: dict[str, Any]  # what the HTML template is rendered with
    mjml: str  # the layout with every include spliced in, Jinja not yet rendered
    cold_start_ms: float  # making the composer: compiling the templates

    @classmethod
    def build(cls, root: Path) -> RenderCase:
        campaign = load_campaign("weekly_winddown", root)
        catalog = bench_catalog()
        shown = [item for key, item in catalog.items() if not key.endswith("-1")]
        started = time.perf_counter()
        composer = Composer(campaign, catalog, EDITION, share_renders=False)
        compiled = composer.templates.for_locale("en-US")
        cold_ms = (time.perf_counter() - started) * 1000
        context = composer.builder.context(
            compiled.strings, compiled.subject, compiled.preheader, shown, "bench-0"
        )
        delivery = bench_delivery(tuple(item.item_id for item in shown))
        mjml = expand_includes(campaign.template_dir).text
        return cls(composer, compiled, delivery, context, mjml, cold_ms)

    def compose(self, i: int) -> object:
        return self.composer.compose(self.delivery, f"bench-{i:017d}")

    def render_html(self, i: int) -> object:
        return self.compiled.html.render(self.context)

    def filled_mjml(self) -> str:
        return html_environment().from_string(self.mjml).render(self.context)

    def mjml_python_per_user(self) -> Callable[[int], object]:
        template = html_environment().from_string(self.mjml)
        return lambda i: mjml2html(template.render(self.context), disable_comments=True, fonts={})


def email_package_eml(msg: ComposedMessage) -> bytes:
    """The .eml as the `email` package writes it (the baseline of calm_mail's own writer):
    the same headers and parts, generated from an `EmailMessage`."""
    out = EmailMessage(policy=policy.default)
    local, _, domain = msg.from_email.rpartition("@")
    out["From"] = Address(display_name=msg.from_name, username=local, domain=domain)
    local, _, domain = msg.to_email.rpartition("@")
    out["To"] = Address(username=local, domain=domain)
    if msg.reply_to:
        local, _, domain = msg.reply_to.rpartition("@")
        out["Reply-To"] = Address(username=local, domain=domain)
    out["Subject"] = msg.subject
    out["Date"] = format_datetime(msg.send_at)
    out["Message-ID"] = message_id(msg)
    for name, value in msg.headers.items():
        out[name] = value
    out[DELIVERY_HEADER] = msg.delivery_id
    out.set_content(msg.text, subtype="plain", charset="utf-8")
    out.add_alternative(msg.html, subtype="html", charset="utf-8")
    out.set_boundary(f"=_calm_{msg.delivery_id}")
    return out.as_bytes(policy=policy.SMTP)


def wall_us_per_call(call: Callable[[int], object], n: int) -> tuple[float, float]:
    """(median, p90) of `call(i)` in wall microseconds, after a short warm-up."""
    for i in range(min(50, n)):
        call(i)
    samples = []
    for i in range(n):
        start = time.perf_counter_ns()
        call(i)
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9) - 1]


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


def mjml_js_us(source: str, n: int, cwd: Path) -> tuple[float | None, str]:
    """Median microseconds of MJML JS compiling `source` `n` times, or None and why it was skipped.

    The script runs from a file (``node bench.js SRC N``): under ``node -e`` the arguments would
    start at process.argv[1], not [2]. `cwd` (or NODE_PATH) is where node finds npm's mjml.
    """
    node = shutil.which("node")
    if node is None:
        return None, "node is not installed"
    with tempfile.TemporaryDirectory() as tmp:
        script, src = Path(tmp) / "bench.js", Path(tmp) / "email.mjml"
        script.write_text(_NODE_BENCH, encoding="utf-8")
        src.write_text(source, encoding="utf-8")
        run = subprocess.run(
            [node, str(script), str(src), str(n)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    if run.returncode != 0:
        if "Cannot find module 'mjml'" in run.stderr:
            return None, f"the npm package mjml is not installed ({NPM_HINT})"
        return None, f"MJML JS failed: {run.stderr.strip()[-200:]}"
    return float(json.loads(run.stdout)["median_us"]), "ok"


def bench_render(n: int = 2000, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Time composing `n` 6-card emails, and compiling MJML per user for comparison.

    Returns wall-time medians and p90s in microseconds, emails per second on this core, and the
    ratios "MJML per user / compose" for mjml-python and (when node and npm mjml exist) MJML JS.
    """
    base = project_root(root)
    case = RenderCase.build(base)
    compose_med, compose_p90 = wall_us_per_call(case.compose, n)
    render_med, _ = wall_us_per_call(case.render_html, n)
    mjml_med, _ = wall_us_per_call(case.mjml_python_per_user(), min(n, 500))
    js_med, js_note = mjml_js_us(case.filled_mjml(), min(n, 300), base)
    return {
        "emails": n,
        "cards": CARDS,
        "cold_start_ms": round(case.cold_start_ms, 1),
        "compose_us_median": round(compose_med, 1),
        "compose_us_p90": round(compose_p90, 1),
        "html_render_us_median": round(render_med, 1),
        "emails_per_second": round(1e6 / compose_med),
        "mjml_python_per_user_us_median": round(mjml_med, 1),
        "ratio_mjml_python_per_user_to_compose": round(mjml_med / compose_med, 1),
        "mjml_js_per_user_us_median": None if js_med is None else round(js_med, 1),
        "ratio_mjml_js_per_user_to_compose": None
        if js_med is None
        else round(js_med / compose_med, 1),
        "mjml_js": js_note,
    }


def _use_local_npm_mjml(ctx: BenchContext) -> None:
    """Let node find an npm mjml installed under the bench cache (see NPM_HINT)."""
    modules = ctx.cache / "node" / "node_modules"
    if (modules / "mjml").is_dir() and "NODE_PATH" not in os.environ:
        os.environ["NODE_PATH"] = str(modules)


def run_render(ctx: BenchContext) -> Section:
    _use_local_npm_mjml(ctx)
    n = ctx.sizes.render_emails
    ctx.say(f"render: bench_render({n:,}): wall-time medians, and MJML JS per user (node)")
    medians = bench_render(n, ctx.root)
    case = RenderCase.build(ctx.root)
    ctx.say(f"render: CPU time of composing {n:,} emails and of MJML per user, best of {ROUNDS}")
    compose_us = cpu_us_per_call(case.compose, n)
    mjml_us = cpu_us_per_call(case.mjml_python_per_user(), max(20, n // 4))
    js_us, js_note = medians["mjml_js_per_user_us_median"], medians["mjml_js"]
    ctx.say(f"render: CPU time of writing {n:,} .eml files' bytes, and the email package's")
    messages = [case.composer.compose(case.delivery, f"bench-{i:017d}") for i in range(200)]
    eml_us = cpu_us_per_call(lambda i: to_eml_bytes(messages[i % 200]), n)
    email_us = cpu_us_per_call(lambda i: email_package_eml(messages[i % 200]), max(20, n // 4))
    section = Section(
        name="render",
        title=f"Render - Weekly Winddown, {CARDS} cards",
        method=f"CPU time (time.process_time) per email, best of {ROUNDS} loops of {n:,} "
        f"(MJML per user and the email package's .eml: {max(20, n // 4):,}); MJML JS: node's "
        "own median per call",
        details={
            "compose_cpu_us": round(compose_us, 1),
            "mjml_python_per_user_cpu_us": round(mjml_us, 1),
            "eml_cpu_us": round(eml_us, 1),
            "eml_email_package_cpu_us": round(email_us, 1),
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
        Figure(
            key="render.eml_per_s",
            label="render: .eml files/s (dry run, 1 core)",
            value=1e6 / eml_us,
            unit="emails/s",
            baseline=1e6 / email_us,
            baseline_label="email package",
            goal=Goal(target=10, text=">= 10x the email package", on_ratio=True),
        ),
    ]
    return section
