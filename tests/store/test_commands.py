"""`calm-mail suppressions import|list` through the real command line, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.cli import main
from calm_mail.commands.suppressions import read_suppression_csv
from calm_mail.records import SkipCounter
from calm_mail.store import Ledger


def run(args: list[str], url: str, root: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["--root", str(root), "suppressions", *args], env={"CALM_MAIL_DATABASE_URL": url}
    )
    return result.exit_code, result.output


def test_import_counts_new_repeated_and_bad_rows(tmp_path: Path, ledger_url: str) -> None:
    csv_file = tmp_path / "old_esp.csv"
    csv_file.write_text(
        "email,reason\n"
        "A@Example.com,bounce\n"
        "b@example.com,\n"
        "not-an-email,manual\n"
        ",manual\n"
        "a@example.com,bounce\n",
        encoding="utf-8",
    )
    code, out = run(["import", str(csv_file), "--source", "old-esp"], ledger_url, tmp_path)
    assert code == 0, out
    assert "5 rows, 2 new suppressions, 1 already suppressed or repeated, 2 bad rows" in out
    assert f"bad_email: 1 (e.g. {csv_file}:4)" in out
    assert f"empty_email: 1 (e.g. {csv_file}:5)" in out
    code, out = run(["import", str(csv_file)], ledger_url, tmp_path)
    assert code == 0 and "0 new suppressions" in out
    with Ledger.connect(ledger_url) as ledger:
        rows = {(r.email, r.reason, r.source) for r in ledger.suppressions.list_suppressions()}
    assert rows == {("a@example.com", "bounce", "old-esp"), ("b@example.com", "manual", "old-esp")}
    code, out = run(["list", "--limit", "1"], ledger_url, tmp_path)
    assert code == 0 and len(out.strip().splitlines()) == 1 and "@example.com" in out


def test_import_without_email_column_is_a_user_error(tmp_path: Path, ledger_url: str) -> None:
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("address\nx@example.com\n", encoding="utf-8")
    code, out = run(["import", str(csv_file)], ledger_url, tmp_path)
    assert code == 2
    assert f"{csv_file}:1: needs an 'email' column (found: address)" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("content", [b"email\n\xff\xfe@x.com\n", b""])
def test_unreadable_files_are_user_errors(tmp_path: Path, ledger_url: str, content: bytes) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_bytes(content)
    code, out = run(["import", str(csv_file)], ledger_url, tmp_path)
    assert code == 2 and str(csv_file) in out and "Traceback" not in out
    code, out = run(["import", str(tmp_path / "missing.csv")], ledger_url, tmp_path)
    assert code == 2 and "missing.csv" in out


def test_list_when_empty(tmp_path: Path, ledger_url: str) -> None:
    code, out = run(["list"], ledger_url, tmp_path)
    assert code == 0 and "no suppressions" in out


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200))
def test_junk_csv_never_crashes(tmp_path: Path, text: str) -> None:
    csv_file = tmp_path / "junk.csv"
    csv_file.write_text("email,reason\n" + text, encoding="utf-8")
    skips = SkipCounter()
    rows = list(read_suppression_csv(csv_file, reason="manual", source="s", skips=skips))
    assert len(rows) + skips.skipped == skips.total
    for email, reason, _ in rows:
        assert email == email.lower() and "@" in email and reason


def test_remove_lifts_one_reason_and_keeps_the_others(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from calm_mail.cli import main
    from calm_mail.store import Ledger

    url = f"sqlite:///{tmp_path}/l.db"
    monkeypatch.setenv("CALM_MAIL_DATABASE_URL", url)
    with Ledger.connect(url) as ledger:
        ledger.suppressions.add_suppressions(
            [("a@example.com", "blocked", "t"), ("a@example.com", "bounce", "t")]
        )
    result = CliRunner().invoke(
        main, ["suppressions", "remove", "a@example.com", "--reason", "blocked"]
    )
    assert result.exit_code == 0, result.output
    assert "still suppressed for bounce" in result.output
    with Ledger.connect(url) as ledger:
        assert {(s.email, s.reason) for s in ledger.suppressions.list_suppressions()} == {
            ("a@example.com", "bounce")
        }
