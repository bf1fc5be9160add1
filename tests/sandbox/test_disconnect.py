"""A client gone mid-body is an expected event for the sandbox too: no traceback in its log."""

from __future__ import annotations

import logging
import time

import httpx
import orjson
import pytest

from calm_mail.sandbox import SandboxHandle
from tests.sandbox.conftest import AUTH, mail
from tests.track.conftest import half_a_body


@pytest.mark.parametrize("path", ["/v3/mail/send", "/v3/user/scheduled_sends"])
def test_a_client_gone_mid_body_leaves_no_traceback(
    sandbox: SandboxHandle, http: httpx.Client, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    body = orjson.dumps(mail(subject="x" * 20_000))
    uvicorn_log = logging.getLogger("uvicorn")
    uvicorn_log.addHandler(caplog.handler)  # uvicorn's loggers do not reach the root's
    try:
        with caplog.at_level(logging.DEBUG):
            half_a_body(sandbox.url, path, body, AUTH)  # the hot path, and a routed one
            time.sleep(0.3)
            after = http.post(sandbox.url + "/v3/mail/send", json=mail(), headers=AUTH)
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert after.status_code == 202, after.text
    assert "Traceback" not in caplog.text and "Exception in ASGI" not in caplog.text
    assert all(r.exc_info is None for r in caplog.records)
    assert [r.levelno for r in caplog.records if "disconnected" in r.getMessage()] == [logging.INFO]
