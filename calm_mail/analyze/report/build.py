"""Build the report: compare every arm with the control arm, check SRM, size the test.

`build_report` is pure: `EditionMetrics` + the campaign's experiment -> a frozen `Report`.
An A/B/C family of treatment-vs-control comparisons is Holm-adjusted; a holdout arm is compared
but stays out of the family. The words of the verdict are `verdict.py`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from calm_mail.analyze.attribution import ArmMetrics, EditionMetrics, MetricDef
from calm_mail.analyze.report.model import (
    ArmValue,
    Comparison,
    FunnelRow,
    HourlySeries,
    Report,
    SampleSize,
    SrmCheck,
)
from calm_mail.analyze.report.verdict import verdict
from calm_mail.analyze.stats import (
    ArmStat,
    absolute_lift,
    adjust_family,
    mde_relative,
    relative_lift,
    sample_size_relative,
)
from calm_mail.campaign import Experiment
from calm_mail.plan.srm import SRM_THRESHOLD, srm_check


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
    sentence, kind = verdict(primary, control, srm, comparisons)
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
        verdict=sentence,
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


def _unit_name(metrics: EditionMetrics) -> str:
    return "users" if metrics.pooled else "assigned recipients"


def _srm_checks(metrics: EditionMetrics, experiment: Experiment) -> tuple[SrmCheck, ...]:
    """SRM on assigned units (configured weights) and on openers (non-holdout arms only)."""
    weights = dict(sorted(experiment.weights.items()))  # the report lists arms by name
    sources = {a.name: a.source.value for a in experiment.arms}
    unexpected = tuple(a.arm for a in metrics.arms if a.arm not in weights and not a.holdout)
    assigned = {a.arm: _units(a, metrics) for a in metrics.arms if a.arm in weights}
    by_assigned = srm_check(assigned, weights, tested=f"{_unit_name(metrics)} per arm vs weights")
    checks = [SrmCheck(population="assigned", result=by_assigned, unexpected_arms=unexpected)]
    mailed = {name: w for name, w in weights.items() if sources[name] != "holdout"}
    openers_key = metrics.metrics[1].key
    openers = {
        a.arm: a.stats[openers_key].n
        for a in metrics.arms
        if a.arm in mailed and openers_key in a.stats
    }
    by_openers = srm_check(openers, mailed, tested="openers per arm vs weights of the mailed arms")
    checks.append(SrmCheck(population="openers", result=by_openers))
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
        f"on openers, flagged at p < {SRM_THRESHOLD:g}.",
        f"Unit of analysis: {unit}.",
    )
