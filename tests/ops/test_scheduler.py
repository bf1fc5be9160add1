"""The scheduler on the ledger's database: fires the due edition once, even with two of them."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobEvent

from calm_mail.campaign import load_campaign
from calm_mail.errors import ConfigError, LockHeld
from calm_mail.ops import job as edition_job
from calm_mail.ops.scheduler import (
    COALESCE,
    JOB_FUNC,
    MAX_INSTANCES,
    MISFIRE_GRACE_S,
    job_id,
    make_scheduler,
    next_runs,
    serve,
    sync_jobs,
    trigger_for,
)
from calm_mail.store import Ledger
from tests.ops.conftest import Weekend, make_root


def test_prepare_becomes_a_utc_cron_trigger(tmp_path: Path) -> None:
    campaign = load_campaign("weekly_winddown", make_root(tmp_path))
    trigger = trigger_for(campaign)
    after = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday
    assert trigger.get_next_fire_time(None, after) == datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
    [row] = next_runs([campaign], after)
    assert row.at_local == datetime(2026, 11, 27, 13, 0, tzinfo=ZoneInfo("America/New_York"))


@pytest.mark.parametrize("prepare", ["friday at six", "fri 25:00", "xyz 18:00", "fri 18:61"])
def test_a_bad_prepare_names_the_key(tmp_path: Path, prepare: str) -> None:
    campaign = load_campaign("weekly_winddown", make_root(tmp_path / "r", prepare=prepare))
    with pytest.raises(ConfigError, match=r"schedule\.prepare"):
        trigger_for(campaign)


def test_jobs_are_stored_by_reference_with_deliberate_defaults(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    campaign = load_campaign("weekly_winddown", root)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger.connect(url) as ledger:
        scheduler = make_scheduler(ledger.engine)
        scheduler.start(paused=True)
        try:
            sync_jobs(scheduler, [campaign], root)
            sync_jobs(scheduler, [campaign], root)  # idempotent: replaced, not doubled
            [job] = scheduler.get_jobs()
        finally:
            scheduler.shutdown()
        # a second scheduler on the same database sees the stored job
        other = make_scheduler(url)
        other.start(paused=True)
        try:
            [stored] = other.get_jobs()
        finally:
            other.shutdown()
    assert stored.id == job.id == job_id("weekly_winddown")
    assert stored.func_ref == JOB_FUNC and stored.args == ("weekly_winddown", str(root))
    assert (stored.coalesce, stored.max_instances) == (COALESCE, MAX_INSTANCES) == (True, 1)
    assert stored.misfire_grace_time == MISFIRE_GRACE_S


def test_a_gone_campaigns_job_is_removed(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    campaign = load_campaign("weekly_winddown", root)
    with Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        scheduler = make_scheduler(ledger.engine)
        scheduler.start(paused=True)
        try:
            sync_jobs(scheduler, [campaign], root)
            sync_jobs(scheduler, [], root)
            assert scheduler.get_jobs() == []
        finally:
            scheduler.shutdown()


def _events(scheduler: object) -> list[JobEvent]:
    seen: list[JobEvent] = []
    scheduler.add_listener(  # type: ignore[attr-defined]
        seen.append, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED
    )
    return seen


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_two_schedulers_send_the_edition_once(weekend: Weekend) -> None:
    campaign = load_campaign("weekly_winddown", weekend.root)
    url = f"sqlite:///{weekend.root / 'calm_mail.db'}"
    hidden = {"clock_offset_s": weekend.offset_s}
    with Ledger.connect(url) as ledger:
        first, second = make_scheduler(ledger.engine), make_scheduler(url)
        seen = [_events(first), _events(second)]
        for scheduler in (first, second):
            sync_jobs(scheduler, [campaign], weekend.root, **hidden)
            scheduler.start()
        try:
            assert _wait(lambda: any(e.code == EVENT_JOB_EXECUTED for s in seen for e in s), 40)
            # A hand-started run meanwhile is refused or finds nothing to do: never a 2nd send.
            try:
                outcome = edition_job.run_due_edition(
                    "weekly_winddown", str(weekend.root), clock_offset_s=weekend.offset_s
                )
                assert outcome.status == "nothing_to_do"
            except LockHeld:
                pass
        finally:
            first.shutdown(wait=True)
            second.shutdown(wait=True)
        info = ledger.editions.get_edition("weekly_winddown", weekend.edition.key)
        assert info is not None and info.state == "sent"
        counts = ledger.deliveries.counts(info.edition_id)
        actions = [entry.action for entry in ledger.editions.edition_log(info.edition_id)]
    sent = sum(n for (state, _), n in counts.items() if state == "sent")
    messages = weekend.sandbox.messages()
    assert sent > 0 and len(messages) == sent
    assert len({m["custom_args"]["delivery_id"] for m in messages}) == sent  # nobody twice
    assert actions.count("preflight") == 1 and actions.count("run") == 1
    assert not [e for s in seen for e in s if e.code == EVENT_JOB_ERROR]
    assert info.preflight is not None and info.preflight["ok"] is True


def test_serve_stops_gracefully(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    campaign = load_campaign("weekly_winddown", root)
    stop = threading.Event()
    started: list[object] = []
    with Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        thread = threading.Thread(
            target=serve,
            args=([campaign], root, ledger.engine),
            kwargs={"stop": stop, "on_started": started.append},
        )
        thread.start()
        assert _wait(lambda: started, 10)
        [scheduler] = started
        assert [j.id for j in scheduler.get_jobs()] == [job_id("weekly_winddown")]  # type: ignore[attr-defined]
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
    assert edition_job.SHUTDOWN.is_set()  # running editions were told to stop claiming
    edition_job.SHUTDOWN.clear()
    assert not scheduler.running  # type: ignore[attr-defined]


def test_the_next_run_is_never_in_the_past(tmp_path: Path) -> None:
    campaign = load_campaign("weekly_winddown", make_root(tmp_path))
    now = datetime.now(UTC)
    [row] = next_runs([campaign], now)
    assert row.at_utc is not None and now < row.at_utc <= now + timedelta(days=7)
    assert row.at_utc.weekday() == 4 and (row.at_utc.hour, row.at_utc.minute) == (18, 0)
