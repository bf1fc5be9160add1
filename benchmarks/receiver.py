"""Issue 6: the Event Webhook receiver's events/s with signatures checked, next to the bare
``add_events`` insert rate, on SQLite and (when a server is configured) PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from benchmarks.core import BenchContext, Figure, Goal, Section
from benchmarks.track_receiver import TARGET_EVENTS_PER_S, bench_receiver

POSTGRES_ENVS = ("CALM_MAIL_BENCH_POSTGRES_URL", "CALM_MAIL_TEST_POSTGRES_URL")


def postgres_server() -> str | None:
    """The first configured PostgreSQL server URL (a role allowed to CREATE DATABASE)."""
    return next((os.environ[name] for name in POSTGRES_ENVS if os.environ.get(name)), None)


@contextmanager
def throwaway_postgres(server: str) -> Iterator[str]:
    """A new, empty database on `server`, dropped (even if in use) on exit."""
    url = make_url(server).set(drivername="postgresql")
    name = f"calm_bench_{secrets.token_hex(6)}"
    admin = url.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


@contextmanager
def throwaway_sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/events.db"


def _figure(result: dict[str, Any]) -> Figure:
    dialect = result["dialect"]
    missing = result["events"] - result["stored_via_receiver"]
    return Figure(
        key=f"receiver.{dialect}_events_per_s",
        label=f"receiver ({dialect}): events/s, signed",
        value=result["receiver_events_per_s"],
        unit="events/s",
        baseline=result["bare_insert_events_per_s"],
        baseline_label="bare add_events",
        goal=Goal(target=TARGET_EVENTS_PER_S, text=f">= {TARGET_EVENTS_PER_S:,} events/s"),
        note=f"{missing} events not stored!" if missing else "",
    )


def run_receiver(ctx: BenchContext) -> Section:
    n, batch = ctx.sizes.events, ctx.sizes.event_batch
    section = Section(
        name="receiver",
        title=f"Event Webhook receiver (issue 6) - {n:,} events in batches of {batch}",
        method="wall time (time.perf_counter): signed batches posted over one keep-alive "
        "connection to `calm-mail events serve` in its own process; baseline: "
        "ledger.events.add_events of rows of the same shape in this process",
    )
    ctx.say(f"receiver: SQLite, {n:,} events")
    with throwaway_sqlite() as url:
        result = bench_receiver(url, n, batch)
    section.details["sqlite"] = result
    section.figures.append(_figure(result))
    server = postgres_server()
    if server is None:
        section.figures.append(
            Figure(
                key="receiver.postgresql_events_per_s",
                label="receiver (postgresql): events/s, signed",
                value=None,
                unit="events/s",
                note=f"skipped: set {POSTGRES_ENVS[0]} (or {POSTGRES_ENVS[1]})",
            )
        )
        return section
    ctx.say(f"receiver: PostgreSQL (a throwaway database), {n:,} events")
    with throwaway_postgres(server) as url:
        result = bench_receiver(url, n, batch)
    section.details["postgresql"] = result
    section.figures.append(_figure(result))
    return section
