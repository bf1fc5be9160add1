"""In-app completions: which user finished which item when (what the report attributes)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

import sqlalchemy as sa

from calm_mail.records import Completion, require_aware
from calm_mail.store import schema
from calm_mail.store.db import Database


class Completions:
    """Completions, idempotent on (user_id, item_id, completed_at)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add_completions(self, rows: Iterable[Completion], *, source: str) -> int:
        """Store in-app completions, idempotent on (user_id, item_id, completed_at)."""
        now = self._db.clock()
        values = (
            {
                "user_id": c.user_id,
                "item_id": c.item_id,
                "completed_at": c.completed_at,
                "source": source,
                "imported_at": now,
            }
            for c in rows
        )
        return self._db.insert_ignore(schema.completions, values)

    def completions_between(self, start: datetime, end: datetime) -> Iterator[Completion]:
        """Completions with start <= completed_at < end, oldest first."""
        require_aware("start", start)
        require_aware("end", end)
        return self._completions_between(start, end)

    def _completions_between(self, start: datetime, end: datetime) -> Iterator[Completion]:
        c = schema.completions
        query = sa.select(c.c.user_id, c.c.item_id, c.c.completed_at).where(
            c.c.completed_at >= start, c.c.completed_at < end
        )
        keys = (c.c.completed_at, c.c.user_id, c.c.item_id)
        for row in self._db.pages(query, keys):
            yield Completion(
                user_id=row.user_id, item_id=row.item_id, completed_at=row.completed_at
            )
