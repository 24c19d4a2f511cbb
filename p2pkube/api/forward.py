"""Local listeners that forward HTTP to the agent's proxy routes: ``p2pkube proxy`` and
``p2pkube port-forward`` share this one implementation.

A :class:`Forwarder` listens on 127.0.0.1 (a front door: ``api/frontdoor.HttpListener``, so
the same header limits and slow-client cut-off), maps each request's path to a path of the
local agent's API (``/api/v1/namespaces/NS/services|pods/NAME[:PORT]/proxy/PATH``), sends it
there with the agent's bearer token (read from its data dir, again when the agent restarted),
and streams both bodies: the request's to the agent as it arrives, the response's back to the
client chunk by chunk. The forwarding is HTTP-level (handler pods speak HTTP only), unlike
kubectl's TCP streams; ``Authorization`` carries the agent's token, so a client's own
``Authorization`` header does not reach the handler through these commands.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from p2pkube.api.client import ApiClient, ApiClientError
from p2pkube.api.frontdoor import HttpListener
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import HttpError

log = logging.getLogger(__name__)

PathMap = Callable[[web.BaseRequest], str]
"""A request -> the API path (with its query) to forward it to; HttpError (404) if none."""

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",
        "expect",
    }
)
"""Request headers the forwarder sets itself or that describe the client's connection."""

_RESPONSE_DROPPED = frozenset({"connection", "keep-alive", "transfer-encoding"})


class Forwarder:
    """A local listener forwarding to the agent that owns ``data_dir`` (module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        path_map: PathMap,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: ServiceSettings | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.path_map = path_map
        self.settings = settings or ServiceSettings()
        self.listener = HttpListener(self.handle, host, port, self.settings)
        self._agent: tuple[str, str] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def address(self) -> str:
        """``HOST:PORT`` once started."""
        return f"{self.listener.host}:{self.listener.port}"

    async def start(self) -> None:
        """Find the agent (ApiClientError if there is none), then listen (OSError)."""
        await self._find_agent()
        timeout = aiohttp.ClientTimeout(
            sock_connect=10, sock_read=self.settings.request_deadline + 10
        )
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        try:
            await self.listener.start()
        except BaseException:
            await self._session.close()
            raise

    async def stop(self) -> None:
        """Stop listening, then close the connections to the agent."""
        await self.listener.stop()
        if self._session is not None:
            await self._session.close()

    async def _find_agent(self) -> tuple[str, str]:
        client = await asyncio.to_thread(ApiClient.from_data_dir, self.data_dir)
        self._agent = (client.url, client.token)
        return self._agent

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Forward one request and stream the answer back (502 when the agent is down)."""
        try:
            path = self.path_map(request)
        except HttpError as exc:
            return web.Response(status=exc.status, text=exc.message + "\n")
        for attempt in (1, 2):
            try:
                return await self._forward(request, path, fresh=attempt == 2)
            except _AgentMoved:
                continue  # the agent restarted: new port or token, read them once more
            except (aiohttp.ClientConnectionError, ApiClientError, TimeoutError) as exc:
                return web.Response(status=502, text=f"cannot reach the local agent: {exc}\n")
        return web.Response(status=502, text="the local agent refused its own token\n")

    async def _forward(
        self, request: web.BaseRequest, path: str, *, fresh: bool
    ) -> web.StreamResponse:
        assert self._session is not None, "Forwarder.start() first"
        url, token = await self._find_agent() if fresh or self._agent is None else self._agent
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        headers.append(("Authorization", f"Bearer {token}"))
        body = request.content if request.body_exists else None
        if body is not None and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits 1 s else
        try:
            async with self._session.request(
                request.method, url + path, headers=headers, data=body, allow_redirects=False
            ) as upstream:
                if upstream.status == 401 and not fresh and body is None:
                    raise _AgentMoved
                return await self._relay(request, upstream)
        except aiohttp.ClientConnectorError:
            if fresh or body is not None:
                raise
            raise _AgentMoved from None

    async def _relay(
        self, request: web.BaseRequest, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _RESPONSE_DROPPED:
                response.headers.add(name, value)
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            # The agent cut the answer short: so do we, never passing it on as complete.
            log.info("%s %s: the answer broke off: %s", request.method, request.path, exc)
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response


class _AgentMoved(Exception):
    """The agent's address or token changed (it restarted): find it again and retry."""
