"""Events waiting for their time to come, earliest first."""
from __future__ import annotations

import heapq
from datetime import datetime
from itertools import count
from typing import Any


class PendingEvents:
    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, dict[str, Any]]] = []
        # Ties keep the order events were scheduled in, so a contract's same-second events stay causal.
        self._seq = count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, at: datetime, event: dict[str, Any]) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), event))

    def next_at(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime, limit: int | None = None) -> list[dict[str, Any]]:
        due: list[dict[str, Any]] = []
        while self._heap and self._heap[0][0] <= now and (limit is None or len(due) < limit):
            due.append(heapq.heappop(self._heap)[2])
        return due
