"""The running totals the reads use equal what they sum, however the rows change: open mismatches by kind
and currency (triggers, migration 0006), and each hop's lags by bucket (the pass, collector/lag_buckets.py),
whose percentiles equal the nearest-rank percentiles of every lag."""
from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, delete, func, select, text, update

from collector.assurance import Assurance, lag_buckets_of, open_totals, percentile
from collector.db import MIGRATIONS, downgrade, make_engine, upgrade
from collector.evaluate import CONTRACT_COLUMNS, LAG_COLUMNS, write_contracts
from collector.lag_buckets import bucket_of
from collector.schema import contracts, mismatches
from tests.builders import T0, D, H, World, clean, invoice, order, payment, posting, world_on


def _direct_open(conn: Any) -> list[tuple[Any, ...]]:
    m = mismatches.c
    return [tuple(r) for r in conn.execute(
        select(m.kind, m.currency, func.count(), func.sum(m.amount_micros),
               func.coalesce(func.sum(m.leakage_micros), 0))
        .where(m.state == "open").group_by(m.kind, m.currency).order_by(m.kind, m.currency))]


def _check(engine: Engine) -> None:
    """Every total equals the rows it sums, each bucket holds exactly the lags from its bound to the next."""
    with engine.connect() as conn:
        assert [tuple(r) for r in open_totals(conn)] == _direct_open(conn)
        for hop, buckets in lag_buckets_of(conn).items():
            col = contracts.c[LAG_COLUMNS[hop]]
            values = sorted(conn.execute(select(col).where(col.is_not(None))).scalars())
            bounds = [b for b, _ in buckets] + [float("inf")]
            assert [k for _, k in buckets] == [sum(lo <= v < hi for v in values)
                                               for lo, hi in itertools.pairwise(bounds)]
            assert sum(k for _, k in buckets) == len(values)
    lags = Assurance(engine).summary(None, None)["lags"]
    with engine.connect() as conn:
        for hop, col in LAG_COLUMNS.items():
            values = sorted(conn.execute(select(contracts.c[col]).where(contracts.c[col].is_not(None))).scalars())
            assert lags[hop] == {"count": len(values), "p50": percentile(values, 0.5),
                                 "p95": percentile(values, 0.95), "p99": percentile(values, 0.99)}


def _contract(key: str, **lags: float | None) -> dict[str, Any]:
    return {"contract_key": key, "stage": "paid", "currency": "USD", "entity": "US01", "ordered_us": 0,
            "next_due_us": None, "booked_micros": 1, "invoiced_micros": 1, "posted_micros": 1, "collected_micros": 1,
            "updated_us": 0, **{col: lags.get(col) for col in LAG_COLUMNS.values()}}


def _row(key: str, **lags: float | None) -> tuple[Any, ...]:
    """A contract's row as the pass writes it (CONTRACT_COLUMNS order)."""
    c = _contract(key, **lags)
    return tuple(c[name] for name in CONTRACT_COLUMNS)


def _lag(rng: random.Random) -> float:
    """Lags as a pass writes them (whole microseconds, in seconds), with the awkward ones often: zero, ties,
    negatives, exact powers of two and their neighbours, sub-second and years."""
    pick = rng.random()
    if pick < 0.2:
        return 0.0
    if pick < 0.35:
        return 3600.0
    if pick < 0.45:
        return rng.choice([2.0 ** rng.randint(-19, 35), -(2.0 ** rng.randint(-19, 35))]) + rng.choice([-1e-6, 0, 1e-6])
    us = int(10 ** rng.uniform(0, 14)) * rng.choice([1, 1, 1, -1])
    return us / 1e6


def _migration_0006() -> Any:
    return ScriptDirectory(str(MIGRATIONS)).get_revision("0006").module


def test_the_pass_buckets_each_lag_as_migration_0006_did_in_sql(engine: Engine) -> None:
    """The bounds the store already holds (0006 computed them in SQL) and those the pass adds must be equal
    floats, or one bucket would be counted under two names."""
    rng = random.Random(11)
    lags = [_lag(rng) for _ in range(1500)] + [2.0 ** e * s for e in range(-24, 46) for s in (1, -1)] + [
        math.nextafter(2.0 ** e, d) for e in (-20, -19, 0, 1, 12, 39, 40) for d in (0, math.inf)] + [0.0, -0.0]
    sqlite = engine.dialect.name == "sqlite"
    real = "REAL" if sqlite else "double precision"
    sql = _migration_0006().bucket_of(sqlite, "t.v")
    with engine.connect() as conn:
        for lag in lags:
            got = conn.execute(text(f"SELECT {sql} FROM (SELECT CAST(:v AS {real}) AS v) AS t"), {"v": lag}).scalar()
            assert bucket_of(lag) == got, lag
    assert all(bucket_of(v) <= v for v in lags)


def test_lag_percentiles_from_buckets_equal_nearest_rank_as_the_pass_writes_and_rewrites(engine: Engine) -> None:
    rng = random.Random(5)
    cols = list(LAG_COLUMNS.values())
    rows = [_row(f"K{i}", **{c: (_lag(rng) if rng.random() < 0.8 else None) for c in cols}) for i in range(600)]
    with engine.begin() as conn:
        write_contracts(conn, rows, {})
    _check(engine)
    for _ in range(2):
        stored = _stored(engine)
        changed = []
        for i in rng.sample(range(600), 200):
            row = list(stored[f"K{i}"])
            at = CONTRACT_COLUMNS.index(rng.choice(cols))
            row[at] = None if rng.random() < 0.2 else rng.choice([_lag(rng), row[at]])
            changed.append(tuple(row))
        # A row whose lags did not move (a new stage) changes no bucket.
        changed += [(*stored[f"K{i}"][:1], "posted", *stored[f"K{i}"][2:]) for i in range(50) if f"K{i}" not in
                    {r[0] for r in changed}]
        with engine.begin() as conn:
            write_contracts(conn, changed, {r[0]: stored[r[0]] for r in changed})
        _check(engine)


def test_contract_rows_read_back_exactly_as_written_then_rewritten_whatever_their_text(engine: Engine) -> None:
    # New rows take COPY on PostgreSQL, whose text form would have to escape tabs, newlines and backslashes
    # and tell NULL from a literal \N (the binary form escapes nothing); rewritten ones take the upsert.
    odd = ["K\tтаб", "K\nline", "K\\N", "\\N", "K 'quoted' \"too\"", "K€ü😀"]
    entity = CONTRACT_COLUMNS.index("entity")
    rows = [(*r[:entity], r[0][::-1], *r[entity + 1:]) for r in (_row(k, lag_order_to_invoice=1 / 3) for k in odd)]
    with engine.begin() as conn:
        write_contracts(conn, rows, {})
    assert _stored(engine) == {r[0]: r for r in rows}
    at = CONTRACT_COLUMNS.index("lag_invoice_to_posting")
    moved = [(*r[:at], 2 ** 0.5, *r[at + 1:]) for r in rows]
    with engine.begin() as conn:
        write_contracts(conn, moved, {r[0]: r for r in rows})
    assert _stored(engine) == {r[0]: r for r in moved}
    _check(engine)


def _stored(engine: Engine) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as conn:
        return {r[0]: tuple(r) for r in conn.execute(select(*(contracts.c[n] for n in CONTRACT_COLUMNS)))}


@pytest.fixture
def world(db_url: str) -> Any:
    with world_on(db_url) as w:
        yield w


def test_totals_follow_the_passes(world: World) -> None:
    world.ingest(*clean("A"), order("B"), invoice("C", amount="900.00"), order("C"),
                 order("E", currency="EUR", amount="70.00"), payment(None, owner="Z"))
    world.ingest(invoice("D"), order("D", at=T0 + H), invoice("D", n=2, at=T0 + 2 * H))
    world.evaluate()
    world.now += 10 * D
    world.evaluate()
    _check(world.engine)
    # The late invoice closes missing_invoice, the posting moves a lag, the payment closes an orphan.
    world.ingest(invoice("B", at=T0 + 3 * D), posting("B", at=T0 + 4 * D), invoice("E", currency="EUR",
                                                                                   amount="70.00"))
    world.evaluate()
    _check(world.engine)
    assert world.evaluate(full=True).opened == 0
    _check(world.engine)


def test_mismatch_totals_through_direct_changes(engine: Engine) -> None:
    base = {"scope": "S", "subject": "x", "contract_id": "S", "amount_at_risk": "1", "currency": "USD",
            "leakage_micros": None, "detected_us": 0, "closed_us": None, "evidence": "[]"}
    with engine.begin() as conn:
        conn.execute(mismatches.insert(), [
            {**base, "subject": str(i), "kind": kind, "state": state, "amount_micros": i * 10,
             "currency": cur, "leakage_micros": i if kind == "missing_invoice" else None}
            for i, (kind, state, cur) in enumerate([("missing_invoice", "open", "USD"), ("tax_mismatch", "open", "EUR"),
                                                    ("missing_invoice", "closed", "USD"),
                                                    ("missing_invoice", "open", "EUR")])])
    _check(engine)
    m = mismatches.c
    with engine.begin() as conn:
        conn.execute(update(mismatches).where(m.subject == "0").values(state="closed", closed_us=5))
        conn.execute(update(mismatches).where(m.subject == "2").values(state="open"))
        conn.execute(update(mismatches).where(m.subject == "1").values(amount_micros=77, currency="GBP"))
        conn.execute(update(mismatches).where(m.subject == "3").values(evidence='["e"]'))
    _check(engine)
    with engine.begin() as conn:
        conn.execute(delete(mismatches).where(m.subject.in_(["1", "2"])))
    _check(engine)


def test_upgrade_starts_the_totals_from_the_rows_already_there(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0004")
        with engine.begin() as conn:
            conn.execute(contracts.insert(), [_contract(f"K{i}", lag_order_to_invoice=float(i % 7) * 60,
                                                        lag_invoice_to_payment=-1.5 if i % 3 else None)
                                              for i in range(40)])
            conn.execute(mismatches.insert(), [
                {"scope": f"K{i}", "kind": "missing_invoice", "subject": "o", "contract_id": f"K{i}",
                 "state": "open" if i % 4 else "closed", "amount_at_risk": "1", "amount_micros": 1_000_000,
                 "currency": "USD", "leakage_micros": 1_000_000, "detected_us": 0, "closed_us": None, "evidence": "[]"}
                for i in range(10)])
        upgrade(engine)
        _check(engine)
        summary = Assurance(engine).summary(None, None)
        assert summary["open_mismatches"] == {"missing_invoice": {"count": 7, "amount_at_risk": {"USD": "7.00"}}}
        assert summary["leakage"] == {"USD": "7.00"}
    finally:
        engine.dispose()


def test_downgrade_to_0006_gives_the_counting_back_to_its_triggers(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            write_contracts(conn, [_row(f"K{i}", lag_order_to_invoice=float(i) * 90) for i in range(30)], {})
        downgrade(engine, "0006")
        with engine.begin() as conn:  # written as 0006's store was, by anyone: its triggers count
            conn.execute(contracts.insert(), [_contract(f"N{i}", lag_invoice_to_posting=0.5 * i) for i in range(20)])
            conn.execute(update(contracts).where(contracts.c.contract_key == "K3").values(lag_order_to_invoice=None))
        _check(engine)
        upgrade(engine)
        stored = _stored(engine)
        with engine.begin() as conn:
            write_contracts(conn, [(*stored["N4"][:10], 7.0, *stored["N4"][11:])], {"N4": stored["N4"]})
        _check(engine)
    finally:
        engine.dispose()
