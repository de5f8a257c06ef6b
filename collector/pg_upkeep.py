"""PostgreSQL upkeep that autovacuum would do, so that a store stays fast whether or not it runs.

The pass looks events up by contract key in lists of thousands. On a table never analyzed PostgreSQL
guesses hundreds of rows per key and answers such a list with a sequential scan of every event: with
autovacuum off (as some servers run it, this machine's among them) an incremental pass over a
1M-contract store took 4 s instead of a fraction of one, and a store loaded in bulk waits for autovacuum's
next round even when it is on. So every pass first refreshes the statistics of the tables that
autoanalyze would (`refresh_statistics`).

A table never vacuumed has no visibility map, so the percentile walks of the assurance summary over the
lag indexes cannot be index-only: each entry costs a visit to the table (80 ms a summary at 100k contracts,
20 ms after a VACUUM). Where autovacuum is off for a table, `vacuum_due` tables are vacuumed on a schedule
of their own (`Vacuum`), throttled as autovacuum throttles itself, never inside a pass. Where it is on,
it is left to do its job."""
from __future__ import annotations

from sqlalchemy import Connection, Engine

# autovacuum's defaults: autovacuum_analyze_{threshold,scale_factor}, autovacuum_vacuum_{threshold,
# scale_factor} for dead rows and autovacuum_vacuum_insert_{threshold,scale_factor} for inserted ones
ANALYZE_AT = (50, 0.1)
VACUUM_DEAD_AT = (50, 0.2)
VACUUM_INSERTED_AT = (1000, 0.2)
# autovacuum_vacuum_cost_delay and vacuum_cost_limit: a vacuum shares the disk with ingest
COST_DELAY_MS, COST_LIMIT = 2, 200
TABLES = ("events", "ref_map", "dirty", "contracts", "contract_totals", "mismatches", "open_mismatch_totals",
          "lag_buckets", "waiting", "waiting_refs")
UPKEEP_LOCK = 0x72657675  # "revu": one vacuum round at a time across replicas

_STATS = "FROM pg_stat_user_tables s WHERE s.schemaname = current_schema() AND s.relname = ANY(%(tables)s)"
_ANALYZE_DUE = (f"SELECT s.relname {_STATS} AND s.n_mod_since_analyze > %(at)s + %(scale)s * greatest(s.n_live_tup, 0) "
                "ORDER BY s.relname")
# A table whose own reloptions turn autovacuum off counts as off too.
_AUTOVACUUM_OFF = ("(current_setting('autovacuum') = 'off' OR coalesce((SELECT c.reloptions::text[] "
                   "&& ARRAY['autovacuum_enabled=false', 'autovacuum_enabled=off'] FROM pg_class c "
                   "WHERE c.oid = s.relid), false))")
_VACUUM_DUE = (f"SELECT s.relname {_STATS} AND {_AUTOVACUUM_OFF} AND "
               "(s.n_dead_tup > %(dead_at)s + %(dead_scale)s * greatest(s.n_live_tup, 0) "
               "OR s.n_ins_since_vacuum > %(ins_at)s + %(ins_scale)s * greatest(s.n_live_tup, 0)) ORDER BY s.relname")


def analyze_due(conn: Connection) -> list[str]:
    """revtrace's tables whose statistics autoanalyze would refresh now."""
    params = {"tables": list(TABLES), "at": ANALYZE_AT[0], "scale": ANALYZE_AT[1]}
    return [r[0] for r in conn.exec_driver_sql(_ANALYZE_DUE, params).all()]


def vacuum_due(conn: Connection) -> list[str]:
    """revtrace's tables that autovacuum would vacuum now, were it on for them, where it is off."""
    params = {"tables": list(TABLES), "dead_at": VACUUM_DEAD_AT[0], "dead_scale": VACUUM_DEAD_AT[1],
              "ins_at": VACUUM_INSERTED_AT[0], "ins_scale": VACUUM_INSERTED_AT[1]}
    return [r[0] for r in conn.exec_driver_sql(_VACUUM_DUE, params).all()]


def refresh_statistics(engine: Engine) -> list[str]:
    """ANALYZE the tables due; answers which. Nothing on SQLite, whose planner without statistics still
    seeks an index for an IN list."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.begin() as conn:
        due = analyze_due(conn)
        if due:
            # SKIP_LOCKED: a table that a vacuum round (or another replica's pass) is analyzing now is left
            # to it. Waiting for it held a pass, and every mismatch it would open, for the 5-14 s that round
            # took at 1M contracts (detection p99 2.2 -> 7.6-9.1 s).
            conn.exec_driver_sql("ANALYZE (SKIP_LOCKED) " + ", ".join(due))  # names from TABLES only
    return due


class Vacuum:
    """VACUUM (ANALYZE) of the tables due, where autovacuum is off; one round at a time across replicas."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._pid: int | None = None  # the backend vacuuming now, for cancel()

    def run(self) -> list[str]:
        """One round; answers the tables vacuumed. A replica that finds another at it does nothing."""
        if self.engine.dialect.name != "postgresql":
            return []
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")  # VACUUM runs outside a transaction
            if not conn.exec_driver_sql("SELECT pg_try_advisory_lock(%s)", (UPKEEP_LOCK,)).scalar_one():
                return []
            try:
                due = vacuum_due(conn)
                if due:
                    self._vacuum(conn, due)
                return due
            finally:
                conn.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (UPKEEP_LOCK,))

    def _vacuum(self, conn: Connection, tables: list[str]) -> None:
        conn.exec_driver_sql(f"SET vacuum_cost_delay = {COST_DELAY_MS}")
        conn.exec_driver_sql(f"SET vacuum_cost_limit = {COST_LIMIT}")
        self._pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        try:
            # SKIP_LOCKED: a table a pass is analyzing waits for the next round, rather than the round
            # waiting in the lock queue, where every later pass's ANALYZE of that table would wait behind it.
            conn.exec_driver_sql("VACUUM (ANALYZE, SKIP_LOCKED) " + ", ".join(tables))  # names from TABLES only
        finally:  # the connection goes back to the pool
            self._pid = None
            conn.exec_driver_sql("RESET vacuum_cost_delay")
            conn.exec_driver_sql("RESET vacuum_cost_limit")

    def cancel(self) -> None:
        """Stop a round under way (the server is stopping: a vacuum of a large table takes minutes)."""
        pid = self._pid
        if pid is not None:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT pg_cancel_backend(%s)", (pid,))
