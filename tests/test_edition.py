"""Edition keys: ISO weeks, their Saturdays, the upcoming and the previous edition."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calm_mail.edition import Edition
from calm_mail.errors import UsageError


def test_parse_gives_the_saturday_of_the_iso_week() -> None:
    edition = Edition.parse("2026-W48")
    assert (edition.year, edition.week) == (2026, 48)
    assert edition.send_date == date(2026, 11, 28)
    assert edition.send_date.isoweekday() == 6
    assert edition.monday == date(2026, 11, 23)
    assert str(edition) == edition.key == "2026-W48"


@pytest.mark.parametrize(
    ("key", "saturday"),
    [
        ("2026-W53", date(2027, 1, 2)),  # 2026 starts on a Thursday: 53 weeks
        ("2020-W53", date(2021, 1, 2)),  # leap year starting on a Wednesday
        ("2015-W53", date(2016, 1, 2)),
        ("2026-W01", date(2026, 1, 3)),
        ("2025-W01", date(2025, 1, 4)),  # week 1 starts in the previous calendar year
    ],
)
def test_week_53_and_week_1(key: str, saturday: date) -> None:
    assert Edition.parse(key).send_date == saturday


def test_lowercase_w_and_spaces_are_accepted() -> None:
    assert Edition.parse(" 2026-w07\n") == Edition(2026, 7)


@pytest.mark.parametrize(
    "key",
    [
        "2026-W00",
        "2026-W54",
        "2027-W53",  # 2027 has 52 weeks
        "0000-W01",
        "2026-W4",
        "2026W48",
        "2026-48",
        "26-W48",
        "2026-W48-6",
        "２０２６-W48",  # full-width digits
        "",
        "upcoming",
        "2026-11-28",
    ],
)
def test_junk_and_missing_weeks_are_usage_errors(key: str) -> None:
    with pytest.raises(UsageError) as info:
        Edition.parse(key)
    assert repr(key) in str(info.value)


def test_direct_construction_checks_the_week() -> None:
    with pytest.raises(UsageError, match="no such ISO week"):
        Edition(2027, 53)


@pytest.mark.parametrize("offset", range(7))
def test_upcoming_is_this_or_next_saturday(offset: int) -> None:
    monday = datetime(2026, 11, 23, 12, tzinfo=UTC)
    now = monday + timedelta(days=offset)
    expected = Edition(2026, 48)  # Saturday 28 November
    if offset == 6:  # Sunday: the Saturday has passed
        expected = Edition(2026, 49)
    assert Edition.upcoming(now) == expected
    assert Edition.upcoming(now).send_date >= now.date()
    assert (Edition.upcoming(now).send_date - now.date()).days < 7


def test_upcoming_on_saturday_late_at_night_is_still_today() -> None:
    now = datetime(2026, 11, 28, 23, 59, 59, tzinfo=UTC)
    assert Edition.upcoming(now).send_date == date(2026, 11, 28)


def test_upcoming_across_the_year_boundary() -> None:
    # Sunday 27 December 2026: the next Saturday is 2 January 2027, in ISO week 2026-W53.
    assert Edition.upcoming(datetime(2026, 12, 27, tzinfo=UTC)) == Edition(2026, 53)


def test_previous_across_a_year_boundary() -> None:
    assert Edition(2027, 1).previous() == Edition(2026, 53)
    assert Edition(2026, 1).previous() == Edition(2025, 52)
    assert Edition(2026, 48).previous() == Edition(2026, 47)


def test_no_edition_before_the_first() -> None:
    with pytest.raises(UsageError, match="no previous edition"):
        Edition(1, 1).previous()


def test_editions_order_by_time() -> None:
    assert Edition(2025, 52) < Edition(2026, 1) < Edition(2026, 2)


@given(st.dates(min_value=date(1900, 1, 8), max_value=date(9999, 12, 24)))
def test_round_trip(day: date) -> None:
    edition = Edition.of(day)
    assert Edition.parse(edition.key) == edition
    assert edition.monday <= day < edition.monday + timedelta(days=7)
    assert edition.send_date == edition.monday + timedelta(days=5)
    assert edition.previous().monday == edition.monday - timedelta(days=7)
    assert edition.previous() < edition


@given(st.text(max_size=12))
def test_parse_junk_text(text: str) -> None:
    try:
        edition = Edition.parse(text)
    except UsageError:
        return
    assert edition.key.lower() == text.strip().lower()
