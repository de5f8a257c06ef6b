"""The lag histogram built from a pass's counts exposes what prometheus_client's own Histogram does for
the same observations, bucket for bucket."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

from collector import conventions as c
from collector.lag_counts import LAG_BUCKETS, LagCounts
from collector.metrics import CollectorMetrics

LAGS = [("order_to_invoice", "US01", 0.0), ("order_to_invoice", "US01", 1.0), ("order_to_invoice", "US01", 1.5),
        ("order_to_invoice", "DE01", 86_400.0), ("invoice_to_posting", "US01", 3_600.0),
        ("invoice_to_posting", "US01", 9e9), ("invoice_to_payment", "GB01", -3.0)]


def _samples(registry: CollectorRegistry) -> list[str]:
    return sorted(line for line in generate_latest(registry).decode().splitlines()
                  if line.startswith(c.METRIC_STAGE_LAG) and "_created" not in line)


def test_counts_from_passes_expose_what_a_histogram_would() -> None:
    reference = CollectorRegistry()
    histogram = Histogram(c.METRIC_STAGE_LAG, "lags", ["hop", "entity"], buckets=LAG_BUCKETS, registry=reference)
    for hop, entity, lag in LAGS:
        histogram.labels(hop=hop, entity=entity).observe(max(lag, 0.0))

    ours = CollectorRegistry()
    metrics = CollectorMetrics(ours)
    first, second = LagCounts(), LagCounts()
    for i, lag in enumerate(LAGS):
        (first if i % 2 else second).add(*lag)
    metrics.lag.add(first)
    metrics.lag.add(second)

    assert _samples(ours) == _samples(reference)
    assert first.total + second.total == len(LAGS)
