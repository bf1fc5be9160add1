"""Raw SendGrid event objects -> records.Event."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from calm_mail.records import EventType
from calm_mail.store import schema
from calm_mail.track.normalize import (
    KEY_LIMITS,
    InvalidEvent,
    UnfitEvent,
    normalize,
    normalize_batch,
    unstorable,
)

TS = 1_764_000_000


def raw(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"email": "ann@example.com", "timestamp": TS, "sg_event_id": "ev1"}
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"event": "processed"}, EventType.PROCESSED),
        ({"event": "dropped", "reason": "Bounced Address"}, EventType.DROPPED),
        ({"event": "delivered"}, EventType.DELIVERED),
        ({"event": "deferred"}, EventType.DEFERRED),
        ({"event": "bounce", "type": "bounce"}, EventType.BOUNCED),
        ({"event": "bounce", "type": "blocked"}, EventType.BLOCKED),
        ({"event": "bounce"}, EventType.BOUNCED),  # legacy: no type means a hard bounce
        ({"event": "open"}, EventType.OPENED),
        ({"event": "click", "url": "https://x"}, EventType.CLICKED),
        ({"event": "spamreport"}, EventType.SPAM_REPORT),
        ({"event": "unsubscribe"}, EventType.UNSUBSCRIBED),
        ({"event": "group_unsubscribe"}, EventType.GROUP_UNSUBSCRIBED),
        ({"event": "group_resubscribe"}, EventType.GROUP_RESUBSCRIBED),
        ({"event": "something_new_in_2027"}, EventType.UNKNOWN),
        ({"event": "Delivered"}, EventType.DELIVERED),
    ],
)
def test_event_types_map_through_the_tables(fields: dict[str, object], expected: EventType) -> None:
    assert normalize(raw(**fields)).event_type is expected


def test_fields_custom_args_and_raw_are_kept() -> None:
    obj = raw(
        event="open",
        sg_machine_open=True,
        sg_message_id="m1.filter",
        delivery_id="d1",
        campaign="weekly_winddown",
        edition="2026-W48",
        arm="personalized",
        useragent="Mozilla",
        category=["a", "b"],
    )
    event = normalize(obj)
    assert event.event_id == "ev1"
    assert event.occurred_at == datetime.fromtimestamp(TS, tz=UTC)
    assert (event.delivery_id, event.campaign, event.edition, event.arm) == (
        "d1",
        "weekly_winddown",
        "2026-W48",
        "personalized",
    )
    assert event.message_id == "m1.filter"
    assert event.machine_open is True
    assert orjson.loads(event.raw) == obj


def test_unknown_event_keeps_its_raw_payload() -> None:
    obj = raw(event="brand_new", weird={"nested": [1, 2]})
    event = normalize(obj)
    assert event.event_type is EventType.UNKNOWN
    assert orjson.loads(event.raw)["weird"] == {"nested": [1, 2]}


@pytest.mark.parametrize("stamp", [TS, float(TS) + 0.5, str(TS), f" {TS} "])
def test_timestamp_forms(stamp: object) -> None:
    assert int(normalize(raw(event="delivered", timestamp=stamp)).occurred_at.timestamp()) == TS


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ("not an object", "not_an_object"),
        ([1, 2], "not_an_object"),
        ({"email": "a@x", "timestamp": TS}, "no_event"),
        ({"event": "open", "timestamp": TS}, "no_email"),
        ({"event": "open", "email": "  ", "timestamp": TS}, "no_email"),
        ({"event": "open", "email": "a@x"}, "bad_timestamp"),
        ({"event": "open", "email": "a@x", "timestamp": "yesterday"}, "bad_timestamp"),
        ({"event": "open", "email": "a@x", "timestamp": True}, "bad_timestamp"),
        ({"event": "open", "email": "a@x", "timestamp": 1e300}, "bad_timestamp"),
        ({"event": "open", "email": "a@x", "timestamp": -5}, "bad_timestamp"),
        ({"event": "open", "email": "a@x", "timestamp": [TS]}, "bad_timestamp"),
    ],
)
def test_invalid_objects_are_rejected_with_a_reason(obj: object, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        normalize(obj)
    assert info.value.reason == reason


def test_missing_event_id_gets_a_deterministic_content_hash() -> None:
    first = {"event": "open", "email": "a@x", "timestamp": TS, "ip": "1.2.3.4"}
    same_reordered = {"ip": "1.2.3.4", "timestamp": TS, "email": "a@x", "event": "open"}
    other = dict(first, ip="5.6.7.8")
    assert normalize(first).event_id == normalize(same_reordered).event_id
    assert normalize(first).event_id != normalize(other).event_id
    assert normalize(first).event_id.startswith("sha256:")


def test_batch_counts_rejects_ignores_account_events_and_drops_repeats() -> None:
    items = [
        raw(event="open"),
        raw(event="open"),
        {"event": "open"},
        7,
        {"event": "account_status_change", "type": "compliance_suspend", "timestamp": TS},
    ]
    batch = normalize_batch(items)
    assert [e.event_id for e in batch.events] == ["ev1"]
    assert batch.in_batch_duplicates == 1
    assert dict(batch.rejected.counts) == {"no_email": 1, "not_an_object": 1}
    assert batch.rejected.examples["not_an_object"] == ["event[3]"]
    assert batch.ignored["account_event"] == 1
    assert not batch.all_invalid
    assert normalize_batch([1, "x"]).all_invalid
    assert not normalize_batch([]).all_invalid
    assert not normalize_batch([{"event": "account_status_change"}]).all_invalid


def test_key_limits_are_the_columns() -> None:
    assert KEY_LIMITS == {
        "email": 320,
        "delivery_id": 32,
        "campaign": 200,
        "edition": 32,
        "arm": 100,
        "sg_message_id": 200,
    }
    assert schema.events.c.message_id.type.length == KEY_LIMITS["sg_message_id"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("key", sorted(KEY_LIMITS))
def test_a_key_longer_than_its_column_is_unfit_and_keeps_its_raw(key: str) -> None:
    value = "x" * KEY_LIMITS[key] + ("@example.com" if key == "email" else "")
    fits = raw(event="open", **{key: value[-KEY_LIMITS[key] :]})
    assert normalize(fits)  # exactly at the limit is fine
    obj = raw(event="open", **{key: value + "x"})
    with pytest.raises(UnfitEvent) as info:
        normalize(obj)
    assert info.value.reason == f"too_long_{key}"
    assert orjson.loads(info.value.raw) == obj


@pytest.mark.parametrize("text", ["a\x00b", "a\ud800b"])
@pytest.mark.parametrize("key", sorted(KEY_LIMITS))
def test_a_key_with_nul_or_a_lone_surrogate_is_unfit(key: str, text: str) -> None:
    with pytest.raises(UnfitEvent) as info:
        normalize(raw(event="open", **{key: text + ("@x" if key == "email" else "")}))
    assert info.value.reason in {f"unstorable_{key}", "unstorable_text"}
    assert not unstorable(info.value.raw)


def test_an_email_that_lowercases_longer_than_its_column_is_unfit() -> None:
    email = "\u0130" * 300 + "@example.com"  # İ lowercases to two characters
    assert len(email) <= KEY_LIMITS["email"] < len(email.lower())
    with pytest.raises(UnfitEvent):
        normalize(raw(event="open", email=email))


def test_values_that_are_not_keys_are_made_to_fit() -> None:
    long_id = "e" * 500
    event = normalize(raw(event="bounce", sg_event_id=long_id, reason="5\x00x", url="u\x00"))
    assert event.event_id.startswith("sha256:") and len(event.event_id) <= 200
    assert normalize(raw(event="open", sg_event_id=long_id)).event_id == event.event_id
    assert normalize(raw(event="open", sg_event_id="n\x00")).event_id.startswith("sha256:")
    assert (event.reason, event.url) == ("5\ufffdx", "u\ufffd")
    assert orjson.loads(event.raw)["reason"] == "5\x00x"  # the raw keeps what SendGrid sent


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.text(st.sampled_from("a\x00\ud800İ@"), max_size=8)
    | st.builds(lambda c, n: c * n, st.sampled_from(["x", "\x00", "é"]), st.integers(0, 400)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    st.lists(
        json_values
        | st.dictionaries(
            st.sampled_from(
                [
                    "event",
                    "email",
                    "timestamp",
                    "sg_event_id",
                    "type",
                    "sg_machine_open",
                    "delivery_id",
                    "url",
                    "reason",
                ]
            ),
            json_values,
        ),
        max_size=8,
    )
)
def test_junk_never_raises(items: list[object]) -> None:
    batch = normalize_batch(items)
    assert len(batch.events) + batch.rejected.skipped + batch.in_batch_duplicates + sum(
        batch.ignored.values()
    ) == len(items)
    for event in batch.events:
        assert event.occurred_at.tzinfo is not None
        assert isinstance(orjson.loads(event.raw), dict)
        keys = [event.email, event.delivery_id, event.campaign, event.edition, event.arm]
        for text in [event.event_id, *keys, event.message_id, event.url, event.reason, event.raw]:
            assert text is None or not unstorable(text)
        assert len(event.event_id) <= 200 and len(event.email.lower()) <= 320
    assert len(batch.unfit) <= batch.rejected.skipped
    assert all(not unstorable(kept.raw) for kept in batch.unfit)
