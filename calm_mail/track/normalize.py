"""SendGrid Event Webhook objects -> `records.Event`, one normalized vocabulary.

django-anymail style: raw event names (and a bounce's ``type``) go through class-level tables;
a value nobody mapped becomes `EventType.UNKNOWN` instead of an error, and the raw JSON object is
kept on the event so nothing SendGrid said is lost. An object that cannot be an event at all (not
an object, no email, no event name, no usable timestamp) is rejected with a reason and counted;
one bad object never fails the others of its batch.

An event the ledger cannot hold as an event is *unfit*: a key value longer than its column
(email, delivery_id, campaign, edition, arm, sg_message_id; the limits are read from
`schema.events`), or holding a NUL character or a lone surrogate, which PostgreSQL text cannot
hold. It is refused on its own, as `UnfitEvent`, carrying its raw text so that the receiver keeps
it in ``rejected_events``; the same on both databases. Values that are not keys are made to fit
instead: an ``sg_event_id`` that does not fit becomes ``sha256:`` of itself (still one id per
event, so retries deduplicate), and a NUL or lone surrogate in ``url`` or ``reason`` becomes
U+FFFD; the raw text keeps every value as SendGrid sent it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson

from calm_mail.errors import WebhookError
from calm_mail.records import Event, EventType, SkipCounter
from calm_mail.store import schema
from calm_mail.store.events import RejectedEvent

# The custom_args calm-mail puts on every message (deliver stage); SendGrid echoes them back as
# top-level keys of each event.
CUSTOM_ARGS = ("delivery_id", "campaign", "edition", "arm")

# Unix seconds SendGrid could plausibly send: 2000-01-01 .. 2100-01-01. Anything outside is a
# broken producer, and datetime would overflow on far larger values anyway.
_MIN_TS = 946_684_800
_MAX_TS = 4_102_444_800


class InvalidEvent(WebhookError):
    """One webhook object that cannot become an `Event`; `reason` is a short counter key."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message, status=400)


class UnfitEvent(InvalidEvent):
    """An event the ledger cannot hold as an event; `raw` is its JSON text, storable as is."""

    def __init__(self, reason: str, message: str, raw: str) -> None:
        self.raw = raw
        super().__init__(reason, message)


def _length(column: str) -> int:
    length = getattr(schema.events.c[column].type, "length", None)
    assert isinstance(length, int), column
    return length


#: Raw key -> the most characters its `schema.events` column holds.
KEY_LIMITS: Mapping[str, int] = {
    "email": _length("email"),
    "delivery_id": _length("delivery_id"),
    "campaign": _length("campaign"),
    "edition": _length("edition"),
    "arm": _length("arm"),
    "sg_message_id": _length("message_id"),
}
EVENT_ID_LIMIT = _length("event_id")


def unstorable(text: str) -> bool:
    """True when `text` holds a character no ledger text column can hold: NUL (PostgreSQL
    refuses it) or a lone surrogate (not encodable as UTF-8)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _storable(text: str | None) -> str | None:
    """Free text made storable: each NUL or lone surrogate becomes U+FFFD."""
    if text is None or not unstorable(text):
        return text
    return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)


class SendGridEvents:
    """The mapping tables and the conversion of one raw SendGrid event object."""

    #: SendGrid ``event`` -> normalized type. ``bounce`` is refined by `bounce_types`.
    event_types: ClassVar[Mapping[str, EventType]] = {
        "processed": EventType.PROCESSED,
        "dropped": EventType.DROPPED,
        "delivered": EventType.DELIVERED,
        "deferred": EventType.DEFERRED,
        "bounce": EventType.BOUNCED,
        "open": EventType.OPENED,
        "click": EventType.CLICKED,
        "spamreport": EventType.SPAM_REPORT,
        "unsubscribe": EventType.UNSUBSCRIBED,
        "group_unsubscribe": EventType.GROUP_UNSUBSCRIBED,
        "group_resubscribe": EventType.GROUP_RESUBSCRIBED,
    }

    #: A bounce's ``type``. A missing or unrecognized type stays a hard bounce: legacy payloads
    #: had no ``type``, and mailing a bouncing address again hurts more than one lost recipient.
    bounce_types: ClassVar[Mapping[str, EventType]] = {
        "bounce": EventType.BOUNCED,
        "blocked": EventType.BLOCKED,
    }

    #: Account-level events carry no recipient; they are counted and ignored, never stored, and
    #: never make a batch "all invalid" (SendGrid would retry such a batch for 24 hours).
    account_events: ClassVar[frozenset[str]] = frozenset({"account_status_change"})

    @classmethod
    def event_type(cls, name: str, bounce_type: object) -> EventType:
        mapped = cls.event_types.get(name.strip().lower(), EventType.UNKNOWN)
        if mapped is EventType.BOUNCED and isinstance(bounce_type, str):
            return cls.bounce_types.get(bounce_type.strip().lower(), EventType.BOUNCED)
        return mapped

    @classmethod
    def normalize(cls, raw: object) -> Event:
        """Convert one parsed event object; raises `InvalidEvent` (with a reason) if impossible."""
        if not isinstance(raw, dict):
            raise InvalidEvent("not_an_object", f"event is a {type(raw).__name__}, not an object")
        name = raw.get("event")
        if not isinstance(name, str) or not name.strip():
            raise InvalidEvent("no_event", "event has no 'event' name")
        if name.strip().lower() in cls.account_events:
            raise InvalidEvent("account_event", f"account-level event {name.strip()!r} ignored")
        email = raw.get("email")
        if not isinstance(email, str) or not email.strip():
            raise InvalidEvent("no_email", "event has no 'email'")
        occurred_at = parse_timestamp(raw.get("timestamp"))
        text = raw_text(raw)
        _check_keys(raw, email.strip(), text)
        return Event(
            event_id=_event_id(raw),
            event_type=cls.event_type(name, raw.get("type")),
            email=email.strip(),
            occurred_at=occurred_at,
            delivery_id=_text(raw.get("delivery_id")),
            campaign=_text(raw.get("campaign")),
            edition=_text(raw.get("edition")),
            arm=_text(raw.get("arm")),
            message_id=_text(raw.get("sg_message_id")),
            machine_open=_truthy(raw.get("sg_machine_open")),
            url=_storable(_text(raw.get("url"))),
            reason=_storable(_text(raw.get("reason"))),
            raw=text,
        )


def normalize(raw: object) -> Event:
    """One raw SendGrid event object -> `Event` (see `SendGridEvents.normalize`)."""
    return SendGridEvents.normalize(raw)


@dataclass(slots=True)
class NormalizedBatch:
    """The events of one POST (or one import chunk) and what was left out, by reason."""

    events: list[Event] = field(default_factory=list)
    rejected: SkipCounter = field(default_factory=SkipCounter)
    unfit: list[RejectedEvent] = field(default_factory=list)  # also counted in `rejected`
    ignored: Counter[str] = field(default_factory=Counter)  # account-level events
    in_batch_duplicates: int = 0

    @property
    def all_invalid(self) -> bool:
        """True when there were objects and none of them was an event or an ignorable one."""
        return not self.events and not self.ignored and not self.unfit and self.rejected.skipped > 0


def normalize_batch(items: Iterable[object], *, where: str = "event") -> NormalizedBatch:
    """Normalize many objects; bad ones are counted (``where[index]`` as the place), not raised.

    Exact repeats of an event id inside the batch are dropped here (SendGrid may resend an
    event inside one POST); the ledger's insert-or-ignore handles repeats across batches.
    """
    batch = NormalizedBatch()
    seen: set[str] = set()
    for index, item in enumerate(items):
        batch.rejected.seen()
        try:
            event = SendGridEvents.normalize(item)
        except InvalidEvent as exc:
            if exc.reason == "account_event":
                batch.ignored[exc.reason] += 1
            else:
                batch.rejected.add(exc.reason, f"{where}[{index}]")
            if isinstance(exc, UnfitEvent):
                batch.unfit.append(RejectedEvent(exc.reason, exc.raw))
            continue
        if event.event_id in seen:
            batch.in_batch_duplicates += 1
            continue
        seen.add(event.event_id)
        batch.events.append(event)
    return batch


def parse_timestamp(value: Any) -> datetime:
    """Unix seconds as int, float or a digit string -> aware UTC datetime, or `InvalidEvent`."""
    seconds: float
    if isinstance(value, bool):
        raise InvalidEvent("bad_timestamp", "timestamp is a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip()) if value.strip().isascii() else math.nan
        except ValueError:
            seconds = math.nan
    elif value is None:
        raise InvalidEvent("bad_timestamp", "event has no 'timestamp'")
    else:
        raise InvalidEvent("bad_timestamp", f"timestamp is a {type(value).__name__}")
    if not (_MIN_TS <= seconds < _MAX_TS):  # also false for NaN
        raise InvalidEvent("bad_timestamp", f"timestamp {value!r} is not plausible unix seconds")
    return datetime.fromtimestamp(seconds, tz=UTC)


def raw_text(raw: dict[Any, Any]) -> str:
    """The event object as JSON text (orjson re-serialization keeps every key and value).

    An object orjson cannot write exactly (a number out of range, a lone surrogate, nesting
    deeper than orjson writes: only from the lenient parse) is `UnfitEvent`, its raw text
    written by ``json.dumps`` (ASCII, escaped); one not even that writes is `InvalidEvent`."""
    reason = "" if _finite(raw) else "number_out_of_range"
    if not reason:
        try:
            return orjson.dumps(raw).decode()
        except TypeError:  # lone surrogates, depth; objects that did not come from JSON
            reason = "unstorable_text"
    try:
        text = ascii_json(raw)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidEvent("not_json", f"event is not JSON-serializable: {exc}") from exc
    raise UnfitEvent(reason, "event cannot be written back exactly as UTF-8 JSON", text)


def ascii_json(value: object) -> str:
    """`value` as ASCII JSON text (every non-ASCII character escaped; infinities as Infinity):
    any text column of either database holds it."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True)


def _finite(value: object, depth: int = 0) -> bool:
    """False when `value` holds a float that is infinite or NaN (at any depth)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 64:
        return True
    if isinstance(value, dict):
        return all(_finite(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v, depth + 1) for v in value)
    return True


def _check_keys(raw: dict[Any, Any], email: str, text: str) -> None:
    """`UnfitEvent` when a key value does not fit its column or holds an unstorable character."""
    for key, limit in KEY_LIMITS.items():
        value = email if key == "email" else _text(raw.get(key))
        if value is None:
            continue
        # The suppression list keeps the address lowercased, which may lengthen it.
        longest = max(len(value), len(value.lower())) if key == "email" else len(value)
        if longest > limit:
            raise UnfitEvent(f"too_long_{key}", f"{key} longer than {limit} characters", text)
        if unstorable(value):
            raise UnfitEvent(f"unstorable_{key}", f"{key} holds a NUL or lone surrogate", text)


def _event_id(raw: dict[Any, Any]) -> str:
    sg_id = raw.get("sg_event_id")
    if isinstance(sg_id, str) and sg_id.strip():
        sg_id = sg_id.strip()
        if len(sg_id) <= EVENT_ID_LIMIT and not unstorable(sg_id):
            return sg_id
        # Too long or unstorable for the key column: one deterministic id per sg_event_id.
        digest = hashlib.sha256(sg_id.encode("utf-8", "surrogatepass")).hexdigest()
        return "sha256:" + digest
    # No sg_event_id (old exports, hand-made files): a deterministic id from the content, so
    # exact duplicates of such an event still deduplicate. Sorted keys make the id independent
    # of key order; two genuinely different events always differ in some field.
    canonical = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value if value else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1"}
    return value is True or value == 1
