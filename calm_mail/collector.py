"""The cyclic garbage collector, tuned for the length of a send run.

`tuned`: objects alive at the start (catalog, templates, modules) are moved out of the
collector's sight with `gc.freeze`, and young collections run every `young` allocations instead
of CPython's 700. Cycles are still collected; reference counting frees everything else at once,
as before. The collector is restored afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def tuned(young: int) -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], young), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
