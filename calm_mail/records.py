"""Typed records that cross stage boundaries.

Slotted, frozen dataclasses with keyword-only fields, validated once in ``__post_init__``.
Naive datetimes are rejected: every timestamp in calm-mail is timezone-aware (UTC unless said).
No DataFrame and no loose dict crosses a stage boundary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


def require_aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")


class ContentSource(StrEnum):
    PERSONALIZE = "personalize"
    EDITORIAL = "editorial"
    POPULAR = "popular"
    HOLDOUT = "holdout"


class DeliveryState(StrEnum):
    PLANNED = "planned"
    CLAIMED = "claimed"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    """One catalog item (Personalize Items style)."""

    item_id: str
    content_type: str  # meditation, sleep_story, soundscape, music, masterclass, movement, kids
    title: str
    narrator: str
    duration_s: int
    language: str  # "en", "es", ... (the locale's language part)
    level: str  # beginner | intermediate | advanced | all
    is_kids: bool
    topics: tuple[str, ...]
    collection_id: str | None
    collection_position: int | None
    created_at: datetime
    image_url: str
    deep_link: str

    def __post_init__(self) -> None:
        require_aware("created_at", self.created_at)
        if not self.item_id:
            raise ValueError("item_id is empty")
        if self.duration_s < 0:
            raise ValueError("duration_s is negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """One audience row."""

    user_id: str
    email: str
    locale: str  # "en-US", "es-ES", ...
    timezone: str | None  # IANA name; None or invalid -> the campaign's fallback zone
    preferred_hour: int | None
    country: str
    tenure_days: int
    level: str  # beginner | intermediate | advanced
    is_kids_profile: bool
    subscription_status: str  # subscriber | trial | lapsed | free
    email_opt_in: bool
    last_active_at: datetime | None

    def __post_init__(self) -> None:
        require_aware("last_active_at", self.last_active_at)
        if not self.user_id:
            raise ValueError("user_id is empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class Recommendation:
    """One usable Personalize batch-output line: a user's ranked items, best first."""

    user_id: str
    item_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """One in-app completion."""

    user_id: str
    item_id: str
    completed_at: datetime

    def __post_init__(self) -> None:
        require_aware("completed_at", self.completed_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class EditorialPicks:
    """The editors' ordered "what's new" list for one edition, per locale."""

    edition: str
    by_locale: Mapping[str, tuple[str, ...]]
    source: str = ""  # the file it came from, for messages

    def for_locale(self, locale: str) -> tuple[str, ...] | None:
        return self.by_locale.get(locale)


@dataclass(slots=True)
class SkipCounter:
    """Counts skipped rows by reason and keeps the first few places (file:line) per reason."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    total: int = 0
    keep: int = 5
    # Item ids checked against the catalog, and those it did not know (dropped), with the
    # number of rows each was dropped from. A row that keeps one known id is not skipped.
    items_read: int = 0
    unknown_ids: Counter[str] = field(default_factory=Counter)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        places = self.examples.setdefault(reason, [])
        if len(places) < self.keep:
            places.append(where)

    def seen(self, n: int = 1) -> None:
        self.total += n

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def share(self) -> float:
        """The share of bad rows."""
        return self.skipped / self.total if self.total else 0.0

    def merge(self, other: SkipCounter) -> None:
        self.total += other.total
        self.items_read += other.items_read
        self.unknown_ids.update(other.unknown_ids)
        for reason, n in other.counts.items():
            self.counts[reason] += n
            places = self.examples.setdefault(reason, [])
            places.extend(other.examples.get(reason, [])[: max(0, self.keep - len(places))])

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "total": self.total,
            "skipped": dict(sorted(self.counts.items())),
            "examples": {k: v for k, v in sorted(self.examples.items())},
        }
        if self.items_read:
            out["items_read"] = self.items_read
        if self.unknown_ids:
            out["unknown_items_dropped"] = self.unknown_dropped
            out["unknown_ids"] = dict(self.top_unknown(UNKNOWN_IDS_SHOWN))
            out["unknown_ids_distinct"] = len(self.unknown_ids)
        return out

    @property
    def unknown_dropped(self) -> int:
        """Item ids dropped because the catalog did not know them."""
        return sum(self.unknown_ids.values())

    def unknown_share(self) -> float:
        """The share of the item ids read that the catalog did not know."""
        return self.unknown_dropped / self.items_read if self.items_read else 0.0

    def top_unknown(self, n: int) -> list[tuple[str, int]]:
        """The `n` unknown ids dropped from the most rows (ties by id: the same every run)."""
        return sorted(self.unknown_ids.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


#: How many of the unknown item ids a summary names.
UNKNOWN_IDS_SHOWN = 10


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceStep:
    """What one rule step did to one user's candidates."""

    step: str
    dropped: tuple[tuple[str, str], ...] = ()  # (item_id, why)
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedDelivery:
    """The plan for one user who gets an email (or is held out)."""

    edition: str
    user_id: str
    email: str
    locale: str
    arm: str
    source: ContentSource
    fallback: bool
    item_ids: tuple[str, ...]
    send_at: datetime
    timezone: str

    def __post_init__(self) -> None:
        require_aware("send_at", self.send_at)

    @property
    def is_holdout(self) -> bool:
        return self.source is ContentSource.HOLDOUT


@dataclass(frozen=True, slots=True, kw_only=True)
class Exclusion:
    """A user who gets no email this edition, and why."""

    edition: str
    user_id: str
    reason: str  # no_opt_in, kids_profile, suppressed, inactive, bad_email, locale, ...


# --------------------------------------------------------------------------- compose / deliver


@dataclass(frozen=True, slots=True, kw_only=True)
class ComposedMessage:
    """One rendered email, ready for a transport."""

    delivery_id: str
    to_email: str
    from_email: str
    from_name: str
    reply_to: str | None
    subject: str
    preheader: str
    html: str
    text: str
    headers: Mapping[str, str]  # List-Unsubscribe, List-Unsubscribe-Post, ...
    categories: tuple[str, ...]
    custom_args: Mapping[str, str]  # delivery_id, campaign, edition, arm: no PII
    send_at: datetime
    batch_id: str | None = None
    asm_group_id: int | None = None

    def __post_init__(self) -> None:
        require_aware("send_at", self.send_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """What a transport says about one accepted message."""

    delivery_id: str
    message_id: str | None


# --------------------------------------------------------------------------- track


class EventType(StrEnum):
    """One normalized vocabulary for SendGrid's Event Webhook (django-anymail style)."""

    PROCESSED = "processed"
    DROPPED = "dropped"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"  # hard bounce (SendGrid: event=bounce, type=bounce)
    BLOCKED = "blocked"  # SendGrid: event=bounce, type=blocked
    OPENED = "opened"
    CLICKED = "clicked"
    SPAM_REPORT = "spam_report"
    UNSUBSCRIBED = "unsubscribed"
    GROUP_UNSUBSCRIBED = "group_unsubscribed"
    GROUP_RESUBSCRIBED = "group_resubscribed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One webhook event, normalized; the raw JSON object is kept verbatim."""

    event_id: str  # SendGrid's sg_event_id (dedup key)
    event_type: EventType
    email: str
    occurred_at: datetime
    delivery_id: str | None  # from custom_args; joins the event to the ledger
    campaign: str | None
    edition: str | None
    arm: str | None
    message_id: str | None  # sg_message_id
    machine_open: bool = False  # Apple Mail Privacy Protection
    url: str | None = None
    reason: str | None = None
    raw: str = "{}"

    def __post_init__(self) -> None:
        require_aware("occurred_at", self.occurred_at)
