"""The experiment report: per-arm metrics turned into an honest verdict, and three renderings.

`build_report` is pure: `EditionMetrics` + the campaign's experiment -> a frozen `Report` tree.
Renderers: `render_terminal` (rich tables), `to_json` (orjson, sorted keys), `render_html` (one
self-contained page: inline CSS and SVG, no scripts, no external assets).

Honesty rules: an SRM on assigned users replaces the verdict with "do not trust these numbers";
an SRM among openers is named above the open-anchored metrics it biases; a CI that spans zero
reads "no detectable difference"; an A/B/C family of treatment-vs-control comparisons is called
significant only on its Holm-adjusted p-value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from calm_mail.analyze.attribution import FUNNEL, ArmMetrics, EditionMetrics, MetricDef
from calm_mail.analyze.stats import (
    ArmStat,
    Effect,
    SrmResult,
    absolute_lift,
    adjust_family,
    mde_relative,
    relative_lift,
    sample_size_relative,
    srm_check,
)
from calm_mail.campaign import Experiment

VerdictKind = Literal["srm", "significant", "no_difference", "insufficient", "mixed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FunnelRow:
    arm: str
    holdout: bool
    users: int
    counts: Mapping[str, int]
    fallback_rate: float
    open_rate: float  # human opens per assigned


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmValue:
    arm: str
    n: int
    value: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """One metric, one arm against the control arm."""

    metric: str
    label: str
    arm: str
    control: str
    control_value: ArmValue
    arm_value: ArmValue
    relative: Effect
    absolute: Effect
    in_family: bool  # part of the Holm-adjusted treatment-vs-control family
    mde_relative: float | None
    doubt: str | None  # why an SRM puts this number in doubt, if it does


@dataclass(frozen=True, slots=True, kw_only=True)
class SrmCheck:
    population: Literal["assigned", "openers"]
    result: SrmResult
    unexpected_arms: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        return self.result.flagged or bool(self.unexpected_arms)


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleSize:
    metric: str
    baseline: float
    target_lift: float
    alpha: float
    power: float
    n_per_arm: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class HourlySeries:
    arm: str
    per_thousand: tuple[float, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    campaign: str
    experiment: str
    scope: str
    editions: tuple[str, ...]
    pooled: bool
    window_hours: float
    alpha: float
    power: float
    control: str
    verdict: str
    verdict_kind: VerdictKind
    srm: tuple[SrmCheck, ...]
    funnel: tuple[FunnelRow, ...]
    metrics: tuple[MetricDef, ...]
    comparisons: tuple[Comparison, ...]
    sample_size: SampleSize | None
    hourly: tuple[HourlySeries, ...]
    methods: tuple[str, ...]
    notes: tuple[str, ...]

    def comparisons_for(self, metric: str) -> tuple[Comparison, ...]:
        return tuple(c for c in self.comparisons if c.metric == metric)


# --------------------------------------------------------------------------- building


def build_report(
    metrics: EditionMetrics,
    experiment: Experiment,
    *,
    alpha: float | None = None,
    power: float | None = None,
    target_lift: float | None = None,
    notes: Sequence[str] = (),
) -> Report:
    """Compare every arm with the control arm, check SRM, size the test and write the verdict.

    `alpha`, `power` and `target_lift` default to the campaign's `[experiment]` settings.
    """
    alpha = experiment.alpha if alpha is None else alpha
    power = experiment.power if power is None else power
    target_lift = experiment.target_lift if target_lift is None else target_lift
    control = experiment.control_arm
    srm = _srm_checks(metrics, experiment)
    comparisons = _comparisons(metrics, control, srm, alpha=alpha, power=power)
    primary = metrics.metrics[0]
    verdict, kind = _verdict(metrics, primary, control, srm, comparisons)
    notes = [*metrics.notes, *notes]
    if metrics.arm(control) is None:
        notes.append(f"no delivery is in the control arm {control!r}")
    return Report(
        campaign=metrics.campaign,
        experiment=experiment.name,
        scope=_scope(metrics),
        editions=metrics.editions,
        pooled=metrics.pooled,
        window_hours=metrics.config.window_hours,
        alpha=alpha,
        power=power,
        control=control,
        verdict=verdict,
        verdict_kind=kind,
        srm=srm,
        funnel=_funnel(metrics),
        metrics=metrics.metrics,
        comparisons=comparisons,
        sample_size=_sample_size(metrics, primary, control, target_lift, alpha, power),
        hourly=tuple(
            HourlySeries(arm=a.arm, per_thousand=a.completions_by_hour) for a in metrics.arms
        ),
        methods=_methods(metrics, alpha),
        notes=tuple(notes),
    )


def _scope(metrics: EditionMetrics) -> str:
    if metrics.pooled:
        return (
            f"{len(metrics.editions)} editions pooled ({', '.join(metrics.editions)}), "
            "one observation per user"
        )
    return f"edition {', '.join(metrics.editions)}"


def _funnel(metrics: EditionMetrics) -> tuple[FunnelRow, ...]:
    rows = []
    for arm in metrics.arms:
        assigned = arm.funnel["assigned"]
        rows.append(
            FunnelRow(
                arm=arm.arm,
                holdout=arm.holdout,
                users=arm.users,
                counts=dict(arm.funnel),
                fallback_rate=arm.funnel["fallback"] / assigned if assigned else 0.0,
                open_rate=arm.funnel["opened"] / assigned if assigned else 0.0,
            )
        )
    return tuple(rows)


def _units(arm: ArmMetrics, metrics: EditionMetrics) -> int:
    return arm.users if metrics.pooled else arm.funnel["assigned"]


def _srm_checks(metrics: EditionMetrics, experiment: Experiment) -> tuple[SrmCheck, ...]:
    """SRM on assigned units (configured weights) and on openers (non-holdout arms only)."""
    weights = experiment.weights
    sources = {a.name: a.source.value for a in experiment.arms}
    unexpected = tuple(a.arm for a in metrics.arms if a.arm not in weights and not a.holdout)
    assigned = {a.arm: _units(a, metrics) for a in metrics.arms if a.arm in weights}
    checks = [
        SrmCheck(
            population="assigned", result=srm_check(assigned, weights), unexpected_arms=unexpected
        )
    ]
    mailed = {name: w for name, w in weights.items() if sources[name] != "holdout"}
    openers_key = metrics.metrics[1].key
    openers = {
        a.arm: a.stats[openers_key].n
        for a in metrics.arms
        if a.arm in mailed and openers_key in a.stats
    }
    checks.append(SrmCheck(population="openers", result=srm_check(openers, mailed)))
    return tuple(checks)


def _doubt(metric: MetricDef, srm: Sequence[SrmCheck]) -> str | None:
    by_population = {check.population: check for check in srm}
    if by_population["assigned"].flagged:
        return "SRM among assigned users: arms are not comparable"
    if metric.open_anchored and by_population["openers"].flagged:
        return "SRM among openers: the email changed who opens, so per-open numbers are biased"
    return None


def _comparisons(
    metrics: EditionMetrics, control: str, srm: Sequence[SrmCheck], *, alpha: float, power: float
) -> tuple[Comparison, ...]:
    base = metrics.arm(control)
    if base is None:
        return ()
    out: list[Comparison] = []
    for metric in metrics.metrics:
        if metric.key not in base.stats:
            continue
        family: list[Comparison] = []
        others: list[Comparison] = []
        for arm in metrics.arms:
            if arm.arm == control or metric.key not in arm.stats:
                continue
            row = _compare(metric, base, arm, alpha=alpha, power=power, doubt=_doubt(metric, srm))
            (others if arm.holdout else family).append(row)
        out.extend(_adjust(family))
        out.extend(others)
    return tuple(out)


def _compare(
    metric: MetricDef,
    base: ArmMetrics,
    arm: ArmMetrics,
    *,
    alpha: float,
    power: float,
    doubt: str | None,
) -> Comparison:
    c, t = base.stats[metric.key], arm.stats[metric.key]
    return Comparison(
        metric=metric.key,
        label=metric.label,
        arm=arm.arm,
        control=base.arm,
        control_value=_value(base.arm, c),
        arm_value=_value(arm.arm, t),
        relative=relative_lift(c, t, alpha=alpha),
        absolute=absolute_lift(c, t, alpha=alpha),
        in_family=not arm.holdout,
        mde_relative=mde_relative(c, c.n, t.n, alpha=alpha, power=power),
        doubt=doubt,
    )


def _value(arm: str, stat: ArmStat) -> ArmValue:
    return ArmValue(arm=arm, n=stat.n, value=stat.mean)


def _adjust(family: list[Comparison]) -> list[Comparison]:
    """Holm across the family, separately for the relative and the absolute p-values."""
    relative = adjust_family([c.relative for c in family], "holm")
    absolute = adjust_family([c.absolute for c in family], "holm")
    return [
        dataclasses.replace(c, relative=r, absolute=a)
        for c, r, a in zip(family, relative, absolute, strict=True)
    ]


def _sample_size(
    metrics: EditionMetrics,
    primary: MetricDef,
    control: str,
    target: float,
    alpha: float,
    power: float,
) -> SampleSize | None:
    """Users per arm the target relative lift needs on the primary metric (Bonferroni alpha)."""
    base = metrics.arm(control)
    if base is None or primary.key not in base.stats:
        return None
    baseline = base.stats[primary.key].mean
    family = sum(1 for a in metrics.arms if a.arm != control and not a.holdout)
    level = alpha / max(1, family)
    try:
        n = sample_size_relative(baseline, target, alpha=level, power=power)
    except ValueError:
        n = None
    return SampleSize(
        metric=primary.key,
        baseline=baseline,
        target_lift=target,
        alpha=level,
        power=power,
        n_per_arm=n,
    )


def _verdict(
    metrics: EditionMetrics,
    primary: MetricDef,
    control: str,
    srm: Sequence[SrmCheck],
    comparisons: Sequence[Comparison],
) -> tuple[str, VerdictKind]:
    assigned = srm[0]
    if assigned.flagged:
        return _srm_sentence(assigned), "srm"
    rows = [c for c in comparisons if c.metric == primary.key and c.in_family]
    if not rows:
        return (
            f"Not enough data: no arm to compare with the control arm {control!r}.",
            "insufficient",
        )
    sentences = [_comparison_sentence(c, primary) for c in rows]
    kinds = {_kind(c) for c in rows}
    kind: VerdictKind = kinds.pop() if len(kinds) == 1 else "mixed"
    if srm[1].flagged:
        sentences.insert(
            0,
            "SRM detected among openers — do not trust the per-open numbers; "
            "the email changed who opens. Read the delivery-anchored metric.",
        )
        kind = "srm"
    return " ".join(sentences), kind


def _kind(c: Comparison) -> VerdictKind:
    if not c.relative.ok:
        return "insufficient"
    return "significant" if c.relative.significant() else "no_difference"


def _srm_sentence(check: SrmCheck) -> str:
    if check.unexpected_arms:
        return (
            "SRM detected — do not trust these numbers: deliveries carry arms the experiment "
            f"does not configure ({', '.join(check.unexpected_arms)})."
        )
    r = check.result
    observed = " / ".join(f"{arm} {n:,}" for arm, n in r.observed.items())
    expected = " / ".join(f"{arm} {e:,.0f}" for arm, e in r.expected.items())
    return (
        f"SRM detected — do not trust these numbers: assigned {observed} where "
        f"{expected} was expected (χ² {p_phrase(r.p_value)})."
    )


def _comparison_sentence(c: Comparison, metric: MetricDef) -> str:
    r = c.relative
    if not r.ok:
        return f"Not enough data to compare {c.arm} with {c.control}: {r.insufficient}."
    detail = (
        f"{fmt_pct(r.estimate)} relative, {100 * (1 - r.alpha):g}% CI "
        f"{fmt_pct(r.ci_low)} to {fmt_pct(r.ci_high)}, {p_phrase(r.p_adjusted)}"
    )
    if r.significant():
        direction = "raised" if (r.estimate or 0.0) > 0 else "lowered"
        return f"{c.arm} {direction} {metric.short} vs {c.control} ({detail})."
    mde = (
        f"; at this size the test could detect about {fmt_pct(c.mde_relative, sign=False)}"
        if c.mde_relative is not None
        else ""
    )
    return (
        f"No detectable difference between {c.arm} and {c.control} in {metric.short} "
        f"({detail}{mde})."
    )


def _methods(metrics: EditionMetrics, alpha: float) -> tuple[str, ...]:
    w = f"{metrics.config.window_hours:g} h"
    unit = (
        "one observation per user (each user's metrics averaged over the editions, Welch's "
        "t-test on those means)"
        if metrics.pooled
        else "one observation per recipient"
    )
    return (
        f"Two-sided frequentist tests at α = {alpha:g}: the relative lift (T−C)/C with a "
        "delta-method standard error and Welch–Satterthwaite degrees of freedom (GrowthBook's "
        "engine); its p-value is the one reported. The absolute lift uses the same test.",
        "Treatment-vs-control comparisons form one family; their p-values are Holm-adjusted and "
        "a lift is called only when the adjusted p is below α and the CI excludes 0. CIs are "
        "unadjusted.",
        f"Intent to treat: every assigned recipient is in the denominator; a recipient who did "
        f"not open counts as not completing within {w} of opening. Machine opens (Apple Mail "
        "Privacy Protection) never count as opens.",
        "The delivery-anchored metric (first delivered event, else the planned send time) and "
        "the days-engaged metric do not depend on opens; holdout users are measured from their "
        "planned send time.",
        "Sample-ratio mismatch: Pearson χ² against the configured weights on assigned units and "
        "on openers, flagged at p < 0.001.",
        f"Unit of analysis: {unit}.",
    )


# --------------------------------------------------------------------------- formatting


def fmt_pct(value: float | None, *, sign: bool = True, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:+.{digits}f}%" if sign else f"{100 * value:.{digits}f}%"


def fmt_p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def p_phrase(value: float | None) -> str:
    """ "p < 0.001" or "p = 0.042", for sentences."""
    return f"p {fmt_p(value)}" if value is not None and value < 0.001 else f"p = {fmt_p(value)}"


def fmt_value(value: float, kind: str) -> str:
    return f"{100 * value:.2f}%" if kind == "proportion" else f"{value:.3f}"


# --------------------------------------------------------------------------- JSON


def as_dict(report: Report) -> dict[str, Any]:
    """The report as plain data: dataclasses to dicts, with each Effect's derived flags."""
    data = _plain(report)
    assert isinstance(data, dict)
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, Effect):
        fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {**fields, "significant": value.significant(), "spans_zero": value.spans_zero}
    if isinstance(value, SrmResult | SrmCheck):
        fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {**fields, "flagged": value.flagged}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def to_json(report: Report) -> str:
    """Stable JSON: sorted keys, two-space indent, a trailing newline."""
    options = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
    return orjson.dumps(as_dict(report), option=options).decode()


# --------------------------------------------------------------------------- terminal


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
    table = Table(title="Sample-ratio mismatch (flag at p < 0.001)")
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
            _fmt_abs(a, kind),
            fmt_pct(c.mde_relative, sign=False),
        )
    return table


def _fmt_abs(effect: Effect, kind: str) -> str:
    if not effect.ok or effect.estimate is None:
        return "n/a"
    if kind == "proportion":
        return f"{100 * effect.estimate:+.2f} pp"
    return f"{effect.estimate:+.3f}"


# --------------------------------------------------------------------------- HTML

_PALETTE = ("#3b6ea8", "#d9822b", "#5a9e6f", "#8e6bb3", "#c0504d", "#777777")


def render_html(report: Report) -> str:
    """One self-contained page (inline CSS and SVG, no scripts, no external assets)."""
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
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
        fmt_abs=_fmt_abs,
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
