"""PostgreSQL upkeep: a pass refreshes the statistics autoanalyze would, and tables whose autovacuum is off
are vacuumed by revtrace (the visibility map that index-only scans need is then there)."""
from __future__ import annotations

import threading
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


@pytest.mark.postgres
def test_the_statistics_of_a_pass_and_a_vacuum_round_never_wait_for_each_other(pg_url: str) -> None:
    """Each skips a table the other holds (a vacuum round's ANALYZE of a large table takes seconds): a pass
    that waited would hold back every mismatch it opens."""
    with world_on(pg_url) as w:
        with w.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE events SET (autovacuum_enabled = false)")
        _ingest_contracts(w, 400)
        assert _waits_for(lambda: {"events", "ref_map"} <= set(_due(w.engine, pg_upkeep.analyze_due)))
        assert _waits_for(lambda: "events" in _due(w.engine, pg_upkeep.vacuum_due))
        with w.engine.connect() as holder:  # what a vacuum or an ANALYZE takes on a table, held meanwhile
            holder.exec_driver_sql("BEGIN")
            holder.exec_driver_sql("LOCK TABLE events IN SHARE UPDATE EXCLUSIVE MODE")
            done: dict[str, object] = {}
            work = threading.Thread(target=lambda: done.update(
                analyzed=pg_upkeep.refresh_statistics(w.engine), vacuumed=pg_upkeep.Vacuum(w.engine).run()))
            work.start()
            work.join(30)  # a blocked call would wait for as long as the lock is held
            finished = not work.is_alive()
            holder.exec_driver_sql("ROLLBACK")
        work.join()
        assert finished
        assert _relation(w.engine, "reltuples", "events") < 0  # skipped: never analyzed
        assert _relation(w.engine, "reltuples", "ref_map") == 1600  # the rest was done


def test_upkeep_does_nothing_on_sqlite(sqlite_url: str) -> None:
    with world_on(sqlite_url) as w:
        _ingest_contracts(w, 10)
        assert pg_upkeep.refresh_statistics(w.engine) == []
        assert pg_upkeep.Vacuum(w.engine).run() == []
