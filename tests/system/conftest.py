"""System tests: the shipped campaign end to end, as an operator runs it.

`calm-mail run` is a real subprocess (so it can be killed with SIGKILL); the SendGrid sandbox
and the Event Webhook receiver run in this process, on 127.0.0.1, and the receiver writes into
the same ledger database the sender uses — exactly the production wiring.

The edition under test is the previous one (`Edition.upcoming().previous()`): its send times
have passed whatever the weekday, so it is inside SendGrid's 72-hour window for the real clock
the subprocess uses, and the sandbox releases (and reports) its mail at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from calm_mail.edition import Edition
from calm_mail.records import ContentSource, DeliveryState
from calm_mail.sandbox import SandboxConfig, SandboxHandle, WebhookSigner, run_sandbox
from calm_mail.store import DeliveryRow, Ledger
from calm_mail.store.locks import DEFAULT_TTL_S, lock_name
from calm_mail.track.receiver import ReceiverConfig, create_receiver
from calm_mail.track.server import serve_in_thread

REPO = Path(__file__).resolve().parents[2]
CAMPAIGN = "weekly_winddown"
EDITION = Edition.upcoming().previous()
USERS = 500
DATA_SEED = 11
API_KEY = "SG.system-test"


def make_root(target: Path, *, users: int, seed: int, edition: Edition) -> Path:
    """A project root: the repo's campaigns/, rules/, templates/ and generated data/demo."""
    from calm_mail.demo.data import generate

    target.mkdir(parents=True, exist_ok=True)
    for folder in ("campaigns", "rules", "templates"):
        shutil.copytree(REPO / folder, target / folder)
    generate(target / "data" / "demo", users=users, seed=seed, edition=edition.key)
    return target


@pytest.fixture(scope="session")
def system_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only project root for EDITION (runs write only to their ledger and outbox)."""
    return make_root(
        tmp_path_factory.mktemp("system-root"), users=USERS, seed=DATA_SEED, edition=EDITION
    )


@dataclass(frozen=True, slots=True)
class Finished:
    """One `calm-mail run` subprocess that ended, killed or not."""

    returncode: int
    killed: bool
    started: float  # wall clock (time.time()), like the sandbox's received_at
    ended: float
    report: dict[str, Any] | None  # the --json summary line, when it got that far
    stderr: str


@dataclass
class Stack:
    """A sandbox and a receiver sharing `ledger`'s database with `calm-mail run` subprocesses."""

    root: Path
    ledger_url: str
    ledger: Ledger
    sandbox: SandboxHandle
    logs: Path
    edition: Edition = EDITION
    grace_s: float = 2.0
    max_rate: float = 150.0
    runs: list[Finished] = field(default_factory=list)
    _started: float = 0.0

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CALM_MAIL_ROOT": str(self.root),
            "CALM_MAIL_DATABASE_URL": self.ledger_url,
            "SENDGRID_API_KEY": API_KEY,
            "SENDGRID_API_HOST": self.sandbox.url,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def command(self, grace_s: float | None = None, *, resume: bool = False) -> list[str]:
        grace = self.grace_s if grace_s is None else grace_s
        return [
            sys.executable,
            "-m",
            "calm_mail.cli",
            "run",
            CAMPAIGN,
            "--edition",
            self.edition.key,
            "--max-rate",
            str(self.max_rate),
            "--reconcile-after",
            "0",
            "--grace",
            str(grace),
            "--json",
            *(["--resume"] if resume else []),
        ]

    def start(
        self, *, grace_s: float | None = None, resume: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start a sender; its output goes to files (a full pipe would stall it)."""
        n = len(self.runs)
        self._started = time.time()
        out = (self.logs / f"run{n}.out").open("wb")
        err = (self.logs / f"run{n}.err").open("wb")
        with out, err:
            command = self.command(grace_s, resume=resume)
            return subprocess.Popen(command, env=self.env(), stdout=out, stderr=err)

    def finish(self, proc: subprocess.Popen[bytes], *, kill: bool) -> Finished:
        """Wait for (or SIGKILL) `proc` and record how it ended."""
        if kill:
            proc.kill()
        returncode = proc.wait(timeout=120)
        n = len(self.runs)
        stdout = (self.logs / f"run{n}.out").read_bytes()
        stderr = (self.logs / f"run{n}.err").read_text(encoding="utf-8", errors="replace")
        summaries = [line for line in stdout.splitlines() if line.startswith(b"{")]
        report = orjson.loads(summaries[-1]) if summaries else None
        finished = Finished(
            returncode, kill and returncode == -9, self._started, time.time(), report, stderr
        )
        self.runs.append(finished)
        if not finished.killed and returncode not in (0, 1):
            pytest.fail(f"calm-mail run exited with {returncode}:\n{stderr[-3000:]}")
        if kill and self.ledger.dialect == "sqlite":
            self.let_lease_expire()
        return finished

    def run(self, *, grace_s: float | None = None, resume: bool = False) -> Finished:
        return self.finish(self.start(grace_s=grace_s, resume=resume), kill=False)

    def paused(self) -> bool:
        """Whether the last run ended with the edition paused (the circuit breaker tripped)."""
        last = self.runs[-1].report if self.runs else None
        return bool(last and last["state"] == "paused")

    def recorded(self) -> int:
        """How many delivery rows of the edition the ledger holds (0 before the plan)."""
        info = self.ledger.editions.get_edition(CAMPAIGN, self.edition.key)
        return 0 if info is None else sum(self.ledger.deliveries.counts(info.edition_id).values())

    def let_lease_expire(self) -> None:
        """Stand in for the DEFAULT_TTL_S seconds a killed sender's lease outlives it on SQLite.

        The edition lock is a lease row (calm_mail.store.locks); a SIGKILLed holder cannot release
        it, and on SQLite it is documented to block the edition until it expires. A ledger whose
        clock is past the expiry takes the lease and gives it back, as the next run would.
        """
        later = datetime.now(UTC) + timedelta(seconds=DEFAULT_TTL_S + 1)
        future = Ledger(self.ledger.engine, clock=lambda: later)
        name = lock_name(CAMPAIGN, self.edition)
        if future.locks.acquire_lock(name, "system-test", 1.0):
            future.locks.release_lock(name, "system-test")

    def settle(self) -> None:
        """Let every webhook event land and the grace period pass, so the next run can decide
        the fate of every claimed row."""
        assert self.sandbox.wait_webhooks_idle(timeout=30), "webhook traffic did not settle"
        time.sleep(self.grace_s + 0.2)

    def rows(self) -> list[DeliveryRow]:
        info = self.ledger.editions.get_edition(CAMPAIGN, self.edition.key)
        return [] if info is None else list(self.ledger.deliveries.iter_deliveries(info.edition_id))

    def accepted(self) -> int:
        return len(self.sandbox.messages())

    def run_until_sent(self, *, max_runs: int = 8) -> Finished:
        """Resume (after settling) until a run reports the edition sent; an edition the circuit
        breaker paused is continued with --resume, as its message tells the operator."""
        for _ in range(max_runs):
            self.settle()
            finished = self.run(resume=self.paused())
            if finished.returncode == 0 and finished.report and finished.report["state"] == "sent":
                return finished
        pytest.fail(f"the edition was not sent after {max_runs} resumes: {self.runs[-1]}")


@contextmanager
def live_stack(root: Path, ledger_url: str, logs: Path, **faults: Any) -> Iterator[Stack]:
    """Receiver (thread) + sandbox (thread, posting signed events to it) on one ledger."""
    signer = WebhookSigner.generate()
    logs.mkdir(parents=True, exist_ok=True)
    with Ledger.connect(ledger_url) as ledger:
        receiver = create_receiver(ledger, ReceiverConfig(public_key=signer.public_key_b64))
        with serve_in_thread(receiver) as receiver_url:
            config = SandboxConfig(webhook_url=f"{receiver_url}/webhooks/sendgrid", **faults)
            with run_sandbox(config, signer=signer) as sandbox:
                yield Stack(
                    root=root, ledger_url=ledger_url, ledger=ledger, sandbox=sandbox, logs=logs
                )


def assert_exactly_once(stack: Stack) -> list[DeliveryRow]:
    """From the sandbox's store: every planned recipient got one email; none got two; nobody
    else got any; and the ledger says `sent` for every one of them. Returns the rows."""
    rows = stack.rows()
    recipients = [r for r in rows if r.source != str(ContentSource.HOLDOUT)]
    assert recipients, "the edition planned nobody"
    messages = stack.sandbox.messages()
    by_delivery = Counter(m["custom_args"]["delivery_id"] for m in messages)
    by_address = Counter(a.lower() for m in messages for a in m["to"])
    twice = {d: n for d, n in by_delivery.items() if n > 1}
    assert not twice, f"{len(twice)} deliveries were sent more than once: {twice}"
    assert max(by_address.values()) == 1, "an address got two emails"
    planned = {r.delivery_id for r in recipients}
    missing = planned - set(by_delivery)
    extra = set(by_delivery) - planned
    assert not missing, f"{len(missing)} planned recipients never got the email"
    assert not extra, f"{len(extra)} emails went to deliveries the ledger did not plan"
    assert set(by_address) == {r.email.lower() for r in recipients}
    states = Counter(str(r.state) for r in recipients)
    assert states == {str(DeliveryState.SENT): len(recipients)}, states
    return rows


def wait_until(
    condition: Callable[[], bool], proc: subprocess.Popen[bytes], timeout_s: float = 60.0
) -> bool:
    """Poll `condition` until it holds (True) or `proc` exits first (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    raise AssertionError("timed out waiting for the sender")
