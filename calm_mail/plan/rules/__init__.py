"""The content rules engine: an ordered list of named built-in steps from ``rules/*.toml``.

A rule file is a list of steps, each a built-in looked up by name with its parameters::

    [[steps]]
    name = "only_new"
    days = 7

Loading checks every step at once (`loading`) and raises `RuleError` naming the file, the step
and the key. `RuleSet.bind` then prepares per-edition sets once (the new items, each item's
language, the collections), so applying the rules to one user costs a few set look-ups per
item. The same rules run for every arm, so arms differ only in where their candidates come
from. After the steps, hard guards run whatever the file says: no kids item for an adult
profile, no item twice, never more than the campaign's ``max_items``.

The modules: `view` (what a step sees of the edition and the user), `registry` (steps by name),
`item_filters` and `list_steps` (the built-in steps), `ruleset` (a file's steps, bound to an
edition), `loading` (reading and checking a file).
"""

from calm_mail.plan.rules.item_filters import KNOWN_TYPES, OnlyNew, Types, kids_items, new_items
from calm_mail.plan.rules.list_steps import Take
from calm_mail.plan.rules.loading import (
    check_rules,
    contradictions,
    load_campaign_rules,
    load_rules,
    parse_steps,
)
from calm_mail.plan.rules.registry import STEPS, StepFn, StepParams, step
from calm_mail.plan.rules.ruleset import BoundRules, RuleSet, RuleSpec
from calm_mail.plan.rules.view import EditionData, UserView, diversify_seed, language_of

__all__ = [
    "KNOWN_TYPES",
    "STEPS",
    "BoundRules",
    "EditionData",
    "OnlyNew",
    "RuleSet",
    "RuleSpec",
    "StepFn",
    "StepParams",
    "Take",
    "Types",
    "UserView",
    "check_rules",
    "contradictions",
    "diversify_seed",
    "kids_items",
    "language_of",
    "load_campaign_rules",
    "load_rules",
    "new_items",
    "parse_steps",
    "step",
]
