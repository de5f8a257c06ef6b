"""Crash safety: `revtrace serve` is killed with SIGKILL at random moments of a large ingest and restarted on the
same store, while clients retry every batch whose answer they did not get. Afterwards every acknowledged event
must be stored exactly once, replays must come back as duplicates, and the traces and open mismatches must
equal those of a run of the same stream with no crash. With `--fault outage` the server runs on and its
PostgreSQL goes away instead (every connection reset, new ones refused for a while): the same checks, and
every request the outage touched answered 503 rather than any other error.

    python -m benchmarks.crash --db sqlite|postgresql --events N --kills K --seed S
    python -m benchmarks.crash --db postgresql --fault outage --events N --kills K --seed S

The same harness runs, smaller, in tests/test_crash.py. Here are the whole check and its command line; its
parts are the crash_*.py modules beside this one, and the server it kills is benchmarks/server.py's."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from benchmarks.crash_outcome import compare
from benchmarks.crash_report import Report
from benchmarks.crash_run import FAULTS, Options, run_once
from benchmarks.crash_store import scratch_database
from benchmarks.crash_stream import build_stream
from collector.db import normalize_url

DESCRIPTION = "Kill revtrace serve during a large ingest; compare with a run without crashes."
PG_ADMIN_DEFAULT = os.environ.get("REVTRACE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def check_crash_safety(crash_url: str, reference_url: str, opts: Options, workdir: Path) -> Report:
    """The whole check: the stream into `crash_url` with faults, then into `reference_url` without, compared.
    Both URLs name fresh, empty stores of the same kind."""
    # One `now` for both runs, a whole hour, so that the stream is the same and far from every window's edge.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    stream = build_stream(opts.events, opts.seed, opts.batch_size, now)
    crash = asyncio.run(run_once(crash_url, stream, opts, workdir, "crash", opts.faults))
    reference = asyncio.run(run_once(reference_url, stream, opts, workdir, "reference", 0))
    return Report(make_url(normalize_url(crash_url)).get_backend_name(), stream.events, len(stream.batches),
                  len(stream.contracts), crash, reference, compare(crash.outcome, reference.outcome), opts.fault)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.crash", description=DESCRIPTION)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--events", type=int, default=Options.events)
    ap.add_argument("--fault", choices=FAULTS, default=Options.fault,
                    help="kill: SIGKILL the server and restart it; outage: take its PostgreSQL away for a while")
    ap.add_argument("--kills", "--faults", dest="faults", type=int, default=Options.faults, help="how many faults")
    ap.add_argument("--seed", type=int, default=Options.seed)
    ap.add_argument("--batch-size", type=int, default=Options.batch_size)
    ap.add_argument("--clients", type=int, default=Options.clients)
    ap.add_argument("--max-fault-delay", type=float, default=Options.max_fault_delay, help="seconds")
    ap.add_argument("--pg", default=PG_ADMIN_DEFAULT, help="a PostgreSQL URL on the server to create databases on")
    ap.add_argument("--workdir", type=Path, help="keep stores (SQLite) and server logs here")
    args = ap.parse_args(argv)
    if args.fault == "outage" and args.db != "postgresql":
        ap.error("--fault outage takes a PostgreSQL store away through a proxy: it needs --db postgresql")
    opts = Options(events=args.events, faults=args.faults, fault=args.fault, seed=args.seed,
                   batch_size=args.batch_size, clients=args.clients, max_fault_delay=args.max_fault_delay)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="revtrace-crash-")))
        workdir.mkdir(parents=True, exist_ok=True)
        if args.db == "sqlite":
            stores = (workdir / "crash.db", workdir / "reference.db")
            if any(p.exists() for p in stores):
                ap.error(f"{workdir} already holds a crash.db or reference.db; the runs need fresh stores")
            urls = (f"sqlite:///{stores[0]}", f"sqlite:///{stores[1]}")
        else:
            urls = (stack.enter_context(scratch_database(args.pg)), stack.enter_context(scratch_database(args.pg)))
        report = check_crash_safety(urls[0], urls[1], opts, workdir)
        print(report.text())
        return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
