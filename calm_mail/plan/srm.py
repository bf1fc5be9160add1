"""Sample-ratio mismatch: do the units per arm match the configured weights?

The one SRM test of calm-mail, used by the plan summary, pre-flight and the report: Pearson χ²
of the observed units per arm against ``w_i / Σw · ΣO`` with k−1 degrees of freedom
(GrowthBook's ``check_srm``, ``shared/reference/experiment-stats.md`` §3.4), flagged below
``SRM_THRESHOLD`` (GrowthBook's default, p < 0.001).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SRM_THRESHOLD = 0.001  # GrowthBook's DEFAULT_SRM_THRESHOLD


@dataclass(frozen=True, slots=True, kw_only=True)
class SrmResult:
    """One χ² test of observed units per arm against their expected shares.

    ``tested`` says what was counted against what (``"planned split vs weights"``). Arms are in
    the order of the weights given. When the test cannot be made, ``insufficient`` says why and
    ``chi_square`` and ``p_value`` are None: never NaN, never flagged.
    """

    tested: str
    observed: Mapping[str, int]
    shares: Mapping[str, float]
    expected: Mapping[str, float]
    chi_square: float | None
    df: int
    p_value: float | None
    threshold: float
    insufficient: str | None = None

    @property
    def flagged(self) -> bool:
        return self.p_value is not None and self.p_value < self.threshold

    def describe(self) -> str:
        """``chi-square 4.000, p = 0.0455``, or why there is no test."""
        if self.chi_square is None or self.p_value is None:
            return f"no test ({self.insufficient})"
        return f"chi-square {self.chi_square:.3f}, p = {self.p_value:.3g}"


def srm_check(
    observed: Mapping[str, int],
    weights: Mapping[str, float],
    *,
    tested: str = "arm split vs weights",
    threshold: float = SRM_THRESHOLD,
) -> SrmResult:
    """χ² = Σ(O−E)²/E with E_i = w_i/Σw·ΣO and k−1 df; flagged when p < `threshold`.

    `weights` names the arms (any positive scale); an arm missing from `observed` counts 0 units
    and an observed arm that `weights` does not name is not counted.
    """
    arms = list(weights)
    counts = {arm: int(observed.get(arm, 0)) for arm in arms}
    total = sum(counts.values())
    weight_sum = sum(weights[arm] for arm in arms)
    shares = {arm: weights[arm] / weight_sum for arm in arms} if weight_sum else {}
    expected = {arm: share * total for arm, share in shares.items()}
    reason = _insufficient(weights, arms, total)
    statistic: float | None = None
    p_value: float | None = None
    if reason is None:
        # chdtrc(k, x) is chi2.sf(x, k) without importing scipy.stats, which is slow to import;
        # imported here so that a plan that never reaches the test does not pay for it.
        from scipy.special import chdtrc

        statistic = sum((counts[a] - expected[a]) ** 2 / expected[a] for a in arms)
        p_value = float(chdtrc(len(arms) - 1, statistic))
    return SrmResult(
        tested=tested,
        observed=counts,
        shares=shares,
        expected=expected,
        chi_square=statistic,
        df=max(0, len(arms) - 1),
        p_value=p_value,
        threshold=threshold,
        insufficient=reason,
    )


def _insufficient(weights: Mapping[str, float], arms: list[str], total: int) -> str | None:
    """Why the χ² test cannot be made, or None when it can."""
    if len(arms) < 2:
        return "fewer than 2 arms"
    if total == 0:
        return "no units"
    if any(weights[arm] <= 0 for arm in arms):
        return "an arm has no weight"
    return None
