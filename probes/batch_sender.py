"""Posting event batches to revtrace's ingest API, retrying what can succeed later.

Connection errors, timeouts, 429 and 5xx are retried with capped exponential backoff (a `Retry-After`
header wins); any other answer is permanent and raised. Retrying the same batch is safe: ingest is
idempotent on (source, event_id).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

_RETRYABLE_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


class IngestRefused(Exception):
    """The server refused a batch in a way retrying cannot fix (bad token, malformed, too large)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"ingest answered {status}: {body[:200]!r}")
        self.status = status


@dataclass(frozen=True)
class IngestAnswer:
    accepted: int
    duplicates: int
    rejected: list[Any] = field(default_factory=list)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now`: either delay-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleeps up to `seconds`; answers True when `stop` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    except TimeoutError:
        return False
    return True


class BatchSender:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str, *, stop: asyncio.Event,
                 clock: Callable[[], datetime], retry_initial: float = 0.5, retry_max: float = 30.0,
                 timeout: float = 30.0) -> None:
        self._session = session
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._stop = stop
        self._clock = clock
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.retries = 0

    async def send(self, batch: list[dict[str, Any]]) -> IngestAnswer | None:
        """The server's answer, or None when stopped before the batch got through."""
        body = orjson.dumps(batch)
        backoff = self._retry_initial
        while not self._stop.is_set():
            wait: float | None = None
            try:
                async with self._session.post(self._url, data=body, headers=self._headers,
                                              timeout=self._timeout) as resp:
                    raw = await resp.read()
                    if resp.status == 200:
                        return _answer(raw, len(batch))
                    if resp.status != 429 and resp.status < 500:
                        raise IngestRefused(resp.status, raw)
                    wait = retry_after_seconds(resp.headers.get("Retry-After"), self._clock())
            except _RETRYABLE_ERRORS:
                pass
            self.retries += 1
            if await wait_or_stop(self._stop, min(self._retry_max, backoff if wait is None else wait)):
                break
            backoff = min(self._retry_max, backoff * 2)
        return None


def _answer(raw: bytes, sent: int) -> IngestAnswer:
    try:
        doc = orjson.loads(raw)
        return IngestAnswer(int(doc["accepted"]), int(doc["duplicates"]), list(doc.get("rejected") or []))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        # A 200 means the batch is durable; an answer we cannot read does not undo that.
        return IngestAnswer(sent, 0)
