"""Hop lags counted into the lag histogram's buckets where a pass finds them. A full pass over a million
contracts finds three million lags: as counts they travel from the pass's process and reach the histogram
in a few hundred additions, where one observation each held the server's event loop for seconds."""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

LAG_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800, 604800,
               1209600, 2592000, float("inf"))


@dataclass
class LagCounts:
    """Per (hop, entity): how many lags fell in each bucket (the first bound not below the lag, as
    Prometheus counts), and their sum."""
    buckets: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    sums: dict[tuple[str, str], float] = field(default_factory=dict)

    def add(self, hop: str, entity: str, seconds: float) -> None:
        seconds = max(seconds, 0.0)  # a clock skew between systems is not a negative lag
        key = (hop, entity)
        counts = self.buckets.get(key)
        if counts is None:
            counts = self.buckets[key] = [0] * len(LAG_BUCKETS)
            self.sums[key] = 0.0
        counts[bisect_left(LAG_BUCKETS, seconds)] += 1
        self.sums[key] += seconds

    def merge(self, other: LagCounts) -> None:
        for key, counts in other.buckets.items():
            mine = self.buckets.setdefault(key, [0] * len(LAG_BUCKETS))
            for i, n in enumerate(counts):
                mine[i] += n
            self.sums[key] = self.sums.get(key, 0.0) + other.sums[key]

    @property
    def total(self) -> int:
        return sum(sum(c) for c in self.buckets.values())
