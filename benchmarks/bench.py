"""What every section shares: the options, the data, the limits measured so far and the rows of the table."""
from __future__ import annotations

import statistics
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.crosscheck import CrossCheck
from benchmarks.dataset import Dataset
from benchmarks.report import Row

SECTIONS = ("ingest", "reconcile", "latency", "reads", "memory")


@dataclass(frozen=True)
class Options:
    contracts: int = 1_000_000
    small_contracts: int = 100_000  # the second store size of the incremental pass
    runs: int = 3
    dbs: tuple[str, ...] = ("sqlite", "postgresql")
    only: tuple[str, ...] = SECTIONS
    ingest_events: int = 200_000  # per run of the ingest measure, on a fresh store
    clients: int = 4
    latency_seconds: float = 45.0
    latency_rate: int = 2000
    read_requests: int = 60
    single_seconds: float = 5.0
    profile: bool = True


@dataclass
class Bench:
    opts: Options
    data: Dataset
    rows: list[Row] = field(default_factory=list)
    insert_limit: dict[str, float] = field(default_factory=dict)
    parse_limit: dict[str, float] = field(default_factory=dict)
    commit_limit: dict[str, float] = field(default_factory=dict)
    crosscheck: CrossCheck | None = None
    join_counts: dict[str, int] = field(default_factory=dict)
    join_seconds: float | None = None
    counts_seen: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        v = "" if row.verdict == "" else f"  [{row.verdict}]"
        print(f"  {row.section:10} {row.db:10} {row.figure}: {row.value if row.value is None else round(row.value, 4)}"
              f" {row.unit}{v} {row.note}", flush=True)
        if row.profile and row.verdict == "MISS":  # at once, so that an interrupted run keeps it
            print("\n".join("      " + line for line in row.profile), flush=True)
        return row

    def failed(self, section: str, db: str, exc: BaseException) -> None:
        traceback.print_exception(exc, file=sys.stdout)
        self.add(Row(section, db, "section failed", None, "", note=f"{type(exc).__name__}: {exc}"[:200]))

    def wants(self, section: str) -> bool:
        return section in self.opts.only


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def each(values: Iterable[float], fmt: str = "{:,.0f}") -> str:
    """The runs' figures, for a note beside their median."""
    return ", ".join(fmt.format(v) for v in values)


def p(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1), nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def kinds_of(assurance: dict[str, Any]) -> dict[str, int]:
    return {k: int(v["count"]) for k, v in sorted(assurance["open_mismatches"].items()) if int(v["count"])}
