"""The cyclic garbage collector, tuned for the length of a long batch job (a plan, a send run).

`tuned`: objects alive at the start (catalog, templates, modules) are moved out of the
collector's sight with `gc.freeze`, and young collections run every `young` allocations instead
of CPython's 700. Cycles are still collected; reference counting frees everything else at once,
as before. `paused`: the collector does not run at all, for a job that makes no reference cycles
per unit of work (a test holds it to that). Both restore the collector afterwards.
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


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside. Only for work whose cyclic garbage does not grow with its
    size: what is left is collected once the collector runs again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
