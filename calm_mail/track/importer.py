"""Loading exported event files and in-app completions into the ledger, idempotently.

Event files go through the same normalize + store path as the receiver, so an import and a live
webhook never disagree (an event the ledger cannot hold is kept raw in ``rejected_events`` by
both), and re-importing a file adds nothing (insert-or-ignore on event id and raw text).
Completions come from `calm_mail.inputs.iter_completions` and are stored in chunks; the ledger
ignores a (user, item, completed_at) it already has, so importing twice adds nothing either.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

import orjson

from calm_mail.errors import InputError
from calm_mail.inputs import iter_completions
from calm_mail.inputs.sources import READ_ERRORS, open_source, read_error
from calm_mail.records import Completion, Event, SkipCounter
from calm_mail.store.events import RejectedEvent
from calm_mail.track.normalize import InvalidEvent, SendGridEvents, UnfitEvent
from calm_mail.track.receiver import Sink, store_events

EVENT_CHUNK = 5_000
COMPLETION_CHUNK = 10_000


@dataclass(slots=True)
class EventImport:
    """What an event-file import did."""

    new: int = 0
    duplicates: int = 0
    suppressed: int = 0
    kept_raw: int = 0  # of the rejected, those kept in rejected_events
    rejected: SkipCounter = field(default_factory=SkipCounter)
    ignored: Counter[str] = field(default_factory=Counter)


def import_events(sink: Sink, path: str, *, chunk: int = EVENT_CHUNK) -> EventImport:
    """Import a JSON array file or a JSON Lines file (one event, or one array, per line).

    Local or s3://; gzip is undone. Bad objects are counted with ``file:line`` (or
    ``file[index]``) places; an unreadable file or one that is neither format is an `InputError`.
    """
    result = EventImport()
    pending: dict[str, Event] = {}
    unfit: list[RejectedEvent] = []
    for place, item in _event_objects(path):
        result.rejected.seen()
        if item is _BAD_JSON:
            result.rejected.add("bad_json", place)
            continue
        try:
            event = SendGridEvents.normalize(item)
        except InvalidEvent as exc:
            if exc.reason == "account_event":
                result.ignored[exc.reason] += 1
            else:
                result.rejected.add(exc.reason, place)
            if isinstance(exc, UnfitEvent):
                unfit.append(RejectedEvent(exc.reason, exc.raw))
            continue
        if event.event_id in pending:
            result.duplicates += 1
        pending[event.event_id] = event
        if len(pending) + len(unfit) >= chunk:
            _store_chunk(sink, pending, unfit, result)
    _store_chunk(sink, pending, unfit, result)
    return result


def _store_chunk(
    sink: Sink, pending: dict[str, Event], unfit: list[RejectedEvent], result: EventImport
) -> None:
    if not pending and not unfit:
        return
    stored = store_events(sink, list(pending.values()), unfit)
    result.new += stored.new
    result.duplicates += stored.duplicates
    result.suppressed += stored.suppressed
    result.kept_raw += stored.kept_raw
    pending.clear()
    unfit.clear()


_BAD_JSON = object()  # stands for a line that is not JSON


def _event_objects(path: str) -> Iterator[tuple[str, object]]:
    """(place, parsed object) for every event in the file; a line that is not JSON as _BAD_JSON."""
    try:
        with open_source(path) as fh:
            lines = iter(fh)
            number, first = _first_line(lines)
            if first.startswith(b"["):
                whole = first + b"".join(lines)
                items = _loads(whole)
                if isinstance(items, list):
                    yield from ((f"{path}[{i}]", item) for i, item in enumerate(items))
                else:  # not one array: JSON Lines whose lines are arrays
                    yield from _json_lines(path, whole.splitlines(), start=number)
            elif first.startswith(b"{"):
                yield from _json_lines(path, [first], start=number)
                yield from _json_lines(path, lines, start=number + 1)
            elif first:
                raise InputError("not a JSON array or JSON Lines of SendGrid events", path=path)
    except READ_ERRORS as exc:
        raise read_error(exc, path) from exc


def _first_line(lines: Iterator[bytes]) -> tuple[int, bytes]:
    """(line number, line without leading whitespace or BOM) of the first non-blank line."""
    for number, line in enumerate(lines, start=1):
        stripped = line.removeprefix(b"\xef\xbb\xbf").lstrip()
        if stripped:
            return number, stripped
    return 0, b""


def _loads(text: bytes) -> object:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _BAD_JSON


def _json_lines(path: str, lines: Iterable[bytes], *, start: int) -> Iterator[tuple[str, object]]:
    for number, line in enumerate(lines, start=start):
        if not line.strip():
            continue
        value = _loads(line)
        if isinstance(value, list):
            yield from ((f"{path}:{number}[{i}]", item) for i, item in enumerate(value))
        else:
            yield f"{path}:{number}", value


class CompletionSink(Protocol):
    """Where completions go: the ledger's `completions` (idempotent on user, item, time)."""

    def add_completions(self, rows: Iterable[Completion], *, source: str) -> int: ...


@dataclass(slots=True)
class CompletionImport:
    """What a completions import did: rows read, newly stored, and bad rows by reason."""

    read: int = 0
    imported: int = 0
    skips: SkipCounter = field(default_factory=SkipCounter)

    @property
    def already_present(self) -> int:
        return self.read - self.imported


def import_completions(
    sink: CompletionSink, path: str, *, chunk: int = COMPLETION_CHUNK
) -> CompletionImport:
    """Stream completions from `path` (file or prefix, local or s3://) into `sink` in chunks.

    Unreadable files and missing columns raise `InputError` from the reader; rows stored by
    earlier chunks stay stored, and a re-run skips them.
    """
    result = CompletionImport()
    rows = iter_completions(path, skips=result.skips)
    while batch := list(islice(rows, chunk)):
        result.read += len(batch)
        result.imported += sink.add_completions(batch, source=path)
    return result


def describe_skips(skips: SkipCounter) -> list[str]:
    """One line per reason: ``reason: n (e.g. file:line, file:line)``."""
    return [
        f"{reason}: {n} (e.g. {', '.join(skips.examples.get(reason, [])) or 'no place'})"
        for reason, n in sorted(skips.counts.items())
    ]
