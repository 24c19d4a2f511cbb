"""Query parameters and connection checks that both APIs' long requests share: the local
API (``api.server``) and the Kubernetes face (``api.kube.face``) read ``timeoutSeconds`` and
flags the same way, and end a stream the same way when its client has gone."""

from __future__ import annotations

from aiohttp import web

from p2pkube.api.status import ApiProblem
from p2pkube.model.watch import DEFAULT_WATCH_SECONDS

__all__ = ["MAX_WATCH_SECONDS", "client_gone", "flag", "watch_seconds"]

MAX_WATCH_SECONDS = 24 * 3600
"""Upper bound on a watch's ``timeoutSeconds``: every stream ends on its own eventually."""


def watch_seconds(request: web.Request) -> float:
    """The ``timeoutSeconds`` query parameter (Kubernetes' name), bounded."""
    raw = request.query.get("timeoutSeconds")
    if raw is None:
        return DEFAULT_WATCH_SECONDS
    try:
        seconds = int(raw)
    except ValueError:
        raise ApiProblem(400, f"timeoutSeconds must be an integer, not {raw!r}") from None
    if not 0 < seconds <= MAX_WATCH_SECONDS:
        raise ApiProblem(400, f"timeoutSeconds must be between 1 and {MAX_WATCH_SECONDS}")
    return float(seconds)


def flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter (``watch=true``, ``follow=1``)."""
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def client_gone(request: web.Request) -> bool:
    """Whether the client of a long request (a watch) has gone away."""
    transport = request.transport
    return transport is None or transport.is_closing()
