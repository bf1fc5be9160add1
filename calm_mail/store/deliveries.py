"""Deliveries: one row per user of an edition, moving planned -> claimed -> sent | failed | skipped.

The rules every caller can rely on:

- a row moves only that way (a retriable failure or a released claim goes back to
  ``planned``); ``sent``, ``failed`` and ``skipped`` are final. A `mark_*` call on a row in the
  wrong state changes nothing, logs a warning and returns False;
- `claim` never hands one row to two workers, in threads or processes: on PostgreSQL the rows
  are picked with ``SELECT ... FOR UPDATE SKIP LOCKED``; on SQLite every write transaction
  starts with ``BEGIN IMMEDIATE`` so writers are serialized by the database itself;
- the plan is written insert-or-ignore on the delivery id, so a re-run never duplicates it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from calm_mail.records import DeliveryState, PlannedDelivery, require_aware
from calm_mail.store import schema
from calm_mail.store.db import IN_CHUNK, Database, chunks
from calm_mail.store.editions import Editions

log = logging.getLogger(__name__)

SHARDS = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryRow:
    """One delivery row: the plan for one user plus where its sending stands."""

    delivery_id: str
    edition_id: int
    user_id: str
    email: str
    locale: str
    arm: str
    source: str
    fallback: bool
    item_ids: tuple[str, ...]
    send_at: datetime
    timezone: str
    state: DeliveryState
    attempts: int
    message_id: str | None
    last_error: str | None
    claimed_at: datetime | None
    sent_at: datetime | None


def delivery_id_for(campaign: str, edition: str, user_id: str) -> str:
    """Deterministic, opaque id of one user's delivery of one edition: 22 url-safe chars."""
    digest = hashlib.sha256(f"{campaign}\x1f{edition}\x1f{user_id}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def shard_of(user_id: str, n: int = SHARDS) -> int:
    """The user's shard out of `n` (which must divide 1024): first 4 bytes of sha256 mod n."""
    if n < 1 or SHARDS % n:
        raise ValueError(f"shard count {n} must divide {SHARDS}")
    bucket = int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:4], "big") % SHARDS
    return bucket % n


class Deliveries:
    """The deliveries table and its state machine."""

    def __init__(self, db: Database, editions: Editions) -> None:
        self._db = db
        self._editions = editions

    def add_planned(
        self, edition_id: int, campaign: str, deliveries: Iterable[PlannedDelivery]
    ) -> int:
        """Write the plan: one row per user, insert-or-ignore, streamed in chunks that each
        commit on their own (a re-run after a crash completes the plan, never duplicates it).

        Holdout users get a row in state ``skipped`` with last_error ``holdout``, so they are
        counted like everyone else. Returns how many rows were new.
        """
        info = self._editions.get_edition_by_id(edition_id)
        if info is None:
            raise LookupError(f"no edition with id {edition_id}")
        now = self._db.clock()

        def row(p: PlannedDelivery) -> dict[str, Any]:
            if p.edition != info.edition:
                raise ValueError(
                    f"planned delivery for {p.user_id} is for edition {p.edition}, "
                    f"not {info.edition}"
                )
            holdout = p.is_holdout
            return {
                "delivery_id": delivery_id_for(campaign, p.edition, p.user_id),
                "edition_id": edition_id,
                "user_id": p.user_id,
                "email": p.email,
                "locale": p.locale,
                "arm": p.arm,
                "source": str(p.source),
                "fallback": p.fallback,
                "item_ids": orjson.dumps(list(p.item_ids)).decode(),
                "send_at": p.send_at,
                "timezone": p.timezone,
                "shard": shard_of(p.user_id),
                "state": DeliveryState.SKIPPED if holdout else DeliveryState.PLANNED,
                "attempts": 0,
                "last_error": "holdout" if holdout else None,
                "updated_at": now,
            }

        return self._db.insert_ignore(schema.deliveries, (row(p) for p in deliveries))

    def claim(
        self,
        edition_id: int,
        *,
        worker: str,
        limit: int,
        shard: tuple[int, int] | None = None,
    ) -> list[DeliveryRow]:
        """Atomically move up to `limit` planned rows to ``claimed`` and return them.

        attempts += 1, claimed_at = now, claimed_by = worker. ``shard=(k, n)`` keeps only rows
        whose user is in shard k of n (`shard_of`). No row is ever returned to two callers.
        """
        if limit <= 0:
            return []
        d = schema.deliveries
        conditions = [d.c.edition_id == edition_id, d.c.state == DeliveryState.PLANNED]
        if shard is not None:
            k, n = shard
            if n < 1 or SHARDS % n or not 0 <= k < n:
                raise ValueError(f"shard {shard}: need 0 <= k < n and n dividing {SHARDS}")
            conditions.append(d.c.shard % n == k)
        # FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite ignores it and relies on BEGIN IMMEDIATE.
        picked = (
            sa.select(d.c.delivery_id)
            .where(*conditions)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
        now = self._db.clock()
        stmt = (
            sa.update(d)
            .where(
                d.c.delivery_id.in_(sa.select(picked.c.delivery_id)),
                d.c.state == DeliveryState.PLANNED,
            )
            .values(
                state=DeliveryState.CLAIMED,
                attempts=d.c.attempts + 1,
                claimed_at=now,
                claimed_by=worker,
                updated_at=now,
            )
            .returning(*_ROW_COLUMNS)
        )
        with self._db.write() as conn:
            return [_delivery_of(values) for values in conn.execute(stmt)]

    def mark_sent(self, delivery_id: str, *, message_id: str | None) -> bool:
        """claimed -> sent. Anything else is refused (sent never goes back): returns False."""
        now = self._db.clock()
        return self._move(
            delivery_id,
            (DeliveryState.CLAIMED,),
            DeliveryState.SENT,
            message_id=message_id,
            sent_at=now,
            last_error=None,
        )

    def mark_sent_many(self, sent: Sequence[tuple[str, str | None]]) -> int:
        """claimed -> sent for many (delivery_id, message_id) pairs in one transaction: the
        engine's hot path. Rows not claimed are left alone; returns how many moved."""
        if not sent:
            return 0
        # One prepared UPDATE run by the driver's executemany (a C loop in sqlite3, a pipeline
        # in psycopg): SQLAlchemy's executemany would process every parameter set in Python,
        # which costs more per row than the rest of recording an outcome.
        with self._db.write() as conn:
            dialect = conn.dialect
            now = schema.UTCDateTime().process_bind_param(self._db.clock(), dialect)
            mark = "?" if dialect.paramstyle == "qmark" else "%s"
            sql = (
                f"UPDATE {schema.deliveries.name} SET state = {mark}, message_id = {mark}, "
                f"sent_at = {mark}, updated_at = {mark}, last_error = NULL "
                f"WHERE delivery_id = {mark} AND state = {mark}"
            )
            sent_state, claimed = str(DeliveryState.SENT), str(DeliveryState.CLAIMED)
            params = [
                (sent_state, message_id, now, now, delivery_id, claimed)
                for delivery_id, message_id in sent
            ]
            moved = conn.exec_driver_sql(sql, params).rowcount
        if moved != len(sent):
            log.warning(
                "mark_sent_many: %d of %d rows were not claimed", len(sent) - moved, len(sent)
            )
        return int(moved)

    def mark_failed(self, delivery_id: str, *, error: str, retriable: bool) -> bool:
        """claimed -> planned (retriable: it is sent again later) or -> failed (final)."""
        target = DeliveryState.PLANNED if retriable else DeliveryState.FAILED
        return self._move(delivery_id, (DeliveryState.CLAIMED,), target, last_error=error)

    def mark_skipped(self, delivery_id: str, *, reason: str) -> bool:
        """planned or claimed -> skipped (final), with `reason` as last_error."""
        return self._move(
            delivery_id,
            (DeliveryState.PLANNED, DeliveryState.CLAIMED),
            DeliveryState.SKIPPED,
            last_error=reason,
        )

    def release_claims(self, delivery_ids: Sequence[str]) -> int:
        """claimed -> planned for rows we KNOW were not sent. Returns how many moved."""
        d = schema.deliveries
        moved = 0
        with self._db.write() as conn:
            for chunk in chunks(delivery_ids, IN_CHUNK):
                result = conn.execute(
                    sa.update(d)
                    .where(d.c.delivery_id.in_(chunk), d.c.state == DeliveryState.CLAIMED)
                    .values(state=DeliveryState.PLANNED, updated_at=self._db.clock())
                )
                moved += result.rowcount
        return moved

    def delete_deliveries(self, edition_id: int) -> int:
        """Forget every delivery row of an edition (a dry run's, to plan it afresh) and audit
        it in the edition log. Never call it for an edition that mailed anyone for real: the
        rows are what stops a second email. Returns how many rows were deleted."""
        d = schema.deliveries
        with self._db.write() as conn:
            deleted = conn.execute(sa.delete(d).where(d.c.edition_id == edition_id)).rowcount
            conn.execute(
                sa.insert(schema.edition_log).values(
                    edition_id=edition_id,
                    at=self._db.clock(),
                    action="delete_deliveries",
                    detail={"deleted": deleted},
                )
            )
        return int(deleted)

    def claimed_before(self, edition_id: int, cutoff: datetime) -> list[DeliveryRow]:
        """Rows still ``claimed`` since before `cutoff`: their fate is unknown."""
        require_aware("cutoff", cutoff)
        d = schema.deliveries
        query = (
            sa.select(d)
            .where(
                d.c.edition_id == edition_id,
                d.c.state == DeliveryState.CLAIMED,
                d.c.claimed_at < cutoff,
            )
            .order_by(d.c.claimed_at, d.c.delivery_id)
        )
        with self._db.read() as conn:
            return [_delivery(row) for row in conn.execute(query)]

    def get_delivery(self, delivery_id: str) -> DeliveryRow | None:
        d = schema.deliveries
        with self._db.read() as conn:
            row = conn.execute(sa.select(d).where(d.c.delivery_id == delivery_id)).first()
        return _delivery(row) if row else None

    def iter_deliveries(
        self, edition_id: int, *, state: DeliveryState | None = None
    ) -> Iterator[DeliveryRow]:
        """Every row of the edition (optionally in one state), by delivery_id, page by page:
        no connection is held between pages, so callers may write while iterating."""
        d = schema.deliveries
        conditions = [d.c.edition_id == edition_id]
        if state is not None:
            conditions.append(d.c.state == state)
        query = sa.select(d).where(*conditions)
        for row in self._db.pages(query, (d.c.delivery_id,)):
            yield _delivery(row)

    def counts(self, edition_id: int) -> dict[tuple[str, str], int]:
        """(state, arm) -> number of rows."""
        d = schema.deliveries
        query = (
            sa.select(d.c.state, d.c.arm, sa.func.count())
            .where(d.c.edition_id == edition_id)
            .group_by(d.c.state, d.c.arm)
        )
        with self._db.read() as conn:
            return {(state, arm): n for state, arm, n in conn.execute(query)}

    def failure_reasons(self, edition_id: int) -> dict[str, int]:
        """last_error of failed and skipped rows -> number of rows."""
        d = schema.deliveries
        reason = sa.func.coalesce(d.c.last_error, "unknown")
        query = (
            sa.select(reason, sa.func.count())
            .where(
                d.c.edition_id == edition_id,
                d.c.state.in_([DeliveryState.FAILED, DeliveryState.SKIPPED]),
            )
            .group_by(reason)
        )
        with self._db.read() as conn:
            return {str(why): n for why, n in conn.execute(query)}

    def _move(
        self,
        delivery_id: str,
        sources: tuple[DeliveryState, ...],
        target: DeliveryState,
        **values: Any,
    ) -> bool:
        d = schema.deliveries
        stmt = (
            sa.update(d)
            .where(d.c.delivery_id == delivery_id, d.c.state.in_(sources))
            .values(state=target, updated_at=self._db.clock(), **values)
        )
        with self._db.write() as conn:
            moved = conn.execute(stmt).rowcount == 1
            if not moved:
                current = conn.execute(
                    sa.select(d.c.state).where(d.c.delivery_id == delivery_id)
                ).scalar()
        if not moved:
            log.warning(
                "delivery %s: refused %s -> %s (allowed from %s)",
                delivery_id,
                current or "missing",
                target,
                "/".join(sources),
            )
        return moved


def _delivery(row: sa.Row[Any]) -> DeliveryRow:
    return _delivery_of(tuple(getattr(row, name) for name in _ROW_FIELDS))


def _delivery_of(values: Sequence[Any]) -> DeliveryRow:
    """A `DeliveryRow` from the values of `_ROW_COLUMNS`, in order (the claim's hot path:
    positional, so no per-column name lookup on SQLAlchemy's Row)."""
    fields = dict(zip(_ROW_FIELDS, values, strict=True))
    fields["fallback"] = bool(fields["fallback"])
    fields["item_ids"] = tuple(orjson.loads(fields["item_ids"]))
    fields["state"] = DeliveryState(fields["state"])
    return DeliveryRow(**fields)


_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(DeliveryRow))
_ROW_COLUMNS = tuple(schema.deliveries.c[name] for name in _ROW_FIELDS)
