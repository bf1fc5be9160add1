"""The scheduler's trigger of a campaign: ``[schedule] prepare`` read as a cron time in UTC."""

from __future__ import annotations

import re
from datetime import UTC

from apscheduler.triggers.cron import CronTrigger

from calm_mail.campaign import Campaign
from calm_mail.errors import ConfigError

_PREPARE = re.compile(
    r"^\s*(?P<days>[a-z0-9,\-*]+)\s+(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?\s*$"
)


def trigger_for(campaign: Campaign) -> CronTrigger:
    """The cron trigger of ``[schedule] prepare`` (UTC). ConfigError names the key when wrong."""
    text = campaign.schedule.prepare
    where = f"{campaign.path}: schedule.prepare = {text!r}"
    match = _PREPARE.match(text.lower())
    if not match:
        raise ConfigError(f'{where}: expected "<days> HH:MM" in UTC, e.g. "fri 18:00"')
    try:
        return CronTrigger(
            day_of_week=match["days"],
            hour=int(match["h"]),
            minute=int(match["m"]),
            second=int(match["s"] or 0),
            timezone=UTC,
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
