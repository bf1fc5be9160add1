"""The dry-run transport: RFC 5322 .eml files plus manifest.jsonl, one line per recipient.

Every recipient gets a file, or with `sample=N` only N of them do, spread over the (arm,
locale) groups present (see `quotas`); within a group the files are those of the recipients
whose delivery ids hash lowest. The manifest lists every recipient either way, saying whether
its .eml was written.

File names, bytes and the sample depend only on the messages, not on the order the sends
finish in, so re-running the same dry-run edition reproduces the same outbox: while the run
goes, each group keeps the files of its N lowest hashes (an evicted file is deleted at once, so
the folder never holds many more than N), and the run's close keeps its group's quota of them.
The manifest is rewritten sorted by user id when the run closes.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections import Counter
from collections.abc import Mapping
from itertools import zip_longest
from pathlib import Path
from typing import Protocol

import orjson

from calm_mail.compose.mime import to_eml_bytes
from calm_mail.deliver.transport import DryRun
from calm_mail.errors import RecipientRejected, RenderError
from calm_mail.inputs.writes import write_bytes
from calm_mail.records import ComposedMessage, PlannedDelivery, SendResult

MANIFEST = "manifest.jsonl"

Group = tuple[str, str]  # (arm, locale)


class OutboxTransport(DryRun):
    """After `aclose`, `written` and `composed` count this run's .eml files and messages."""

    name = "outbox"

    def __init__(
        self,
        folder: Path,
        *,
        sample: int | None = None,
        manifest_extra: dict[str, dict[str, object]] | None = None,
    ) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.manifest_extra = manifest_extra if manifest_extra is not None else {}
        self._sample = None if sample is None else Sample(sample)
        # (user id, delivery id, manifest line without the fields of its file)
        self._entries: list[tuple[str, str, bytes]] = []
        self.written = 0
        self.composed = 0

    async def send(self, message: ComposedMessage) -> SendResult:
        extra = self.manifest_extra.pop(message.delivery_id, {})
        group = (message.custom_args.get("arm", ""), str(extra.get("locale", "")))
        sample = self._sample
        if sample is None or sample.admits(group, message.delivery_id):
            self._write(message)
        if sample is not None and (evicted := sample.add(group, message.delivery_id)):
            self._path(evicted).unlink(missing_ok=True)
        entry = {
            "delivery_id": message.delivery_id,
            "user_id": extra.get("user_id"),
            "arm": message.custom_args.get("arm"),
            "locale": extra.get("locale"),
            "content_source": extra.get("source"),
            "fallback": extra.get("fallback"),
            "item_ids": extra.get("item_ids"),
            "subject": message.subject,
            "send_at": message.send_at.isoformat(),
        }
        line = orjson.dumps(entry)
        self._entries.append((str(entry["user_id"] or ""), message.delivery_id, line))
        return SendResult(delivery_id=message.delivery_id, message_id=None)

    def _write(self, message: ComposedMessage) -> None:
        try:
            raw = to_eml_bytes(message)
        except RenderError as exc:
            raise RecipientRejected(f"outbox: {exc}") from exc
        self._path(message.delivery_id).write_bytes(raw)

    def _path(self, delivery_id: str) -> Path:
        return self.folder / f"{delivery_id}.eml"

    async def aclose(self) -> None:
        """Keep the sample's files (deleting this run's others, an earlier run's too), then
        write the manifest: this run's recipients and the lines of others already there."""
        chosen = None if self._sample is None else self._sample.chosen()
        if chosen is not None:
            present = {entry.name for entry in os.scandir(self.folder)}
            for _, delivery_id, _ in self._entries:
                name = f"{delivery_id}.eml"
                if delivery_id not in chosen and name in present:
                    (self.folder / name).unlink()
        lines = self._existing_lines()
        for user_id, delivery_id, line in self._entries:
            written = chosen is None or delivery_id in chosen
            fields = {"file": f"{delivery_id}.eml" if written else None, "eml_written": written}
            # The entry's object, closed by these two fields instead of its own brace.
            lines[delivery_id] = (user_id, line[:-1] + b"," + orjson.dumps(fields)[1:])
            self.written += written
        self.composed += len(self._entries)
        ordered = sorted(lines.values(), key=lambda pair: pair[0])
        write_bytes(self.folder / MANIFEST, b"".join(line + b"\n" for _, line in ordered))
        self._entries.clear()

    def _existing_lines(self) -> dict[str, tuple[str, bytes]]:
        """The manifest's lines by delivery id (another shard's run, say), with their user id."""
        path = self.folder / MANIFEST
        lines: dict[str, tuple[str, bytes]] = {}
        if path.exists():
            for line in path.read_bytes().splitlines():
                if line.strip():
                    row = orjson.loads(line)
                    lines[row["delivery_id"]] = (row["user_id"] or "", line)
        return lines


class Sample:
    """Which of a run's messages keep their .eml: `n` spread over the (arm, locale) groups.

    `add` is told of every message (in any order); each group holds the delivery ids of its
    `n` lowest hashes, since no group's quota exceeds `n`. `chosen` is then the same set
    whatever the order was.
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"a sample needs at least one message, not {n}")
        self.n = n
        self.counts: Counter[Group] = Counter()
        self._lowest: dict[Group, list[tuple[int, str]]] = {}  # max-heaps: (-hash, id)

    def admits(self, group: Group, delivery_id: str) -> bool:
        """Whether `add` would keep `delivery_id` (so its file is worth writing)."""
        heap = self._lowest.get(group, [])
        return len(heap) < self.n or _hash(delivery_id) < -heap[0][0]

    def add(self, group: Group, delivery_id: str) -> str | None:
        """Count the message; keep it if among its group's `n` lowest: the id it evicts."""
        self.counts[group] += 1
        heap = self._lowest.setdefault(group, [])
        key = (-_hash(delivery_id), delivery_id)
        if len(heap) < self.n:
            heapq.heappush(heap, key)
            return None
        if key > heap[0]:
            return heapq.heapreplace(heap, key)[1]
        return None

    def chosen(self) -> set[str]:
        """The delivery ids whose files stay: each group's quota of its lowest hashes."""
        chosen: set[str] = set()
        for group, quota in quotas(self.counts, self.n).items():
            lowest = sorted((-negated, delivery_id) for negated, delivery_id in self._lowest[group])
            chosen.update(delivery_id for _, delivery_id in lowest[:quota])
        return chosen


def quotas(counts: Mapping[Group, int], n: int) -> dict[Group, int]:
    """How many of `n` files each group gets (never more than it has messages).

    First one each while `n` allows, arms taken in turn and the largest groups of each arm
    first (so a small sample still shows every arm); then one at a time to the group with the
    fewest files per message (the larger group on a tie), which tends to proportional shares.
    """
    by_arm: dict[str, list[Group]] = {}
    for group in sorted(counts, key=lambda g: (-counts[g], g)):
        by_arm.setdefault(group[0], []).append(group)
    turns = [g for row in zip_longest(*by_arm.values()) for g in row if g is not None]
    given = {group: int(group in turns[:n]) for group in counts}
    left = min(n, sum(counts.values())) - sum(given.values())
    heap = [(given[g] / counts[g], -counts[g], g) for g in counts if given[g] < counts[g]]
    heapq.heapify(heap)
    for _ in range(left):
        _, size, group = heapq.heappop(heap)
        given[group] += 1
        if given[group] < counts[group]:
            heapq.heappush(heap, (given[group] / counts[group], size, group))
    return given


def _hash(delivery_id: str) -> int:
    """A stable hash (the same in every process, unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(delivery_id.encode(), digest_size=8).digest(), "big")


class Composer(Protocol):
    def compose(self, delivery: PlannedDelivery, delivery_id: str) -> ComposedMessage: ...


class ManifestComposer:
    """Wraps a composer to hand the outbox what the manifest needs (user, locale, source,
    items)."""

    def __init__(self, composer: Composer, outbox: OutboxTransport) -> None:
        self._composer = composer
        self._outbox = outbox

    def compose(self, delivery: PlannedDelivery, delivery_id: str) -> ComposedMessage:
        message = self._composer.compose(delivery, delivery_id)
        self._outbox.manifest_extra[delivery_id] = {
            "user_id": delivery.user_id,
            "locale": delivery.locale,
            "source": str(delivery.source),
            "fallback": delivery.fallback,
            "item_ids": list(delivery.item_ids),
        }
        return message
