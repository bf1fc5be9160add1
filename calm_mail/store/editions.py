"""Editions: one row per (campaign, edition) with its state, SendGrid batch and audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import EllipsisType
from typing import Any

import sqlalchemy as sa

from calm_mail.store import schema
from calm_mail.store.db import Database

EDITION_STATES = frozenset({"planned", "sending", "sent", "paused", "cancelled", "failed"})


@dataclass(frozen=True, slots=True, kw_only=True)
class EditionInfo:
    """One edition of one campaign, as the ledger knows it."""

    edition_id: int
    campaign: str
    edition: str
    experiment: str
    state: str  # planned | sending | sent | paused | cancelled | failed
    batch_id: str | None
    scheduled_status: str | None  # SendGrid scheduled-send status: pause | cancel | None
    preflight: dict[str, Any] | None
    summary: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class EditionLogEntry:
    """One audited action on an edition (cancel, pause, resume, preflight, ...)."""

    edition_id: int
    at: datetime
    action: str
    detail: dict[str, Any] | None


class Editions:
    """The editions table and the edition log."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def ensure_edition(self, campaign: str, edition: str, *, experiment: str) -> EditionInfo:
        """The edition's row, created in state ``planned`` when missing. Idempotent."""
        now = self._db.clock()
        e = schema.editions
        with self._db.write() as conn:
            conn.execute(
                self._db.insert(e)
                .values(
                    campaign=campaign,
                    edition=edition,
                    experiment=experiment,
                    state="planned",
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["campaign", "edition"])
            )
        info = self.get_edition(campaign, edition)
        assert info is not None
        return info

    def get_edition(self, campaign: str, edition: str) -> EditionInfo | None:
        e = schema.editions
        return self._one(sa.select(e).where(e.c.campaign == campaign, e.c.edition == edition))

    def get_edition_by_id(self, edition_id: int) -> EditionInfo | None:
        e = schema.editions
        return self._one(sa.select(e).where(e.c.edition_id == edition_id))

    def get_edition_state(self, edition_id: int) -> str | None:
        """The edition's state (cheap: the send engine polls it to honour pause and cancel)."""
        e = schema.editions
        with self._db.read() as conn:
            return conn.execute(sa.select(e.c.state).where(e.c.edition_id == edition_id)).scalar()

    def list_editions(self, campaign: str) -> list[EditionInfo]:
        """Every edition of the campaign, newest first."""
        e = schema.editions
        query = sa.select(e).where(e.c.campaign == campaign).order_by(e.c.edition.desc())
        with self._db.read() as conn:
            return [_edition(row) for row in conn.execute(query)]

    def update_edition(
        self,
        edition_id: int,
        *,
        state: str | None = None,
        batch_id: str | None = None,
        scheduled_status: str | EllipsisType | None = ...,
        preflight: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        """Set the given fields; None leaves a field alone, except `scheduled_status`, where
        None clears it and leaving it out (``...``) leaves it alone."""
        if state is not None and state not in EDITION_STATES:
            raise ValueError(f"edition state {state!r} is not one of {sorted(EDITION_STATES)}")
        given = {"state": state, "batch_id": batch_id, "preflight": preflight, "summary": summary}
        values: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if scheduled_status is not ...:
            values["scheduled_status"] = scheduled_status
        values["updated_at"] = self._db.clock()
        e = schema.editions
        with self._db.write() as conn:
            result = conn.execute(sa.update(e).where(e.c.edition_id == edition_id).values(**values))
        if result.rowcount == 0:
            raise LookupError(f"no edition with id {edition_id}")

    def claim_batch_id(self, edition_id: int, batch_id: str) -> str:
        """Set the edition's SendGrid batch id unless one is set already; return the one that
        holds. Several sender processes (shards) may create a batch at once: the first write
        wins and every process sends under it (an unused batch id costs nothing)."""
        e = schema.editions
        with self._db.write() as conn:
            conn.execute(
                sa.update(e)
                .where(e.c.edition_id == edition_id, e.c.batch_id.is_(None))
                .values(batch_id=batch_id, updated_at=self._db.clock())
            )
            winner = conn.execute(
                sa.select(e.c.batch_id).where(e.c.edition_id == edition_id)
            ).scalar()
        if winner is None:
            raise LookupError(f"no edition with id {edition_id}")
        return str(winner)

    def last_sent_edition(self, campaign: str, before: str) -> EditionInfo | None:
        """The latest edition of `campaign` keyed before `before` that mailed anyone
        (at least one delivery ``sent``), whatever its own state says."""
        e, d = schema.editions, schema.deliveries
        mailed = sa.exists().where(d.c.edition_id == e.c.edition_id, d.c.state == "sent")
        query = (
            sa.select(e)
            .where(e.c.campaign == campaign, e.c.edition < before, mailed)
            .order_by(e.c.edition.desc())
            .limit(1)
        )
        return self._one(query)

    def log_action(
        self, edition_id: int, action: str, detail: dict[str, Any] | None = None
    ) -> None:
        """Audit one action on an edition (cancel, pause, resume, preflight, ...)."""
        values = {
            "edition_id": edition_id,
            "at": self._db.clock(),
            "action": action,
            "detail": detail,
        }
        with self._db.write() as conn:
            conn.execute(sa.insert(schema.edition_log).values(**values))

    def edition_log(self, edition_id: int) -> list[EditionLogEntry]:
        """The edition's audited actions, oldest first."""
        t = schema.edition_log
        query = sa.select(t).where(t.c.edition_id == edition_id).order_by(t.c.at, t.c.entry_id)
        with self._db.read() as conn:
            return [
                EditionLogEntry(edition_id=r.edition_id, at=r.at, action=r.action, detail=r.detail)
                for r in conn.execute(query)
            ]

    def _one(self, query: sa.Select[Any]) -> EditionInfo | None:
        with self._db.read() as conn:
            row = conn.execute(query).first()
        return _edition(row) if row else None


def _edition(row: sa.Row[Any]) -> EditionInfo:
    return EditionInfo(
        edition_id=row.edition_id,
        campaign=row.campaign,
        edition=row.edition,
        experiment=row.experiment,
        state=row.state,
        batch_id=row.batch_id,
        scheduled_status=row.scheduled_status,
        preflight=row.preflight,
        summary=row.summary,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
