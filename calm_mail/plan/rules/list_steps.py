"""Built-in steps that shape the whole list: collections rolled up, a diverse mix, the first N."""

from __future__ import annotations

import zlib

from pydantic import Field, ValidationInfo, field_validator

from calm_mail.plan.rules.item_filters import NoParams
from calm_mail.plan.rules.registry import StepFn, StepParams, note_dropped, step
from calm_mail.plan.rules.view import EditionData, UserView
from calm_mail.records import Item


@step("roll_up_collections", NoParams)
def _roll_up(params: NoParams, data: EditionData) -> StepFn:
    """A collection's part becomes the collection: its first unfinished part, once per email."""
    parts = {cid: p for cid, p in data.collections.items() if len(p) > 1}
    collection_of = {i: cid for cid, p in parts.items() for i in p}

    def roll_up_collections(items: list[str], view: UserView) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        trace = view.dropped
        for i in items:
            cid = collection_of.get(i)
            if cid is None:
                if i not in seen:
                    seen.add(i)
                    out.append(i)
                continue
            if cid in seen:
                if trace is not None:
                    trace.append((i, f"collection {cid} is already in this email"))
                continue
            seen.add(cid)
            done = view.completed
            if not done:  # most users: no generator needed for the first part
                rep: str | None = parts[cid][0]
            else:
                rep = next((p for p in parts[cid] if p not in done), None)
            if rep is None:
                if trace is not None:
                    trace.append((i, f"collection {cid}: every part completed"))
                continue
            if rep != i and trace is not None:
                trace.append((i, f"part of collection {cid}: replaced by {rep}"))
            out.append(rep)
        return out

    return roll_up_collections


class Diversify(StepParams):
    tier_size: int = Field(default=3, ge=1)
    max_per_type: int = Field(default=2, ge=1)
    max_per_topic: int = Field(default=2, ge=1)


@step("diversify", Diversify)
def _diversify(params: Diversify, data: EditionData) -> StepFn:
    """Seeded shuffle within relevance tiers, then a cap per content type and per topic."""
    catalog = data.catalog
    key = {i: i.encode() for i in catalog}
    # (content type, topics) per item, looked up once per candidate on the hot path
    facets = {i: (item.content_type, item.topics) for i, item in catalog.items()}
    tier, max_type, max_topic = params.tier_size, params.max_per_type, params.max_per_topic
    crc32 = zlib.crc32

    def diversify(items: list[str], view: UserView) -> list[str]:
        seed = view.seed
        if tier == 1:
            shuffled = items
        else:
            # by tier, then by the seeded key, then by position (a stable sort per tier)
            ranked = [(n // tier, crc32(key[i], seed), n, i) for n, i in enumerate(items)]
            ranked.sort()
            shuffled = [r[3] for r in ranked]
        per_type: dict[str, int] = {}
        per_topic: dict[str, int] = {}
        out = []
        for i in shuffled:
            content_type, topics = facets[i]
            over = per_type.get(content_type, 0) >= max_type
            if not over:
                for topic in topics:  # a loop, not any(): no generator per candidate
                    if per_topic.get(topic, 0) >= max_topic:
                        over = True
                        break
            if over:
                if view.dropped is not None:
                    why = _over_cap(catalog[i], per_type, per_topic, max_type, max_topic)
                    view.dropped.append((i, why))
                continue
            per_type[content_type] = per_type.get(content_type, 0) + 1
            for topic in topics:
                per_topic[topic] = per_topic.get(topic, 0) + 1
            out.append(i)
        return out

    return diversify


def _over_cap(
    item: Item, per_type: dict[str, int], per_topic: dict[str, int], max_type: int, max_topic: int
) -> str:
    if per_type.get(item.content_type, 0) >= max_type:
        return f"already {max_type} of type {item.content_type}"
    for topic in item.topics:
        if per_topic.get(topic, 0) >= max_topic:
            return f"already {max_topic} on topic {topic}"
    return ""


class Take(StepParams):
    max: int = Field(default=6, ge=1, le=20)
    min: int = Field(default=3, ge=1)

    @field_validator("min")
    @classmethod
    def _range(cls, low: int, info: ValidationInfo) -> int:
        high = info.data.get("max")
        if high is not None and low > high:
            raise ValueError(f"min ({low}) exceeds max ({high})")
        return low


@step("take", Take)
def _take(params: Take, data: EditionData) -> StepFn:
    """The first `max` items; fewer than `min` sends the user to the fallback."""
    n = params.max

    def take(items: list[str], view: UserView) -> list[str]:
        if len(items) > n:
            note_dropped(view, items[n:], lambda i: f"beyond the first {n}")
            return items[:n]
        return items

    return take
