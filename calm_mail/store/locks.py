"""Locks: leases in the ledger, the edition lock built on them, and PostgreSQL advisory locks.

A lease is a row with an expiry, the same on both databases, so a crashed holder's lock runs
out. The edition lock (`edition_lock`) keeps one worker per edition at a time, across
schedulers and hand-started runs: a heartbeat thread pushes the lease forward every third of
its length. A holder that crashes stops renewing, so its lease runs out after `ttl_s` and the
next run takes over; a holder that loses its lease (a long pause, a clock jump) is told through
`Lease.lost` and its `on_lost` callback, so it can stop claiming work.

On PostgreSQL the lease is backed by ``pg_try_advisory_lock`` on a dedicated connection as well:
the database drops a session's advisory locks the moment the connection dies, so a crashed
holder there frees the edition at once rather than at lease expiry. `session_lock` is that
advisory lock alone, for a caller that keeps one connection open for the whole job.

The edition lock is re-entrant for the same holder in the same thread: a scheduler job that
holds it can call `run_edition`, which takes it again with the default holder, without
refusing itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from calm_mail.errors import LockHeld
from calm_mail.store import schema
from calm_mail.store.db import Database

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 120.0


class Locks:
    """Named leases (compare-and-set on an expiry) and PostgreSQL session advisory locks."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def acquire_lock(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take the lease `name` for `ttl_s` seconds if it is free, expired or already ours."""
        now = self._db.clock()
        expires = now + timedelta(seconds=ttl_s)
        t = schema.locks
        with self._db.write() as conn:
            inserted = conn.execute(
                self._db.insert(t)
                .values(name=name, holder=holder, expires_at=expires)
                .on_conflict_do_nothing(index_elements=["name"])
            ).rowcount
            if inserted == 1:
                return True
            return _set_lock(
                conn,
                name,
                sa.or_(t.c.holder == holder, t.c.expires_at <= now),
                holder=holder,
                expires_at=expires,
            )

    def take_over_lock(self, name: str, previous: str, holder: str, ttl_s: float) -> bool:
        """Take the lease `name` from `previous`, a holder known to be dead (its process is
        gone, or PostgreSQL's advisory lock proves no live holder). Compare-and-set: False if
        someone else took it meanwhile."""
        expires = self._db.clock() + timedelta(seconds=ttl_s)
        with self._db.write() as conn:
            return _set_lock(
                conn, name, schema.locks.c.holder == previous, holder=holder, expires_at=expires
            )

    def renew_lock(self, name: str, holder: str, ttl_s: float) -> bool:
        """Extend our lease; False when someone else holds it now (ours expired and was taken)."""
        expires = self._db.clock() + timedelta(seconds=ttl_s)
        with self._db.write() as conn:
            return _set_lock(conn, name, schema.locks.c.holder == holder, expires_at=expires)

    def release_lock(self, name: str, holder: str) -> None:
        """Give the lease back (only if it is still ours)."""
        t = schema.locks
        with self._db.write() as conn:
            conn.execute(sa.delete(t).where(t.c.name == name, t.c.holder == holder))

    @contextmanager
    def session_lock(self, name: str, holder: str, ttl_s: float) -> Iterator[bool]:
        """Hold the lock `name` for the ``with`` block; yields whether it was obtained.

        PostgreSQL: ``pg_try_advisory_lock`` on a connection kept for the block, so the
        server frees it the moment this process dies, however it dies. SQLite: the lease row
        (`acquire_lock`), which a crashed holder keeps until `ttl_s` passes; call `renew_lock`
        in blocks that last longer. Use one kind of lock per name: an advisory lock does not
        exclude a lease of the same name.
        """
        if not self.has_advisory:
            got = self.acquire_lock(name, holder, ttl_s)
            try:
                yield got
            finally:
                if got:
                    self.release_lock(name, holder)
            return
        with self.advisory(name) as got:
            yield got

    def lock_holder(self, name: str) -> tuple[str, datetime] | None:
        """(holder, expires_at) of the lease `name`, expired or not; None when free."""
        t = schema.locks
        with self._db.read() as conn:
            row = conn.execute(sa.select(t).where(t.c.name == name)).first()
        return (row.holder, row.expires_at) if row else None

    @property
    def has_advisory(self) -> bool:
        """Whether the database offers session advisory locks (PostgreSQL)."""
        return self._db.dialect == "postgresql"

    @contextmanager
    def advisory(self, name: str) -> Iterator[bool]:
        """PostgreSQL only: ``pg_try_advisory_lock`` on a connection kept for the block;
        yields whether it was obtained. The server frees it when the connection dies."""
        if not self.has_advisory:
            raise RuntimeError("advisory locks need PostgreSQL")
        key = advisory_key(name)
        with self._db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            got = bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar())
            try:
                yield got
            finally:
                if got:
                    conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))


def _set_lock(
    conn: sa.Connection, name: str, condition: sa.ColumnElement[bool], **values: object
) -> bool:
    """Compare-and-set on the lease `name`: update it only where `condition` holds; True when
    it did (acquire, take over and renew differ only in the condition and the values)."""
    t = schema.locks
    result = conn.execute(sa.update(t).where(t.c.name == name, condition).values(**values))
    return bool(result.rowcount == 1)


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_try_advisory_lock."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# --------------------------------------------------------------------------- the edition lock


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
    locks: Locks,
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
    what = f"{campaign} {edition}"
    with ExitStack() as stack:
        # Every live holder on PostgreSQL holds the advisory lock too: getting it proves that
        # a lease row left behind belongs to a dead session.
        proven_free = locks.has_advisory and stack.enter_context(locks.advisory(name))
        if locks.has_advisory and not proven_free:
            raise LockHeld(f"{what}: {describe_holder(locks, name)}")
        if not locks.acquire_lock(name, lease.holder, ttl_s) and not _take_over_dead(
            locks, name, lease, proven_free=proven_free
        ):
            raise LockHeld(f"{what}: {describe_holder(locks, name)}")
        with _heartbeat(locks, lease, on_lost), _registered(name, lease):
            yield lease


def _take_over_dead(locks: Locks, name: str, lease: Lease, *, proven_free: bool) -> bool:
    """Take a lease whose holder is dead instead of waiting out its expiry.

    Dead means: on PostgreSQL we hold the edition's advisory lock, which every live holder
    holds and the server frees when a holder's session dies (`proven_free`); anywhere, the
    holder is a process of this host that no longer exists (a `kill -9`'d sender).
    """
    current = locks.lock_holder(name)
    if current is None:
        return locks.acquire_lock(name, lease.holder, lease.ttl_s)
    previous = current[0]
    if not (proven_free or _dead_here(previous)):
        return False
    log.warning("taking over %s from %s, which is no longer running", name, previous)
    return locks.take_over_lock(name, previous, lease.holder, lease.ttl_s)


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
def _heartbeat(locks: Locks, lease: Lease, on_lost: Callable[[], None] | None) -> Iterator[None]:
    done = threading.Event()

    def beat() -> None:
        while not done.wait(lease.ttl_s / 3):
            try:
                renewed = locks.renew_lock(lease.name, lease.holder, lease.ttl_s)
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
            locks.release_lock(lease.name, lease.holder)
        except Exception:  # the lease expires on its own; never mask the block's own error
            log.exception("releasing %s failed; it expires in %.0f s", lease.name, lease.ttl_s)


def describe_holder(locks: Locks, name: str) -> str:
    """Who holds `name`, as the ledger says (for LockHeld's message)."""
    holder = locks.lock_holder(name)
    if holder is None:
        return "another process holds the edition's lock; try again when it has finished"
    who, expires = holder
    return (
        f"the edition is being worked on by {who} (lease until {expires:%Y-%m-%d %H:%M:%S} "
        "UTC); try again when it has finished"
    )
