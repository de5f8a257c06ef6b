"""This machine's raw limits on the benchmark's own data, measured in the same run: how fast the same payload
bytes parse as JSON (orjson, the stdlib), and how fast a plain `executemany` INSERT puts the same rows, with
the same UNIQUE(source, event_id), into a fresh table of the same kind of database."""
from __future__ import annotations

import json
import sqlite3
import statistics
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from benchmarks.client import array_body

TX_ROWS = 10_000
COLUMNS = ("source", "event_id", "type", "at_us", "contract_key", "received_us", "body")
DDL = """CREATE TABLE raw_events (id {id} PRIMARY KEY, source VARCHAR(16) NOT NULL, event_id VARCHAR(200) NOT NULL,
type VARCHAR(32) NOT NULL, at_us BIGINT NOT NULL, contract_key VARCHAR(200), received_us BIGINT NOT NULL,
body TEXT NOT NULL, UNIQUE (source, event_id))"""


def insert_sql(mark: str, conflict: str = "") -> str:
    """The INSERT of rows of COLUMNS into raw_events, with the driver's parameter mark ("?" or "%s")."""
    return f"INSERT INTO raw_events ({', '.join(COLUMNS)}) VALUES ({', '.join([mark] * len(COLUMNS))}) {conflict}"


def parse_rates(batches: Sequence[Sequence[bytes]], runs: int) -> dict[str, float]:
    """Events per second (median of `runs`) through orjson.loads and json.loads of the 10,000-event array
    bodies the clients send."""
    bodies = [array_body(b) for b in batches]
    n = sum(len(b) for b in batches)
    out = {}
    for name, loads in (("orjson", orjson.loads), ("json", json.loads)):
        rates = []
        for _ in range(runs):
            started = time.perf_counter()
            for body in bodies:
                loads(body)
            rates.append(n / (time.perf_counter() - started))
        out[name] = statistics.median(rates)
    return out


def row_of(line: bytes, received_us: int) -> tuple[Any, ...]:
    """revtrace's `events` row of one event's JSON text, the body kept as sent."""
    ev = orjson.loads(line)
    at = datetime.fromisoformat(ev["occurred_at"])
    return (ev["source"], ev["event_id"], ev["type"], int(at.timestamp() * 1_000_000), ev.get("contract_id"),
            received_us, line.decode())


def rows_of(lines: Sequence[bytes]) -> list[tuple[Any, ...]]:
    """The row of each distinct (source, event_id)."""
    seen: dict[tuple[str, str], tuple[Any, ...]] = {}
    received = time.time_ns() // 1000
    for line in lines:
        row = row_of(line, received)
        seen.setdefault((row[0], row[1]), row)
    return list(seen.values())


def sqlite_rate(rows: Sequence[tuple[Any, ...]], folder: Path, per_tx: int = TX_ROWS,
                seconds: float | None = None) -> float:
    """Rows/s through executemany, `per_tx` rows per transaction, WAL with synchronous=FULL. With one row
    per transaction this is the disk's rate of synced commits, which bounds single acknowledged events."""
    path = folder / "raw.db"
    conn = sqlite3.connect(path, isolation_level=None)
    stmt = insert_sql("?")

    def tx(chunk: Sequence[tuple[Any, ...]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(stmt, chunk)
        conn.execute("COMMIT")

    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(DDL.format(id="INTEGER"))
        return _timed(rows, tx, per_tx, seconds)
    finally:
        conn.close()
        for p in folder.glob("raw.db*"):
            p.unlink()


def postgres_rate(rows: Sequence[tuple[Any, ...]], dsn: str, per_tx: int = TX_ROWS,
                  seconds: float | None = None) -> float:
    """The same with psycopg's executemany and PostgreSQL's default synchronous_commit (on)."""
    with psycopg.connect(dsn) as conn:
        conn.execute(DDL.format(id="BIGSERIAL"))
        conn.commit()
        stmt = insert_sql("%s")

        def tx(chunk: Sequence[tuple[Any, ...]]) -> None:
            with conn.cursor() as cur:
                cur.executemany(stmt, chunk)
            conn.commit()

        try:
            return _timed(rows, tx, per_tx, seconds)
        finally:
            conn.execute("DROP TABLE raw_events")
            conn.commit()


def _timed(rows: Sequence[tuple[Any, ...]], tx: Any, per_tx: int, seconds: float | None) -> float:
    """Rows/s over all the rows, or over those that fit in `seconds`."""
    started = time.perf_counter()
    done = 0
    for i in range(0, len(rows), per_tx):
        chunk = rows[i:i + per_tx]
        tx(chunk)
        done += len(chunk)
        if seconds is not None and time.perf_counter() - started >= seconds:
            break
    return done / (time.perf_counter() - started)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
