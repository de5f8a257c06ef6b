"""The floor of the ingest figures: the least a Python server on this machine does to acknowledge events
durably, measured in the same run, with the same client and bodies as revtrace.

`python -m benchmarks.floor` is a minimal aiohttp server on REVTRACE_DATABASE_URL and REVTRACE_LISTEN that
answers POST /api/v1/events as revtrace does, but only splits the body into events, reads each one's fields
with orjson and inserts `limits.row_of` rows, with the same UNIQUE(source, event_id), in one transaction per
request, on the event loop: no validation, correlation, claims, marks, metrics, auth or group commit. Where
revtrace misses a target this server reaches, revtrace's own work is the gap; where this server misses it
too, the target is beyond a Python server on this machine."""
from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec
import psycopg
from aiohttp import web
from sqlalchemy.engine import make_url

from benchmarks.limits import DDL, insert_sql, row_of

MODULE = ("benchmarks.floor",)  # for benchmarks.server.Server's `command`
_RAW = msgspec.json.Decoder(list[msgspec.Raw])


class Table(Protocol):
    def insert(self, rows: Sequence[tuple[Any, ...]]) -> int: ...


class SqliteTable:
    """WAL with synchronous=FULL, as revtrace's default and the raw insert."""

    def __init__(self, path: str):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(DDL.format(id="INTEGER"))
        self.stmt = insert_sql("?", "ON CONFLICT DO NOTHING")

    def insert(self, rows: Sequence[tuple[Any, ...]]) -> int:
        self.db.execute("BEGIN IMMEDIATE")
        inserted: int = self.db.executemany(self.stmt, rows).rowcount
        self.db.execute("COMMIT")
        return inserted


class PostgresTable:
    """psycopg's executemany, with PostgreSQL's default synchronous_commit (on), as the raw insert."""

    def __init__(self, dsn: str):
        self.db = psycopg.connect(dsn)
        self.db.execute(DDL.format(id="BIGSERIAL"))
        self.db.commit()
        self.stmt = insert_sql("%s", "ON CONFLICT DO NOTHING")

    def insert(self, rows: Sequence[tuple[Any, ...]]) -> int:
        with self.db.cursor() as cur:
            cur.executemany(self.stmt, rows)
            inserted = cur.rowcount
        self.db.commit()
        return inserted


def open_table(url: str) -> Table:
    u = make_url(url)
    if u.drivername.startswith("sqlite"):
        assert u.database is not None
        return SqliteTable(u.database)
    return PostgresTable(u.set(drivername="postgresql").render_as_string(hide_password=False))


def app(table: Table) -> web.Application:
    async def post_events(request: web.Request) -> web.Response:
        received = time.time_ns() // 1000
        rows = [row_of(bytes(raw), received) for raw in _RAW.decode(await request.read())]
        accepted = table.insert(rows)
        return web.json_response({"accepted": accepted, "duplicates": len(rows) - accepted, "rejected": []})

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    application = web.Application(client_max_size=64 * 2**20)
    application.router.add_post("/api/v1/events", post_events)
    application.router.add_get("/readyz", ready)
    application.router.add_get("/healthz", ready)
    return application


def main() -> None:
    host, port = os.environ["REVTRACE_LISTEN"].rsplit(":", 1)
    web.run_app(app(open_table(os.environ["REVTRACE_DATABASE_URL"])), host=host, port=int(port), print=None)


if __name__ == "__main__":
    main()
