"""When each email goes out: the campaign's local send time on the edition's send date.

The local time is the campaign's ``schedule.local_time`` (or the user's preferred hour when
``schedule.use_preferred_hour``), in the user's IANA zone (the campaign's fallback zone when the
user's is missing or unknown), returned as an aware UTC datetime. A local time that does not
exist (inside a spring-forward gap) is read with the offset before the change, as zoneinfo does
with ``fold=0``; an ambiguous one (fall-back) takes its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from calm_mail.campaign import Schedule
from calm_mail.records import User

SENDGRID_WINDOW = timedelta(hours=72)


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


def window_problems(send_ats: Iterable[datetime], run_at: datetime) -> list[str]:
    """What SendGrid will not do as planned: send_at over 72 h ahead (refused), or in the past.

    A past send_at is not refused: SendGrid sends it at once, which is worth a warning.
    """
    ahead = 0
    past = 0
    last_ahead: datetime | None = None
    for at in send_ats:
        if at - run_at > SENDGRID_WINDOW:
            ahead += 1
            last_ahead = at if last_ahead is None else max(last_ahead, at)
        elif at < run_at:
            past += 1
    problems = []
    if last_ahead is not None:
        problems.append(
            f"{ahead} send time(s) are more than 72 h after {run_at:%Y-%m-%d %H:%M} UTC and "
            f"SendGrid refuses them; run the edition after "
            f"{last_ahead - SENDGRID_WINDOW:%Y-%m-%d %H:%M} UTC"
        )
    if past:
        problems.append(f"{past} send time(s) have already passed; they would go out at once")
    return problems
