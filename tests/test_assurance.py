"""The assurance summary: percentiles read off an index equal the nearest-rank percentiles of the values,
running totals equal the contracts they sum, and from/to select a cohort."""
from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Float, Integer, MetaData, Table, create_engine, func, select

from collector.assurance import Assurance, _indexed_lags, percentile
from collector.schema import contract_totals, contracts
from tests.builders import T0, D, H, World, clean, invoice, order, posting, world_on


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 101])
def test_index_percentiles_equal_nearest_rank(n: int) -> None:
    engine = create_engine("sqlite://")
    md = MetaData()
    t = Table("t", md, Column("id", Integer, primary_key=True), Column("v", Float, index=True))
    md.create_all(engine)
    values = [random.Random(n).random() for _ in range(n)]
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"v": v} for v in values])
        got = _indexed_lags(conn, t.c.v)
    s = sorted(values)
    assert got == {"count": n, "p50": percentile(s, 0.5), "p95": percentile(s, 0.95), "p99": percentile(s, 0.99)}


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    with world_on(db_url) as w:
        yield w


def test_running_totals_follow_the_contracts_and_from_to_is_a_cohort(world: World) -> None:
    world.ingest(*clean("A"), order("B", at=T0 + 10 * D), order("C", amount="5.00", at=T0 + 20 * D,
                                                                 currency="EUR"))
    world.evaluate()
    world.ingest(invoice("B", at=T0 + 10 * D + H), posting("B", at=T0 + 10 * D + 2 * H))
    world.evaluate()
    with world.engine.connect() as conn:
        direct = conn.execute(select(func.count(), func.sum(contracts.c.booked_micros),
                                     func.sum(contracts.c.invoiced_micros))).one()
        kept = conn.execute(select(func.sum(contract_totals.c.contracts), func.sum(contract_totals.c.booked_micros),
                                   func.sum(contract_totals.c.invoiced_micros))).one()
    assert tuple(direct) == tuple(kept) == (3, 2_005_000_000, 2_000_000_000)
    summary = Assurance(world.engine).summary(None, None)
    assert summary["currencies"]["USD"] == {"booked": "2000.00", "invoiced": "2000.00", "posted": "2000.00",
                                            "collected": "1080.00"}
    assert summary["lags"]["order_to_invoice"] == {"count": 2, "p50": 3600.0, "p95": 3600.0, "p99": 3600.0}
    cohort = Assurance(world.engine).summary(T0 + 5 * D, T0 + 15 * D)
    assert set(cohort["currencies"]) == {"USD"} and cohort["currencies"]["USD"]["booked"] == "1000.00"
    assert cohort["open_mismatches"] == {"unpaid_overdue": {"count": 1, "amount_at_risk": {"USD": "1080.00"}}}
    later = Assurance(world.engine).summary(T0 + 15 * D, None)
    assert later["leakage"] == {"EUR": "5.00"}
    assert world.evaluate(full=True).opened == 0
    with world.engine.connect() as conn:
        assert conn.execute(select(func.sum(contract_totals.c.contracts))).scalar() == 3
