"""Sends per second from one process against the SendGrid sandbox with injected
latency, next to the official client's ``SendGridAPIClient.send`` loop (sequential and with
threads) sending the same prepared bodies; and the ledger's share of the engine's time.

The sandbox runs as ``calm-mail sandbox`` in its own process, so client and server never share
one interpreter lock. The engine is the real one: a SQLite ledger in a temporary folder, the
real Composer, the SendGrid transport. The ledger and composer are wrapped in `TimedCalls`, a
proxy that only adds up the time spent in each call (measurement, not a mock).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from benchmarks.core import BenchContext, Figure, Goal, Section
from benchmarks.data import EDITION, dataset
from benchmarks.edition_run import API_KEY, CAMPAIGN, bench_campaign
from calm_mail.compose.composer import Composer
from calm_mail.deliver.engine import Engine, EngineConfig
from calm_mail.deliver.null import NullTransport
from calm_mail.deliver.sendgrid import SendGridTransport
from calm_mail.deliver.transport import Transport, mail_send_body
from calm_mail.plan.assign import MemoryStore
from calm_mail.plan.planner import plan_edition
from calm_mail.records import PlannedDelivery
from calm_mail.store import Ledger, delivery_id_for
from calm_mail.track.server import cli_server

SENDS_PER_S = 2_000


class TimedCalls:
    """Forwards every method call to `target` and adds up, by method name, its wall time and
    the CPU time of the calling thread (the ledger runs in worker threads, where wall time
    mostly waits for the interpreter lock)."""

    def __init__(self, target: object) -> None:
        self._target = target
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return attr(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
                used = time.thread_time() - cpu
                self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + used
                self.calls[name] += 1

        return timed

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    @property
    def total_cpu_s(self) -> float:
        return sum(self.cpu_seconds.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineRun:
    sent: int
    failed: int
    unknown: int
    wall_s: float
    cpu_s: float
    ledger_s: dict[str, float]  # wall time in the ledger's calls, by method
    ledger_cpu_s: dict[str, float]  # CPU time of those calls (their threads), by method
    compose_s: float
    server_cpu_s: float | None
    accepted: int | None  # messages the sandbox kept, when it was the transport

    @property
    def per_s(self) -> float:
        return self.sent / self.wall_s

    @property
    def ledger_share(self) -> float:
        """The ledger's share of the engine's CPU time (the process's, all threads)."""
        return sum(self.ledger_cpu_s.values()) / self.cpu_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "unknown": self.unknown,
            "wall_s": round(self.wall_s, 3),
            "sends_per_s": round(self.per_s, 1),
            "client_cpu_s": round(self.cpu_s, 3),
            "server_cpu_s": None if self.server_cpu_s is None else round(self.server_cpu_s, 3),
            "ledger_wall_s": {k: round(v, 4) for k, v in self.ledger_s.items()},
            "ledger_cpu_s": {k: round(v, 4) for k, v in self.ledger_cpu_s.items()},
            "ledger_cpu_share": round(self.ledger_share, 4),
            "compose_s": round(self.compose_s, 3),
            "compose_share": round(self.compose_s / self.wall_s, 4),
            "accepted_by_sandbox": self.accepted,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StockRun:
    sends: int
    threads: int
    wall_s: float
    statuses: dict[str, int]

    @property
    def accepted(self) -> int:
        return self.statuses.get("202", 0)

    @property
    def per_s(self) -> float:
        return self.accepted / self.wall_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "sends": self.sends,
            "threads": self.threads,
            "wall_s": round(self.wall_s, 3),
            "sends_per_s": round(self.per_s, 1),
            "statuses": self.statuses,
        }


# --------------------------------------------------------------------------- the sandbox


@dataclass(frozen=True, slots=True)
class Sandbox:
    url: str
    pid: int

    def cpu_s(self) -> float | None:
        """User + system CPU seconds of the sandbox process so far (None off Linux)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            fields = stat.rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def accepted(self) -> int:
        return int(httpx.get(f"{self.url}/_sandbox/stats", timeout=30).json()["messages"])

    def forget(self) -> None:
        """Drop the kept messages between rounds so the server's memory stays flat."""
        httpx.delete(f"{self.url}/_sandbox/messages", timeout=30).raise_for_status()


@contextmanager
def sandbox_process(latency_ms: float) -> Iterator[Sandbox]:
    """``calm-mail sandbox --latency-ms`` in its own process on a free port, until exit."""
    args = ["sandbox", "--latency-ms", str(latency_ms)]
    with cli_server(args, ready_path="/_sandbox/stats") as (base, process):
        yield Sandbox(base, process.pid)


# --------------------------------------------------------------------------- what is sent


def sendable(deliveries: Sequence[PlannedDelivery], n: int) -> list[PlannedDelivery]:
    """`n` non-holdout deliveries due an hour from now (inside SendGrid's 72 h window); users
    are repeated under new ids when the plan has fewer."""
    send_at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    mailed = [d for d in deliveries if not d.is_holdout]
    if not mailed:
        raise RuntimeError("the bench plan has no deliveries to send")
    out = []
    for i in range(n):
        d = mailed[i % len(mailed)]
        user = d.user_id if i < len(mailed) else f"{d.user_id}~{i // len(mailed)}"
        out.append(replace(d, user_id=user, send_at=send_at))
    return out


def planned(ctx: BenchContext, n: int) -> tuple[Composer, list[PlannedDelivery]]:
    """A composer and `n` deliveries from planning the small data set."""
    data = dataset(ctx, ctx.sizes.small_users)
    campaign = bench_campaign(ctx.root, data.folder)
    ctx.say(f"send: planning {data.users:,} users for the deliveries to send")
    plan = plan_edition(campaign, EDITION, store=MemoryStore(), now=datetime.now(UTC))
    return Composer(campaign, plan.catalog, EDITION), sendable(plan.deliveries, n)


# --------------------------------------------------------------------------- calm-mail's engine


def engine_round(
    ctx: BenchContext,
    composer: Composer,
    deliveries: Sequence[PlannedDelivery],
    transport: Transport,
    sandbox: Sandbox | None,
) -> EngineRun:
    """Plan `deliveries` into a fresh SQLite ledger, then time one engine run sending them."""
    with tempfile.TemporaryDirectory() as tmp, Ledger.connect(f"sqlite:///{tmp}/l.db") as ledger:
        info = ledger.editions.ensure_edition(CAMPAIGN, EDITION, experiment="bench")
        ledger.deliveries.add_planned(info.edition_id, CAMPAIGN, deliveries)
        timed_deliveries, timed_editions = (
            TimedCalls(ledger.deliveries),
            TimedCalls(ledger.editions),
        )
        timed_composer = TimedCalls(composer)
        engine = Engine(
            timed_deliveries,  # timing proxies of the real repositories (Any to mypy)
            timed_editions,
            timed_composer,
            transport,
            edition_id=info.edition_id,
            edition=EDITION,
            batch_id=None,
            config=EngineConfig(max_rate=1e9, concurrency=ctx.sizes.concurrency),
        )
        server_cpu = sandbox.cpu_s() if sandbox else None
        cpu = time.process_time()
        wall, tally = asyncio.run(_timed_run(engine, transport))
        cpu = time.process_time() - cpu
        if sandbox and server_cpu is not None:
            server_cpu = (sandbox.cpu_s() or 0.0) - server_cpu
    accepted = None
    if sandbox:
        accepted = sandbox.accepted()
        sandbox.forget()
    return EngineRun(
        sent=tally.total_sent,
        failed=sum(tally.failed.values()),
        unknown=tally.unknown,
        wall_s=wall,
        cpu_s=cpu,
        ledger_s={**timed_deliveries.seconds, **timed_editions.seconds},
        ledger_cpu_s={**timed_deliveries.cpu_seconds, **timed_editions.cpu_seconds},
        compose_s=timed_composer.total_s,
        server_cpu_s=server_cpu,
        accepted=accepted,
    )


async def _timed_run(engine: Engine, transport: Transport) -> tuple[float, Any]:
    try:
        started = time.perf_counter()
        tally = await engine.run()
        return time.perf_counter() - started, tally
    finally:
        await transport.aclose()


# --------------------------------------------------------------------------- the stock client


def stock_run(url: str, bodies: Sequence[dict[str, Any]], threads: int) -> StockRun:
    """`SendGridAPIClient.send` over `bodies`: in a loop (threads=1) or from a thread pool with
    one client per thread, as its documentation suggests for concurrency."""
    local = threading.local()

    def send(body: dict[str, Any]) -> str:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = SendGridAPIClient(API_KEY, host=url)
        try:
            return str(client.send(body).status_code)
        except HTTPError as exc:
            return str(exc.status_code)
        except OSError as exc:
            return type(exc).__name__

    started = time.perf_counter()
    if threads == 1:
        statuses = Counter(map(send, bodies))
    else:
        with ThreadPoolExecutor(threads) as pool:
            statuses = Counter(pool.map(send, bodies))
    return StockRun(
        sends=len(bodies),
        threads=threads,
        wall_s=time.perf_counter() - started,
        statuses=dict(statuses),
    )


def best(runs: Sequence[Any], key: Callable[[Any], float]) -> Any:
    return max(runs, key=key)


# --------------------------------------------------------------------------- the section


def run_send(ctx: BenchContext) -> Section:
    sizes = ctx.sizes
    composer, deliveries = planned(ctx, max(sizes.engine_sends, sizes.stock_threaded))
    engine_rows = deliveries[: sizes.engine_sends]
    bodies = [
        mail_send_body(composer.compose(d, delivery_id_for(CAMPAIGN, EDITION, d.user_id)))
        for d in deliveries[: sizes.stock_threaded]
    ]
    ctx.say(f"send: null transport, {len(engine_rows):,} sends (the engine's CPU ceiling)")
    null = engine_round(ctx, composer, engine_rows, NullTransport(), None)
    with sandbox_process(sizes.latency_ms) as sandbox:
        engines = []
        for r in range(sizes.rounds):
            ctx.say(f"send: engine round {r + 1}/{sizes.rounds}, {len(engine_rows):,} sends")
            transport = SendGridTransport(API_KEY, host=sandbox.url, concurrency=sizes.concurrency)
            engines.append(engine_round(ctx, composer, engine_rows, transport, sandbox))
        ctx.say(f"send: stock client, sequential, {sizes.stock_sequential} sends")
        sequential = stock_run(sandbox.url, bodies[: sizes.stock_sequential], 1)
        threaded_runs = []
        for r in range(sizes.rounds):
            ctx.say(
                f"send: stock client, {sizes.stock_threads} threads, {len(bodies):,} sends "
                f"(round {r + 1}/{sizes.rounds})"
            )
            threaded_runs.append(stock_run(sandbox.url, bodies, sizes.stock_threads))
            sandbox.forget()
    return _section(ctx, null, engines, sequential, threaded_runs)


def _section(
    ctx: BenchContext,
    null: EngineRun,
    engines: list[EngineRun],
    sequential: StockRun,
    threaded_runs: list[StockRun],
) -> Section:
    sizes = ctx.sizes
    engine: EngineRun = best(engines, lambda r: r.per_s)
    threaded: StockRun = best(threaded_runs, lambda r: r.per_s)
    ledger_ms = ", ".join(f"{k} {v * 1000:,.0f} ms" for k, v in sorted(engine.ledger_cpu_s.items()))
    section = Section(
        name="send",
        title=f"Send - sandbox in its own process, {sizes.latency_ms:g} ms latency",
        method=f"wall time (time.perf_counter), best of {sizes.rounds} for the engine and the "
        f"threaded stock loop; engine: SQLite ledger, real Composer, SendGridTransport, "
        f"concurrency {sizes.concurrency}; stock: SendGridAPIClient.send, same bodies",
        details={
            "engine_rounds": [r.as_dict() for r in engines],
            "null_transport": null.as_dict(),
            "stock_sequential": sequential.as_dict(),
            "stock_threaded_rounds": [r.as_dict() for r in threaded_runs],
            "latency_bound_per_s": sizes.concurrency / (sizes.latency_ms / 1000),
        },
    )
    failed = engine.failed + engine.unknown
    section.figures += [
        Figure(
            key="send.sends_per_s",
            label=f"send: engine sends/s (1 process, {engine.sent:,} sends)",
            value=engine.per_s,
            unit="sends/s",
            baseline=sequential.per_s,
            baseline_label="stock, sequential",
            goal=Goal(target=SENDS_PER_S, text=f">= {SENDS_PER_S:,} sends/s"),
            note=f"{failed} failed or unknown" if failed else "",
        ),
        Figure(
            key="send.vs_stock_threads",
            label="send: engine vs stock client with threads",
            value=engine.per_s,
            unit="sends/s",
            baseline=threaded.per_s,
            baseline_label=f"stock, {threaded.threads} threads",
            note=_statuses_note(sequential, threaded),
        ),
        Figure(
            key="send.ledger_share",
            label="send: ledger's share of the engine's CPU time",
            value=round(engine.ledger_share * 100, 2),
            unit="%",
            note=f"CPU in the ledger's calls: {ledger_ms}",
        ),
        Figure(
            key="send.null_sends_per_s",
            label="send: engine with the null transport (CPU ceiling)",
            value=null.per_s,
            unit="sends/s",
            note=f"compose {null.compose_s / null.wall_s:.0%} of its time, "
            f"ledger {null.ledger_share:.0%} of its CPU",
        ),
    ]
    return section


def _statuses_note(*runs: StockRun) -> str:
    bad = Counter[str]()
    for run in runs:
        bad.update({k: v for k, v in run.statuses.items() if k != "202"})
    return "" if not bad else "stock non-202: " + ", ".join(f"{k} x{v}" for k, v in bad.items())
