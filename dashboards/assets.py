"""Static files the pages load: plotly.js from the installed plotly package (machines may have no internet,
so no CDN) and the small script that draws the figures. Each URL carries a digest of its file, so a browser
may keep a file for a year and still picks up a new one after an upgrade."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import plotly
from aiohttp import web

HERE = Path(__file__).parent
CACHE_FOREVER = "public, max-age=31536000, immutable"


def packaged_files() -> dict[str, Path]:
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not plotly_js.is_file():
        raise RuntimeError(f"plotly.min.js is not where the plotly package ships it ({plotly_js}); "
                           "reinstall plotly")
    return {"plotly.min.js": plotly_js, "charts.js": HERE / "static" / "charts.js"}


class Assets:
    def __init__(self, files: Mapping[str, Path]):
        self.files = dict(files)
        self.digests = {name: hashlib.sha256(path.read_bytes()).hexdigest()[:12] for name, path in files.items()}

    def url(self, name: str) -> str:
        return f"/static/{name}?v={self.digests[name]}"

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/static/{name}", self.serve)]

    async def serve(self, request: web.Request) -> web.StreamResponse:
        path = self.files.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(text="no such file")
        return web.FileResponse(path, headers={"Cache-Control": CACHE_FOREVER,
                                               "X-Content-Type-Options": "nosniff"})
