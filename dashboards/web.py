"""Web pages (placeholder until the dashboards land)."""
from __future__ import annotations

from concurrent.futures import Executor

from aiohttp import web

from collector.assurance import Assurance
from collector.queries import Reads


class Pages:
    def __init__(self, reads: Reads, assurance: Assurance, executor: Executor):
        self.reads, self.assurance, self.executor = reads, assurance, executor

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/", self.index)]

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text="revtrace")
