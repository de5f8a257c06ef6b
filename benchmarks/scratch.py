"""Scratch stores: a SQLite file in a temp dir, or a PostgreSQL database `revtrace_bench_*`, always removed."""
from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
KINDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Store:
    kind: str
    url: str  # for REVTRACE_DATABASE_URL
    path: Path | None = None  # the SQLite file
    pg_name: str | None = None

    @property
    def pg_dsn(self) -> str:
        assert self.pg_name is not None
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + self.pg_name


@contextlib.contextmanager
def scratch(kind: str, pg_admin: str = PG_ADMIN) -> Iterator[Store]:
    if kind == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="revtrace_bench_"))
        path = folder / "revtrace.db"
        try:
            yield Store(kind, f"sqlite:///{path}", path=path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    elif kind == "postgresql":
        name = f"revtrace_bench_{secrets.token_hex(4)}"
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield Store(kind, pg_admin.rsplit("/", 1)[0] + "/" + name, pg_name=name)
        finally:
            with psycopg.connect(pg_admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    else:
        raise ValueError(f"unknown database kind {kind!r}; known: {', '.join(KINDS)}")


def size_of(store: Store) -> int:
    """Bytes on disk, for the table's notes."""
    if store.path is not None:
        return sum(p.stat().st_size for p in store.path.parent.iterdir() if p.is_file())
    with psycopg.connect(store.pg_dsn) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0
