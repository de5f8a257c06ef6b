"""What the engines do under the store's other code: how a pooled PostgreSQL connection is checked before it
is lent, and how SQLite's WAL file is kept from growing for good."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from collector import db
from collector.db import make_engine, upgrade


@pytest.mark.postgres
def test_a_connection_is_pinged_only_once_it_sat_idle_and_replaced_if_the_ping_fails(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(pg_url)
    pinged: list[Any] = []

    def ping(dbapi_conn: Any) -> bool:
        pinged.append(dbapi_conn)
        raise psycopg.OperationalError("gone")

    monkeypatch.setattr(engine.dialect, "do_ping", ping)
    try:
        with engine.connect() as conn:
            first = conn.connection.dbapi_connection
        monkeypatch.setattr(db, "PING_IDLE_S", 3600.0)
        with engine.connect() as conn:  # back at once: no round trip spent on a ping
            assert conn.connection.dbapi_connection is first
        assert pinged == []
        monkeypatch.setattr(db, "PING_IDLE_S", 0.0)
        with engine.connect() as conn:  # idle long enough: pinged, found dead, and a new one lent instead
            assert conn.connection.dbapi_connection is not first
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        assert pinged == [first]
        with engine.connect() as conn:
            second = conn.connection.dbapi_connection
        second.close()  # closed on this side while idle: no socket left to poll, and replaced all the same
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection is not second
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_the_sqlite_wal_is_cut_back_once_a_checkpoint_has_emptied_it(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "WAL_KEEP_BYTES", 2**20)
    engine = make_engine(sqlite_url)
    upgrade(engine)
    wal = tmp_path / "revtrace.db-wal"
    reader = sqlite3.connect(tmp_path / "revtrace.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchall()  # holds its snapshot: no checkpoint empties the WAL
        for i in range(8):
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO dirty (contract_key, token) VALUES (:k, 1)"),
                             [{"k": f"{i}-{n}-" + "x" * 900} for n in range(1000)])
        grown = wal.stat().st_size
        assert grown > 4 * 2**20
        reader.execute("COMMIT")
        reader.execute("PRAGMA wal_checkpoint(PASSIVE)")  # copies every page back: the WAL may start over
        with engine.begin() as conn:  # the first write after it starts the WAL over, and cuts the file back
            conn.execute(text("INSERT INTO dirty (contract_key, token) VALUES ('after', 1)"))
        assert wal.stat().st_size <= 2**20 < grown
    finally:
        reader.close()
        engine.dispose()
