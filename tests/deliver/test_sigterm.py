"""SIGTERM during `calm-mail run`: in-flight sends finish, nothing stays claimed, a re-run
finishes the edition, and nobody gets two emails."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from calm_mail.edition import Edition
from calm_mail.records import DeliveryState
from calm_mail.store import Ledger
from tests.deliver.conftest import run_command, sender_env


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_cleanly_and_a_rerun_finishes_it(
    project: tuple[Path, Edition], tmp_path: Path, sandbox_factory: Any, sig: signal.Signals
) -> None:
    root, edition = project
    sandbox = sandbox_factory(latency_ms=20)
    url = f"sqlite:///{tmp_path}/ledger.db"
    env = sender_env(root, url, sandbox.url, key="SG.signals")
    command = run_command(edition, "--max-rate", "25", "--concurrency", "4")
    sender = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 60
    while len(sandbox.messages()) < 10:
        assert sender.poll() is None and time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    sender.send_signal(sig)
    output, _ = sender.communicate(timeout=30)
    assert sender.returncode == 1, output
    assert f"stopped by {sig.name}" in output
    with Ledger.connect(url) as ledger:
        info = ledger.editions.get_edition("weekly_winddown", edition.key)
        assert info is not None
        states = Counter(r.state for r in ledger.deliveries.iter_deliveries(info.edition_id))
    assert states[DeliveryState.CLAIMED] == 0  # in-flight sends finished and were recorded
    assert states[DeliveryState.PLANNED] > 0, (states, output)  # it really stopped early
    assert states[DeliveryState.SENT] == len(sandbox.messages())
    rerun = subprocess.run(
        run_command(edition), env=env, capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    per_delivery = Counter(m["custom_args"]["delivery_id"] for m in sandbox.messages())
    assert set(per_delivery.values()) == {1}
    with Ledger.connect(url) as ledger:
        rows = list(ledger.deliveries.iter_deliveries(info.edition_id))
    assert {r.delivery_id for r in rows if r.state is DeliveryState.SENT} == set(per_delivery)
