"""The one interface every transport implements, and the SendGrid request body.

Sending is a fixed sequence (anymail's `_send`): build payload -> post -> parse result ->
record -> raise. Transports differ only in `send`, `create_batch` and `scheduled_send`.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from calm_mail.records import ComposedMessage, SendResult

ScheduledStatus = Literal["pause", "cancel"]


class Transport(Protocol):
    """Where composed mail goes. `send` raises calm_mail.errors.DeliveryError subclasses."""

    name: str
    dry_run: bool

    async def send(self, message: ComposedMessage) -> SendResult: ...

    async def create_batch(self) -> str | None: ...

    async def scheduled_send(self, batch_id: str, status: ScheduledStatus | None) -> None:
        """Pause or cancel the batch's scheduled mail; None resumes it."""
        ...

    async def check_credentials(self) -> None: ...

    async def aclose(self) -> None: ...


class DryRun:
    """What a transport that reaches no provider does besides `send`: no batches to make, no
    scheduled sends to pause, no key to check, nothing to close (outbox and null)."""

    dry_run = True

    async def create_batch(self) -> str | None:
        return None

    async def scheduled_send(self, batch_id: str, status: ScheduledStatus | None) -> None:
        return None

    async def check_credentials(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def mail_send_body(message: ComposedMessage) -> dict[str, Any]:
    """The v3 mail/send body for one recipient (one request per user: each HTML is unique)."""
    personalization: dict[str, Any] = {
        "to": [{"email": message.to_email}],
        "custom_args": dict(message.custom_args),
        "send_at": int(message.send_at.timestamp()),
    }
    body: dict[str, Any] = {
        "personalizations": [personalization],
        "from": {"email": message.from_email, "name": message.from_name},
        "subject": message.subject,
        # SendGrid requires text/plain before text/html.
        "content": [
            {"type": "text/plain", "value": message.text},
            {"type": "text/html", "value": message.html},
        ],
    }
    if message.reply_to:
        body["reply_to"] = {"email": message.reply_to}
    if message.categories:
        body["categories"] = list(message.categories)
    if message.headers:
        body["headers"] = dict(message.headers)
    if message.batch_id:
        body["batch_id"] = message.batch_id
    if message.asm_group_id is not None:
        body["asm"] = {"group_id": message.asm_group_id}
    return body
