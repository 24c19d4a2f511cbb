"""Fixed JSON documents (discovery, OpenAPI) served as a Kubernetes API server serves them.

What the API face says about itself never changes while an agent runs, so each document is
encoded once, with its hash, and every request is answered from those bytes. The hash is the
``ETag`` (kube-openapi's: the upper-case hex SHA-512 of the bytes, quoted) so a client that
revalidates its cached copy (client-go's disk cache under ``~/.kube/cache``) gets ``304 Not
Modified`` and no body.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

JSON = "application/json"


@dataclass(frozen=True)
class Document:
    """One encoded document and what it is served with."""

    body: bytes
    content_type: str
    hash: str
    """Upper-case hex SHA-512 of ``body``: the ETag, and the ``?hash=`` of an OpenAPI URL."""

    @classmethod
    def of(cls, content: dict[str, Any], content_type: str = JSON) -> Document:
        body = json.dumps(content, separators=(",", ":")).encode()
        return cls(body, content_type, hashlib.sha512(body).hexdigest().upper())

    @property
    def etag(self) -> str:
        return f'"{self.hash}"'


def media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """The media ranges of an ``Accept`` header with their parameters, the most preferred
    first (by ``q``, then in the order written); ``q=0`` ranges are refused ones."""
    ranges: list[tuple[float, int, str, dict[str, str]]] = []
    for position, clause in enumerate(accept.split(",")):
        media_type, *raw = (part.strip() for part in clause.split(";"))
        params = {}
        for item in raw:
            key, _, value = item.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 1.0
        if media_type and quality > 0:
            ranges.append((-quality, position, media_type.lower(), params))
    return [(media_type, params) for _, _, media_type, params in sorted(ranges)]


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or is ``*``); weak tags compare
    equal to strong ones, as RFC 9110 wants for this header."""
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return any(tag in ("*", etag) for tag in tags)


def respond(
    request: web.Request, document: Document, headers: dict[str, str] | None = None
) -> web.Response:
    """``document`` (or 304 when the client's copy is current), with its ETag and ``Vary:
    Accept`` (the same path answers other documents for another Accept header)."""
    common = {"ETag": document.etag, "Vary": "Accept", **(headers or {})}
    if _matches(request.headers.get("If-None-Match", ""), document.etag):
        return web.Response(status=304, headers=common)
    return web.Response(
        body=document.body, headers={**common, "Content-Type": document.content_type}
    )
