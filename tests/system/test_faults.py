"""An edition through a misbehaving SendGrid: 5xx, 429s, dropped connections, requests accepted
and then failed (the "fate unknown" case), and outages. Nothing lost, nothing twice.

Which faults are safe to retry at once, and which leave the fate unknown, is the transport's
call (calm_mail.deliver.sendgrid): 429 and 503 were not accepted; a 500 or a dropped connection
may have been. The sandbox makes both kinds happen, including a 500 or a drop AFTER it stored
the message, which only its `processed` event can reveal.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.system.conftest import Finished, assert_exactly_once, live_stack

# Short outages every 2 s: a run's sends (at most `rate_limit` per second, so seconds of them)
# straddle at least one, whatever the machine's start-up time.
OUTAGES = tuple((1.0 + 2.0 * k, 1.5 + 2.0 * k) for k in range(90))
FAULTS = {
    "seed": 5,
    "fail_rate": 0.04,
    "drop_rate": 0.03,
    "accept_then_fail_rate": 0.05,
    "rate_limit": 120,
    "outages": OUTAGES,
}


def test_faults_lose_nothing_and_send_nothing_twice(
    system_root: Path, tmp_path: Path, ledger_url: str
) -> None:
    started = time.time()  # the sandbox's outage windows count from its start
    with live_stack(system_root, ledger_url, tmp_path / "logs", **FAULTS) as stack:
        first = stack.run()
        stack.run_until_sent()
        assert stack.sandbox.wait_webhooks_idle(timeout=30)
        rows = assert_exactly_once(stack)
        by_status = stack.sandbox.stats()["by_status"]
        messages = stack.sandbox.messages()

    for status in ("429", "500", "503", "dropped"):
        assert by_status.get(status, 0) > 0, f"no {status} was injected: {by_status}"
    assert first.returncode == 1, "the first run cannot have settled every unknown fate"

    # A sender rode through an outage: one run had mail accepted before and after one.
    def spans_outage(run: Finished) -> bool:
        received = [
            m["received_at"] for m in messages if run.started <= m["received_at"] <= run.ended
        ]
        return bool(received) and any(
            min(received) < started + start and max(received) > started + end
            for start, end in OUTAGES
        )

    assert any(spans_outage(run) for run in stack.runs), "no run's sends spanned an outage"

    # Accepted-then-failed requests were settled from their events, not resent: those rows
    # are the ones marked sent without SendGrid's message id, and each has exactly one message
    # in the sandbox (assert_exactly_once).
    confirmed = sum(
        r.report["reconciled"]["confirmed"]
        for r in stack.runs
        if r.report and r.report["reconciled"]
    )
    from_events = [r for r in rows if r.message_id is None]
    assert confirmed > 0
    assert len(from_events) == confirmed
    sandbox_ids = {m["custom_args"]["delivery_id"]: m["message_id"] for m in messages}
    with_id = [r for r in rows if r.message_id is not None]
    assert all(sandbox_ids[r.delivery_id] == r.message_id for r in with_id)
