"""Cancel, pause and resume: at the sandbox's scheduled sends and in the ledger."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from calm_mail.campaign import Campaign
from calm_mail.compose.composer import Composer
from calm_mail.deliver.control import change_edition
from calm_mail.deliver.engine import Engine, EngineConfig
from calm_mail.deliver.sendgrid import SendGridTransport
from calm_mail.edition import Edition
from calm_mail.errors import UsageError
from tests.deliver.conftest import KEY

EDITION = Edition.parse("2026-W27")


def _send_scheduled(
    ledger: Any, composer: Composer, delivery: Any, url: str, *, send_at: datetime, n: int = 6
) -> int:
    info = ledger.editions.ensure_edition("weekly_winddown", EDITION.key, experiment="exp")
    rows = [delivery(user_id=f"u{i}", email=f"u{i}@example.com", send_at=send_at) for i in range(n)]
    ledger.deliveries.add_planned(info.edition_id, "weekly_winddown", rows)

    async def go() -> None:
        transport = SendGridTransport(KEY, host=url)
        try:
            batch = await transport.create_batch()
            ledger.editions.update_edition(info.edition_id, batch_id=batch)
            engine = Engine(
                ledger.deliveries,
                ledger.editions,
                composer,
                transport,
                edition_id=info.edition_id,
                edition=EDITION.key,
                batch_id=batch,
                config=EngineConfig(max_rate=1000, concurrency=4, limit=n // 2),
            )
            await engine.run()
        finally:
            await transport.aclose()

    asyncio.run(go())
    return int(info.edition_id)


def _change(campaign: Campaign, ledger: Any, url: str, action: str, now: datetime) -> str:
    return asyncio.run(
        change_edition(
            campaign,
            EDITION,
            ledger.editions,
            ledger.deliveries,
            action,
            api_key=KEY,
            api_host=url,
            now=now,
        )
    )


def _scheduled(url: str) -> list[dict[str, str]]:
    response = httpx.get(
        f"{url}/v3/user/scheduled_sends", headers={"Authorization": f"Bearer {KEY}"}
    )
    return list(response.json())


def test_cancel_holds_back_scheduled_mail_and_stops_every_later_run(
    ledger: Any, campaign: Campaign, composer: Composer, delivery: Any, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory()
    now = datetime.now(UTC)
    edition_id = _send_scheduled(
        ledger, composer, delivery, sandbox.url, send_at=now + timedelta(hours=5)
    )
    message = _change(campaign, ledger, sandbox.url, "cancel", now)
    assert "cancelled" in message and "3 planned messages will not be sent" in message
    info = ledger.editions.get_edition_by_id(edition_id)
    assert (info.state, info.scheduled_status) == ("cancelled", "cancel")
    assert {"batch_id": info.batch_id, "status": "cancel"} in _scheduled(sandbox.url)
    assert [entry.action for entry in ledger.editions.edition_log(edition_id)][-1] == "cancel"
    with pytest.raises(UsageError, match="already cancelled"):
        _change(campaign, ledger, sandbox.url, "cancel", now)


def test_pause_then_resume(
    ledger: Any, campaign: Campaign, composer: Composer, delivery: Any, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory()
    now = datetime.now(UTC)
    edition_id = _send_scheduled(
        ledger, composer, delivery, sandbox.url, send_at=now + timedelta(hours=5)
    )
    _change(campaign, ledger, sandbox.url, "pause", now)
    batch = ledger.editions.get_edition_by_id(edition_id).batch_id
    assert {"batch_id": batch, "status": "pause"} in _scheduled(sandbox.url)
    assert ledger.editions.get_edition_state(edition_id) == "paused"
    _change(campaign, ledger, sandbox.url, "resume", now)
    assert ledger.editions.get_edition_state(edition_id) == "sending"
    assert all(entry["batch_id"] != batch for entry in _scheduled(sandbox.url))
    with pytest.raises(UsageError, match="not paused"):
        _change(campaign, ledger, sandbox.url, "resume", now)


def test_too_late_inside_the_ten_minute_cut_off_changes_nothing(
    ledger: Any, campaign: Campaign, composer: Composer, delivery: Any, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory()
    now = datetime.now(UTC)
    edition_id = _send_scheduled(
        ledger, composer, delivery, sandbox.url, send_at=now + timedelta(minutes=5)
    )
    with pytest.raises(UsageError, match="too late to cancel"):
        _change(campaign, ledger, sandbox.url, "cancel", now)
    assert ledger.editions.get_edition_state(edition_id) != "cancelled"
    assert _scheduled(sandbox.url) == []


def test_status_and_history_commands(
    ledger_url: str,
    campaign: Campaign,
    composer: Composer,
    delivery: Any,
    sandbox_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import orjson
    from click.testing import CliRunner

    from calm_mail.cli import main
    from calm_mail.store import Ledger

    sandbox = sandbox_factory()
    with Ledger.connect(ledger_url) as ledger:
        _send_scheduled(
            ledger, composer, delivery, sandbox.url, send_at=datetime.now(UTC) + timedelta(hours=5)
        )
    monkeypatch.setenv("CALM_MAIL_DATABASE_URL", ledger_url)
    root = str(campaign.root)
    status = CliRunner().invoke(
        main, ["--root", root, "status", "weekly_winddown", "--edition", EDITION.key, "--json"]
    )
    assert status.exit_code == 0, status.output
    data = orjson.loads(status.output)
    assert data["counts"] == {"planned/personalized": 3, "sent/personalized": 3}
    assert data["batch_id"]
    history = CliRunner().invoke(main, ["--root", root, "history", "weekly_winddown", "--json"])
    assert history.exit_code == 0, history.output
    [row] = orjson.loads(history.output)
    assert (row["edition"], row["sent"], row["open"]) == (EDITION.key, 3, 3)
    missing = CliRunner().invoke(
        main, ["--root", root, "status", "weekly_winddown", "--edition", "2026-W30"]
    )
    assert missing.exit_code == 2 and "no such edition" in missing.output
