"""The `assignments` repository contract (sticky arms, each experiment's first seed), on SQLite
and PostgreSQL (see conftest)."""

from __future__ import annotations

import pytest

from calm_mail.campaign import Experiment
from calm_mail.errors import ConfigError
from calm_mail.plan.assign import record_exposures, refuse_changed_seed
from calm_mail.store import Ledger
from tests.store.helpers import EDITION


def test_assignments_are_sticky_first_exposure_wins(ledger: Ledger) -> None:
    assert (
        ledger.assignments.record_assignments(
            "exp", "2026-W47", [("u1", "control"), ("u2", "perso")]
        )
        == 2
    )
    assert (
        ledger.assignments.record_assignments("exp", "2026-W48", [("u1", "perso"), ("u3", "perso")])
        == 1
    )
    got = ledger.assignments.get_assignments("exp", ["u1", "u2", "u3", "u4"])
    assert got == {"u1": "control", "u2": "perso", "u3": "perso"}
    assert ledger.assignments.get_assignments("other", ["u1"]) == {}
    assert ledger.assignments.record_assignments("other", "2026-W48", [("u1", "perso")]) == 1


def test_get_assignments_chunks_large_lookups(ledger: Ledger) -> None:
    pairs = [(f"u{i}", "a" if i % 3 else "b") for i in range(2500)]
    assert ledger.assignments.record_assignments("exp", EDITION, iter(pairs)) == 2500
    got = ledger.assignments.get_assignments("exp", [u for u, _ in pairs] + ["nobody"])
    assert got == dict(pairs)


def test_first_seed_wins(ledger: Ledger) -> None:
    assert ledger.assignments.experiment_seed("exp") is None
    ledger.assignments.record_experiment("exp", "seed-1", {"a": 0.5, "b": 0.5})
    ledger.assignments.record_experiment("exp", "seed-2", {"a": 0.9, "b": 0.1})
    assert ledger.assignments.experiment_seed("exp") == "seed-1"


def test_planner_refuses_a_changed_seed_for_the_same_experiment(ledger: Ledger) -> None:
    arms = [
        {"name": "a", "weight": 1, "source": "editorial"},
        {"name": "b", "weight": 1, "source": "personalize"},
    ]
    first = Experiment.model_validate({"name": "exp", "seed": "s1", "arms": arms})
    changed = Experiment.model_validate({"name": "exp", "seed": "s2", "arms": arms})
    record_exposures(ledger.assignments, first, "2026-W47", [("u1", "a")])
    record_exposures(ledger.assignments, first, "2026-W48", [])  # same seed again: fine
    with pytest.raises(ConfigError, match="seed"):
        refuse_changed_seed(ledger.assignments, changed)
    with pytest.raises(ConfigError, match="seed"):
        record_exposures(ledger.assignments, changed, "2026-W48", [("u2", "b")])
    assert ledger.assignments.get_assignments("exp", ["u1", "u2"]) == {"u1": "a"}
