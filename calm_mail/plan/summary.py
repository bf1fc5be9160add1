"""What a plan adds up to: per-arm counts, fallback rates, content mix, SRM, skipped input rows.

`Tally` accumulates while the planner runs (one call per user); `PlanSummary` is its frozen
result, with `as_dict` for JSON and `format_summary` for the terminal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from calm_mail.plan.srm import SrmResult, srm_check
from calm_mail.records import Exclusion, Item, PlannedDelivery


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmSummary:
    arm: str
    source: str
    users: int
    fallback: int
    items_mean: float
    type_mix: Mapping[str, int]
    new_share: float
    kids_leaks: int

    @property
    def fallback_rate(self) -> float:
        return self.fallback / self.users if self.users else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "source": self.source,
            "users": self.users,
            "fallback": self.fallback,
            "fallback_rate": round(self.fallback_rate, 6),
            "items_mean": round(self.items_mean, 4),
            "type_mix": dict(self.type_mix),
            "new_share": round(self.new_share, 6),
            "kids_leaks": self.kids_leaks,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanSummary:
    campaign: str
    edition: str
    experiment: str
    shard: tuple[int, int] | None
    audience: int
    eligible: int
    excluded: Mapping[str, int]
    arms: Mapping[str, ArmSummary]
    srm: SrmResult
    kids_leaks: int
    dropped_by_step: Mapping[str, int]
    skips: Mapping[str, dict[str, object]]  # input name -> SkipCounter.as_dict()
    warnings: tuple[str, ...] = ()

    @property
    def planned(self) -> int:
        return sum(a.users for a in self.arms.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "edition": self.edition,
            "experiment": self.experiment,
            "shard": list(self.shard) if self.shard else None,
            "audience": self.audience,
            "eligible": self.eligible,
            "excluded": dict(sorted(self.excluded.items())),
            "arms": {name: arm.as_dict() for name, arm in self.arms.items()},
            "srm": {
                "chi_square": self.srm.chi_square,
                "p_value": self.srm.p_value,
                "flagged": self.srm.flagged,
            },
            "kids_leaks": self.kids_leaks,
            "dropped_by_step": dict(self.dropped_by_step),
            "skips": dict(self.skips),
            "warnings": list(self.warnings),
        }


@dataclass(slots=True)
class _ArmTally:
    users: int = 0
    fallback: int = 0
    # How often each item was planned, for adult and for kids profiles: one C-level
    # `Counter.update` per delivery; types, new share and kids leaks are worked out once at the
    # end from the catalog's facts (see `Tally.summary`)
    adult_items: Counter[str] = field(default_factory=Counter)
    kids_items: Counter[str] = field(default_factory=Counter)


class Tally:
    """Counts as the plan is made; `summary()` freezes them."""

    def __init__(
        self,
        arms: Mapping[str, str],
        catalog: Mapping[str, Item],
        new: Container[str],
        kids: Container[str],
    ) -> None:
        self.arm_sources = dict(arms)
        # (content type, new?, kids?) per item, for the summary
        self._facts = {i: (it.content_type, i in new, i in kids) for i, it in catalog.items()}
        self.arms = {name: _ArmTally() for name in arms}
        self.excluded: Counter[str] = Counter()
        self.audience = 0

    def add(self, outcome: PlannedDelivery | Exclusion, *, adult: bool) -> None:
        if isinstance(outcome, Exclusion):
            self.excluded[outcome.reason] += 1
            return
        arm = self.arms[outcome.arm]
        arm.users += 1
        arm.fallback += outcome.fallback
        (arm.adult_items if adult else arm.kids_items).update(outcome.item_ids)

    def summary(
        self,
        *,
        campaign: str,
        edition: str,
        experiment: str,
        weights: Mapping[str, float],
        shard: tuple[int, int] | None,
        dropped_by_step: Mapping[str, int],
        skips: Mapping[str, dict[str, object]],
        warnings: list[str],
    ) -> PlanSummary:
        arms = {name: self._arm(name, t) for name, t in self.arms.items()}
        srm = srm_check(
            {n: a.users for n, a in arms.items()}, weights, tested="planned split vs weights"
        )
        warnings = list(warnings)
        if srm.flagged:
            warnings.append(
                f"sample ratio mismatch: p = {srm.p_value:.2g} < {srm.threshold:g}; the arm "
                "split does not match the weights (changed weights? a filter that "
                "depends on the arm?)"
            )
        leaks = sum(a.kids_leaks for a in arms.values())
        return PlanSummary(
            campaign=campaign,
            edition=edition,
            experiment=experiment,
            shard=shard,
            audience=self.audience,
            eligible=self.audience - sum(self.excluded.values()),
            excluded=dict(sorted(self.excluded.items())),
            arms=arms,
            srm=srm,
            kids_leaks=leaks,
            dropped_by_step=dict(dropped_by_step),
            skips=skips,
            warnings=tuple(warnings),
        )

    def _arm(self, name: str, t: _ArmTally) -> ArmSummary:
        types: Counter[str] = Counter()
        items = new_items = kids_leaks = 0
        for counts, adult in ((t.adult_items, True), (t.kids_items, False)):
            for i, n in counts.items():
                content_type, is_new, is_kids = self._facts[i]
                types[content_type] += n
                items += n
                new_items += n if is_new else 0
                kids_leaks += n if adult and is_kids else 0
        return ArmSummary(
            arm=name,
            source=self.arm_sources[name],
            users=t.users,
            fallback=t.fallback,
            items_mean=items / t.users if t.users else 0.0,
            type_mix=dict(sorted(types.items())),
            new_share=new_items / items if items else 0.0,
            kids_leaks=kids_leaks,
        )


def format_summary(summary: PlanSummary) -> Group:
    """The plan summary for the terminal (a rich renderable)."""
    head = Text(
        f"{summary.campaign} {summary.edition}  experiment {summary.experiment}"
        + (f"  shard {summary.shard[0]}/{summary.shard[1]}" if summary.shard else ""),
        style="bold",
    )
    counts = Text(
        f"audience {summary.audience:,}  eligible {summary.eligible:,}  planned {summary.planned:,}"
    )
    parts: list[Any] = [head, counts]
    if summary.excluded:
        parts.append(
            Text(
                "excluded: "
                + ", ".join(f"{reason} {n:,}" for reason, n in summary.excluded.items())
            )
        )
    parts.append(_arm_table(summary))
    srm = summary.srm
    status = " (MISMATCH)" if srm.flagged else "" if srm.insufficient else " (ok)"
    parts.append(Text(f"SRM {srm.describe()}{status}", style="red" if srm.flagged else "green"))
    leak_style = "bold red" if summary.kids_leaks else "green"
    parts.append(Text(f"kids content to adults: {summary.kids_leaks}", style=leak_style))
    if summary.dropped_by_step:
        parts.append(
            Text(
                "items dropped by step: "
                + ", ".join(f"{step} {n:,}" for step, n in summary.dropped_by_step.items())
            )
        )
    for name, skips in summary.skips.items():
        skipped = skips.get("skipped") or {}
        if isinstance(skipped, dict) and skipped:
            line = f"skipped {name} rows: " + ", ".join(f"{r} {n:,}" for r, n in skipped.items())
            parts.append(Text(line, style="yellow"))
    parts += [Text(f"warning: {w}", style="yellow") for w in summary.warnings]
    return Group(*parts)


def _arm_table(summary: PlanSummary) -> Group:
    table = Table(show_edge=False, pad_edge=False)
    for col in ("arm", "source", "users", "fallback", "items/email", "new", "kids"):
        table.add_column(col, justify="left" if col in ("arm", "source") else "right", no_wrap=True)
    mixes = []
    for arm in summary.arms.values():
        table.add_row(
            arm.arm,
            arm.source,
            f"{arm.users:,}",
            f"{arm.fallback_rate:.1%}",
            f"{arm.items_mean:.2f}",
            f"{arm.new_share:.0%}",
            str(arm.kids_leaks),
        )
        if arm.type_mix:
            mixes.append(Text(f"  {arm.arm} mix: {_mix(arm.type_mix)}"))
    return Group(table, *mixes)


def _mix(type_mix: Mapping[str, int], top: int = 3) -> str:
    """The `top` content types by share, e.g. ``sleep_story 31%, meditation 22%, ...``."""
    total = sum(type_mix.values())
    ranked = sorted(type_mix.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{t} {n / total:.0%}" for t, n in ranked[:top]) if total else ""
    return text + (", ..." if len(ranked) > top else "")
