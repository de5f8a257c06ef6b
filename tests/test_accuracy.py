"""Accuracy against the simulator's ground truth: every injected fault is found, nothing else is
reported, and the leakage is equal to the cent (issue: ≥ 2,000 contracts with every fault kind)."""
from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from collector import conventions as c
from collector.assurance import Assurance
from collector.db import make_engine, upgrade
from probes.config import LandscapeConfig
from probes.landscape import run_landscape
from tests.builders import World

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _found(world: World) -> Counter[tuple[str, str | None, str, str]]:
    return Counter((kind, cid, str(Decimal(amount)), cur) for kind, cid, amount, cur in world.open())


def _expected(truth: list[Any]) -> Counter[tuple[str, str | None, str, str]]:
    return Counter((m.kind, m.contract_id, str(m.amount_at_risk), m.currency) for m in truth)


@pytest.mark.slow
def test_every_injected_fault_is_found_and_nothing_else(db_url: str) -> None:
    config = LandscapeConfig(now=NOW, seed=7, contracts=2000, fault_rate=0.3)
    land = run_landscape(config)
    assert set(land.fault_counts) >= set(c.MISMATCH_KINDS) - {"orphan_payment", "orphan_posting"}
    assert {m.kind for m in land.truth} == set(c.MISMATCH_KINDS)
    engine = make_engine(db_url)
    upgrade(engine)
    try:
        world = World(engine, now=NOW)
        rng = random.Random(3)
        events = land.events
        at = 0
        while at < len(events):  # batches of varying size, a pass now and then, as a live collector does
            size = rng.randint(200, 1500)
            world.ingest(*events[at:at + size])
            at += size
            if rng.random() < 0.3:
                world.evaluate()
        world.evaluate()
        found, expected = _found(world), _expected(land.truth)
        missed, extra = expected - found, found - expected
        assert not missed and not extra, f"missed {sorted(missed)[:10]}; extra {sorted(extra)[:10]}"
        leakage: dict[str, Decimal] = {}
        for m in land.truth:
            if m.leakage:
                leakage[m.currency] = leakage.get(m.currency, Decimal(0)) + m.amount_at_risk
        summary = Assurance(engine).summary(None, None)
        assert {k: Decimal(v) for k, v in summary["leakage"].items()} == leakage
        full = world.evaluate(full=True)
        assert (full.opened, full.closed, full.updated) == (0, 0, 0)
    finally:
        engine.dispose()
