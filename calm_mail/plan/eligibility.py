"""Who may get this edition at all: one reason not to send, or None.

The checks run in a fixed order and the first that fails is the user's reason, so every
excluded user is counted once, under one reason (`REASONS`).
"""

from __future__ import annotations

import re
from collections.abc import Container
from datetime import date, datetime, timedelta

from calm_mail.campaign import Campaign
from calm_mail.edition import Edition
from calm_mail.records import User

NO_OPT_IN = "no_opt_in"
SUBSCRIPTION_STATUS = "subscription_status"
UNSUPPORTED_LOCALE = "unsupported_locale"
INACTIVE = "inactive"
BAD_EMAIL = "bad_email"
KIDS_PROFILE = "kids_profile"
SUPPRESSED = "suppressed"
RECENTLY_MAILED = "recently_mailed"
REASONS = (
    NO_OPT_IN,
    SUBSCRIPTION_STATUS,
    UNSUPPORTED_LOCALE,
    INACTIVE,
    BAD_EMAIL,
    KIDS_PROFILE,
    SUPPRESSED,
    RECENTLY_MAILED,
)

# A pragmatic address check (RFC 5322 dot-atom local part, a dotted domain with a letter TLD):
# it catches typos and junk, not every deliverability problem.
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


def valid_email(email: str) -> bool:
    return len(email) <= 254 and _EMAIL.match(email) is not None


class Eligibility:
    """The campaign's audience rules, prepared once per edition; `reason(user)` per user."""

    __slots__ = (
        "_cutoff",
        "_gap",
        "_last_sent",
        "_locales",
        "_send_date",
        "_statuses",
        "_suppressed",
    )

    def __init__(
        self,
        campaign: Campaign,
        edition: Edition | str,
        *,
        now: datetime,
        suppressed: Container[str],
        last_sent: date | None = None,
    ) -> None:
        audience = campaign.audience
        self._statuses = frozenset(audience.subscription_statuses)
        self._locales = frozenset(audience.locales)
        self._cutoff = now - timedelta(days=audience.active_within_days)
        self._gap = timedelta(days=audience.min_days_between_editions)
        ed = edition if isinstance(edition, Edition) else Edition.parse(edition)
        self._send_date = ed.send_date
        self._suppressed = suppressed
        self._last_sent = last_sent

    def reason(self, user: User, last_sent: date | None = None) -> str | None:
        """The first rule `user` fails, or None when the user may get the edition.

        `last_sent` (this user's last email of the campaign) overrides the edition-wide date.
        """
        return self.own_reason(user) or self.ledger_reason(user, last_sent)

    def own_reason(self, user: User) -> str | None:
        """The first rule the user's own row fails (opt-in, status, locale, activity, address,
        kids profile), or None. It needs nothing from the ledger, so the planner works it out
        first and asks the ledger only about the users who pass."""
        if not user.email_opt_in:
            return NO_OPT_IN
        if user.subscription_status not in self._statuses:
            return SUBSCRIPTION_STATUS
        if user.locale not in self._locales:
            return UNSUPPORTED_LOCALE
        if user.last_active_at is None or user.last_active_at < self._cutoff:
            return INACTIVE
        if not valid_email(user.email):
            return BAD_EMAIL
        if user.is_kids_profile:
            return KIDS_PROFILE
        return None

    def ledger_reason(self, user: User, last_sent: date | None = None) -> str | None:
        """The rules that need the ledger: suppressed, or mailed too recently; else None."""
        if user.email.lower() in self._suppressed:
            return SUPPRESSED
        last = last_sent or self._last_sent
        if last is not None and self._send_date - last < self._gap:
            return RECENTLY_MAILED
        return None


def check(
    user: User,
    campaign: Campaign,
    *,
    now: datetime,
    suppressed: Container[str],
    last_sent: date | None,
    edition: Edition | str | None = None,
) -> str | None:
    """One user's reason not to get the edition (None: eligible). See `Eligibility`."""
    ed = edition if edition is not None else Edition.upcoming(now)
    return Eligibility(campaign, ed, now=now, suppressed=suppressed, last_sent=last_sent).reason(
        user
    )
