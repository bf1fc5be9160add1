"""The sandbox ASGI app: SendGrid's v3 mail endpoints plus a `/_sandbox/` inspection API.

`create_app(config)` returns a Starlette app whose `state.sandbox` is the `Sandbox` (store,
validator, faults, webhook). A dropped connection is made by returning a non-None value from
the ASGI callable: uvicorn then closes the socket without writing a byte, which a client sees
as "server disconnected without a response" — what a real dropped connection looks like.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import html
import logging
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from calm_mail.sandbox.config import SandboxConfig
from calm_mail.sandbox.faults import Fault, FaultPlan
from calm_mail.sandbox.store import (
    SandboxStore,
    ScheduleRefused,
    StoredMessage,
    message_from_body,
    new_message_id,
)
from calm_mail.sandbox.validate import ApiError, MailSendValidator
from calm_mail.sandbox.webhook import WebhookEmitter, WebhookSigner, recipient_events

log = logging.getLogger(__name__)

DROP_KEY = "calm_mail.sandbox.drop"
_DROPPED = "dropped"  # the non-None return value that makes uvicorn close the socket


class Sandbox:
    """Everything one sandbox instance holds; owned by the server's event loop."""

    def __init__(self, config: SandboxConfig, signer: WebhookSigner | None = None) -> None:
        self.config = config
        self.store = SandboxStore(clock=config.clock, offset_s=config.clock_offset_s)
        self.validator = MailSendValidator()
        self.faults = FaultPlan(config)
        self.signer = signer or (
            WebhookSigner.from_file(config.key_file)
            if config.key_file
            else WebhookSigner.generate()
        )
        self.emitter = WebhookEmitter(config, self.signer, self.store.now)
        self.requests: Counter[str] = Counter()
        self.loop: asyncio.AbstractEventLoop | None = None  # set once the server runs

    def release(self, message: StoredMessage, index: int, released_at: float) -> None:
        """Mail goes out: hand every recipient's events to the webhook emitter."""
        if not self.emitter.enabled:
            return
        for email in message.personalizations[index].recipients:
            events = recipient_events(
                message,
                index,
                email,
                released_at=released_at,
                behaviour=self.config.behaviour,
                seed=self.config.seed,
            )
            self.emitter.add(events, released_at=released_at)

    async def run_scheduler(self) -> None:
        while True:
            self.store.release_due(self.release)
            await asyncio.sleep(self.config.scheduler_tick_s)


# --------------------------------------------------------------------------- responses


def errors_response(
    status: int, errors: list[ApiError] | ApiError, headers: Mapping[str, str] | None = None
) -> Response:
    items = [errors] if isinstance(errors, ApiError) else errors
    body = orjson.dumps({"errors": [e.as_dict() for e in items]})
    return Response(body, status, headers=dict(headers or {}), media_type="application/json")


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


class _Drop(Response):
    """Sends nothing and marks the scope so `SandboxApp` closes the connection."""

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[DROP_KEY] = True


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def _auth_error(request: Request, config: SandboxConfig) -> Response | None:
    """401 without a usable key, 403 for `SG.forbidden...`; never echoes the key."""
    header = request.headers.get("authorization", "")
    if not header:
        return errors_response(401, ApiError("authorization required"))
    scheme, _, key = header.partition(" ")
    valid = (
        scheme.lower() == "bearer"
        and key.startswith("SG.")
        and not key.startswith("SG.invalid")
        and (not config.api_keys or key in config.api_keys)
    )
    if not valid:
        return errors_response(
            401, ApiError("The provided authorization grant is invalid, expired, or revoked")
        )
    if key.startswith("SG.forbidden"):
        return errors_response(403, ApiError("access forbidden"))
    return None


async def _guard(request: Request) -> Response | None:
    """Latency and auth, shared by every v3 endpoint."""
    sandbox = _sandbox(request)
    if sandbox.config.latency_ms > 0:
        await asyncio.sleep(sandbox.config.latency_ms / 1000)
    return _auth_error(request, sandbox.config)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None when it exceeds `limit` bytes (checked before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(raw: bytes, encoding: str, limit: int) -> bytes | None:
    """Undo `Content-Encoding: gzip`; None when the result is too large."""
    if encoding.lower() != "gzip":
        return raw
    inflater = zlib.decompressobj(wbits=31)
    data = inflater.decompress(raw, limit + 1)
    return None if len(data) > limit else data


# --------------------------------------------------------------------------- mail send


async def mail_send(request: Request) -> Response:
    """`POST /v3/mail/send`, with SendGrid's status codes, plus the configured faults."""
    refused = await _guard(request)
    if refused is not None:
        return refused
    sandbox = _sandbox(request)
    verdict = sandbox.faults.rate()
    rate_headers = (
        {}
        if verdict is None
        else {
            "X-RateLimit-Limit": str(verdict.limit),
            "X-RateLimit-Remaining": str(verdict.remaining),
            "X-RateLimit-Reset": str(verdict.reset),
        }
    )
    if verdict is not None and not verdict.allowed:
        return errors_response(429, ApiError("too many requests"), rate_headers)
    if sandbox.faults.in_outage():
        return errors_response(503, ApiError("service unavailable"), rate_headers)
    fault = sandbox.faults.draw()
    if fault in (Fault.FAIL_500, Fault.FAIL_503):
        message = "internal server error" if fault is Fault.FAIL_500 else "service unavailable"
        return errors_response(int(fault.value), ApiError(message), rate_headers)
    if fault is Fault.DROP:
        return _Drop()
    response = await _accept(request, sandbox, fault, rate_headers)
    return response


async def _accept(
    request: Request, sandbox: Sandbox, fault: Fault, rate_headers: dict[str, str]
) -> Response:
    limit = sandbox.config.max_body_bytes
    raw = await _read_body(request, limit)
    if raw is not None:
        try:
            raw = _decode(raw, request.headers.get("content-encoding", ""), limit)
        except (zlib.error, EOFError, gzip.BadGzipFile):
            return errors_response(400, ApiError("Bad Request"), rate_headers)
    if raw is None:
        return errors_response(413, ApiError("content too large"), rate_headers)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return errors_response(415, ApiError("Invalid UTF8 in request"), rate_headers)
        return errors_response(400, ApiError("Bad Request"), rate_headers)
    store = sandbox.store
    problems = sandbox.validator.errors(
        body, now=store.now(), batch_exists=store.batches.__contains__
    )
    if problems:
        return errors_response(400, problems, rate_headers)
    senders = sandbox.config.verified_senders
    if senders and body["from"]["email"].lower() not in senders:
        return errors_response(
            403,
            ApiError(
                "The from address does not match a verified Sender Identity. Mail cannot be sent "
                "until this error is resolved. Visit https://sendgrid.com/docs/for-developers/"
                "sending-email/sender-identity/ to see the Sender Identity requirements",
                "from",
            ),
            rate_headers,
        )
    if ((body.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable") is True:
        return Response(b"", 200, headers=rate_headers)
    message_id = new_message_id()
    store.add(message_from_body(body, message_id=message_id, now=store.now()), sandbox.release)
    if fault is Fault.ACCEPT_THEN_500:
        return errors_response(500, ApiError("internal server error"), rate_headers)
    if fault is Fault.ACCEPT_THEN_DROP:
        return _Drop()
    return Response(b"", 202, headers={"X-Message-Id": message_id, **rate_headers})


# --------------------------------------------------------------------------- batches


async def create_batch(request: Request) -> Response:
    refused = await _guard(request)
    if refused is not None:
        return refused
    return json_response({"batch_id": _sandbox(request).store.create_batch()}, 201)


async def get_batch(request: Request) -> Response:
    refused = await _guard(request)
    if refused is not None:
        return refused
    batch_id = request.path_params["batch_id"]
    if batch_id not in _sandbox(request).store.batches:
        return errors_response(400, ApiError("invalid batch id", "batch_id"))
    return json_response({"batch_id": batch_id})


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


async def scheduled_sends(request: Request) -> Response:
    """`GET` lists paused/cancelled batches; `POST {batch_id, status}` pauses or cancels one."""
    refused = await _guard(request)
    if refused is not None:
        return refused
    store = _sandbox(request).store
    if request.method == "GET":
        return json_response([{"batch_id": b, "status": s} for b, s in store.scheduled.items()])
    data = await _json_object(request)
    if (
        data is None
        or not isinstance(data.get("batch_id"), str)
        or not isinstance(data.get("status"), str)
    ):
        return errors_response(400, ApiError("batch_id and status (pause or cancel) are required"))
    try:
        store.set_schedule(data["batch_id"], data["status"], creating=True)
    except ScheduleRefused as exc:
        return errors_response(exc.status, ApiError(str(exc), "batch_id"))
    return json_response({"batch_id": data["batch_id"], "status": data["status"]}, 201)


async def scheduled_send(request: Request) -> Response:
    """`GET`, `PATCH {status}` and `DELETE` (resume) of one batch's pause or cancel."""
    refused = await _guard(request)
    if refused is not None:
        return refused
    sandbox = _sandbox(request)
    store, batch_id = sandbox.store, request.path_params["batch_id"]
    try:
        if request.method == "GET":
            if batch_id not in store.batches:
                raise ScheduleRefused("invalid batch id")
            status = store.scheduled.get(batch_id)
            return json_response(
                [] if status is None else [{"batch_id": batch_id, "status": status}]
            )
        if request.method == "DELETE":
            store.clear_schedule(batch_id, sandbox.release)
            return Response(status_code=204)
        data = await _json_object(request)
        if data is None or not isinstance(data.get("status"), str):
            raise ScheduleRefused("status (pause or cancel) is required")
        store.set_schedule(batch_id, data["status"], creating=False)
    except ScheduleRefused as exc:
        return errors_response(exc.status, ApiError(str(exc), "batch_id"))
    return Response(status_code=204)


async def signed_settings(request: Request) -> Response:
    """The signed-webhook settings: where SendGrid shows the verification public key."""
    refused = await _guard(request)
    if refused is not None:
        return refused
    return json_response({"enabled": True, "public_key": _sandbox(request).signer.public_key_b64})


# --------------------------------------------------------------------------- inspection


async def list_messages(request: Request) -> Response:
    store = _sandbox(request).store
    if request.method == "DELETE":
        store.reset()
        return Response(status_code=204)
    full = request.query_params.get("full") in ("1", "true", "yes")
    return json_response(list(store.iter_json(full=full)))


async def get_message(request: Request) -> Response:
    message = _sandbox(request).store.by_id.get(request.path_params["message_id"])
    if message is None:
        return errors_response(404, ApiError("not found"))
    return json_response(message.as_json(full=True))


async def message_html(request: Request) -> Response:
    message = _sandbox(request).store.by_id.get(request.path_params["message_id"])
    if message is None:
        return errors_response(404, ApiError("not found"))
    if message.html is not None:
        return HTMLResponse(message.html)
    text = next((c["value"] for c in message.content), "")
    return HTMLResponse(f"<pre>{html.escape(text)}</pre>")


async def inbox(request: Request) -> Response:
    """A small page listing the newest messages, each linking to its HTML."""
    store = _sandbox(request).store
    rows = []
    for m in reversed(store.messages[-500:]):
        first = m.personalizations[0]
        rows.append(
            "<tr><td>{}</td><td>{}</td><td><a href='messages/{}/html'>{}</a></td><td>{}</td>"
            "<td>{}</td></tr>".format(
                html.escape(m.message_id),
                html.escape(", ".join(first.to)),
                m.message_id,
                html.escape(first.subject or "(no subject)"),
                html.escape(first.custom_args.get("arm", "")),
                html.escape(m.status),
            )
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>calm-mail sandbox inbox</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;text-align:left;"
        "border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>Sandbox inbox</h1><p>{len(store.messages)} message(s) accepted; newest first."
        "</p><table><tr><th>message id</th><th>to</th><th>subject</th><th>arm</th>"
        f"<th>status</th></tr>{''.join(rows)}</table></body></html>"
    )
    return HTMLResponse(page)


async def stats(request: Request) -> Response:
    sandbox = _sandbox(request)
    return json_response(
        {
            "requests": sum(sandbox.requests.values()),
            "by_status": dict(sorted(sandbox.requests.items())),
            "messages": len(sandbox.store.messages),
            "webhook": dict(sandbox.emitter.stats),
            "webhook_idle": sandbox.emitter.idle(),
        }
    )


async def clock(request: Request) -> Response:
    """`GET` the sandbox time; `POST {"advance_s": N}` moves it forward and releases due mail."""
    sandbox = _sandbox(request)
    if request.method == "POST":
        data = await _json_object(request)
        step = None if data is None else data.get("advance_s")
        if not isinstance(step, int | float) or isinstance(step, bool) or step < 0:
            return errors_response(
                400, ApiError("advance_s must be a non-negative number", "advance_s")
            )
        sandbox.store.advance(float(step))
        sandbox.store.release_due(sandbox.release)
    return json_response({"now": sandbox.store.now(), "offset_s": sandbox.store.offset_s})


# --------------------------------------------------------------------------- app


class SandboxApp(Starlette):
    """Counts v3 requests by status and turns `_Drop` into a closed connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] != "http" or not scope["path"].startswith("/v3/"):
            return await super().__call__(scope, receive, send)
        requests: Counter[str] = self.state.sandbox.requests

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                requests[str(message["status"])] += 1
            await send(message)

        if scope["path"] == "/v3/mail/send" and scope["method"] == "POST":
            # The hot path skips routing and the middleware stack (~30% of the CPU per send).
            scope["app"] = self
            request = Request(scope, receive)
            try:
                response = await mail_send(request)
            except ClientDisconnect as exc:  # no middleware here to hand it to `_client_gone`
                response = await _client_gone(request, exc)
            await response(scope, receive, counting_send)
        else:
            await super().__call__(scope, receive, counting_send)
        if scope.get(DROP_KEY):
            requests["dropped"] += 1
            return _DROPPED
        return None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return errors_response(exc.status_code, ApiError(message))


async def _client_gone(request: Request, exc: Exception) -> Response:
    """A client gone mid-body: expected, one line, no traceback (nobody reads the answer)."""
    log.info("client disconnected before its body was complete: %s", request.url.path)
    return Response(status_code=400)


def create_app(config: SandboxConfig, *, signer: WebhookSigner | None = None) -> Starlette:
    """The sandbox as an ASGI app; its scheduler and webhook emitter run in its lifespan."""
    sandbox = Sandbox(config, signer)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        scheduler = asyncio.create_task(sandbox.run_scheduler())
        if sandbox.emitter.enabled:
            await sandbox.emitter.start()
        try:
            yield
        finally:
            scheduler.cancel()
            await asyncio.gather(scheduler, return_exceptions=True)
            if sandbox.emitter.enabled:
                await sandbox.emitter.stop()

    routes = [
        Route("/v3/mail/send", mail_send, methods=["POST"]),
        Route("/v3/mail/batch", create_batch, methods=["POST"]),
        Route("/v3/mail/batch/{batch_id}", get_batch, methods=["GET"]),
        Route("/v3/user/scheduled_sends", scheduled_sends, methods=["GET", "POST"]),
        Route(
            "/v3/user/scheduled_sends/{batch_id}",
            scheduled_send,
            methods=["GET", "PATCH", "DELETE"],
        ),
        Route("/v3/user/webhooks/event/settings/signed", signed_settings, methods=["GET"]),
        Route("/_sandbox/", inbox, methods=["GET"]),
        Route("/_sandbox/messages", list_messages, methods=["GET", "DELETE"]),
        Route("/_sandbox/messages/{message_id}", get_message, methods=["GET"]),
        Route("/_sandbox/messages/{message_id}/html", message_html, methods=["GET"]),
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/_sandbox/clock", clock, methods=["GET", "POST"]),
    ]
    app = SandboxApp(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, ClientDisconnect: _client_gone},
    )
    app.state.sandbox = sandbox
    return app
