"""The `suppressions` repository contract, on SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

from datetime import UTC

from calm_mail.store import Ledger


def test_suppressions_are_lowercased_and_idempotent(ledger: Ledger) -> None:
    rows = [
        ("A@Example.com", "bounce", "webhook"),
        ("a@example.com", "bounce", "webhook"),
        ("a@example.com", "unsubscribe", "webhook"),
        ("b@example.com", "manual", "csv"),
    ]
    assert ledger.suppressions.add_suppressions(rows) == 3
    assert ledger.suppressions.add_suppressions(rows) == 0
    assert ledger.suppressions.suppressed(["A@EXAMPLE.COM", "c@example.com", "b@example.com"]) == {
        "A@EXAMPLE.COM",
        "b@example.com",
    }
    assert ledger.suppressions.all_suppressed() == {"a@example.com", "b@example.com"}
    ledger.suppressions.remove_suppression("A@example.com", "bounce")
    assert ledger.suppressions.all_suppressed() == {"a@example.com", "b@example.com"}
    ledger.suppressions.remove_suppression("a@example.com", "unsubscribe")
    assert ledger.suppressions.all_suppressed() == {"b@example.com"}
    (only,) = ledger.suppressions.list_suppressions(limit=10)
    assert (only.email, only.reason, only.source) == ("b@example.com", "manual", "csv")
    assert only.created_at.tzinfo is UTC


def test_suppressed_chunks_large_lookups(ledger: Ledger) -> None:
    ledger.suppressions.add_suppressions(
        (f"x{i}@example.com", "bounce", "t") for i in range(0, 3000, 2)
    )
    asked = [f"x{i}@example.com" for i in range(3000)]
    assert ledger.suppressions.suppressed(asked) == set(asked[::2])
