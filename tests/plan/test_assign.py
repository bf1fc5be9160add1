"""Assignment matches the GrowthBook SDK (hash v2) and stays sticky in the store."""

from __future__ import annotations

import random

import pytest
from growthbook import core as gb
from hypothesis import given
from hypothesis import strategies as st

from calm_mail.campaign import Arm, Experiment
from calm_mail.errors import ConfigError
from calm_mail.plan.assign import (
    Assigner,
    MemoryStore,
    bucket_ranges,
    choose_variation,
    fnv1a32,
    gbhash,
    record_exposures,
    refuse_changed_seed,
)
from calm_mail.records import ContentSource

WEIGHT_SETS = [(50, 50), (30, 30, 30, 10), (1, 1, 1), (90, 10), (45, 45, 10), (7, 2, 1)]


def experiment(
    weights: tuple[float, ...], seed: str = "winddown-2026-q4", name: str = "exp"
) -> Experiment:
    arms = tuple(
        Arm(name=f"arm{i}", weight=w, source=ContentSource.EDITORIAL) for i, w in enumerate(weights)
    )
    return Experiment(name=name, seed=seed, arms=arms)


def ids(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    made = [str(100000 + i) for i in range(n // 2)]
    made += [f"u-{rng.getrandbits(40):x}" for _ in range(n // 4)]
    made += [
        "".join(rng.choice("aéß日本🙂-_0") for _ in range(rng.randint(1, 12)))
        for _ in range(n - len(made))
    ]
    return made


@pytest.mark.parametrize("weights", WEIGHT_SETS)
def test_arms_match_the_growthbook_sdk(weights: tuple[float, ...]) -> None:
    exp = experiment(weights)
    assigner = Assigner(exp)
    normalized = [w / sum(weights) for w in weights]
    sdk_ranges = gb.getBucketRanges(len(weights), 1, normalized)
    assert bucket_ranges(weights) == sdk_ranges
    for user_id in ids(3000):
        n = gb.gbhash(exp.seed, user_id, 2)
        assert assigner.hash(user_id) == n == gbhash(exp.seed, user_id, 2)
        expected = gb.chooseVariation(n, sdk_ranges)
        assert assigner.arm_for(user_id) == f"arm{expected}"
        assert choose_variation(n, bucket_ranges(weights)) == expected


@given(st.text(max_size=30), st.text(max_size=30))
def test_hash_matches_the_sdk_for_any_text(seed: str, user_id: str) -> None:
    assert fnv1a32(seed + user_id) == gb.fnv1a32(seed + user_id)
    assert gbhash(seed, user_id, 2) == gb.gbhash(seed, user_id, 2)
    assert gbhash(seed, user_id, 1) == gb.gbhash(seed, user_id, 1)
    if seed and "\x00" not in seed:  # a NUL seed is refused by the campaign (see below)
        assigner = Assigner(experiment((50, 50), seed=seed))
        assert assigner.hash(user_id) == gb.gbhash(seed, user_id, 2)
    elif seed:  # the ledger stores the seed: PostgreSQL cannot hold a NUL (#16)
        with pytest.raises(ValueError, match="NUL"):
            experiment((50, 50), seed=seed)


def test_fnv1a32_published_vectors() -> None:
    # The FNV-1a 32-bit test vectors of the reference implementation.
    assert fnv1a32("") == 0x811C9DC5
    assert fnv1a32("a") == 0xE40C292C
    assert fnv1a32("foobar") == 0xBF9CF968
    assert fnv1a32("bar", fnv1a32("foo")) == fnv1a32("foobar")
    assert gbhash("", "a", 3) is None


def test_split_follows_the_weights() -> None:
    assigner = Assigner(experiment((30, 30, 30, 10)))
    counts: dict[str, int] = {}
    for i in range(20000):
        arm = assigner.arm_for(f"user-{i}")
        counts[arm] = counts.get(arm, 0) + 1
    assert abs(counts["arm3"] / 20000 - 0.10) < 0.01
    assert abs(counts["arm0"] / 20000 - 0.30) < 0.015


def test_store_keeps_the_first_arm() -> None:
    store = MemoryStore()
    assert store.assignments.record_assignments("e", "2026-W47", [("u1", "a"), ("u2", "b")]) == 2
    assert store.assignments.record_assignments("e", "2026-W48", [("u1", "b"), ("u3", "a")]) == 1
    assert store.assignments.get_assignments("e", ["u1", "u2", "u3", "u4"]) == {
        "u1": "a",
        "u2": "b",
        "u3": "a",
    }
    assert store.assignments.get_assignments("other", ["u1"]) == {}


def test_a_changed_seed_is_refused_unless_the_name_changes() -> None:
    arms = MemoryStore().assignments
    refuse_changed_seed(arms, experiment((50, 50), seed="s1"))  # nothing ran yet: fine
    assert arms.experiment_seed("exp") is None  # refusing reads, never records
    assert record_exposures(arms, experiment((50, 50), seed="s1"), "2026-W47", [("u1", "a")]) == 1
    assert arms.experiment_seed("exp") == "s1"
    refuse_changed_seed(arms, experiment((60, 40), seed="s1"))  # new weights: allowed, sticky
    with pytest.raises(ConfigError, match=r"experiment.seed: .*'s1'.*new name"):
        refuse_changed_seed(arms, experiment((50, 50), seed="s2"), source="c.toml")
    with pytest.raises(ConfigError, match=r"experiment.seed"):
        record_exposures(arms, experiment((50, 50), seed="s2"), "2026-W48", [("u2", "b")])
    assert arms.get_assignments("exp", ["u2"]) == {}  # a refused seed records no exposure
    record_exposures(arms, experiment((50, 50), seed="s2", name="exp-v2"), "2026-W48", [])
    assert arms.experiment_seed("exp-v2") == "s2"
