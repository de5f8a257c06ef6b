"""The live feed behind `revtrace demo`: backfill a history, then keep the landscape running.

The history (by default 500 contracts over the last 30 days) is sent at once so the demo shows
mismatches from the start. Then new contracts are booked at `rate` per second of the clock; each
contract's later events wait in a scheduler until their time comes. Live lifecycles are compressed by
`time_scale` (720: a day of lag takes two minutes) and carry the same faults and delivery noise.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from probes.batch_sender import BatchSender, wait_or_stop
from probes.config import LandscapeConfig
from probes.landscape import ContractRun, build_contract, build_orphan, iter_contracts
from probes.schedule import PendingEvents


@dataclass(frozen=True)
class FeedConfig:
    base_url: str
    token: str
    rate: float = 1.0  # new contracts per second of the clock
    backfill_contracts: int = 500
    backfill_span: timedelta = timedelta(days=30)
    seed: int = 0
    fault_rate: float = 0.1
    time_scale: float = 720.0
    batch_size: int = 500
    flush_interval: float = 1.0  # seconds between sends of a part-filled batch
    tick: float = 0.1  # seconds between looks at the scheduler
    retry_initial: float = 0.5
    retry_max: float = 30.0
    timeout: float = 30.0
    # Stop by itself once this many live contracts were booked and all their events sent.
    max_live_contracts: int | None = None


@dataclass
class FeedStats:
    backfilled: int = 0
    live: int = 0
    events_sent: int = 0
    batches: int = 0
    retries: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


def utc_now() -> datetime:
    return datetime.now(UTC)


def demo_landscape(feed: FeedConfig, now: datetime) -> LandscapeConfig:
    # The run's start time keeps ids of a restarted demo apart from the last run's.
    return LandscapeConfig(now=now, seed=feed.seed, contracts=feed.backfill_contracts,
                           history=(feed.backfill_span, timedelta(days=4)), fault_rate=feed.fault_rate,
                           id_prefix=f"demo{feed.seed}-{now.astimezone(UTC):%Y%m%d%H%M%S}")


def live_landscape(history: LandscapeConfig, time_scale: float) -> LandscapeConfig:
    """Live contracts continue the history's numbering; recurring orders stay in the history because
    their calendar-month intervals cannot be compressed."""
    return replace(history, first_index=history.first_index + history.contracts, recurring_share=0.0,
                   lags=replace(history.lags, scale=history.lags.scale / time_scale))


async def run_feed(feed: FeedConfig, *, session: aiohttp.ClientSession | None = None,
                   stop: asyncio.Event | None = None, clock: Callable[[], datetime] = utc_now,
                   landscape: LandscapeConfig | None = None) -> FeedStats:
    """Runs until `stop` is set, the task is cancelled, or `max_live_contracts` are done. `landscape`
    replaces the default history (its `now` should be the clock's)."""
    stop = stop or asyncio.Event()
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await _Feed(feed, own, stop, clock, landscape).run()
    return await _Feed(feed, session, stop, clock, landscape).run()


class _Feed:
    def __init__(self, feed: FeedConfig, session: aiohttp.ClientSession, stop: asyncio.Event,
                 clock: Callable[[], datetime], landscape: LandscapeConfig | None) -> None:
        self._feed = feed
        self._stop = stop
        self._clock = clock
        self._start = clock()
        self._history = landscape or demo_landscape(feed, self._start)
        self._live = live_landscape(self._history, feed.time_scale)
        self._sender = BatchSender(session, f"{feed.base_url.rstrip('/')}/api/v1/events", feed.token,
                                   stop=stop, clock=clock, retry_initial=feed.retry_initial,
                                   retry_max=feed.retry_max, timeout=feed.timeout)
        self._pending = PendingEvents()
        self._buffer: list[dict[str, Any]] = []
        self._live_horizon: datetime | None = None
        self.stats = FeedStats()

    async def run(self) -> FeedStats:
        try:
            if await self._backfill():
                await self._run_live()
        finally:
            self.stats.retries = self._sender.retries
        return self.stats

    async def _backfill(self) -> bool:
        for run in iter_contracts(self._history, keep_future=True):
            if run.contract_id is not None:
                self.stats.backfilled += 1
            for d in run.deliveries:
                if d.at <= self._start:
                    self._buffer.append(d.event)
                else:
                    self._pending.push(d.at, d.event)
            if len(self._buffer) >= self._feed.batch_size and not await self._flush(whole=False):
                return False
        return await self._flush(whole=True)

    async def _run_live(self) -> None:
        loop = asyncio.get_running_loop()
        interval = timedelta(seconds=1 / self._feed.rate) if self._feed.rate > 0 else None
        next_at = self._start
        index = self._live.first_index
        last_flush = loop.time()
        while not self._stop.is_set():
            now = self._clock()
            while interval is not None and next_at <= now and not self._booked_all():
                self._book(index, next_at)
                index += 1
                next_at += interval
            self._buffer.extend(self._pending.pop_due(now))
            done = self._done()
            if done or len(self._buffer) >= self._feed.batch_size or (
                    self._buffer and loop.time() - last_flush >= self._feed.flush_interval):
                if not await self._flush(whole=True):
                    return
                last_flush = loop.time()
            if done or await wait_or_stop(self._stop, self._feed.tick):
                return

    def _book(self, index: int, at: datetime) -> None:
        run = build_contract(self._live, index, live_at=at)
        self.stats.live += 1
        self._schedule(run)
        orphan = build_orphan(self._live, index, live_at=at)
        if orphan is not None:
            self._schedule(orphan)

    def _schedule(self, run: ContractRun) -> None:
        for d in run.deliveries:
            self._pending.push(d.at, d.event)
            if self._live_horizon is None or d.at > self._live_horizon:
                self._live_horizon = d.at

    def _booked_all(self) -> bool:
        limit = self._feed.max_live_contracts
        return limit is not None and self.stats.live >= limit

    def _done(self) -> bool:
        if not self._booked_all() or self._buffer:
            return False
        next_at = self._pending.next_at()
        # History events due after the last live one (later recurring intervals) are not waited for.
        return next_at is None or self._live_horizon is None or next_at > self._live_horizon

    async def _flush(self, *, whole: bool) -> bool:
        """Sends full batches (and with `whole` the rest too); False when stopped first."""
        size = self._feed.batch_size
        while len(self._buffer) >= size or (whole and self._buffer):
            batch, self._buffer = self._buffer[:size], self._buffer[size:]
            answer = await self._sender.send(batch)
            if answer is None:
                return False
            self.stats.batches += 1
            self.stats.events_sent += len(batch)
            self.stats.accepted += answer.accepted
            self.stats.duplicates += answer.duplicates
            self.stats.rejected += len(answer.rejected)
        return True
