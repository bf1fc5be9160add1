"""The `locks` repository contract and the edition lock built on it, on SQLite and PostgreSQL
(see conftest)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from calm_mail.errors import LockHeld
from calm_mail.store import Ledger
from calm_mail.store.locks import edition_lock, lock_name


def test_a_second_holder_is_refused_with_the_holders_name(ledger: Ledger) -> None:
    with edition_lock(ledger.locks, "weekly", "2026-W48", holder="sched-a:1") as lease:
        assert lease.holder == "sched-a:1"
        errors: list[BaseException] = []

        def other() -> None:
            try:
                with edition_lock(ledger.locks, "weekly", "2026-W48", holder="sched-b:2"):
                    pass
            except LockHeld as exc:
                errors.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert len(errors) == 1
        assert "sched-a:1" in str(errors[0]) and "weekly 2026-W48" in str(errors[0])
        assert errors[0].exit_code == 3
    assert ledger.locks.lock_holder(lock_name("weekly", "2026-W48")) is None


def test_other_editions_are_not_blocked(ledger: Ledger) -> None:
    with (
        edition_lock(ledger.locks, "weekly", "2026-W48", holder="a"),
        edition_lock(ledger.locks, "weekly", "2026-W49", holder="b"),
    ):
        assert ledger.locks.lock_holder(lock_name("weekly", "2026-W49"))[0] == "b"  # type: ignore[index]


def test_reentrant_in_the_same_thread(ledger: Ledger) -> None:
    with edition_lock(ledger.locks, "weekly", "2026-W48") as outer:
        with edition_lock(ledger.locks, "weekly", "2026-W48") as inner:
            assert inner is outer
        # leaving the inner block keeps the lock
        assert ledger.locks.lock_holder(outer.name)[0] == outer.holder  # type: ignore[index]
    assert ledger.locks.lock_holder(outer.name) is None


def test_a_crashed_holders_lease_expires(ledger: Ledger) -> None:
    start = ledger.db.clock()
    now = [start]
    ledger.db.clock = lambda: now[0]
    # A holder that crashed: it took the lease and never renewed or released it.
    assert ledger.locks.acquire_lock(lock_name("weekly", "2026-W48"), "dead-host:4242:job", 60)
    if ledger.dialect == "postgresql":
        # Every live holder also holds the edition's advisory lock, which the server frees when
        # its session dies: getting it proves the lease's holder is gone. Taken over at once.
        with edition_lock(ledger.locks, "weekly", "2026-W48", holder="new") as lease:
            assert ledger.locks.lock_holder(lease.name)[0] == "new"  # type: ignore[index]
        return
    with (
        pytest.raises(LockHeld, match="dead-host:4242"),
        edition_lock(ledger.locks, "weekly", "2026-W48", holder="new"),
    ):
        pass
    now[0] = start + timedelta(seconds=61)
    with edition_lock(ledger.locks, "weekly", "2026-W48", holder="new") as lease:
        assert ledger.locks.lock_holder(lease.name)[0] == "new"  # type: ignore[index]


def test_the_heartbeat_keeps_the_lease_alive(ledger: Ledger) -> None:
    with edition_lock(ledger.locks, "weekly", "2026-W48", holder="a", ttl_s=0.3) as lease:
        time.sleep(0.6)  # two lease lengths: only renewals keep it ours
        assert not ledger.locks.acquire_lock(lease.name, "b", 0.3)
        assert not lease.lost.is_set()


def test_a_lost_lease_is_reported(ledger: Ledger) -> None:
    lost = threading.Event()
    with edition_lock(
        ledger.locks, "weekly", "2026-W48", holder="a", ttl_s=0.3, on_lost=lost.set
    ) as lease:
        ledger.locks.release_lock(lease.name, "a")
        assert ledger.locks.acquire_lock(lease.name, "thief", 60)
        assert lost.wait(2.0)
        assert lease.lost.is_set()
    # leaving the block must not release the thief's lease
    assert ledger.locks.lock_holder(lease.name)[0] == "thief"  # type: ignore[index]


def test_postgres_advisory_lock_dies_with_its_session(ledger: Ledger) -> None:
    if ledger.dialect != "postgresql":
        pytest.skip("PostgreSQL only: the session advisory lock")
    import sqlalchemy as sa

    from calm_mail.store.locks import advisory_key

    key = advisory_key(lock_name("weekly", "2026-W48"))
    crashed = ledger.engine.connect()  # a holder's session, no lease row at all
    crashed.execute(sa.select(sa.func.pg_advisory_lock(key)))
    crashed.commit()
    with (
        pytest.raises(LockHeld, match="weekly 2026-W48"),
        edition_lock(ledger.locks, "weekly", "2026-W48", holder="new"),
    ):
        pass
    crashed.invalidate()  # the session dies: PostgreSQL drops its advisory locks
    crashed.close()
    # The server notices the closed socket asynchronously: freed within moments, not a lease.
    deadline = time.monotonic() + 5
    while True:
        try:
            with edition_lock(ledger.locks, "weekly", "2026-W48", holder="new") as lease:
                assert lease.holder == "new"
            break
        except LockHeld:
            assert time.monotonic() < deadline, "the dead session's advisory lock was kept"
            time.sleep(0.05)


def test_another_holder_in_the_same_thread_is_refused(ledger: Ledger) -> None:
    with (
        edition_lock(ledger.locks, "weekly", "2026-W48", holder="a"),
        pytest.raises(LockHeld, match="by a "),
        edition_lock(ledger.locks, "weekly", "2026-W48", holder="b"),
    ):
        pass


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(ledger: Ledger) -> None:
    import socket
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = f"{socket.gethostname()}:{gone.stdout.strip()}:MainThread"
    assert ledger.locks.acquire_lock(lock_name("weekly", "2026-W48"), dead, 600)
    with edition_lock(ledger.locks, "weekly", "2026-W48", holder="resumer") as lease:
        assert ledger.locks.lock_holder(lease.name)[0] == "resumer"  # type: ignore[index]
    alive = f"{socket.gethostname()}:1:MainThread"  # pid 1 is alive: never taken over
    assert ledger.locks.acquire_lock(lock_name("weekly", "2026-W49"), alive, 600)
    if ledger.dialect != "postgresql":
        with pytest.raises(LockHeld), edition_lock(ledger.locks, "weekly", "2026-W49", holder="x"):
            pass


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_lock_lease_is_exclusive_renewable_and_expires(ledger: Ledger) -> None:
    clock = Clock()
    ledger.db.clock = clock
    assert ledger.locks.acquire_lock("edition:w48", "a", ttl_s=60)
    assert ledger.locks.acquire_lock("edition:w48", "a", ttl_s=60)  # re-entrant for its holder
    assert not ledger.locks.acquire_lock("edition:w48", "b", ttl_s=60)
    assert ledger.locks.acquire_lock("edition:w49", "b", ttl_s=60)  # other names are independent
    clock.now += timedelta(seconds=50)
    assert ledger.locks.renew_lock("edition:w48", "a", ttl_s=60)
    clock.now += timedelta(seconds=50)
    assert not ledger.locks.acquire_lock("edition:w48", "b", ttl_s=60)  # renewed: still held
    clock.now += timedelta(seconds=11)  # a crashed "a" stops renewing: the lease runs out
    assert ledger.locks.acquire_lock("edition:w48", "b", ttl_s=60)
    assert not ledger.locks.renew_lock("edition:w48", "a", ttl_s=60)
    ledger.locks.release_lock("edition:w48", "a")  # not the holder: no effect
    assert ledger.locks.lock_holder("edition:w48") == ("b", clock.now + timedelta(seconds=60))
    ledger.locks.release_lock("edition:w48", "b")
    assert ledger.locks.lock_holder("edition:w48") is None
    assert ledger.locks.acquire_lock("edition:w48", "a", ttl_s=60)
