"""The assurance summary: money by stage and currency, leakage, open mismatches with the money at risk,
and hop lag percentiles. `from`/`to` select contracts by when they were ordered, so a day's summary is that day's
cohort; orphans, which belong to no contract, count only in the all-time summary."""
from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select

from collector import conventions as c
from collector.evaluate import LAG_COLUMNS
from collector.money import show_micros
from collector.schema import contract_totals, contracts, lag_buckets, mismatches, open_mismatch_totals
from collector.timeutil import to_us


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


def _cohort_lags(conn: Connection, column: Any, in_range: Any) -> dict[str, Any]:
    values = sorted(conn.execute(select(column).where(in_range, column.is_not(None))).scalars())
    return {"count": len(values), **{name: percentile(values, q) for name, q in QUANTILES.items()}}


Stretch = tuple[float | None, int]  # a bucket's lower bound (None: from the lowest value) and its count
# A walk longer than this first compares the ends of its bucket: a bucket of one repeated value (lags of 0
# where invoices go out with the order) answers without stepping over its entries.
SHORT_WALK = 64


def _indexed_lags(conn: Connection, column: Any, buckets: list[Stretch] | None = None) -> dict[str, Any]:
    """Nearest-rank percentiles read off the column's index. `buckets` (lag_buckets' counts, lowest first)
    say which bucket holds each rank, so one walk steps over one bucket's entries at most, from whichever
    end of it is nearer; without them the whole index is one bucket, counted here."""
    if buckets is None:
        n = int(conn.execute(select(func.count()).where(column.is_not(None))).scalar_one())
        buckets = [(None, n)] if n else []
    n = sum(k for _, k in buckets)
    out: dict[str, Any] = {"count": n}
    for name, q in QUANTILES.items():
        if n == 0:
            out[name] = None
            continue
        rank = max(1, math.ceil(q * n))
        below, i = 0, 0
        while rank > below + buckets[i][1]:
            below += buckets[i][1]
            i += 1
        above = buckets[i + 1][0] if i + 1 < len(buckets) else None
        out[name] = _ranked(conn, column, buckets[i], above, rank - below)
    return out


def _ranked(conn: Connection, column: Any, bucket: Stretch, above: float | None, r: int) -> Any:
    """The r-th lowest value of the bucket, which holds the column's values from its bound up to `above`."""
    lo, k = bucket
    inside = select(column).where(column.is_not(None), *([column >= lo] if lo is not None else []),
                                  *([column < above] if above is not None else [])).limit(1)
    up, down = inside.order_by(column), inside.order_by(column.desc())
    if min(r - 1, k - r) > SHORT_WALK:
        lowest, highest = conn.execute(up).scalar_one(), conn.execute(down).scalar_one()
        if lowest == highest:
            return lowest
    return conn.execute(up.offset(r - 1) if r - 1 <= k - r else down.offset(k - r)).scalar_one()


def lag_buckets_of(conn: Connection) -> dict[str, list[Stretch]]:
    """Each hop's non-empty lag buckets, lowest first."""
    out: dict[str, list[Stretch]] = {hop: [] for hop in LAG_COLUMNS}
    for hop, bucket, k in conn.execute(select(lag_buckets.c.hop, lag_buckets.c.bucket, lag_buckets.c.contracts)
                                       .where(lag_buckets.c.contracts > 0)
                                       .order_by(lag_buckets.c.hop, lag_buckets.c.bucket)):
        out[hop].append((bucket, int(k)))
    return out


def open_totals(conn: Connection) -> Sequence[Any]:
    """Open mismatches by kind and currency: (kind, currency, count, amount at risk, leakage), in micros."""
    t = open_mismatch_totals
    return conn.execute(select(t.c.kind, t.c.currency, t.c.mismatches, t.c.amount_micros, t.c.leakage_micros)
                        .where(t.c.mismatches > 0).order_by(t.c.kind, t.c.currency)).all()


class Assurance:
    def __init__(self, engine: Engine):
        self.engine = engine

    def summary(self, start: datetime | None, end: datetime | None,
                slo: dict[str, Any] | None = None) -> dict[str, Any]:
        cond = []
        if start is not None:
            cond.append(contracts.c.ordered_us >= to_us(start))
        if end is not None:
            cond.append(contracts.c.ordered_us < to_us(end))
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for every statement, as SQLite's read transaction gives: the bucket counts
                # must be those of the index they send the walks into.
                conn.execution_options(isolation_level="REPEATABLE READ")
            money, open_rows, lags = self._cohort(conn, and_(*cond)) if cond else self._all_time(conn)
        currencies = {cur: {"booked": show_micros(b or 0), "invoiced": show_micros(i or 0),
                            "posted": show_micros(p or 0), "collected": show_micros(k or 0)}
                      for cur, b, i, p, k in money}
        open_mismatches: dict[str, dict[str, Any]] = {}
        leakage: dict[str, int] = {}
        for kind, cur, n, risk, leak in open_rows:
            row = open_mismatches.setdefault(kind, {"count": 0, "amount_at_risk": {}})
            row["count"] += n
            row["amount_at_risk"][cur] = show_micros(risk or 0)
            if leak:
                leakage[cur] = leakage.get(cur, 0) + leak
        return {
            "currencies": currencies,
            "leakage": {cur: show_micros(v) for cur, v in sorted(leakage.items())},
            "open_mismatches": {k: open_mismatches[k] for k in c.MISMATCH_KINDS if k in open_mismatches},
            "lags": lags,
            "slo": slo or {},
        }

    @staticmethod
    def _all_time(conn: Connection) -> tuple[Sequence[Any], Sequence[Any], dict[str, Any]]:
        """From the running totals and the lag buckets: the same few rows at any store size."""
        t = contract_totals
        money = conn.execute(select(t.c.currency, func.sum(t.c.booked_micros), func.sum(t.c.invoiced_micros),
                                    func.sum(t.c.posted_micros), func.sum(t.c.collected_micros))
                             .where(t.c.currency != "").group_by(t.c.currency).order_by(t.c.currency)).all()
        buckets = lag_buckets_of(conn)
        lags = {hop: _indexed_lags(conn, contracts.c[col], buckets[hop]) for hop, col in LAG_COLUMNS.items()}
        return money, open_totals(conn), lags

    @staticmethod
    def _cohort(conn: Connection, in_range: Any) -> tuple[Sequence[Any], Sequence[Any], dict[str, Any]]:
        """From the rows of the contracts ordered in the range, and their open mismatches."""
        money = conn.execute(select(
            contracts.c.currency, func.sum(contracts.c.booked_micros), func.sum(contracts.c.invoiced_micros),
            func.sum(contracts.c.posted_micros), func.sum(contracts.c.collected_micros))
            .where(in_range, contracts.c.currency.is_not(None)).group_by(contracts.c.currency)).all()
        scoped = select(contracts.c.contract_key).where(in_range)
        open_rows = conn.execute(
            select(mismatches.c.kind, mismatches.c.currency, func.count(), func.sum(mismatches.c.amount_micros),
                   func.sum(mismatches.c.leakage_micros))
            .where(mismatches.c.state == "open", mismatches.c.scope.in_(scoped))
            .group_by(mismatches.c.kind, mismatches.c.currency).order_by(mismatches.c.kind, mismatches.c.currency)
        ).all()
        lags = {hop: _cohort_lags(conn, contracts.c[col], in_range) for hop, col in LAG_COLUMNS.items()}
        return money, open_rows, lags
