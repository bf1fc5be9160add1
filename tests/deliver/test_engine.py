"""The engine over the real ledger (SQLite and PostgreSQL) and the sandbox over HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from calm_mail.compose.composer import Composer
from calm_mail.deliver.engine import Engine, EngineConfig
from calm_mail.deliver.reconcile import reconcile
from calm_mail.deliver.sendgrid import SendGridTransport
from calm_mail.records import ContentSource, DeliveryState
from tests.deliver.conftest import KEY

CAMPAIGN = "weekly_winddown"


def _plan(ledger: Any, delivery: Any, n: int, *, holdouts: int = 0) -> int:
    info = ledger.editions.ensure_edition(CAMPAIGN, "2026-W27", experiment="exp")
    rows = [delivery(user_id=f"u{i:04d}", email=f"u{i:04d}@example.com") for i in range(n)]
    rows += [
        delivery(
            user_id=f"h{i:04d}",
            email=f"h{i:04d}@example.com",
            arm="holdout",
            source=ContentSource.HOLDOUT,
            item_ids=(),
        )
        for i in range(holdouts)
    ]
    assert ledger.deliveries.add_planned(info.edition_id, CAMPAIGN, rows) == n + holdouts
    return int(info.edition_id)


def _run(ledger: Any, composer: Composer, url: str, edition_id: int, **config: Any) -> Any:
    async def go() -> Any:
        transport = SendGridTransport(KEY, host=url, concurrency=16)
        engine = Engine(
            ledger.deliveries,
            ledger.editions,
            composer,
            transport,
            edition_id=edition_id,
            edition="2026-W27",
            batch_id=None,
            config=EngineConfig(
                **{
                    "max_rate": 2000,
                    "concurrency": 16,
                    "base_backoff_s": 0.01,
                    "max_backoff_s": 0.05,
                    **config,
                }
            ),
        )
        try:
            return await engine.run()
        finally:
            await transport.aclose()

    return asyncio.run(go())


def _per_address(sandbox: Any) -> Counter[str]:
    return Counter(address for m in sandbox.messages() for address in m["to"])


def test_every_planned_user_gets_exactly_one_email_and_a_rerun_sends_nothing(
    ledger: Any, composer: Composer, delivery: Any, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory()
    edition_id = _plan(ledger, delivery, 60, holdouts=5)
    tally = _run(ledger, composer, sandbox.url, edition_id, chunk=25)
    assert tally.total_sent == 60 and tally.stopped is None
    again = _run(ledger, composer, sandbox.url, edition_id)
    assert again.total_sent == 0
    per_address = _per_address(sandbox)
    assert len(per_address) == 60 and set(per_address.values()) == {1}
    assert not any(a.startswith("h") for a in per_address)  # holdouts are never mailed
    counts = ledger.deliveries.counts(edition_id)
    assert counts[("sent", "personalized")] == 60
    assert counts[("skipped", "holdout")] == 5


def test_limit_sends_only_that_many(
    ledger: Any, composer: Composer, delivery: Any, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory()
    edition_id = _plan(ledger, delivery, 30)
    assert _run(ledger, composer, sandbox.url, edition_id, limit=7).total_sent == 7
    assert len(sandbox.messages()) == 7
    assert _run(ledger, composer, sandbox.url, edition_id).total_sent == 23
    assert set(_per_address(sandbox).values()) == {1}


def test_503s_and_429s_are_retried_until_everything_is_sent(
    ledger: Any, composer: Composer, delivery: Any, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory(outages=((0.0, 0.6),), rate_limit=200, seed=3)
    edition_id = _plan(ledger, delivery, 40)
    tally = _run(ledger, composer, sandbox.url, edition_id, max_tries=12, max_backoff_s=0.3)
    assert tally.total_sent == 40 and tally.retried > 0
    assert set(_per_address(sandbox).values()) == {1} and len(_per_address(sandbox)) == 40


def test_unknown_fate_is_left_claimed_then_released_only_after_grace(
    ledger: Any, composer: Composer, delivery: Any, sandbox_factory: Any
) -> None:
    # 500s and dropped connections: SendGrid may or may not have the message. Here the
    # sandbox did not store them, and no webhook event arrives, so after the grace period
    # they are resent exactly once.
    sandbox = sandbox_factory(fail_rate=0.3, drop_rate=0.2, seed=11)
    edition_id = _plan(ledger, delivery, 50)
    first = _run(ledger, composer, sandbox.url, edition_id)
    claimed = list(ledger.deliveries.iter_deliveries(edition_id, state=DeliveryState.CLAIMED))
    assert first.unknown == len(claimed) > 0
    now = datetime.now(UTC)
    early = reconcile(
        ledger.deliveries,
        ledger.events,
        edition_id,
        now=now,
        stale_after=timedelta(0),
        grace=timedelta(days=9999),
    )
    assert (early.confirmed, early.released, early.pending) == (0, 0, len(claimed))
    sent_before = len(sandbox.messages())
    assert sent_before == 50 - len(claimed)
    for _ in range(10):  # each round some fail again; nothing is ever sent twice
        result = reconcile(
            ledger.deliveries,
            ledger.events,
            edition_id,
            now=datetime.now(UTC) + timedelta(days=400),
            stale_after=timedelta(0),
            grace=timedelta(0),
        )
        _run(ledger, composer, sandbox.url, edition_id)
        if not result.pending and not list(
            ledger.deliveries.iter_deliveries(edition_id, state=DeliveryState.CLAIMED)
        ):
            break
    per_address = _per_address(sandbox)
    assert len(per_address) == 50 and set(per_address.values()) == {1}


def test_a_rejected_key_stops_the_run_and_releases_what_was_not_sent(
    ledger: Any, composer: Composer, delivery: Any, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory()
    edition_id = _plan(ledger, delivery, 20)

    async def go() -> Any:
        transport = SendGridTransport("SG.invalid-key", host=sandbox.url)
        engine = Engine(
            ledger.deliveries,
            ledger.editions,
            composer,
            transport,
            edition_id=edition_id,
            edition="2026-W27",
            batch_id=None,
            config=EngineConfig(max_rate=1000, concurrency=4),
        )
        try:
            return await engine.run()
        finally:
            await transport.aclose()

    tally = asyncio.run(go())
    assert tally.stopped and "fatal" in tally.stopped and tally.total_sent == 0
    counts = ledger.deliveries.counts(edition_id)
    assert counts.get(("planned", "personalized")) == 20  # all back to planned, none lost
    assert sandbox.messages() == []


def test_a_cancelled_edition_claims_nothing(
    ledger: Any, composer: Composer, delivery: Any, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory()
    edition_id = _plan(ledger, delivery, 10)
    ledger.editions.update_edition(edition_id, state="cancelled")
    tally = _run(ledger, composer, sandbox.url, edition_id)
    assert tally.total_sent == 0 and tally.stopped == "edition cancelled"
    assert sandbox.messages() == []


def test_the_circuit_breaker_pauses_the_run_and_loses_nothing(
    ledger: Any, composer: Composer, delivery: Any, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory(outages=((0.0, 600.0),))
    edition_id = _plan(ledger, delivery, 30)
    tally = _run(
        ledger,
        composer,
        sandbox.url,
        edition_id,
        circuit_breaker=8,
        circuit_seconds=0.2,
        max_tries=50,
    )
    assert tally.circuit_open and "503" in tally.circuit_open
    assert tally.stopped and tally.stopped.startswith("circuit breaker")
    assert tally.total_sent == 0 and sandbox.messages() == []
    counts = ledger.deliveries.counts(edition_id)
    assert counts == {("planned", "personalized"): 30}  # every row back to planned


def test_throttling_and_a_short_blip_never_trip_the_circuit_breaker(
    ledger: Any, composer: Composer, delivery: Any, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory(rate_limit=20, outages=((0.0, 0.3),))
    edition_id = _plan(ledger, delivery, 40)
    tally = _run(
        ledger,
        composer,
        sandbox.url,
        edition_id,
        circuit_breaker=3,
        circuit_seconds=5.0,
        max_tries=40,
        max_backoff_s=0.3,
    )
    assert tally.circuit_open is None and tally.total_sent == 40
    assert tally.retried > 3  # there were 429s and 503s, just not a sustained failure
