"""Schema migrations: ordered functions, each run once, recorded in ``schema_version``.

`migrate` is safe when several processes connect at once: the whole check-and-apply runs in
one transaction that first takes a database-wide lock (a transaction-scoped advisory lock on
PostgreSQL, ``BEGIN IMMEDIATE``'s write lock on SQLite), so a second process waits, then sees
the new version and does nothing. DDL is transactional on both databases, so a migration that
fails leaves the schema as it was.

To change the schema: edit `schema.py`, then append a migration that brings version N-1 to N
(``ALTER TABLE`` and friends). Never edit a migration that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from calm_mail.store import schema

Migration = Callable[[sa.Connection], None]

# Any fixed 64-bit number: the key of PostgreSQL's advisory lock guarding migrations.
_PG_MIGRATION_LOCK = 0x63616C6D6D696772  # "calmmigr"


def _initial(conn: sa.Connection) -> None:
    """Version 1: every table of `schema` as first released."""
    schema.metadata.create_all(conn, checkfirst=True)


def _experiments(conn: sa.Connection) -> None:
    """Version 2: the seed and weights an experiment was first run with."""
    schema.experiments.create(conn, checkfirst=True)


def _rejected_events(conn: sa.Connection) -> None:
    """Version 3: webhook events kept raw because the ledger cannot hold them as events."""
    schema.rejected_events.create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (_initial, _experiments, _rejected_events)


def current_version(conn: sa.Connection) -> int:
    """The highest applied version, 0 for an empty database."""
    if not sa.inspect(conn).has_table(schema.schema_version.name):
        return 0
    version = conn.execute(sa.select(sa.func.max(schema.schema_version.c.version))).scalar()
    return int(version or 0)


def migrate(conn: sa.Connection) -> int:
    """Bring the schema up to date inside the caller's write transaction; return the version.

    The caller's transaction must hold the database's write lock on SQLite (BEGIN IMMEDIATE).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
    version = current_version(conn)
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"the database is at schema version {version}, newer than this calm-mail "
            f"({len(MIGRATIONS)}): upgrade calm-mail"
        )
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        step(conn)
        conn.execute(
            sa.insert(schema.schema_version).values(version=number, applied_at=datetime.now(UTC))
        )
    return len(MIGRATIONS)
