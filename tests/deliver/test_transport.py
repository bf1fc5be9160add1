"""SendGridTransport against the sandbox: each status maps to what the engine must do; the
outbox (the dry run's transport): its files, its manifest and its sample."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from calm_mail.compose.composer import Composer
from calm_mail.deliver.outbox import MANIFEST, ManifestComposer, OutboxTransport, quotas
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


# --------------------------------------------------------------------------- outbox

ARMS = ("control", "personalized")
LOCALES = ("en-US", "fr-FR", "ja-JP")


def _outbox_run(
    folder: Path, composer: Composer, delivery: Any, order: list[int], sample: int | None
) -> OutboxTransport:
    """One dry run's outbox: recipient i of `order` is in arm i % 2 and locale i % 3."""
    outbox = OutboxTransport(folder, sample=sample)
    wrapped = ManifestComposer(composer, outbox)

    async def go() -> None:
        for i in order:
            planned = delivery(
                user_id=f"u-{i:03d}", arm=ARMS[i % 2], locale=LOCALES[i % 3], email=f"r{i}@x.io"
            )
            await outbox.send(wrapped.compose(planned, f"d{i:021d}"))
        await outbox.aclose()

    asyncio.run(go())
    return outbox


def _manifest(folder: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (folder / MANIFEST).read_bytes().splitlines()]


def test_outbox_writes_every_recipient_and_a_sorted_manifest(
    tmp_path: Path, composer: Composer, delivery: Any
) -> None:
    outbox = _outbox_run(tmp_path, composer, delivery, [3, 1, 2, 0], sample=None)
    rows = _manifest(tmp_path)
    assert [row["user_id"] for row in rows] == ["u-000", "u-001", "u-002", "u-003"]
    assert all(row["eml_written"] and (tmp_path / row["file"]).is_file() for row in rows)
    assert [row["locale"] for row in rows] == ["en-US", "fr-FR", "ja-JP", "en-US"]
    assert (outbox.written, outbox.composed) == (4, 4)


def test_a_sample_is_the_same_whatever_order_the_sends_finish_in(
    tmp_path: Path, composer: Composer, delivery: Any
) -> None:
    order = list(range(60))
    shuffled = random.Random(7).sample(order, len(order))
    first = _outbox_run(tmp_path / "a", composer, delivery, order, sample=8)
    _outbox_run(tmp_path / "b", composer, delivery, shuffled, sample=8)
    assert (tmp_path / "a" / MANIFEST).read_bytes() == (tmp_path / "b" / MANIFEST).read_bytes()
    names = sorted(p.name for p in (tmp_path / "a").glob("*.eml"))
    assert names == sorted(p.name for p in (tmp_path / "b").glob("*.eml"))
    assert len(names) == 8 and (first.written, first.composed) == (8, 60)
    rows = _manifest(tmp_path / "a")
    assert len(rows) == 60
    written = {(row["arm"], row["locale"]) for row in rows if row["eml_written"]}
    assert written == {(arm, locale) for arm in ARMS for locale in LOCALES}


def test_a_sample_removes_the_files_an_earlier_run_wrote_for_the_others(
    tmp_path: Path, composer: Composer, delivery: Any
) -> None:
    _outbox_run(tmp_path, composer, delivery, list(range(20)), sample=None)
    _outbox_run(tmp_path, composer, delivery, list(range(20)), sample=3)
    rows = _manifest(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.eml")) == sorted(
        row["file"] for row in rows if row["eml_written"]
    )
    assert len(rows) == 20 and sum(row["eml_written"] for row in rows) == 3


def test_quotas_cover_every_arm_first_then_every_group_then_share_by_size() -> None:
    counts = {("control", "en"): 50, ("control", "fr"): 5, ("treat", "en"): 40, ("treat", "ja"): 1}
    assert quotas(counts, 2) == {
        ("control", "en"): 1,
        ("control", "fr"): 0,
        ("treat", "en"): 1,
        ("treat", "ja"): 0,
    }
    four = quotas(counts, 4)
    assert all(n == 1 for n in four.values())
    twenty = quotas(counts, 20)
    assert sum(twenty.values()) == 20 and twenty[("treat", "ja")] == 1
    assert twenty[("control", "en")] > twenty[("treat", "en")] > twenty[("control", "fr")]
    assert quotas(counts, 1000) == counts


def test_a_message_the_outbox_cannot_write_is_this_recipients_problem(
    tmp_path: Path, composer: Composer, delivery: Any
) -> None:
    message = _message(composer, delivery)
    bad = dataclasses.replace(message, to_email="reader@example.com\nBcc: all@example.com")
    outbox = OutboxTransport(tmp_path)
    with pytest.raises(RecipientRejected, match="line break"):
        asyncio.run(outbox.send(bad))
    assert not list(tmp_path.glob("*.eml"))
