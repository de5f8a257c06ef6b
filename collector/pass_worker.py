"""Reconciliation passes in a process of their own. A pass is Python-bound; in the server's process it
would share one interpreter lock with ingest and the API, so a large pass would slow every request."""
from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context, parent_process
from multiprocessing.util import Finalize
from typing import Any

from sqlalchemy import event

from collector import gc_policy
from collector.db import make_engine
from collector.evaluate import PassResult, Reconciler, start_examiner
from collector.policy import Policy

_reconciler: Reconciler | None = None  # this worker process's, built once by _start
_examiners: Examiners | None = None


class Examiners:
    """The pass worker's pool of examining processes, started with the worker (`start`) and kept from pass
    to pass: starting one costs a second or more (a new interpreter and its imports), more than a whole
    incremental pass. A pool found broken is started again at the next pass. Shut down before the worker
    exits, which would otherwise wait on its idle children forever."""

    def __init__(self, url: str, policy: Policy):
        self.url, self.policy = url, policy
        self.processes = os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def __call__(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = examiner_pool(self.url, self.policy, self.processes)
            # At exit multiprocessing runs finalizers of priority >= 0, highest first, before it joins the
            # process's children; the pool's queues close theirs at priority 10, so this one goes first.
            Finalize(self, self.shutdown, exitpriority=100)
        return self._pool

    def start(self) -> None:
        """Start every examiner now: a pool starts its processes one by one as work comes, and the first
        pass with work would wait seconds for them."""
        # Handed out together, before any process is idle: each one starts a process of its own.
        list(self().map(_examiner_pid, range(self.processes)))

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def forget_broken(self) -> None:
        """An examiner died (killed, out of memory): the next pass starts a new pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _start(url: str, policy: Policy) -> None:
    global _reconciler, _examiners
    _follow_parent()
    engine = make_engine(url, writer=True, sync="normal")
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _checkpoint_less_often)
    _examiners = Examiners(url, policy)
    _examiners.start()
    _reconciler = Reconciler(engine, policy, lambda: time.time_ns() // 1000,
                             read_engine=make_engine(url, writer=False), examiners=_examiners)
    # The worker keeps Python's collector as it is: with the bulk thresholds its cyclic garbage (SQLite's
    # path makes some) waited for full collections that hardly ever came, and over four full passes at 1M
    # its RSS grew 240 -> 340 MiB where it stays at 207, in the same time a pass.


def _checkpoint_less_often(dbapi_conn: Any, _record: Any) -> None:
    """A commit that finds the WAL past its limit checkpoints it, and a checkpoint syncs the database. The
    pass commits every chunk without waiting for the disk; at SQLite's default limit (1,000 pages) most of
    its commits would still wait on a checkpoint's sync, and the first one after a burst of ingest would
    copy that burst. It checkpoints past 10,000 pages (40 MB) instead."""
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=10000")


def examiner_pool(url: str, policy: Policy, processes: int | None = None) -> ProcessPoolExecutor:
    """Processes that examine chunks of a pass while the pass writes, one per core by default; whoever
    opens them shuts them down (see Examiners)."""
    return ProcessPoolExecutor(processes or os.cpu_count() or 1, mp_context=get_context("spawn"),
                               initializer=_start_examiner, initargs=(url, policy))


def _examiner_pid(_: int) -> int:
    return os.getpid()


def _start_examiner(url: str, policy: Policy) -> None:
    _follow_parent()
    start_examiner(url, policy)
    gc_policy.for_bulk_work()


def _follow_parent() -> None:
    # Ctrl-C in a terminal reaches the whole process group; the server shuts its workers down itself, and a
    # worker interrupted on its own would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, name="revtrace-exit-with-parent", daemon=True).start()


def _exit_with_parent() -> None:
    """A server killed outright (SIGKILL) cannot stop its worker: the worker stops itself, and so do the
    examiners of its pass. A pass cut short leaves nothing half done; each chunk is one transaction and
    the dirty marks remain."""
    parent = parent_process()
    if parent is not None:
        parent.join()
        os._exit(0)


def _run(full: bool, wait: bool, now_us: int) -> PassResult:
    if _reconciler is None or _examiners is None:  # pragma: no cover - the pool's initializer always ran
        raise RuntimeError("pass worker not started")
    try:
        return _reconciler.run(full, wait, now_us)
    except BrokenProcessPool:
        _examiners.forget_broken()
        raise


class PassWorker:
    """One worker process that runs passes over one store, started on first use."""

    def __init__(self, url: str, policy: Policy):
        self.url, self.policy = url, policy
        self._pool: ProcessPoolExecutor | None = None

    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the server's threads and open connections must not be copied.
            self._pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_start,
                                             initargs=(self.url, self.policy))
        return self._pool

    def start(self) -> None:
        """Start the worker and its examiners now, in the background, rather than at the first pass."""
        self.pool().submit(os.getpid)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def run_in(worker: PassWorker, full: bool, wait: bool, now_us: int) -> PassResult:
    """Blocking: one pass in the worker process (call it from a thread)."""
    return worker.pool().submit(_run, full, wait, now_us).result()
