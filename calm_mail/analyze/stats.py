"""Frequentist statistics for the weekly-email A/B(/C) test, GrowthBook's engine in small pieces.

Pure functions over per-arm summaries (n, mean, variance); every result is a frozen dataclass.
Formulas: ``shared/reference/experiment-stats.md`` §3 (gbstats is the reference implementation):

- relative lift ``(μT−μC)/|μC|`` with the delta-method standard error, absolute lift ``μT−μC``;
  both with a two-sided Welch t-test (Welch–Satterthwaite ν on the per-arm variances);
- Holm and Bonferroni adjustments, power, MDE, sample size.

The sample-ratio-mismatch test is `calm_mail.plan.srm`, shared with the plan and pre-flight.

A comparison that cannot be made (an arm too small, a zero control mean, no variance in an arm)
comes back as an `Effect` with ``insufficient`` set and no numbers — never NaN, never a crash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from scipy import optimize
from scipy.stats import norm
from scipy.stats import t as student_t

Kind = Literal["proportion", "mean"]
Difference = Literal["relative", "absolute"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmStat:
    """One arm's summary of one metric: n units, their mean and per-unit variance."""

    n: int
    mean: float
    variance: float
    kind: Kind

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")
        if not (math.isfinite(self.mean) and math.isfinite(self.variance)):
            raise ValueError(f"mean and variance must be finite, got {self.mean}, {self.variance}")


def proportion_stat(n: int, conversions: int) -> ArmStat:
    """A 0/1 metric: variance p(1−p), no n−1 correction (gbstats ProportionStatistic)."""
    if not 0 <= conversions <= n:
        raise ValueError(f"conversions ({conversions}) must lie in [0, n={n}]")
    p = conversions / n if n else 0.0
    return ArmStat(n=n, mean=p, variance=p * (1.0 - p), kind="proportion")


def mean_stat(n: int, total: float, total_sq: float) -> ArmStat:
    """A per-unit mean from Σy and Σy²: variance (Σy²−(Σy)²/n)/(n−1) (gbstats SampleMean)."""
    if n < 2:
        return ArmStat(n=n, mean=total / n if n else 0.0, variance=0.0, kind="mean")
    variance = max(0.0, (total_sq - total * total / n) / (n - 1))
    return ArmStat(n=n, mean=total / n, variance=variance, kind="mean")


@dataclass(frozen=True, slots=True, kw_only=True)
class Effect:
    """One difference between a treatment and the control arm.

    When ``insufficient`` is set (a short reason) the numbers are all None. ``p_adjusted`` is the
    p-value after a multiple-comparison correction (equal to ``p_value`` until adjusted).
    """

    difference: Difference
    estimate: float | None = None
    se: float | None = None
    df: float | None = None
    p_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    alpha: float = 0.05
    p_adjusted: float | None = None
    insufficient: str | None = None

    @property
    def ok(self) -> bool:
        return self.insufficient is None

    @property
    def spans_zero(self) -> bool:
        """True when the CI contains 0 (or there is no CI): no detectable difference."""
        if self.ci_low is None or self.ci_high is None:
            return True
        return self.ci_low <= 0.0 <= self.ci_high

    def significant(self, alpha: float | None = None) -> bool:
        """Adjusted p below alpha and a CI that excludes zero."""
        p = self.p_adjusted if self.p_adjusted is not None else self.p_value
        level = self.alpha if alpha is None else alpha
        return p is not None and p < level and not self.spans_zero


def _insufficient(difference: Difference, alpha: float, reason: str) -> Effect:
    return Effect(difference=difference, alpha=alpha, insufficient=reason)


def _check_arms(control: ArmStat, treatment: ArmStat) -> str | None:
    """Why these two arms cannot be compared, or None when they can."""
    if control.n < 2 or treatment.n < 2:
        return "an arm has fewer than 2 units"
    if control.variance <= 0.0 or treatment.variance <= 0.0:
        return "an arm has no variance (every unit has the same value)"
    return None


def welch_df(control: ArmStat, treatment: ArmStat) -> float:
    """Welch–Satterthwaite degrees of freedom on the per-arm (absolute) variances."""
    a = treatment.variance / treatment.n
    b = control.variance / control.n
    denominator = a * a / (treatment.n - 1) + b * b / (control.n - 1)
    return (a + b) ** 2 / denominator


def _two_sided(
    difference: Difference, estimate: float, se: float, df: float, alpha: float
) -> Effect:
    t_stat = abs(estimate / se)
    p_value = float(min(1.0, 2.0 * student_t.sf(t_stat, df)))
    half = float(student_t.ppf(1.0 - alpha / 2.0, df)) * se
    return Effect(
        difference=difference,
        estimate=estimate,
        se=se,
        df=df,
        p_value=p_value,
        ci_low=estimate - half,
        ci_high=estimate + half,
        alpha=alpha,
        p_adjusted=p_value,
    )


def relative_lift(control: ArmStat, treatment: ArmStat, *, alpha: float = 0.05) -> Effect:
    """(μT−μC)/|μC| with the delta-method SE (§3.1); p-value and CI from Welch's t."""
    reason = _check_arms(control, treatment)
    if reason is None and control.mean == 0.0:
        reason = "the control mean is 0"
    if reason is not None:
        return _insufficient("relative", alpha, reason)
    mc, mt = control.mean, treatment.mean
    variance = treatment.variance / (mc * mc * treatment.n) + control.variance * mt * mt / (
        mc**4 * control.n
    )
    estimate = (mt - mc) / abs(mc)
    return _two_sided(
        "relative", estimate, math.sqrt(variance), welch_df(control, treatment), alpha
    )


def absolute_lift(control: ArmStat, treatment: ArmStat, *, alpha: float = 0.05) -> Effect:
    """μT−μC with SE sqrt(vC/nC + vT/nT) (§3.2, §3.3: Welch's t-test for means)."""
    reason = _check_arms(control, treatment)
    if reason is not None:
        return _insufficient("absolute", alpha, reason)
    se = math.sqrt(control.variance / control.n + treatment.variance / treatment.n)
    return _two_sided(
        "absolute", treatment.mean - control.mean, se, welch_df(control, treatment), alpha
    )


# --------------------------------------------------------------------------- multiple comparisons


def holm(p_values: Sequence[float]) -> tuple[float, ...]:
    """Holm step-down: p̃_(j) = min(1, max_{i≤j} (m−i+1)·p_(i)), returned in input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return tuple(adjusted)


def bonferroni(p_values: Sequence[float]) -> tuple[float, ...]:
    """min(1, m·p) for each p."""
    m = len(p_values)
    return tuple(min(1.0, m * p) for p in p_values)


def adjust_family(
    effects: Sequence[Effect], method: Literal["holm", "bonferroni"] = "holm"
) -> tuple[Effect, ...]:
    """Set ``p_adjusted`` on a pre-registered family; effects without a p-value are left alone."""
    usable = [i for i, e in enumerate(effects) if e.p_value is not None]
    raw = [effects[i].p_value or 0.0 for i in usable]
    adjusted = holm(raw) if method == "holm" else bonferroni(raw)
    out = list(effects)
    for index, p in zip(usable, adjusted, strict=True):
        out[index] = replace(effects[index], p_adjusted=p)
    return tuple(out)


# --------------------------------------------------------------------------- power, MDE, sizing


def _z(alpha: float, power: float) -> tuple[float, float]:
    return float(norm.ppf(1.0 - alpha / 2.0)), float(norm.ppf(power))


def power_two_sided(effect: float, se: float, *, alpha: float = 0.05) -> float:
    """1−Φ(z₁₋α/₂−Δ/σ) + Φ(z_α/₂−Δ/σ) (GrowthBook's power-technical)."""
    z_crit = float(norm.ppf(1.0 - alpha / 2.0))
    ratio = effect / se
    return float(norm.sf(z_crit - ratio) + norm.cdf(-z_crit - ratio))


def sample_size_unpooled(
    p_control: float, relative: float, *, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Per-arm n for two equal arms: (z₁₋α/₂+z_power)²(pCqC+pTqT)/(pT−pC)² (§3.6)."""
    p_treat = p_control * (1.0 + relative)
    if not (0.0 < p_control < 1.0 and 0.0 < p_treat < 1.0) or relative == 0.0:
        raise ValueError("need 0 < pC, pT < 1 and a nonzero lift")
    za, zb = _z(alpha, power)
    spread = p_control * (1 - p_control) + p_treat * (1 - p_treat)
    return math.ceil((za + zb) ** 2 * spread / (p_treat - p_control) ** 2)


def _relative_se(p_control: float, p_treat: float, n: float) -> float:
    vc, vt = p_control * (1 - p_control), p_treat * (1 - p_treat)
    return math.sqrt(vt / (p_control**2 * n) + vc * p_treat**2 / (p_control**4 * n))


def sample_size_relative(
    p_control: float, relative: float, *, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Per-arm n at which the delta-method relative test reaches ``power`` (solved numerically)."""
    p_treat = p_control * (1.0 + relative)
    if not (0.0 < p_control < 1.0 and 0.0 < p_treat < 1.0) or relative == 0.0:
        raise ValueError("need 0 < pC, pT < 1 and a nonzero lift")

    def gap(n: float) -> float:
        return power_two_sided(relative, _relative_se(p_control, p_treat, n), alpha=alpha) - power

    root: float = optimize.brentq(gap, 2.0, 1e12, xtol=1e-6)
    return math.ceil(root)


def mde_relative(
    control: ArmStat, n_control: int, n_treatment: int, *, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """The smallest relative lift detectable with ``power``: (z₁₋α/₂+z_power)·CV·sqrt(1/nC+1/nT).

    Uses the control arm's variance for both arms (at 20 %, 1M/arm: 0.79 %). None when the
    control mean or variance is 0 or an arm is empty.
    """
    if control.mean == 0.0 or control.variance <= 0.0 or n_control < 1 or n_treatment < 1:
        return None
    za, zb = _z(alpha, power)
    cv2 = control.variance / control.mean**2
    return (za + zb) * math.sqrt(cv2 * (1.0 / n_control + 1.0 / n_treatment))


def p_threshold_n(p_control: float, relative: float, *, alpha: float = 0.05) -> int:
    """Per-arm n at which an *observed* relative lift first reaches p = alpha (relative test)."""
    p_treat = p_control * (1.0 + relative)
    crit = float(norm.ppf(1.0 - alpha / 2.0))
    se_one = _relative_se(p_control, p_treat, 1.0)
    return math.ceil((crit * se_one / abs(relative)) ** 2)
