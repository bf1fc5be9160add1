"""In-app completion history: (user id, item id, completed_at) from CSV, Parquet or JSON Lines.

A path is one file, or a folder / S3 prefix whose files are all read in sorted order. The
format follows the suffix: ``.csv``, ``.parquet``, ``.jsonl``/``.ndjson``/``.json`` (JSON
Lines), each but Parquet optionally ``.gz``. Columns: ``user_id``, ``content_id`` (or
``item_id``), ``completed_at`` - ISO 8601 with a zone or ``Z``, or epoch seconds; a naive ISO
value is taken as UTC. Names are matched without regard to case.

Bad rows are counted: ``empty_user_id``, ``empty_item_id``, ``bad_completed_at``,
``bad_json``, ``short_row``, ``bad_csv``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from calm_mail.errors import InputError
from calm_mail.inputs import tables
from calm_mail.inputs.sources import (
    READ_ERRORS,
    is_s3,
    list_prefix,
    open_source,
    read_error,
)
from calm_mail.inputs.tables import BadField
from calm_mail.records import Completion, SkipCounter

CSV = (".csv", ".csv.gz")
PARQUET = (".parquet",)
JSONL = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json", ".json.gz")
SUFFIXES = CSV + PARQUET + JSONL
ITEM_COLUMNS = ("CONTENT_ID", "ITEM_ID")
BATCH_ROWS = 65_536


def iter_completions(path: str, *, skips: SkipCounter) -> Iterator[Completion]:
    """Stream every good completion from `path` (a file or a prefix of many)."""
    files = [path] if path.endswith(SUFFIXES) else list_prefix(path, SUFFIXES)
    if not files:
        raise InputError(f"no completion files ({', '.join(SUFFIXES)}) here", path=path)
    for file in files:
        if file.endswith(CSV):
            yield from _csv(file, skips)
        elif file.endswith(PARQUET):
            yield from _parquet(file, skips)
        else:
            yield from _jsonl(file, skips)


def _csv(path: str, skips: SkipCounter) -> Iterator[Completion]:
    columns = ("USER_ID", "CONTENT_ID", "COMPLETED_AT")
    for _, completion in tables.iter_table(
        path, columns, _csv_completion, skips, aliases={"CONTENT_ID": ("ITEM_ID",)}
    ):
        yield completion


def _csv_completion(row: tables.Row) -> Completion:
    return _completion(row("USER_ID"), row("CONTENT_ID"), row("COMPLETED_AT"))


def _completion(user_id: Any, item_id: Any, completed_at: Any) -> Completion:
    user = _ident(user_id)
    if not user:
        raise BadField("empty_user_id")
    item = _ident(item_id)
    if not item:
        raise BadField("empty_item_id")
    when = tables.parse_instant(completed_at)
    if when is None:
        raise BadField("bad_completed_at")
    return Completion(user_id=user, item_id=item, completed_at=when)


def _ident(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    return str(value).strip() if isinstance(value, str | int) else ""


def _jsonl(path: str, skips: SkipCounter) -> Iterator[Completion]:
    with open_source(path) as stream:
        lineno = 0
        try:
            for lineno, raw in enumerate(stream, 1):
                if not raw.strip():
                    continue
                skips.seen()
                try:
                    yield _from_json(raw)
                except BadField as bad:
                    skips.add(bad.reason, f"{path}:{lineno}")
        except (*READ_ERRORS, UnicodeDecodeError) as exc:
            raise read_error(exc, f"{path}:{lineno + 1}") from exc


def _from_json(raw: bytes) -> Completion:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadField("bad_json") from None
    if not isinstance(doc, dict):
        raise BadField("bad_json")
    fields = {str(k).lower(): v for k, v in doc.items()}
    item = fields.get("content_id", fields.get("item_id"))
    return _completion(fields.get("user_id"), item, fields.get("completed_at"))


def _parquet(path: str, skips: SkipCounter) -> Iterator[Completion]:
    # pyarrow is slow to import, and only a Parquet history needs it
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _local_copy(path) as local:
        try:
            parquet = pq.ParquetFile(local)
            names = _parquet_columns(path, parquet.schema_arrow.names)
            batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(names))
            row = 0
            for batch in batches:
                data = [batch.column(name).to_pylist() for name in names]
                for user, item, when in zip(*data, strict=True):
                    row += 1
                    skips.seen()
                    try:
                        yield _completion(user, item, when)
                    except BadField as bad:
                        skips.add(bad.reason, f"{path}:row {row}")
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"not a readable Parquet file: {exc}", path=path) from exc


def _parquet_columns(path: str, names: list[str]) -> list[str]:
    """The file's names for user id, item id and completed_at, in that order."""
    by_upper = {n.strip().upper(): n for n in reversed(names)}
    item = next((by_upper[c] for c in ITEM_COLUMNS if c in by_upper), None)
    wanted = {
        "USER_ID": by_upper.get("USER_ID"),
        "CONTENT_ID": item,
        "COMPLETED_AT": by_upper.get("COMPLETED_AT"),
    }
    missing = [k for k, v in wanted.items() if v is None]
    if missing:
        raise InputError(
            f"missing required column(s) {', '.join(missing)} (the file has: {', '.join(names)})",
            path=path,
        )
    return [v for v in wanted.values() if v is not None]


@contextmanager
def _local_copy(path: str) -> Iterator[str]:
    """Parquet needs random access: an S3 object is streamed to a temporary file first."""
    if not is_s3(path):
        yield path
        return
    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
        try:
            with open_source(path) as stream:
                shutil.copyfileobj(stream, tmp, 1 << 20)
        except READ_ERRORS as exc:
            raise read_error(exc, path) from exc
        tmp.flush()
        yield tmp.name
