"""The ledger: one database and its repositories, one per concern.

`Ledger.connect` opens (and creates or migrates) the database; the repositories share its
engine, transactions and clock:

- `editions`: editions, their state and SendGrid batch, the audit log;
- `assignments`: sticky experiment arms and experiment seeds;
- `deliveries`: one row per recipient and its state machine (see `deliveries`);
- `suppressions`, `events`, `completions`: insert-or-ignore on their natural keys;
- `locks`: leases and advisory locks (the edition lock, `locks.edition_lock`, is built on them).

A stage takes the repository it needs, typed by the small Protocol it declares itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType

import sqlalchemy as sa

from calm_mail.errors import ConfigError
from calm_mail.store.assignments import Assignments
from calm_mail.store.completions import Completions
from calm_mail.store.db import Database, default_url, first_line, hidden, make_engine, utcnow
from calm_mail.store.deliveries import Deliveries
from calm_mail.store.editions import Editions
from calm_mail.store.events import Events
from calm_mail.store.locks import Locks
from calm_mail.store.migrate import migrate
from calm_mail.store.suppressions import Suppressions


class Ledger:
    """The ledger on one database. Thread-safe; use one per process."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = Database(engine, clock=clock)
        self.engine = engine
        self.dialect: str = self.db.dialect
        self.url_for_display: str = engine.url.render_as_string(hide_password=True)
        self.editions = Editions(self.db)
        self.assignments = Assignments(self.db)
        self.deliveries = Deliveries(self.db, self.editions)
        self.suppressions = Suppressions(self.db)
        self.events = Events(self.db)
        self.completions = Completions(self.db)
        self.locks = Locks(self.db)

    @classmethod
    def connect(cls, url: str | None = None, *, root: Path | None = None) -> Ledger:
        """Open the ledger at `url` (see `db.default_url`), creating or migrating its schema."""
        target = url or default_url(root)
        try:
            ledger = cls(make_engine(target))
        except ConfigError:  # normalize_url's: an unsupported scheme, named
            raise
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ValueError) as exc:
            raise ConfigError(
                f"CALM_MAIL_DATABASE_URL: {hidden(target)!r} is not a database "
                "URL (sqlite:///path.db or postgresql://user:pw@host/db)"
            ) from exc
        try:
            with ledger.db.write() as conn:
                migrate(conn)
        except sa.exc.OperationalError as exc:
            ledger.close()
            raise ConfigError(
                f"CALM_MAIL_DATABASE_URL: cannot open the ledger at "
                f"{ledger.url_for_display}: {first_line(exc.orig)}"
            ) from exc
        except BaseException:
            ledger.close()
            raise
        return ledger

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.url_for_display!r})"
