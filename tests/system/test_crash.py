"""The crash test: SIGKILL `calm-mail run` at random points of an edition, resume each time, and
check from the sandbox's own store that every planned recipient got exactly one email.

Why it is hard for the sender: the engine records a chunk's outcomes only after the chunk's
requests return, so a kill mid-send leaves accepted mail the ledger knows nothing about (rows
left `claimed`). Only the `processed` events the receiver stored can tell those apart from the
rows whose request never reached the sandbox.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from calm_mail.records import DeliveryState
from tests.system.conftest import Stack, assert_exactly_once, live_stack, wait_until

SEED = 20261127


def _kill_mid_send(stack: Stack, rng: random.Random) -> tuple[int, int]:
    """Resume, and SIGKILL the sender once it has sent a random share of what is left.
    Returns (accepted before, accepted after)."""
    before = stack.accepted()
    left = max(1, stack.recorded() - before) if stack.recorded() else 300
    target = before + rng.randint(max(1, left // 10), max(1, left * 6 // 10))
    # Slow enough that the kill lands while mail is still going out, even on a loaded machine.
    fast, stack.max_rate = stack.max_rate, 40.0
    try:
        proc = stack.start()
        wait_until(lambda: stack.accepted() >= target, proc)
        stack.finish(proc, kill=True)
    finally:
        stack.max_rate = fast
    return before, stack.accepted()


def _accepted_ids(stack: Stack) -> set[str]:
    return {m["custom_args"]["delivery_id"] for m in stack.sandbox.messages()}


def test_sigkill_at_random_points_then_resume_sends_everyone_exactly_once(
    system_root: Path, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with live_stack(system_root, url, tmp_path / "logs") as stack:
        # 1. very early: interpreter start-up and planning, before anything is recorded
        proc = stack.start()
        time.sleep(rng.uniform(0.1, 0.8))
        stack.finish(proc, kill=True)

        # 2. while the plan is being recorded (or just after: batch, reconcile, first claims)
        proc = stack.start()
        wait_until(lambda: stack.recorded() > 0, proc)
        time.sleep(rng.uniform(0.0, 0.1))
        stack.finish(proc, kill=True)
        assert stack.recorded() > 0

        # 3. mid-send
        before, after = _kill_mid_send(stack, rng)
        total = stack.recorded()
        assert before < after < total, "the kill did not land while mail was going out"

        # 4. an immediate resume, inside a long grace period: the killed sender's claimed rows
        #    are settled from their events (accepted) or left pending (fate unknown), never
        #    resent blindly
        assert stack.sandbox.wait_webhooks_idle(timeout=30)
        accepted = _accepted_ids(stack)
        claimed = {r.delivery_id for r in stack.rows() if r.state is DeliveryState.CLAIMED}
        immediate = stack.run(grace_s=600)
        assert immediate.returncode == 1, immediate.stderr[-2000:]
        assert immediate.report is not None
        reconciled = immediate.report["reconciled"]
        assert reconciled["confirmed"] == len(claimed & accepted) > 0
        assert reconciled["pending"] == len(claimed - accepted) > 0
        resent = (claimed - accepted) & _accepted_ids(stack)
        assert not resent, f"{len(resent)} rows of unknown fate were resent inside the grace"

        # 5. two more kills mid-send, each after the grace period has passed
        kills_mid_send = 1
        for _ in range(2):
            stack.settle()
            before, after = _kill_mid_send(stack, rng)
            kills_mid_send += int(stack.runs[-1].killed and before < after < total)

        # 6. the last resumes, then the sandbox's store is the judge
        stack.run_until_sent()
        assert stack.sandbox.wait_webhooks_idle(timeout=30)
        assert_exactly_once(stack)

    kills = sum(run.killed for run in stack.runs)
    assert kills >= 4, f"only {kills} senders were killed"
    assert kills_mid_send >= 2, "fewer than two kills landed while mail was going out"


@pytest.mark.postgres
def test_a_killed_sender_can_be_resumed_at_once_on_postgresql(
    system_root: Path, tmp_path: Path, postgres_database: str
) -> None:
    with live_stack(system_root, postgres_database, tmp_path / "logs") as stack:
        proc = stack.start()
        wait_until(lambda: stack.accepted() > 0, proc)
        stack.finish(proc, kill=True)
        resumed = stack.run()  # no lease expiry stands in here: PostgreSQL needs none
        assert resumed.returncode in (0, 1)
        stack.run_until_sent()
        assert_exactly_once(stack)
