"""Ingest through POST /api/v1/events: 10,000-event batches from concurrent clients, a batch of replays
against a new one, and single events one after another over one keep-alive connection."""
from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from benchmarks.client import Client, array_body

BATCH = 10_000


@dataclass
class Loaded:
    events: int
    accepted: int
    duplicates: int
    rejected: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def post_all(client: Client, bodies: Iterable[tuple[int, bytes]], clients: int) -> Loaded:
    """Posts (size, body) pairs from `clients` concurrent senders; the rate counts every event sent."""
    it: Iterator[tuple[int, bytes]] = iter(bodies)
    total = Loaded(0, 0, 0, 0, 0.0)

    async def sender() -> None:
        for size, body in it:
            answer = await client.post_events(body)
            total.events += size
            total.accepted += answer["accepted"]
            total.duplicates += answer["duplicates"]
            total.rejected += len(answer["rejected"])

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(clients)))
    total.seconds = time.perf_counter() - started
    return total


def bodies_of(batches: Iterable[Sequence[bytes]]) -> Iterator[tuple[int, bytes]]:
    for b in batches:
        yield len(b), array_body(b)


async def timed_post(client: Client, body: bytes) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    answer = await client.post_events(body)
    return time.perf_counter() - started, answer


async def replay_vs_new(client: Client, sent: Sequence[bytes], new: Sequence[bytes]) -> dict[str, float]:
    """Seconds for one batch of replays (every event stored already) and for one of new events, alternating."""
    replay_s, new_s = [], []
    for old_body, new_body in zip(sent, new, strict=False):
        s, a = await timed_post(client, old_body)
        if a["accepted"]:
            raise RuntimeError(f"a replayed batch was accepted as new: {a['accepted']} events")
        replay_s.append(s)
        s, _ = await timed_post(client, new_body)
        new_s.append(s)
    return {"replay": statistics.median(replay_s), "new": statistics.median(new_s)}


async def single_events(client: Client, events: Sequence[bytes], seconds: float) -> float:
    """Events/s, each posted alone and answered before the next is sent, on one keep-alive connection."""
    started = time.perf_counter()
    n = 0
    for line in events:
        await client.post_events(b"[" + line + b"]")
        n += 1
        if time.perf_counter() - started >= seconds:
            break
    return n / (time.perf_counter() - started)


async def round_trips(client: Client, seconds: float) -> float:
    """GET /healthz/s, one after another on one keep-alive connection: what HTTP alone allows one client
    that waits for each answer, the limit of single events once the disk is out of it."""
    started = time.perf_counter()
    n = 0
    while time.perf_counter() - started < seconds:
        await client.get("/healthz")
        n += 1
    return n / (time.perf_counter() - started)


def renamed(lines: Sequence[bytes], tag: str) -> list[bytes]:
    """The same events under new ids, so that a measure can send them again as new."""
    out = []
    for line in lines:
        ev = orjson.loads(line)
        ev["event_id"] = f"{tag}-{ev['event_id']}"
        out.append(orjson.dumps(ev))
    return out
