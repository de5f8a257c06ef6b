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


def rows_of(lines: Sequence[bytes]) -> list[tuple[Any, ...]]:
    """revtrace's `events` row for each distinct (source, event_id), the body kept as sent."""
    seen: dict[tuple[str, str], tuple[Any, ...]] = {}
    received = time.time_ns() // 1000
    for line in lines:
        ev = orjson.loads(line)
        key = (ev["source"], ev["event_id"])
        if key not in seen:
            at = datetime.fromisoformat(ev["occurred_at"])
            seen[key] = (ev["source"], ev["event_id"], ev["type"], int(at.timestamp() * 1_000_000),
                         ev.get("contract_id"), received, line.decode())
    return list(seen.values())


def sqlite_insert_rate(rows: Sequence[tuple[Any, ...]], folder: Path) -> float:
    path = folder / "raw.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(DDL.format(id="INTEGER"))
        return _timed_inserts(rows, lambda chunk: _sqlite_tx(conn, chunk))
    finally:
        conn.close()
        for p in folder.glob("raw.db*"):
            p.unlink()


def _sqlite_tx(conn: sqlite3.Connection, chunk: Sequence[tuple[Any, ...]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(f"INSERT INTO raw_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                     chunk)
    conn.execute("COMMIT")


def postgres_insert_rate(rows: Sequence[tuple[Any, ...]], dsn: str) -> float:
    with psycopg.connect(dsn) as conn:
        conn.execute(DDL.format(id="BIGSERIAL"))
        conn.commit()
        stmt = f"INSERT INTO raw_events ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"

        def tx(chunk: Sequence[tuple[Any, ...]]) -> None:
            with conn.cursor() as cur:
                cur.executemany(stmt, chunk)
            conn.commit()

        try:
            return _timed_inserts(rows, tx)
        finally:
            conn.execute("DROP TABLE raw_events")
            conn.commit()


def sqlite_commit_rate(rows: Sequence[tuple[Any, ...]], folder: Path, seconds: float = 3.0) -> float:
    """Transactions/s of one row each, WAL with synchronous=FULL: each commit waits for the disk, as a
    single acknowledged event must."""
    path = folder / "commits.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(DDL.format(id="INTEGER"))
        return _timed_commits(rows, lambda row: _sqlite_tx(conn, [row]), seconds)
    finally:
        conn.close()
        for p in folder.glob("commits.db*"):
            p.unlink()


def postgres_commit_rate(rows: Sequence[tuple[Any, ...]], dsn: str, seconds: float = 3.0) -> float:
    """Transactions/s of one row each, with PostgreSQL's default synchronous_commit (on)."""
    with psycopg.connect(dsn) as conn:
        conn.execute(DDL.format(id="BIGSERIAL"))
        conn.commit()
        stmt = f"INSERT INTO raw_events ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"

        def tx(row: tuple[Any, ...]) -> None:
            conn.execute(stmt, row)
            conn.commit()

        try:
            return _timed_commits(rows, tx, seconds)
        finally:
            conn.execute("DROP TABLE raw_events")
            conn.commit()


def _timed_commits(rows: Sequence[tuple[Any, ...]], tx: Any, seconds: float) -> float:
    started = time.perf_counter()
    n = 0
    for row in rows:
        tx(row)
        n += 1
        if time.perf_counter() - started >= seconds:
            break
    return n / (time.perf_counter() - started)


def _timed_inserts(rows: Sequence[tuple[Any, ...]], tx: Any) -> float:
    started = time.perf_counter()
    for i in range(0, len(rows), TX_ROWS):
        tx(rows[i:i + TX_ROWS])
    return len(rows) / (time.perf_counter() - started)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
