"""The records' own checks: keyword-only, frozen, and validated once when built."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from calm_mail import records

NAIVE = datetime(2026, 11, 27, 8)
AWARE = datetime(2026, 11, 27, 8, tzinfo=UTC)


def user(**changes: object) -> records.User:
    fields: dict[str, object] = {
        "user_id": "u1",
        "email": "a@example.com",
        "locale": "en-US",
        "timezone": None,
        "preferred_hour": None,
        "country": "US",
        "tenure_days": 3,
        "level": "beginner",
        "is_kids_profile": False,
        "subscription_status": "free",
        "email_opt_in": True,
        "last_active_at": AWARE,
    }
    return records.User(**(fields | changes))  # type: ignore[arg-type]


def delivery(send_at: datetime) -> records.PlannedDelivery:
    return records.PlannedDelivery(
        edition="2026-W48",
        user_id="u1",
        email="a@example.com",
        locale="en-US",
        arm="control",
        source=records.ContentSource.EDITORIAL,
        fallback=False,
        item_ids=("i1",),
        send_at=send_at,
        timezone="UTC",
    )


def message(send_at: datetime) -> records.ComposedMessage:
    return records.ComposedMessage(
        delivery_id="d1",
        to_email="a@example.com",
        from_email="hello@calm.example",
        from_name="Calm",
        reply_to=None,
        subject="s",
        preheader="p",
        html="<p>h</p>",
        text="t",
        headers={},
        categories=(),
        custom_args={},
        send_at=send_at,
    )


def event(occurred_at: datetime) -> records.Event:
    return records.Event(
        event_id="e1",
        event_type=records.EventType.OPENED,
        email="a@example.com",
        occurred_at=occurred_at,
        delivery_id="d1",
        campaign=None,
        edition=None,
        arm=None,
        message_id=None,
    )


def item(created_at: datetime, **changes: object) -> records.Item:
    fields: dict[str, object] = {
        "item_id": "i1",
        "content_type": "meditation",
        "title": "t",
        "narrator": "n",
        "duration_s": 600,
        "language": "en",
        "level": "all",
        "is_kids": False,
        "topics": (),
        "collection_id": None,
        "collection_position": None,
        "created_at": created_at,
        "image_url": "",
        "deep_link": "",
    }
    return records.Item(**(fields | changes))  # type: ignore[arg-type]


MAKERS = {
    "User.last_active_at": lambda when: user(last_active_at=when),
    "Completion.completed_at": lambda when: records.Completion(
        user_id="u1", item_id="i1", completed_at=when
    ),
    "PlannedDelivery.send_at": delivery,
    "ComposedMessage.send_at": message,
    "Event.occurred_at": event,
    "Item.created_at": item,
}


@pytest.mark.parametrize("field", list(MAKERS))
def test_a_naive_datetime_is_refused_and_an_aware_one_kept(field: str) -> None:
    make = MAKERS[field]
    with pytest.raises(ValueError, match=rf"{field.split('.')[1]} must be timezone-aware"):
        make(NAIVE)
    paris = datetime(2026, 11, 27, 9, tzinfo=timezone(timedelta(hours=1)))
    assert getattr(make(paris), field.split(".")[1]) == AWARE


def test_an_optional_datetime_may_be_none() -> None:
    assert user(last_active_at=None).last_active_at is None


def test_empty_ids_and_a_negative_duration_are_refused() -> None:
    with pytest.raises(ValueError, match="user_id is empty"):
        user(user_id="")
    with pytest.raises(ValueError, match="item_id is empty"):
        item(AWARE, item_id="")
    with pytest.raises(ValueError, match="duration_s is negative"):
        item(AWARE, duration_s=-1)


def test_a_record_is_keyword_only_frozen_hashable_and_equal_by_value() -> None:
    a = records.Completion(user_id="u", item_id="i", completed_at=AWARE)
    b = records.Completion(user_id="u", item_id="i", completed_at=AWARE)
    assert a == b and hash(a) == hash(b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.user_id = "v"  # type: ignore[misc]
    with pytest.raises(TypeError, match="positional argument"):
        records.Completion("u", "i", AWARE)  # type: ignore[misc]
    assert not hasattr(a, "__dict__")  # slotted
