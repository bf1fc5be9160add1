"""Suppressed addresses: who must never be mailed again, and why."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from calm_mail.store import schema
from calm_mail.store.db import IN_CHUNK, Database, chunks


@dataclass(frozen=True, slots=True, kw_only=True)
class Suppression:
    email: str
    reason: str
    source: str
    created_at: datetime


class Suppressions:
    """Suppressions keyed by (lowercased email, reason); adding one twice adds nothing."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add_suppressions(self, rows: Iterable[tuple[str, str, str]]) -> int:
        """Suppress (email, reason, source) rows; emails are lowercased. Returns how many new."""
        now = self._db.clock()
        values = (
            {"email": email.strip().lower(), "reason": reason, "source": source, "created_at": now}
            for email, reason, source in rows
        )
        return self._db.insert_ignore(schema.suppressions, values)

    def remove_suppression(self, email: str, reason: str) -> None:
        s = schema.suppressions
        with self._db.write() as conn:
            conn.execute(
                sa.delete(s).where(s.c.email == email.strip().lower(), s.c.reason == reason)
            )

    def suppressed(self, emails: Iterable[str]) -> set[str]:
        """Those of `emails` (as given) whose lowercased address is suppressed for any reason."""
        by_key: dict[str, list[str]] = {}
        for email in emails:
            by_key.setdefault(email.strip().lower(), []).append(email)
        s = schema.suppressions
        hits: set[str] = set()
        with self._db.read() as conn:
            for chunk in chunks(by_key, IN_CHUNK):
                query = sa.select(s.c.email).where(s.c.email.in_(chunk)).distinct()
                for (key,) in conn.execute(query):
                    hits.update(by_key[key])
        return hits

    def all_suppressed(self) -> set[str]:
        """Every suppressed address, lowercased."""
        with self._db.read() as conn:
            return set(conn.execute(sa.select(schema.suppressions.c.email).distinct()).scalars())

    def list_suppressions(self, limit: int | None = None) -> list[Suppression]:
        """Suppressions, newest first."""
        s = schema.suppressions
        query = sa.select(s).order_by(s.c.created_at.desc(), s.c.email, s.c.reason).limit(limit)
        with self._db.read() as conn:
            return [
                Suppression(
                    email=r.email, reason=r.reason, source=r.source, created_at=r.created_at
                )
                for r in conn.execute(query)
            ]
