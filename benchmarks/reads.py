"""Reads on the scale store: the p95 of sequential requests to each read endpoint and the first web page, the
median of `runs` runs of them."""
from __future__ import annotations

import random
import time
from contextlib import nullcontext
from typing import Any

from benchmarks.bench import Bench, each, median, p
from benchmarks.client import Client
from benchmarks.profiler import Profile
from benchmarks.report import Row

P95_TARGET_MS = 300.0
WARMUP = 3


async def measure(bench: Bench, kind: str, client: Client, pid: int) -> None:
    rng = random.Random(1)
    ids = list(bench.data.contract_ids)
    paths = {
        "contract trace": lambda: f"/api/v1/contracts/{rng.choice(ids)}",
        "page of open mismatches (100)": lambda: "/api/v1/mismatches?state=open&limit=100",
        "assurance summary": lambda: "/api/v1/assurance",
        "/metrics scrape": lambda: "/metrics",
        "first web page /": lambda: "/",
    }
    for name, path in paths.items():
        p95s, p50s = [], []
        top: list[str] = []
        for r in range(bench.opts.runs):
            times: list[float] = []
            profiling: Any = Profile(pid) if bench.opts.profile and r == 0 else nullcontext(None)
            with profiling as prof:
                for i in range(bench.opts.read_requests + WARMUP):
                    started = time.perf_counter()
                    status, _ = await client.get(path())
                    elapsed = time.perf_counter() - started
                    if status != 200:
                        raise RuntimeError(f"GET {path()}: {status}")
                    if i >= WARMUP:
                        times.append(elapsed * 1000)
            top = prof.top() if prof else top
            p95s.append(p(times, 0.95))
            p50s.append(p(times, 0.5))
        p95 = median(p95s)
        bench.add(Row("reads", kind, f"p95 {name}", p95, "ms", f"≤ {P95_TARGET_MS:.0f} ms", ok=p95 <= P95_TARGET_MS,
                      runs=len(p95s), note=f"{bench.data.contracts:,} contracts; {bench.opts.read_requests} requests "
                      f"a run; runs {each(p95s, '{:.1f}')} ms; p50 {median(p50s):.1f} ms", profile=top))
