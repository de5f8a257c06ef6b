"""A full pass lists every contract once, those with a row and those with only a dirty mark together, in
chunks of consecutive keys whose events it reads by one range scan; a contract that arrives inside a chunk's
range after the chunk was listed is left, with its mark, to the next pass."""
from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from collector import evaluate
from collector.schema import contracts, dirty
from tests.builders import World, clean, invoice, order

# Keys chosen so that contracts with a row and contracts with only a mark interleave in key order.
KEYS = [f"K{n:03d}" for n in range(23)]


def _rows(engine: Engine) -> dict[str, tuple[object, ...]]:
    with engine.connect() as conn:
        return {r[0]: tuple(r[1:-1]) for r in conn.execute(select(contracts).order_by(contracts.c.contract_key))}


def test_every_contract_is_examined_once_in_runs_of_consecutive_keys(engine: Engine,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(engine)
    world.ingest(*(e for k in KEYS[::2] for e in clean(k)))
    world.evaluate()
    # Every other contract now has a row and no mark; the rest only a mark; two of the evaluated ones both.
    world.ingest(*(e for k in KEYS[1::2] for e in clean(k)), invoice(KEYS[4], n=2), order(KEYS[10], amount="5.00"))
    seen: list[list[str]] = []
    real = evaluate.Examiner.examine

    def recording(self: evaluate.Examiner, keys: list[str], now_us: int, run: bool = False) -> evaluate._Examined:
        seen.append(list(keys))
        return real(self, keys, now_us, run)

    monkeypatch.setattr(evaluate.Examiner, "examine", recording)
    monkeypatch.setattr(evaluate, "FULL_CHUNK", 4)
    res = world.evaluate(full=True)
    assert [k for chunk in seen for k in chunk] == KEYS  # each once, in order, rows and marks merged
    assert all(len(chunk) == 4 for chunk in seen[:-1])
    assert res.evaluated == len(KEYS)
    with engine.connect() as conn:
        assert conn.execute(select(dirty.c.contract_key)).all() == []
    # What the small chunks found is what one chunk finds.
    found, rows = world.open(), _rows(engine)
    monkeypatch.setattr(evaluate, "FULL_CHUNK", 10_000)
    again = world.evaluate(full=True)
    assert (again.opened, again.closed, again.updated) == (0, 0, 0)
    assert (world.open(), _rows(engine)) == (found, rows)


def test_a_contract_that_arrived_inside_a_run_is_left_to_the_next_pass(engine: Engine) -> None:
    world = World(engine)
    world.ingest(*(e for k in ("A", "C") for e in clean(k)))
    listed = ["A", "C"]
    world.ingest(*clean("B"))  # after the run was listed, between its keys
    examined = evaluate.Examiner(engine, world.policy).examine(listed, world.clock_us(), run=True)
    assert set(examined.rows) == set(examined.marks) == {"A", "C"}
    assert world.evaluate().evaluated == 3  # B's mark, and A's and C's since they were never written
