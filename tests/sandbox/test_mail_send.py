"""The official `sendgrid` client against the sandbox: it cannot tell it from SendGrid."""

from __future__ import annotations

import gzip
import json
import re

import httpx
import pytest
from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Asm, Category, CustomArg, Mail

from calm_mail.sandbox import SandboxConfig, SandboxHandle, run_sandbox
from tests.sandbox.conftest import AUTH, KEY, mail


def client(handle: SandboxHandle, key: str = KEY) -> SendGridAPIClient:
    sg = SendGridAPIClient(key, host=handle.url)
    sg.client.timeout = 10
    return sg


def errors_of(exc: http_errors.HTTPError) -> list[dict[str, object]]:
    body = json.loads(exc.body)
    assert set(body) == {"errors"}
    for error in body["errors"]:
        assert set(error) == {"message", "field", "help"}
    return list(body["errors"])


def test_helper_mail_is_accepted_with_a_message_id(sandbox: SandboxHandle) -> None:
    message = Mail(
        from_email="winddown@example.com",
        to_emails="ana@example.com",
        subject="Your weekly winddown",
        plain_text_content="hi",
        html_content="<p>hi</p>",
    )
    message.custom_arg = [CustomArg("delivery_id", "d-1"), CustomArg("arm", "personalized")]
    message.category = [Category("weekly_winddown")]
    message.asm = Asm(42)
    response = client(sandbox).send(message)
    assert response.status_code == 202
    assert response.body == b""
    message_id = response.headers["X-Message-Id"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", message_id)
    [stored] = sandbox.messages()
    assert stored["message_id"] == message_id
    assert stored["to"] == ["ana@example.com"]
    assert stored["custom_args"] == {"delivery_id": "d-1", "arm": "personalized"}
    assert stored["categories"] == ["weekly_winddown"]
    assert stored["status"] == "delivered"


def test_sandbox_mode_validates_but_keeps_nothing(sandbox: SandboxHandle) -> None:
    body = mail(mail_settings={"sandbox_mode": {"enable": True}})
    response = client(sandbox).send(body)
    assert response.status_code == 200
    assert sandbox.messages() == []


def test_bad_request_raises_with_every_error(sandbox: SandboxHandle) -> None:
    body = mail(**{"from": {"email": "not-an-address"}})
    body["personalizations"][0]["to"].append({"email": "also bad"})
    with pytest.raises(http_errors.BadRequestsError) as info:
        client(sandbox).send(body)
    fields = {e["field"] for e in errors_of(info.value)}
    assert fields == {"from.email", "personalizations.0.to.1.email"}
    assert sandbox.messages() == []


@pytest.mark.parametrize(
    ("key", "error", "message"),
    [
        (
            "SG.invalid-key",
            http_errors.UnauthorizedError,
            "The provided authorization grant is invalid, expired, or revoked",
        ),
        (
            "not-a-sendgrid-key",
            http_errors.UnauthorizedError,
            "The provided authorization grant is invalid, expired, or revoked",
        ),
        ("SG.forbidden-key", http_errors.ForbiddenError, "access forbidden"),
    ],
)
def test_auth_failures(
    sandbox: SandboxHandle, key: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        client(sandbox, key).send(mail())
    assert isinstance(info.value, http_errors.HTTPError)
    assert errors_of(info.value) == [{"message": message, "field": None, "help": None}]
    assert key not in info.value.body.decode()


def test_missing_authorization_header(http: httpx.Client, sandbox: SandboxHandle) -> None:
    response = http.post(f"{sandbox.url}/v3/mail/send", json=mail())
    assert response.status_code == 401
    assert response.json()["errors"][0]["message"] == "authorization required"


def test_configured_keys_restrict_access() -> None:
    with run_sandbox(SandboxConfig(api_keys=frozenset({"SG.only-this"}))) as handle:
        assert client(handle, "SG.only-this").send(mail()).status_code == 202
        with pytest.raises(http_errors.UnauthorizedError):
            client(handle, "SG.another").send(mail())


def test_unverified_sender_is_forbidden() -> None:
    config = SandboxConfig(verified_senders=frozenset({"winddown@example.com"}))
    with run_sandbox(config) as handle:
        assert client(handle).send(mail()).status_code == 202
        with pytest.raises(http_errors.ForbiddenError) as info:
            client(handle).send(mail(**{"from": {"email": "someone@example.com"}}))
        assert errors_of(info.value)[0]["field"] == "from"


def test_payload_too_large() -> None:
    with run_sandbox(SandboxConfig(max_body_bytes=2_000)) as handle:
        big = mail(content=[{"type": "text/plain", "value": "x" * 5_000}])
        with pytest.raises(http_errors.PayloadTooLargeError) as info:
            client(handle).send(big)
        assert errors_of(info.value)[0]["message"] == "content too large"
        assert handle.messages() == []


def test_gzip_body_is_accepted(http: httpx.Client, sandbox: SandboxHandle) -> None:
    raw = gzip.compress(json.dumps(mail()).encode())
    response = http.post(
        f"{sandbox.url}/v3/mail/send",
        content=raw,
        headers={**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 202


def test_invalid_utf8_is_415(http: httpx.Client, sandbox: SandboxHandle) -> None:
    # The official client always sends json.dumps output, so raw bytes go through httpx.
    raw = json.dumps(mail()).encode().replace(b"hello", b"hel\xff\xfelo")
    response = http.post(f"{sandbox.url}/v3/mail/send", content=raw, headers=AUTH)
    assert response.status_code == 415
    assert response.json()["errors"] == [
        {"message": "Invalid UTF8 in request", "field": None, "help": None}
    ]
    assert sandbox.messages() == []


def test_malformed_json_is_400(http: httpx.Client, sandbox: SandboxHandle) -> None:
    response = http.post(f"{sandbox.url}/v3/mail/send", content=b"{nope", headers=AUTH)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Bad Request", "field": None, "help": None}]}


def test_rate_limited_send_raises_429_with_reset() -> None:
    with run_sandbox(SandboxConfig(rate_limit=2)) as handle:
        sg = client(handle)
        statuses = []
        for _ in range(5):
            try:
                statuses.append(sg.send(mail()).status_code)
            except http_errors.TooManyRequestsError as exc:
                statuses.append(exc.status_code)
                assert exc.headers["X-RateLimit-Limit"] == "2"
                assert exc.headers["X-RateLimit-Remaining"] == "0"
                assert int(exc.headers["X-RateLimit-Reset"]) > 0
                assert errors_of(exc)[0]["message"] == "too many requests"
        assert 429 in statuses
        assert statuses.count(202) == len(handle.messages())


@pytest.mark.parametrize(
    "error", [http_errors.InternalServerError, http_errors.ServiceUnavailableError]
)
def test_server_errors_raise_and_store_nothing(error: type[Exception]) -> None:
    with run_sandbox(SandboxConfig(fail_rate=1.0, seed=3)) as handle:
        seen = set()
        for _ in range(12):
            with pytest.raises(http_errors.HTTPError) as info:
                client(handle).send(mail())
            seen.add(type(info.value))
        assert error in seen
        assert handle.messages() == []


def test_unknown_paths_and_methods_are_sendgrid_shaped(
    http: httpx.Client, sandbox: SandboxHandle
) -> None:
    missing = http.get(f"{sandbox.url}/v3/nothing", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["message"] == "not found"
    wrong = http.get(f"{sandbox.url}/v3/mail/send", headers=AUTH)
    assert wrong.status_code == 405
    assert wrong.json()["errors"][0]["message"] == "method not allowed"


def test_inbox_page_and_message_html(http: httpx.Client, sandbox: SandboxHandle) -> None:
    response = client(sandbox).send(mail(subject="<Calm> & quiet"))
    message_id = response.headers["X-Message-Id"]
    page = http.get(f"{sandbox.url}/_sandbox/")
    assert page.status_code == 200
    assert "&lt;Calm&gt; &amp; quiet" in page.text
    assert f"messages/{message_id}/html" in page.text
    html = http.get(f"{sandbox.url}/_sandbox/messages/{message_id}/html")
    assert 'href="https://app.example/x"' in html.text
    full = http.get(f"{sandbox.url}/_sandbox/messages", params={"full": "1"}).json()
    assert full[0]["content"][1]["type"] == "text/html"
    assert "content" not in http.get(f"{sandbox.url}/_sandbox/messages").json()[0]
    assert http.delete(f"{sandbox.url}/_sandbox/messages").status_code == 204
    assert sandbox.messages() == []


def test_stats_count_requests_by_status(http: httpx.Client, sandbox: SandboxHandle) -> None:
    before = http.get(f"{sandbox.url}/_sandbox/stats").json()["by_status"]
    client(sandbox).send(mail())
    http.post(f"{sandbox.url}/v3/mail/send", json={}, headers=AUTH)
    after = http.get(f"{sandbox.url}/_sandbox/stats").json()["by_status"]
    assert after.get("202", 0) - before.get("202", 0) == 1
    assert after.get("400", 0) - before.get("400", 0) == 1
