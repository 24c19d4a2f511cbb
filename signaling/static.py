"""The browser node's page and bundle, served by the signaling server from the same origin
(``p2pkube signal --web-root``; built by ``make browser``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from aiohttp import web

__all__ = ["IMMUTABLE_PREFIXES", "ISOLATION_HEADERS", "WEB_CONTENT_TYPES", "StaticFiles"]


#: Content types of the browser bundle, by file suffix; others are application/octet-stream.
WEB_CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".whl": "application/octet-stream",
    ".zip": "application/octet-stream",
    ".gz": "application/gzip",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

#: Paths under the web root whose content never changes (the version is in the path), so
#: browsers may keep them a year; everything else is revalidated on each use (ETag).
IMMUTABLE_PREFIXES: Final = ("pyodide/",)

#: Sent with every file: a cross-origin isolated page (``crossOriginIsolated``), so the pod
#: workers can sleep with ``Atomics.wait`` on a SharedArrayBuffer.
ISOLATION_HEADERS: Final = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class StaticFiles:
    """``GET /<path>``: the files of one directory (the browser node bundle), nothing else;
    installed as a fallback middleware by :func:`create_app`.

    ``/`` is ``index.html``. A path with an empty, ``.``, ``..`` or hidden segment, a
    backslash or a NUL, one that is not a regular file, or one that resolves (symlinks
    included) outside the root is 404. aiohttp's :class:`~aiohttp.web.FileResponse` does the
    rest: ``ETag``/``Last-Modified`` and conditional requests, ranges, ``HEAD``, and a
    pre-compressed ``NAME.gz`` sibling for clients that accept gzip.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ValueError(f"web root {root} is not a directory")

    def resolve(self, rel: str) -> Path | None:
        """The file ``rel`` names under the root, or None if it must not be served."""
        if rel == "":
            rel = "index.html"
        if "\\" in rel or "\0" in rel:
            return None
        parts = rel.split("/")
        if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
            return None
        try:
            path = self.root.joinpath(*parts).resolve()
        except (OSError, ValueError):
            return None
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def response(self, rel: str) -> web.StreamResponse:
        """The response for ``GET /<rel>`` (``rel`` percent-decoded); 404 if not served."""
        path = self.resolve(rel)
        if path is None:
            raise web.HTTPNotFound()
        rel = path.relative_to(self.root).as_posix()
        headers = dict(ISOLATION_HEADERS)
        headers["Content-Type"] = WEB_CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        if rel.startswith(IMMUTABLE_PREFIXES):
            headers["Cache-Control"] = "public, max-age=31536000, immutable"
        else:
            headers["Cache-Control"] = "no-cache"
        return web.FileResponse(path, headers=headers)

    def middleware(self) -> Any:
        """An aiohttp middleware serving the files where no route matched (GET and HEAD), so
        routes added to the application later still take precedence."""

        @web.middleware
        async def static_fallback(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.method in ("GET", "HEAD") and isinstance(
                request.match_info.http_exception, web.HTTPNotFound
            ):
                return self.response(request.path.removeprefix("/"))
            response: web.StreamResponse = await handler(request)
            return response

        return static_fallback
