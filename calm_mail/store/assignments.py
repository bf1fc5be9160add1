"""Assignments: each user's sticky arm per experiment, and each experiment's seed and weights."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import sqlalchemy as sa

from calm_mail.store import schema
from calm_mail.store.db import IN_CHUNK, Database, chunks


class Assignments:
    """Experiment assignments (first exposure wins) and experiments (first write wins)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get_assignments(self, experiment: str, user_ids: Sequence[str]) -> dict[str, str]:
        """user_id -> arm for those of `user_ids` already assigned in `experiment`."""
        a = schema.assignments
        found: dict[str, str] = {}
        with self._db.read() as conn:
            for chunk in chunks(user_ids, IN_CHUNK):
                query = sa.select(a.c.user_id, a.c.arm).where(
                    a.c.experiment == experiment, a.c.user_id.in_(chunk)
                )
                found.update((row.user_id, row.arm) for row in conn.execute(query))
        return found

    def record_assignments(
        self, experiment: str, edition: str, pairs: Iterable[tuple[str, str]]
    ) -> int:
        """Record (user_id, arm) first exposures; an existing assignment is never changed.
        Returns how many were new."""
        now = self._db.clock()
        rows = (
            {
                "experiment": experiment,
                "user_id": user_id,
                "arm": arm,
                "first_edition": edition,
                "assigned_at": now,
            }
            for user_id, arm in pairs
        )
        return self._db.insert_ignore(schema.assignments, rows)

    def experiment_seed(self, experiment: str) -> str | None:
        """The seed `experiment` was first run with, or None for a new experiment."""
        t = schema.experiments
        with self._db.read() as conn:
            seed = conn.execute(sa.select(t.c.seed).where(t.c.experiment == experiment)).scalar()
        return None if seed is None else str(seed)

    def record_experiment(self, experiment: str, seed: str, weights: Mapping[str, float]) -> None:
        """Remember an experiment's seed and weights; the first write wins."""
        row = {
            "experiment": experiment,
            "seed": seed,
            "weights": dict(weights),
            "created_at": self._db.clock(),
        }
        self._db.insert_ignore(schema.experiments, iter([row]))
