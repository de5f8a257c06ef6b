"""Templates and the filters they use. Autoescaping is on for every template: contract ids, event ids and
attributes are whatever the source systems sent, so nothing from the store reaches a page unescaped."""
from __future__ import annotations

from datetime import UTC
from typing import Any
from urllib.parse import quote

from aiohttp import web
from jinja2 import Environment, PackageLoader

from collector.model import EventError, parse_time
from dashboards.assets import Assets

# Scripts come only from this server, and never inline; plotly sets styles at run time, hence the inline styles.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}
NOTHING = "—"


def utc(value: str | None) -> str:
    """An RFC 3339 time, whatever its offset, as UTC to the second."""
    if not value:
        return NOTHING
    try:
        at = parse_time(value, "time")[0]
    except EventError:
        return value
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """A lag for people, to two units at most: "42 s", "12 min 5 s", "3 h 20 min", "2 d 4 h", "2 d"."""
    if seconds is None:
        return NOTHING
    sign = "−" if seconds < 0 else ""
    s = round(abs(seconds))
    if s < 60:
        return f"{sign}{s} s"
    big, unit, small, small_unit = ((s // 60, "min", s % 60, "s") if s < 3600 else
                                    (s // 3600, "h", s % 3600 // 60, "min") if s < 86400 else
                                    (s // 86400, "d", s % 86400 // 3600, "h"))
    return f"{sign}{big} {unit}" + (f" {small} {small_unit}" if small else "")


def label(name: str) -> str:
    """missing_invoice → Missing invoice."""
    return name.replace("_", " ").capitalize()


def path_part(value: str) -> str:
    """One URL path segment; a contract id may hold "/", "?" or "#"."""
    return quote(value, safe="")


class Templates:
    def __init__(self, assets: Assets):
        self.env = Environment(loader=PackageLoader("dashboards"), autoescape=True, trim_blocks=True,
                               lstrip_blocks=True)
        self.env.filters.update(utc=utc, duration=duration, label=label, path_part=path_part)
        self.env.globals["asset"] = assets.url

    def page(self, name: str, status: int = 200, headers: dict[str, str] | None = None,
             **context: Any) -> web.Response:
        html = self.env.get_template(name).render(**context)
        return web.Response(text=html, status=status, content_type="text/html",
                            headers={**PAGE_HEADERS, **(headers or {})})

