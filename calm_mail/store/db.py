"""The ledger's database: engine set-up, transactions and the bulk helpers every repository uses.

The same SQLAlchemy Core code runs on SQLite (default) and PostgreSQL:

- on SQLite every write transaction starts with ``BEGIN IMMEDIATE``, so writers are serialized
  by the database itself (WAL, a busy timeout and foreign keys are switched on per connection);
- on SQLite every commit is durable (`SQLITE_SYNCHRONOUS`, FULL): the write-ahead log is synced
  to disk before the commit returns, so a committed transaction survives a power loss, not only
  a crash of the process (NORMAL, SQLite's usual WAL setting, may lose the last commits then);
- on PostgreSQL connections speak UTC and are checked before use;
- inserts are insert-or-ignore on the table's natural keys, in chunks (executemany), so a
  re-run or a repeated webhook adds nothing;
- every datetime goes in aware and comes out aware in UTC (`schema.UTCDateTime`).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from calm_mail.errors import ConfigError

CHUNK = 5000  # rows per executemany batch
# Each SQLite commit syncs the WAL to disk: the receiver answers 2xx, and the engine counts a
# row as sent, only after its transaction would survive a power loss (see the module docstring).
SQLITE_SYNCHRONOUS = "FULL"
IN_CHUNK = 1000  # values per IN (...) list

T = TypeVar("T")


# The ledger's databases, by URL scheme: SQLite, and PostgreSQL through psycopg 3.
SUPPORTED_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


def normalize_url(url: str) -> str:
    """The URL SQLAlchemy opens for `url`: psycopg 3 for PostgreSQL URLs written the usual way.

    Raises ConfigError naming CALM_MAIL_DATABASE_URL and the supported schemes when the scheme
    is none of SUPPORTED_SCHEMES (mysql://, a typo, no scheme at all). The message shows the
    scheme only, never the rest of the URL (which may hold a password).
    """
    scheme, separator, rest = url.partition("://")
    target = SUPPORTED_SCHEMES.get(scheme.lower()) if separator else None
    if target is None:
        shown = f"scheme {scheme[:40]!r}" if separator and "@" not in scheme else "no scheme"
        raise ConfigError(
            f"CALM_MAIL_DATABASE_URL: unsupported database URL ({shown}); supported: "
            "sqlite (sqlite:///path.db) and postgresql (postgresql://user@host/db)"
        )
    return f"{target}://{rest}"


def default_url(root: Path | None = None) -> str:
    """$CALM_MAIL_DATABASE_URL, else a SQLite file in the project root (or the cwd)."""
    env = os.environ.get("CALM_MAIL_DATABASE_URL")
    if env:
        return env
    base = (root or Path.cwd()).resolve()
    return f"sqlite:///{base / 'calm_mail.db'}"


def hidden(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def first_line(error: object) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def chunks(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- engine set-up


def make_engine(url: str) -> sa.Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        memory = sa.make_url(url).database in (None, "", ":memory:")
        # One shared connection for an in-memory database, or each would see its own.
        pool: dict[str, Any] = {"poolclass": sa.StaticPool} if memory else {}
        args = {"timeout": 30, "check_same_thread": False}
        engine = sa.create_engine(url, connect_args=args, **pool)
        _tune_sqlite(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"options": "-c TimeZone=UTC"})


def _use_wal(cursor: Any, attempts: int = 50) -> None:
    """Switch the file to WAL (a persistent setting: a no-op once done). Switching needs an
    exclusive lock and SQLite may refuse it at once, without the busy timeout, while another
    process opens the same new file; so it is retried briefly."""
    for attempt in range(attempts):
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() in ("wal", "memory"):
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def _tune_sqlite(engine: sa.Engine) -> None:
    """WAL, a busy timeout, foreign keys, durable commits (`SQLITE_SYNCHRONOUS`), and
    transactions that SQLAlchemy (not pysqlite) begins.

    pysqlite's own implicit BEGIN is switched off (the recipe in SQLAlchemy's SQLite docs) so
    that a write transaction can start with ``BEGIN IMMEDIATE``: it takes the write lock up
    front, waiting up to the busy timeout, instead of failing later when a read upgrades.
    """

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get("calm_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# --------------------------------------------------------------------------- the database


class Database:
    """One engine, its transactions and clock, shared by every repository of a ledger.

    `clock` is swappable (tests of leases and schedules move it); every repository reads it
    here, so one assignment moves them all.
    """

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.dialect: str = engine.dialect.name
        self.clock = clock
        self._writer = engine.execution_options(calm_write=True)
        self.insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        with self._writer.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    def insert_ignore(
        self, table: sa.Table, rows: Iterable[dict[str, Any]], *, atomic: bool = False
    ) -> int:
        """Insert-or-ignore on the table's primary/unique keys, CHUNK rows per executemany.
        Returns how many rows were new.

        Each chunk commits on its own unless `atomic`: a stream of a million planned rows
        must not hold SQLite's single write lock (and block the webhook receiver) while the
        caller's generator produces them. Re-running after a failure is safe because the
        inserts are idempotent.
        """
        stmt = self.insert(table).on_conflict_do_nothing()
        inserted = 0
        with ExitStack() as stack:
            outer = stack.enter_context(self.write()) if atomic else None
            for chunk in chunks(rows, CHUNK):
                with ExitStack() as per_chunk:
                    conn = outer or per_chunk.enter_context(self.write())
                    # Without it SQLAlchemy drops psycopg's executemany rowcount (-1).
                    conn.execution_options(preserve_rowcount=True)
                    inserted += conn.execute(stmt, chunk).rowcount
        return inserted

    def pages(
        self, query: sa.Select[Any], keys: tuple[sa.ColumnElement[Any], ...], size: int = CHUNK
    ) -> Iterator[sa.Row[Any]]:
        """Rows of `query` in `keys` order, fetched by keyset pages (`keys` must be unique).
        No connection is held between pages, so callers may write while iterating."""
        last: sa.Row[Any] | None = None
        while True:
            page_query = query.order_by(*keys).limit(size)
            if last is not None:
                bound = [sa.literal(last._mapping[k], k.type) for k in keys]
                page_query = page_query.where(sa.tuple_(*keys) > sa.tuple_(*bound))
            with self.read() as conn:
                rows = conn.execute(page_query).all()
            yield from rows
            if len(rows) < size:
                return
            last = rows[-1]
