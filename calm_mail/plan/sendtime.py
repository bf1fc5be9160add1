"""When each email goes out: the campaign's local send time on the edition's send date.

The local time is the campaign's ``schedule.local_time`` (or the user's preferred hour when
``schedule.use_preferred_hour``), in the user's IANA zone (the campaign's fallback zone when the
user's is missing or unknown), returned as an aware UTC datetime. A local time that does not
exist (inside a spring-forward gap) is read with the offset before the change, as zoneinfo does
with ``fold=0``; an ambiguous one (fall-back) takes its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from calm_mail.campaign import Schedule
from calm_mail.records import User

SENDGRID_WINDOW = timedelta(hours=72)  # SendGrid refuses a send_at further ahead than this


class SendTimer:
    """Computes send_at per user, caching per (zone, hour): an edition has few of each."""

    __slots__ = ("_cache", "_fallback", "_send_date", "_zones", "schedule")

    def __init__(self, schedule: Schedule, send_date: date) -> None:
        self.schedule = schedule
        self._send_date = send_date
        self._fallback = schedule.fallback_timezone
        self._zones: dict[str | None, str] = {}
        self._cache: dict[tuple[str, time], datetime] = {}

    def zone_name(self, name: str | None) -> str:
        """The user's zone when it is a known IANA name, else the fallback zone."""
        found = self._zones.get(name)
        if found is None:
            found = name if name and _valid_zone(name) else self._fallback
            self._zones[name] = found
        return found

    def local_time(self, user: User) -> time:
        hour = user.preferred_hour
        if self.schedule.use_preferred_hour and hour is not None and 0 <= hour <= 23:
            return time(hour, 0)
        return self.schedule.local_time

    def send_at(self, user: User) -> tuple[datetime, str]:
        """(send time in UTC, the zone used) for `user`."""
        zone = self.zone_name(user.timezone)
        at = self.local_time(user)
        key = (zone, at)
        found = self._cache.get(key)
        if found is None:
            local = datetime.combine(self._send_date, at, tzinfo=ZoneInfo(zone))
            found = self._cache[key] = local.astimezone(UTC)
        return found, zone


def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class SendWindow:
    """Where an edition's send times fall against SendGrid's scheduling window, for a run
    starting at `run_at`: `too_early` of them are refused (more than 72 h ahead; a run after
    `run_after` takes them all), `passed` go out at once (their time is behind `run_at`)."""

    run_at: datetime
    total: int
    too_early: int
    passed: int
    run_after: datetime | None

    @property
    def refused(self) -> bool:
        return self.too_early > 0

    def problems(self) -> list[str]:
        problems = []
        if self.run_after is not None:
            problems.append(
                f"{self.too_early} send time(s) are more than 72 h after "
                f"{self.run_at:%Y-%m-%d %H:%M} UTC and SendGrid refuses them; run the edition "
                f"after {self.run_after:%Y-%m-%d %H:%M} UTC"
            )
        if self.passed:
            problems.append(
                f"{self.passed} send time(s) have already passed; they would go out at once"
            )
        return problems


def send_window(send_ats: Iterable[datetime], run_at: datetime) -> SendWindow:
    """The one test of SendGrid's window: a send_at more than 72 h ahead is refused; a past
    one is not refused (SendGrid sends it at once), which is worth a warning."""
    total = ahead = passed = 0
    last_ahead: datetime | None = None
    for at in send_ats:
        total += 1
        if at - run_at > SENDGRID_WINDOW:
            ahead += 1
            last_ahead = at if last_ahead is None else max(last_ahead, at)
        elif at < run_at:
            passed += 1
    return SendWindow(
        run_at=run_at,
        total=total,
        too_early=ahead,
        passed=passed,
        run_after=None if last_ahead is None else last_ahead - SENDGRID_WINDOW,
    )
