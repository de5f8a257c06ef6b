"""`revtrace demo`: the whole product in one process on SQLite: the simulated landscape feeding the
collector over its own HTTP API, scheduled reconciliation, and the pages."""
from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from aiohttp import web

from collector import conventions as c
from probes.feed import FeedConfig, FeedStats, run_feed
from revtrace.config import Settings, new_token
from revtrace.server import Server


async def run_demo(settings: Settings, feed: FeedConfig, say: Callable[[str], None],
                   stop: asyncio.Event | None = None) -> FeedStats | None:
    """Serve until Ctrl-C (SIGINT/SIGTERM) or `stop`; then stop the feed, drain the writer and close."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server = Server(settings)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    host, port = settings.host_port
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}; choose another with --listen") from None
    say(banner(settings, host, port))
    feed_task = asyncio.create_task(run_feed(feed, stop=stop), name="revtrace-demo-feed")
    stats: FeedStats | None = None
    try:
        await stop.wait()
    finally:
        stop.set()
        try:
            stats = await asyncio.wait_for(feed_task, timeout=10)
        except (TimeoutError, asyncio.CancelledError):
            feed_task.cancel()
        except Exception as exc:  # the feed's failure is reported, the shutdown still completes
            say(f"the simulated landscape stopped with an error: {exc}")
        await runner.cleanup()
    if stats is not None:
        say(f"stopped: {stats.backfilled + stats.live} contracts simulated, {stats.accepted} events stored, "
            f"{stats.duplicates} duplicate deliveries recognised")
    return stats


def demo_settings(database_url: str, listen: str, evaluate_every: float) -> Settings:
    return Settings(database_url=database_url, listen=listen, evaluate_every=evaluate_every,
                    tokens={new_token("admin"): frozenset(c.SCOPES), new_token("read"): frozenset({c.SCOPE_READ}),
                            new_token("ingest"): frozenset({c.SCOPE_INGEST})})


def token_with(settings: Settings, scopes: set[str]) -> str:
    return next(t for t, s in settings.tokens.items() if s == scopes)


def banner(settings: Settings, host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    admin = token_with(settings, set(c.SCOPES))
    read = token_with(settings, {c.SCOPE_READ})
    ingest = token_with(settings, {c.SCOPE_INGEST})
    return "\n".join([
        "revtrace demo: a simulated CRM, billing, ERP and payment landscape with injected faults",
        f"  dashboard   {base}/login?token={read}",
        f"  API         {base}/api/v1  (Authorization: Bearer <token>)",
        f"  admin token {admin}   (ingest, read, admin)",
        f"  read token  {read}",
        f"  ingest token {ingest}",
        f"  store       {settings.database_url}",
        f"  try         curl -H 'Authorization: Bearer {read}' {base}/api/v1/assurance",
        "Press Ctrl-C to stop.",
    ])
