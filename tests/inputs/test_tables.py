"""The catalog and audience CSV readers, and the CSV row loop under junk input."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.errors import InputError
from calm_mail.inputs import iter_audience, iter_completions, read_catalog
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


USUAL_USER = ["1", "a@example.com", "en-US", "", "7", "US", "10", "beginner", "false", "free"]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("TENURE_DAYS", "9" * 5000, "skip: bad_tenure_days"),  # past int()'s limit on digits
        ("TENURE_DAYS", "٣", "tenure_days=3"),  # an Arabic-Indic three: int() reads it
        ("TENURE_DAYS", " +3 ", "tenure_days=3"),
        ("TENURE_DAYS", "²", "skip: bad_tenure_days"),  # isdigit() but not int()
        ("PREFERRED_HOUR", " 07", "preferred_hour=7"),
        ("PREFERRED_HOUR", "24", "skip: bad_preferred_hour"),
        ("LEVEL", " Advanced ", "level='advanced'"),
        ("IS_KIDS_PROFILE", " Yes", "is_kids_profile=True"),
        ("IS_KIDS_PROFILE", "maybe", "skip: bad_is_kids_profile"),
        ("LAST_ACTIVE_AT", "2026-11-20T09:00:00+01:00", "datetime(2026, 11, 20, 8, 0, tzinfo="),
        ("LAST_ACTIVE_AT", "20261120", "datetime(1970, 8, 23, 12, 5, 20, tzinfo="),  # epoch
        ("LAST_ACTIVE_AT", "2026-W47-5T08:00Z", "datetime(2026, 11, 20, 8, 0, tzinfo="),
        ("LAST_ACTIVE_AT", "yesterday", "skip: bad_last_active_at"),
        ("LAST_ACTIVE_AT", " ", "last_active_at=None"),
    ],
)
def test_odd_values_read_field_by_field(
    tmp_path: Path, field: str, value: str, expected: str
) -> None:
    row = [*USUAL_USER, "true", "2026-11-20T08:00:00Z"]
    row[AUDIENCE_COLUMNS.index(field)] = value
    path = tmp_path / "users.csv"
    with path.open("w", newline="") as out:
        csv.writer(out).writerows([AUDIENCE_COLUMNS, row])
    skips = SkipCounter()
    users = list(iter_audience(str(path), skips=skips))
    got = repr(users[0]) if users else f"skip: {next(iter(skips.counts))}"
    assert expected in got
    assert all(u.last_active_at is None or u.last_active_at.tzinfo is UTC for u in users)


def test_a_duplicate_user_is_counted_at_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    row = "a@example.com,en-US,,7,US,10,beginner,false,free,true,2026-11-20T08:00:00Z"
    path.write_text(
        ",".join(AUDIENCE_COLUMNS) + f"\n1,{row}\n2,{row}\n\n 1 ,{row}\n1,x\n",
        encoding="utf-8",
    )
    skips = SkipCounter()
    assert [u.user_id for u in iter_audience(str(path), skips=skips)] == ["1", "2"]
    assert skips.examples == {"duplicate_user": [f"{path}:5"], "short_row": [f"{path}:6"]}
    assert skips.total == 4


def test_users_share_one_object_per_distinct_locale_zone_country_level_and_status(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.csv"
    rows = [
        "a@x.com,es,Europe/Madrid,7,es,10,beginner,false,Free,true,",
        "b@x.com,es,Europe/Madrid,7,ES,10,beginner,false,free,true,",
        "c@x.com,es , Europe/Madrid,7,es,10,beginner,false,FREE,true,",
    ]
    path.write_text(
        ",".join(AUDIENCE_COLUMNS) + "".join(f"\n{k},{r}" for k, r in enumerate(rows)) + "\n",
        encoding="utf-8",
    )
    a, b, c = iter_audience(str(path), skips=SkipCounter())
    for field in ("locale", "timezone", "country", "level", "subscription_status"):
        assert getattr(a, field) is getattr(b, field) is getattr(c, field), field
    assert (a.locale, a.timezone, a.country, a.subscription_status) == (
        "es",
        "Europe/Madrid",
        "ES",
        "free",
    )


# --------------------------------------------------------------------------- junk files

FIELD_LIMIT = csv.field_size_limit()
ODD = st.sampled_from(
    ["", " ", "\t", "\u00a0", " 7 ", "-1", "07", "24", "1e3", "٣", "²", "9" * 5000, "TRUE",
     " yes", "maybe", "Advanced", "2026-11-20T08:00:00", "2026-11-20T08:00:00+02:00",
     " 2026-11-20T08:00:00Z", "2026-11-20T08:00:00\x00Z", "2026-W47-5T08:00Z", "1795000000.5",
     "1e20", "x\ny", 'a "quoted", b', "\x00"]
) | st.text(max_size=8)  # fmt: skip
WORD = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=6)
UTC_TEXT = st.datetimes(
    min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
).map(lambda when: when.isoformat().replace("+00:00", "Z"))
USUAL = {  # the usual form of each column, so most rows are kept and some are not
    "USER_ID": st.sampled_from(["1", "2", "3"]) | WORD,  # a few ids, so duplicates happen
    "EMAIL": WORD.map(lambda w: f"{w}@example.com"),
    "LOCALE": st.sampled_from(["en-US", "fr-FR", ""]),
    "TIMEZONE": st.sampled_from(["Europe/Paris", ""]),
    "PREFERRED_HOUR": st.sampled_from(["", *map(str, range(24))]),
    "COUNTRY": st.sampled_from(["US", "fr", ""]),
    "TENURE_DAYS": st.integers(0, 10**9).map(str),
    "LEVEL": st.sampled_from(["beginner", "intermediate", "advanced"]),
    "IS_KIDS_PROFILE": st.sampled_from(["true", "false"]),
    "SUBSCRIPTION_STATUS": st.sampled_from(["subscriber", "Lapsed"]),
    "EMAIL_OPT_IN": st.sampled_from(["true", "false"]),
    "LAST_ACTIVE_AT": UTC_TEXT | st.just(""),
    "CONTENT_ID": WORD,
    "COMPLETED_AT": UTC_TEXT,
}
USUAL["ITEM_ID"] = USUAL["CONTENT_ID"]


@st.composite
def csv_file(draw: st.DrawFn, columns: list[str]) -> str:
    """CSV text: a header in any order, case and padding, maybe with extra columns and a
    BOM, then rows mostly usual with odd cells, quoting, blank lines, short and long rows."""
    names = [*columns, *draw(st.lists(st.sampled_from(["NOTE", "", "X"]), max_size=2))]
    order = draw(st.permutations(names))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow([draw(st.sampled_from([n, n.lower(), f" {n} "])) for n in order])
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            out.write(draw(st.sampled_from(["\n", " \n", ",\n", "\r\n", "\x00\n", '"open,\n'])))
            continue
        if kind == 1:  # a field past the csv module's limit: bad_csv
            out.write(f'x,"{"y" * (FIELD_LIMIT + 1)}"\n')
            continue
        cells = [draw(USUAL.get(n.strip().upper(), ODD)) for n in order]
        for i in draw(st.lists(st.integers(0, len(cells) - 1), max_size=3)):
            cells[i] = draw(ODD)
        if kind == 2:
            cells = cells[: draw(st.integers(0, len(cells)))]
        elif kind == 3:
            cells.append(draw(ODD))
        writer.writerow(cells)
    return ("\ufeff" if draw(st.booleans()) else "") + out.getvalue()


READERS = {
    "users.csv": (AUDIENCE_COLUMNS, iter_audience),
    "history.csv": (("USER_ID", "CONTENT_ID", "COMPLETED_AT"), iter_completions),
}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_junk_files_are_read_row_by_row_with_every_skip_at_a_line_of_the_file(
    tmp_path: Path, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(READERS)))
    columns, read = READERS[name]
    if name == "history.csv" and data.draw(st.booleans()):
        columns = ("USER_ID", "ITEM_ID", "COMPLETED_AT")  # the alias
    text = data.draw(csv_file(list(columns)))
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    lines = text.count("\n") + text.count("\r") - text.count("\r\n")
    skips = SkipCounter()
    kept = list(read(str(path), skips=skips))  # type: ignore[operator]
    assert len(kept) + skips.skipped == skips.total
    assert all(getattr(r, "user_id", "") for r in kept)
    place = re.compile(rf"{re.escape(str(path))}:(\d+)")
    for places in skips.examples.values():
        for where in places:
            found = place.fullmatch(where)
            assert found and 2 <= int(found[1]) <= max(lines, 2), where


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("EMAIL", "a" * 243 + "@example.com", "skip: long_email"),  # 255 characters
        ("EMAIL", "a" * 242 + "@example.com", "email='aaa"),  # 254: RFC 5321's limit
        ("EMAIL", "x" * 100_000 + "@example.com", "skip: long_email"),  # under csv's limit
        ("EMAIL", "a\x00b@example.com", "skip: nul_in_email"),
        ("USER_ID", "u" * 201, "skip: long_user_id"),
        ("USER_ID", "u\x00", "skip: nul_in_user_id"),
        ("LOCALE", "en-" + "x" * 300, "skip: long_locale"),
        ("TIMEZONE", "Europe/" + "x" * 300, "skip: long_timezone"),
    ],
)
def test_oversize_or_nul_text_is_a_bad_row_by_reason(
    tmp_path: Path, field: str, value: str, expected: str
) -> None:
    row = [*USUAL_USER, "true", "2026-11-20T08:00:00Z"]
    row[AUDIENCE_COLUMNS.index(field)] = value
    path = tmp_path / "users.csv"
    with path.open("w", newline="") as out:
        csv.writer(out).writerows([AUDIENCE_COLUMNS, row])
    skips = SkipCounter()
    users = list(iter_audience(str(path), skips=skips))
    got = repr(users[0]) if users else f"skip: {next(iter(skips.counts))}"
    assert expected in got
    if expected.startswith("skip: "):
        assert skips.examples[expected.removeprefix("skip: ")] == [f"{path}:2"]
