"""The items catalog: a CSV in the Personalize Items style, read whole into a dict by item id.

Columns (all required; names are matched without regard to case): ITEM_ID, CONTENT_TYPE, TITLE,
NARRATOR, DURATION_S, LANGUAGE, LEVEL, IS_KIDS, TOPICS ('|'-separated), COLLECTION_ID,
COLLECTION_POSITION, CREATION_TIMESTAMP (epoch seconds), IMAGE_URL, DEEP_LINK.
COLLECTION_ID and COLLECTION_POSITION may be empty for an item outside a collection.
"""

from __future__ import annotations

from calm_mail.errors import InputError
from calm_mail.inputs import tables
from calm_mail.inputs.tables import BadField, Row
from calm_mail.records import Item, SkipCounter

COLUMNS = (
    "ITEM_ID",
    "CONTENT_TYPE",
    "TITLE",
    "NARRATOR",
    "DURATION_S",
    "LANGUAGE",
    "LEVEL",
    "IS_KIDS",
    "TOPICS",
    "COLLECTION_ID",
    "COLLECTION_POSITION",
    "CREATION_TIMESTAMP",
    "IMAGE_URL",
    "DEEP_LINK",
)
LEVELS = frozenset({"beginner", "intermediate", "advanced", "all"})


def read_catalog(path: str, *, skips: SkipCounter | None = None) -> dict[str, Item]:
    """Every good row of the catalog, by item id, in file order.

    Bad rows (reasons ``empty_item_id``, ``bad_duration_s``, ``bad_is_kids``, ``bad_level``,
    ``bad_creation_timestamp``, ``duplicate_item`` - the first row wins - ...) are counted in
    `skips`; without `skips` the first bad row raises `InputError` with its ``file:line``.
    """
    counter = skips if skips is not None else SkipCounter()
    items: dict[str, Item] = {}
    for where, item in tables.iter_table(path, COLUMNS, _item, counter):
        if item.item_id in items:
            counter.add("duplicate_item", where)
        else:
            items[item.item_id] = item
        if skips is None and counter.skipped:
            break
    if skips is None and counter.skipped:
        reason, places = next(iter(counter.examples.items()))
        raise InputError(f"bad catalog row: {reason} at {places[0]}", path=path)
    return items


def _item(row: Row) -> Item:
    position = tables.optional_integer(row, "COLLECTION_POSITION", low=0)
    collection = tables.text(row, "COLLECTION_ID") or None
    if (collection is None) != (position is None):
        raise BadField("bad_collection")
    created = tables.epoch_seconds(row, "CREATION_TIMESTAMP")
    return Item(
        item_id=tables.text(row, "ITEM_ID", required=True),
        content_type=tables.text(row, "CONTENT_TYPE", required=True).lower(),
        title=tables.text(row, "TITLE", required=True),
        narrator=tables.text(row, "NARRATOR"),
        duration_s=tables.integer(row, "DURATION_S", low=0),
        language=tables.text(row, "LANGUAGE", required=True).lower(),
        level=tables.choice(row, "LEVEL", LEVELS),
        is_kids=tables.boolean(row, "IS_KIDS"),
        topics=tuple(t for t in (p.strip() for p in row("TOPICS").split("|")) if t),
        collection_id=collection,
        collection_position=position,
        created_at=created,
        image_url=tables.text(row, "IMAGE_URL"),
        deep_link=tables.text(row, "DEEP_LINK"),
    )
