"""The audience: a users CSV, streamed row by row (the csv module; it may hold millions).

Columns (all required; names are matched without regard to case): USER_ID, EMAIL, LOCALE,
TIMEZONE, PREFERRED_HOUR, COUNTRY, TENURE_DAYS, LEVEL, IS_KIDS_PROFILE, SUBSCRIPTION_STATUS,
EMAIL_OPT_IN, LAST_ACTIVE_AT. TIMEZONE, PREFERRED_HOUR and LAST_ACTIVE_AT may be empty.
The reader checks types, not policy: an odd e-mail address or an unknown time zone passes,
and the plan decides what to do with it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from calm_mail.inputs import tables
from calm_mail.inputs.tables import BadField, Row
from calm_mail.records import SkipCounter, User

COLUMNS = (
    "USER_ID",
    "EMAIL",
    "LOCALE",
    "TIMEZONE",
    "PREFERRED_HOUR",
    "COUNTRY",
    "TENURE_DAYS",
    "LEVEL",
    "IS_KIDS_PROFILE",
    "SUBSCRIPTION_STATUS",
    "EMAIL_OPT_IN",
    "LAST_ACTIVE_AT",
)
LEVELS = frozenset({"beginner", "intermediate", "advanced"})
# The longest value each text column may hold: an address in a mail path (RFC 5321), and the
# ledger's columns for the others. Past it the row is bad (`long_<column>`), never truncated.
MAX_LENGTHS = {"USER_ID": 200, "EMAIL": 254, "LOCALE": 32, "TIMEZONE": 64}


def iter_audience(path: str, *, skips: SkipCounter) -> Iterator[User]:
    """Stream every good user row; count bad ones in `skips` with ``file:line``.

    Reasons: ``empty_user_id``, ``long_user_id``, ``long_email``, ``long_locale``,
    ``long_timezone`` (past MAX_LENGTHS), ``nul_in_<column>`` (a NUL character, which no
    header or PostgreSQL column takes), ``bad_preferred_hour`` (not 0-23), ``bad_tenure_days``,
    ``bad_level``, ``bad_is_kids_profile``, ``bad_email_opt_in``, ``bad_last_active_at``,
    ``short_row``, ``bad_csv``, ``duplicate_user`` (the first row wins). A missing column or an
    unreadable file raises `InputError`.
    """
    seen: set[str] = set()
    for where, user in tables.iter_table(path, COLUMNS, _user, skips):
        if user.user_id in seen:
            skips.add("duplicate_user", where)
            continue
        seen.add(user.user_id)
        yield user


def _user(row: Row) -> User:
    """A row's user, field by field: the reason for the first bad field.

    The few-valued texts (locale, zone, country, level, status) are interned, so a large
    audience holds one str object per distinct value rather than one per user.
    """
    return User(
        user_id=_bounded(row, "USER_ID", required=True),
        email=_bounded(row, "EMAIL"),
        locale=sys.intern(_bounded(row, "LOCALE")),
        timezone=sys.intern(_bounded(row, "TIMEZONE")) or None,
        preferred_hour=tables.optional_integer(row, "PREFERRED_HOUR", low=0, high=23),
        country=sys.intern(tables.text(row, "COUNTRY").upper()),
        tenure_days=tables.integer(row, "TENURE_DAYS", low=0),
        level=sys.intern(tables.choice(row, "LEVEL", LEVELS)),
        is_kids_profile=tables.boolean(row, "IS_KIDS_PROFILE"),
        subscription_status=sys.intern(tables.text(row, "SUBSCRIPTION_STATUS").lower()),
        email_opt_in=tables.boolean(row, "EMAIL_OPT_IN"),
        last_active_at=tables.instant(row, "LAST_ACTIVE_AT", optional=True),
    )


def _bounded(row: Row, column: str, *, required: bool = False) -> str:
    """`tables.text`, refusing a value longer than MAX_LENGTHS[column] or holding a NUL."""
    value = tables.text(row, column, required=required)
    if len(value) > MAX_LENGTHS[column]:
        raise BadField(f"long_{column.lower()}")
    if "\x00" in value:
        raise BadField(f"nul_in_{column.lower()}")
    return value
