"""The stores of the crash harness: fresh PostgreSQL databases for the runs, and what a store holds, read
directly rather than through the API under test."""
from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import create_engine, text

from collector.db import make_engine, normalize_url


@dataclass
class StoreCheck:
    stored: int
    lost: int  # acknowledged, not stored
    doubled: int  # (source, event_id) stored more than once
    unexpected: int  # stored, never sent


def check_store(database_url: str, acknowledged: set[tuple[str, str]]) -> StoreCheck:
    engine = make_engine(database_url, writer=False)
    try:
        with engine.connect() as conn:
            doubled = conn.execute(text(
                "SELECT source, event_id, count(*) FROM events GROUP BY 1, 2 HAVING count(*) > 1")).all()
            stored = {(r[0], r[1]) for r in conn.execute(text("SELECT source, event_id FROM events"))}
    finally:
        engine.dispose()
    return StoreCheck(len(stored), len(acknowledged - stored), len(doubled), len(stored - acknowledged))


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of `server_url`, dropped afterwards."""
    admin = create_engine(normalize_url(server_url), isolation_level="AUTOCOMMIT")
    name = f"revtrace_crash_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield normalize_url(server_url).rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

