"""The facts of the machine a table was measured on."""
from __future__ import annotations

import os
import platform
import sqlite3
import sys

import psutil
import psycopg


def facts(pg_url: str | None) -> dict[str, str]:
    out = {
        "cpu": f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
    }
    if pg_url:
        try:
            with psycopg.connect(pg_url, connect_timeout=5) as conn:
                row = conn.execute("SHOW server_version").fetchone()
            out["postgresql"] = str(row[0]) if row else "?"
        except psycopg.Error as exc:
            out["postgresql"] = f"unavailable ({type(exc).__name__})"
    return out
