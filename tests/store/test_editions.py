"""The `editions` repository contract, on SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

from datetime import UTC

import pytest

from calm_mail.store import Ledger
from tests.store.helpers import CAMPAIGN, EDITION, edition_id, planned


def test_ensure_edition_is_idempotent(ledger: Ledger) -> None:
    first = ledger.editions.ensure_edition(CAMPAIGN, EDITION, experiment="exp")
    again = ledger.editions.ensure_edition(CAMPAIGN, EDITION, experiment="exp")
    assert again == first
    assert first.state == "planned" and first.batch_id is None and first.preflight is None
    assert ledger.editions.get_edition(CAMPAIGN, EDITION) == first
    assert ledger.editions.get_edition_by_id(first.edition_id) == first
    assert ledger.editions.get_edition(CAMPAIGN, "2026-W47") is None
    assert ledger.editions.get_edition_state(first.edition_id) == "planned"
    assert ledger.editions.get_edition_state(first.edition_id + 100) is None


def test_list_editions_newest_first(ledger: Ledger) -> None:
    for key in ("2026-W47", "2026-W49", "2026-W48"):
        ledger.editions.ensure_edition(CAMPAIGN, key, experiment="exp")
    ledger.editions.ensure_edition("other", "2026-W50", experiment="exp")
    assert [e.edition for e in ledger.editions.list_editions(CAMPAIGN)] == [
        "2026-W49",
        "2026-W48",
        "2026-W47",
    ]


def test_update_edition_fields(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.editions.update_edition(
        eid,
        state="sending",
        batch_id="b-1",
        scheduled_status="pause",
        preflight={"ok": True, "checks": [1, 2]},
        summary={"sent": 3},
    )
    info = ledger.editions.get_edition_by_id(eid)
    assert info is not None
    assert (info.state, info.batch_id, info.scheduled_status) == ("sending", "b-1", "pause")
    assert info.preflight == {"ok": True, "checks": [1, 2]} and info.summary == {"sent": 3}
    ledger.editions.update_edition(eid, state="sent")  # scheduled_status left alone
    info = ledger.editions.get_edition_by_id(eid)
    assert info is not None and info.scheduled_status == "pause" and info.batch_id == "b-1"
    ledger.editions.update_edition(eid, scheduled_status=None)  # None clears it
    info = ledger.editions.get_edition_by_id(eid)
    assert info is not None and info.scheduled_status is None and info.state == "sent"
    assert info.updated_at >= info.created_at


def test_update_edition_refuses_unknown_state_and_edition(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    with pytest.raises(ValueError, match="bogus"):
        ledger.editions.update_edition(eid, state="bogus")
    with pytest.raises(LookupError):
        ledger.editions.update_edition(eid + 1000, state="sent")


def test_last_sent_edition_needs_a_sent_delivery(ledger: Ledger) -> None:
    w46, w47 = edition_id(ledger, "2026-W46"), edition_id(ledger, "2026-W47")
    edition_id(ledger, "2026-W48")
    for eid, key in ((w46, "2026-W46"), (w47, "2026-W47")):
        ledger.deliveries.add_planned(eid, CAMPAIGN, [planned("u1", edition=key)])
    assert ledger.editions.last_sent_edition(CAMPAIGN, "2026-W48") is None
    (row,) = ledger.deliveries.claim(w46, worker="w", limit=5)
    ledger.deliveries.mark_sent(row.delivery_id, message_id="m")
    found = ledger.editions.last_sent_edition(CAMPAIGN, "2026-W48")
    assert found is not None and found.edition == "2026-W46"
    assert ledger.editions.last_sent_edition(CAMPAIGN, "2026-W46") is None
    assert ledger.editions.last_sent_edition("other", "2026-W48") is None


def test_edition_log_keeps_actions_in_order(ledger: Ledger) -> None:
    eid = edition_id(ledger)
    ledger.editions.log_action(eid, "pause", {"by": "oncall"})
    ledger.editions.log_action(eid, "resume", None)
    log = ledger.editions.edition_log(eid)
    assert [(e.action, e.detail) for e in log] == [("pause", {"by": "oncall"}), ("resume", None)]
    assert all(e.at.tzinfo is UTC for e in log)
    assert ledger.editions.edition_log(eid + 1) == []
