"""Claims and leases under real concurrency: threads and spawned processes, on both databases."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter

from calm_mail.store import Ledger, delivery_id_for
from tests.store.helpers import (
    EDITION,
    crash_holding_lock,
    crash_in_session_lock,
    plan,
    process_claimer,
)

CAMPAIGN = "weekly_winddown"


def planned_edition(ledger: Ledger, n: int) -> tuple[int, set[str]]:
    eid = ledger.editions.ensure_edition(CAMPAIGN, EDITION, experiment="exp").edition_id
    ledger.deliveries.add_planned(eid, CAMPAIGN, plan(n))
    return eid, {delivery_id_for(CAMPAIGN, EDITION, f"u{i}") for i in range(n)}


def assert_claimed_once(claims: dict[str, list[str]], expected: set[str]) -> None:
    every = [d for got in claims.values() for d in got]
    twice = [d for d, n in Counter(every).items() if n > 1]
    assert twice == [], f"claimed more than once: {twice[:5]}"
    assert set(every) == expected


def test_threads_never_claim_a_row_twice(ledger: Ledger) -> None:
    eid, expected = planned_edition(ledger, 600)
    barrier = threading.Barrier(6)
    claims: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        got: list[str] = []
        try:
            barrier.wait(timeout=30)
            while rows := ledger.deliveries.claim(eid, worker=name, limit=7):
                got.extend(r.delivery_id for r in rows)
        except BaseException as exc:  # re-raised below via the assertion
            errors.append(exc)
        claims[name] = got

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert_claimed_once(claims, expected)
    assert sum(1 for got in claims.values() if got) > 1  # they really competed
    assert ledger.deliveries.counts(eid) == {
        ("claimed", "control"): 300,
        ("claimed", "personalized"): 300,
    }


def test_processes_never_claim_a_row_twice(ledger: Ledger, ledger_url: str) -> None:
    eid, expected = planned_edition(ledger, 900)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=process_claimer, args=(ledger_url, eid, 5, barrier, out))
        for _ in range(3)
    ]
    for proc in procs:
        proc.start()
    claims = dict(out.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert_claimed_once(claims, expected)
    assert sum(1 for got in claims.values() if got) > 1


def test_crashed_lock_holder_is_taken_over_after_ttl(ledger: Ledger, ledger_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    ttl = 1.0
    proc = ctx.Process(target=crash_holding_lock, args=(ledger_url, "schedule", ttl))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 0
    taken_at = time.monotonic()
    assert not ledger.locks.acquire_lock("schedule", "next", ttl_s=30)  # the dead holder's lease
    holder = ledger.locks.lock_holder("schedule")
    assert holder is not None and holder[0] == "crashed-holder"
    while not ledger.locks.acquire_lock("schedule", "next", ttl_s=30):
        assert time.monotonic() - taken_at < ttl + 5, "the expired lease was never taken over"
        time.sleep(0.1)
    holder = ledger.locks.lock_holder("schedule")
    assert holder is not None and holder[0] == "next"


def test_only_one_of_many_threads_gets_a_free_lock(ledger: Ledger) -> None:
    barrier = threading.Barrier(8)
    winners: list[str] = []

    def contend(name: str) -> None:
        barrier.wait(timeout=30)
        if ledger.locks.acquire_lock("edition", name, ttl_s=60):
            winners.append(name)

    threads = [threading.Thread(target=contend, args=(f"h{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(winners) == 1
    assert ledger.locks.lock_holder("edition") is not None


def test_session_lock_excludes_other_sessions(ledger: Ledger, ledger_url: str) -> None:
    with Ledger.connect(ledger_url) as other:
        with ledger.locks.session_lock("scheduler", "a", ttl_s=30) as got:
            assert got
            with other.locks.session_lock("scheduler", "b", ttl_s=30) as got_too:
                assert not got_too
            with other.locks.session_lock("another", "b", ttl_s=30) as independent:
                assert independent
        with other.locks.session_lock("scheduler", "b", ttl_s=30) as got_after:
            assert got_after


def test_session_lock_of_a_crashed_process(ledger: Ledger, ledger_url: str) -> None:
    """PostgreSQL frees it when the session dies; SQLite's lease runs out after the ttl."""
    ctx = multiprocessing.get_context("spawn")
    ttl = 1.0
    proc = ctx.Process(target=crash_in_session_lock, args=(ledger_url, "scheduler", ttl))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 0
    died_at = time.monotonic()
    # The server ends a dead client's backend within moments; a lease waits for its ttl.
    deadline = died_at + (3 if ledger.dialect == "postgresql" else ttl + 5)
    while True:
        with ledger.locks.session_lock("scheduler", "next", ttl_s=30) as got:
            if got:
                break
        assert time.monotonic() < deadline, "the crashed holder's lock was never taken over"
        time.sleep(0.05)
