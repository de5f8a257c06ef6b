"""The web pages: overview, contract trace, contract and mismatch lists, for finance leads (how much money
is at risk, and where) and SREs (where the workflow stands). Every store read is a blocking call and runs
in the executor; the overview reads only aggregates and one short page, so it stays fast at any size."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from decimal import Decimal
from typing import Any, TypeVar

from aiohttp import web

from collector import conventions as c
from collector.assurance import Assurance
from collector.auth import Tokens
from collector.money import show
from collector.queries import BadQuery, Reads
from dashboards import charts
from dashboards.assets import Assets, packaged_files
from dashboards.render import Templates
from dashboards.session import Session

NEWEST = 20
PAGE_SIZE = 50
T = TypeVar("T")


class Pages:
    def __init__(self, reads: Reads, assurance: Assurance, executor: Executor, tokens: Tokens,
                 page_size: int = PAGE_SIZE):
        self.reads, self.assurance, self.executor, self.page_size = reads, assurance, executor, page_size
        self.assets = Assets(packaged_files())
        self.templates = Templates(self.assets)
        self.session = Session(tokens, self.templates)

    def routes(self) -> list[web.RouteDef]:
        # Guarded here rather than marked with collector.auth.requires: the API's middleware would answer a
        # browser with JSON 401, where a person needs the login page.
        guard = self.session.guard
        return [
            web.get("/", guard(self.overview)),
            web.get("/contracts", guard(self.contract_list)),
            web.get("/contracts/{contract_id}", guard(self.contract)),
            web.get("/mismatches", guard(self.mismatch_list)),
            *self.session.routes(),
            *self.assets.routes(),
        ]

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def unavailable(self, message: str) -> web.Response:
        """What a person sees while the store is out of reach (collector/outage.py)."""
        return self.templates.page("unavailable.html", status=503, message=message)

    async def overview(self, request: web.Request) -> web.Response:
        summary, by_stage, newest = await asyncio.gather(
            self._run(self.assurance.summary, None, None, {}),
            self._run(self.reads.stage_counts),
            self._run(self.reads.newest_open, NEWEST))
        # Building a figure takes plotly some milliseconds of CPU; keep them off the event loop too.
        risk_chart = await self._run(charts.risk_by_kind, summary["open_mismatches"])
        funnel_chart = await self._run(charts.stage_funnel, by_stage)
        return self.templates.page(
            "overview.html", nav="overview", headlines=headlines(summary), kinds=summary["open_mismatches"],
            lags=summary["lags"], by_stage=by_stage, total=sum(by_stage.values()), newest=newest,
            risk_chart=risk_chart, funnel_chart=funnel_chart)

    async def contract(self, request: web.Request) -> web.Response:
        cid = request.match_info["contract_id"]
        trace = await self._run(self.reads.trace, cid)
        if trace is None:
            return self.templates.page("missing.html", status=404, contract_id=cid)
        timeline = await self._run(charts.event_timeline, trace["events"])
        found = sorted(trace["mismatches"], key=lambda m: (m["state"] != "open", m["detected_at"] or ""))
        return self.templates.page("contract.html", nav="contracts", trace=trace, mismatches=found,
                                   timeline_chart=timeline, stages=c.STAGES)

    async def contract_list(self, request: web.Request) -> web.Response:
        q = request.query
        stage, kind = q.get("stage") or None, q.get("mismatch") or None
        try:
            page = await self._run(self.reads.contracts, stage, kind, self.page_size, q.get("cursor") or None)
        except BadQuery as exc:
            return self._bad_query(exc)
        return self.templates.page("contracts.html", nav="contracts", items=page.items, stage=stage, kind=kind,
                                   stages=c.STAGES, kinds=c.MISMATCH_KINDS, paging=paging(request, page.next_cursor))

    async def mismatch_list(self, request: web.Request) -> web.Response:
        q = request.query
        kind, state = q.get("kind") or None, q.get("state") or None
        try:
            page = await self._run(self.reads.mismatches, kind, state, None, self.page_size, q.get("cursor") or None)
        except BadQuery as exc:
            return self._bad_query(exc)
        return self.templates.page("mismatches.html", nav="mismatches", items=page.items, kind=kind, state=state,
                                   kinds=c.MISMATCH_KINDS, paging=paging(request, page.next_cursor))

    def _bad_query(self, exc: BadQuery) -> web.Response:
        return self.templates.page("bad_query.html", status=400, message=str(exc))


def paging(request: web.Request, next_cursor: str | None) -> dict[str, str | None]:
    """Links to the next page and back to the first, keeping the filters."""
    filters = {k: v for k, v in request.query.items() if k != "cursor"}
    rel = request.rel_url
    return {
        "next_url": str(rel.with_query({**filters, "cursor": next_cursor})) if next_cursor else None,
        "first_url": str(rel.with_query(filters)) if "cursor" in request.query else None,
    }


def headlines(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per currency: money at each stage, leakage, and the money at risk in open mismatches."""
    at_risk: dict[str, Decimal] = {}
    for row in summary["open_mismatches"].values():
        for cur, amount in row["amount_at_risk"].items():
            at_risk[cur] = at_risk.get(cur, Decimal(0)) + Decimal(amount)
    zero = show(Decimal(0))
    out = []
    for cur in sorted(set(summary["currencies"]) | set(summary["leakage"]) | set(at_risk)):
        money = summary["currencies"].get(cur, {})
        leakage, risk = summary["leakage"].get(cur, zero), at_risk.get(cur, Decimal(0))
        out.append({"currency": cur, **{k: money.get(k, zero) for k in ("booked", "invoiced", "posted", "collected")},
                    "leakage": leakage, "leaking": Decimal(leakage) != 0, "at_risk": show(risk), "risky": risk != 0})
    return out
