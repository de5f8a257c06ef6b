"""The store out of reach, in process: PostgreSQL behind a proxy that resets every connection and refuses new
ones. Requests that need the store are answered 503 with Retry-After and change nothing; /metrics still
answers and says so; once the database is back the same server serves again without a restart."""
from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from benchmarks.db_proxy import DatabaseProxy
from collector import conventions as c
from collector.db import make_engine, upgrade
from collector.outage import store_unavailable
from collector.schema import events
from revtrace.config import Settings
from revtrace.server import Server
from tests.builders import clean, order

ADMIN = "admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}

@pytest.fixture
def proxy(pg_url: str) -> Any:
    with DatabaseProxy(pg_url) as p:
        yield p


@pytest.fixture
async def client(proxy: DatabaseProxy, aiohttp_client: Callable[..., Any]) -> AsyncIterator[TestClient]:
    settings = Settings(database_url=proxy.proxied_url, evaluate_every=0,
                        tokens={ADMIN: frozenset({"ingest", "read", "admin"})})
    yield await aiohttp_client(Server(settings).app())


def stored(pg_url: str) -> int:
    engine = make_engine(pg_url, writer=False)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar_one())
    finally:
        engine.dispose()


async def post(cl: TestClient, body: list[dict[str, Any]]) -> Any:
    return await cl.post("/api/v1/events", data=orjson.dumps(body),
                         headers={**AUTH, "Content-Type": "application/json"})


async def metrics(cl: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await cl.get("/metrics", headers=AUTH)
    assert resp.status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(await resp.text()) for s in fam.samples}


@pytest.mark.postgres
async def test_requests_are_refused_with_503_while_the_store_is_away_and_served_after(
        client: TestClient, proxy: DatabaseProxy, pg_url: str) -> None:
    assert (await post(client, clean())).status == 200
    before = stored(pg_url)
    proxy.down()

    r = await post(client, [order("B")])
    assert r.status == 503 and r.headers["Retry-After"] == "1"
    answer = await r.json()
    assert answer["error"].startswith("store unavailable (OperationalError: ")
    assert "send it again" in answer["error"]
    for path in ("/api/v1/mismatches", "/api/v1/assurance", "/api/v1/contracts/A", "/readyz"):
        r = await client.get(path, headers=AUTH)
        assert r.status == 503, path
        assert (await r.json())["error"].startswith("store unavailable ("), path
    r = await client.post("/api/v1/admin/evaluate", data=b"{}", headers=AUTH)
    assert r.status == 503
    # A person gets a page saying so, not JSON.
    r = await client.get("/", headers={**AUTH, "Accept": "text/html"})
    assert r.status == 503 and r.content_type == "text/html"
    assert "store cannot be reached" in await r.text()
    # The scrape still answers, with the outage in it and the store's gauges left out rather than zeroed.
    m = await metrics(client)
    assert m[(c.METRIC_STORE_UP, ())] == 0
    assert m[(c.METRIC_STORE_UNAVAILABLE, (("route", "/api/v1/events"),))] == 1
    assert m[(c.METRIC_STORE_UNAVAILABLE, (("route", "/api/v1/contracts/{contract_id}"),))] == 1
    assert not any(name == c.METRIC_OPEN_MISMATCHES for name, _ in m)

    proxy.up()
    assert stored(pg_url) == before  # the refused batch left nothing behind
    r = await post(client, [order("B")])
    assert r.status == 200 and (await r.json())["accepted"] == 1
    assert (await client.get("/readyz")).status == 200
    r = await client.post("/api/v1/admin/evaluate", data=b"{}", headers=AUTH)
    assert r.status == 200 and (await r.json())["evaluated"] > 0
    m = await metrics(client)
    assert m[(c.METRIC_STORE_UP, ())] == 1
    assert any(name == c.METRIC_OPEN_MISMATCHES for name, _ in m)


@pytest.mark.postgres
async def test_connections_dropped_while_idle_cost_no_request(
        client: TestClient, proxy: DatabaseProxy, pg_url: str) -> None:
    """A PostgreSQL restarted between two requests: the pool checks a connection before it lends it."""
    assert (await post(client, clean())).status == 200
    proxy.down()
    proxy.up()  # the pooled connections are dead now, and nothing has used them since
    r = await post(client, [order("B")])  # a single event: one statement in autocommit
    assert r.status == 200 and (await r.json())["accepted"] == 1
    proxy.down()
    proxy.up()
    many = [order(f"K{i}") for i in range(100)]  # a batch past pg_ingest's size: one transaction
    r = await post(client, many)
    assert r.status == 200 and (await r.json())["accepted"] == 100
    assert stored(pg_url) == 4 + 1 + 100
    r = await post(client, many)  # each stored once
    assert r.status == 200 and (await r.json())["duplicates"] == 100


def test_a_locked_sqlite_store_is_unavailable_but_a_bad_statement_is_a_bug(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    impatient = create_engine(sqlite_url, connect_args={"timeout": 0})
    try:
        # engine.begin() is the listener's BEGIN IMMEDIATE: it holds the write lock
        with (
            engine.begin(),
            pytest.raises(OperationalError) as locked,
            impatient.begin() as conn,
        ):
            conn.execute(text("INSERT INTO dirty (contract_key, token) VALUES ('A', 1)"))
        assert "locked" in str(locked.value)
        assert store_unavailable(locked.value)
        with pytest.raises(OperationalError) as bad, impatient.connect() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
        assert not store_unavailable(bad.value)
    finally:
        impatient.dispose()
        engine.dispose()


def test_errors_straight_from_the_driver_are_classified_as_through_sqlalchemy(tmp_path: Path) -> None:
    # COPY and prepared statements go around SQLAlchemy, and so do their errors.
    assert store_unavailable(psycopg.OperationalError("consuming input failed: server closed the connection"))
    assert store_unavailable(psycopg.InterfaceError("the connection is lost"))
    assert not store_unavailable(psycopg.errors.UndefinedTable('relation "no_such_table" does not exist'))
    path = tmp_path / "s.db"
    holder, impatient = sqlite3.connect(path, isolation_level=None), sqlite3.connect(path, timeout=0)
    try:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as locked:
            impatient.execute("INSERT INTO t VALUES (1)")
        assert store_unavailable(locked.value)
        with pytest.raises(sqlite3.OperationalError) as bad:
            impatient.execute("SELECT * FROM no_such_table")
        assert not store_unavailable(bad.value)
    finally:
        holder.close()
        impatient.close()
