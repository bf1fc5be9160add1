"""Sample-ratio mismatch: does the arm split match the configured weights?

Pearson chi-square of the observed users per arm against ``w_i / sum(w) * total`` with k-1
degrees of freedom (GrowthBook's ``check_srm``); flagged below p = 0.001, GrowthBook's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SRM_THRESHOLD = 0.001


@dataclass(frozen=True, slots=True, kw_only=True)
class SrmResult:
    chi_square: float
    p_value: float
    flagged: bool
    observed: Mapping[str, int]
    expected: Mapping[str, float]


def srm_check(
    observed: Mapping[str, int], weights: Mapping[str, float], *, threshold: float = SRM_THRESHOLD
) -> SrmResult:
    """Chi-square test of `observed` counts per arm against `weights` (any positive scale).

    Arms in `weights` missing from `observed` count as 0. With fewer than two arms or no users
    the test has nothing to say: p = 1, not flagged.
    """
    arms = list(weights)
    counts = {arm: int(observed.get(arm, 0)) for arm in arms}
    total = sum(counts.values())
    weight_sum = float(sum(weights.values()))
    expected = {arm: weights[arm] / weight_sum * total for arm in arms}
    if len(arms) < 2 or total == 0:
        return SrmResult(
            chi_square=0.0, p_value=1.0, flagged=False, observed=counts, expected=expected
        )
    # chdtrc(k, x) is chi2.sf(x, k); scipy.special imports in a third of scipy.stats' time,
    # which matters once per plan. Imported here so a plan that never gets here pays nothing.
    from scipy.special import chdtrc

    stat = sum((counts[a] - expected[a]) ** 2 / expected[a] for a in arms if expected[a] > 0)
    p_value = float(chdtrc(len(arms) - 1, stat))
    return SrmResult(
        chi_square=float(stat),
        p_value=p_value,
        flagged=p_value < threshold,
        observed=counts,
        expected=expected,
    )
