"""The tab's Service Worker front door: ``fetch()`` of a proxy path, from any page of the
origin, into the cluster through this tab's node.

The page registers ``sw.js`` (``web/sw.js``), which intercepts requests for
``/api/v1/namespaces/NS/services|pods/NAME[:PORT]/proxy/PATH`` and posts each one to a page of
the origin whose node runs (``web/bridge/proxy.js``). That page hands it here: :meth:`TabProxy.open`
builds the :class:`~p2pkube.services.types.ServiceRequest` (what the native front doors build
from an aiohttp request, ``api/frontdoor.py``) and opens it on the node's router; the bridge then
pulls the body with :meth:`TabProxy.read` chunk by chunk as the Service Worker's
``ReadableStream`` asks, so a large response is never held whole in the tab.

Values cross to JavaScript as JSON text and Uint8Arrays (no Python proxies to leak).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol
from urllib.parse import urlsplit

from p2pkube.runtime.cgi import CgiRequest
from p2pkube.services.proxypath import parse_proxy_path
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import HttpError, ResponseStream, ServiceRequest, StreamBroken

log = logging.getLogger(__name__)

DOOR = "service worker"


class Opener(Protocol):
    """What a front door needs of the node's router (``services/router.py``)."""

    async def open(self, request: ServiceRequest) -> ResponseStream: ...


def _error(exc: HttpError) -> str:
    return json.dumps(
        {"error": {"status": exc.status, "message": exc.message, "retryAfter": exc.retry_after}}
    )


def service_request(
    method: str, url: str, headers: list[list[str]], body: bytes | None, settings: ServiceSettings
) -> ServiceRequest:
    """The ServiceRequest of one intercepted fetch; HttpError 400/404/413/431 for what a
    native front door refuses too."""
    parts = urlsplit(url)
    target, path = parse_proxy_path(parts.path)
    if len(headers) > settings.max_request_headers:
        raise HttpError(
            431, f"{len(headers)} header fields, at most {settings.max_request_headers}"
        )
    fields: list[tuple[str, str]] = []
    for pair in headers:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise HttpError(400, "malformed header list from the Service Worker")
        name, value = str(pair[0]), str(pair[1])
        if len(name) + len(value) > settings.max_request_header_bytes:
            raise HttpError(431, f"header {name} is over {settings.max_request_header_bytes} bytes")
        fields.append((name, value))
    cap = settings.max_request_body_bytes
    if body is not None and len(body) > cap:
        raise HttpError(413, f"request body of {len(body):,} bytes is over the {cap:,} allowed")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    cgi = CgiRequest(
        method=method.upper(),
        path=path,
        query=parts.query,
        headers=tuple(fields),
        remote_addr="",
        server_name=parts.hostname or "localhost",
        server_port=port,
        content_length=None if body is None else len(body),
    )
    return ServiceRequest(target, cgi, body or b"", trace={"door": DOOR, "url": url})


class TabProxy:
    """Requests from the Service Worker through ``opener``; the bridge calls ``open``,
    ``read`` and ``close`` (``p2pjs.serveServiceRequests``)."""

    def __init__(
        self, opener: Opener | None, settings: ServiceSettings, node_name: str, max_streams: int
    ) -> None:
        self.opener = opener
        self.settings = settings
        self.node_name = node_name
        self.max_streams = max_streams
        self._streams: dict[int, ResponseStream] = {}
        self._next = 1
        self.served = 0

    async def open(self, method: Any, url: Any, headers: Any, body: Any) -> str:
        """Open one request; JSON ``{id, status, reason, headers, endpoint, node}`` once its
        head arrived, or ``{error: {status, message, retryAfter}}``."""
        try:
            if self.opener is None:
                raise HttpError(503, f"node {self.node_name} routes no Services", retry_after=1)
            if len(self._streams) >= self.max_streams:
                raise HttpError(
                    503, f"{self.max_streams} requests open through this tab", retry_after=1
                )
            data = bytes(body.to_bytes()) if hasattr(body, "to_bytes") else None  # or no body
            request = service_request(
                str(method), str(url), json.loads(str(headers)), data, self.settings
            )
            stream = await self.opener.open(request)
        except HttpError as exc:
            return _error(exc)
        except ValueError as exc:  # cgi_environ: control characters, a malformed header name
            return _error(HttpError(400, str(exc)))
        except Exception as exc:  # a bug: this request fails, the node keeps serving
            log.exception("service worker request %s %s failed", method, url)
            return _error(HttpError(500, f"{type(exc).__name__}: {exc}"))
        stream_id = self._next
        self._next += 1
        self._streams[stream_id] = stream
        self.served += 1
        head = stream.head
        return json.dumps(
            {
                "id": stream_id,
                "status": head.status,
                "reason": head.reason,
                "headers": [list(pair) for pair in head.headers],
                "endpoint": stream.endpoint,
                "node": self.node_name,
            }
        )

    async def read(self, stream_id: Any) -> Any:
        """The next body chunk as a Uint8Array (empty at the end: the stream is closed), or a
        string saying why the body was cut short."""
        stream = self._streams.get(int(stream_id))
        if stream is None:
            return "no such response stream (closed)"
        try:
            chunk = await stream.read()
        except StreamBroken as exc:
            await self.close(stream_id)
            return f"response cut short: {exc}"
        except Exception as exc:
            log.exception("reading a service worker response failed")
            await self.close(stream_id)
            return f"response cut short: {type(exc).__name__}: {exc}"
        if not chunk:
            await self.close(stream_id)
        return _uint8array(chunk)

    async def close(self, stream_id: Any) -> None:
        """Stop reading (the page's fetch was aborted, or it ended): release the handler."""
        stream = self._streams.pop(int(stream_id), None)
        if stream is not None:
            try:
                await asyncio.shield(stream.aclose())
            except Exception:
                log.exception("closing a service worker response failed")

    async def close_all(self) -> None:
        for stream_id in list(self._streams):
            await self.close(stream_id)

    def stats(self) -> dict[str, int]:
        return {"open": len(self._streams), "served": self.served}


def _uint8array(chunk: bytes) -> Any:
    from pyodide.ffi import to_js  # type: ignore[import-not-found]  # Pyodide only

    return to_js(chunk)
