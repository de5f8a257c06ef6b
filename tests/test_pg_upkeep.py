"""PostgreSQL upkeep: a pass refreshes the statistics autoanalyze would, and tables whose autovacuum is off
are vacuumed by revtrace (the visibility map that index-only scans need is then there)."""
from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, Engine

from collector import pg_upkeep
from tests.builders import World, clean, world_on


def _waits_for(check: Callable[[], bool], seconds: float = 15.0) -> bool:
    """PostgreSQL's activity counters reach the shared statistics within about a second of a commit."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def _due(engine: Engine, which: Callable[[Connection], list[str]]) -> list[str]:
    """pg_upkeep's `analyze_due` or `vacuum_due` on the counters as they are now, not a cached snapshot."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        return which(conn)


def _relation(engine: Engine, column: str, table: str) -> float:
    with engine.connect() as conn:
        return float(conn.exec_driver_sql(f"SELECT {column} FROM pg_class WHERE relname = %s", (table,)).scalar_one())


def _ingest_contracts(w: World, n: int) -> None:
    w.ingest(*(e for i in range(n) for e in clean(f"C{i}")))


@pytest.mark.postgres
def test_a_pass_analyzes_the_tables_that_changed_and_only_those(pg_url: str) -> None:
    with world_on(pg_url) as w:
        assert _relation(w.engine, "reltuples", "events") < 0  # never analyzed
        _ingest_contracts(w, 100)
        assert _waits_for(lambda: "events" in _due(w.engine, pg_upkeep.analyze_due))
        w.evaluate()
        assert _relation(w.engine, "reltuples", "events") == 400
        assert _relation(w.engine, "reltuples", "ref_map") == 400
        assert _waits_for(lambda: not {"events", "ref_map"} & set(_due(w.engine, pg_upkeep.analyze_due)))


@pytest.mark.postgres
def test_tables_without_autovacuum_are_vacuumed(pg_url: str) -> None:
    with world_on(pg_url) as w:
        with w.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE events SET (autovacuum_enabled = false)")
        _ingest_contracts(w, 400)  # 1,600 events: past autovacuum's insert threshold of 1,000
        assert _relation(w.engine, "relallvisible", "events") == 0
        assert _waits_for(lambda: "events" in _due(w.engine, pg_upkeep.vacuum_due))
        assert "events" in pg_upkeep.Vacuum(w.engine).run()
        assert _relation(w.engine, "relallvisible", "events") > 0
        assert "events" not in _due(w.engine, pg_upkeep.vacuum_due)


def test_upkeep_does_nothing_on_sqlite(sqlite_url: str) -> None:
    with world_on(sqlite_url) as w:
        _ingest_contracts(w, 10)
        assert pg_upkeep.refresh_statistics(w.engine) == []
        assert pg_upkeep.Vacuum(w.engine).run() == []
