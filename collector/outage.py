"""When the store cannot be reached (PostgreSQL down, restarting or out of reach; SQLite unable to take its lock
or write its file), every request that needs it is answered 503 with Retry-After and a one-line reason, and
acknowledges nothing. The server stays up and serves again as soon as the store answers, with no restart:
pooled connections are checked before use, so the first request after an outage already gets a good one."""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable

import psycopg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from collector import conventions as c
from collector.auth import SCOPE_ATTR, Handler, error

log = logging.getLogger("revtrace")
RETRY_AFTER_S = 1
Page = Callable[[str], web.Response]


# SQLite's primary result codes for a store that cannot do the work just now: busy or locked past the busy
# timeout, out of memory, read-only, an I/O error, corrupt, full, its file unopenable, a locking protocol
# error. sqlite3 raises OperationalError for SQL errors too ("no such table", a syntax error: SQLITE_ERROR),
# which are bugs, not outages.
_SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15})


def store_unavailable(exc: BaseException) -> bool:
    """The store could not be reached or could not do its work, as opposed to a bug in a statement. Raised
    through SQLAlchemy or straight from the driver (COPY and prepared statements go around SQLAlchemy)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if not isinstance(exc, OperationalError | InterfaceError):
            return False
        driver_error: BaseException | None = exc.orig
    elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | sqlite3.OperationalError):
        driver_error = exc
    else:
        return False
    code = getattr(driver_error, "sqlite_errorcode", None)
    return code is None or code & 0xFF in _SQLITE_UNAVAILABLE


def reason(exc: BaseException) -> str:
    """The driver's own first line, without SQLAlchemy's statement and parameters (which may hold data)."""
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first[:200]}" if first else type(orig).__name__


class StoreHealth:
    """Counts what an outage refused and says in the log when one starts and when it ends, once each,
    however many requests it turns away."""

    def __init__(self, registry: CollectorRegistry):
        self.refused = Counter(c.METRIC_STORE_UNAVAILABLE.removesuffix("_total"),
                               "Requests and scheduled passes refused because the store was unavailable, by route.",
                               ["route"], registry=registry)
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._refused_in_outage = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, route: str, exc: BaseException) -> None:
        self.refused.labels(route=route).inc()
        with self._lock:
            self._refused_in_outage += 1
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        log.warning("store unavailable (%s) at %s; answering 503 until it is back", reason(exc), route)

    def reached(self) -> None:
        """Something that needed the store just worked."""
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            lasted, refused = time.monotonic() - self._down_since, self._refused_in_outage
            self._down_since, self._refused_in_outage = None, 0
        log.warning("store reachable again after %.1f s; %d requests and passes were refused meanwhile",
                    lasted, refused)


def middleware(health: StoreHealth, page: Page) -> Callable[..., Awaitable[web.StreamResponse]]:
    """`page` renders the reason for a person; API clients get it as JSON."""
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except Exception as exc:
            if not store_unavailable(exc):
                raise
            health.failed(_route(request), exc)
            message = (f"store unavailable ({reason(exc)}); nothing in this request was acknowledged: "
                       f"send it again")
            headers = {"Retry-After": str(RETRY_AFTER_S)}
            if _wants_html(request):
                out = page(message)
                out.headers.update(headers)
                return out
            return error(503, message, headers=headers)
        if health.down and resp.status < 500 and _needs_store(request):
            health.reached()
        return resp
    return guard


def _route(request: web.Request) -> str:
    """The route's pattern, never the path: a path holds contract ids, which metric labels must not."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _needs_store(request: web.Request) -> bool:
    # The route's own handler: the one this middleware is given is the next middleware's.
    return getattr(request.match_info.handler, SCOPE_ATTR, None) is not None or request.path == "/readyz"


def _wants_html(request: web.Request) -> bool:
    return not request.path.startswith("/api/") and "text/html" in request.headers.get("Accept", "")
