"""The benchmark's HTTP client: one aiohttp session per section, with the server's admin token."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

EVENTS = "/api/v1/events"


def array_body(lines: Sequence[bytes]) -> bytes:
    """NDJSON lines as the JSON array body revtrace takes."""
    return b"[" + b",".join(lines) + b"]"


class Client:
    def __init__(self, base: str, token: str, connections: int = 16):
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=3600),
            headers=self.headers)

    async def close(self) -> None:
        await self.session.close()

    async def post_events(self, body: bytes) -> dict[str, Any]:
        """Posts one batch; on 429 waits as told and sends it again."""
        while True:
            async with self.session.post(self.base + EVENTS, data=body,
                                         headers={"Content-Type": "application/json"}) as resp:
                raw = await resp.read()
                if resp.status == 429:
                    await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                    continue
                if resp.status != 200:
                    raise RuntimeError(f"POST {EVENTS}: {resp.status} {raw[:300]!r}")
                answer: dict[str, Any] = orjson.loads(raw)
                return answer

    async def evaluate(self, full: bool) -> dict[str, Any]:
        async with self.session.post(self.base + "/api/v1/admin/evaluate", data=orjson.dumps({"full": full}),
                                     headers={"Content-Type": "application/json"}) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"evaluate: {resp.status} {raw[:300]!r}")
            answer: dict[str, Any] = orjson.loads(raw)
            return answer

    async def get(self, path: str) -> tuple[int, bytes]:
        async with self.session.get(self.base + path) as resp:
            return resp.status, await resp.read()

    async def get_json(self, path: str) -> Any:
        status, raw = await self.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {raw[:300]!r}")
        return orjson.loads(raw)
