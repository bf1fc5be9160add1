"""The dry-run transport: one RFC 5322 .eml per recipient plus manifest.jsonl.

File names and bytes depend only on the message, so re-running the same dry-run edition
reproduces the same outbox. The manifest is rewritten sorted by user id when the run closes,
because concurrent sends finish in any order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import orjson

from calm_mail.compose.mime import to_eml_bytes
from calm_mail.deliver.transport import DryRun
from calm_mail.records import ComposedMessage, PlannedDelivery, SendResult

MANIFEST = "manifest.jsonl"


class OutboxTransport(DryRun):
    name = "outbox"

    def __init__(self, folder: Path, *, manifest_extra: dict[str, dict[str, object]] | None = None):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lines: list[tuple[str, bytes]] = []
        self.manifest_extra = manifest_extra if manifest_extra is not None else {}

    async def send(self, message: ComposedMessage) -> SendResult:
        (self.folder / f"{message.delivery_id}.eml").write_bytes(to_eml_bytes(message))
        extra = self.manifest_extra.pop(message.delivery_id, {})
        entry = {
            "delivery_id": message.delivery_id,
            "user_id": extra.get("user_id"),
            "arm": message.custom_args.get("arm"),
            "content_source": extra.get("source"),
            "fallback": extra.get("fallback"),
            "item_ids": extra.get("item_ids"),
            "subject": message.subject,
            "send_at": message.send_at.isoformat(),
            "file": f"{message.delivery_id}.eml",
        }
        self._lines.append((str(entry["user_id"]), orjson.dumps(entry)))
        return SendResult(delivery_id=message.delivery_id, message_id=None)

    async def aclose(self) -> None:
        path = self.folder / MANIFEST
        existing: dict[str, bytes] = {}
        if path.exists():
            for line in path.read_bytes().splitlines():
                if line.strip():
                    existing[orjson.loads(line)["delivery_id"]] = line
        for _, line in self._lines:
            existing[orjson.loads(line)["delivery_id"]] = line
        ordered = sorted(existing.values(), key=lambda raw: orjson.loads(raw)["user_id"] or "")
        path.write_bytes(b"".join(line + b"\n" for line in ordered))
        self._lines.clear()


class Composer(Protocol):
    def compose(self, delivery: PlannedDelivery, delivery_id: str) -> ComposedMessage: ...


class ManifestComposer:
    """Wraps a composer to hand the outbox what the manifest needs (user, source, items)."""

    def __init__(self, composer: Composer, outbox: OutboxTransport) -> None:
        self._composer = composer
        self._outbox = outbox

    def compose(self, delivery: PlannedDelivery, delivery_id: str) -> ComposedMessage:
        message = self._composer.compose(delivery, delivery_id)
        self._outbox.manifest_extra[delivery_id] = {
            "user_id": delivery.user_id,
            "source": str(delivery.source),
            "fallback": delivery.fallback,
            "item_ids": list(delivery.item_ids),
        }
        return message
