"""Attribution on hand-built frames where the right answer is known."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from calm_mail.analyze.attribution import (
    AttributionConfig,
    Frames,
    compute_metrics,
    delivery_outcomes,
)
from calm_mail.errors import InputError, UsageError
from tests.analyze.builders import SEND, FrameBuilder, hours


def outcome(frames: Frames, user: str, column: str, **config: float) -> object:
    rows = delivery_outcomes(frames, AttributionConfig(**config))  # type: ignore[arg-type]
    return rows.loc[rows["user_id"] == user, column].item()


def test_machine_opens_are_counted_apart_and_never_as_human() -> None:
    b = FrameBuilder()
    d = b.delivery("mpp", "control")
    b.event(d, "opened", hours(0.1), machine=True)
    b.completion("mpp", hours(1))
    d = b.delivery("human", "control")
    b.event(d, "opened", hours(0.5))
    b.completion("human", hours(1))
    metrics = compute_metrics(b.frames())
    control = metrics.arm("control")
    assert control is not None
    assert control.funnel["opened"] == 1 and control.funnel["machine_opened"] == 1
    assert control.stats["completed_after_open"].mean == 0.5  # ITT: 1 of 2 recipients
    assert control.stats["completed_after_open_openers"].n == 1
    assert control.stats["completed_after_delivery"].mean == 1.0  # immune to machine opens


def test_the_first_human_open_is_the_anchor_not_an_earlier_machine_open() -> None:
    b = FrameBuilder()
    d = b.delivery("u", "control")
    b.event(d, "opened", hours(0.2), machine=True)
    b.event(d, "opened", hours(30))
    b.event(d, "opened", hours(31))
    b.completion("u", hours(2))  # after the machine open, before the human one
    frames = b.frames()
    assert outcome(frames, "u", "completed_after_open") is False
    assert outcome(frames, "u", "first_open") == pd.Timestamp(hours(30)).tz_localize(None)
    b.completion("u", hours(53.9))  # within 24 h of the first human open
    assert outcome(b.frames(), "u", "completed_after_open") is True


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(0), True),  # at the open itself
        (timedelta(hours=24) - timedelta(seconds=1), True),
        (timedelta(hours=24), False),  # the window is half-open: [open, open + 24 h)
        (-timedelta(seconds=1), False),  # before the open
    ],
)
def test_the_24_hour_window_boundary(offset: timedelta, expected: bool) -> None:
    b = FrameBuilder()
    d = b.delivery("u", "control")
    b.event(d, "opened", hours(3))
    b.completion("u", hours(3) + offset)
    assert outcome(b.frames(), "u", "completed_after_open") is expected


def test_the_window_is_configurable() -> None:
    b = FrameBuilder()
    d = b.delivery("u", "control")
    b.event(d, "opened", hours(1))
    b.completion("u", hours(30))
    assert outcome(b.frames(), "u", "completed_after_open") is False
    assert outcome(b.frames(), "u", "completed_after_open", window_hours=48) is True
    with pytest.raises(UsageError):
        AttributionConfig(window_hours=0)


def test_emailed_item_metric_needs_an_emailed_item() -> None:
    b = FrameBuilder()
    d = b.delivery("other", "control", items=("i1", "i2"))
    b.event(d, "opened", hours(1))
    b.completion("other", hours(2), item="i9")
    d = b.delivery("emailed", "control", items=("i1", "i2"))
    b.event(d, "opened", hours(1))
    b.completion("emailed", hours(0.5), item="i2")  # before the open: does not count
    b.completion("emailed", hours(5), item="i2")
    frames = b.frames()
    assert outcome(frames, "other", "completed_after_open") is True
    assert outcome(frames, "other", "completed_emailed_after_open") is False
    assert outcome(frames, "emailed", "completed_emailed_after_open") is True


def test_itt_denominators_count_every_assigned_recipient() -> None:
    b = FrameBuilder()
    for i in range(10):
        state = "failed" if i == 9 else "sent"
        d = b.delivery(f"u{i}", "personalized", state=state)
        if i < 4:
            b.event(d, "opened", hours(1))
        if i < 3:
            b.completion(f"u{i}", hours(2))
    arm = compute_metrics(b.frames()).arm("personalized")
    assert arm is not None
    assert arm.funnel["assigned"] == 10 and arm.funnel["sent"] == 9
    per_recipient = arm.stats["completed_after_open"]
    assert (per_recipient.n, per_recipient.mean) == (10, 0.3)
    per_opener = arm.stats["completed_after_open_openers"]
    assert (per_opener.n, per_opener.mean) == (4, 0.75)


def test_delivery_anchor_is_the_delivered_event_else_send_at() -> None:
    b = FrameBuilder()
    d = b.delivery("late", "control")
    b.event(d, "deferred", hours(1))
    b.event(d, "delivered", hours(30))
    b.completion("late", hours(40))  # 10 h after delivery, 40 h after send_at
    b.delivery("unknown", "control")  # no delivered event: anchored on send_at
    b.completion("unknown", hours(23))
    frames = b.frames()
    assert outcome(frames, "late", "completed_after_delivery") is True
    assert outcome(frames, "unknown", "completed_after_delivery") is True


def test_holdout_users_are_measured_from_their_planned_send() -> None:
    b = FrameBuilder()
    b.delivery("h1", "holdout", holdout=True)
    b.completion("h1", hours(5))
    b.completion("h1", hours(50))
    b.delivery("h2", "holdout", holdout=True)
    b.completion("h2", -timedelta(hours=1) + SEND)  # before the send: outside every window
    metrics = compute_metrics(b.frames())
    holdout = metrics.arm("holdout")
    assert holdout is not None and holdout.holdout
    assert set(holdout.stats) == {"completed_after_delivery", "days_engaged"}
    assert holdout.stats["completed_after_delivery"].mean == 0.5
    assert holdout.stats["days_engaged"].mean == 1.0  # h1: days 0 and 2; h2: none
    assert holdout.funnel["sent"] == 0 and holdout.funnel["assigned"] == 2


def test_days_engaged_counts_distinct_days_within_seven_days_of_send() -> None:
    b = FrameBuilder()
    b.delivery("u", "control")
    for h in (1, 2, 23.9, 24, 80, 167.9, 168, -0.1):  # days 0, 0, 0, 1, 3, 6, out, out
        b.completion("u", hours(h))
    assert outcome(b.frames(), "u", "days_engaged") == 4


def test_funnel_counts_bounces_clicks_unsubscribes_and_fallback() -> None:
    b = FrameBuilder()
    d = b.delivery("a", "control", fallback=True)
    b.event(d, "bounced", hours(0.1))
    d = b.delivery("b", "control")
    for kind in ("delivered", "clicked", "clicked", "unsubscribed", "spam_report"):
        b.event(d, kind, hours(1))
    d = b.delivery("c", "control")
    b.event(d, "blocked", hours(0.1))
    b.event(d, "group_unsubscribed", hours(0.2))
    b.event("not-a-delivery", "opened", hours(1))  # joins nothing: ignored
    b.completion("stranger", hours(1))  # not in the edition: ignored
    funnel = compute_metrics(b.frames()).arms[0].funnel
    assert funnel == {
        "assigned": 3,
        "sent": 3,
        "delivered": 1,
        "bounced": 2,
        "dropped": 0,
        "opened": 0,
        "machine_opened": 0,
        "clicked": 1,
        "unsubscribed": 2,
        "spam_reports": 1,
        "fallback": 1,
    }


def test_completions_by_hour_are_per_thousand_assigned() -> None:
    b = FrameBuilder()
    b.delivery("u1", "control")
    b.delivery("u2", "control")
    b.completion("u1", hours(0.5))
    b.completion("u2", hours(0.9))
    b.completion("u2", hours(5.2))
    b.completion("u2", hours(48))  # beyond the 48-hour curve
    curve = compute_metrics(b.frames()).arms[0].completions_by_hour
    assert len(curve) == 48
    assert curve[0] == 1000.0 and curve[5] == 500.0 and sum(curve) == 1500.0


def test_pooling_editions_keeps_one_observation_per_user() -> None:
    b = FrameBuilder()
    week = timedelta(days=7)
    for k, edition in enumerate(("2026-W47", "2026-W48")):
        send = SEND + k * week
        d = b.delivery("u1", "control", edition=edition, send_at=send)
        b.event(d, "opened", send + timedelta(hours=1))
        if k == 0:
            b.completion("u1", send + timedelta(hours=2))
        b.delivery("u2", "control", edition=edition, send_at=send)
    metrics = compute_metrics(b.frames())
    assert metrics.pooled
    control = metrics.arm("control")
    assert control is not None
    assert control.users == 2 and control.funnel["assigned"] == 4
    primary = control.stats["completed_after_open"]
    assert (primary.n, primary.mean, primary.kind) == (2, 0.25, "mean")  # u1 0.5, u2 0
    openers = control.stats["completed_after_open_openers"]
    assert (openers.n, openers.mean) == (1, 0.5)


def test_a_user_who_changed_arm_is_noted_when_pooling() -> None:
    b = FrameBuilder()
    b.delivery("u1", "control", edition="2026-W47", send_at=SEND - timedelta(days=7))
    b.delivery("u1", "personalized", edition="2026-W48")
    metrics = compute_metrics(b.frames())
    assert metrics.notes and "1 users changed arm" in metrics.notes[0]
    assert sum(a.stats["completed_after_delivery"].n for a in metrics.arms) == 1


def test_a_frame_without_a_required_column_is_an_input_error() -> None:
    frames = FrameBuilder().frames(editions=["2026-W48"])
    broken = Frames(
        campaign="c",
        editions=("2026-W48",),
        deliveries=frames.deliveries.drop(columns=["arm"]),
        events=frames.events,
        completions=frames.completions,
    )
    with pytest.raises(InputError, match="deliveries frame lacks columns \\['arm'\\]"):
        compute_metrics(broken)


def test_an_empty_edition_gives_no_arms() -> None:
    metrics = compute_metrics(FrameBuilder().frames(editions=["2026-W48"]))
    assert metrics.arms == ()


@pytest.mark.slow
def test_scale_is_vectorized() -> None:
    """100k deliveries, 1M events and 300k completions in well under a minute."""
    n, rng = 100_000, np.random.default_rng(3)
    send = pd.Timestamp(SEND)
    delivery_ids = np.array([f"d{i}" for i in range(n)], dtype=object)
    deliveries = pd.DataFrame(
        {
            "delivery_id": delivery_ids,
            "edition": "2026-W48",
            "user_id": np.array([f"u{i}" for i in range(n)], dtype=object),
            "arm": np.where(rng.random(n) < 0.5, "control", "personalized"),
            "source": "personalize",
            "fallback": False,
            "state": "sent",
            "last_error": None,
            "send_at": send,
            "sent_at": send,
            "item_ids": [("i1", "i2", "i3")] * n,
        }
    )
    m = 1_000_000
    events = pd.DataFrame(
        {
            "delivery_id": delivery_ids[rng.integers(0, n, m)],
            "event_type": rng.choice(["delivered", "opened", "clicked", "processed"], m),
            "occurred_at": send + pd.to_timedelta(rng.uniform(0, 72, m), unit="h"),
            "machine_open": rng.random(m) < 0.3,
        }
    )
    k = 300_000
    completions = pd.DataFrame(
        {
            "user_id": deliveries["user_id"].to_numpy()[rng.integers(0, n, k)],
            "item_id": rng.choice(["i1", "i2", "i3", "i4", "i5"], k),
            "completed_at": send + pd.to_timedelta(rng.uniform(-24, 200, k), unit="h"),
        }
    )
    frames = Frames(
        campaign="c",
        editions=("2026-W48",),
        deliveries=deliveries,
        events=events,
        completions=completions,
    )
    start = time.perf_counter()
    metrics = compute_metrics(frames)
    elapsed = time.perf_counter() - start
    assert sum(a.funnel["assigned"] for a in metrics.arms) == n
    assert elapsed < 30, f"attribution took {elapsed:.1f}s"
