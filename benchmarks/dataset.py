"""The benchmark's data: the simulated landscape (probes/) written once as NDJSON shards plus the count of
each expected mismatch kind, cached in a temp dir so that later runs skip the generation.

The simulator builds ~7,000 contracts/s on one core; a million would take minutes, so the index range is
split across worker processes. Each contract draws from its own seed, so the shards hold the same contracts
as one sequential run would."""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from probes.config import LandscapeConfig
from probes.landscape import iter_contracts

SEED = 7
FAULT_RATE = 0.1
CACHE_ROOT = Path(os.environ.get("REVTRACE_BENCH_CACHE", Path(tempfile.gettempdir()) / "revtrace-bench"))
# The simulator keeps every deadline at least a day away from `now`; a cache younger than this is judged
# at wall-clock time with the same ground truth.
MAX_AGE = timedelta(hours=12)


@dataclass(frozen=True)
class Dataset:
    contracts: int
    now: datetime
    shards: tuple[Path, ...]
    events: int
    truth: dict[str, int]
    contract_ids: tuple[str, ...]

    def batches(self, size: int) -> Iterator[list[bytes]]:
        """The events in delivery order, `size` NDJSON lines at a time."""
        batch: list[bytes] = []
        for shard in self.shards:
            with shard.open("rb") as fp:
                for line in fp:
                    batch.append(line.rstrip(b"\n"))
                    if len(batch) == size:
                        yield batch
                        batch = []
        if batch:
            yield batch


def config(contracts: int, now: datetime, first_index: int = 0, seed: int = SEED) -> LandscapeConfig:
    return LandscapeConfig(now=now, seed=seed, contracts=contracts, fault_rate=FAULT_RATE, first_index=first_index)


def events_of(contracts: int, now: datetime, first_index: int, seed: int = SEED) -> list[dict[str, Any]]:
    """A small slice of the landscape in memory (new events for the incremental pass, the latency feed)."""
    return [ev for run in iter_contracts(config(contracts, now, first_index, seed)) for ev in run.events]


def _write_shard(args: tuple[Path, int, int, datetime]) -> dict[str, Any]:
    path, first, count, now = args
    truth: Counter[str] = Counter()
    events = 0
    ids: list[str] = []
    tmp = path.with_suffix(".part")
    with tmp.open("wb") as fp:
        for run in iter_contracts(config(count, now, first)):
            for ev in run.events:
                fp.write(orjson.dumps(ev, option=orjson.OPT_APPEND_NEWLINE))
            events += len(run.events)
            truth.update(m.kind for m in run.expected)
            if run.contract_id is not None and len(ids) < 2000:
                ids.append(run.contract_id)
    tmp.rename(path)
    return {"events": events, "truth": dict(truth), "ids": ids}


def load(contracts: int, workers: int | None = None, log: Any = print) -> Dataset:
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    wall = datetime.now(UTC)
    for meta_path in sorted(CACHE_ROOT.glob(f"n{contracts}-*/meta.json"), reverse=True):
        meta = orjson.loads(meta_path.read_bytes())
        now = datetime.fromisoformat(meta["now"])
        if timedelta(0) <= wall - now < MAX_AGE:
            log(f"  data: cached {meta_path.parent}")
            return _dataset(contracts, now, meta_path.parent, meta)
    now = wall.replace(minute=0, second=0, microsecond=0)
    folder = CACHE_ROOT / f"n{contracts}-{now:%Y%m%dT%H}"
    folder.mkdir(exist_ok=True)
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    per = -(-contracts // workers)
    jobs = [(folder / f"events-{i:02d}.ndjson", i * per, min(per, contracts - i * per), now)
            for i in range(workers) if i * per < contracts]
    log(f"  data: simulating {contracts:,} contracts in {len(jobs)} processes into {folder}")
    with ProcessPoolExecutor(len(jobs)) as pool:
        parts = list(pool.map(_write_shard, jobs))
    truth: Counter[str] = Counter()
    for p in parts:
        truth.update(p["truth"])
    meta = {"now": now.isoformat(), "shards": [j[0].name for j in jobs], "events": sum(p["events"] for p in parts),
            "truth": dict(sorted(truth.items())), "ids": [i for p in parts for i in p["ids"]]}
    (folder / "meta.json").write_bytes(orjson.dumps(meta))
    return _dataset(contracts, now, folder, meta)


def _dataset(contracts: int, now: datetime, folder: Path, meta: dict[str, Any]) -> Dataset:
    return Dataset(contracts, now, tuple(folder / s for s in meta["shards"]), meta["events"], meta["truth"],
                   tuple(meta["ids"]))
