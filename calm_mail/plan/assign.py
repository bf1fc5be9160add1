"""Experiment arms: GrowthBook hash v2, bucket ranges from weights, and sticky assignment.

`gbhash(seed, user_id, 2)` is GrowthBook's hash version 2 (``growthbook.core.gbhash``): FNV-1a
32-bit over ``seed + user_id``, hashed again over the decimal string of that value, modulo
10000, divided by 10000. Like the SDKs, a non-ASCII string is hashed over its UTF-16 code units
(for ASCII text the code units are the bytes, so both agree). Anyone can cross-check an arm with
the GrowthBook SDK: ``chooseVariation(gbhash(seed, id, 2), getBucketRanges(n, 1, weights))``.

Assignment is sticky: a user's first recorded arm (in the `AssignmentStore`, the ledger) wins
over the hash, so changing the weights later never moves an exposed user. Changing the *seed*
of an experiment would re-randomize everyone; `refuse_changed_seed` refuses it unless the
experiment gets a new name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from calm_mail.campaign import Experiment
from calm_mail.errors import ConfigError

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193
MASK = 0xFFFFFFFF


def fnv1a32(text: str, start: int = FNV_OFFSET) -> int:
    """FNV-1a 32-bit over `text` (bytes when ASCII, else UTF-16 code units), from state `start`.

    Passing the state reached after a prefix continues the hash, so a fixed seed is hashed once.
    """
    h = start
    if text.isascii():
        for b in text.encode():
            h = ((h ^ b) * FNV_PRIME) & MASK
        return h
    data = text.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(data), 2):
        h = ((h ^ (data[i] | (data[i + 1] << 8))) * FNV_PRIME) & MASK
    return h


def gbhash(seed: str, value: str, version: int = 2) -> float | None:
    """GrowthBook's hash: v2 (the one calm-mail uses) and the legacy v1; None for others."""
    if version == 2:
        return (fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000
    if version == 1:
        return (fnv1a32(value + seed) % 1000) / 1000
    return None


def bucket_ranges(weights: Sequence[float], coverage: float = 1.0) -> list[tuple[float, float]]:
    """Cumulative [lo, hi) ranges, computed exactly as GrowthBook's ``getBucketRanges``.

    `weights` are normalized to sum to 1 first (campaign files say 50/50 or 45/45/10).
    """
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"weights must be non-negative with a positive sum: {list(weights)}")
    coverage = min(max(coverage, 0.0), 1.0)
    cumulative = 0.0
    ranges = []
    for w in (w / total for w in weights):
        start = cumulative
        cumulative += w
        ranges.append((start, start + coverage * w))
    return ranges


def choose_variation(n: float, ranges: Sequence[tuple[float, float]]) -> int:
    """The index of the first range holding `n`, or -1 (GrowthBook's ``chooseVariation``)."""
    for i, (lo, hi) in enumerate(ranges):
        if lo <= n < hi:
            return i
    return -1


class Assigner:
    """The hash arm of a user for one experiment: a pure function of (seed, user id)."""

    __slots__ = ("_arms", "_bounds", "_seed_state", "experiment", "seed")

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment.name
        self.seed = experiment.seed
        self._arms = tuple(arm.name for arm in experiment.arms)
        ranges = bucket_ranges([arm.weight for arm in experiment.arms])
        self._bounds = tuple(ranges)
        # FNV-1a is a stream: hash the seed once and continue over each id. An ASCII char's
        # byte equals its UTF-16 code unit, so mixing the two encodings agrees with the SDK.
        self._seed_state = fnv1a32(experiment.seed)

    def hash(self, user_id: str) -> float:
        """`gbhash(seed, user_id, 2)`, with the seed's part of the hash precomputed."""
        inner = fnv1a32(user_id, self._seed_state)
        return (fnv1a32(str(inner)) % 10000) / 10000

    def arm_for(self, user_id: str) -> str:
        return self.arm_at(self.hash(user_id))

    def arm_at(self, n: float) -> str:
        """The arm whose bucket range holds hash value `n`."""
        for arm, (lo, hi) in zip(self._arms, self._bounds, strict=True):
            if lo <= n < hi:
                return arm
        # Float sums can leave the top of [0, 1) uncovered by a hair; the SDK says -1 there.
        return self._arms[-1]


class ArmReader(Protocol):
    """What planning reads to keep arms sticky: the arms already given, the seed remembered."""

    def get_assignments(self, experiment: str, user_ids: Sequence[str]) -> dict[str, str]: ...

    def experiment_seed(self, experiment: str) -> str | None: ...


class AssignmentStore(ArmReader, Protocol):
    """What recording a plan writes: first exposures and a new experiment's seed."""

    def record_assignments(
        self, experiment: str, edition: str, pairs: Iterable[tuple[str, str]]
    ) -> int: ...

    def record_experiment(
        self, experiment: str, seed: str, weights: Mapping[str, float]
    ) -> None: ...


@dataclass
class MemoryAssignments:
    """Sticky arms and experiment seeds in memory (the ledger's `assignments`, for tests)."""

    arms: dict[str, dict[str, str]] = field(default_factory=dict)  # experiment -> user -> arm
    exposures: dict[str, dict[str, str]] = field(default_factory=dict)  # experiment -> user -> ed.
    experiments: dict[str, tuple[str, dict[str, float]]] = field(default_factory=dict)

    def get_assignments(self, experiment: str, user_ids: Sequence[str]) -> dict[str, str]:
        known = self.arms.get(experiment, {})
        return {u: known[u] for u in user_ids if u in known}

    def record_assignments(
        self, experiment: str, edition: str, pairs: Iterable[tuple[str, str]]
    ) -> int:
        known = self.arms.setdefault(experiment, {})
        seen = self.exposures.setdefault(experiment, {})
        inserted = 0
        for user_id, arm in pairs:
            if user_id not in known:  # first exposure wins, never overwritten
                known[user_id] = arm
                seen[user_id] = edition
                inserted += 1
        return inserted

    def experiment_seed(self, experiment: str) -> str | None:
        found = self.experiments.get(experiment)
        return found[0] if found else None

    def record_experiment(self, experiment: str, seed: str, weights: Mapping[str, float]) -> None:
        self.experiments.setdefault(experiment, (seed, dict(weights)))


@dataclass
class MemorySuppressions:
    """Suppressed addresses in memory (the ledger's `suppressions`, for tests)."""

    emails: set[str] = field(default_factory=set)  # lowercased addresses

    def suppressed(self, emails: Iterable[str]) -> set[str]:
        return {e for e in emails if e.strip().lower() in self.emails}


class NoEditions:
    """An edition history with nothing mailed yet (the ledger's `editions`, for tests)."""

    def last_sent_edition(self, campaign: str, before: str) -> None:
        return None


@dataclass
class MemoryStore:
    """The planner's store in memory, shaped like the ledger (one repository per concern):
    for previews without a ledger, and for tests."""

    assignments: MemoryAssignments = field(default_factory=MemoryAssignments)
    suppressions: MemorySuppressions = field(default_factory=MemorySuppressions)
    editions: NoEditions = field(default_factory=NoEditions)


def refuse_changed_seed(store: ArmReader, experiment: Experiment, *, source: str = "") -> None:
    """Refuse a changed seed for an experiment that already ran.

    A new seed re-randomizes every user, so the exposed users' history no longer matches
    their arm; the safe way to re-randomize is a new experiment name (a new, clean test).
    """
    stored = store.experiment_seed(experiment.name)
    if stored is not None and stored != experiment.seed:
        where = f"{source}: " if source else ""
        raise ConfigError(
            f"{where}experiment.seed: experiment {experiment.name!r} already ran with seed "
            f"{stored!r}; a new seed {experiment.seed!r} would re-randomize users who were "
            "already exposed. Keep the old seed, or give the experiment a new name "
            "(experiment.name) to start a new test."
        )


def record_exposures(
    store: AssignmentStore,
    experiment: Experiment,
    edition: str,
    pairs: Iterable[tuple[str, str]],
    *,
    source: str = "",
) -> int:
    """Remember a new experiment's seed and the arms of the users exposed for the first time
    (a changed seed is refused again: another run may have recorded one meanwhile)."""
    refuse_changed_seed(store, experiment, source=source)
    if store.experiment_seed(experiment.name) is None:
        store.record_experiment(experiment.name, experiment.seed, experiment.weights)
    return store.record_assignments(experiment.name, edition, pairs)
