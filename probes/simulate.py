"""`revtrace simulate`: a landscape written as NDJSON events plus a JSON ground truth, streamed."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

import orjson

from probes.config import LandscapeConfig
from probes.landscape import iter_contracts
from probes.truth import ExpectedMismatch, leakage_of, truth_document


def write_ndjson(events: Iterable[dict[str, Any]], fp: IO[bytes]) -> int:
    """One event per line; answers how many were written."""
    n = 0
    for ev in events:
        fp.write(orjson.dumps(ev, option=orjson.OPT_APPEND_NEWLINE))
        n += 1
    return n


@dataclass(frozen=True)
class SimulationSummary:
    contracts: int
    orphans: int
    events: int
    mismatches: int
    fault_counts: dict[str, int]
    leakage: dict[str, Decimal]


def simulate(config: LandscapeConfig, events_fp: IO[bytes], truth_fp: IO[bytes]) -> SimulationSummary:
    """Streams the events to `events_fp` (NDJSON) and then the ground truth to `truth_fp` (JSON); only
    the expected mismatches are held in memory."""
    truth: list[ExpectedMismatch] = []
    counts: Counter[str] = Counter()
    contracts = orphans = events = 0
    for run in iter_contracts(config):
        events += write_ndjson(run.events, events_fp)
        truth.extend(run.expected)
        if run.contract_id is None:
            orphans += 1
        else:
            contracts += 1
        if run.fault is not None:
            counts[run.fault] += 1
    doc = truth_document(truth, contracts=contracts, orphans=orphans, events=events, fault_counts=counts)
    truth_fp.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    return SimulationSummary(contracts, orphans, events, len(truth), dict(sorted(counts.items())),
                             leakage_of(truth))
