"""Which events change the suppression list that eligibility reads, and how.

Suppressed (never mailed again): hard bounces, blocks, spam reports, unsubscribes, group
unsubscribes, and drops whose reason says SendGrid itself already suppresses the address (bounced,
unsubscribed, spam-reporting or invalid address). A group resubscribe lifts that group's
suppression.

Blocks suppress too, under their own reason ``blocked``, as the product requires: mailing an
address the receiving server refused again risks the sender's reputation. Many blocks are
temporary (throttling, an IP on a blocklist), so the reason is kept apart and an operator can lift
those with ``calm-mail suppressions remove EMAIL --reason blocked``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

from calm_mail.records import Event, EventType
from calm_mail.store import schema

# The suppression row's columns: a reason or source longer than these would fail the batch.
_REASON_LIMIT = getattr(schema.suppressions.c.reason.type, "length", 64)
_SOURCE_LIMIT = getattr(schema.suppressions.c.source.type, "length", 200)

#: Event type -> suppression reason (group events get ``:<asm_group_id>`` appended).
SUPPRESSING: Mapping[EventType, str] = {
    EventType.BOUNCED: "bounce",
    EventType.BLOCKED: "blocked",
    EventType.SPAM_REPORT: "spam_report",
    EventType.UNSUBSCRIBED: "unsubscribe",
    EventType.GROUP_UNSUBSCRIBED: "group_unsubscribe",
}

#: A ``dropped`` event's reason (lowercased) -> suppression reason.
DROP_REASONS: Mapping[str, str] = {
    "bounced address": "bounce",
    "unsubscribed address": "unsubscribe",
    "spam reporting address": "spam_report",
    "invalid": "invalid_address",
}


@dataclass(frozen=True, slots=True)
class SuppressionChanges:
    """What one batch does to the suppression list: rows to add, (email, reason) to remove."""

    add: tuple[tuple[str, str, str], ...]  # (email, reason, source)
    remove: tuple[tuple[str, str], ...]


def suppression_changes(events: Iterable[Event]) -> SuppressionChanges:
    """The net effect of `events`, applied in time order per (email, reason).

    Only the last word per address and reason counts inside a batch, so an unsubscribe followed
    by a resubscribe leaves the address mailable. Across batches each batch is applied as it
    arrives: a late retry of an old unsubscribe may suppress again — erring on the quiet side.
    """
    final: dict[tuple[str, str], str | None] = {}  # -> source to add, or None to remove
    for event in sorted(events, key=lambda e: e.occurred_at):
        change = _change(event)
        if change is not None:
            reason, adds = change
            final[(event.email.strip().lower(), reason)] = _source(event) if adds else None
    add = tuple((email, reason, src) for (email, reason), src in final.items() if src is not None)
    remove = tuple(key for key, src in final.items() if src is None)
    return SuppressionChanges(add=add, remove=remove)


def _change(event: Event) -> tuple[str, bool] | None:
    """(reason, add?) for an event that touches the list, else None."""
    kind = event.event_type
    if kind is EventType.GROUP_UNSUBSCRIBED or kind is EventType.GROUP_RESUBSCRIBED:
        return _group_reason(event), kind is EventType.GROUP_UNSUBSCRIBED
    if kind in SUPPRESSING:
        return SUPPRESSING[kind], True
    if kind is EventType.DROPPED and event.reason:
        reason = DROP_REASONS.get(event.reason.strip().lower())
        return (reason, True) if reason else None
    return None


def _group_reason(event: Event) -> str:
    try:
        group = orjson.loads(event.raw).get("asm_group_id")
    except (orjson.JSONDecodeError, AttributeError):
        group = None
    if isinstance(group, int | str) and not isinstance(group, bool) and str(group).strip():
        reason = f"group_unsubscribe:{str(group).strip()}"
        if len(reason) <= _REASON_LIMIT and "\x00" not in reason and reason.isprintable():
            return reason
        # An id that cannot be the key as is: one deterministic key per group id, so that a
        # resubscribe to the same group still lifts it.
        digest = hashlib.sha256(str(group).encode("utf-8", "surrogatepass")).hexdigest()
        return f"group_unsubscribe:sha256:{digest[:32]}"
    return "group_unsubscribe"


def _source(event: Event) -> str:
    """Where a suppression came from, cut to its column (the event id may use all of its own)."""
    return f"sendgrid:{event.event_type.value}:{event.event_id}"[:_SOURCE_LIMIT]
