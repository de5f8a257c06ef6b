"""Reads on the scale store: the p95 of sequential requests to each read endpoint and the first web page."""
from __future__ import annotations

import random
import time
from contextlib import nullcontext
from typing import Any

from benchmarks.bench import Bench, p
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
        times: list[float] = []
        profiling: Any = Profile(pid) if bench.opts.profile else nullcontext(None)
        with profiling as prof:
            for i in range(bench.opts.read_requests + WARMUP):
                started = time.perf_counter()
                status, _ = await client.get(path())
                elapsed = time.perf_counter() - started
                if status != 200:
                    raise RuntimeError(f"GET {path()}: {status}")
                if i >= WARMUP:
                    times.append(elapsed * 1000)
        p95 = p(times, 0.95)
        bench.add(Row("reads", kind, f"p95 {name}", p95, "ms", f"≤ {P95_TARGET_MS:.0f} ms", ok=p95 <= P95_TARGET_MS,
                      runs=len(times), note=f"{bench.data.contracts:,} contracts; p50 {p(times, 0.5):.1f} ms",
                      profile=prof.top() if prof else []))
