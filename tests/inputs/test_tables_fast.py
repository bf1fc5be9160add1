"""The fast CSV path of the audience and history readers against the strict one.

`iter_rows` binds a parser to the header's column indexes once; the audience and history
parsers try a fast reading of the usual forms first and leave every other row to the strict
field-by-field parsers. These tests hold the fast path to the strict one: row by row, and file
by file against a plain model of the row loop (csv.reader, a lookup by name per row, the
strict parser), with junk, quoting, blank lines, short and long rows, a BOM and odd headers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.inputs import audience, completions, iter_audience, iter_completions, tables
from calm_mail.inputs.tables import BadField
from calm_mail.records import SkipCounter

FUNCTION_FIXTURE = [HealthCheck.function_scoped_fixture]
FIELD_LIMIT = csv.field_size_limit()

# Values at the edges of the fields' usual forms: each one a way for the two paths to differ.
ODD = [
    "",
    " ",
    "\t",
    "\u00a0",
    " 7 ",
    "+5",
    "-0",
    "-1",
    "07",
    "24",
    "1_0",
    "1e3",
    "٣",  # an Arabic-Indic three: int() reads it
    "²",  # a superscript two: isdigit() but not int()
    "9" * 5000,  # past int()'s limit on digits
    "TRUE",
    " yes",
    "N",
    "maybe",
    "Advanced",
    " beginner",
    "2026-11-20T08:00:00",
    "2026-11-20T08:00:00+02:00",
    "2026-11-20T08:00:00-00:00",
    " 2026-11-20T08:00:00Z",
    "2026-11-20T08:00:00Z ",
    "2026-11-20T08:00:00.5Z",
    "2026-11-20T08:00:00\x00Z",
    "2026-W47-5T08:00Z",
    "20261120",
    "20261120T080000Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "1795000000",
    "1795000000.5",
    "1e20",
    "x\ny",
    'a "quoted", b',
    "\x00",
]
odd = st.sampled_from(ODD) | st.text(max_size=8)
utc_text = st.datetimes(
    min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
).flatmap(
    lambda when: st.sampled_from(
        [when.isoformat(), when.isoformat().replace("+00:00", "Z"), f"{when:%Y-%m-%dT%H:%M:%SZ}"]
    )
)
offsets = st.timedeltas(timedelta(hours=-23), timedelta(hours=23)).map(timezone)
instant_text = (
    utc_text
    | st.datetimes(timezones=st.none() | offsets).map(datetime.isoformat)
    | st.integers(-(10**12), 10**12).map(str)
    | odd
)
word = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=6)
# The usual form of each audience column, in `audience.COLUMNS` order.
USUAL_USER = [
    st.sampled_from(["1", "2", "3"]) | word,  # a few ids, so duplicates happen
    word.map(lambda w: f"{w}@example.com"),
    st.sampled_from(["en-US", "fr-FR", ""]),
    st.sampled_from(["Europe/Paris", "America/New_York", ""]),
    st.sampled_from(["", *map(str, range(24))]),
    st.sampled_from(["US", "fr", ""]),
    st.integers(0, 10**9 - 1).map(str),
    st.sampled_from(sorted(audience.LEVELS)),
    st.sampled_from(["true", "false"]),
    st.sampled_from(["subscriber", "free", "Lapsed"]),
    st.sampled_from(["true", "false"]),
    utc_text | st.just(""),
]
USUAL_COMPLETION = [word, word, utc_text]


@st.composite
def fields(draw: st.DrawFn, usual: list[st.SearchStrategy[str]]) -> tuple[str, ...]:
    """A row in the usual form but for a few odd fields, so both paths are taken."""
    row = [draw(u) for u in usual]
    for i in draw(st.lists(st.integers(0, len(row) - 1), max_size=3)):
        row[i] = draw(odd)
    return tuple(row)


def outcome(parse: Callable[[], Any]) -> str:
    """The record (repr: its datetimes' zones count) or the skip reason."""
    try:
        return repr(parse())
    except BadField as bad:
        return f"skip: {bad.reason}"


def strict_user(row: tuple[str, ...]) -> str:
    by_name = dict(zip(audience.COLUMNS, row, strict=True))
    return outcome(lambda: audience._user(by_name.__getitem__))


@settings(max_examples=400, deadline=None)
@given(row=fields(USUAL_USER))
def test_fast_user_agrees_with_the_strict_reading_or_declines(row: tuple[str, ...]) -> None:
    fast = audience._fast_user(row, {}.setdefault)
    if fast is not None:
        assert repr(fast) == strict_user(row)


@settings(max_examples=400, deadline=None)
@given(row=fields(USUAL_COMPLETION))
def test_fast_completion_agrees_with_the_strict_reading_or_declines(
    row: tuple[str, str, str],
) -> None:
    fast = completions._fast_completion(*row)
    if fast is not None:
        assert repr(fast) == outcome(lambda: completions._completion(*row))


@settings(max_examples=400, deadline=None)
@given(raw=instant_text)
def test_utc_instant_is_parse_instant_or_none(raw: str) -> None:
    when = tables.utc_instant(raw.strip())
    if when is not None:
        assert when.tzinfo is UTC
        assert repr(when) == repr(tables.parse_instant(raw))


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(*USUAL_USER), min_size=1, max_size=5))
def test_the_usual_rows_take_the_fast_path(rows: list[tuple[str, ...]]) -> None:
    """Without this the agreement tests could pass with a fast path that always declines."""
    for row in rows:
        fast = audience._fast_user(row, {}.setdefault)
        assert fast is not None and repr(fast) == strict_user(row)


def test_utc_instant_takes_a_zero_offset_only() -> None:
    assert completions._fast_completion(" u1", "i1 ", "2026-11-20T08:00:00Z") is not None
    assert tables.utc_instant("2026-11-20T08:00:00+00:00") == datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert tables.utc_instant("2026-11-20T08:00:00+01:00") is None  # parse_instant converts
    assert tables.utc_instant("2026-11-20T08:00:00") is None  # naive: parse_instant says UTC
    assert tables.utc_instant("1795000000") is None  # epoch seconds


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("TENURE_DAYS", "9" * 5000, "skip: bad_tenure_days"),
        ("TENURE_DAYS", "٣", "tenure_days=3"),
        ("TENURE_DAYS", " +3 ", "tenure_days=3"),
        ("TENURE_DAYS", "²", "skip: bad_tenure_days"),
        ("PREFERRED_HOUR", " 07", "preferred_hour=7"),
        ("PREFERRED_HOUR", "24", "skip: bad_preferred_hour"),
        ("LEVEL", " Advanced ", "level='advanced'"),
        ("IS_KIDS_PROFILE", " Yes", "is_kids_profile=True"),
        ("LAST_ACTIVE_AT", "2026-11-20T09:00:00+01:00", "datetime(2026, 11, 20, 8, 0, tzinfo="),
        ("LAST_ACTIVE_AT", "20261120", "datetime(1970, 8, 23, 12, 5, 20, tzinfo="),  # epoch
        ("LAST_ACTIVE_AT", " ", "last_active_at=None"),
    ],
)
def test_odd_values_read_as_the_strict_parsers_read_them(
    field: str, value: str, expected: str
) -> None:
    usual = ["1", "a@example.com", "en-US", "", "7", "US", "10", "beginner", "false", "free"]
    row = [*usual, "true", "2026-11-20T08:00:00Z"]
    row[audience.COLUMNS.index(field)] = value
    parse = audience._parser({c: i for i, c in enumerate(audience.COLUMNS)})
    got = outcome(lambda: parse(row))
    assert expected in got
    assert got == strict_user(tuple(row))


# --------------------------------------------------------------------------- whole files


def model(
    path: Path, columns: tuple[str, ...], aliases: dict[str, str], strict: Callable[[Any], Any]
) -> tuple[list[tuple[int, Any]], SkipCounter]:
    """The plain reading: csv.reader, a lookup by name for each row, the strict parser.

    Returns each record with its line, and the counter.
    """
    skips = SkipCounter()
    records: list[tuple[int, Any]] = []
    with path.open(encoding="utf-8-sig", newline="") as stream:
        reader = csv.reader(stream)
        header = [name.strip().upper() for name in next(reader)]
        found = {c: header.index(c) for c in header if c}  # the first of a name counts
        index = {c: found[c] if c in found else found[aliases[c]] for c in columns}
        last = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error:
                last += 1
                skips.seen()
                skips.add("bad_csv", f"{path}:{last}")
                continue
            last = reader.line_num
            if len(row) <= 1 and not "".join(row).strip():
                continue  # a blank line
            skips.seen()
            if len(row) <= max(index.values()):
                skips.add("short_row", f"{path}:{last}")
                continue
            try:
                records.append((last, strict({c: row[i] for c, i in index.items()}.__getitem__)))
            except BadField as bad:
                skips.add(bad.reason, f"{path}:{last}")
    return records, skips


def audience_model(path: Path) -> tuple[list[str], SkipCounter]:
    """`model` with the strict `_user`; a user id seen before is a duplicate_user."""
    records, skips = model(path, audience.COLUMNS, {}, audience._user)
    kept: list[str] = []
    ids: set[str] = set()
    for line, user in records:
        if user.user_id in ids:
            skips.add("duplicate_user", f"{path}:{line}")
        else:
            ids.add(user.user_id)
            kept.append(repr(user))
    return kept, skips


def completions_model(path: Path) -> tuple[list[str], SkipCounter]:
    """`model` with the strict `_completion`, ITEM_ID standing in for CONTENT_ID."""

    def strict(row: tables.Row) -> Any:
        return completions._completion(row("USER_ID"), row("CONTENT_ID"), row("COMPLETED_AT"))

    columns = ("USER_ID", "CONTENT_ID", "COMPLETED_AT")
    records, skips = model(path, columns, {"CONTENT_ID": "ITEM_ID"}, strict)
    return [repr(done) for _, done in records], skips


def counted(skips: SkipCounter) -> tuple[dict[str, int], dict[str, list[str]], int]:
    return dict(skips.counts), skips.examples, skips.total


@st.composite
def csv_file(draw: st.DrawFn, columns: list[str], usual: list[st.SearchStrategy[str]]) -> str:
    """CSV text: a header in any order, case and padding, maybe with extra columns and a
    BOM, then rows mostly usual with odd cells, quoting, blank lines, short and long rows."""
    extra = draw(st.lists(st.sampled_from(["NOTE", "", "X"]), max_size=2))
    order = draw(st.permutations(range(len(columns) + len(extra))))
    names = [*columns, *extra]
    header = [draw(st.sampled_from([n, n.lower(), f" {n} "])) for n in (names[i] for i in order)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines = ["\n", " \n", ",\n", "\r\n", "\x00\n", '"unclosed,\n']
            out.write(draw(st.sampled_from(lines)))
            continue
        if kind == 1:  # a field past the csv module's limit: bad_csv
            out.write(f'x,"{"y" * (FIELD_LIMIT + 1)}"\n')
            continue
        values = [*draw(fields(usual)), *draw(st.lists(odd, max_size=len(extra)))]
        cells = [values[i] if i < len(values) else "" for i in order]
        if kind == 2:
            cells = cells[: draw(st.integers(0, len(cells)))]
        elif kind == 3:
            cells.append(draw(odd))
        writer.writerow(cells)
    text = out.getvalue()
    return ("\ufeff" if draw(st.booleans()) else "") + text


@settings(max_examples=150, deadline=None, suppress_health_check=FUNCTION_FIXTURE)
@given(text=csv_file(list(audience.COLUMNS), USUAL_USER))
def test_audience_file_reads_as_the_strict_model_reads_it(tmp_path: Path, text: str) -> None:
    path = tmp_path / "users.csv"
    path.write_text(text, encoding="utf-8", newline="")
    skips = SkipCounter()
    users = [repr(u) for u in iter_audience(str(path), skips=skips)]
    expected, expected_skips = audience_model(path)
    assert users == expected
    assert counted(skips) == counted(expected_skips)


@settings(max_examples=150, deadline=None, suppress_health_check=FUNCTION_FIXTURE)
@given(
    text=st.sampled_from(["CONTENT_ID", "ITEM_ID"]).flatmap(
        lambda item: csv_file(["USER_ID", item, "COMPLETED_AT"], USUAL_COMPLETION)
    )
)
def test_history_file_reads_as_the_strict_model_reads_it(tmp_path: Path, text: str) -> None:
    path = tmp_path / "history.csv"
    path.write_text(text, encoding="utf-8", newline="")
    skips = SkipCounter()
    done = [repr(c) for c in iter_completions(str(path), skips=skips)]
    expected, expected_skips = completions_model(path)
    assert done == expected
    assert counted(skips) == counted(expected_skips)


def test_a_file_with_everything_odd_at_once(tmp_path: Path) -> None:
    """Hand-counted lines: a BOM, a reordered aliased header with an extra column, a quoted
    field over two lines, a blank line, a short row, a field too big for csv, an offset."""
    path = tmp_path / "history.csv"
    big = "y" * (FIELD_LIMIT + 1)
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
    skips = SkipCounter()
    read = iter_completions(str(path), skips=skips)
    done = [(c.user_id, c.item_id, c.completed_at) for c in read]
    eight = datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert done == [
        ("u1", "i1", eight),
        ("u2", "i2", eight),
        ("u5", "i5", datetime.fromtimestamp(1795000000, UTC)),
    ]
    assert all(when.tzinfo is UTC for _, _, when in done)
    assert dict(skips.counts) == {"short_row": 1, "bad_csv": 1, "empty_user_id": 1}
    assert skips.examples == {
        "short_row": [f"{path}:6"],
        "bad_csv": [f"{path}:7"],
        "empty_user_id": [f"{path}:9"],
    }
    assert skips.total == 6
    assert counted(skips) == counted(completions_model(path)[1])


def test_a_duplicate_user_is_counted_at_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    row = "a@example.com,en-US,,7,US,10,beginner,false,free,true,2026-11-20T08:00:00Z"
    path.write_text(
        ",".join(audience.COLUMNS) + f"\n1,{row}\n2,{row}\n\n 1 ,{row}\n1,x\n",
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
        ",".join(audience.COLUMNS) + "".join(f"\n{k},{r}" for k, r in enumerate(rows)) + "\n",
        encoding="utf-8",
    )
    a, b, c = iter_audience(str(path), skips=SkipCounter())
    for field in ("locale", "timezone", "country", "level", "subscription_status"):
        assert getattr(a, field) is getattr(b, field) is getattr(c, field), field
    assert (a.locale, a.timezone, a.country, a.subscription_status) == (
        "es",
        "Europe/Madrid",
        "ES",  # the upper-cased country is not the "es" locale's object
        "free",
    )


def test_skips_are_seen_as_the_rows_are_read(tmp_path: Path) -> None:
    """validate.py samples the first rows with islice and reads the counter there."""
    path = tmp_path / "history.csv"
    path.write_text("user_id,item_id,completed_at\n,i,x\nu,i,2026-11-20T08:00:00Z\nu,i,x\n")
    skips = SkipCounter()
    rows = iter_completions(str(path), skips=skips)
    next(rows)
    assert (skips.total, dict(skips.counts)) == (2, {"empty_user_id": 1})


def test_an_offset_is_converted_to_utc_not_kept() -> None:
    parse = completions._csv_parser({"USER_ID": 0, "CONTENT_ID": 1, "COMPLETED_AT": 2})
    done = parse(["u", "i", "2026-11-20T09:00:00+01:00"])
    assert done.completed_at.tzinfo is UTC
    assert done.completed_at == datetime(2026, 11, 20, 9, tzinfo=timezone(timedelta(hours=1)))
