"""The local API's proxy routes, kubectl's paths into a Service or a pod:

    /api/v1/namespaces/NS/services/[http:]NAME[:PORT]/proxy/PATH
    /api/v1/namespaces/NS/pods/[http:]NAME[:PORT]/proxy/PATH

PORT is a Service port's (or for a pod a containerPort's) name or number; without it, the
only or first port. The handler sees ``/PATH`` as PATH_INFO. They go through the same front
door as a NodePort (``api/frontdoor.py``) behind the API's bearer token, and are what
``p2pkube proxy`` and ``p2pkube port-forward`` forward to. What ``[http:]NAME[:PORT]`` names is
``services/proxypath.proxy_target``, the same rules as the browser tab's front door.
"""

from __future__ import annotations

from aiohttp import web

from p2pkube.api.frontdoor import ServiceOpener, error_response, serve
from p2pkube.services.proxypath import proxy_target
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import HttpError

PROXY_PATH = "/api/v1/namespaces/{namespace}/{resource}/{name}/proxy{path:(/.*)?}"
STRIPPED = frozenset({"authorization"})
"""The API's bearer token never reaches a handler: a pod holding it would own the agent
(the Kubernetes API server's proxy drops it too)."""


def proxy_routes(opener: ServiceOpener, settings: ServiceSettings) -> list[web.RouteDef]:
    """The proxy routes (every method) for the API's application."""

    async def proxy(request: web.Request) -> web.StreamResponse:
        info = request.match_info
        try:
            target = proxy_target(info["namespace"], info["resource"], info["name"])
        except HttpError as exc:
            return error_response(exc)
        door = f"api proxy {info['resource']}"
        return await serve(
            request, opener, target, info["path"] or "/", settings, door=door, strip=STRIPPED
        )

    return [web.route("*", PROXY_PATH, proxy)]
