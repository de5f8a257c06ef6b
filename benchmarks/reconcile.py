"""Reconciliation at scale: a store of N contracts loaded through the API, a full pass from a store never
evaluated and again over an evaluated one, the cross-check of the counts per kind, and the incremental pass
after 10,000 new events, whose cost should follow the change and not the size of the store."""
from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import orjson

from benchmarks import dataset
from benchmarks.bench import Bench, kinds_of, median
from benchmarks.client import Client, array_body
from benchmarks.ingest import BATCH, bodies_of, post_all
from benchmarks.profiler import Profile
from benchmarks.report import Row
from benchmarks.server import Server

FULL_TARGET_S = 10.0
FULL_VS_JOIN = 5.0
INCREMENTAL_TARGET_S = 1.0
NEW_EVENTS = 10_000
# New contracts for the incremental passes are drawn far beyond the store's own index range.
NEW_INDEX = 50_000_000


def _profiled(bench: Bench, srv: Server) -> Any:
    return Profile(srv.pid) if bench.opts.profile else nullcontext(None)


async def load_store(bench: Bench, kind: str, srv: Server, client: Client, data: dataset.Dataset,
                     label: str) -> None:
    with _profiled(bench, srv) as prof:
        loaded = await post_all(client, bodies_of(data.batches(BATCH)), bench.opts.clients)
    limit = bench.insert_limit.get(kind)
    bench.add(Row("ingest", kind, f"load of {label} ({loaded.events:,} events, {bench.opts.clients} clients)",
                  loaded.rate, "ev/s", "≥ 0.5× raw insert", ok=None if limit is None else loaded.rate >= 0.5 * limit,
                  limit=limit, limit_name="raw insert", note=f"{loaded.seconds:.0f} s; {loaded.duplicates:,} replays",
                  profile=prof.top() if prof else []))


async def full_passes(bench: Bench, kind: str, srv: Server, client: Client, join_s: float | None) -> dict[str, int]:
    """Times the first full pass and repeats; answers revtrace's open mismatches per kind after it."""
    n = bench.data.contracts
    with _profiled(bench, srv) as prof:
        started = time.perf_counter()
        first = await client.evaluate(True)
        first_s = time.perf_counter() - started
    ok = first_s <= FULL_TARGET_S and (join_s is None or first_s <= FULL_VS_JOIN * join_s)
    bench.add(Row("reconcile", kind, f"full evaluate, first pass, {n:,} contracts", first_s, "s",
                  f"≤ {FULL_TARGET_S:.0f} s and ≤ {FULL_VS_JOIN:.0f}× join", ok=ok, limit=join_s,
                  limit_name="DuckDB join", note=f"{first['evaluated']:,} evaluated, {first['opened']:,} opened",
                  profile=prof.top() if prof else []))
    counts = kinds_of(await client.get_json("/api/v1/assurance"))
    again: list[float] = []
    for _ in range(bench.opts.runs):
        if again and sum(again) + again[-1] > bench.opts.repeat_budget_s:
            break
        started = time.perf_counter()
        res = await client.evaluate(True)
        again.append(time.perf_counter() - started)
        if res["opened"] or res["closed"]:
            bench.notes.append(f"{kind}: a repeated full pass opened {res['opened']} and closed {res['closed']}")
    s = median(again)
    ok = s <= FULL_TARGET_S and (join_s is None or s <= FULL_VS_JOIN * join_s)
    bench.add(Row("reconcile", kind, f"full evaluate, evaluated store, {n:,} contracts", s, "s",
                  f"≤ {FULL_TARGET_S:.0f} s and ≤ {FULL_VS_JOIN:.0f}× join", ok=ok, limit=join_s,
                  limit_name="DuckDB join", runs=len(again),
                  note="" if len(again) == bench.opts.runs else f"{len(again)} run(s): a pass takes {again[0]:.0f} s"))
    return counts


def crosscheck(bench: Bench, kind: str, revtrace: dict[str, int]) -> None:
    cc = bench.crosscheck
    truth = bench.data.truth
    joined = bench.join_counts if cc is not None else {}
    kinds = sorted(set(truth) | set(revtrace) | set(joined))
    bad = [k for k in kinds if not (truth.get(k, 0) == revtrace.get(k, 0) == joined.get(k, 0))]
    detail = "; ".join(f"{k}: revtrace {revtrace.get(k, 0)}, join {joined.get(k, 0)}, truth {truth.get(k, 0)}"
                       for k in bad)
    bench.add(Row("reconcile", kind, f"open mismatches per kind (all {len(kinds)} kinds) = join = truth",
                  float(sum(revtrace.values())), "", "identical counts", ok=not bad,
                  note=detail or f"{sum(truth.values()):,} expected, all {len(kinds)} kinds equal"))
    bench.counts_seen[kind] = revtrace


def new_batch(now: Any, round_: int) -> bytes:
    evs = dataset.events_of(2600, now, NEW_INDEX + round_ * 10_000)[:NEW_EVENTS]
    return array_body([orjson.dumps(e) for e in evs])


async def incremental(bench: Bench, kind: str, srv: Server, client: Client, contracts: int, base: int) -> None:
    """`runs` rounds of 10,000 new events then one incremental pass, timed alone."""
    times: list[float] = []
    evaluated: list[int] = []
    with _profiled(bench, srv) as prof:
        for r in range(bench.opts.runs):
            answer = await client.post_events(new_batch(bench.data.now, base + r))
            if answer["accepted"] == 0:
                raise RuntimeError("the new events were not new")
            started = time.perf_counter()
            res = await client.evaluate(False)
            times.append(time.perf_counter() - started)
            evaluated.append(res["evaluated"])
    s = median(times)
    bench.add(Row("reconcile", kind, f"incremental evaluate after {NEW_EVENTS:,} new events, {contracts:,} contracts",
                  s, "s", f"≤ {INCREMENTAL_TARGET_S:.0f} s", ok=s <= INCREMENTAL_TARGET_S, runs=len(times),
                  note=f"{median(evaluated):,.0f} contracts evaluated", profile=prof.top() if prof else []))
