"""The registry of built-in steps: each is looked up by its name in a rule file.

A step is registered with `step(name, params)` on a function that binds its parameters to an
edition, ``bind(params, edition_data) -> fn(items, user_view)``; `fn` returns the items it keeps,
in order, and notes what it dropped (`note_dropped`) when the user is traced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from calm_mail.plan.rules.view import EditionData, UserView

StepFn = Callable[[list[str], UserView], list[str]]


class StepParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True, slots=True)
class StepKind:
    name: str
    params: type[StepParams]
    bind: Callable[[Any, EditionData], StepFn]
    doc: str


STEPS: dict[str, StepKind] = {}


def step(name: str, params: type[StepParams]) -> Callable[[Callable[..., StepFn]], Any]:
    """Register a built-in step: `bind(params, edition_data) -> fn(items, user_view)`."""

    def register(bind: Callable[..., StepFn]) -> Callable[..., StepFn]:
        STEPS[name] = StepKind(name, params, bind, (bind.__doc__ or "").strip().split("\n")[0])
        return bind

    return register


def note_dropped(view: UserView, items: Iterable[str], why: Callable[[str], str]) -> None:
    """Add `items` with their reason to the trace of a traced user (nothing otherwise)."""
    if view.dropped is not None:
        view.dropped.extend((i, why(i)) for i in items)
