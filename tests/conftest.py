"""Fixtures every stage's tests share: a ledger on SQLite and on PostgreSQL.

`ledger_url` is parametrized over both databases, so a test that asks for it (or for `ledger`)
runs once per database, like APScheduler's job-store suite. PostgreSQL needs
``CALM_MAIL_TEST_POSTGRES_URL`` (a role allowed to CREATE DATABASE, e.g.
``postgresql://calm:calm@127.0.0.1:5432/calm_test``); each test gets a fresh database,
dropped afterwards. Without the URL the PostgreSQL half is skipped with a reason, except
under CI (``CI`` set), where a missing URL is a failure: CI must test both.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from calm_mail.store import Ledger

POSTGRES_ENV = "CALM_MAIL_TEST_POSTGRES_URL"


def _server_url() -> str:
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {POSTGRES_ENV} is not: CI must test PostgreSQL too")
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql://u:p@host/db)")
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def _admin(server: str, statement: sql.Composed) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(statement)


@contextmanager
def _fresh_database(prefix: str, template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (copied from `template` when given), dropped on exit."""
    server = _server_url()
    name = f"{prefix}_{secrets.token_hex(6)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    _admin(server, create)
    try:
        yield _with_database(server, name)
    finally:
        _drop(server, name)


def _drop(server: str, name: str, attempts: int = 40) -> None:
    """Drop the database, connections and all. FORCE cannot end a backend the test's role does
    not own (an autovacuum worker that just started on the new database, under load), so that
    refusal is waited out for a few seconds: the worker ends by itself."""
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    for attempt in range(attempts):
        try:
            _admin(server, drop)
            return
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
            if attempt == attempts - 1:
                raise
            time.sleep(0.25)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """Name of a migrated, unused database that per-test databases are copied from (a copy
    is cheaper than migrating every test's database)."""
    with _fresh_database("calm_tpl") as url:
        Ledger.connect(url).close()
        yield url.rpartition("/")[2]


@pytest.fixture
def postgres_database(postgres_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test, at the current schema version."""
    with _fresh_database("calm_test", postgres_template) as url:
        yield url


@pytest.fixture
def empty_postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (for tests of schema creation)."""
    with _fresh_database("calm_test") as url:
        yield url


_DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=_DATABASES)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a ledger database of this test's own: a new SQLite file, or a fresh
    PostgreSQL database (already migrated). Connect with `Ledger.connect(ledger_url)`."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_database"))


@pytest.fixture(params=_DATABASES)
def empty_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Like `ledger_url`, but the database is empty on both (no schema yet)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("empty_postgres_database"))


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    """A connected (migrated) Ledger on `ledger_url`, closed after the test."""
    with Ledger.connect(ledger_url) as connected:
        yield connected


# ----------------------------------------------------------------------------- headless Chromium

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def chromium_driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium (Debian's chromium + chromium-driver) driven by Selenium for the
    whole session. Skips with a reason where Chromium is missing, except under CI, where that
    is a failure: .ci/run installs it."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        message = (
            f"headless Chromium tests need {', '.join(missing)} (apt: chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI is set: {message}")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
