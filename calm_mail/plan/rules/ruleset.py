"""A rule file's steps (`RuleSet`), and the same bound to one edition (`BoundRules`), which
applies them to one user's candidates and then runs the hard guards."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from calm_mail.campaign import Content
from calm_mail.plan.rules.item_filters import kids_items
from calm_mail.plan.rules.list_steps import Take
from calm_mail.plan.rules.registry import STEPS, StepFn, StepParams, note_dropped
from calm_mail.plan.rules.view import EditionData, UserView
from calm_mail.records import Item, TraceStep


@dataclass(frozen=True, slots=True)
class RuleSpec:
    index: int  # 1-based, as people count steps in a file
    name: str
    params: StepParams


@dataclass(frozen=True, slots=True)
class RuleSet:
    path: str
    steps: tuple[RuleSpec, ...]
    description: str = ""

    def take(self) -> Take | None:
        found = [s.params for s in self.steps if isinstance(s.params, Take)]
        return found[-1] if found else None

    def bind(self, data: EditionData, content: Content) -> BoundRules:
        """Prepare every step for one edition (the per-edition sets are built here, once)."""
        take = self.take()
        fns = [(s.name, STEPS[s.name].bind(s.params, data)) for s in self.steps]
        if not self.steps or self.steps[0].name != "only_new":
            fns.insert(0, ("in_catalog", _in_catalog(frozenset(data.catalog))))
        return BoundRules(
            steps=fns,
            kids=kids_items(data.catalog),
            catalog=data.catalog,
            min_items=take.min if take else content.min_items,
            max_items=min(take.max, content.max_items) if take else content.max_items,
        )


def _in_catalog(known: frozenset[str]) -> StepFn:
    """The first step when the file's is not ``only_new`` (which keeps only catalog items):
    every later step may look an item up in the catalog."""

    def in_catalog(items: list[str], view: UserView) -> list[str]:
        kept = list(filter(known.__contains__, items))
        if len(kept) != len(items):
            note_dropped(view, (i for i in items if i not in known), _not_in_catalog)
        return kept

    return in_catalog


def _not_in_catalog(item_id: str) -> str:
    return "not in the catalog"


@dataclass(slots=True)
class BoundRules:
    """A rule set ready for one edition. `apply` is the per-user hot path."""

    steps: list[tuple[str, StepFn]]
    kids: frozenset[str]
    catalog: Mapping[str, Item]
    min_items: int
    max_items: int
    dropped_by_step: dict[str, int] = field(default_factory=dict)
    guard_hits: int = 0  # items the hard guards removed after the steps (should stay 0)

    GUARD: ClassVar[str] = "guard"

    def drops_in_order(self) -> dict[str, int]:
        """`dropped_by_step` in the rule file's order (a step never dropping is left out)."""
        names = dict.fromkeys(name for name, _ in self.steps)
        return {n: self.dropped_by_step[n] for n in names if self.dropped_by_step.get(n)}

    def apply(
        self, candidates: Sequence[str], view: UserView, trace: list[TraceStep] | None = None
    ) -> list[str]:
        """Run every step on `candidates`, then the hard guards; the items kept, in order.
        Counts each step's drops in `dropped_by_step`, and appends one TraceStep per step to
        `trace` when given."""
        items = list(candidates)
        counts = self.dropped_by_step
        for name, fn in self.steps:
            before = len(items)
            items = fn(items, view)
            if len(items) != before:
                counts[name] = counts.get(name, 0) + before - len(items)
            if trace is not None:
                trace.append(self._trace_step(name, before, items, view))
        return self._guard(items, view, trace)

    def _guard(self, items: list[str], view: UserView, trace: list[TraceStep] | None) -> list[str]:
        before = len(items)
        kept = list(dict.fromkeys(items))
        if not view.user.is_kids_profile and not self.kids.isdisjoint(kept):
            kept = [i for i in kept if i not in self.kids]
        if len(kept) > self.max_items:
            kept = kept[: self.max_items]
        if len(kept) != before:
            self.guard_hits += before - len(kept)
            if trace is not None:
                gone = [i for i in items if i not in kept]
                trace.append(
                    TraceStep(
                        step=self.GUARD,
                        note="hard guard: kids, duplicates, max",
                        dropped=tuple((i, "hard guard") for i in gone),
                    )
                )
        return kept

    @staticmethod
    def _trace_step(name: str, before: int, items: list[str], view: UserView) -> TraceStep:
        dropped = tuple(view.dropped or ())
        if view.dropped is not None:
            view.dropped.clear()
        return TraceStep(step=name, dropped=dropped, note=f"{before} -> {len(items)} items")
