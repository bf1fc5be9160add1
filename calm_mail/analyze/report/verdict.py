"""The report's verdict: one honest paragraph on the primary metric, and its kind.

An SRM on assigned users replaces the verdict with "do not trust these numbers"; an SRM among
openers is named before the result; a CI that spans zero reads "no detectable difference"; a
lift is called only on its Holm-adjusted p-value.
"""

from __future__ import annotations

from collections.abc import Sequence

from calm_mail.analyze.attribution import MetricDef
from calm_mail.analyze.report.formatting import fmt_pct, p_phrase
from calm_mail.analyze.report.model import Comparison, SrmCheck, VerdictKind


def verdict(
    primary: MetricDef,
    control: str,
    srm: Sequence[SrmCheck],
    comparisons: Sequence[Comparison],
) -> tuple[str, VerdictKind]:
    """The verdict on `primary` given the SRM checks (assigned first, then openers)."""
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
