"""The Event Webhook receiver's events/s with signatures checked, next to the bare
``add_events`` insert rate, on SQLite and (when a server is configured) PostgreSQL.

The receiver runs as the real ``calm-mail events serve`` in its own process (uvicorn on
127.0.0.1, signatures checked), so client and server do not share one interpreter lock. Signed
batches are posted with one keep-alive httpx client, as SendGrid posts them. The bare rate is
``ledger.add_events`` on rows of the same shape, in this process.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from benchmarks.core import BenchContext, Figure, Goal, Section
from calm_mail.sandbox.webhook import WebhookSigner
from calm_mail.store import Ledger
from calm_mail.track.normalize import normalize
from calm_mail.track.server import cli_server

POSTGRES_ENVS = ("CALM_MAIL_BENCH_POSTGRES_URL", "CALM_MAIL_TEST_POSTGRES_URL")
TARGET_EVENTS_PER_S = 5_000
_KINDS = ("processed", "delivered", "open", "open", "click", "deferred")


def bench_receiver(ledger_url: str, n_events: int = 50_000, batch: int = 500) -> dict[str, object]:
    """Post `n_events` signed events in batches of `batch`; returns rates and a pass flag."""
    run = uuid.uuid4().hex[:12]
    bodies = [
        orjson.dumps(_raw_events(f"r{run}", start, min(batch, n_events - start)))
        for start in range(0, n_events, batch)
    ]
    signer = WebhookSigner()
    with _receiver_process(ledger_url, signer.public_key) as url:
        receiver_s = _post_all(url, bodies, signer)
    with Ledger.connect(ledger_url) as ledger:
        stored = sum(1 for _ in ledger.events.events_for(f"bench-r{run}", "bench"))
        rows = [normalize(raw) for raw in _raw_events(f"b{run}", 0, n_events)]
        started = time.perf_counter()
        for start in range(0, n_events, batch):
            ledger.events.add_events(rows[start : start + batch])
        bare_s = time.perf_counter() - started
        dialect = ledger.dialect
    receiver_rate = n_events / receiver_s
    return {
        "dialect": dialect,
        "events": n_events,
        "batch": batch,
        "stored_via_receiver": stored,
        "receiver_events_per_s": round(receiver_rate),
        "bare_insert_events_per_s": round(n_events / bare_s),
        "receiver_share_of_bare": round(bare_s / receiver_s, 3),
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "ok": stored == n_events and receiver_rate >= TARGET_EVENTS_PER_S,
    }


def _post_all(url: str, bodies: list[bytes], signer: WebhookSigner) -> float:
    """Seconds to post every body, signed at send time, over one keep-alive connection."""
    with httpx.Client(timeout=60) as client:
        started = time.perf_counter()
        for body in bodies:
            response = client.post(url, content=body, headers=signer.headers(body))
            if response.status_code != 200:
                raise RuntimeError(f"receiver answered {response.status_code}: {response.text}")
        return time.perf_counter() - started


def _raw_events(run: str, start: int, count: int) -> list[dict[str, object]]:
    """SendGrid-shaped events with unique ids; edition ``bench-<run>`` so they can be counted."""
    now = int(time.time())
    return [
        {
            "email": f"user{i}@example.com",
            "timestamp": now,
            "event": _KINDS[i % len(_KINDS)],
            "sg_event_id": f"{run}-{i}",
            "sg_message_id": f"msg{i // 4}.filter0001",
            "smtp-id": f"<msg{i // 4}@example.com>",
            "category": ["weekly_winddown"],
            "delivery_id": f"d{i // 4:021d}",
            "campaign": "bench",
            "edition": f"bench-{run}",
            "arm": "personalized" if i % 2 else "editorial",
            "sg_machine_open": i % 10 == 0,
            "useragent": "Mozilla/5.0",
            "ip": "192.0.2.1",
        }
        for i in range(start, start + count)
    ]


@contextmanager
def _receiver_process(ledger_url: str, public_key: str) -> Iterator[str]:
    env = dict(
        os.environ, CALM_MAIL_DATABASE_URL=ledger_url, SENDGRID_WEBHOOK_PUBLIC_KEY=public_key
    )
    with cli_server(["events", "serve"], ready_path="/healthz", env=env) as (base, _):
        yield f"{base}/webhooks/sendgrid"


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
        title=f"Event Webhook receiver - {n:,} events in batches of {batch}",
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
