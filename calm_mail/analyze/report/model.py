"""The report as a frozen tree: what `build_report` returns and every renderer reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from calm_mail.analyze.attribution import MetricDef
from calm_mail.analyze.stats import Effect
from calm_mail.plan.srm import SrmResult

VerdictKind = Literal["srm", "significant", "no_difference", "insufficient", "mixed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FunnelRow:
    arm: str
    holdout: bool
    users: int
    counts: Mapping[str, int]
    fallback_rate: float
    open_rate: float  # human opens per assigned


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmValue:
    arm: str
    n: int
    value: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """One metric, one arm against the control arm."""

    metric: str
    label: str
    arm: str
    control: str
    control_value: ArmValue
    arm_value: ArmValue
    relative: Effect
    absolute: Effect
    in_family: bool  # part of the Holm-adjusted treatment-vs-control family
    mde_relative: float | None
    doubt: str | None  # why an SRM puts this number in doubt, if it does


@dataclass(frozen=True, slots=True, kw_only=True)
class SrmCheck:
    """The SRM test of one population, and the arms the experiment does not configure."""

    population: Literal["assigned", "openers"]
    result: SrmResult
    unexpected_arms: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        return self.result.flagged or bool(self.unexpected_arms)


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleSize:
    metric: str
    baseline: float
    target_lift: float
    alpha: float
    power: float
    n_per_arm: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class HourlySeries:
    arm: str
    per_thousand: tuple[float, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    campaign: str
    experiment: str
    scope: str
    editions: tuple[str, ...]
    pooled: bool
    window_hours: float
    alpha: float
    power: float
    control: str
    verdict: str
    verdict_kind: VerdictKind
    srm: tuple[SrmCheck, ...]
    funnel: tuple[FunnelRow, ...]
    metrics: tuple[MetricDef, ...]
    comparisons: tuple[Comparison, ...]
    sample_size: SampleSize | None
    hourly: tuple[HourlySeries, ...]
    methods: tuple[str, ...]
    notes: tuple[str, ...]

    def comparisons_for(self, metric: str) -> tuple[Comparison, ...]:
        return tuple(c for c in self.comparisons if c.metric == metric)
