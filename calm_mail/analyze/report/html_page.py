"""The report as one self-contained HTML page: inline CSS and SVG, no scripts, no external assets.

The page is `templates/report.html`; this module computes what it draws (the lift bars on a
scale shared by one metric's rows, the completions-by-hour chart).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from calm_mail.analyze.attribution import FUNNEL
from calm_mail.analyze.report.formatting import fmt_abs, fmt_p, fmt_pct, fmt_value
from calm_mail.analyze.report.model import Comparison, Report

_PALETTE = ("#3b6ea8", "#d9822b", "#5a9e6f", "#8e6bb3", "#c0504d", "#777777")


def render_html(report: Report) -> str:
    """One self-contained page (inline CSS and SVG, no scripts, no external assets)."""
    env = Environment(
        loader=FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    colors = {s.arm: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(report.hourly)}
    return env.get_template("report.html").render(
        r=report,
        colors=colors,
        lift_rows=_lift_rows(report),
        chart=_hourly_chart(report, colors),
        funnel=FUNNEL,
        kinds={m.key: m.kind for m in report.metrics},
        fmt_pct=fmt_pct,
        fmt_p=fmt_p,
        fmt_value=fmt_value,
        fmt_abs=fmt_abs,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _LiftBar:
    comparison: Comparison
    zero_x: float
    low_x: float | None
    high_x: float | None
    point_x: float | None
    scale_label: str


def _lift_rows(report: Report, width: float = 260.0) -> list[_LiftBar]:
    """Each relative CI drawn on a scale shared by the rows of one metric, centered on zero."""
    rows: list[_LiftBar] = []
    for metric in report.metrics:
        group = report.comparisons_for(metric.key)
        span = (
            max(
                (
                    max(abs(c.relative.ci_low or 0.0), abs(c.relative.ci_high or 0.0))
                    for c in group
                    if c.relative.ok
                ),
                default=0.0,
            )
            * 1.15
            or 0.01
        )
        half = width / 2

        def x(v: float | None, span: float = span, half: float = half) -> float | None:
            return None if v is None else round(half + v / span * (half - 6), 2)

        for c in group:
            rows.append(
                _LiftBar(
                    comparison=c,
                    zero_x=half,
                    low_x=x(c.relative.ci_low),
                    high_x=x(c.relative.ci_high),
                    point_x=x(c.relative.estimate),
                    scale_label=f"±{fmt_pct(span, sign=False, digits=1)}",
                )
            )
    return rows


@dataclass(frozen=True, slots=True, kw_only=True)
class _Chart:
    width: int
    height: int
    left: int
    bottom: int
    lines: tuple[tuple[str, str], ...]  # (arm, "x,y x,y ...")
    x_ticks: tuple[tuple[float, str], ...]
    y_ticks: tuple[tuple[float, str], ...]


def _hourly_chart(
    report: Report, colors: Mapping[str, str], width: int = 640, height: int = 260
) -> _Chart:
    left, right, top, bottom = 48, 12, 12, 32
    hours = max((len(s.per_thousand) for s in report.hourly), default=1)
    peak = max((max(s.per_thousand, default=0.0) for s in report.hourly), default=0.0) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def point(h: float, v: float) -> tuple[float, float]:
        x = left + plot_w * h / max(1, hours - 1)
        return round(x, 1), round(top + plot_h * (1 - v / peak), 1)

    lines = tuple(
        (
            s.arm,
            " ".join(f"{x},{y}" for x, y in (point(h, v) for h, v in enumerate(s.per_thousand))),
        )
        for s in report.hourly
    )
    step = 6 if hours > 12 else 1
    x_ticks = tuple((point(h, 0)[0], f"{h}h") for h in range(0, hours, step))
    y_ticks = tuple((point(0, peak * f)[1], f"{peak * f:.1f}") for f in (0, 0.5, 1))
    return _Chart(
        width=width,
        height=height,
        left=left,
        bottom=height - bottom,
        lines=lines,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
    )
