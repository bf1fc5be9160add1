"""Pacing for sends: a steady rate with a shared hold after a 429."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """At most `rate` acquisitions per second, spread evenly; `hold(s)` pauses everyone.

    Hand-written because it is twelve lines and must share one clock with the 429 hold;
    the async rate-limit libraries on PyPI do one or the other.
    """

    def __init__(self, rate: float, *, burst: int = 8) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._burst = burst * self.interval
        self._next = time.monotonic()
        self._hold_until = 0.0

    def hold(self, seconds: float) -> None:
        self._hold_until = max(self._hold_until, time.monotonic() + seconds)

    async def acquire(self) -> None:
        now = time.monotonic()
        start = max(self._next, now - self._burst, self._hold_until)
        self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)
