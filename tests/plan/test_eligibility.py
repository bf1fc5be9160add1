"""Eligibility on hand-made users whose answer is known."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from calm_mail.campaign import Campaign
from calm_mail.plan.eligibility import REASONS, Eligibility, check, valid_email

from .conftest import EDITION, SEND, user


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"email_opt_in": False}, "no_opt_in"),
        ({"subscription_status": "lapsed"}, "subscription_status"),
        ({"locale": "it-IT"}, "unsupported_locale"),
        ({"last_active_at": None}, "inactive"),
        ({"last_active_at": SEND - timedelta(days=91)}, "inactive"),
        ({"last_active_at": SEND - timedelta(days=89)}, None),
        ({"email": "not-an-address"}, "bad_email"),
        ({"email": "a@b"}, "bad_email"),
        ({"email": "x y@example.com"}, "bad_email"),
        ({"is_kids_profile": True}, "kids_profile"),
        ({"email": "Blocked@Example.com"}, "suppressed"),
        # the first failing rule wins, so each user is counted once
        ({"email_opt_in": False, "is_kids_profile": True}, "no_opt_in"),
    ],
)
def test_reasons(campaign: Campaign, changes: dict[str, object], reason: str | None) -> None:
    got = check(
        user("u1", **changes),
        campaign,
        now=SEND,
        suppressed={"blocked@example.com"},
        last_sent=None,
        edition=EDITION,
    )
    assert got == reason
    assert got is None or got in REASONS


def test_minimum_gap_between_editions(campaign: Campaign) -> None:
    # campaign: min_days_between_editions = 6; the send date is 2026-11-28
    def reason(last: date | None) -> str | None:
        return Eligibility(campaign, EDITION, now=SEND, suppressed=(), last_sent=last).reason(
            user("u1")
        )

    assert reason(None) is None
    assert reason(date(2026, 11, 21)) is None  # last week's edition: 7 days
    assert reason(date(2026, 11, 24)) == "recently_mailed"  # a late send 4 days ago


@pytest.mark.parametrize(
    ("email", "ok"),
    [
        ("someone@example.com", True),
        ("first.last+tag@mail.example.co.uk", True),
        ("a@b.c", False),
        (".a@example.com", False),
        ("a..b@example.com", False),
        ("a@-example.com", False),
        ("", False),
        ("a@example.com ", False),
    ],
)
def test_email_syntax(email: str, ok: bool) -> None:
    assert valid_email(email) is ok
