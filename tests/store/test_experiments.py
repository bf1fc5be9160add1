"""The ledger remembers each experiment's first seed, so a changed seed can be refused."""

from __future__ import annotations

from typing import Any

import pytest

from calm_mail.campaign import Experiment
from calm_mail.errors import ConfigError
from calm_mail.plan.assign import check_experiment


def test_first_seed_wins(ledger: Any) -> None:
    assert ledger.assignments.experiment_seed("exp") is None
    ledger.assignments.record_experiment("exp", "seed-1", {"a": 0.5, "b": 0.5})
    ledger.assignments.record_experiment("exp", "seed-2", {"a": 0.9, "b": 0.1})
    assert ledger.assignments.experiment_seed("exp") == "seed-1"


def test_planner_refuses_a_changed_seed_for_the_same_experiment(ledger: Any) -> None:
    arms = [
        {"name": "a", "weight": 1, "source": "editorial"},
        {"name": "b", "weight": 1, "source": "personalize"},
    ]
    first = Experiment.model_validate({"name": "exp", "seed": "s1", "arms": arms})
    changed = Experiment.model_validate({"name": "exp", "seed": "s2", "arms": arms})
    check_experiment(ledger.assignments, first)
    check_experiment(ledger.assignments, first)  # same seed again: fine
    with pytest.raises(ConfigError, match="seed"):
        check_experiment(ledger.assignments, changed)
