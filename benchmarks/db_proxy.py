"""A TCP forwarder between revtrace and its PostgreSQL server that can take the database away: every
connection through it is reset and new ones are refused for a while, as when the server restarts or the
network between them drops. It runs its own event loop on a thread, so the harness's load never slows it."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future

from sqlalchemy.engine import make_url

from benchmarks.server import free_port

CHUNK = 1 << 16


class DatabaseProxy:
    def __init__(self, database_url: str):
        self.url = make_url(database_url)
        self.upstream = (self.url.host or "127.0.0.1", self.url.port or 5432)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="db-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def proxied_url(self) -> str:
        """The database URL with the proxy in place of the server."""
        return self.url.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def __enter__(self) -> DatabaseProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(self, *_: object) -> None:
        self._call(self._down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def down(self) -> None:
        """Reset every connection now and refuse new ones until `up`."""
        self._call(self._down())

    def up(self) -> None:
        self._call(self._listen())

    async def cut_async(self, seconds: float) -> None:
        """Down for `seconds`, then up again; returns when it takes connections again."""
        await asyncio.wrap_future(self._submit(self._cut(seconds)))

    def _submit(self, coro: object) -> Future[None]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]

    def _call(self, coro: object) -> None:
        self._submit(coro).result(timeout=60)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._pair, "127.0.0.1", self.port, reuse_address=True)

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._open):
            w.transport.abort()  # a reset, not a polite close: what a crashed server or a lost route gives
        self._open.clear()

    async def _cut(self, seconds: float) -> None:
        await self._down()
        await asyncio.sleep(seconds)
        await self._listen()

    async def _pair(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.transport.abort()
            return
        ends = {client_w, server_w}
        self._open |= ends
        try:
            await asyncio.gather(_pump(client_r, server_w), _pump(server_r, client_w))
        finally:
            for w in ends:
                self._open.discard(w)
                w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
