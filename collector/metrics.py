"""Prometheus metrics of the collector. Counters live in the process; the store-backed gauges are read
from the store at scrape time, so every replica reports the same truth."""
from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import Engine, func, select

from collector import conventions as c
from collector.assurance import open_totals
from collector.lag_counts import LAG_BUCKETS, LagCounts
from collector.money import SCALE
from collector.outage import store_unavailable
from collector.schema import contract_totals


def _bare(name: str) -> str:
    """prometheus_client adds the _total suffix of a counter itself."""
    return name.removesuffix("_total")


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.ingested = Counter(_bare(c.METRIC_EVENTS_INGESTED), "Events stored, by source and type.",
                                ["source", "type"], registry=registry)
        self.rejected = Counter(_bare(c.METRIC_EVENTS_REJECTED), "Events refused, by source and the field at fault.",
                                ["source", "reason"], registry=registry)
        self.duplicates = Counter(_bare(c.METRIC_EVENTS_DUPLICATE), "Replays of stored events, by source.",
                                  ["source"], registry=registry)
        self.lag = LagHistogram()
        registry.register(self.lag)


class LagHistogram(Collector):
    """revtrace_stage_lag_seconds by hop and entity, from the counts the passes bring (see LagCounts)."""

    def __init__(self) -> None:
        self._counts = LagCounts()
        self._lock = threading.Lock()

    def add(self, counts: LagCounts) -> None:
        with self._lock:
            self._counts.merge(counts)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(c.METRIC_STAGE_LAG, "Seconds from one stage to the next, each hop once "
                                       "per contract.", labels=["hop", "entity"])
        with self._lock:
            rows = [(key, list(counts), self._counts.sums[key]) for key, counts in self._counts.buckets.items()]
        for (hop, entity), counts, total in sorted(rows):
            cumulative, running = [], 0
            for bound, n in zip(LAG_BUCKETS, counts, strict=True):
                running += n
                cumulative.append((floatToGoString(bound), running))
            family.add_metric([hop, entity], cumulative, total)
        yield family


class StoreGauges(Collector):
    """revtrace_contracts, revtrace_open_mismatches and revtrace_amount_at_risk, queried in collect() from the
    running totals: a scrape reads the same few rows at any store size. With the store out of reach the scrape
    still answers, with revtrace_store_up 0 and the process's own counters, which say what the outage
    refused; the store's gauges are left out rather than reported as zero."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(c.METRIC_STORE_UP, "1 when the store answered this scrape, else 0.")
        try:
            families = self._from_store()
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _from_store(self) -> list[Metric]:
        by_stage = GaugeMetricFamily(c.METRIC_CONTRACTS, "Contracts by the furthest stage reached.", labels=["stage"])
        open_n = GaugeMetricFamily(c.METRIC_OPEN_MISMATCHES, "Open mismatches by kind.", labels=["kind"])
        risk = GaugeMetricFamily(c.METRIC_AMOUNT_AT_RISK, "Money at risk in open mismatches.",
                                 labels=["kind", "currency"])
        with self.engine.connect() as conn:
            stages: dict[str, int] = {stage: int(n) for stage, n in conn.execute(
                select(contract_totals.c.stage, func.sum(contract_totals.c.contracts))
                .group_by(contract_totals.c.stage))}
            rows = open_totals(conn)
        for stage in c.STAGES:
            by_stage.add_metric([stage], stages.get(stage, 0))
        counts = dict.fromkeys(c.MISMATCH_KINDS, 0)
        for kind, cur, n, micros, _ in rows:
            counts[kind] = counts.get(kind, 0) + n
            risk.add_metric([kind, cur], micros / SCALE)
        for kind, n in counts.items():
            open_n.add_metric([kind], n)
        return [by_stage, open_n, risk]
