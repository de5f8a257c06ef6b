"""Bearer tokens with scopes: 401 for a missing or unknown token, 403 for one without the route's scope."""
from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SCOPE_ATTR = "_revtrace_scope"
H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


def requires(scope: str) -> Callable[[H], H]:
    """Marks a handler with the scope its route needs; the middleware enforces it."""
    def mark(handler: H) -> H:
        setattr(handler, SCOPE_ATTR, scope)
        return handler
    return mark


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Tokens:
    """Tokens are kept as digests, so neither a dump nor a timing of the lookup gives one away."""

    def __init__(self, tokens: Mapping[str, Iterable[str]]):
        self._scopes = {_digest(t): frozenset(s) for t, s in tokens.items() if t}

    def scopes(self, token: str) -> frozenset[str] | None:
        return self._scopes.get(_digest(token))


def error(status: int, message: str, headers: Mapping[str, str] | None = None, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


def middleware(tokens: Tokens) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        scope = getattr(handler, SCOPE_ATTR, None)
        if scope is None:  # health probes and pages that carry no data need no token
            return await handler(request)
        header = request.headers.get("Authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            return error(401, "a bearer token is required", scope=scope)
        granted = tokens.scopes(token.strip())
        if granted is None:
            return error(401, "unknown token")
        if scope not in granted:
            return error(403, f"this token lacks the {scope} scope")
        return await handler(request)
    return check
