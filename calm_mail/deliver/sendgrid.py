"""SendGrid v3 over pooled keep-alive HTTP (aiohttp).

Why not the official client for the HTTP layer: it opens a new connection per request, has no
default timeout and never retries (shared/reference/sendgrid.md §4); `make bench` prints the
stock client next to this one. The official package is still used where it is good: its Event
Webhook verifier (calm_mail.track).

Status handling, by what the caller should do:
- 202/200: accepted; `X-Message-Id` is kept.
- 429, 503, and connection failures before the request left: safe to retry (not accepted).
- 500/502/504, timeouts and connections dropped after the request was written: the fate is
  unknown (SendGrid may have queued it). Raised as `UnknownFate` so the engine leaves the row
  claimed for reconciliation instead of resending blindly.
- 401/403: fatal for the run (every later send would fail the same way).
- other 4xx: this recipient only.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import yarl

from calm_mail.deliver.transport import ScheduledStatus, mail_send_body
from calm_mail.errors import (
    DeliveryError,
    FatalDeliveryError,
    RecipientRejected,
    RetriableDeliveryError,
)
from calm_mail.records import ComposedMessage, SendResult

DEFAULT_HOST = "https://api.sendgrid.com"


class UnknownFate(DeliveryError):
    """The request may have been accepted. Reconcile from events; never resend blindly."""


class SendGridTransport:
    name = "sendgrid"
    dry_run = False

    def __init__(
        self,
        api_key: str,
        *,
        host: str = DEFAULT_HOST,
        concurrency: int = 64,
        timeout_s: float = 15.0,
    ) -> None:
        if not api_key:
            raise FatalDeliveryError("SENDGRID_API_KEY is empty")
        self._api_key = api_key
        self.host = host.rstrip("/")
        self._concurrency = concurrency
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=5)
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}  # parsed once per path, not once per request

    def __repr__(self) -> str:  # never show the key
        return f"SendGridTransport(host={self.host!r})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._concurrency, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # the v3 API sets none worth keeping
                timeout=self._timeout,
                headers={
                    "Authorization": f"Bearer {self._api_key}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": "calm-mail",
                },
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        return self._session

    async def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any, Any]:
        data = orjson.dumps(body) if body is not None else None
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = yarl.URL(self.host + path)
        try:
            async with self._client().request(method, url, data=data) as resp:
                raw = await resp.read()
                return resp.status, resp.headers, raw
        except aiohttp.ClientConnectorError as exc:
            raise RetriableDeliveryError(f"cannot connect to {self.host}: {exc.os_error}") from exc
        except (
            TimeoutError,
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientOSError,
        ) as exc:
            raise UnknownFate(f"{method} {path}: {type(exc).__name__}") from exc

    async def send(self, message: ComposedMessage) -> SendResult:
        status, headers, raw = await self._request("POST", "/v3/mail/send", mail_send_body(message))
        if status in (200, 202):
            return SendResult(
                delivery_id=message.delivery_id, message_id=headers.get("X-Message-Id")
            )
        raise classify(status, headers, raw)

    async def create_batch(self) -> str | None:
        status, headers, raw = await self._request("POST", "/v3/mail/batch")
        if status in (200, 201):
            return str(orjson.loads(raw)["batch_id"])
        raise classify(status, headers, raw)

    async def scheduled_send(self, batch_id: str, status: ScheduledStatus | None) -> None:
        if status is None:
            code, headers, raw = await self._request(
                "DELETE", f"/v3/user/scheduled_sends/{batch_id}"
            )
            if code in (204, 404):  # 404: nothing paused or cancelled: already resumed
                return
            raise classify(code, headers, raw)
        code, headers, raw = await self._request(
            "POST", "/v3/user/scheduled_sends", {"batch_id": batch_id, "status": status}
        )
        if code == 400 and b"already" in raw.lower():
            patched, headers, raw = await self._request(
                "PATCH", f"/v3/user/scheduled_sends/{batch_id}", {"status": status}
            )
            if patched == 204:
                return
            code = patched
        if code not in (200, 201):
            raise classify(code, headers, raw)

    async def check_credentials(self) -> None:
        """One cheap authenticated call: a batch id costs nothing and proves the key."""
        await self.create_batch()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)  # let the connector close its sockets


def error_text(raw: bytes) -> str:
    """SendGrid's `{"errors":[{"message","field"}]}` as one line."""
    try:
        errors = orjson.loads(raw).get("errors") or []
        parts = [
            f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
            for e in errors
            if isinstance(e, dict)
        ]
        return "; ".join(parts) or raw[:200].decode("utf-8", "replace")
    except (orjson.JSONDecodeError, AttributeError):
        return raw[:200].decode("utf-8", "replace")


def retry_after(headers: Any) -> float | None:
    reset = headers.get("X-RateLimit-Reset") if headers else None
    if reset and reset.isdigit():
        return max(0.0, int(reset) - time.time())
    after = headers.get("Retry-After") if headers else None
    return float(after) if after and after.replace(".", "", 1).isdigit() else None


def classify(status: int, headers: Any, raw: bytes) -> DeliveryError:
    """Map an HTTP status to the error the engine acts on."""
    text = f"HTTP {status}: {error_text(raw)}"
    if status in (429, 503):
        return RetriableDeliveryError(text, status=status, retry_after=retry_after(headers))
    if status >= 500:
        return UnknownFate(text, status=status)
    if status in (401, 403):
        return FatalDeliveryError(text, status=status)
    return RecipientRejected(text, status=status)
