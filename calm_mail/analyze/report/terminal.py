"""The report in the terminal: rich panels and tables."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from calm_mail.analyze.attribution import FUNNEL
from calm_mail.analyze.report.formatting import fmt_abs, fmt_p, fmt_pct, fmt_value
from calm_mail.analyze.report.model import Report
from calm_mail.plan.srm import SRM_THRESHOLD


def render_terminal(report: Report) -> RenderableType:
    """Rich renderables: the verdict, the SRM checks, the funnel, the lifts, the sizing."""
    style = {"srm": "bold red", "significant": "bold green"}.get(report.verdict_kind, "bold")
    parts: list[RenderableType] = [
        Panel(
            report.verdict,
            title=f"{report.campaign} · {report.experiment} · {report.scope}",
            style=style,
        ),
        _srm_table(report),
        _funnel_table(report),
        _lift_table(report),
    ]
    if report.sample_size is not None:
        s = report.sample_size
        needed = f"{s.n_per_arm:,}" if s.n_per_arm is not None else "n/a"
        parts.append(
            f"A {fmt_pct(s.target_lift, sign=False)} relative lift on a "
            f"{fmt_pct(s.baseline, sign=False)} baseline needs {needed} users per arm "
            f"(α = {s.alpha:g}, power {s.power:g}).\n"
        )
    parts.extend(f"note: {n}" for n in report.notes)
    return Group(*parts)


def _srm_table(report: Report) -> Table:
    table = Table(title=f"Sample-ratio mismatch (flag at p < {SRM_THRESHOLD:g})")
    for column in ("population", "observed", "expected", "p", "status"):
        table.add_column(column)
    for check in report.srm:
        r = check.result
        status = "[bold red]SRM[/]" if check.flagged else r.insufficient or "[green]ok[/]"
        table.add_row(
            check.population,
            ", ".join(f"{a} {n:,}" for a, n in r.observed.items()),
            ", ".join(f"{a} {e:,.0f}" for a, e in r.expected.items()),
            fmt_p(r.p_value),
            status,
        )
    return table


def _funnel_table(report: Report) -> Table:
    table = Table(title="Funnel per arm")
    table.add_column("arm")
    for name in (*FUNNEL, "fallback rate"):
        table.add_column(name.replace("_", " "), justify="right")
    for row in report.funnel:
        label = f"{row.arm} (holdout)" if row.holdout else row.arm
        table.add_row(
            label,
            *(f"{row.counts[n]:,}" for n in FUNNEL),
            fmt_pct(row.fallback_rate, sign=False, digits=1),
        )
    return table


def _lift_table(report: Report) -> Table:
    table = Table(title=f"Lift vs {report.control} (p Holm-adjusted across treatment arms)")
    for column in (
        "metric",
        "arm",
        report.control,
        "arm value",
        "relative lift",
        "95% CI",
        "p",
        "absolute lift",
        "MDE",
    ):
        table.add_column(column)
    kinds = {m.key: m.kind for m in report.metrics}
    for c in report.comparisons:
        r, a = c.relative, c.absolute
        flag = " [bold red]⚠ SRM[/]" if c.doubt else ""
        kind = kinds[c.metric]
        table.add_row(
            c.label + flag,
            c.arm,
            fmt_value(c.control_value.value, kind),
            fmt_value(c.arm_value.value, kind),
            fmt_pct(r.estimate) if r.ok else f"n/a ({r.insufficient})",
            f"{fmt_pct(r.ci_low)} … {fmt_pct(r.ci_high)}" if r.ok else "",
            fmt_p(r.p_adjusted),
            fmt_abs(a, kind),
            fmt_pct(c.mde_relative, sign=False),
        )
    return table
