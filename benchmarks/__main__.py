"""`python -m benchmarks`: every figure of the performance targets, each beside this machine's raw limit on
the same data, measured in the same run; the table is printed and, with --write, kept as markdown.

    python -m benchmarks                     # 1,000,000 contracts, SQLite and PostgreSQL, 3 runs
    python -m benchmarks --quick             # 20,000 contracts: a smoke run of every section
    python -m benchmarks --db sqlite --only ingest,reads --write benchmarks/RESULTS.md
"""
from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import dataset, floor, latency, limits, reads, reconcile
from benchmarks.bench import SECTIONS, Bench, Options, median
from benchmarks.client import Client
from benchmarks.crosscheck import CrossCheck
from benchmarks.ingest import BATCH, bodies_of, post_all, renamed, replay_vs_new, round_trips, single_events
from benchmarks.machine import facts
from benchmarks.profiler import Profile
from benchmarks.report import Row, markdown, text
from benchmarks.scratch import KINDS, PG_ADMIN, Store, scratch
from benchmarks.server import Server

RSS_TARGET = 1024 * 2**20


def parse(argv: list[str]) -> tuple[Options, str | None]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contracts", type=int, default=1_000_000, help="contracts in the scale store")
    ap.add_argument("--small", type=int, default=None, help="the smaller store of the incremental pass "
                    "(default: contracts/10)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (the median is shown)")
    ap.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    ap.add_argument("--latency-seconds", type=float, default=45.0)
    ap.add_argument("--no-profile", action="store_true", help="do not run py-spy on the server")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 20,000 contracts, shorter measures")
    ap.add_argument("--write", metavar="FILE", help="write the table as markdown (benchmarks/RESULTS.md)")
    a = ap.parse_args(argv)
    dbs = tuple(d.strip() for d in a.db.split(",") if d.strip())
    only = tuple(s.strip() for s in a.only.split(",") if s.strip())
    for d in dbs:
        if d not in KINDS:
            ap.error(f"--db: unknown {d!r}; known: {', '.join(KINDS)}")
    for s in only:
        if s not in SECTIONS:
            ap.error(f"--only: unknown {s!r}; known: {', '.join(SECTIONS)}")
    contracts = 20_000 if a.quick and a.contracts == 1_000_000 else a.contracts
    opts = Options(contracts=contracts, small_contracts=a.small or max(1000, contracts // 10), runs=a.runs, dbs=dbs,
                   only=only, ingest_events=40_000 if a.quick else 200_000,
                   latency_seconds=15.0 if a.quick else a.latency_seconds, read_requests=50 if a.quick else 60,
                   single_seconds=3.0 if a.quick else 5.0, profile=not a.no_profile)
    return opts, a.write


def measure_limits(bench: Bench, kind: str, rows: list[tuple[object, ...]], store: Store) -> None:
    def rate(per_tx: int, seconds: float | None) -> float:
        if kind == "sqlite":
            assert store.path is not None
            return limits.sqlite_rate(rows, store.path.parent, per_tx, seconds)
        return limits.postgres_rate(rows, store.pg_dsn, per_tx, seconds)

    runs = bench.opts.runs
    bench.insert_limit[kind] = median([rate(limits.TX_ROWS, None) for _ in range(runs)])
    bench.add(Row("limit", kind, f"raw executemany INSERT, {len(rows):,} rows, 10,000 per transaction",
                  bench.insert_limit[kind], "rows/s", runs=runs,
                  note="WAL, synchronous=FULL" if kind == "sqlite" else "psycopg"))
    bench.commit_limit[kind] = median([rate(1, 3.0) for _ in range(runs)])
    bench.add(Row("limit", kind, "raw durable commits, one row per transaction", bench.commit_limit[kind], "tx/s",
                  runs=runs, note="WAL, synchronous=FULL: each waits for the disk" if kind == "sqlite"
                  else "synchronous_commit=on: each waits for the disk"))


async def ingest_section(bench: Bench, kind: str) -> None:
    opts = bench.opts
    batches = []
    for b in bench.data.batches(BATCH):
        batches.append(b)
        if len(batches) * BATCH >= opts.ingest_events:
            break
    bodies = list(bodies_of(batches))
    floor_bulk, floor_single = await floor_section(bench, kind, bodies, batches)
    runs: list[float] = []
    replay: dict[str, list[float]] = {"replay": [], "new": []}
    singles: list[float] = []
    prof_top: list[str] = []
    for r in range(opts.runs):
        with scratch(kind) as store, Server(store.url, evaluate_every=0) as srv:
            client = Client(srv.base, srv.token)
            try:
                prof = Profile(srv.pid) if opts.profile and r == 0 else None
                if prof:
                    with prof:
                        loaded = await post_all(client, bodies, opts.clients)
                    prof_top = prof.top()
                else:
                    loaded = await post_all(client, bodies, opts.clients)
                runs.append(loaded.rate)
                fresh = [renamed(b, f"r{r}") for b in batches[:3]]
                rv = await replay_vs_new(client, [body for _, body in bodies[:3]],
                                         [body for _, body in bodies_of(fresh)])
                replay["replay"].append(rv["replay"])
                replay["new"].append(rv["new"])
                singles.append(await singles_on(srv, batches, f"s{r}", opts.single_seconds))
            finally:
                await client.close()
    limit = bench.insert_limit.get(kind)
    rate = median(runs)
    bench.add(Row("ingest", kind, f"POST 10,000-event batches, {opts.clients} clients, {len(batches) * BATCH:,} events",
                  rate, "ev/s", "≥ 0.5× raw insert", ok=None if limit is None else rate >= 0.5 * limit, limit=limit,
                  limit_name="raw insert", runs=len(runs), note="fresh store, scheduler off", profile=prof_top))
    parse_limit = bench.parse_limit.get("orjson")
    bench.add(Row("ingest", kind, "same, against the JSON parse rate of the same bytes", rate, "ev/s",
                  limit=parse_limit, limit_name="orjson parse", runs=len(runs)))
    bench.add(Row("ingest", kind, "same, against a minimal server storing the same batches", rate, "ev/s",
                  limit=floor_bulk, limit_name="minimal server", runs=len(runs)))
    r_s, n_s = median(replay["replay"]), median(replay["new"])
    bench.add(Row("ingest", kind, "a batch of 10,000 replays (all duplicates)", r_s, "s", "≤ a new batch",
                  ok=r_s <= n_s, limit=n_s, limit_name="new batch", runs=len(replay["replay"]) * 3))
    s = median(singles)
    bench.add(Row("ingest", kind, "single events, one keep-alive connection", s, "ev/s", "≥ 2,000/s",
                  ok=s >= 2000, runs=len(singles), limit=bench.commit_limit.get(kind), limit_name="durable commits",
                  note="one request at a time, each answered after its commit reached the disk"))
    bench.add(Row("ingest", kind, "same, against a minimal server storing single events", s, "ev/s",
                  limit=floor_single, limit_name="minimal server", runs=len(singles)))
    if kind == "sqlite":
        await singles_without_fsync(bench, batches)


async def singles_on(srv: Server, batches: list[list[bytes]], tag: str, seconds: float) -> float:
    """Single events/s on one keep-alive connection, the last batch's events under new ids."""
    one = Client(srv.base, srv.token, connections=1)
    try:
        return await single_events(one, renamed(batches[-1][:20_000], tag), seconds)
    finally:
        await one.close()


async def floor_section(bench: Bench, kind: str, bodies: list[tuple[int, bytes]],
                        batches: list[list[bytes]]) -> tuple[float, float]:
    """The same bulk and single-event measures against a minimal server (benchmarks/floor.py): what any
    Python server on this machine gets at the least work that acknowledges events durably."""
    bulk, single = [], []
    for r in range(bench.opts.runs):
        with scratch(kind) as store, Server(store.url, name="floor", command=floor.MODULE) as srv:
            client = Client(srv.base, srv.token)
            try:
                bulk.append((await post_all(client, bodies, bench.opts.clients)).rate)
            finally:
                await client.close()
            single.append(await singles_on(srv, batches, f"f{r}", bench.opts.single_seconds))
    what = "split, orjson, executemany and commit a request; no validation, correlation, claims or marks"
    bench.add(Row("limit", kind, f"a minimal aiohttp server: the same batches, {bench.opts.clients} clients",
                  median(bulk), "ev/s", runs=len(bulk), note=f"benchmarks/floor.py: {what}"))
    bench.add(Row("limit", kind, "the same minimal server: single events, one keep-alive connection",
                  median(single), "ev/s", runs=len(single), note="each answered after its durable commit"))
    return median(bulk), median(single)


async def singles_without_fsync(bench: Bench, batches: list[list[bytes]]) -> None:
    """The same with `sqlite_synchronous: normal`, where a commit survives a crash of revtrace but not of
    the machine: what the request path costs once the disk's flush is out of it."""
    rates, trips = [], []
    for r in range(bench.opts.runs):
        with scratch("sqlite") as store, Server(store.url, evaluate_every=0,
                                                settings={"sqlite_synchronous": "normal"}) as srv:
            one = Client(srv.base, srv.token, connections=1)
            try:
                trips.append(await round_trips(one, bench.opts.single_seconds))
                events = renamed(batches[-1][:20_000], f"n{r}")
                rates.append(await single_events(one, events, bench.opts.single_seconds))
            finally:
                await one.close()
    trip = median(trips)
    bench.add(Row("limit", "-", "HTTP round trips, GET /healthz, one keep-alive connection", trip, "req/s",
                  runs=len(trips), note="the benchmark's aiohttp client against revtrace serve"))
    s = median(rates)
    bench.add(Row("ingest", "sqlite", "single events, one keep-alive connection, sqlite_synchronous: normal", s,
                  "ev/s", "≥ 2,000/s", ok=s >= 2000, runs=len(rates), limit=trip, limit_name="HTTP round trips",
                  note="each answered after its commit; the disk flush left to checkpoints"))


async def scale_section(bench: Bench, kind: str) -> None:
    """Load the scale store, evaluate it in full, cross-check, incremental; reads; latency; memory. The load
    and the first pass are measured on `runs` stores, each loaded afresh; the rest on the last of them."""
    if not any(bench.wants(s) for s in ("reconcile", "memory", "reads", "latency")):
        return
    stores = bench.opts.runs if bench.wants("reconcile") or bench.wants("memory") else 1
    firsts: list[reconcile.FirstPass] = []
    for r in range(stores - 1):
        with scratch(kind) as store, Server(store.url, evaluate_every=0, name=f"scale{r}") as srv:
            client = Client(srv.base, srv.token)
            try:
                firsts.append(await reconcile.load_and_evaluate(bench, srv, client, profile=r == 0))
            finally:
                await client.close()
    with scratch(kind) as store:
        with Server(store.url, evaluate_every=0, name="scale") as srv:
            client = Client(srv.base, srv.token)
            try:
                firsts.append(await reconcile.load_and_evaluate(bench, srv, client, profile=stores == 1))
                reconcile.first_pass_rows(bench, kind, firsts, bench.join_seconds)
                if bench.wants("reconcile"):
                    await reconcile.repeated_passes(bench, kind, client, bench.join_seconds)
                peak = srv.peak_rss
                if bench.wants("reconcile"):
                    await reconcile.incremental(bench, kind, srv, client, bench.data.contracts, 0)
                if bench.wants("reads"):
                    await reads.measure(bench, kind, client, srv.pid)
            finally:
                await client.close()
        if bench.wants("memory"):
            load_peak = max(f.load_peak for f in firsts)
            peak = max([peak] + [f.peak for f in firsts])
            bench.add(Row("memory", kind, f"server peak RSS, ingest of {bench.data.contracts:,} contracts",
                          load_peak / 2**20, "MiB", "≤ 1,024 MiB", ok=load_peak <= RSS_TARGET, runs=len(firsts),
                          note="the highest of its runs"))
            bench.add(Row("memory", kind, "server peak RSS, ingest + full evaluates", peak / 2**20, "MiB",
                          "≤ 1,024 MiB", ok=peak <= RSS_TARGET, runs=len(firsts),
                          note="the highest of its runs; psutil, sampled every 0.1 s"))
        if bench.wants("latency"):
            with Server(store.url, name="latency") as srv:
                client = Client(srv.base, srv.token)
                try:
                    await latency.measure(bench, kind, client, f"{kind}{int(time.time())}")
                finally:
                    await client.close()
                if bench.wants("memory"):
                    bench.add(Row("memory", kind, "server peak RSS, latency run (scheduler on)",
                                  srv.peak_rss / 2**20, "MiB", "≤ 1,024 MiB", ok=srv.peak_rss <= RSS_TARGET,
                                  runs=bench.opts.runs, note="through every run"))


async def small_incremental(bench: Bench, kind: str) -> None:
    small = dataset.load(bench.opts.small_contracts)
    with scratch(kind) as store, Server(store.url, evaluate_every=0, name="small") as srv:
        client = Client(srv.base, srv.token)
        try:
            loaded = await post_all(client, bodies_of(small.batches(BATCH)), bench.opts.clients)
            await client.evaluate(True)
            bench.notes.append(f"{kind}: {small.contracts:,}-contract store loaded at {loaded.rate:,.0f} ev/s")
            await reconcile.incremental(bench, kind, srv, client, small.contracts, 100)
        finally:
            await client.close()


async def run(bench: Bench) -> None:
    opts = bench.opts
    sample = []
    for b in bench.data.batches(BATCH):
        sample.append(b)
        if len(sample) * BATCH >= opts.ingest_events:
            break
    bench.parse_limit = limits.parse_rates(sample, opts.runs)
    for name, rate in bench.parse_limit.items():
        bench.add(Row("limit", "-", f"JSON parse of the same 10,000-event bodies ({name})", rate, "ev/s",
                      runs=opts.runs))
    rows = limits.rows_of([line for b in sample for line in b])
    if bench.wants("reconcile"):
        try:
            bench.crosscheck = CrossCheck(bench.data.shards)
            bench.add(Row("limit", "-", f"DuckDB: load {bench.crosscheck.events:,} events from NDJSON",
                          bench.crosscheck.load_seconds, "s", note="not part of the join time"))
            times: list[float] = []
            for _ in range(opts.runs):
                counts, s = bench.crosscheck.counts(bench.data.now + (dataset.MAX_AGE / 2))
                times.append(s)
            bench.join_counts, bench.join_seconds = counts, median(times)
            bench.add(Row("limit", "-", "DuckDB join: open mismatches per kind, all rules", bench.join_seconds, "s",
                          runs=len(times), note=f"{sum(counts.values()):,} mismatches; contracts settled in "
                          f"{bench.crosscheck.rounds} rounds of resolving refs"))
        except Exception as exc:  # the revtrace figures are still worth having without their cross-check
            bench.failed("limit", "-", exc)
    for kind in opts.dbs:
        print(f"== {kind}", flush=True)
        try:
            with scratch(kind) as store:
                measure_limits(bench, kind, rows, store)
        except Exception as exc:
            bench.failed("limit", kind, exc)
        if bench.wants("ingest"):
            try:
                await ingest_section(bench, kind)
            except Exception as exc:
                bench.failed("ingest", kind, exc)
        try:
            await scale_section(bench, kind)
        except Exception as exc:
            bench.failed("scale", kind, exc)
        if bench.wants("reconcile"):
            try:
                await small_incremental(bench, kind)
            except Exception as exc:
                bench.failed("reconcile", kind, exc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts, write = parse(argv)
    started = time.monotonic()
    machine = facts(PG_ADMIN if "postgresql" in opts.dbs else None)
    print("machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()), flush=True)
    data = dataset.load(opts.contracts)
    print(f"data: {data.contracts:,} contracts, {data.events:,} events, now {data.now.isoformat()}", flush=True)
    bench = Bench(opts, data)
    try:
        asyncio.run(run(bench))
    finally:
        if bench.crosscheck is not None:
            bench.crosscheck.close()
    print()
    print(text(bench.rows))
    for note in bench.notes:
        print(f"note: {note}")
    for r in bench.rows:
        if r.profile and r.verdict in ("MISS", "FAILED"):
            print(f"\nprofile of MISS {r.section}/{r.db}/{r.figure}:")
            print("\n".join(r.profile))
    minutes = (time.monotonic() - started) / 60
    print(f"\n{minutes:.1f} minutes")
    if write:
        command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in argv if a not in ("--write", write))
        notes = [*bench.notes, f"dataset: {data.contracts:,} contracts, {data.events:,} events "
                 f"(simulator seed {dataset.SEED}, fault rate {dataset.FAULT_RATE}); run took {minutes:.0f} min",
                 f"scratch files under {tempfile.gettempdir()}"]
        Path(write).write_text(markdown(bench.rows, machine, command.strip(), notes))
    return 0 if all(r.verdict != "FAILED" for r in bench.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
