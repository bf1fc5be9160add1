"""Edition keys: an edition is one send of a campaign, keyed by its ISO week (``2026-W48``).

The send date of an edition is the Saturday of that ISO week.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from calm_mail.errors import UsageError

_KEY = re.compile(r"^([0-9]{4})-W([0-9]{2})$", re.IGNORECASE)  # [0-9]: \d takes any script's
SATURDAY = 6  # ISO weekday


@dataclass(frozen=True, slots=True, order=True)
class Edition:
    year: int
    week: int

    def __post_init__(self) -> None:
        try:
            date.fromisocalendar(self.year, self.week, 1)
        except ValueError as exc:
            raise UsageError(f"edition {self.key!r}: no such ISO week") from exc

    @classmethod
    def parse(cls, key: str) -> Edition:
        """`2026-W48` (or `2026-w48`) -> Edition; UsageError for junk or a week the year lacks."""
        match = _KEY.match(key.strip())
        if not match:
            raise UsageError(f"edition {key!r}: expected an ISO week like 2026-W48")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def of(cls, day: date) -> Edition:
        year, week, _ = day.isocalendar()
        return cls(year, week)

    @classmethod
    def upcoming(cls, now: datetime | None = None) -> Edition:
        """The edition whose Saturday is today or the next one."""
        today = (now or datetime.now(UTC)).date()
        days_ahead = (SATURDAY - today.isoweekday()) % 7
        return cls.of(today + timedelta(days=days_ahead))

    @property
    def key(self) -> str:
        return f"{self.year:04d}-W{self.week:02d}"

    @property
    def send_date(self) -> date:
        return date.fromisocalendar(self.year, self.week, SATURDAY)

    @property
    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.week, 1)

    def previous(self) -> Edition:
        """The edition a week earlier (across year boundaries, 52- and 53-week years)."""
        try:
            return Edition.of(self.monday - timedelta(days=7))
        except OverflowError:
            raise UsageError(f"edition {self.key!r} has no previous edition") from None

    def __str__(self) -> str:
        return self.key
