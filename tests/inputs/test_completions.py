"""Completion history in CSV, Parquet and JSON Lines, one file or a prefix of many."""

from __future__ import annotations

import csv
import gzip
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calm_mail.errors import InputError
from calm_mail.inputs import iter_completions
from calm_mail.records import Completion, SkipCounter

EXPECTED = [
    ("u1", "i1", datetime(2026, 11, 20, 8, tzinfo=UTC)),
    ("u1", "i2", datetime(2026, 11, 20, 8, tzinfo=UTC)),
    ("u2", "i3", datetime.fromtimestamp(1795000000, UTC)),
    ("u3", "i1", datetime(2026, 11, 21, 7, tzinfo=UTC)),
]


def read(path: Path | str) -> tuple[list[tuple[str, str, datetime]], SkipCounter]:
    skips = SkipCounter()
    rows = [as_tuple(c) for c in iter_completions(str(path), skips=skips)]
    return rows, skips


def as_tuple(c: Completion) -> tuple[str, str, datetime]:
    assert c.completed_at.utcoffset() is not None
    return c.user_id, c.item_id, c.completed_at


def test_csv(data_dir: Path) -> None:
    rows, skips = read(data_dir / "completions/good.csv")
    assert rows == EXPECTED and skips.total == 4 and skips.skipped == 0


def test_csv_with_item_id_column_and_gzip(data_dir: Path, tmp_path: Path) -> None:
    rows, _ = read(data_dir / "completions/item_id_column.csv")
    assert rows == [EXPECTED[0]]
    target = tmp_path / "c.csv.gz"
    target.write_bytes(gzip.compress((data_dir / "completions/good.csv").read_bytes()))
    assert read(target)[0] == EXPECTED


def test_csv_bad_rows(data_dir: Path) -> None:
    path = data_dir / "completions/bad_rows.csv"
    rows, skips = read(path)
    assert rows == [EXPECTED[0]]
    assert dict(skips.counts) == {
        "empty_user_id": 1,
        "empty_item_id": 1,
        "bad_completed_at": 1,
        "short_row": 1,
    }
    assert skips.examples["bad_completed_at"] == [f"{path}:5"]


def test_missing_columns(data_dir: Path) -> None:
    path = data_dir / "completions/missing_columns.csv"
    with pytest.raises(InputError, match=r"missing required column\(s\) CONTENT_ID, COMPLETED_AT"):
        read(path)
    with pytest.raises(InputError, match=str(path)):
        read(path)


def test_a_file_with_everything_odd_at_once(tmp_path: Path) -> None:
    """Hand-counted lines: a BOM, a reordered aliased header with an extra column, a quoted
    field over two lines, a blank line, a short row, a field too big for csv, an offset."""
    path = tmp_path / "history.csv"
    big = "y" * (csv.field_size_limit() + 1)
    path.write_text(
        "\ufeff Completed_At ,note,ITEM_ID,user_id\n"  # 1
        '2026-11-20T08:00:00Z,"two\nlines",i1,u1\n'  # 2-3
        "\n"  # 4
        "2026-11-20T09:00:00+01:00,,i2,u2\n"  # 5
        "2026-11-20T08:00:00Z,,i3\n"  # 6
        f'1795000000,"{big}",i4,u4\n'  # 7
        "1795000000,,i5,u5\n"  # 8
        "2026-11-20T08:00:00,x,i6, \n",  # 9
        encoding="utf-8",
    )
    rows, skips = read(path)
    eight = datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert rows == [
        ("u1", "i1", eight),
        ("u2", "i2", eight),
        ("u5", "i5", datetime.fromtimestamp(1795000000, UTC)),
    ]
    assert dict(skips.counts) == {"short_row": 1, "bad_csv": 1, "empty_user_id": 1}
    assert skips.examples == {
        "short_row": [f"{path}:6"],
        "bad_csv": [f"{path}:7"],
        "empty_user_id": [f"{path}:9"],
    }
    assert skips.total == 6


def test_an_offset_is_converted_to_utc_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text("user_id,item_id,completed_at\nu,i,2026-11-20T09:00:00+01:00\n")
    (done,) = iter_completions(str(path), skips=SkipCounter())
    assert done.completed_at.tzinfo is UTC
    assert done.completed_at == datetime(2026, 11, 20, 9, tzinfo=timezone(timedelta(hours=1)))


def test_skips_are_seen_as_the_rows_are_read(tmp_path: Path) -> None:
    """validate.py samples the first rows with islice and reads the counter there."""
    path = tmp_path / "history.csv"
    path.write_text("user_id,item_id,completed_at\n,i,x\nu,i,2026-11-20T08:00:00Z\nu,i,x\n")
    skips = SkipCounter()
    rows = iter_completions(str(path), skips=skips)
    next(rows)
    assert (skips.total, dict(skips.counts)) == (2, {"empty_user_id": 1})


def test_json_lines(data_dir: Path) -> None:
    path = data_dir / "completions/good.jsonl"
    rows, skips = read(path)
    assert rows == [
        EXPECTED[0],
        ("42", "i2", datetime.fromtimestamp(1795000000, UTC)),
        ("u3", "i3", datetime(2026, 11, 21, 7, tzinfo=UTC)),
    ]
    assert dict(skips.counts) == {"bad_json": 2, "bad_completed_at": 1}
    assert skips.examples["bad_json"] == [f"{path}:5", f"{path}:7"]
    assert skips.total == 6


def write_parquet(path: Path, completed_at: pa.Array, item_column: str = "content_id") -> None:
    pq.write_table(
        pa.table(
            {
                "user_id": ["u1", "u2", None, "u4"],
                item_column: ["i1", "i2", "i3", "i4"],
                "completed_at": completed_at,
            }
        ),
        path,
    )


def test_parquet_with_timestamps_and_epochs(tmp_path: Path) -> None:
    aware = pa.array(
        [datetime(2026, 11, 20, 8, tzinfo=UTC)] * 3 + [None], type=pa.timestamp("us", tz="UTC")
    )
    write_parquet(tmp_path / "a.parquet", aware)
    naive = pa.array([datetime(2026, 11, 20, 8)] * 4, type=pa.timestamp("ms"))
    write_parquet(tmp_path / "b.parquet", naive, item_column="ITEM_ID")
    write_parquet(tmp_path / "c.parquet", pa.array([1795000000] * 4))
    rows, skips = read(tmp_path)
    when = datetime(2026, 11, 20, 8, tzinfo=UTC)
    epoch = datetime.fromtimestamp(1795000000, UTC)
    assert rows == [
        ("u1", "i1", when),
        ("u2", "i2", when),
        ("u1", "i1", when),
        ("u2", "i2", when),
        ("u4", "i4", when),
        ("u1", "i1", epoch),
        ("u2", "i2", epoch),
        ("u4", "i4", epoch),
    ]
    assert dict(skips.counts) == {"empty_user_id": 3, "bad_completed_at": 1}
    assert skips.examples["bad_completed_at"] == [f"{tmp_path}/a.parquet:row 4"]


def test_parquet_missing_columns_and_corrupt_file(tmp_path: Path) -> None:
    pq.write_table(pa.table({"user_id": ["u1"], "when": [1]}), tmp_path / "x.parquet")
    with pytest.raises(InputError, match="CONTENT_ID, COMPLETED_AT"):
        read(tmp_path / "x.parquet")
    (tmp_path / "y.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read(tmp_path / "y.parquet")


def test_a_prefix_reads_every_format_in_order(data_dir: Path, tmp_path: Path) -> None:
    shutil.copy(data_dir / "completions/good.csv", tmp_path / "1.csv")
    shutil.copy(data_dir / "completions/good.jsonl", tmp_path / "2.jsonl")
    write_parquet(tmp_path / "3.parquet", pa.array([1795000000] * 4))
    (tmp_path / "README.txt").write_text("not data")
    rows, _ = read(tmp_path)
    assert len(rows) == 4 + 3 + 3
    with pytest.raises(InputError, match="no completion files"):
        read(tmp_path / "README.txt")
