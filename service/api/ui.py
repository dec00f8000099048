"""The browser page (GET /, `MLTAG_UI`): try the model, tune thresholds, see heatmaps.

Three static files from `service/ui/`, read once when the app is built; plain HTML, CSS and
JS with no dependencies, so it works offline. The page calls the public API (/labels, /tag)
with the API key the user types in, when one is set."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from .errors import ApiError

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
# Nothing but this service: no CDN, no inline script, images only from the user's own files.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def ui_router() -> APIRouter:
    files = {name: (UI_DIR / name).read_bytes() for name in _TYPES}
    router = APIRouter(include_in_schema=False)

    def page(name: str) -> Response:
        return Response(files[name], media_type=_TYPES[name], headers=_HEADERS)

    @router.get("/")
    async def index() -> Response:
        return page("index.html")

    @router.get("/ui/{name}")
    async def asset(name: str) -> Response:
        if name not in files or name == "index.html":
            raise ApiError(404, "not_found", f"no such file: /ui/{name[:64]}")
        return page(name)

    return router
