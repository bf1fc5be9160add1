"""The report: honest verdicts, Holm across A/B/C, stable JSON, a self-contained HTML page."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from html import unescape
from pathlib import Path

import orjson
import pytest
from rich.console import Console
from statsmodels.stats.multitest import multipletests

from calm_mail.analyze.attribution import (
    ArmMetrics,
    AttributionConfig,
    EditionMetrics,
    metric_defs,
)
from calm_mail.analyze.report import Report, build_report, render_html, render_terminal, to_json
from calm_mail.analyze.stats import ArmStat, mean_stat, proportion_stat
from calm_mail.campaign import Arm, Experiment
from calm_mail.records import ContentSource

CONFIG = AttributionConfig()
DEFS = metric_defs(CONFIG)


def experiment(*arms: str, holdout: str | None = None) -> Experiment:
    specs = [Arm(name=a, weight=1, source=ContentSource.PERSONALIZE) for a in arms]
    if holdout:
        specs.append(Arm(name=holdout, weight=1, source=ContentSource.HOLDOUT))
    return Experiment(name="exp", seed="s", arms=tuple(specs), control=arms[0])


def arm(
    name: str, n: int, rate: float, *, openers: int | None = None, holdout: bool = False
) -> ArmMetrics:
    """An arm of n recipients where `rate` of them completed (every metric alike)."""
    openers = n // 2 if openers is None else openers
    hits = round(n * rate)
    stats: dict[str, ArmStat] = {
        "completed_after_delivery": proportion_stat(n, hits),
        "days_engaged": mean_stat(n, 1.5 * hits, 3.0 * hits),
    }
    if not holdout:
        stats["completed_after_open"] = proportion_stat(n, hits)
        stats["completed_after_open_openers"] = proportion_stat(openers, min(hits, openers))
        stats["completed_emailed_after_open"] = proportion_stat(n, hits // 2)
    funnel = {
        "assigned": n,
        "sent": 0 if holdout else n,
        "delivered": 0,
        "bounced": 0,
        "dropped": 0,
        "opened": 0 if holdout else openers,
        "machine_opened": 0,
        "clicked": 0,
        "unsubscribed": 0,
        "spam_reports": 0,
        "fallback": n // 20,
    }
    curve = tuple(float(max(0, 10 - h)) * rate * 10 for h in range(48))
    return ArmMetrics(
        arm=name, holdout=holdout, users=n, funnel=funnel, stats=stats, completions_by_hour=curve
    )


def metrics(*arms: ArmMetrics) -> EditionMetrics:
    return EditionMetrics(
        campaign="weekly_winddown",
        editions=("2026-W48",),
        pooled=False,
        config=CONFIG,
        metrics=DEFS,
        arms=tuple(arms),
    )


def test_a_real_lift_is_called_with_its_interval() -> None:
    report = build_report(
        metrics(arm("control", 50_000, 0.20), arm("personalized", 50_000, 0.22)),
        experiment("control", "personalized"),
    )
    assert report.verdict_kind == "significant"
    assert report.verdict.startswith("personalized raised completion within 24 h of opening")
    assert "95% CI" in report.verdict and "p < 0.001" in report.verdict


def test_no_detectable_difference_when_the_ci_spans_zero() -> None:
    report = build_report(
        metrics(arm("control", 5_000, 0.20), arm("personalized", 5_000, 0.201)),
        experiment("control", "personalized"),
    )
    primary = report.comparisons_for("completed_after_open")[0]
    assert primary.relative.ci_low is not None and primary.relative.ci_low < 0
    assert report.verdict_kind == "no_difference"
    assert report.verdict.startswith("No detectable difference between personalized and control")
    assert "could detect about" in report.verdict


def test_srm_on_assigned_overrides_the_verdict() -> None:
    report = build_report(
        metrics(arm("control", 51_000, 0.20), arm("personalized", 49_000, 0.25)),
        experiment("control", "personalized"),
    )
    assert report.verdict_kind == "srm"
    assert report.verdict.startswith("SRM detected — do not trust these numbers")
    assert all(c.doubt for c in report.comparisons)


def test_srm_among_openers_puts_only_open_anchored_metrics_in_doubt() -> None:
    report = build_report(
        metrics(
            arm("control", 50_000, 0.20, openers=20_000),
            arm("personalized", 50_000, 0.20, openers=22_000),
        ),
        experiment("control", "personalized"),
    )
    assert report.srm[1].flagged and not report.srm[0].flagged
    assert report.verdict.startswith("SRM detected among openers")
    doubted = {c.metric for c in report.comparisons if c.doubt}
    assert doubted == {m.key for m in DEFS if m.open_anchored}


def test_unconfigured_arms_are_an_srm() -> None:
    report = build_report(
        metrics(arm("control", 1000, 0.2), arm("mystery", 1000, 0.2)),
        experiment("control", "personalized"),
    )
    assert report.verdict_kind == "srm" and "mystery" in report.verdict


def test_holm_adjusts_the_abc_family_but_not_the_holdout() -> None:
    report = build_report(
        metrics(
            arm("control", 20_000, 0.20),
            arm("personalized", 20_000, 0.212),
            arm("popular", 20_000, 0.205),
            arm("holdout", 20_000, 0.15, holdout=True),
        ),
        experiment("control", "personalized", "popular", holdout="holdout"),
    )
    rows = report.comparisons_for("completed_after_open")
    assert [c.arm for c in rows] == ["personalized", "popular"]  # holdout: open metric n/a
    raw = [c.relative.p_value for c in rows]
    expected = multipletests(raw, method="holm")[1]
    assert [c.relative.p_adjusted for c in rows] == pytest.approx(list(expected))
    delivery = {c.arm: c for c in report.comparisons_for("completed_after_delivery")}
    assert not delivery["holdout"].in_family
    assert delivery["holdout"].relative.p_adjusted == delivery["holdout"].relative.p_value
    assert report.srm[0].result.observed == {
        "control": 20_000,
        "holdout": 20_000,
        "personalized": 20_000,
        "popular": 20_000,
    }
    assert "holdout" not in report.srm[1].result.observed
    assert report.sample_size is not None and report.sample_size.alpha == 0.025


def test_insufficient_data_is_said_not_computed() -> None:
    report = build_report(
        metrics(arm("control", 1000, 0.0), arm("personalized", 1000, 0.1)),
        experiment("control", "personalized"),
    )
    assert report.verdict_kind == "insufficient"
    assert report.verdict.startswith("Not enough data to compare personalized with control")
    assert "NaN" not in to_json(report)


def test_without_a_control_arm_the_verdict_says_so() -> None:
    report = build_report(
        metrics(arm("personalized", 1000, 0.1)), experiment("control", "personalized")
    )
    assert report.verdict_kind in {"insufficient", "srm"}
    assert report.comparisons == ()


def sample_report() -> Report:
    return build_report(
        metrics(
            arm("control", 20_000, 0.20),
            arm("personalized", 20_000, 0.23),
            arm("holdout", 20_000, 0.12, holdout=True),
        ),
        experiment("control", "personalized", holdout="holdout"),
    )


def _no_nan(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_no_nan(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_nan(v) for v in value)
    return True


def test_json_is_stable_sorted_and_finite() -> None:
    text = to_json(sample_report())
    assert text == to_json(sample_report())
    data = orjson.loads(text)
    assert list(data) == sorted(data)
    assert data["verdict_kind"] == "significant"
    assert _no_nan(data)
    first = data["comparisons"][0]
    assert {"relative", "absolute", "mde_relative", "doubt"} <= set(first)
    assert first["relative"]["significant"] is True


def test_terminal_rendering_shows_verdict_and_tables() -> None:
    console = Console(width=200, record=True, color_system=None)
    console.print(render_terminal(sample_report()))
    text = console.export_text()
    assert "personalized raised" in text
    assert "Sample-ratio mismatch" in text and "Funnel per arm" in text and "holdout" in text


def test_html_is_self_contained_and_carries_the_verdict() -> None:
    report = sample_report()
    html = render_html(report)
    assert report.verdict in unescape(html)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<script" not in html.lower() and "@import" not in html
    assert html.count('<svg class="lift"') == len([c for c in report.comparisons if c.relative.ok])
    assert 'id="hourly"' in html and "Methods" in html and "Holm" in html


def test_html_escapes_what_it_shows() -> None:
    report = build_report(
        metrics(arm("control", 1000, 0.2), arm("<b>x</b>", 1000, 0.2)),
        experiment("control", "personalized"),
    )
    html = render_html(report)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


@pytest.mark.browser
def test_html_loads_in_headless_chromium(chromium_driver: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    report = sample_report()
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    driver = chromium_driver
    driver.get(page.as_uri())  # type: ignore[attr-defined]
    verdict = driver.find_element(By.ID, "verdict")  # type: ignore[attr-defined]
    assert verdict.is_displayed() and verdict.text == report.verdict
    charts = driver.find_elements(By.TAG_NAME, "svg")  # type: ignore[attr-defined]
    assert len(charts) >= 2
    for chart in charts:
        assert chart.size["width"] > 0 and chart.size["height"] > 0
    hourly = driver.find_element(By.ID, "hourly")  # type: ignore[attr-defined]
    assert len(hourly.find_elements(By.TAG_NAME, "polyline")) == 3
    assert driver.find_element(By.ID, "srm").is_displayed()  # type: ignore[attr-defined]


def test_alpha_power_and_target_lift_come_from_the_campaign() -> None:
    base = experiment("control", "personalized")
    configured = base.model_copy(update={"alpha": 0.01, "power": 0.9, "target_lift": 0.05})
    data = metrics(arm("control", 50_000, 0.20), arm("personalized", 50_000, 0.205))
    default, strict = build_report(data, base), build_report(data, configured)
    assert (default.alpha, default.power) == (0.05, 0.8)
    assert (strict.alpha, strict.power) == (0.01, 0.9)
    assert strict.sample_size is not None and default.sample_size is not None
    assert strict.sample_size.target_lift == 0.05 and default.sample_size.target_lift == 0.03
    # A bigger target lift needs fewer users even at a stricter alpha and higher power.
    assert strict.sample_size.n_per_arm < default.sample_size.n_per_arm  # type: ignore[operator]
    loose = build_report(data, base.model_copy(update={"alpha": 0.2}))
    primary = loose.comparisons_for("completed_after_open")[0].relative
    tight = strict.comparisons_for("completed_after_open")[0].relative
    assert (loose.alpha, primary.alpha) == (0.2, 0.2)
    assert (tight.ci_high - tight.ci_low) > (primary.ci_high - primary.ci_low)  # type: ignore[operator]
