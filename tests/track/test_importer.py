"""Importing exported event files and in-app completions, through the CLI and the ledger."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from calm_mail.cli import main
from calm_mail.errors import InputError
from calm_mail.records import EventType
from calm_mail.track.importer import import_events
from tests.s3server import BUCKET
from tests.track.conftest import TS, MemorySink, sg_event

WHEN = datetime(2026, 11, 29, 20, 15, tzinfo=UTC)


def cli(ledger_url: str, root: Path, *args: str) -> Result:
    runner = CliRunner(env={"CALM_MAIL_DATABASE_URL": ledger_url})
    return runner.invoke(main, ["--root", str(root), *args], catch_exceptions=False)


def test_events_import_json_array_twice_adds_nothing(ledger, ledger_url: str, tmp_path: Path):
    batch = [
        sg_event(1),
        sg_event(2, "open", sg_machine_open=True),
        sg_event(3, "unsubscribe"),
        {"event": "open", "timestamp": TS},
    ]
    export = tmp_path / "events.json"
    export.write_bytes(orjson.dumps(batch, option=orjson.OPT_INDENT_2))
    first = cli(ledger_url, tmp_path, "events", "import", str(export))
    again = cli(ledger_url, tmp_path, "events", "import", str(export))
    assert first.exit_code == 0, first.output
    assert f"{export}: 3 new, 0 duplicate, 1 rejected" in first.output
    assert f"rejected no_email: 1 (e.g. {export}[3])" in first.output
    assert again.exit_code == 0
    assert f"{export}: 0 new, 3 duplicate, 1 rejected" in again.output
    events = {e.event_id: e for e in ledger.events.events_for("2026-W48", "weekly_winddown")}
    assert len(events) == 3 and events["ev-open-2"].machine_open
    assert ledger.suppressions.suppressed(["user3@example.com"]) == {"user3@example.com"}


def test_events_import_json_lines_with_bad_lines_and_arrays(tmp_path: Path):
    lines = [
        orjson.dumps(sg_event(1)),
        b"",
        b"{not json",
        orjson.dumps([sg_event(2), 5]),
        orjson.dumps(sg_event(1)),
        orjson.dumps(sg_event(4, "mystery")),
    ]
    export = tmp_path / "events.jsonl.gz"
    export.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    sink = MemorySink()
    result = import_events(sink, str(export))
    assert (result.new, result.duplicates) == (3, 1)
    assert dict(result.rejected.counts) == {"bad_json": 1, "not_an_object": 1}
    assert result.rejected.examples == {
        "bad_json": [f"{export}:3"],
        "not_an_object": [f"{export}:4[1]"],
    }
    assert sink.events.stored["ev-mystery-4"].event_type is EventType.UNKNOWN


def test_events_import_small_chunks_match_one_chunk(tmp_path: Path):
    export = tmp_path / "events.jsonl"
    export.write_bytes(b"\n".join(orjson.dumps(sg_event(n)) for n in range(25)))
    sink = MemorySink()
    result = import_events(sink, str(export), chunk=4)
    assert (result.new, len(sink.events.stored)) == (25, 25)


def test_events_import_refuses_what_is_not_events(ledger_url: str, tmp_path: Path):
    csv = tmp_path / "events.csv"
    csv.write_text("email,event\na@x,open\n")
    with pytest.raises(InputError, match="not a JSON array or JSON Lines"):
        import_events(MemorySink(), str(csv))
    result = cli(ledger_url, tmp_path, "events", "import", str(tmp_path / "missing.json"))
    assert result.exit_code == 2
    assert "missing.json" in result.output and "Traceback" not in result.output
    only_bad = tmp_path / "bad.json"
    only_bad.write_text('[{"event": "open"}]')
    result = cli(ledger_url, tmp_path, "events", "import", str(only_bad))
    assert result.exit_code == 2 and "no valid SendGrid event" in result.output


def write_completions(folder: Path) -> int:
    """Three files in three formats; returns how many good rows they hold."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.csv").write_text(
        "user_id,content_id,completed_at\n"
        "u1,i1,2026-11-29T20:15:00Z\n"
        "u2,i2,1764447300\n"
        ",i3,2026-11-29T20:15:00Z\n"
        "u4,i4,someday\n"
    )
    (folder / "b.jsonl").write_bytes(
        b"\n".join(
            [
                orjson.dumps(
                    {"user_id": "u1", "item_id": "i9", "completed_at": "2026-11-30T07:00:00+01:00"}
                ),
                b"{broken",
            ]
        )
        + b"\n"
    )
    pd.DataFrame(
        {
            "user_id": ["u5", "u6"],
            "content_id": ["i1", "i2"],
            "completed_at": pd.to_datetime([WHEN, WHEN], utc=True),
        }
    ).to_parquet(folder / "c.parquet")
    return 5


def test_completions_import_twice_is_idempotent(ledger, ledger_url: str, tmp_path: Path):
    folder = tmp_path / "completions"
    good = write_completions(folder)
    first = cli(ledger_url, tmp_path, "completions", "import", str(folder))
    again = cli(ledger_url, tmp_path, "completions", "import", str(folder))
    assert first.exit_code == 0, first.output
    assert f"{good} row(s) read, {good} imported, 0 already present, 3 bad" in first.output
    assert f"bad bad_completed_at: 1 (e.g. {folder / 'a.csv'}:5)" in first.output
    assert f"bad bad_json: 1 (e.g. {folder / 'b.jsonl'}:2)" in first.output
    assert f"{good} row(s) read, 0 imported, {good} already present" in again.output
    rows = list(
        ledger.completions.completions_between(
            datetime(2025, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
        )
    )
    assert len(rows) == good
    assert {r.user_id for r in rows} == {"u1", "u2", "u5", "u6"}


def test_completions_import_from_s3(ledger_url: str, tmp_path: Path, s3_server: str):
    import boto3

    folder = tmp_path / "local"
    good = write_completions(folder)
    s3 = boto3.client("s3")
    key = f"completions/{tmp_path.name}/"  # the server lives for the session: a fresh prefix
    for file in folder.iterdir():
        s3.upload_file(str(file), BUCKET, key + file.name)
    prefix = f"s3://{BUCKET}/{key}"
    first = cli(ledger_url, tmp_path, "completions", "import", prefix)
    again = cli(ledger_url, tmp_path, "completions", "import", prefix)
    assert first.exit_code == 0, first.output
    assert f"{good} imported" in first.output and "0 imported" in again.output
    assert f"bad bad_json: 1 (e.g. {prefix}b.jsonl:2)" in first.output


def test_events_import_keeps_an_event_the_ledger_cannot_hold_raw_like_the_receiver(
    ledger, ledger_url: str, tmp_path: Path
):
    odd = sg_event(2, arm="a" * 101)
    export = tmp_path / "events.jsonl"
    export.write_bytes(b"\n".join(orjson.dumps(e) for e in (sg_event(1), odd, sg_event(3))))
    first = cli(ledger_url, tmp_path, "events", "import", str(export))
    again = cli(ledger_url, tmp_path, "events", "import", str(export))
    assert first.exit_code == 0 and again.exit_code == 0, first.output
    assert "2 new" in first.output and "1 rejected (1 kept raw)" in first.output
    assert "0 new" in again.output
    stored = {e.event_id for e in ledger.events.events_for("2026-W48", "weekly_winddown")}
    assert stored == {"ev-delivered-1", "ev-delivered-3"}
    assert [orjson.loads(r.raw) for r in ledger.events.rejected()] == [odd]
    assert ledger.events.rejected_counts() == {"too_long_arm": 1}
