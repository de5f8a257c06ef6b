"""Detection latency: the scheduler at its default, a steady feed of new events, and among them probe
contracts whose mismatch is true the moment they are stored (an invoice over-billing its order; a second
posting of one invoice). The delay runs from the acknowledgement of the probe's batch to the mismatch being
open in GET /api/v1/mismatches."""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from benchmarks import dataset
from benchmarks.bench import Bench, each, median, p
from benchmarks.client import Client, array_body
from benchmarks.report import Row

P99_TARGET_S = 5.0
FEED_INDEX = 60_000_000
FEED_STRIDE = 1_000_000  # each run feeds contracts of its own
TICK = 0.1
PROBE_EVERY = 0.5
POLL = 0.05


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def probe(tag: str, i: int) -> tuple[str, str, bytes]:
    """(contract_id, kind, body): an order with an over-billing invoice, or an invoice posted twice."""
    now = datetime.now(UTC)
    cid = f"LAT-{tag}-{i}"
    order = {"event_id": f"{cid}-o", "source": "crm", "type": "order.booked", "occurred_at": _iso(now - timedelta(
        hours=2)), "contract_id": cid, "refs": {"order_id": f"{cid}-SO"}, "amount": "100.00", "currency": "USD",
        "entity": "US01"}
    billed = "150.00" if i % 2 == 0 else "100.00"
    invoice = {"event_id": f"{cid}-i", "source": "billing", "type": "invoice.issued",
               "occurred_at": _iso(now - timedelta(minutes=110)), "contract_id": cid,
               "refs": {"order_id": f"{cid}-SO", "invoice_id": f"{cid}-INV"}, "amount": billed, "tax_amount": "0.00",
               "currency": "USD", "entity": "US01", "due_at": _iso(now + timedelta(days=30))}
    evs: list[dict[str, Any]] = [order, invoice]
    if i % 2 == 0:
        kind = "amount_mismatch"
    else:
        kind = "duplicate_posting"
        for n in (1, 2):
            evs.append({"event_id": f"{cid}-p{n}", "source": "erp", "type": "posting.created",
                        "occurred_at": _iso(now - timedelta(minutes=100 - n)), "contract_id": cid,
                        "refs": {"invoice_id": f"{cid}-INV", "posting_id": f"{cid}-JE{n}"}, "amount": "100.00",
                        "tax_amount": "0.00", "currency": "USD", "entity": "US01"})
    return cid, kind, array_body([orjson.dumps(e) for e in evs])


@dataclass
class LatencyRun:
    delays: list[float]
    missing: int  # probes never seen open within 60 s
    rate: float  # events a second the feed delivered


async def measure(bench: Bench, kind: str, client: Client, tag: str) -> None:
    """`runs` runs one after another on the same server; p50 and p99 are the medians of the runs'."""
    runs = [await _run(bench, client, f"{tag}r{r}", FEED_INDEX + r * FEED_STRIDE) for r in range(bench.opts.runs)]
    seen = [r for r in runs if r.delays]
    p50s, p99s = [p(r.delays, 0.5) for r in seen], [p(r.delays, 0.99) for r in seen]
    missing = sum(r.missing for r in runs)
    note = (f"{sum(len(r.delays) for r in runs)} probes in {len(runs)} runs; feed "
            f"{each(r.rate for r in runs)} ev/s" + (f"; {missing} never seen within 60 s" if missing else ""))
    complete = len(seen) == len(runs)
    bench.add(Row("latency", kind, "detection delay p50", median(p50s) if complete else None, "s", runs=len(runs),
                  note=f"runs {each(p50s, '{:.3f}')} s; {note}"))
    p99 = median(p99s) if complete else None
    bench.add(Row("latency", kind, "detection delay p99", p99, "s", f"≤ {P99_TARGET_S:.0f} s",
                  ok=p99 is not None and p99 <= P99_TARGET_S and not missing, runs=len(runs),
                  note=f"runs {each(p99s, '{:.3f}')} s; {note}"))


async def _run(bench: Bench, client: Client, tag: str, feed_index: int) -> LatencyRun:
    opts = bench.opts
    per_tick = int(opts.latency_rate * TICK)
    need = int(opts.latency_rate * opts.latency_seconds) + per_tick
    feed = [orjson.dumps(e) for e in dataset.events_of(need // 4 + 100, bench.data.now, feed_index)][:need]
    delays: list[float] = []
    sent = 0
    stop = asyncio.Event()

    async def watch(cid: str, mkind: str, acked: float) -> None:
        path = f"/api/v1/mismatches?contract_id={cid}&kind={mkind}&state=open"
        while not stop.is_set():
            if (await client.get_json(path))["items"]:
                delays.append(time.perf_counter() - acked)
                return
            await asyncio.sleep(POLL)

    async def feeder() -> None:
        nonlocal sent
        start = time.perf_counter()
        for i in range(0, len(feed), per_tick):
            due = start + (i // per_tick) * TICK
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            answer = await client.post_events(array_body(feed[i:i + per_tick]))
            sent += answer["accepted"] + answer["duplicates"]
            if time.perf_counter() - start >= opts.latency_seconds:
                break

    watchers: list[asyncio.Task[None]] = []

    async def prober() -> None:
        i = 0
        start = time.perf_counter()
        while time.perf_counter() - start < opts.latency_seconds:
            cid, mkind, body = probe(tag, i)
            await client.post_events(body)
            watchers.append(asyncio.create_task(watch(cid, mkind, time.perf_counter())))
            i += 1
            await asyncio.sleep(PROBE_EVERY)

    started = time.perf_counter()
    await asyncio.gather(feeder(), prober())
    fed_s = time.perf_counter() - started
    with contextlib.suppress(TimeoutError):  # a probe never seen is counted, not raised
        await asyncio.wait_for(asyncio.gather(*watchers), timeout=60)
    stop.set()
    await asyncio.gather(*watchers, return_exceptions=True)
    return LatencyRun(delays, len(watchers) - len(delays), sent / fed_s)
