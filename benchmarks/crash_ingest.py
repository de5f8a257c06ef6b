"""Delivery under fire: clients send every batch until it is answered 200, keeping a ledger of what was
acknowledged, while a fault strikes at planned points of the ingest (the server killed and restarted, or its
database taken away for a while)."""
from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from benchmarks.crash_api import EVALUATE_PATH, EVENTS_PATH, HarnessError, request
from benchmarks.crash_stream import Stream
from benchmarks.server import Server

MAX_ATTEMPTS = 500  # per batch; far above what any fault plan needs, so only a server that never answers hits it


@dataclass
class Ledger:
    """What the clients saw: only a 200 answer acknowledges a batch."""
    batches: int
    acked: int = 0
    attempts: int = 0
    in_flight: int = 0
    events_acked: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    committed_unanswered: int = 0  # retried batches answered all-duplicate: the lost answer's commit held
    retry_duplicates: int = 0  # duplicates answered to retries (the first attempt's commit held)
    partial: int = 0  # answers neither all-new nor all-duplicate: a batch split across commits
    latency: float = 0.2  # seconds, a moving average of answered requests
    errors: Counter[int] = field(default_factory=Counter)  # answers other than 200, by status
    acked_batches: set[int] = field(default_factory=set)

    def record(self, index: int, attempt: int, size: int, answer: dict[str, Any]) -> None:
        if index in self.acked_batches:
            raise HarnessError(f"batch {index} acknowledged twice")
        accepted, dups, rejected = int(answer["accepted"]), int(answer["duplicates"]), len(answer["rejected"])
        if accepted + dups + rejected != size:
            raise HarnessError(f"batch {index}: answer {answer} does not add up to {size} events")
        self.acked_batches.add(index)
        self.acked += 1
        self.events_acked += size
        self.accepted += accepted
        self.duplicates += dups
        self.rejected += rejected
        if attempt > 1:
            self.retry_duplicates += dups
            self.committed_unanswered += dups == size
        if 0 < dups < size:
            self.partial += 1


async def deliver(session: aiohttp.ClientSession, server: Server, index: int, body: bytes, size: int,
                  ledger: Ledger) -> None:
    """Send one batch until it is answered 200; anything else (no answer, 429, 5xx) means the same batch
    again, after a pause that lets a killed server or its database come back."""
    pause, last = 0.05, ""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        ledger.attempts += 1
        ledger.in_flight += 1
        status, retry_after = None, None
        sent_at = time.monotonic()
        try:
            async with session.post(server.base + EVENTS_PATH, data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                status, raw = resp.status, await resp.read()
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, last = None, f"{type(exc).__name__}: {exc}"
        finally:
            ledger.in_flight -= 1
        if status == 200:
            ledger.latency = 0.8 * ledger.latency + 0.2 * (time.monotonic() - sent_at)
            ledger.record(index, attempt, size, orjson.loads(raw))
            return
        if status is not None:
            ledger.errors[status] += 1
            last = f"HTTP {status}: {raw[:300]!r}"
            if status != 429 and status < 500:
                raise HarnessError(f"batch {index}: {last}")
        await asyncio.sleep(float(retry_after) if retry_after and retry_after.isdigit() else pause)
        pause = min(pause * 2, 0.25)
    raise HarnessError(f"batch {index}: no 200 after {MAX_ATTEMPTS} attempts; last: {last}\n{server.log_tail()}")


Strike = Callable[[], Awaitable[None]]


@dataclass
class FaultLog:
    planned: int = 0
    done: int = 0
    mid_request: int = 0  # faults with at least one request waiting for its answer
    passes: int = 0  # incremental passes asked for during the ingest and answered
    passes_cut: int = 0  # ... and cut short by a kill
    pass_errors: Counter[int] = field(default_factory=Counter)  # ... and answered otherwise, by status


async def ingest(session: aiohttp.ClientSession, server: Server, stream: Stream, thresholds: list[int],
                 rng: random.Random, strike: Strike, *, clients: int, max_fault_delay: float,
                 evaluate_during_ingest: bool) -> tuple[Ledger, FaultLog]:
    """Send every batch with `clients` concurrent clients, striking once the number of acknowledged batches
    reaches each threshold. Clients may run only a few batches past the next threshold: without that the
    ingest outruns the faults, and most would fall on a drained stream instead of spreading over it. The
    last batch waits for the last fault, so every fault falls in the ingest."""
    n = len(stream.batches)
    ledger, faults = Ledger(n), FaultLog(planned=len(thresholds))
    gate = asyncio.Condition()
    ahead = 2 * clients
    allowed = n if not thresholds else min(thresholds[0] + ahead, n - 1)
    todo = iter(range(n))

    async def open_to(limit: int) -> None:
        nonlocal allowed
        async with gate:
            allowed = limit
            gate.notify_all()

    async def client() -> None:
        for i in todo:
            async with gate:
                await gate.wait_for(lambda: i < allowed)  # noqa: B023 - waited for before i moves on
            await deliver(session, server, i, stream.bodies[i], len(stream.batches[i]), ledger)

    async def striker() -> None:
        for t in thresholds:
            await open_to(max(allowed, min(t + ahead, n - 1)))
            while ledger.acked < t:
                await asyncio.sleep(0.005)
            # A random moment within about one request's time, so that faults land in requests and in commits;
            # a moment between requests is drawn again (a fault there tests little), unless none can start.
            for _ in range(20):
                await asyncio.sleep(rng.uniform(0, min(max_fault_delay, 1.5 * ledger.latency)))
                if ledger.in_flight or ledger.acked >= allowed:
                    break
            faults.mid_request += ledger.in_flight > 0
            await strike()
            faults.done += 1
        await open_to(n)

    async def evaluator(senders: list[asyncio.Task[None]]) -> None:
        while not all(s.done() for s in senders):
            status: int | None = None
            try:
                status, _ = await request(session, "POST", server.base + EVALUATE_PATH, b"{}")
            except aiohttp.ClientConnectorError:  # the server is down: no pass was under way
                pass
            except (aiohttp.ClientError, TimeoutError):
                faults.passes_cut += 1
            faults.passes += status == 200
            if status is not None and status != 200:
                faults.pass_errors[status] += 1
            await asyncio.sleep(0.1 if status == 200 else 0.25)

    async with asyncio.TaskGroup() as tg:
        senders = [tg.create_task(client()) for _ in range(clients)]
        tg.create_task(striker())
        if evaluate_during_ingest:
            tg.create_task(evaluator(senders))
    return ledger, faults


def fault_thresholds(batches: int, faults: int, rng: random.Random) -> list[int]:
    """Acknowledged-batch counts spread over the whole ingest (never the last batch, held back until the end);
    with more faults than batches some counts repeat, and a fault strikes again soon after the last."""
    choices = range(1, max(2, batches - 1))
    picked = rng.sample(choices, faults) if faults <= len(choices) else rng.choices(choices, k=faults)
    return sorted(picked)


