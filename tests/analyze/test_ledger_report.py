"""From a real ledger (SQLite and PostgreSQL) through `load_frames` to `calm-mail report`."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from calm_mail.analyze.attribution import compute_metrics, load_frames
from calm_mail.cli import main
from calm_mail.errors import UsageError
from calm_mail.records import Completion, ContentSource, Event, EventType, PlannedDelivery
from calm_mail.store import Ledger, delivery_id_for
from tests.analyze.builders import SEND, hours

CAMPAIGN = "weekly_winddown"
EXPERIMENT = "winddown-personalize-2026"
REPO = Path(__file__).resolve().parents[2]


def _plan(
    edition: str, user: str, arm: str, *, holdout: bool = False, shift: timedelta = timedelta(0)
) -> PlannedDelivery:
    return PlannedDelivery(
        edition=edition,
        user_id=user,
        email=f"{user}@example.com",
        locale="en-US",
        arm=arm,
        source=ContentSource.HOLDOUT if holdout else ContentSource.PERSONALIZE,
        fallback=False,
        item_ids=("i1", "i2"),
        send_at=SEND + shift,
        timezone="America/New_York",
    )


def _event(
    n: int,
    edition: str,
    user: str,
    kind: EventType,
    h: float,
    *,
    machine: bool = False,
    shift: timedelta = timedelta(0),
) -> Event:
    return Event(
        event_id=f"ev-{edition}-{n}",
        event_type=kind,
        email=f"{user}@example.com",
        occurred_at=hours(h) + shift,
        delivery_id=delivery_id_for(CAMPAIGN, edition, user),
        campaign=CAMPAIGN,
        edition=edition,
        arm=None,
        message_id=None,
        machine_open=machine,
    )


def fill(ledger: Ledger) -> None:
    """Two editions: W48 as in the attribution tests, W47 a week earlier."""
    for edition, shift in (("2026-W48", timedelta(0)), ("2026-W47", timedelta(days=-7))):
        info = ledger.editions.ensure_edition(CAMPAIGN, edition, experiment=EXPERIMENT)
        plans = [
            _plan(edition, "u1", "control", shift=shift),
            _plan(edition, "u2", "control", shift=shift),
            _plan(edition, "u3", "personalized", shift=shift),
            _plan(edition, "u4", "personalized", shift=shift),
        ]
        ledger.deliveries.add_planned(info.edition_id, CAMPAIGN, plans)
        for row in ledger.deliveries.claim(info.edition_id, worker="t", limit=10):
            ledger.deliveries.mark_sent(row.delivery_id, message_id=f"m-{row.user_id}")
        ledger.events.add_events(
            [
                _event(1, edition, "u1", EventType.DELIVERED, 0.1, shift=shift),
                _event(2, edition, "u1", EventType.OPENED, 1, shift=shift),
                _event(3, edition, "u2", EventType.OPENED, 1, machine=True, shift=shift),
                _event(4, edition, "u3", EventType.OPENED, 2, shift=shift),
                _event(5, edition, "u4", EventType.PROCESSED, 0, shift=shift),
            ]
        )
        ledger.completions.add_completions(
            [
                Completion(user_id="u1", item_id="i1", completed_at=hours(2) + shift),
                Completion(user_id="u2", item_id="i9", completed_at=hours(3) + shift),
                Completion(user_id="u3", item_id="i9", completed_at=hours(27) + shift),
            ],
            source="test",
        )


def test_load_frames_reads_the_ledger(ledger: Ledger) -> None:
    fill(ledger)
    frames = load_frames(ledger, CAMPAIGN, ["2026-W48"])
    assert len(frames.deliveries) == 4 and set(frames.deliveries["edition"]) == {"2026-W48"}
    assert set(frames.events["event_type"]) == {"delivered", "opened"}  # processed not needed
    metrics = compute_metrics(frames)
    control, treated = metrics.arm("control"), metrics.arm("personalized")
    assert control is not None and treated is not None
    assert control.funnel["opened"] == 1 and control.funnel["machine_opened"] == 1
    assert control.stats["completed_after_open"].mean == 0.5
    assert control.stats["completed_emailed_after_open"].mean == 0.5
    assert treated.stats["completed_after_open"].mean == 0.0  # 25 h after the open
    assert treated.funnel["sent"] == 2


def test_load_frames_names_an_unknown_edition(ledger: Ledger) -> None:
    fill(ledger)
    with pytest.raises(UsageError, match=r"no edition 2026-W01.*Known: 2026-W47, 2026-W48"):
        load_frames(ledger, CAMPAIGN, ["2026-W01"])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "campaigns").mkdir()
    shutil.copy(REPO / "campaigns" / f"{CAMPAIGN}.toml", tmp_path / "campaigns")
    return tmp_path


def test_report_command_json_and_html(ledger_url: str, project: Path) -> None:
    with Ledger.connect(ledger_url) as ledger:
        fill(ledger)
    html = project / "report.html"
    runner = CliRunner(env={"CALM_MAIL_DATABASE_URL": ledger_url})
    result = runner.invoke(
        main,
        [
            "--root",
            str(project),
            "report",
            CAMPAIGN,
            "--edition",
            "2026-W48",
            "--json",
            "--html",
            str(html),
        ],
    )
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert data["editions"] == ["2026-W48"] and not data["pooled"]
    assert data["verdict"].startswith(("No detectable", "Not enough data"))
    assert data["verdict"] in html.read_text(encoding="utf-8")

    pooled = runner.invoke(
        main,
        [
            "--root",
            str(project),
            "report",
            CAMPAIGN,
            "--experiment",
            EXPERIMENT,
            "--json",
            "--window-hours",
            "48",
        ],
    )
    assert pooled.exit_code == 0, pooled.output
    data = orjson.loads(pooled.stdout)
    assert data["editions"] == ["2026-W47", "2026-W48"] and data["pooled"]
    assert data["window_hours"] == 48
    assert data["srm"][0]["result"]["observed"] == {"control": 2, "personalized": 2}

    text = runner.invoke(
        main, ["--root", str(project), "report", CAMPAIGN, "--edition", "2026-W48"]
    )
    assert text.exit_code == 0 and "Funnel per arm" in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --edition W or --experiment NAME"),
        (["--edition", "2026-W48", "--experiment", EXPERIMENT], "exactly one of"),
        (["--edition", "2026-W60"], "no such ISO week"),
        (["--edition", "2026-W02"], "has no edition 2026-W02"),
        (["--experiment", "nope"], "has no edition of experiment 'nope'"),
    ],
)
def test_report_command_usage_errors_exit_2(
    ledger_url: str, project: Path, args: list[str], message: str
) -> None:
    with Ledger.connect(ledger_url) as ledger:
        fill(ledger)
    runner = CliRunner(env={"CALM_MAIL_DATABASE_URL": ledger_url})
    result = runner.invoke(main, ["--root", str(project), "report", CAMPAIGN, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
