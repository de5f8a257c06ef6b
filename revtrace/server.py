"""The wiring of `revtrace serve`: engines, the store, the batch writer, the reconciliation scheduler, the
API and the pages, built from Settings and torn down in reverse order."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry

from collector import auth, outage, pg_upkeep
from collector.api import CollectorApi
from collector.assurance import Assurance
from collector.db import make_engine, normalize_url, upgrade
from collector.ingest import EventStore
from collector.metrics import CollectorMetrics, StoreGauges
from collector.pass_worker import PassWorker, run_in
from collector.queries import Reads
from collector.writer import BatchWriter
from dashboards.web import Pages
from revtrace.config import Settings

log = logging.getLogger("revtrace")
# How often tables are vacuumed where autovacuum is off (collector/pg_upkeep.py): autovacuum's own naptime.
UPKEEP_EVERY_S = 60


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class Server:
    def __init__(self, settings: Settings, clock_us: Callable[[], int] = wall_clock_us,
                 registry: CollectorRegistry | None = None):
        self.settings = settings
        self.clock_us = clock_us
        self.registry = registry if registry is not None else CollectorRegistry()
        self.engine = make_engine(settings.database_url, writer=True,
                                  sync=settings.sqlite_synchronous if settings.database_url.startswith("sqlite")
                                  else "full")
        self.read_engine = make_engine(settings.database_url, writer=False)
        self.executor = ThreadPoolExecutor(max_workers=6, thread_name_prefix="revtrace-db")
        # Write rounds at once (see BatchWriter): SQLite takes one writer at a time.
        self.write_rounds = 1 if self.engine.dialect.name == "sqlite" else 2
        self.ingest_executor = ThreadPoolExecutor(max_workers=self.write_rounds, thread_name_prefix="revtrace-ingest")
        self.metrics = CollectorMetrics(self.registry)
        self.health = outage.StoreHealth(self.registry)
        self.registry.register(StoreGauges(self.read_engine))
        self.store = EventStore(self.engine, clock_us)
        self.passes = PassWorker(normalize_url(settings.database_url), settings.policy)
        self.reads = Reads(self.read_engine, settings.policy)
        self.assurance = Assurance(self.read_engine)
        self._evaluating = asyncio.Lock()
        self.vacuum = pg_upkeep.Vacuum(self.engine)
        self._stopping = False
        self._scheduler: AsyncIOScheduler | None = None
        self.writer: BatchWriter | None = None
        self.last_pass: dict[str, Any] | None = None

    async def evaluate(self, full: bool = False, wait: bool = True) -> dict[str, Any]:
        """One reconciliation pass (the scheduler's and POST /api/v1/admin/evaluate's), never two at once."""
        async with self._evaluating:
            result = await asyncio.get_running_loop().run_in_executor(
                self.executor, run_in, self.passes, full, wait, self.clock_us())
        self.metrics.lag.add(result.lags)
        self.last_pass = result.as_json()
        return self.last_pass

    async def _scheduled_pass(self) -> None:
        try:
            await self.evaluate(False, wait=False)
        except Exception as exc:  # the next pass retries; a failing store must not stop the scheduler
            if outage.store_unavailable(exc):
                self.health.failed("scheduled pass", exc)
            else:
                log.exception("scheduled reconciliation pass failed")
        else:
            self.health.reached()

    async def _upkeep(self) -> None:
        try:
            done = await asyncio.get_running_loop().run_in_executor(self.executor, self.vacuum.run)
        except Exception as exc:  # the next round retries; upkeep must not stop the scheduler
            if outage.store_unavailable(exc):
                self.health.failed("upkeep", exc)
            elif not self._stopping:
                log.exception("vacuum of the store failed")
            return
        if done:
            log.info("vacuumed %s (autovacuum is off for them)", ", ".join(done))

    def app(self) -> web.Application:
        tokens = auth.Tokens(self.settings.tokens)
        pages = Pages(self.reads, self.assurance, self.executor, tokens)
        app = web.Application(client_max_size=self.settings.max_body_bytes,
                              middlewares=[outage.middleware(self.health, pages.unavailable),
                                           auth.middleware(tokens)])
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        self.writer = BatchWriter(self.store, self.ingest_executor, self.settings.max_pending_events,
                                  self.write_rounds)
        api = CollectorApi(self.read_engine, self.writer, self.reads, self.assurance, self.metrics, self.registry,
                           self.executor, self.evaluate)
        app.add_routes(api.routes(metrics_public=self.settings.metrics_public))
        app.add_routes(pages.routes())
        return app

    async def _start(self, app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, upgrade, self.engine)
        assert self.writer is not None
        self.writer.start()
        scheduler = AsyncIOScheduler()
        if self.settings.evaluate_every > 0:
            self.passes.start()  # the first scheduled pass should not wait for its processes to start
            scheduler.add_job(self._scheduled_pass, "interval", seconds=self.settings.evaluate_every,
                              max_instances=1, coalesce=True, id="reconcile")
        if self.engine.dialect.name == "postgresql":
            scheduler.add_job(self._upkeep, "interval", seconds=UPKEEP_EVERY_S, max_instances=1, coalesce=True,
                              id="upkeep")
        if scheduler.get_jobs():
            scheduler.start()
            self._scheduler = scheduler

    async def _stop(self, app: web.Application) -> None:
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        await asyncio.get_running_loop().run_in_executor(self.executor, self.vacuum.cancel)
        if self.writer is not None:
            await self.writer.stop()
        async with self._evaluating:  # let a running pass finish its chunk
            pass
        await asyncio.get_running_loop().run_in_executor(self.executor, self.passes.shutdown)
        self.executor.shutdown(wait=True)
        self.ingest_executor.shutdown(wait=True)
        self.store.close()
        self.engine.dispose()
        self.read_engine.dispose()
