"""The buckets of table lag_buckets, which the assurance summary reads each hop's lag percentiles from
(migration 0006 describes them), computed here so that the pass keeps the counts beside the contract rows it
writes: a trigger doing the same per row cost SQLite ~45 us a contract, most of a first full pass's writes.

A bucket is named by its lower bound, floor(lag / width) * width, with 2^SUB widths per power of two of
the lag's magnitude; every figure here is an exact binary fraction, so these bounds equal those migration
0006 computed in SQL (tests/test_read_totals.py holds the two to each other)."""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

# Magnitudes below 2^LOW seconds share one bucket; from 2^HIGH seconds on, the width stops growing.
LOW, HIGH, SUB = -20, 40, 5
_SMALL, _LARGE = 2.0 ** LOW, 2.0 ** HIGH

Change = tuple[str, float | None, float | None]  # hop, lag before (None: none), lag now


def bucket_of(lag: float) -> float:
    size = abs(lag)
    if size < _SMALL:
        width = _SMALL
    elif size >= _LARGE:
        width = 2.0 ** (HIGH - SUB)
    else:
        # size = m * 2^exp with 0.5 <= m < 1: it lies in [2^(exp-1), 2^exp), exactly, with no logarithm.
        width = math.ldexp(1.0, math.frexp(size)[1] - 1 - SUB)
    return math.floor(lag / width) * width


def deltas(changes: Iterable[Change]) -> list[dict[str, object]]:
    """What the changes add to each (hop, bucket) count, as rows to add to lag_buckets; none that add 0."""
    moved: Counter[tuple[str, float]] = Counter()
    for hop, before, now in changes:
        if before == now:
            continue
        if before is not None:
            moved[(hop, bucket_of(before))] -= 1
        if now is not None:
            moved[(hop, bucket_of(now))] += 1
    return [{"hop": hop, "bucket": bucket, "contracts": n} for (hop, bucket), n in sorted(moved.items()) if n]
