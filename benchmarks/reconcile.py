"""Reconciliation at scale: stores of N contracts, each loaded through the API and evaluated in full from
nothing (one store per run, so that the first pass too is a median); on the last, full passes over the
evaluated store, then the incremental pass after 10,000 new events, whose cost should follow the change and
not the size of the store. Every store's open mismatches per kind are held to the join's and the truth's."""
from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import orjson

from benchmarks import dataset
from benchmarks.bench import Bench, each, kinds_of, median
from benchmarks.client import Client, array_body
from benchmarks.ingest import BATCH, Loaded, bodies_of, post_all
from benchmarks.profiler import Profile
from benchmarks.report import Row
from benchmarks.server import Server

FULL_TARGET_S = 10.0
FULL_VS_JOIN = 5.0
INCREMENTAL_TARGET_S = 1.0
NEW_EVENTS = 10_000
# New contracts for the incremental passes are drawn far beyond the store's own index range.
NEW_INDEX = 50_000_000


def _profiled(bench: Bench, srv: Server, wanted: bool = True) -> Any:
    return Profile(srv.pid) if bench.opts.profile and wanted else nullcontext(None)


@dataclass
class FirstPass:
    """One store of N contracts loaded through the API and evaluated in full for the first time."""
    loaded: Loaded
    load_profile: list[str]
    load_peak: int  # the server's peak RSS through the load
    seconds: float
    result: dict[str, Any]
    profile: list[str]
    counts: dict[str, int]  # open mismatches per kind after it
    peak: int  # the server's peak RSS through load and pass


async def load_and_evaluate(bench: Bench, srv: Server, client: Client, profile: bool) -> FirstPass:
    with _profiled(bench, srv, profile) as prof:
        loaded = await post_all(client, bodies_of(bench.data.batches(BATCH)), bench.opts.clients)
    load_profile = prof.top() if prof else []
    load_peak = srv.peak_rss
    with _profiled(bench, srv, profile) as prof:
        started = time.perf_counter()
        result = await client.evaluate(True)
        seconds = time.perf_counter() - started
    counts = kinds_of(await client.get_json("/api/v1/assurance"))
    return FirstPass(loaded, load_profile, load_peak, seconds, result, prof.top() if prof else [], counts,
                     srv.peak_rss)


def first_pass_rows(bench: Bench, kind: str, runs: Sequence[FirstPass], join_s: float | None) -> None:
    """The load and the first full pass, each the median over its stores, and the cross-check of every store."""
    n = bench.data.contracts
    limit = bench.insert_limit.get(kind)
    rate = median([r.loaded.rate for r in runs])
    bench.add(Row("ingest", kind, f"load of {n:,} contracts ({runs[0].loaded.events:,} events, "
                  f"{bench.opts.clients} clients)", rate, "ev/s", "≥ 0.5× raw insert",
                  ok=None if limit is None else rate >= 0.5 * limit, limit=limit, limit_name="raw insert",
                  runs=len(runs), note=f"each on a fresh store; {runs[0].loaded.duplicates:,} replays; "
                  f"runs {each([r.loaded.rate for r in runs])} ev/s", profile=runs[0].load_profile))
    seconds = [r.seconds for r in runs]
    _full_pass_row(bench, kind, "first pass", seconds, join_s,
                   f"each on its freshly loaded store; runs {each(seconds, '{:.1f}')} s; "
                   f"{runs[0].result['evaluated']:,} evaluated, {runs[0].result['opened']:,} opened", runs[0].profile)
    crosscheck(bench, kind, [r.counts for r in runs])


async def repeated_passes(bench: Bench, kind: str, client: Client, join_s: float | None) -> None:
    """Full passes over a store evaluated already: they must find what the first found."""
    times: list[float] = []
    for _ in range(bench.opts.runs):
        started = time.perf_counter()
        res = await client.evaluate(True)
        times.append(time.perf_counter() - started)
        if res["opened"] or res["closed"]:
            bench.notes.append(f"{kind}: a repeated full pass opened {res['opened']} and closed {res['closed']}")
    _full_pass_row(bench, kind, "evaluated store", times, join_s, f"runs {each(times, '{:.1f}')} s", [])


def _full_pass_row(bench: Bench, kind: str, which: str, seconds: Sequence[float], join_s: float | None,
                   note: str, profile: list[str]) -> None:
    """A full pass's median, held to 10 s and to 5x the DuckDB join of the same run."""
    s = median(seconds)
    ok = s <= FULL_TARGET_S and (join_s is None or s <= FULL_VS_JOIN * join_s)
    bench.add(Row("reconcile", kind, f"full evaluate, {which}, {bench.data.contracts:,} contracts", s, "s",
                  f"≤ {FULL_TARGET_S:.0f} s and ≤ {FULL_VS_JOIN:.0f}× join", ok=ok, limit=join_s,
                  limit_name="DuckDB join", runs=len(seconds), note=note, profile=profile))


def crosscheck(bench: Bench, kind: str, stores: Sequence[dict[str, int]]) -> None:
    """revtrace's open mismatches per kind, on every store, against the join's and the simulator's."""
    truth = bench.data.truth
    joined = bench.join_counts if bench.crosscheck is not None else {}
    kinds = sorted(set(truth) | {k for r in stores for k in r} | set(joined))
    bad = [f"{k}: revtrace {revtrace.get(k, 0)}, join {joined.get(k, 0)}, truth {truth.get(k, 0)}"
           for revtrace in stores for k in kinds
           if not (truth.get(k, 0) == revtrace.get(k, 0) == joined.get(k, 0))]
    last = stores[-1]
    bench.add(Row("reconcile", kind, f"open mismatches per kind (all {len(kinds)} kinds) = join = truth",
                  float(sum(last.values())), "", "identical counts", ok=not bad, runs=len(stores),
                  note="; ".join(bad)[:600] or f"{sum(truth.values()):,} expected, all {len(kinds)} kinds equal "
                  f"on each of {len(stores)} stores"))
    bench.counts_seen[kind] = last


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
                  note=f"runs {each(times, '{:.3f}')} s; {median(evaluated):,.0f} contracts evaluated",
                  profile=prof.top() if prof else []))
