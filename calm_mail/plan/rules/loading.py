"""Reading a rule file: every problem at once (unknown step, unknown or bad parameter, a rule
that contradicts the campaign), as `RuleError` lines naming the file, the step and the key."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from calm_mail.campaign import Campaign, read_toml
from calm_mail.errors import RuleError
from calm_mail.plan.rules.item_filters import Types
from calm_mail.plan.rules.list_steps import Take
from calm_mail.plan.rules.registry import STEPS
from calm_mail.plan.rules.ruleset import RuleSet, RuleSpec


def load_rules(path: Path | str) -> RuleSet:
    """Read and check a rule file. Raises `RuleError` listing every problem with its step/key."""
    path = Path(path)
    data = read_toml(path, RuleError)
    specs, problems = parse_steps(str(path), data)
    if problems:
        raise RuleError(problems)
    return RuleSet(path=str(path), steps=tuple(specs), description=str(data.get("description", "")))


def parse_steps(path: str, data: Mapping[str, Any]) -> tuple[list[RuleSpec], list[str]]:
    """Every step of a parsed rule file, and every problem found (never stops at the first)."""
    problems = [
        f"{path}: {key}: unknown key (a typo?); a rule file has `description` and [[steps]]"
        for key in data
        if key not in ("steps", "description")
    ]
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        return [], [*problems, f"{path}: steps: no [[steps]] (expected a list of named steps)"]
    specs = []
    for index, raw in enumerate(steps, start=1):
        spec, found = _parse_step(path, index, raw)
        problems += found
        if spec is not None:
            specs.append(spec)
    return specs, problems


def _parse_step(path: str, index: int, raw: Any) -> tuple[RuleSpec | None, list[str]]:
    where = f"{path}: step {index}"
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        return None, [f"{where}: name: every step needs a name (one of {_known()})"]
    name = raw["name"]
    kind = STEPS.get(name)
    if kind is None:
        return None, [f"{where}: name: unknown step {name!r}; known steps: {_known()}"]
    params = {k: v for k, v in raw.items() if k != "name"}
    try:
        return RuleSpec(index=index, name=name, params=kind.params.model_validate(params)), []
    except ValidationError as exc:
        return None, [_param_problem(f"{where} ({name})", err) for err in exc.errors()]


def _param_problem(where: str, err: Any) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(parameters)"
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown parameter (a typo?)"
    return f"{where}: {key}: {message}"


def _known() -> str:
    return ", ".join(sorted(STEPS))


def contradictions(rules: RuleSet, campaign: Campaign) -> list[str]:
    """Rules that cannot hold together with the campaign's content settings."""
    problems = []
    content = campaign.content
    for spec in rules.steps:
        where = f"{rules.path}: step {spec.index} ({spec.name})"
        if isinstance(spec.params, Take):
            if spec.params.max > content.max_items:
                problems.append(
                    f"{where}: max: {spec.params.max} exceeds the campaign's "
                    f"content.max_items ({content.max_items})"
                )
            if spec.params.min < content.min_items:
                problems.append(
                    f"{where}: min: {spec.params.min} is below the campaign's "
                    f"content.min_items ({content.min_items})"
                )
    only = [
        set(s.params.types)
        for s in rules.steps
        if s.name == "only_types" and isinstance(s.params, Types)
    ]
    banned = {
        t
        for s in rules.steps
        if s.name == "exclude_types" and isinstance(s.params, Types)
        for t in s.params.types
    }
    if only and not (set.intersection(*only) - banned):
        problems.append(
            f"{rules.path}: types: only_types and exclude_types leave no content type at all"
        )
    return problems


def load_campaign_rules(campaign: Campaign) -> RuleSet:
    """The campaign's rule set, checked against the campaign. Raises `RuleError`."""
    rules = load_rules(campaign.rules_path)
    problems = contradictions(rules, campaign)
    if problems:
        raise RuleError(problems)
    return rules


def check_rules(campaign: Campaign) -> list[str]:
    """Every problem of the campaign's rule set, as `file: step: key: what` lines (for validate)."""
    try:
        load_campaign_rules(campaign)
    except RuleError as exc:
        return list(exc.problems)
    return []
