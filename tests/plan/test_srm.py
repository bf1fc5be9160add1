"""The SRM check against scipy's chi-square test and hand-computed values."""

from __future__ import annotations

import pytest
from scipy.stats import chisquare

from calm_mail.plan.srm import srm_check


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


def test_known_values() -> None:
    # (5100-5000)^2/5000 * 2 = 4.0; chi2.sf(4, 1) = 0.0455
    result = srm_check({"a": 5100, "b": 4900}, {"a": 50, "b": 50})
    assert result.chi_square == pytest.approx(4.0)
    assert result.p_value == pytest.approx(0.04550026, rel=1e-6)
    assert not result.flagged
    assert srm_check({"a": 5300, "b": 4700}, {"a": 50, "b": 50}).flagged  # chi2 = 36


def test_empty_arms_and_single_arm() -> None:
    assert srm_check({}, {"a": 1, "b": 1}).p_value == 1.0
    assert not srm_check({"a": 10}, {"a": 1}).flagged
    missing = srm_check({"a": 100}, {"a": 1, "b": 1})
    assert missing.observed == {"a": 100, "b": 0} and missing.flagged
