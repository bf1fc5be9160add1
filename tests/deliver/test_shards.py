"""Shards of one edition sent by several processes at once: exactly one email per user."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from calm_mail.edition import Edition
from calm_mail.records import DeliveryState
from calm_mail.store import Ledger
from tests.deliver.conftest import run_command, sender_env


def test_four_shard_processes_send_every_user_once_under_one_batch(
    project: tuple[Path, Edition], ledger_url: str, sandbox_factory: Any
) -> None:
    root, edition = project
    sandbox = sandbox_factory(latency_ms=5)
    env = sender_env(root, ledger_url, sandbox.url, key="SG.shards")
    command = run_command(edition, "--json")
    workers = [
        subprocess.Popen(
            [*command, "--shard", f"{k}/4"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    outputs = [worker.communicate(timeout=240) for worker in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, (out, err)
    with Ledger.connect(ledger_url) as ledger:
        info = ledger.editions.get_edition("weekly_winddown", edition.key)
        assert info is not None and info.state == "sent"
        rows = list(ledger.deliveries.iter_deliveries(info.edition_id))
    mailed = {r.delivery_id for r in rows if r.state is DeliveryState.SENT}
    assert len(mailed) > 50
    messages = sandbox.messages()
    per_delivery = Counter(m["custom_args"]["delivery_id"] for m in messages)
    assert set(per_delivery) == mailed and set(per_delivery.values()) == {1}
    assert {m["batch_id"] for m in messages} == {info.batch_id}
