"""A pass whose chunks are examined in other processes writes exactly what a pass examining them itself
writes: the same mismatches, contract rows and totals, on a store of every fault kind."""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psutil
import pytest
from sqlalchemy import Engine, select

from collector.db import make_engine, upgrade
from collector.evaluate import CONTRACT_COLUMNS, SPLIT, Reconciler
from collector.pass_worker import PassWorker, examiner_pool, run_in
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
    pool = examiner_pool(url, there.policy, 2)
    parallel = Reconciler(there.engine, there.policy, there.clock_us, examiners=lambda: pool)
    try:
        _compare(here, parallel)
    finally:
        pool.shutdown()
    assert _state(here.engine) == _state(there.engine)


def _compare(here: World, parallel: Reconciler) -> None:
    """Full, incremental and full passes (the incremental one in chunks of SPLIT) over both stores."""
    there_engine = parallel.engine
    for step, full in enumerate((True, False, True)):
        # Step 1 changes every contract (an incremental pass of more than one SPLIT); step 2 a few, whose
        # rows and dirty marks a full pass must examine once each.
        if step:
            with here.engine.connect() as conn:
                keys = conn.execute(select(contracts.c.contract_key).order_by(contracts.c.contract_key)
                                    .limit(None if step == 1 else 5)).scalars().all()
            assert step == 2 or len(keys) > SPLIT
            for engine in (here.engine, there_engine):
                World(engine, now=NOW).ingest(*(payment(k, n=97 + step, type_="payment.failed", amount="1.00")
                                                for k in keys))
        a, b = here.evaluate(full), parallel.run(full)
        assert (a.evaluated, a.opened, a.closed, a.updated) == (b.evaluated, b.opened, b.closed, b.updated)
        assert a.lags.buckets == b.lags.buckets
        assert a.lags.sums == pytest.approx(b.lags.sums)
    with here.engine.connect() as conn:
        assert a.evaluated == len(conn.execute(select(contracts.c.contract_key)).all())


def test_the_pass_writes_every_column_of_a_contract_row() -> None:
    assert set(CONTRACT_COLUMNS) == set(contracts.c.keys())


@pytest.mark.slow
def test_the_pass_worker_keeps_its_examiners_and_stops_with_them(stores: tuple[World, World, str]) -> None:
    _, there, url = stores
    me = psutil.Process()
    worker = PassWorker(url, there.policy)
    try:
        first = run_in(worker, True, True, there.clock_us())
        (pass_process,) = _spawned(me)
        examiners = _spawned(pass_process)
        assert len(examiners) == (os.cpu_count() or 1)  # all started with the worker
        there.ingest(payment("C-new", n=1, amount="5.00"))
        again = run_in(worker, False, True, there.clock_us())
        assert (first.evaluated, again.evaluated) == (600, 1)
        assert set(examiners) <= set(_spawned(pass_process))  # the same processes, not a new pool per pass
    finally:
        done = threading.Thread(target=worker.shutdown)
        done.start()
        done.join(60)
    assert not done.is_alive(), "the pass worker did not stop"
    assert not _spawned(me)
    assert not any(p.is_running() for p in examiners)


def _spawned(proc: psutil.Process) -> list[psutil.Process]:
    """Its children started by multiprocessing's spawn (not the resource tracker)."""
    return [p for p in proc.children() if "--multiprocessing-fork" in p.cmdline()]
