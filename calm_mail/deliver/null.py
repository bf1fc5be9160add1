"""A transport that accepts everything and keeps nothing: for benchmarks."""

from __future__ import annotations

from calm_mail.deliver.transport import DryRun, mail_send_body
from calm_mail.records import ComposedMessage, SendResult


class NullTransport(DryRun):
    name = "null"

    def __init__(self, *, build_payload: bool = True) -> None:
        self.sent = 0
        self._build_payload = build_payload

    async def send(self, message: ComposedMessage) -> SendResult:
        if self._build_payload:
            mail_send_body(message)  # keep the payload cost in the measured path
        self.sent += 1
        return SendResult(delivery_id=message.delivery_id, message_id=None)
