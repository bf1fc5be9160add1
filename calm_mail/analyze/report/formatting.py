"""How the report writes its numbers, shared by the sentences, the terminal and the HTML page."""

from __future__ import annotations

from calm_mail.analyze.stats import Effect


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


def fmt_abs(effect: Effect, kind: str) -> str:
    """An absolute lift: percentage points for a proportion, the metric's unit for a mean."""
    if not effect.ok or effect.estimate is None:
        return "n/a"
    if kind == "proportion":
        return f"{100 * effect.estimate:+.2f} pp"
    return f"{effect.estimate:+.3f}"
