"""Group commit: concurrent ingest requests are written together, one transaction per round, and each is
answered only after the commit that holds its events. Past `max_pending` waiting events new requests are
refused (429) rather than queued without bound."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

from collector.ingest import EventStore
from collector.model import CanonicalEvent

T = TypeVar("T")
ROUND_EVENTS = 20_000
# A round this small is written on the event loop itself: handing it to a thread and back cost more CPU
# than the write (about 230 us a request, with the interpreter lock passed back and forth), and it blocks
# the loop no longer than one small commit.
INLINE_EVENTS = 32


class Overloaded(Exception):
    """Too many events wait for the store; the client should retry later."""


class BatchWriter:
    """`executor` should have `rounds` threads, kept for ingest: large requests parse their events on them
    too (see `on_writer_thread`), so that a 10,000-event body never holds the event loop (and every read
    waiting on it) for the 100 ms its parse takes.

    `rounds` is how many rounds may be written at once, each in its own transaction. One suits SQLite, which
    takes one writer at a time. On PostgreSQL the database does half the work of a round in its own process,
    so a second round, parsed and prepared here meanwhile, keeps both cores busy (17,000 -> 20,000-22,000
    events a second for 10,000-event batches here); the statements take their rows in key order, so that
    concurrent rounds never deadlock."""

    def __init__(self, store: EventStore, executor: Executor, max_pending: int = 200_000, rounds: int = 1):
        self.store, self.executor, self.max_pending, self.rounds = store, executor, max_pending, rounds
        self._queue: list[tuple[Sequence[CanonicalEvent], asyncio.Future[list[bool]]]] = []
        self._pending = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def pending(self) -> int:
        return self._pending

    async def submit(self, batch: Sequence[CanonicalEvent]) -> list[bool]:
        """Which events were new; returns once they are committed."""
        if not batch:
            return []
        if self._closing:
            raise Overloaded("shutting down")
        if self._pending and self._pending + len(batch) > self.max_pending:
            raise Overloaded(f"{self._pending} events are waiting to be written")
        fut: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._queue.append((batch, fut))
        self._pending += len(batch)
        self._wake.set()
        return await asyncio.shield(fut)

    async def on_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name=f"revtrace-batch-writer-{i}") for i in range(self.rounds)]

    async def stop(self) -> None:
        """Write what was accepted into the queue, then stop."""
        self._closing = True
        self._wake.set()
        await asyncio.gather(*self._tasks)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            taken: list[tuple[Sequence[CanonicalEvent], asyncio.Future[list[bool]]]] = []
            size = 0
            while self._queue and (not taken or size + len(self._queue[0][0]) <= ROUND_EVENTS):
                item = self._queue.pop(0)
                taken.append(item)
                size += len(item[0])
            merged = [ev for batch, _ in taken for ev in batch]
            try:
                if size <= INLINE_EVENTS:
                    stored = self.store.store(merged)
                else:
                    stored = await loop.run_in_executor(self.executor, self.store.store, merged)
            except Exception as exc:  # every waiting request learns the write failed; none is acknowledged
                for _, fut in taken:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                at = 0
                for batch, fut in taken:
                    if not fut.done():
                        fut.set_result(stored.new[at:at + len(batch)])
                    at += len(batch)
            finally:
                self._pending -= size
