"""Kubernetes ``Status`` objects: how the local API answers every failure.

Errors are Status objects, never stack traces, so the CLI can print them the way kubectl does
(``Error from server (NotFound): ...``). Handlers raise :class:`ApiProblem`; the server's
middleware turns it into a response with :func:`problem_response`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "AlreadyExists",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
"""Reason strings Kubernetes uses for these codes, so `Error from server (<reason>)` reads
right."""


class ApiProblem(Exception):
    """A request that fails in a way the caller should see as a Kubernetes Status."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        causes: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.causes = list(causes)
        """``field: reason`` of each problem of an invalid object (Status details.causes)."""


def status_body(
    code: int, message: str, reason: str | None = None, causes: list[str] | None = None
) -> dict[str, Any]:
    """A Kubernetes ``Status`` failure object (``causes``: an invalid object's problems)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
        "code": code,
    }
    if causes:
        body["details"] = {
            "causes": [
                {"field": cause.partition(": ")[0], "message": cause.partition(": ")[2]}
                for cause in causes
            ]
        }
    return body


def problem_response(
    code: int, message: str, reason: str | None = None, causes: list[str] | None = None
) -> web.Response:
    """The HTTP answer carrying a Status failure."""
    return web.json_response(status_body(code, message, reason, causes), status=code)


def list_of(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``<Kind>List`` as Kubernetes lists objects."""
    return {
        "apiVersion": "v1",
        "kind": f"{kind}List",
        "metadata": {"resourceVersion": ""},
        "items": items,
    }
