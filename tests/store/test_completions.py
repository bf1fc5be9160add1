"""The `completions` repository contract, on SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from calm_mail.records import Completion
from calm_mail.store import Ledger


def test_completions_are_idempotent_and_filtered_by_time(ledger: Ledger) -> None:
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    rows = [
        Completion(user_id=f"u{i % 3}", item_id=f"i{i}", completed_at=t0 + timedelta(hours=i))
        for i in range(10)
    ]
    assert ledger.completions.add_completions(iter(rows), source="app.csv") == 10
    assert ledger.completions.add_completions(rows[:5], source="again.csv") == 0
    got = list(
        ledger.completions.completions_between(t0 + timedelta(hours=2), t0 + timedelta(hours=5))
    )
    assert [c.item_id for c in got] == ["i2", "i3", "i4"]  # end excluded
    assert all(c.completed_at.tzinfo is UTC for c in got)
    paris = timezone(timedelta(hours=1))
    got = list(
        ledger.completions.completions_between(
            t0.astimezone(paris), (t0 + timedelta(hours=1)).astimezone(paris)
        )
    )
    assert got == [rows[0]]


def test_completions_same_instant_in_another_zone_is_a_duplicate(ledger: Ledger) -> None:
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    tokyo = t0.astimezone(timezone(timedelta(hours=9)))
    assert (
        ledger.completions.add_completions(
            [Completion(user_id="u", item_id="i", completed_at=t0)], source="a"
        )
        == 1
    )
    assert (
        ledger.completions.add_completions(
            [Completion(user_id="u", item_id="i", completed_at=tokyo)], source="b"
        )
        == 0
    )


def test_completions_between_pages(ledger: Ledger) -> None:
    t0 = datetime(2026, 11, 28, tzinfo=UTC)
    rows = [
        Completion(user_id=f"u{i}", item_id="i", completed_at=t0 + timedelta(seconds=i // 7))
        for i in range(5300)
    ]
    ledger.completions.add_completions(rows, source="bulk")
    got = list(ledger.completions.completions_between(t0, t0 + timedelta(days=1)))
    assert len(got) == 5300 and len({(c.user_id, c.completed_at) for c in got}) == 5300
