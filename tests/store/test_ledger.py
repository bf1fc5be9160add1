"""The ledger as a whole: connecting, migrating, URLs, and datetimes across repositories.

Like every suite here, each test runs on SQLite and on PostgreSQL (see conftest)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from calm_mail.store import Ledger, delivery_id_for
from calm_mail.store import schema as s
from calm_mail.store.db import normalize_url
from calm_mail.store.migrate import MIGRATIONS, current_version
from tests.store.helpers import CAMPAIGN, EDITION, edition_id, planned


def test_connect_creates_schema_and_reconnect_is_idempotent(empty_ledger_url: str) -> None:
    ledger_url = empty_ledger_url
    engine = sa.create_engine(normalize_url(ledger_url))
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []
    engine.dispose()
    for _ in range(3):
        with Ledger.connect(ledger_url) as ledger, ledger.engine.connect() as conn:
            assert current_version(conn) == len(MIGRATIONS)
            tables = set(sa.inspect(conn).get_table_names())
            assert set(s.metadata.tables) <= tables
            assert conn.execute(
                sa.select(sa.func.count()).select_from(s.schema_version)
            ).scalar() == len(MIGRATIONS)


def test_connect_concurrently_on_an_empty_database(empty_ledger_url: str) -> None:
    ledger_url = empty_ledger_url
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def connect() -> None:
        try:
            barrier.wait(timeout=30)
            Ledger.connect(ledger_url).close()
        except BaseException as exc:  # collected and re-raised by the test
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with Ledger.connect(ledger_url) as ledger, ledger.engine.connect() as conn:
        assert current_version(conn) == len(MIGRATIONS)


def test_dialect_and_password_masked(ledger: Ledger) -> None:
    assert ledger.dialect in {"sqlite", "postgresql"}
    assert ledger.url_for_display.startswith(ledger.dialect)
    password = ledger.engine.url.password
    if password:
        assert f":{password}@" not in ledger.url_for_display
        assert f":{password}@" not in repr(ledger)
        assert ":***@" in ledger.url_for_display


def test_postgres_urls_use_psycopg() -> None:
    assert normalize_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_default_url_is_a_sqlite_file_in_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALM_MAIL_DATABASE_URL", raising=False)
    with Ledger.connect(None, root=tmp_path) as ledger:
        assert ledger.dialect == "sqlite"
    assert (tmp_path / "calm_mail.db").exists()


def test_datetimes_come_back_aware_utc(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    kolkata = timezone(timedelta(hours=5, minutes=30))
    send_at = datetime(2026, 11, 28, 8, 0, 0, 123456, tzinfo=kolkata)
    ledger.deliveries.add_planned(eid, CAMPAIGN, [planned("u1", send_at=send_at)])
    row = ledger.deliveries.get_delivery(delivery_id_for(CAMPAIGN, EDITION, "u1"))
    assert row is not None and row.send_at == send_at
    assert row.send_at.tzinfo is UTC and row.send_at.hour == 2 and row.send_at.minute == 30
    assert row.send_at.microsecond == 123456
    info = ledger.editions.get_edition_by_id(eid)
    assert info is not None and info.created_at.tzinfo is UTC


def test_naive_datetimes_are_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="aware"):
        list(ledger.completions.completions_between(datetime(2026, 1, 1), datetime(2026, 1, 2)))


def test_sqlite_commits_are_durable(ledger: Ledger) -> None:
    """Every pooled SQLite connection syncs the WAL at each commit (synchronous=FULL), so the
    receiver's 2xx and the engine's sent-marks survive a power loss; PostgreSQL's commits are
    durable by the server's own default (synchronous_commit=on)."""
    if ledger.dialect != "sqlite":
        with ledger.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        return
    with ledger.engine.connect() as one, ledger.engine.connect() as two:
        for conn in (one, two):
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_a_ledger_of_version_2_gains_rejected_events(ledger_url: str) -> None:
    with Ledger.connect(ledger_url) as ledger, ledger.engine.begin() as conn:
        s.rejected_events.drop(conn)  # as a calm-mail before version 3 left it
        conn.execute(sa.delete(s.schema_version).where(s.schema_version.c.version == 3))
    with Ledger.connect(ledger_url) as ledger:
        with ledger.engine.connect() as conn:
            assert current_version(conn) == 3 == len(MIGRATIONS)
            assert s.rejected_events.name in sa.inspect(conn).get_table_names()
        assert ledger.events.rejected_counts() == {}
