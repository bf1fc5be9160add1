"""`make bench`: every performance figure next to its baseline measured in the same run.

``python -m benchmarks [--quick] [--only edition,plan] [--json FILE]``. Sections: edition,
data, reader, plan, render, send, receiver (see each module). Not part of the runtime package:
nothing in `calm_mail` imports it.
"""

from __future__ import annotations

from benchmarks.core import FULL, QUICK, Figure, Goal, Section, Sizes

__all__ = ["FULL", "QUICK", "Figure", "Goal", "Section", "Sizes"]
