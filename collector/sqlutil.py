"""The few statements whose spelling differs between SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import BigInteger, Connection, Float, Integer, String, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql

Rows = Sequence[dict[str, Any]]  # rows as dicts of the same columns


def insert_ignore(conn: Connection, table: Table, rows: Rows, keys: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO NOTHING."""
    if rows:
        _insert(conn, table, *_tuples(rows), f"ON CONFLICT ({', '.join(keys)}) DO NOTHING")


def upsert(conn: Connection, table: Table, rows: Rows, keys: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE every other column to the new value."""
    if rows:
        upsert_tuples(conn, table, *_tuples(rows), keys)


def upsert_tuples(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                  keys: Sequence[str]) -> None:
    """`upsert` of rows given as tuples in `columns` order, as a pass holds its contract rows."""
    _on_conflict_update(conn, table, columns, rows, keys, add=False)


def insert_tuples(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain INSERT of rows whose keys no other writer can hold: a key already stored fails the transaction.
    COPY on PostgreSQL: into contracts with its indexes, 17 us a row against 28 through unnest."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        with driver(conn).cursor() as cur:
            pg_copy(cur, table, columns, rows)
        return
    _insert(conn, table, columns, rows, "")


def pg_copy(cur: Any, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]], into: str = "") -> None:
    """COPY the rows into `into` (by default the table itself, whose column types they take), in binary:
    nothing to escape, so the client spends 0.9-1.1 us an event row against 1.6-1.7 in text, and the server
    less too."""
    with cur.copy(f"COPY {into or table.name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([_pg_type(table.c[c]) for c in columns])
        for row in rows:
            copy.write_row(row)


def add_to(conn: Connection, table: Table, rows: Rows, keys: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE every other column to its sum with the new value."""
    if rows:
        _on_conflict_update(conn, table, *_tuples(rows), keys, add=True)


def _tuples(rows: Rows) -> tuple[list[str], list[tuple[Any, ...]]]:
    cols = list(rows[0])
    return cols, [tuple(r[c] for c in cols) for r in rows]


def _on_conflict_update(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                        keys: Sequence[str], add: bool) -> None:
    if not rows:
        return
    others = [c for c in columns if c not in keys]
    sets = ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" if add else f"{c} = excluded.{c}" for c in others)
    _insert(conn, table, columns, rows, f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}")


def _insert(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]],
            conflict: str) -> None:
    """The rows in one go: on PostgreSQL as column arrays, on SQLite by the driver's executemany (SQLAlchemy
    would build and compile a statement each time, which costs more than the insert)."""
    if conn.dialect.name == "postgresql":
        casts, arrays = _pg_arrays(table, columns, rows)
        with driver(conn).cursor() as cur:
            cur.execute(f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({casts}) {conflict}",
                        arrays)
        return
    sqlite_many(conn, f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                f"{conflict}", rows)


def sqlite_rows(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """One SQLite statement straight through the driver, in the connection's transaction: SQLAlchemy's
    bookkeeping costs more than a small statement, and a single event's transaction is all small ones."""
    return list(driver(conn).execute(sql, params).fetchall())


def sqlite_many(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    driver(conn).executemany(sql, rows)


def among(conn: Connection, column: Any, values: Sequence[Any]) -> Any:
    """column IN values. On PostgreSQL the values travel as one array, unnested in a subquery: the planner
    then walks the array and seeks the column's index for each value, where `= ANY(array)` as a filter
    can make it scan a whole other index (every open mismatch, for each chunk of contracts)."""
    if conn.dialect.name == "postgresql":
        kind = BigInteger() if isinstance(column.type, (BigInteger, Integer)) else String()
        return column.in_(select(func.unnest(bindparam(None, list(values), type_=postgresql.ARRAY(kind)))))
    return column.in_(list(values))


def driver_rows_among(conn: Connection, sql: str, values: Sequence[str]) -> list[tuple[Any, ...]]:
    """The rows of `sql`, which ends in a text column, with "IN (values)" appended; straight through the
    driver as plain tuples, for reads of many rows. The values as one array on PostgreSQL (see `among`)."""
    if conn.dialect.name == "postgresql":
        with driver(conn).cursor() as cur:
            cur.execute(f"{sql} IN (SELECT unnest(%b::text[]))", (list(values),))
            return cur.fetchall()
    return sqlite_rows(conn, f"{sql} IN ({', '.join('?' * len(values))})", values)


def driver_rows_between(conn: Connection, sql: str, low: str, high: str) -> list[tuple[Any, ...]]:
    """The rows of `sql`, which ends in a text column, with "BETWEEN low AND high" appended (in the store's
    collation); straight through the driver as plain tuples."""
    if conn.dialect.name == "postgresql":
        with driver(conn).cursor() as cur:
            cur.execute(f"{sql} BETWEEN %s AND %s", (low, high))
            return cur.fetchall()
    return sqlite_rows(conn, f"{sql} BETWEEN ? AND ?", (low, high))


def driver(conn: Connection) -> Any:
    """The driver's own connection under this one (psycopg's for COPY and arrays)."""
    return conn.connection.driver_connection


def _pg_type(column: Any) -> str:
    t = column.type
    if isinstance(t, (BigInteger, Integer)):
        return "bigint"
    if isinstance(t, Float):
        return "double precision"
    return "text"


def _pg_arrays(table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list[list[Any]]]:
    """The columns of the rows as arrays, and their casts (%b::type[], ...) to unnest them in one statement.
    Arrays go in binary (%b): psycopg builds a 10,000-element one in a third of the time it takes in text."""
    types = [_pg_type(table.c[c]) for c in columns]
    # A float column's array must hold floats only: a binary array is of one element type.
    arrays = [list(values) if t != "double precision" else [None if v is None else float(v) for v in values]
              for values, t in zip(zip(*rows, strict=True), types, strict=True)]
    return ", ".join(f"%b::{t}[]" for t in types), arrays


def insert_rows(conn: Connection, table: Table, rows: Rows) -> None:
    """A plain INSERT of the rows, in one statement on PostgreSQL: a statement per row there also runs the
    table's statement triggers once per row."""
    if rows:
        _insert(conn, table, *_tuples(rows), "")


def update_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], key: str = "id") -> None:
    """UPDATE each row's other columns where `key` equals its own: one statement on PostgreSQL (the rows as
    arrays, see insert_rows), the driver's executemany on SQLite."""
    if not rows:
        return
    cols = [c for c in rows[0] if c != key]
    sets = ", ".join(f"{c} = u.{c}" for c in cols)
    if conn.dialect.name == "postgresql":
        casts, arrays = _pg_arrays(table, [key, *cols], [(r[key], *(r[c] for c in cols)) for r in rows])
        with driver(conn).cursor() as cur:
            cur.execute(f"UPDATE {table.name} SET {sets} FROM unnest({casts}) AS u({key}, {', '.join(cols)}) "
                        f"WHERE {table.name}.{key} = u.{key}", arrays)
        return
    sqlite_many(conn, f"UPDATE {table.name} SET {', '.join(f'{c} = ?' for c in cols)} WHERE {key} = ?",
                [(*(r[c] for c in cols), r[key]) for r in rows])
