"""What a user can see after a run, read through the API, and how two runs' outcomes differ."""
from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp

from benchmarks.crash_api import HarnessError, pages, request
from benchmarks.server import Server

MismatchKey = tuple[str, str, str, str, tuple[str, ...]]


def _mismatch_key(m: dict[str, Any]) -> MismatchKey:
    return (m["kind"], m["contract_id"] or "", m["amount_at_risk"], m["currency"], tuple(sorted(m["evidence"])))


@dataclass
class Outcome:
    traces: dict[str, Any]
    contracts: dict[str, Any]
    open_mismatches: Counter[MismatchKey]
    closed: int  # mismatches that opened and closed again: not compared, since arrival order decides them


async def read_outcome(session: aiohttp.ClientSession, server: Server, contract_ids: list[str],
                       concurrency: int) -> Outcome:
    """Everything a user can see of the result: each contract's trace (closed mismatches left out: when a
    transient one opened and closed depends on arrival order), the contract list and the open mismatches."""
    traces: dict[str, Any] = {}
    todo = iter(contract_ids)

    async def reader() -> None:
        for cid in todo:
            status, trace = await request(session, "GET", f"{server.base}/api/v1/contracts/{cid}")
            if status == 404:
                traces[cid] = None
                continue
            if status != 200:
                raise HarnessError(f"GET contract {cid}: HTTP {status}: {trace}")
            opened = sorted(_mismatch_key(m) for m in trace["mismatches"] if m["state"] == "open")
            traces[cid] = {"stage": trace.get("stage"), "stages": trace["stages"], "lags": trace["lags"],
                           "events": trace["events"], "open_mismatches": opened}

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(reader())
    rows = await pages(session, f"{server.base}/api/v1/contracts?limit=1000")
    open_ = await pages(session, f"{server.base}/api/v1/mismatches?state=open&limit=1000")
    closed = await pages(session, f"{server.base}/api/v1/mismatches?state=closed&limit=1000")
    return Outcome(traces, {r["contract_id"]: r for r in rows}, Counter(_mismatch_key(m) for m in open_),
                   len(closed))


def compare(crash: Outcome, reference: Outcome, limit: int = 5) -> list[str]:
    """What differs between two outcomes, one line per sort of difference; empty when equal."""
    out: list[str] = []
    for name in ("traces", "contracts"):
        a, b = getattr(crash, name), getattr(reference, name)
        differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if differing:
            out.append(f"{len(differing)} {name} differ, e.g. {differing[:limit]}")
    extra = crash.open_mismatches - reference.open_mismatches
    missing = reference.open_mismatches - crash.open_mismatches
    if extra:
        out.append(f"{sum(extra.values())} open mismatches only after the crashes, e.g. {list(extra)[:limit]}")
    if missing:
        out.append(f"{sum(missing.values())} open mismatches only without crashes, e.g. {list(missing)[:limit]}")
    return out
