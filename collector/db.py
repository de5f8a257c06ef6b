"""Engines and schema upgrades. SQLite runs in WAL mode with full sync, so an acknowledged event survives a
crash; PostgreSQL is taken from a plain `postgresql://` URL as given."""
from __future__ import annotations

import select
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError

MIGRATIONS = Path(__file__).with_name("migrations")


def normalize_url(url: str) -> str:
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


SYNC_MODES = ("full", "normal")


def make_engine(url: str, writer: bool = True, sync: str = "full", **kwargs: Any) -> Engine:
    """An engine; on SQLite a writer takes the write lock at BEGIN, a reader (writer=False) never does.

    sync "full" waits at every commit until it is on disk, so an acknowledged event survives a power loss;
    "normal" does not wait (SQLite syncs at checkpoints, PostgreSQL's synchronous_commit is off): a commit
    then survives a crash of revtrace but maybe not of the machine, and the store stays consistent either
    way. Reconciliation writes derived state with "normal": what a power loss takes back, the next pass
    recomputes, since the dirty marks it cleared come back with it."""
    if sync not in SYNC_MODES:
        raise ValueError(f"sync: must be one of {', '.join(SYNC_MODES)}")
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, **kwargs)
        # Every pooled connection keeps a page cache of its own: the one writer gets a large one, readers a
        # smaller one each, so that a busy server stays well inside its memory.
        cache_kib = 65536 if writer else 16384
        event.listen(engine, "connect", lambda conn, rec: _sqlite_pragmas(conn, sync, cache_kib))
        # pysqlite's own transaction handling defers BEGIN; take the write lock at BEGIN instead, so two
        # writers queue on busy_timeout rather than fail on lock upgrade.
        begin = "BEGIN IMMEDIATE" if writer else "BEGIN"
        event.listen(engine, "begin", lambda conn: conn.connection.dbapi_connection.execute(begin))
        return engine
    kwargs.setdefault("pool_size", 8)
    if sync == "normal" and url.startswith("postgresql"):
        kwargs.setdefault("connect_args", {"options": "-c synchronous_commit=off"})
    engine = create_engine(url, **kwargs)
    _check_before_lending(engine)
    return engine


PING_IDLE_S = 1.0
_IDLE_SINCE = "revtrace_idle_since"


def _check_before_lending(engine: Engine) -> None:
    """Check a pooled PostgreSQL connection before lending it, without a round trip where none is needed.
    An idle connection has nothing to read unless its server closed it (or said why it will), so a socket
    that polls readable is dropped at no cost; one idle for PING_IDLE_S is pinged as well, for a server gone
    without a word. A ping at every checkout (pool_pre_ping) is a round trip more for each single event,
    ~250 us of its ~1 ms here. Either failure invalidates the pool, as pool_pre_ping does."""
    def checkin(dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None:  # a new connection
            return
        try:
            closed = _readable(dbapi_conn.fileno())
        except Exception as exc:  # a connection closed on this side has no socket left
            raise InvalidatePoolError(f"unusable connection: {exc}") from exc
        if closed:
            raise InvalidatePoolError("the server closed the connection while it was idle")
        if time.monotonic() - since < PING_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # whatever the reason, this connection cannot serve
            raise InvalidatePoolError(f"ping failed: {exc}") from exc

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


# What the WAL file is cut back to once a checkpoint has emptied it. A full pass over 1M contracts, read
# all along by the examiners, grows it to 2.9 GB beside a 2.3 GB database, and SQLite would keep all of it.
WAL_KEEP_BYTES = 64 * 2**20


def _sqlite_pragmas(dbapi_conn: Any, synchronous: str, cache_kib: int) -> None:
    dbapi_conn.isolation_level = None  # BEGIN is issued by the "begin" listener
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
    cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute(f"PRAGMA cache_size=-{cache_kib}")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` with Alembic (what `revtrace db upgrade` runs)."""
    _alembic(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back down to `revision`."""
    _alembic(engine, command.downgrade, revision)


def _alembic(engine: Engine, action: Any, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        action(cfg, revision)
