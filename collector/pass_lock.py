"""One reconciliation pass at a time over one store: a PostgreSQL advisory lock across replicas, a file
lock beside an SQLite database across processes. Both are let go by the system when their holder dies, so
a killed server never leaves the store locked."""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

PASS_LOCK = 0x72657674  # "revt": the advisory lock of the reconciliation pass


@contextmanager
def pass_lock(engine: Engine, wait: bool) -> Iterator[bool]:
    """Yields whether the lock is held; without `wait` it is only tried."""
    if engine.dialect.name == "postgresql":
        with _advisory(engine, wait) as held:
            yield held
        return
    path = engine.url.database
    if engine.dialect.name != "sqlite" or not path or path == ":memory:":
        yield True
        return
    fd = os.open(f"{path}-pass.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _advisory(engine: Engine, wait: bool) -> Iterator[bool]:
    with engine.connect() as conn:
        if wait:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PASS_LOCK})
            held = True
        else:
            held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PASS_LOCK}).scalar())
        conn.commit()
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PASS_LOCK})
                conn.commit()
