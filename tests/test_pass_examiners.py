"""A pass whose chunks are examined in other processes writes exactly what a pass examining them itself
writes: the same mismatches, contract rows and totals, on a store of every fault kind."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select

from collector.db import make_engine, upgrade
from collector.evaluate import CONTRACT_COLUMNS, Reconciler
from collector.pass_worker import examiner_pool
from collector.schema import contract_totals, contracts, mismatches
from probes.config import LandscapeConfig
from probes.landscape import run_landscape
from tests.builders import World, payment

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _state(engine: Engine) -> tuple[list[Any], ...]:
    with engine.connect() as conn:
        found = conn.execute(select(mismatches.c.scope, mismatches.c.kind, mismatches.c.subject,
                                    mismatches.c.state, mismatches.c.amount_at_risk, mismatches.c.evidence)
                             .order_by(mismatches.c.scope, mismatches.c.kind, mismatches.c.subject)).all()
        rows = conn.execute(select(contracts).order_by(contracts.c.contract_key)).all()
        totals = conn.execute(select(contract_totals).order_by(contract_totals.c.currency,
                                                               contract_totals.c.stage)).all()
    return [tuple(r) for r in found], [tuple(r) for r in rows], [tuple(r) for r in totals]


@pytest.fixture
def stores(tmp_path: Any) -> Iterator[tuple[World, World, str]]:
    land = run_landscape(LandscapeConfig(now=NOW, seed=11, contracts=600, fault_rate=0.3))
    worlds = []
    for name in ("here", "there"):
        url = f"sqlite:///{tmp_path}/{name}.db"
        engine = make_engine(url)
        upgrade(engine)
        world = World(engine, now=NOW)
        world.ingest(*land.events)
        worlds.append((world, url))
    try:
        yield worlds[0][0], worlds[1][0], worlds[1][1]
    finally:
        for world, _ in worlds:
            world.engine.dispose()


@pytest.mark.slow
def test_examiners_in_other_processes_write_the_same(stores: tuple[World, World, str]) -> None:
    here, there, url = stores
    parallel = Reconciler(there.engine, there.policy, there.clock_us,
                          examiners=lambda: examiner_pool(url, there.policy, 2))
    for step, full in enumerate((True, False, True)):
        if step == 2:  # contracts with rows and dirty marks: each is examined once in a full pass
            with here.engine.connect() as conn:
                keys = conn.execute(select(contracts.c.contract_key).order_by(contracts.c.contract_key)
                                    .limit(5)).scalars().all()
            for world in (here, there):
                world.ingest(*(payment(k, n=99, type_="payment.failed", amount="1.00") for k in keys))
        a, b = here.evaluate(full), parallel.run(full)
        assert (a.evaluated, a.opened, a.closed, a.updated) == (b.evaluated, b.opened, b.closed, b.updated)
        assert a.lags.buckets == b.lags.buckets
        assert a.lags.sums == pytest.approx(b.lags.sums)
    with here.engine.connect() as conn:
        assert a.evaluated == len(conn.execute(select(contracts.c.contract_key)).all())
    assert _state(here.engine) == _state(there.engine)


def test_the_pass_writes_every_column_of_a_contract_row() -> None:
    assert set(CONTRACT_COLUMNS) == set(contracts.c.keys())
