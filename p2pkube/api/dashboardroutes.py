"""``/dashboard/``: the cluster dashboard's page, served by the native agent's local API.

The page's files are public code (the same for every cluster), so they are served without the
bearer token: a browser cannot send a header when it opens a URL. The token travels in the URL
fragment (``/dashboard/#token=T``, what ``p2pkube dashboard`` prints), which a browser never
puts in a request line, a ``Referer`` or a log; the page reads it from ``location.hash`` and
sends it as ``Authorization: Bearer`` on each API call it makes with ``fetch`` (the watches
stream as response bodies). Everything the page reads is behind ``_guard`` as before.

The files are those the browser bundle's build put in ``p2pkube/browser/dist/dashboard/``
(``make browser``), nothing else: a name is one plain path segment of a regular file there.
Without the bundle, the page answers 404 saying how to build it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from aiohttp import web

__all__ = ["DASHBOARD_DIR", "PREFIX", "DashboardFiles"]

DASHBOARD_DIR: Final = Path(__file__).resolve().parent.parent / "browser" / "dist" / "dashboard"
"""Where ``build.py`` puts the page (``p2pkube/browser/web/dashboard/``, bundled)."""
PREFIX: Final = "/dashboard"

_CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Scripts and data from this origin only; the graph library sets inline styles.
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'"
    ),
}


class DashboardFiles:
    """The page's files under ``/dashboard/`` (see the module docstring)."""

    def __init__(self, root: Path = DASHBOARD_DIR) -> None:
        self.root = root

    @staticmethod
    def is_public(path: str) -> bool:
        """Whether ``path`` is one of the page's (served without the token)."""
        return path == PREFIX or path.startswith(PREFIX + "/")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(PREFIX, self._redirect),
            web.get(PREFIX + "/{name:[^/]*}", self._file),
        ]

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        # The fragment (with the token) stays in the browser, which keeps it across the
        # redirect: it is never part of a request.
        raise web.HTTPFound(PREFIX + "/")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"] or "index.html"
        suffix = Path(name).suffix
        if not _NAME.fullmatch(name) or suffix not in _CONTENT_TYPES:
            raise web.HTTPNotFound()
        path = self.root / name
        if not path.is_file():
            if not (self.root / "index.html").is_file():
                raise web.HTTPNotFound(
                    text=f"the dashboard is not built ({self.root} has no index.html): "
                    "run make browser (python p2pkube/browser/build.py)\n"
                )
            raise web.HTTPNotFound()
        headers = {**_HEADERS, "Content-Type": _CONTENT_TYPES[suffix]}
        return web.FileResponse(path, headers=headers)
