"""The garbage collector around work that makes millions of short-lived objects at a time.

CPython collects its youngest generation every 700 allocations of container objects; every tenth young pass also
collects the middle generation, and every tenth of those is a full pass over everything alive. Work that makes
millions of short-lived containers (a chat archive's lines, the migration engine's copies of every model, made
again for each migration) sets off thousands of passes, the full ones walking all of the process's objects each
time. ``fewer_collections`` spaces them out while such work runs.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

BULK_YOUNG = 20_000  # allocations between two collections of the youngest generation during bulk work


@contextlib.contextmanager
def fewer_collections(young: int = BULK_YOUNG, *, freeze: bool = False) -> Iterator[None]:
    """Collect the youngest generation every ``young`` allocations inside the block (the other thresholds as they
    are). With ``freeze``, what is alive on entry is left out of the collector's passes until the block ends."""
    if freeze:
        gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(young, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if freeze:
            gc.unfreeze()
