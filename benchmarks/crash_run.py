"""One run of the crash harness: the stream into a fresh store, with or without faults, then the passes, the
outcome, a replay and the store's own count of what it holds."""
from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.crash_api import EVENTS_PATH, HarnessError, auth, evaluate, request, settle
from benchmarks.crash_ingest import FaultLog, Ledger, Strike, fault_thresholds, ingest
from benchmarks.crash_outcome import Outcome, read_outcome
from benchmarks.crash_store import StoreCheck, check_store
from benchmarks.crash_stream import Stream
from benchmarks.db_proxy import DatabaseProxy
from benchmarks.server import Server

FAULTS = ("kill", "outage")


@dataclass(frozen=True)
class Options:
    events: int = 20_000
    faults: int = 20
    # "kill": SIGKILL revtrace serve and start it again; "outage": reset every connection to PostgreSQL and
    # refuse new ones for `outage_seconds` (drawn from the range), the server left running.
    fault: str = "kill"
    outage_seconds: tuple[float, float] = (0.1, 1.5)
    seed: int = 1
    batch_size: int = 500
    clients: int = 4
    max_fault_delay: float = 0.5
    replay_batches: int = 5
    read_concurrency: int = 8
    # Incremental passes asked for all along the ingest: restarts come faster than the scheduler's first
    # pass after a start, and without these no fault would land in a pass.
    evaluate_during_ingest: bool = True
    request_timeout: float = 120.0

@dataclass
class RunResult:
    ledger: Ledger
    faults: FaultLog
    store: StoreCheck
    outcome: Outcome
    settle_passes: int | None
    full_pass: dict[str, Any]
    after_replay: dict[str, Any]
    replay_events: int
    replay_duplicates: int
    restarts: int
    ingest_seconds: float
    seconds: float


async def run_once(database_url: str, stream: Stream, opts: Options, workdir: Path, name: str,
                   faults: int) -> RunResult:
    if opts.fault not in FAULTS:
        raise ValueError(f"fault: must be one of {', '.join(FAULTS)}")
    with contextlib.ExitStack() as stack:
        if opts.fault == "outage" and faults:
            proxy = stack.enter_context(DatabaseProxy(database_url))
            server = Server(proxy.proxied_url, name=name, workdir=workdir)
            lengths = random.Random(opts.seed * 104729 + faults)

            async def strike() -> None:
                await proxy.cut_async(lengths.uniform(*opts.outage_seconds))
        else:
            server = Server(database_url, name=name, workdir=workdir)

            async def strike() -> None:
                await asyncio.to_thread(server.kill)
                await asyncio.to_thread(server.start)
        return await _run(database_url, server, strike, stream, opts, faults)


async def _run(database_url: str, server: Server, strike: Strike, stream: Stream, opts: Options,
               faults: int) -> RunResult:
    started = time.monotonic()
    rng = random.Random(opts.seed * 7919 + faults)
    timeout = aiohttp.ClientTimeout(total=opts.request_timeout)
    connector = aiohttp.TCPConnector(limit=max(opts.clients, opts.read_concurrency) + 4)
    # The server's start, kill and stop wait on the process; in threads, so that the clients go on meanwhile.
    try:
        async with aiohttp.ClientSession(timeout=timeout, headers=auth(server.token), connector=connector) as session:
            await asyncio.to_thread(server.start)
            thresholds = fault_thresholds(len(stream.batches), faults, rng) if faults else []
            ledger, fault_log = await ingest(session, server, stream, thresholds, rng, strike,
                                             clients=opts.clients, max_fault_delay=opts.max_fault_delay,
                                             evaluate_during_ingest=opts.evaluate_during_ingest)
            ingest_seconds = time.monotonic() - started
            if not server.alive:
                await asyncio.to_thread(server.start)
            passes = await settle(session, server)
            full = await evaluate(session, server, True)
            outcome = await read_outcome(session, server, stream.contracts, opts.read_concurrency)
            replay_events, replay_dups = await replay(session, server, stream, opts, rng)
            after = await evaluate(session, server, False)
    finally:
        await asyncio.to_thread(server.stop)
    acknowledged = {(e["source"], e["event_id"]) for i in ledger.acked_batches for e in stream.batches[i]}
    store = await asyncio.to_thread(check_store, database_url, acknowledged)
    return RunResult(ledger, fault_log, store, outcome, passes, full, after, replay_events, replay_dups,
                     server.starts - 1, ingest_seconds, time.monotonic() - started)


async def replay(session: aiohttp.ClientSession, server: Server, stream: Stream, opts: Options,
                 rng: random.Random) -> tuple[int, int]:
    """Send acknowledged batches again, as sent and mixed into a new batch: all must come back duplicates."""
    picked = rng.sample(range(len(stream.batches)), min(opts.replay_batches, len(stream.batches)))
    mixed = rng.sample([e for b in stream.batches for e in b], min(opts.batch_size, stream.events))
    bodies = [stream.bodies[i] for i in picked] + [orjson.dumps(mixed)]
    sent = dups = 0
    for body in bodies:
        status, answer = await request(session, "POST", server.base + EVENTS_PATH, body)
        if status != 200:
            raise HarnessError(f"replay: HTTP {status}: {answer}")
        sent += int(answer["accepted"]) + int(answer["duplicates"]) + len(answer["rejected"])
        dups += int(answer["duplicates"])
    return sent, dups

