"""Hypothesis drives the delivery state machine with random calls; the ledger must follow a model.

Allowed moves: planned -> claimed (claim); claimed -> sent | failed | planned (retriable
failure, release) | skipped; planned -> skipped. Everything else is refused (returns False and
changes nothing), and a sent row never changes again.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from calm_mail.records import DeliveryState
from calm_mail.store import DeliveryRow, Ledger, delivery_id_for
from tests.store.helpers import EDITION, plan

P, C, S, F, K = (
    DeliveryState.PLANNED,
    DeliveryState.CLAIMED,
    DeliveryState.SENT,
    DeliveryState.FAILED,
    DeliveryState.SKIPPED,
)
USERS = 6
_campaigns = itertools.count()


def run_machine(ledger: Ledger) -> None:
    class DeliveryMachine(RuleBasedStateMachine):
        """One fresh edition per example; `model` is what the ledger must say."""

        @initialize()
        def plan_edition(self) -> None:
            self.campaign = f"c{next(_campaigns)}"
            self.eid = ledger.editions.ensure_edition(
                self.campaign, EDITION, experiment="e"
            ).edition_id
            ledger.deliveries.add_planned(self.eid, self.campaign, plan(USERS))
            self.ids = [delivery_id_for(self.campaign, EDITION, f"u{i}") for i in range(USERS)]
            self.model = dict.fromkeys(self.ids, P)
            self.attempts = dict.fromkeys(self.ids, 0)
            self.sent: dict[str, DeliveryRow] = {}

        @rule(limit=st.integers(0, 4))
        def claim(self, limit: int) -> None:
            rows = ledger.deliveries.claim(self.eid, worker="w", limit=limit)
            waiting = [d for d, state in self.model.items() if state is P]
            assert len(rows) == min(limit, len(waiting))
            for row in rows:
                assert self.model[row.delivery_id] is P
                self.model[row.delivery_id] = C
                self.attempts[row.delivery_id] += 1
                assert row.attempts == self.attempts[row.delivery_id]

        @rule(i=st.integers(0, USERS - 1))
        def mark_sent(self, i: int) -> None:
            delivery_id = self.ids[i]
            allowed = self.model[delivery_id] is C
            assert ledger.deliveries.mark_sent(delivery_id, message_id=f"m{i}") is allowed
            if allowed:
                self.model[delivery_id] = S
                row = ledger.deliveries.get_delivery(delivery_id)
                assert row is not None
                self.sent[delivery_id] = row

        @rule(i=st.integers(0, USERS - 1), retriable=st.booleans())
        def mark_failed(self, i: int, retriable: bool) -> None:
            delivery_id = self.ids[i]
            allowed = self.model[delivery_id] is C
            assert (
                ledger.deliveries.mark_failed(delivery_id, error="e", retriable=retriable)
                is allowed
            )
            if allowed:
                self.model[delivery_id] = P if retriable else F

        @rule(i=st.integers(0, USERS - 1))
        def mark_skipped(self, i: int) -> None:
            delivery_id = self.ids[i]
            allowed = self.model[delivery_id] in (P, C)
            assert ledger.deliveries.mark_skipped(delivery_id, reason="r") is allowed
            if allowed:
                self.model[delivery_id] = K

        @rule(picks=st.sets(st.integers(0, USERS - 1)))
        def release(self, picks: set[int]) -> None:
            chosen = [self.ids[i] for i in picks]
            expected = [d for d in chosen if self.model[d] is C]
            assert ledger.deliveries.release_claims(chosen) == len(expected)
            for delivery_id in expected:
                self.model[delivery_id] = P

        @invariant()
        def ledger_matches_model(self) -> None:
            if not hasattr(self, "eid"):
                return
            rows = {r.delivery_id: r for r in ledger.deliveries.iter_deliveries(self.eid)}
            assert {d: r.state for d, r in rows.items()} == self.model
            for delivery_id, row in self.sent.items():
                assert rows[delivery_id] == row  # a sent row never changes again

    run_state_machine_as_test(
        DeliveryMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_delivery_state_machine(ledger: Ledger) -> None:
    run_machine(ledger)
