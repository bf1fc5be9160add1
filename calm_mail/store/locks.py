"""The edition lock: one worker per edition at a time, across schedulers and hand-started runs.

The lock is a lease in the ledger (`acquire_lock` / `renew_lock` / `release_lock`): a row with an
expiry that a heartbeat thread pushes forward every third of the lease. A holder that crashes
stops renewing, so its lease runs out after `ttl_s` and the next run takes over; a holder that
loses its lease (a long pause, a clock jump) is told through `Lease.lost` and its `on_lost`
callback, so it can stop claiming work.

On PostgreSQL the lease is backed by ``pg_try_advisory_lock`` on a dedicated connection as well:
the database drops a session's advisory locks the moment the connection dies, so a crashed
holder there frees the edition at once rather than at lease expiry.

The lock is re-entrant for the same holder in the same thread: a scheduler job that holds it can
call `run_edition`, which takes it again with the default holder, without refusing itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from calm_mail.errors import LockHeld

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 120.0


class LockLedger(Protocol):
    """What the lock needs from the ledger."""

    def acquire_lock(self, name: str, holder: str, ttl_s: float) -> bool: ...
    def renew_lock(self, name: str, holder: str, ttl_s: float) -> bool: ...
    def release_lock(self, name: str, holder: str) -> None: ...
    def lock_holder(self, name: str) -> tuple[str, datetime] | None: ...
    def take_over_lock(self, name: str, previous: str, holder: str, ttl_s: float) -> bool: ...


@dataclass(slots=True)
class Lease:
    """A held edition lock. `lost` is set when the lease could not be renewed."""

    name: str
    holder: str
    ttl_s: float
    lost: threading.Event = field(default_factory=threading.Event)


def lock_name(campaign: str, edition: object) -> str:
    return f"edition:{campaign}:{edition}"


def default_holder() -> str:
    """host:pid:thread — unique per worker, readable in the LockHeld message."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


# name -> (owning thread id, lease, depth): re-entrancy within one thread of this process.
_held: dict[str, tuple[int, Lease, int]] = {}
_held_guard = threading.Lock()


@contextmanager
def edition_lock(
    ledger: LockLedger,
    campaign: str,
    edition: object,
    holder: str | None = None,
    ttl_s: float = DEFAULT_TTL_S,
    *,
    on_lost: Callable[[], None] | None = None,
) -> Iterator[Lease]:
    """Hold the edition's lock for the `with` block, or raise `LockHeld` naming the holder.

    A heartbeat renews the lease every ``ttl_s / 3`` seconds; if renewal fails, `Lease.lost`
    is set and `on_lost` is called (once) from the heartbeat thread.
    """
    name = lock_name(campaign, edition)
    holder = holder or default_holder()
    nested = _enter_nested(name, holder)
    if nested is not None:
        try:
            yield nested
        finally:
            _exit_nested(name)
        return
    lease = Lease(name=name, holder=holder, ttl_s=ttl_s)
    advisory = _advisory_lock(ledger, name, f"{campaign} {edition}")
    try:
        if not ledger.acquire_lock(name, lease.holder, ttl_s) and not _take_over_dead(
            ledger, name, lease, proven_free=advisory is not None
        ):
            raise LockHeld(f"{campaign} {edition}: {describe_holder(ledger, name)}")
        with _heartbeat(ledger, lease, on_lost), _registered(name, lease):
            yield lease
    finally:
        if advisory is not None:
            advisory.close()


def _take_over_dead(ledger: LockLedger, name: str, lease: Lease, *, proven_free: bool) -> bool:
    """Take a lease whose holder is dead instead of waiting out its expiry.

    Dead means: on PostgreSQL we hold the edition's advisory lock, which every live holder
    holds and the server frees when a holder's session dies (`proven_free`); anywhere, the
    holder is a process of this host that no longer exists (a `kill -9`'d sender).
    """
    current = ledger.lock_holder(name)
    if current is None:
        return ledger.acquire_lock(name, lease.holder, lease.ttl_s)
    previous = current[0]
    if not (proven_free or _dead_here(previous)):
        return False
    log.warning("taking over %s from %s, which is no longer running", name, previous)
    return ledger.take_over_lock(name, previous, lease.holder, lease.ttl_s)


def _dead_here(holder: str) -> bool:
    """True when `holder` (host:pid:thread) names a process of this host that has exited."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


def _enter_nested(name: str, holder: str) -> Lease | None:
    with _held_guard:
        entry = _held.get(name)
        if entry is None or entry[0] != threading.get_ident() or entry[1].holder != holder:
            return None
        _held[name] = (entry[0], entry[1], entry[2] + 1)
        return entry[1]


def _exit_nested(name: str) -> None:
    with _held_guard:
        owner, lease, depth = _held[name]
        _held[name] = (owner, lease, depth - 1)


@contextmanager
def _registered(name: str, lease: Lease) -> Iterator[None]:
    with _held_guard:
        _held[name] = (threading.get_ident(), lease, 1)
    try:
        yield
    finally:
        with _held_guard:
            _held.pop(name, None)


@contextmanager
def _heartbeat(
    ledger: LockLedger, lease: Lease, on_lost: Callable[[], None] | None
) -> Iterator[None]:
    done = threading.Event()

    def beat() -> None:
        while not done.wait(lease.ttl_s / 3):
            try:
                renewed = ledger.renew_lock(lease.name, lease.holder, lease.ttl_s)
            except Exception:  # a dropped connection is a lost lease, not a dead heartbeat
                log.exception("renewing %s failed", lease.name)
                renewed = False
            if not renewed:
                log.error("lost the lease on %s; stopping this worker's sends", lease.name)
                lease.lost.set()
                if on_lost is not None:
                    on_lost()
                return

    thread = threading.Thread(target=beat, name=f"lease {lease.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        try:
            ledger.release_lock(lease.name, lease.holder)
        except Exception:  # the lease expires on its own; never mask the block's own error
            log.exception("releasing %s failed; it expires in %.0f s", lease.name, lease.ttl_s)


def describe_holder(ledger: LockLedger, name: str) -> str:
    """Who holds `name`, as the ledger says (for LockHeld's message)."""
    holder = ledger.lock_holder(name)
    if holder is None:
        return "another process holds the edition's lock; try again when it has finished"
    who, expires = holder
    return (
        f"the edition is being worked on by {who} (lease until {expires:%Y-%m-%d %H:%M:%S} "
        "UTC); try again when it has finished"
    )


class _Advisory:
    """A PostgreSQL session advisory lock held on its own connection."""

    def __init__(self, conn: Any, key: int) -> None:
        self._conn = conn
        self._key = key

    def close(self) -> None:
        import sqlalchemy as sa

        try:
            self._conn.execute(sa.select(sa.func.pg_advisory_unlock(self._key)))
            self._conn.commit()
        finally:
            self._conn.close()


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_try_advisory_lock."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _advisory_lock(ledger: Any, name: str, what: str) -> _Advisory | None:
    """On PostgreSQL, take the advisory lock first or raise LockHeld; elsewhere do nothing."""
    if getattr(ledger, "dialect", None) != "postgresql":
        return None
    import sqlalchemy as sa

    key = advisory_key(name)
    conn = ledger.engine.connect()
    try:
        got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar()
        conn.commit()
    except BaseException:
        conn.close()
        raise
    if not got:
        conn.close()
        raise LockHeld(f"{what}: {describe_holder(ledger, name)}")
    return _Advisory(conn, key)
