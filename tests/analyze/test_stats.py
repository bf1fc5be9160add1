"""The statistics against independent implementations and the reference's known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ttest_ind_from_stats
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.multitest import multipletests

from calm_mail.analyze.stats import (
    ArmStat,
    absolute_lift,
    adjust_family,
    bonferroni,
    holm,
    mde_relative,
    mean_stat,
    p_threshold_n,
    power_two_sided,
    proportion_stat,
    relative_lift,
    sample_size_relative,
    sample_size_unpooled,
)

# gbstats 0.8.0 TwoSidedTTest on ProportionStatistic: ((nC, xC), (nT, xT)) ->
# relative estimate, CI low, CI high, relative p, absolute p.
GBSTATS_PROPORTIONS = [
    (
        (1_000_000, 200_000),
        (1_000_000, 202_000),
        0.010000000000000009,
        0.004418295853106654,
        0.015581704146893364,
        0.000445746189804197,
        0.00041722865287652233,
    ),
    (
        (5000, 400),
        (5100, 460),
        0.12745098039215683,
        -0.01709628343600464,
        0.27199824422031826,
        0.08395479960978336,
        0.06625444667469282,
    ),
    (
        (120, 30),
        (110, 20),
        -0.2727272727272727,
        -0.6406285741070877,
        0.09517402865254232,
        0.14547777485059932,
        0.20792632268179068,
    ),
    (
        (40000, 12000),
        (39000, 11900),
        0.01709401709401722,
        -0.004443691948719897,
        0.038631726136754335,
        0.1198060168343853,
        0.11671599500138274,
    ),
]


@pytest.mark.parametrize(
    ("control", "treatment", "lift", "low", "high", "p_rel", "p_abs"), GBSTATS_PROPORTIONS
)
def test_proportions_match_gbstats_values(
    control: tuple[int, int],
    treatment: tuple[int, int],
    lift: float,
    low: float,
    high: float,
    p_rel: float,
    p_abs: float,
) -> None:
    c, t = proportion_stat(*control), proportion_stat(*treatment)
    rel = relative_lift(c, t)
    assert rel.estimate == pytest.approx(lift, rel=1e-9)
    assert rel.ci_low == pytest.approx(low, rel=1e-7)
    assert rel.ci_high == pytest.approx(high, rel=1e-7)
    assert rel.p_value == pytest.approx(p_rel, rel=1e-6)
    assert absolute_lift(c, t).p_value == pytest.approx(p_abs, rel=1e-6)


def test_mean_metric_matches_gbstats_value() -> None:
    # gbstats SampleMeanStatistic(n=3000, sum=2400, sum_squares=5200) vs (2900, 2500, 5600)
    c, t = mean_stat(3000, 2400.0, 5200.0), mean_stat(2900, 2500.0, 5600.0)
    rel = relative_lift(c, t)
    assert rel.estimate == pytest.approx(0.0775862068965516, rel=1e-9)
    assert (rel.ci_low, rel.ci_high) == pytest.approx((0.006858113358427148, 0.14831430043467606))
    assert rel.p_value == pytest.approx(0.031560015109195705, rel=1e-6)


def test_live_gbstats_agrees_on_a_grid() -> None:
    # gbstats pins pandas<2 and numpy<2, so it cannot be a dev dependency; its numbers are
    # embedded above, and this runs when it is installed by hand (pip install --no-deps).
    gb = pytest.importorskip("gbstats.frequentist.tests", reason="gbstats is not installed")
    from gbstats.models.statistics import ProportionStatistic

    rng = np.random.default_rng(7)
    for _ in range(200):
        n_c, n_t = (int(v) for v in rng.integers(50, 200_000, 2))
        x_c, x_t = int(rng.integers(1, n_c)), int(rng.integers(1, n_t))
        ours = relative_lift(proportion_stat(n_c, x_c), proportion_stat(n_t, x_t))
        theirs = gb.TwoSidedTTest(
            ProportionStatistic(sum=x_c, n=n_c), ProportionStatistic(sum=x_t, n=n_t)
        ).compute_result()
        assert ours.estimate == pytest.approx(theirs.expected, rel=1e-9, abs=1e-12)
        assert ours.p_value == pytest.approx(theirs.p_value, rel=1e-6, abs=1e-12)
        assert [ours.ci_low, ours.ci_high] == pytest.approx(theirs.ci, rel=1e-6, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    n_c=st.integers(2, 10**6),
    n_t=st.integers(2, 10**6),
    m_c=st.floats(-50, 50),
    m_t=st.floats(-50, 50),
    s_c=st.floats(0.01, 20),
    s_t=st.floats(0.01, 20),
)
def test_absolute_mean_lift_is_scipy_welch(
    n_c: int, n_t: int, m_c: float, m_t: float, s_c: float, s_t: float
) -> None:
    c = ArmStat(n=n_c, mean=m_c, variance=s_c**2, kind="mean")
    t = ArmStat(n=n_t, mean=m_t, variance=s_t**2, kind="mean")
    ours = absolute_lift(c, t)
    ref = ttest_ind_from_stats(m_t, s_t, n_t, m_c, s_c, n_c, equal_var=False)
    assert ours.estimate is not None and ours.se is not None
    assert ours.estimate / ours.se == pytest.approx(ref.statistic, rel=1e-9, abs=1e-9)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    n_c=st.integers(1000, 10**6),
    n_t=st.integers(1000, 10**6),
    p_c=st.floats(0.01, 0.99),
    p_t=st.floats(0.01, 0.99),
)
def test_absolute_proportion_lift_is_statsmodels_wald(
    n_c: int, n_t: int, p_c: float, p_t: float
) -> None:
    x_c, x_t = max(1, round(n_c * p_c)), max(1, round(n_t * p_t))
    x_c, x_t = min(x_c, n_c - 1), min(x_t, n_t - 1)
    ours = absolute_lift(proportion_stat(n_c, x_c), proportion_stat(n_t, x_t))
    ref = sm_proportion.test_proportions_2indep(x_t, n_t, x_c, n_c, method="wald", compare="diff")
    assert ours.estimate is not None and ours.se is not None and ours.p_value is not None
    assert ours.estimate / ours.se == pytest.approx(ref.statistic, rel=1e-9, abs=1e-9)
    # t (ours) and z (statsmodels) p-values differ by < 1e-3 once n > ~1,000 per arm (§3).
    assert abs(ours.p_value - ref.pvalue) < 1e-3


# --------------------------------------------------------------------------- sizing, §3.6


@pytest.mark.parametrize(
    ("baseline", "lift", "unpooled", "delta", "bonferroni_n", "first_p05"),
    [
        (0.20, 0.01, 630_258, 636_567, 763_245, 311_554),
        (0.30, 0.01, 367_320, 371_000, 444_827, 181_579),
        (0.20, 0.034, 55_003, 56_881, 66_608, None),
        (0.30, 0.034, 31_986, 33_081, 38_735, None),
    ],
)
def test_sample_sizes_match_the_reference_table(
    baseline: float,
    lift: float,
    unpooled: int,
    delta: int,
    bonferroni_n: int,
    first_p05: int | None,
) -> None:
    assert sample_size_unpooled(baseline, lift) == unpooled
    assert sample_size_relative(baseline, lift) == delta
    assert sample_size_unpooled(baseline, lift, alpha=0.025) == bonferroni_n
    if first_p05 is not None:
        assert p_threshold_n(baseline, lift) == first_p05


@pytest.mark.parametrize(
    ("baseline", "n", "mde"),
    [
        (0.20, 500_000, 0.0112),
        (0.20, 1_000_000, 0.0079),
        (0.30, 500_000, 0.0086),
        (0.30, 1_000_000, 0.0061),
    ],
)
def test_mde_matches_the_reference(baseline: float, n: int, mde: float) -> None:
    value = mde_relative(proportion_stat(n, round(n * baseline)), n, n)
    assert value is not None and round(value, 4) == mde


def test_power_at_the_solved_sample_size_is_the_target() -> None:
    n = sample_size_relative(0.2, 0.01)
    se = relative_lift(proportion_stat(n, round(n * 0.2)), proportion_stat(n, round(n * 0.202))).se
    assert se is not None
    assert power_two_sided(0.01, se) == pytest.approx(0.8, abs=2e-3)


def test_sizing_refuses_impossible_inputs() -> None:
    for args in ((0.0, 0.01), (0.2, 0.0), (0.9, 0.5)):
        with pytest.raises(ValueError):
            sample_size_unpooled(*args)
        with pytest.raises(ValueError):
            sample_size_relative(*args)
    assert mde_relative(proportion_stat(100, 0), 100, 100) is None


# --------------------------------------------------------------------------- degenerate arms


@pytest.mark.parametrize(
    ("control", "treatment"),
    [
        ((1000, 0), (1000, 10)),  # zero conversions in control
        ((1000, 10), (1000, 0)),  # ... in treatment
        ((1000, 1000), (1000, 990)),  # everyone converted
        ((1, 1), (1000, 10)),  # a one-unit arm
        ((0, 0), (1000, 10)),  # an empty arm
    ],
)
def test_degenerate_arms_are_insufficient_not_nan(
    control: tuple[int, int], treatment: tuple[int, int]
) -> None:
    c, t = proportion_stat(*control), proportion_stat(*treatment)
    for effect in (relative_lift(c, t), absolute_lift(c, t)):
        assert not effect.ok and effect.insufficient
        assert effect.estimate is None and effect.p_value is None
        assert effect.spans_zero and not effect.significant()


def test_zero_control_mean_is_insufficient_for_the_relative_lift() -> None:
    c = ArmStat(n=100, mean=0.0, variance=1.0, kind="mean")
    t = ArmStat(n=100, mean=0.5, variance=1.0, kind="mean")
    assert relative_lift(c, t).insufficient == "the control mean is 0"
    assert absolute_lift(c, t).ok


@settings(max_examples=300, deadline=None)
@given(
    n_c=st.integers(0, 10**7), n_t=st.integers(0, 10**7), f_c=st.floats(0, 1), f_t=st.floats(0, 1)
)
def test_any_counts_give_finite_numbers_or_insufficient(
    n_c: int, n_t: int, f_c: float, f_t: float
) -> None:
    c, t = proportion_stat(n_c, int(n_c * f_c)), proportion_stat(n_t, int(n_t * f_t))
    for effect in (relative_lift(c, t), absolute_lift(c, t)):
        if effect.ok:
            numbers = (effect.estimate, effect.se, effect.p_value, effect.ci_low, effect.ci_high)
            assert all(v is not None and math.isfinite(v) for v in numbers)
            assert effect.p_value is not None and 0.0 <= effect.p_value <= 1.0
        else:
            assert effect.estimate is None


def test_counts_outside_the_arm_are_refused() -> None:
    with pytest.raises(ValueError):
        proportion_stat(10, 11)
    with pytest.raises(ValueError):
        ArmStat(n=10, mean=float("nan"), variance=1.0, kind="mean")


# --------------------------------------------------------------------------- Holm, Bonferroni


@settings(max_examples=15, deadline=None)  # multipletests is slow to call
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_holm_and_bonferroni_match_statsmodels(p_values: list[float]) -> None:
    assert holm(p_values) == pytest.approx(tuple(multipletests(p_values, method="holm")[1]))
    assert bonferroni(p_values) == pytest.approx(
        tuple(multipletests(p_values, method="bonferroni")[1])
    )


def test_adjust_family_leaves_insufficient_effects_alone() -> None:
    good = relative_lift(proportion_stat(10_000, 2000), proportion_stat(10_000, 2100))
    other = relative_lift(proportion_stat(10_000, 2000), proportion_stat(10_000, 2060))
    bad = relative_lift(proportion_stat(10_000, 0), proportion_stat(10_000, 10))
    adjusted = adjust_family([good, bad, other])
    assert adjusted[1] == bad
    expected = multipletests([good.p_value, other.p_value], method="holm")[1]
    assert (adjusted[0].p_adjusted, adjusted[2].p_adjusted) == pytest.approx(tuple(expected))


# --------------------------------------------------------------------------- coverage


def test_relative_ci_covers_the_true_lift_in_about_95_percent_of_runs() -> None:
    """Simulated binomial arms with a known true relative lift of +5 %: CI coverage ~95 %."""
    n, p_c, true_lift = 40_000, 0.2, 0.05
    rng = np.random.default_rng(20261128)
    covered = 0
    for _ in range(100):
        c = proportion_stat(n, int(rng.binomial(n, p_c)))
        t = proportion_stat(n, int(rng.binomial(n, p_c * (1 + true_lift))))
        effect = relative_lift(c, t)
        assert effect.ci_low is not None and effect.ci_high is not None
        covered += effect.ci_low <= true_lift <= effect.ci_high
    assert 88 <= covered <= 100


def test_mean_metric_ci_covers_the_true_lift_too() -> None:
    """Per-user days engaged (Poisson), true relative lift +4 %: Welch/delta coverage ~95 %."""
    n, rate, true_lift = 20_000, 1.5, 0.04
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(100):
        y_c = rng.poisson(rate, n).astype(float)
        y_t = rng.poisson(rate * (1 + true_lift), n).astype(float)
        effect = relative_lift(
            mean_stat(n, y_c.sum(), (y_c**2).sum()), mean_stat(n, y_t.sum(), (y_t**2).sum())
        )
        assert effect.ci_low is not None and effect.ci_high is not None
        covered += effect.ci_low <= true_lift <= effect.ci_high
    assert 88 <= covered <= 100
