"""The bulk statements of ingest, each in the fastest form its database has. PostgreSQL takes whole
columns as arrays (`unnest`) and rows by COPY; SQLite, the only writer while it holds BEGIN IMMEDIATE,
takes the driver's executemany and IN lists."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from collector.schema import events, ref_map
from collector.sqlutil import driver

CHUNK = 2000  # values per IN (...): few statements, well under every driver's parameter limit
EVENT_COLUMNS = ("source", "event_id", "type", "at_us", "contract_key", "received_us", "body")
_SQLITE_INSERT = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})")
_PG_STAGE = (f"CREATE TEMP TABLE IF NOT EXISTS incoming_events ({', '.join(EVENT_COLUMNS)}) "
             "ON COMMIT DELETE ROWS AS SELECT " + ", ".join(EVENT_COLUMNS) + " FROM events WITH NO DATA")
_PG_COPY = f"COPY incoming_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
_PG_MOVE = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) SELECT {', '.join(EVENT_COLUMNS)} FROM incoming_events "
            "ON CONFLICT (source, event_id) DO NOTHING RETURNING source, event_id")


def stored_keys(conn: Connection, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (source, event_id) are stored already."""
    if not keys:
        return set()
    if conn.dialect.name == "postgresql":
        with driver(conn).cursor() as cur:
            cur.execute("SELECT e.source, e.event_id FROM events e JOIN unnest(%s::text[], %s::text[]) "
                        "AS k(source, event_id) USING (source, event_id)",
                        ([k[0] for k in keys], [k[1] for k in keys]))
            return {(s, e) for s, e in cur.fetchall()}
    found: set[tuple[str, str]] = set()
    by_source: dict[str, list[str]] = {}
    for source, event_id in keys:
        by_source.setdefault(source, []).append(event_id)
    for source, ids in sorted(by_source.items()):
        ids.sort()
        for i in range(0, len(ids), CHUNK):  # by source, so that each lookup seeks the unique index
            q = select(events.c.event_id).where(events.c.source == source, events.c.event_id.in_(ids[i:i + CHUNK]))
            found.update((source, e) for e in conn.execute(q).scalars())
    return found


def insert_events(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> set[tuple[str, str]]:
    """Insert rows of EVENT_COLUMNS; answers the (source, event_id) that went in."""
    if not rows:
        return set()
    if conn.dialect.name == "postgresql":
        # Another replica may commit the same event meanwhile: its copy wins and ours is a duplicate.
        with driver(conn).cursor() as cur:
            cur.execute(_PG_STAGE)
            with cur.copy(_PG_COPY) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(_PG_MOVE)
            inserted = {(s, e) for s, e in cur.fetchall()}
            cur.execute("DELETE FROM incoming_events")  # ON COMMIT clears it too; a retry in this txn must not see it
            return inserted
    # SQLite: this is the only writer, and stored_keys found none of these, so every row is new.
    conn.exec_driver_sql(_SQLITE_INSERT, list(rows))
    return {(r[0], r[1]) for r in rows}


def claims(conn: Connection, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The contract each (kind, ref) was claimed for, of those claimed."""
    if not pairs:
        return {}
    if conn.dialect.name == "postgresql":
        with driver(conn).cursor() as cur:
            cur.execute("SELECT r.kind, r.ref, r.contract_key FROM ref_map r JOIN unnest(%s::text[], %s::text[]) "
                        "AS k(kind, ref) USING (kind, ref)", ([p[0] for p in pairs], [p[1] for p in pairs]))
            return {(k, r): key for k, r, key in cur.fetchall()}
    found: dict[tuple[str, str], str] = {}
    by_kind: dict[str, list[str]] = {}
    for kind, ref in pairs:
        by_kind.setdefault(kind, []).append(ref)
    for kind, refs in sorted(by_kind.items()):
        for i in range(0, len(refs), CHUNK):
            q = select(ref_map.c.ref, ref_map.c.contract_key).where(ref_map.c.kind == kind,
                                                                    ref_map.c.ref.in_(refs[i:i + CHUNK]))
            found.update(((kind, r), key) for r, key in conn.execute(q))
    return found


def event_pks(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The row ids of stored events."""
    out: dict[tuple[str, str], int] = {}
    by_source: dict[str, list[str]] = {}
    for source, event_id in keys:
        by_source.setdefault(source, []).append(event_id)
    for source, ids in sorted(by_source.items()):
        for i in range(0, len(ids), CHUNK):
            q = select(events.c.id, events.c.event_id).where(events.c.source == source,
                                                              events.c.event_id.in_(ids[i:i + CHUNK]))
            out.update(((source, eid), pk) for pk, eid in conn.execute(q))
    return out
