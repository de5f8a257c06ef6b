"""The crash harness's calls to the API under test: requests with JSON bodies, reconciliation passes and paged
lists. Anything that makes the run impossible to judge raises HarnessError."""
from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from benchmarks.server import Server

EVENTS_PATH = "/api/v1/events"
EVALUATE_PATH = "/api/v1/admin/evaluate"
MAX_SETTLE_PASSES = 20
PASS_TIMEOUT = 1800.0  # a full pass over a large store takes minutes; waiting is not what is tested here


class HarnessError(RuntimeError):
    """The run could not go on (a server that does not come back, an answer that makes no sense)."""


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def request(session: aiohttp.ClientSession, method: str, url: str, body: Any = None,
                  timeout: float | None = None) -> tuple[int, Any]:
    data = body if body is None or isinstance(body, bytes) else orjson.dumps(body)
    limit = aiohttp.ClientTimeout(total=timeout) if timeout else session.timeout
    async with session.request(method, url, data=data, headers={"Content-Type": "application/json"},
                               timeout=limit) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw) if raw else None


async def evaluate(session: aiohttp.ClientSession, server: Server, full: bool) -> dict[str, Any]:
    status, answer = await request(session, "POST", server.base + EVALUATE_PATH, {"full": full}, PASS_TIMEOUT)
    if status != 200:
        raise HarnessError(f"evaluate: HTTP {status}: {answer}")
    return dict(answer)


def changed(result: dict[str, Any]) -> bool:
    return any(result.get(k) for k in ("opened", "closed", "updated", "resolved"))


async def settle(session: aiohttp.ClientSession, server: Server) -> int | None:
    """Incremental passes until one changes nothing: their count, or None when they never settle."""
    for n in range(1, MAX_SETTLE_PASSES + 1):
        if not changed(await evaluate(session, server, False)):
            return n
    return None


async def pages(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page_url = url + ("&cursor=" + cursor if cursor else "")
        status, page = await request(session, "GET", page_url)
        if status != 200:
            raise HarnessError(f"GET {page_url}: HTTP {status}: {page}")
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items

