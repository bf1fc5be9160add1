"""Batches, scheduled sends (pause / cancel / resume) and mail held until its send_at."""

from __future__ import annotations

import time

import httpx
import pytest
from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from calm_mail.sandbox import SandboxConfig, SandboxHandle, run_sandbox
from tests.sandbox.conftest import AUTH, KEY, mail


def new_batch(http: httpx.Client, handle: SandboxHandle) -> str:
    response = http.post(f"{handle.url}/v3/mail/batch", headers=AUTH)
    assert response.status_code == 201
    batch_id: str = response.json()["batch_id"]
    return batch_id


def schedule(
    http: httpx.Client, handle: SandboxHandle, batch_id: str, status: str
) -> httpx.Response:
    return http.post(
        f"{handle.url}/v3/user/scheduled_sends",
        headers=AUTH,
        json={"batch_id": batch_id, "status": status},
    )


def send_later(
    http: httpx.Client,
    handle: SandboxHandle,
    batch_id: str,
    delay_s: int,
    to: str = "user@example.com",
) -> str:
    body = mail(to=to, batch_id=batch_id, send_at=int(time.time()) + delay_s)
    response = http.post(f"{handle.url}/v3/mail/send", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    return response.headers["X-Message-Id"]


def statuses(handle: SandboxHandle) -> dict[str, str]:
    return {m["to"][0]: m["status"] for m in handle.messages()}


def test_official_client_batch_round_trip(sandbox: SandboxHandle) -> None:
    sg = SendGridAPIClient(KEY, host=sandbox.url)
    created = sg.client.mail.batch.post()
    assert created.status_code == 201
    batch_id = created.to_dict["batch_id"]
    assert len(batch_id) == 32 and batch_id.isalnum()
    fetched = sg.client.mail.batch._(batch_id).get()
    assert fetched.to_dict == {"batch_id": batch_id}
    with pytest.raises(http_errors.BadRequestsError):
        sg.client.mail.batch._("no-such-batch").get()


def test_pause_cancel_list_get_patch_delete(http: httpx.Client, sandbox: SandboxHandle) -> None:
    first, second = new_batch(http, sandbox), new_batch(http, sandbox)
    created = schedule(http, sandbox, first, "pause")
    assert created.status_code == 201
    assert created.json() == {"batch_id": first, "status": "pause"}
    assert schedule(http, sandbox, first, "cancel").status_code == 400  # already paused
    assert schedule(http, sandbox, second, "stop").status_code == 400
    assert schedule(http, sandbox, "unknown", "pause").status_code == 400
    url = f"{sandbox.url}/v3/user/scheduled_sends"
    assert {"batch_id": first, "status": "pause"} in http.get(url, headers=AUTH).json()
    assert http.get(f"{url}/{first}", headers=AUTH).json() == [
        {"batch_id": first, "status": "pause"}
    ]
    assert http.patch(f"{url}/{first}", json={"status": "cancel"}, headers=AUTH).status_code == 204
    assert http.get(f"{url}/{first}", headers=AUTH).json()[0]["status"] == "cancel"
    assert http.delete(f"{url}/{first}", headers=AUTH).status_code == 204
    assert http.get(f"{url}/{first}", headers=AUTH).json() == []
    assert http.delete(f"{url}/{first}", headers=AUTH).status_code == 404


def test_at_most_ten_batches_paused_or_cancelled() -> None:
    with run_sandbox(SandboxConfig()) as handle, httpx.Client() as http:
        batches = [new_batch(http, handle) for _ in range(11)]
        for batch_id in batches[:10]:
            assert schedule(http, handle, batch_id, "cancel").status_code == 201
        refused = schedule(http, handle, batches[10], "pause")
        assert refused.status_code == 400
        assert "max limit" in refused.json()["errors"][0]["message"]
        http.delete(f"{handle.url}/v3/user/scheduled_sends/{batches[0]}", headers=AUTH)
        assert schedule(http, handle, batches[10], "pause").status_code == 201


def test_cutoff_refuses_inside_ten_minutes(http: httpx.Client, sandbox: SandboxHandle) -> None:
    soon, later = new_batch(http, sandbox), new_batch(http, sandbox)
    send_later(http, sandbox, soon, 9 * 60, "soon@example.com")
    send_later(http, sandbox, later, 11 * 60, "later@example.com")
    refused = schedule(http, sandbox, soon, "cancel")
    assert refused.status_code == 400
    assert "10 minutes" in refused.json()["errors"][0]["message"]
    assert schedule(http, sandbox, later, "cancel").status_code == 201


def test_scheduled_mail_is_held_then_released(http: httpx.Client, sandbox: SandboxHandle) -> None:
    batch_id = new_batch(http, sandbox)
    send_later(http, sandbox, batch_id, 3600)
    assert statuses(sandbox) == {"user@example.com": "scheduled"}
    response = http.post(f"{sandbox.url}/_sandbox/clock", json={"advance_s": 3601})
    assert response.status_code == 200
    assert statuses(sandbox) == {"user@example.com": "delivered"}


def test_cancelled_batch_is_dropped_and_paused_batch_held(
    http: httpx.Client, sandbox: SandboxHandle
) -> None:
    cancelled, paused, free = (new_batch(http, sandbox) for _ in range(3))
    send_later(http, sandbox, cancelled, 3600, "c@example.com")
    send_later(http, sandbox, paused, 3600, "p@example.com")
    send_later(http, sandbox, free, 3600, "f@example.com")
    assert schedule(http, sandbox, cancelled, "cancel").status_code == 201
    assert schedule(http, sandbox, paused, "pause").status_code == 201
    sandbox.advance_clock(3700)
    assert statuses(sandbox) == {
        "c@example.com": "cancelled",
        "p@example.com": "scheduled",
        "f@example.com": "delivered",
    }
    http.delete(f"{sandbox.url}/v3/user/scheduled_sends/{paused}", headers=AUTH)
    assert statuses(sandbox)["p@example.com"] == "delivered"
    http.delete(f"{sandbox.url}/v3/user/scheduled_sends/{cancelled}", headers=AUTH)


def test_paused_mail_expires_after_72_hours(http: httpx.Client, sandbox: SandboxHandle) -> None:
    batch_id = new_batch(http, sandbox)
    send_later(http, sandbox, batch_id, 3600)
    assert schedule(http, sandbox, batch_id, "pause").status_code == 201
    sandbox.advance_clock(3600 + 73 * 3600)
    assert statuses(sandbox) == {"user@example.com": "expired"}
    http.delete(f"{sandbox.url}/v3/user/scheduled_sends/{batch_id}", headers=AUTH)


def test_configured_clock_offset_moves_the_72_hour_window() -> None:
    with run_sandbox(SandboxConfig(clock_offset_s=2 * 86400)) as handle, httpx.Client() as http:
        body = mail(send_at=int(time.time()) + 100 * 3600)  # 52 h ahead on the sandbox clock
        assert http.post(f"{handle.url}/v3/mail/send", json=body, headers=AUTH).status_code == 202
        assert handle.messages()[0]["status"] == "scheduled"
