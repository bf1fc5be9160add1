"""The one SRM test (plan summary, pre-flight, report) against scipy and hand-computed values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from calm_mail.plan.srm import SRM_THRESHOLD, srm_check


@pytest.mark.parametrize(
    ("observed", "weights"),
    [
        ({"a": 5000, "b": 5000}, {"a": 50, "b": 50}),
        ({"a": 5100, "b": 4900}, {"a": 1, "b": 1}),
        ({"a": 3000, "b": 3100, "c": 2950, "h": 950}, {"a": 30, "b": 30, "c": 30, "h": 10}),
        ({"a": 10, "b": 90}, {"a": 0.5, "b": 0.5}),
    ],
)
def test_matches_scipy(observed: dict[str, int], weights: dict[str, float]) -> None:
    result = srm_check(observed, weights)
    total = sum(observed.values())
    expected = [weights[a] / sum(weights.values()) * total for a in weights]
    ref = chisquare([observed[a] for a in weights], expected)
    assert result.chi_square == pytest.approx(ref.statistic)
    assert result.p_value == pytest.approx(ref.pvalue)
    assert result.flagged == (ref.pvalue < 0.001)


@settings(max_examples=100, deadline=None)
@given(
    counts=st.lists(st.integers(1, 10**6), min_size=2, max_size=4),
    weights=st.lists(st.floats(0.05, 10), min_size=4, max_size=4),
)
def test_matches_scipy_chisquare_on_any_split(counts: list[int], weights: list[float]) -> None:
    arms = [f"a{i}" for i in range(len(counts))]
    w = dict(zip(arms, weights, strict=False))
    result = srm_check(dict(zip(arms, counts, strict=True)), w)
    total = sum(counts)
    expected = [w[a] / sum(w.values()) * total for a in arms]
    ref = chisquare(counts, expected)
    assert result.chi_square == pytest.approx(ref.statistic, rel=1e-9, abs=1e-9)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)


def test_known_values() -> None:
    # (5100-5000)^2/5000 * 2 = 4.0; chi2.sf(4, 1) = 0.0455
    result = srm_check({"a": 5100, "b": 4900}, {"a": 50, "b": 50})
    assert result.chi_square == pytest.approx(4.0)
    assert result.p_value == pytest.approx(0.04550026, rel=1e-6)
    assert result.df == 1 and result.threshold == SRM_THRESHOLD
    assert result.shares == {"a": 0.5, "b": 0.5}
    assert result.expected == {"a": 5000.0, "b": 5000.0}
    assert not result.flagged
    assert result.describe() == "chi-square 4.000, p = 0.0455"
    assert srm_check({"a": 5300, "b": 4700}, {"a": 50, "b": 50}).flagged  # chi2 = 36


def test_flags_a_planted_imbalance_and_not_a_fair_split() -> None:
    weights = {"control": 50.0, "personalized": 50.0}
    assert srm_check({"control": 50_600, "personalized": 49_400}, weights).flagged
    assert not srm_check({"control": 50_100, "personalized": 49_900}, weights).flagged
    skewed = srm_check({"a": 3300, "b": 3300, "c": 3700}, {"a": 1, "b": 1, "c": 1})
    assert skewed.flagged and skewed.df == 2


def test_the_threshold_decides_the_flag() -> None:
    observed, weights = {"a": 5100, "b": 4900}, {"a": 1, "b": 1}  # p = 0.0455
    assert srm_check(observed, weights, threshold=0.05).flagged
    assert not srm_check(observed, weights, threshold=0.01).flagged


def test_says_what_it_tests_and_keeps_the_arms_in_the_order_given() -> None:
    result = srm_check({"b": 1, "a": 2}, {"b": 1, "a": 1}, tested="planned split vs weights")
    assert result.tested == "planned split vs weights"
    assert list(result.observed) == list(result.expected) == list(result.shares) == ["b", "a"]


def test_without_units_or_arms_there_is_no_test() -> None:
    empty = srm_check({}, {"a": 1.0, "b": 1.0})
    assert empty.insufficient == "no units"
    assert empty.p_value is None and empty.chi_square is None
    assert not empty.flagged
    assert empty.describe() == "no test (no units)"
    assert srm_check({"a": 5}, {"a": 1.0}).insufficient == "fewer than 2 arms"
    assert not srm_check({"a": 10}, {"a": 1}).flagged
    assert srm_check({"a": 5, "b": 5}, {"a": 1.0, "b": 0.0}).insufficient == "an arm has no weight"


def test_an_arm_missing_from_the_counts_counts_zero() -> None:
    missing = srm_check({"a": 100}, {"a": 1, "b": 1})
    assert missing.observed == {"a": 100, "b": 0} and missing.flagged
