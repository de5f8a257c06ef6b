"""The cyclic garbage collector of the server and the examiners (the pass worker keeps Python's own).

Each of them allocates objects by the hundred thousand a second (a 10,000-event request, a chunk of a pass)
and frees nearly all of them by reference counting, in order; cycles are rare. At Python's default a young
collection runs every 700 allocations and now and then a full one walks every live object, the batches
waiting to be written with them: a tenth of the server's CPU through a bulk ingest here."""
from __future__ import annotations

import gc

# Allocations of tracked objects between young collections (Python's default: 700), and how many younger
# collections each older generation waits for (default: 10 and 10).
THRESHOLDS = (100_000, 50, 100)


def for_bulk_work() -> None:
    """Collect less often, and leave the objects alive now (modules, classes, settings) out of every later
    collection. Called once a process is set up."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
