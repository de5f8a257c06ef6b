"""The collector's HTTP API under /api/v1 (DESIGN.md's contract), plus /metrics, /healthz and /readyz."""
from __future__ import annotations

import asyncio
import re
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from collector import conventions as c
from collector.assurance import Assurance
from collector.auth import error, requires
from collector.metrics import CollectorMetrics
from collector.model import CanonicalEvent, EventError, parse_raw, parse_time
from collector.outage import RETRY_AFTER_S, reason
from collector.queries import BadQuery, Reads, parse_limit
from collector.writer import INLINE_EVENTS, BatchWriter, Overloaded

MAX_EVENTS = 10_000
NDJSON = "application/x-ndjson"
Evaluate = Callable[[bool], Awaitable[dict[str, Any]]]
SloReport = Callable[[], Awaitable[dict[str, Any]]]


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def ok(value: Any) -> web.Response:
    return web.json_response(value, dumps=dumps)


@dataclass
class CollectorApi:
    engine: Engine
    writer: BatchWriter
    reads: Reads
    assurance: Assurance
    metrics: CollectorMetrics
    registry: CollectorRegistry
    executor: Executor
    evaluate: Evaluate
    slo_report: SloReport | None = None

    def routes(self, metrics_public: bool = False) -> list[web.RouteDef]:
        """metrics_public serves /metrics without a token, for a Prometheus that sends none."""
        return [
            web.post("/api/v1/events", self.post_events),
            web.get("/api/v1/contracts", self.list_contracts),
            web.get("/api/v1/contracts/{contract_id}", self.get_contract),
            web.get("/api/v1/mismatches", self.list_mismatches),
            web.get("/api/v1/assurance", self.get_assurance),
            web.post("/api/v1/admin/evaluate", self.post_evaluate),
            web.get("/metrics", self.get_metrics_public if metrics_public else self.get_metrics),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
        ]

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- ingest

    @requires(c.SCOPE_INGEST)
    async def post_events(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            items = _ndjson(body) if request.content_type == NDJSON else _json_array(body)
        except ValueError as exc:
            return error(400, f"unreadable body: {exc}")
        if len(items) > MAX_EVENTS:
            return error(413, f"{len(items)} events in one request; at most {MAX_EVENTS}")
        # A large body is parsed on the writer's thread (see BatchWriter), a small one here.
        if len(items) > INLINE_EVENTS:
            good, refused = await self.writer.on_writer_thread(_parse_all, items)
        else:
            good, refused = _parse_all(items)
        rejected = []
        for i, err in refused:
            rejected.append({"index": i, "error": str(err)})
            self.metrics.rejected.labels(source=_source_of(items[i]), reason=err.field.split(".")[0]).inc()
        try:
            new = await self.writer.submit(good)
        except Overloaded as exc:
            return web.json_response({"error": f"busy: {exc}; retry the whole batch"}, status=429,
                                     headers={"Retry-After": "1"})
        accepted = sum(new)
        tally: Tally[tuple[str, str]] = Tally((ev.source, ev.type) for ev, n in zip(good, new, strict=True) if n)
        for (source, type_), n in tally.items():
            self.metrics.ingested.labels(source=source, type=type_).inc(n)
        for source, n in Tally(ev.source for ev, n in zip(good, new, strict=True) if not n).items():
            self.metrics.duplicates.labels(source=source).inc(n)
        return ok({"accepted": accepted, "duplicates": len(good) - accepted, "rejected": rejected})

    # -- reads

    @requires(c.SCOPE_READ)
    async def list_contracts(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            page = await self._run(self.reads.contracts, q.get("stage") or None, q.get("mismatch") or None,
                                   parse_limit(q.get("limit")), q.get("cursor"))
        except BadQuery as exc:
            return error(400, str(exc))
        return ok(page.as_json())

    @requires(c.SCOPE_READ)
    async def get_contract(self, request: web.Request) -> web.Response:
        cid = request.match_info["contract_id"]
        trace = await self._run(self.reads.trace, cid)
        if trace is None:
            return error(404, f"no contract {cid!r}")
        return ok(trace)

    @requires(c.SCOPE_READ)
    async def list_mismatches(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            page = await self._run(self.reads.mismatches, q.get("kind") or None, q.get("state") or None,
                                   q.get("contract_id") or None, parse_limit(q.get("limit")), q.get("cursor"))
        except BadQuery as exc:
            return error(400, str(exc))
        return ok(page.as_json())

    @requires(c.SCOPE_READ)
    async def get_assurance(self, request: web.Request) -> web.Response:
        try:
            start = _when(request.query.get("from"), "from")
            end = _when(request.query.get("to"), "to")
        except BadQuery as exc:
            return error(400, str(exc))
        slo = await self.slo_report() if self.slo_report is not None else {}
        return ok(await self._run(self.assurance.summary, start, end, slo))

    # -- admin

    @requires(c.SCOPE_ADMIN)
    async def post_evaluate(self, request: web.Request) -> web.Response:
        raw = await request.read()
        full = False
        if raw.strip():
            try:
                opts = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return error(400, f"unreadable body: {exc}")
            if not isinstance(opts, dict) or not isinstance(opts.get("full", False), bool):
                return error(400, 'full: must be true or false, as {"full": true}')
            full = opts.get("full", False)
        return ok(await self.evaluate(full))

    # -- operations

    @requires(c.SCOPE_READ)
    async def get_metrics(self, request: web.Request) -> web.Response:
        return await self.get_metrics_public(request)

    async def get_metrics_public(self, request: web.Request) -> web.Response:
        payload = await self._run(generate_latest, self.registry)
        resp = web.Response(body=payload)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def healthz(self, request: web.Request) -> web.Response:
        return ok({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        try:
            await self._run(self._ping)
        except Exception as exc:  # not ready, whatever the reason; the reason is said
            return error(503, f"store unavailable ({reason(exc)})", headers={"Retry-After": str(RETRY_AFTER_S)})
        return ok({"status": "ready", "pending_events": self.writer.pending})

    def _ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))


_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])
_SOURCE = re.compile(rb'"source"\s*:\s*"(crm|billing|erp|payment)"')


def _parse_all(items: Sequence[bytes | msgspec.Raw]) -> tuple[list[CanonicalEvent], list[tuple[int, EventError]]]:
    """The good events, and the index and error of each refused one."""
    good, refused = [], []
    for i, item in enumerate(items):
        try:
            good.append(parse_raw(item))
        except EventError as exc:
            refused.append((i, exc))
    return good, refused


def _json_array(body: bytes) -> list[msgspec.Raw]:
    """The events of a JSON array, each still as its JSON text: each is then checked on its own."""
    if not body.strip():
        raise ValueError("empty body; send a JSON array of events")
    try:
        return _ARRAY.decode(body)
    except msgspec.ValidationError:
        raise ValueError("want a JSON array of events (or NDJSON with Content-Type application/x-ndjson)") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None


def _ndjson(body: bytes) -> list[bytes]:
    """One event per line; a line that is not JSON is refused alone, beside the good ones."""
    if not body.strip():
        raise ValueError("empty body; send one JSON event per line")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    return [line for line in body.splitlines() if line.strip()]


def _source_of(item: bytes | msgspec.Raw) -> str:
    """The source a refused event names, for the rejected counter's label (never an id)."""
    m = _SOURCE.search(bytes(item))
    return m.group(1).decode() if m else "unknown"


def _when(raw: str | None, name: str) -> datetime | None:
    if not raw:
        return None
    try:
        return parse_time(raw, name)[0]
    except EventError as exc:
        raise BadQuery(str(exc)) from None
