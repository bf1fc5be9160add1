"""Send times across zones, DST changes, preferred hours and invalid zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from calm_mail.campaign import Schedule
from calm_mail.plan.sendtime import SendTimer, send_window

from .conftest import user

SATURDAY = date(2026, 11, 28)


@pytest.mark.parametrize(
    ("zone", "expected_utc", "used"),
    [
        ("America/New_York", datetime(2026, 11, 28, 13, 0, tzinfo=UTC), "America/New_York"),
        ("Europe/Berlin", datetime(2026, 11, 28, 7, 0, tzinfo=UTC), "Europe/Berlin"),
        ("Asia/Tokyo", datetime(2026, 11, 27, 23, 0, tzinfo=UTC), "Asia/Tokyo"),
        ("Asia/Kolkata", datetime(2026, 11, 28, 2, 30, tzinfo=UTC), "Asia/Kolkata"),
        (None, datetime(2026, 11, 28, 13, 0, tzinfo=UTC), "America/New_York"),
        ("Mars/Olympus_Mons", datetime(2026, 11, 28, 13, 0, tzinfo=UTC), "America/New_York"),
        ("../../etc/passwd", datetime(2026, 11, 28, 13, 0, tzinfo=UTC), "America/New_York"),
    ],
)
def test_local_eight_am(zone: str | None, expected_utc: datetime, used: str) -> None:
    timer = SendTimer(Schedule(local_time=time(8, 0)), SATURDAY)
    at, zone_used = timer.send_at(user("u1", timezone=zone))
    assert at == expected_utc and at.tzinfo is UTC and zone_used == used


def test_dst_changes_the_utc_time_not_the_local_time() -> None:
    schedule = Schedule(local_time=time(8, 0))
    summer, _ = SendTimer(schedule, date(2026, 7, 4)).send_at(user("u1"))
    winter, _ = SendTimer(schedule, date(2026, 11, 7)).send_at(user("u1"))
    assert summer.hour == 12 and winter.hour == 13  # EDT (-4) vs EST (-5)
    # US DST ended on Sunday 2026-11-01; Europe on 2026-10-25
    berlin, _ = SendTimer(schedule, date(2026, 10, 24)).send_at(
        user("u1", timezone="Europe/Berlin")
    )
    assert berlin.hour == 6


def test_a_local_time_inside_the_spring_gap_still_maps_to_one_instant() -> None:
    # 2026-03-08 02:30 does not exist in New York; fold=0 reads it with the old offset (-5)
    timer = SendTimer(Schedule(local_time=time(2, 30)), date(2026, 3, 8))
    at, _ = timer.send_at(user("u1"))
    assert at == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)


def test_preferred_hour_when_enabled() -> None:
    on = SendTimer(Schedule(use_preferred_hour=True), SATURDAY)
    off = SendTimer(Schedule(use_preferred_hour=False), SATURDAY)
    assert on.send_at(user("u1", preferred_hour=21))[0] == datetime(2026, 11, 29, 2, tzinfo=UTC)
    assert off.send_at(user("u1", preferred_hour=21))[0].hour == 13
    assert on.send_at(user("u1", preferred_hour=None))[0].hour == 13


def test_send_window() -> None:
    run_at = datetime(2026, 11, 27, 18, tzinfo=UTC)
    fine = [run_at + timedelta(hours=h) for h in (1, 24, 71)]
    window = send_window(fine, run_at)
    assert not window.refused and window.problems() == []
    assert (window.total, window.too_early, window.passed) == (3, 0, 0)
    window = send_window([*fine, run_at + timedelta(hours=80), run_at - timedelta(hours=1)], run_at)
    assert window.refused and (window.total, window.too_early, window.passed) == (5, 1, 1)
    assert window.run_after == datetime(2026, 11, 28, 2, tzinfo=UTC)  # every send then fits
    problems = window.problems()
    assert len(problems) == 2
    assert "1 send time(s) are more than 72 h" in problems[0]
    assert "after 2026-11-28 02:00 UTC" in problems[0]
    assert "already passed" in problems[1]
    exactly = send_window([run_at + timedelta(hours=72)], run_at)
    assert not exactly.refused  # 72 h ahead is still inside the window
