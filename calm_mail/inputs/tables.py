"""Streaming CSV tables with a header check, and the field parsers the table readers share.

A table reader maps each data row to a record or to a skip reason. `BadField` carries the reason
(``bad_<column>`` in lower case, ``empty_<column>``) from a field parser up to the row loop,
which counts it with ``file:line``; nothing here ever raises for one bad row.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from calm_mail.errors import InputError
from calm_mail.inputs.sources import READ_ERRORS, open_text, read_error
from calm_mail.records import SkipCounter

T = TypeVar("T")

# The text forms `boolean` accepts (after strip and lower case) and their values.
BOOLEANS = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
    "t": True,
    "f": False,
    "y": True,
    "n": False,
}


class BadField(ValueError):
    """One field of one row is unusable; `reason` is the skip reason to count."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Row = Callable[[str], str]  # column name -> raw field value


def iter_table(
    path: str,
    columns: Sequence[str],
    parse: Callable[[Row], T],
    skips: SkipCounter,
    *,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> Iterator[tuple[str, T]]:
    """Yield (``file:line``, record) for every row `parse` accepts; count the others.

    The header must contain every name in `columns` (case and surrounding blanks ignored) or
    one of its `aliases`, else `InputError` names the file and the missing columns. `parse`
    gets a lookup function (by the name in `columns`) for the current row and raises
    `BadField` for a bad value. A row too short to hold those columns is a ``short_row``.
    """
    try:
        with open_text(path) as stream:
            reader = csv.reader(stream)
            index = _header(path, reader, columns, aliases or {})
            yield from _rows(path, reader, index, parse, skips)
    except (*READ_ERRORS, UnicodeDecodeError) as exc:
        raise read_error(exc, path) from exc


def _header(
    path: str,
    reader: Iterator[list[str]],
    columns: Sequence[str],
    aliases: Mapping[str, Sequence[str]],
) -> dict[str, int]:
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(
            f"empty file; expected a header with {', '.join(columns)}", path=path
        ) from None
    except csv.Error as exc:
        raise InputError(f"unreadable CSV header: {exc}", path=path) from exc
    found = {name.strip().upper(): i for i, name in reversed(list(enumerate(header)))}
    for column, others in aliases.items():
        found.setdefault(column, next((found[o] for o in others if o in found), -1))
    missing = [c for c in columns if found.get(c, -1) < 0]
    if missing:
        raise InputError(
            f"missing required column(s) {', '.join(missing)} "
            f"(the header has: {', '.join(h.strip() for h in header) or 'nothing'})",
            path=path,
            line=1,
        )
    return {c: found[c] for c in columns}


def _rows(
    path: str,
    reader: Iterator[list[str]],
    index: dict[str, int],
    parse: Callable[[Row], T],
    skips: SkipCounter,
) -> Iterator[tuple[str, T]]:
    """The row loop: blank lines pass silently, every other row is seen once and either
    yielded or counted with its ``file:line`` (the csv module's count, so a quoted field over
    several lines does not shift the rows after it)."""
    width = max(index.values()) + 1
    line_num = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            skips.seen()
            skips.add("bad_csv", f"{path}:{line_num + 1}")
            line_num += 1
            continue
        line_num = reader.line_num  # type: ignore[attr-defined]
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line holds no row
        skips.seen()
        if len(row) < width:
            skips.add("short_row", f"{path}:{line_num}")
            continue
        where = f"{path}:{line_num}"
        try:
            yield where, parse({column: row[i] for column, i in index.items()}.__getitem__)
        except BadField as bad:
            skips.add(bad.reason, where)


def text(row: Row, column: str, *, required: bool = False) -> str:
    value = row(column).strip()
    if required and not value:
        raise BadField(f"empty_{column.lower()}")
    return value


def integer(row: Row, column: str, *, low: int | None = None, high: int | None = None) -> int:
    try:
        value = int(row(column).strip())
    except ValueError:
        raise BadField(f"bad_{column.lower()}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadField(f"bad_{column.lower()}")
    return value


def optional_integer(
    row: Row, column: str, *, low: int | None = None, high: int | None = None
) -> int | None:
    return integer(row, column, low=low, high=high) if row(column).strip() else None


def boolean(row: Row, column: str) -> bool:
    value = BOOLEANS.get(row(column).strip().lower())
    if value is None:
        raise BadField(f"bad_{column.lower()}")
    return value


def choice(row: Row, column: str, allowed: frozenset[str]) -> str:
    value = row(column).strip().lower()
    if value not in allowed:
        raise BadField(f"bad_{column.lower()}")
    return value


def epoch_seconds(row: Row, column: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(row(column).strip()), UTC)
    except (ValueError, OverflowError, OSError):
        raise BadField(f"bad_{column.lower()}") from None


def parse_instant(value: object) -> datetime | None:
    """An aware UTC datetime from ISO 8601 text (naive means UTC), epoch seconds or a datetime.

    None when the value is none of these.
    """
    try:
        if isinstance(value, datetime):
            when = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        elif isinstance(value, str):
            raw = value.strip()
            if raw.replace(".", "", 1).isdigit():
                return datetime.fromtimestamp(float(raw), UTC)
            when = datetime.fromisoformat(raw)
        else:
            return None
        if when.tzinfo is None or when.utcoffset() is None:
            return when.replace(tzinfo=UTC)
        return when.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None


def instant(row: Row, column: str, *, optional: bool = False) -> datetime | None:
    raw = row(column).strip()
    if optional and not raw:
        return None
    when = parse_instant(raw)
    if when is None:
        raise BadField(f"bad_{column.lower()}")
    return when
