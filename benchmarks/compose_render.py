"""How fast one email is composed, next to compiling MJML per user (mjml-python, MJML JS).

`bench_render` is what `make bench` prints: per-email times for the 6-card Weekly Winddown
with compile-once + Jinja, and the ratios to compiling the MJML for every user instead.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mjml import mjml2html

from calm_mail.campaign import load_campaign, project_root
from calm_mail.compose.composer import Composer
from calm_mail.compose.templates import expand_includes, html_environment
from calm_mail.records import ContentSource, Item, PlannedDelivery

EDITION = "2026-W27"
CARDS = 6

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


def _catalog() -> dict[str, Item]:
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


def _delivery(item_ids: tuple[str, ...]) -> PlannedDelivery:
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


def _timed(n: int, call: Callable[[int], object]) -> tuple[float, float]:
    """(median, p90) of `call(i)` in microseconds, after a short warm-up."""
    for i in range(min(50, n)):
        call(i)
    samples = []
    for i in range(n):
        start = time.perf_counter_ns()
        call(i)
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9) - 1]


def mjml_js_us(source: str, n: int, cwd: Path) -> tuple[float | None, str]:
    """Median µs of MJML JS compiling `source` `n` times, or None and why it was skipped.

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
            return None, "the npm package mjml is not installed (npm install mjml)"
        return None, f"MJML JS failed: {run.stderr.strip()[-200:]}"
    return float(json.loads(run.stdout)["median_us"]), "ok"


def bench_render(n: int = 2000, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Time composing `n` 6-card emails, and compiling MJML per user for comparison.

    Returns medians and p90s in microseconds, emails per second on this core, and the ratios
    "MJML per user / compose" for mjml-python and (when node and npm mjml exist) MJML JS.
    """
    base = project_root(root)
    campaign = load_campaign("weekly_winddown", base)
    catalog = _catalog()
    shown = tuple(key for key in catalog if not key.endswith("-1"))
    delivery = _delivery(shown)
    started = time.perf_counter()
    composer = Composer(campaign, catalog, EDITION, share_renders=False)
    compiled = composer.templates.for_locale("en-US")
    cold_ms = (time.perf_counter() - started) * 1000

    compose_med, compose_p90 = _timed(n, lambda i: composer.compose(delivery, f"bench-{i:017d}"))
    items = [catalog[key] for key in shown]
    context = composer.builder.context(
        compiled.strings, compiled.subject, compiled.preheader, items, "bench-0"
    )
    render_med, _ = _timed(n, lambda i: compiled.html.render(context))

    mjml_source = html_environment().from_string(expand_includes(campaign.template_dir).text)
    per_user = min(n, 500)
    mjml_med, _ = _timed(
        per_user, lambda i: mjml2html(mjml_source.render(context), disable_comments=True, fonts={})
    )
    js_med, js_note = mjml_js_us(mjml_source.render(context), min(n, 300), base)
    return {
        "emails": n,
        "cards": CARDS,
        "cold_start_ms": round(cold_ms, 1),
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


if __name__ == "__main__":
    for key, value in bench_render().items():
        print(f"{key:40} {value}")
