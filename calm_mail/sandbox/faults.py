"""Fault injection for `mail/send`, decided from a seeded RNG so tests are repeatable.

Every request that reaches the random draw consumes exactly two numbers, whatever its outcome,
so N requests with one seed give the same counts of each fault in any arrival order.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from enum import Enum

from calm_mail.sandbox.config import SandboxConfig


class Fault(Enum):
    NONE = "none"
    FAIL_500 = "500"
    FAIL_503 = "503"
    DROP = "drop"
    ACCEPT_THEN_500 = "accept_then_500"
    ACCEPT_THEN_DROP = "accept_then_drop"

    @property
    def stores(self) -> bool:
        """Whether a valid message is kept before the fault shows."""
        return self in (Fault.NONE, Fault.ACCEPT_THEN_500, Fault.ACCEPT_THEN_DROP)


@dataclass(frozen=True, slots=True)
class RateVerdict:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # unix seconds when the window refills


class FaultPlan:
    """Decides, per request, latency-free faults: outage, rate limit, 5xx, drop."""

    def __init__(self, config: SandboxConfig, *, monotonic: float | None = None) -> None:
        self._config = config
        self._rng = random.Random(config.seed)
        self._started = time.monotonic() if monotonic is None else monotonic
        self._window = -1
        self._count = 0

    def in_outage(self) -> bool:
        elapsed = time.monotonic() - self._started
        return any(start <= elapsed < end for start, end in self._config.outages)

    def rate(self) -> RateVerdict | None:
        """Fixed one-second windows on the wall clock; None when no limit is set."""
        limit = self._config.rate_limit
        if limit is None:
            return None
        now = time.time()
        window = int(now)
        if window != self._window:
            self._window, self._count = window, 0
        self._count += 1
        return RateVerdict(
            allowed=self._count <= limit,
            limit=limit,
            remaining=max(0, limit - self._count),
            reset=window + 1,
        )

    def draw(self) -> Fault:
        c = self._config
        u, v = self._rng.random(), self._rng.random()
        if u < c.fail_rate:
            return Fault.FAIL_500 if v < 0.5 else Fault.FAIL_503
        u -= c.fail_rate
        if u < c.drop_rate:
            return Fault.DROP
        u -= c.drop_rate
        if u < c.accept_then_fail_rate:
            return Fault.ACCEPT_THEN_500 if v < 0.5 else Fault.ACCEPT_THEN_DROP
        return Fault.NONE
