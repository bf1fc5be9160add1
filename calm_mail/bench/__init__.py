"""`make bench`: every performance figure of the issues next to its baseline from the same run.

``python -m calm_mail.bench [--quick] [--only reader,plan] [--json FILE]``. Sections: data,
reader, plan, render, send, receiver (see each module). Figures are CPU time where the work is
one core's (reader, plan), medians of per-call wall time where calls are short (render), and
wall time, best of N, where latency is the point (send, receiver).
"""

from __future__ import annotations

from calm_mail.bench.core import FULL, QUICK, Figure, Goal, Section, Sizes

__all__ = ["FULL", "QUICK", "Figure", "Goal", "Section", "Sizes"]
