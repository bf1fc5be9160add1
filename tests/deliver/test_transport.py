"""SendGridTransport against the sandbox: each status maps to what the engine must do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calm_mail.compose.composer import Composer
from calm_mail.deliver.sendgrid import SendGridTransport, UnknownFate
from calm_mail.errors import FatalDeliveryError, RecipientRejected, RetriableDeliveryError
from calm_mail.records import ComposedMessage
from tests.deliver.conftest import KEY


def _message(composer: Composer, delivery: Callable[..., Any], **overrides: Any) -> ComposedMessage:
    return composer.compose(delivery(**overrides), "d-" + overrides.get("user_id", "u-42"))


def _send(url: str, message: ComposedMessage, key: str = KEY) -> Any:
    async def go() -> Any:
        transport = SendGridTransport(key, host=url)
        try:
            return await transport.send(message)
        finally:
            await transport.aclose()

    return asyncio.run(go())


def test_accepted_message_carries_everything_the_ledger_joins_on(
    sandbox_factory: Any, composer: Composer, delivery: Any
) -> None:
    sandbox = sandbox_factory()
    result = _send(sandbox.url, _message(composer, delivery))
    assert result.message_id and len(result.message_id) >= 16
    [stored] = sandbox.messages(full=True)
    assert stored["custom_args"] == {
        "delivery_id": "d-u-42",
        "campaign": "weekly_winddown",
        "edition": "2026-W27",
        "arm": "personalized",
    }
    assert stored["to"] == ["reader@example.com"]
    assert stored["send_at"] == int(datetime(2026, 7, 4, 12, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("key", "error"),
    [("SG.invalid-key", FatalDeliveryError), ("SG.forbidden-key", FatalDeliveryError)],
)
def test_bad_key_is_fatal_and_the_key_never_appears_in_the_error(
    sandbox_factory: Any, composer: Composer, delivery: Any, key: str, error: type
) -> None:
    sandbox = sandbox_factory()
    with pytest.raises(error) as info:
        _send(sandbox.url, _message(composer, delivery), key=key)
    assert key not in str(info.value)
    assert key not in repr(SendGridTransport(key, host=sandbox.url))
    assert sandbox.messages() == []


def test_a_send_at_beyond_72_hours_is_this_recipients_problem(
    sandbox_factory: Any, composer: Composer, delivery: Any
) -> None:
    sandbox = sandbox_factory()
    later = datetime.now(UTC) + timedelta(hours=80)
    with pytest.raises(RecipientRejected, match="send_at"):
        _send(sandbox.url, _message(composer, delivery, send_at=later))


def test_rate_limit_is_retriable_with_the_reset_hint(
    sandbox_factory: Any, composer: Composer, delivery: Any
) -> None:
    sandbox = sandbox_factory(rate_limit=1)
    message = _message(composer, delivery)

    async def burst() -> list[Any]:
        transport = SendGridTransport(KEY, host=sandbox.url)
        try:
            return await asyncio.gather(
                *(transport.send(message) for _ in range(5)), return_exceptions=True
            )
        finally:
            await transport.aclose()

    results = asyncio.run(burst())
    limited = [r for r in results if isinstance(r, RetriableDeliveryError)]
    assert limited, results
    assert all(r.status == 429 and r.retry_after is not None for r in limited)


def test_server_errors_and_dropped_connections_have_unknown_fate(
    sandbox_factory: Any, composer: Composer, delivery: Any
) -> None:
    for options in ({"accept_then_fail_rate": 1.0}, {"drop_rate": 1.0}):
        sandbox = sandbox_factory(**options)
        with pytest.raises(UnknownFate):
            _send(sandbox.url, _message(composer, delivery))


def test_outage_503_is_safe_to_retry(
    sandbox_factory: Any, composer: Composer, delivery: Any
) -> None:
    sandbox = sandbox_factory(outages=((0.0, 60.0),))
    with pytest.raises(RetriableDeliveryError) as info:
        _send(sandbox.url, _message(composer, delivery))
    assert info.value.status == 503
    assert sandbox.messages() == []


def test_batch_pause_resume_cancel(sandbox_factory: Any) -> None:
    sandbox = sandbox_factory()

    async def go() -> str:
        transport = SendGridTransport(KEY, host=sandbox.url)
        try:
            batch = await transport.create_batch()
            assert batch
            await transport.scheduled_send(batch, "pause")
            await transport.scheduled_send(batch, None)
            await transport.scheduled_send(batch, "cancel")
            return batch
        finally:
            await transport.aclose()

    batch = asyncio.run(go())
    import httpx

    listed = httpx.get(
        f"{sandbox.url}/v3/user/scheduled_sends", headers={"Authorization": f"Bearer {KEY}"}
    ).json()
    assert {"batch_id": batch, "status": "cancel"} in listed
