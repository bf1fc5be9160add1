"""The catalog and audience CSV readers."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.errors import InputError
from calm_mail.inputs import iter_audience, read_catalog
from calm_mail.inputs.audience import COLUMNS as AUDIENCE_COLUMNS
from calm_mail.inputs.catalog import COLUMNS as CATALOG_COLUMNS
from calm_mail.records import SkipCounter


def test_catalog_good_file(data_dir: Path) -> None:
    items = read_catalog(str(data_dir / "catalog/good.csv"))
    assert list(items) == ["i1", "i2", "i3"]
    i1, i2, i3 = items.values()
    assert i1.topics == ("breathing", "stress") and i1.collection_id is None
    assert i1.collection_position is None and i1.is_kids is False and i1.duration_s == 600
    assert i1.created_at == datetime.fromtimestamp(1795000000, UTC)
    assert i2.title == 'Tea & "Toast": A Slow Morning' and i2.is_kids is False
    assert (i2.collection_id, i2.collection_position) == ("col-1", 1)
    assert i3.is_kids is True and i3.topics == ("bedtime", "sleep")
    assert i3.image_url == "https://img.calm.example/items/i3.jpg"
    assert i3.deep_link == "calm://content/i3"


def test_catalog_bad_rows_are_counted(data_dir: Path) -> None:
    path = data_dir / "catalog/bad_rows.csv"
    skips = SkipCounter()
    items = read_catalog(str(path), skips=skips)
    assert list(items) == ["i1", "i10"]
    assert dict(skips.counts) == {
        "empty_item_id": 1,
        "bad_duration_s": 1,
        "bad_is_kids": 1,
        "bad_level": 1,
        "bad_creation_timestamp": 1,
        "duplicate_item": 1,
        "short_row": 1,
        "bad_collection": 1,
    }
    assert skips.examples["empty_item_id"] == [f"{path}:3"]
    assert skips.examples["duplicate_item"] == [f"{path}:8"]
    assert skips.total == 10


def test_catalog_without_a_counter_stops_at_the_first_bad_row(data_dir: Path) -> None:
    path = data_dir / "catalog/bad_rows.csv"
    with pytest.raises(InputError, match=rf"bad catalog row: empty_item_id at {path}:3"):
        read_catalog(str(path))


def test_catalog_missing_columns_name_the_file(data_dir: Path) -> None:
    path = data_dir / "catalog/missing_columns.csv"
    with pytest.raises(InputError) as exc:
        read_catalog(str(path))
    assert str(exc.value).startswith(
        f"{path}:1: missing required column(s) LEVEL, CREATION_TIMESTAMP"
    )
    assert exc.value.path == str(path)


@pytest.mark.parametrize("content", ["", "\ufeff"])
def test_empty_and_unreadable_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match="empty file"):
        read_catalog(str(path))
    with pytest.raises(InputError, match="cannot read"):
        read_catalog(str(tmp_path / "nope.csv"))


def test_not_utf8_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(",".join(AUDIENCE_COLUMNS).encode() + b"\n\xff\xfe,x\n")
    with pytest.raises(InputError, match="cannot read"):
        list(iter_audience(str(path), skips=SkipCounter()))


def test_audience_good_file(data_dir: Path) -> None:
    users = list(iter_audience(str(data_dir / "audience/good.csv"), skips=SkipCounter()))
    assert [u.user_id for u in users] == ["100001", "100002", "100003", "100004"]
    first, second, third, fourth = users
    assert first.country == "US" and first.preferred_hour == 7 and first.email_opt_in
    assert first.last_active_at == datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert second.timezone is None and second.preferred_hour is None
    assert second.last_active_at is None and second.email_opt_in is True
    assert third.timezone == "Mars/Olympus_Mons"  # the plan falls back, the reader keeps it
    assert third.level == "intermediate" and third.subscription_status == "free"
    assert third.last_active_at == datetime(2026, 11, 1, 9, tzinfo=UTC)
    assert fourth.last_active_at == datetime(2026, 11, 2, 9, 30, tzinfo=UTC)  # naive = UTC
    assert fourth.email_opt_in is False


def test_audience_bad_rows_are_counted(data_dir: Path) -> None:
    path = data_dir / "audience/bad_rows.csv"
    skips = SkipCounter()
    users = list(iter_audience(str(path), skips=skips))
    assert [u.user_id for u in users] == ["1", "9"]  # a bad e-mail is the plan's business
    assert dict(skips.counts) == {
        "empty_user_id": 1,
        "bad_preferred_hour": 1,
        "bad_tenure_days": 2,
        "bad_level": 1,
        "bad_is_kids_profile": 1,
        "bad_email_opt_in": 1,
        "bad_last_active_at": 1,
        "duplicate_user": 1,
        "short_row": 1,
    }
    assert skips.examples["short_row"] == [f"{path}:12"]
    assert skips.examples["bad_tenure_days"] == [f"{path}:5", f"{path}:14"]
    assert skips.total == 12  # the blank line is not a row


def test_audience_missing_columns(data_dir: Path) -> None:
    path = data_dir / "audience/missing_columns.csv"
    with pytest.raises(InputError, match="PREFERRED_HOUR, IS_KIDS_PROFILE, EMAIL_OPT_IN") as exc:
        next(iter_audience(str(path), skips=SkipCounter()))
    assert str(path) in str(exc.value)


def test_quoted_fields_with_newlines_keep_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    good = [
        "1",
        "a@example.com",
        "en-US",
        "",
        "",
        "US",
        "1",
        "beginner",
        "false",
        "free",
        "true",
        "",
    ]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(AUDIENCE_COLUMNS)
        writer.writerow([*good[:5], "U\nS", *good[6:]])
        writer.writerow(["2", *good[1:6], "x", *good[7:]])
    skips = SkipCounter()
    assert [u.country for u in iter_audience(str(path), skips=skips)] == ["U\nS"]
    assert skips.examples["bad_tenure_days"] == [f"{path}:4"]


cell = st.text(max_size=6) | st.sampled_from(
    ["", "1", "true", "no", "beginner", "all", "-1", "1795000000", "2026-11-20T08:00:00Z", '"']
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.lists(cell, min_size=0, max_size=15), max_size=10))
def test_junk_csv_rows_never_crash_and_counts_add_up(tmp_path: Path, rows: list[list[str]]) -> None:
    for columns, name in ((AUDIENCE_COLUMNS, "users.csv"), (CATALOG_COLUMNS, "catalog.csv")):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows(rows)
        path = tmp_path / name
        path.write_text(buffer.getvalue(), encoding="utf-8")
        skips = SkipCounter()
        if name == "users.csv":
            kept = len(list(iter_audience(str(path), skips=skips)))
        else:
            kept = len(read_catalog(str(path), skips=skips))
        assert kept + skips.skipped == skips.total
        assert skips.total <= len(rows)
