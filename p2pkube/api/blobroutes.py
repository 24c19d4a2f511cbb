"""The local API's blob endpoints (pod modules).

``POST /v1/blobs`` takes the raw bytes of a WebAssembly module (streamed to disk, size-capped),
``GET /v1/blobs[/{ref}]`` lists them with their holders, and ``POST /v1/blobs/{ref}/pull``
fetches one to this node, streaming progress as JSON lines (``PROGRESS`` events, then
``COMPLETE`` or ``ERROR``, like a watch). Auth and errors are the server's (its middleware
answers a :class:`~p2pkube.blobs.errors.BlobError` with :func:`blob_problem`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from p2pkube.api.status import ApiProblem, list_of, status_body
from p2pkube.blobs.errors import (
    AmbiguousBlob,
    BlobError,
    BlobNotFound,
    BlobTooLarge,
    InvalidBlob,
)
from p2pkube.blobs.limits import check_size
from p2pkube.blobs.manifest import BLOB_API_VERSION
from p2pkube.blobs.settings import BlobSettings

if TYPE_CHECKING:  # the fetcher pulls in aiortc; the API server need not
    from p2pkube.blobs.fetcher import FetchProgress

log = logging.getLogger(__name__)

UPLOAD_READ_BYTES = 1024 * 1024
"""Bytes read from an upload's body at a time (each piece goes to disk before the next)."""

_BLOB_ERRORS: dict[type[BlobError], int] = {
    BlobNotFound: 404,
    AmbiguousBlob: 400,
    InvalidBlob: 422,
    BlobTooLarge: 413,
}
"""HTTP code of each blob error; any other BlobError (no holder, failed fetch) is 503."""


class BlobBackend(Protocol):
    """What the blob endpoints need from the agent (``p2pkube.blobs.service.BlobService``)."""

    settings: BlobSettings

    async def publish(
        self, pieces: AsyncIterable[bytes], source: str
    ) -> tuple[dict[str, Any], bool]: ...
    def resolve(self, ref: str) -> str: ...
    def describe(self, digest: str) -> dict[str, Any] | None: ...
    def list_blobs(self) -> list[dict[str, Any]]: ...
    async def ensure(self, digest: str) -> Path: ...
    def progress(self, digest: str) -> FetchProgress | None: ...


def blob_problem(exc: BlobError) -> ApiProblem:
    """The Status a blob failure is answered with."""
    code = next((c for t, c in _BLOB_ERRORS.items() if isinstance(exc, t)), 503)
    return ApiProblem(code, str(exc))


class BlobRoutes:
    """The blob handlers; without a backend (e.g. an API server in tests) they answer 404."""

    def __init__(self, blobs: BlobBackend | None, write_timeout: float) -> None:
        self.blobs = blobs
        self.write_timeout = write_timeout
        """Longest wait for one write to a client, or for an upload's next piece."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/blobs", self._publish_blob),
            web.get("/v1/blobs", self._list_blobs),
            web.get("/v1/blobs/{ref}", self._get_blob),
            web.post("/v1/blobs/{ref}/pull", self._pull_blob),
        ]

    def _blob_backend(self) -> BlobBackend:
        if self.blobs is None:
            raise ApiProblem(404, "this agent does not serve blobs")
        return self.blobs

    async def _publish_blob(self, request: web.Request) -> web.Response:
        """The body is the module itself; ``?source=NAME`` names where it came from."""
        blobs = self._blob_backend()
        source = os.path.basename(request.query.get("source", ""))
        if request.content_length is not None:  # refused before the body is read (413)
            check_size(source or "the upload", request.content_length, blobs.settings)
        obj, created = await blobs.publish(_pieces(request, self.write_timeout), source)
        return web.json_response(obj, status=201 if created else 200)

    async def _list_blobs(self, request: web.Request) -> web.Response:
        items = self._blob_backend().list_blobs()
        return web.json_response({**list_of("Blob", items), "apiVersion": BLOB_API_VERSION})

    async def _get_blob(self, request: web.Request) -> web.Response:
        blobs = self._blob_backend()
        ref = request.match_info["ref"]
        obj = blobs.describe(blobs.resolve(ref))
        if obj is None:
            raise ApiProblem(404, f'blobs "{ref}" not found')
        return web.json_response(obj)

    async def _pull_blob(self, request: web.Request) -> web.StreamResponse:
        """Fetch a blob here, streaming ``{"type": "PROGRESS", "progress": {...}}`` lines every
        ``blobs.progress_interval``, then ``COMPLETE`` (with the Blob object and the final
        progress, null when it was held already) or ``ERROR`` (with a Status). An unknown blob
        is answered 404 before streaming. A client that leaves does not stop the fetch."""
        blobs = self._blob_backend()
        ref = request.match_info["ref"]
        digest = blobs.resolve(ref)
        if blobs.describe(digest) is None:
            raise ApiProblem(404, f"blob {digest} has no manifest in the cluster state")
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "no-store"}
        )
        response.enable_chunked_encoding()
        fetch = asyncio.ensure_future(blobs.ensure(digest))
        try:
            async with asyncio.timeout(self.write_timeout):
                await response.prepare(request)
            await asyncio.sleep(0)  # let the fetch start, so its progress object exists
            progress = blobs.progress(digest)
            while not fetch.done():
                await asyncio.wait({fetch}, timeout=blobs.settings.progress_interval)
                progress = blobs.progress(digest) or progress
                if progress is not None and not fetch.done():
                    await self._line(response, {"type": "PROGRESS", "progress": progress.to_dict()})
            try:
                fetch.result()
                event: dict[str, Any] = {
                    "type": "COMPLETE",
                    "object": blobs.describe(digest),
                    "progress": progress.to_dict() if progress is not None else None,
                }
            except BlobError as exc:
                problem = blob_problem(exc)
                event = {
                    "type": "ERROR",
                    "object": status_body(problem.code, problem.message, problem.reason),
                }
            await self._line(response, event)
            async with asyncio.timeout(self.write_timeout):
                await response.write_eof()
        except (ConnectionError, TimeoutError) as exc:
            log.debug("pull of %s: client gone (%r); the fetch goes on", digest, exc)
        finally:
            if not fetch.done():
                fetch.cancel()  # only our wait: a fetch is shared and survives its callers
        return response

    async def _line(self, response: web.StreamResponse, event: dict[str, Any]) -> None:
        async with asyncio.timeout(self.write_timeout):
            await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")


async def _pieces(request: web.Request, idle_timeout: float) -> AsyncIterator[bytes]:
    """An upload's body piece by piece; a client that sends nothing for ``idle_timeout``
    seconds fails the upload (TimeoutError, answered 504)."""
    while True:
        async with asyncio.timeout(idle_timeout):
            piece = await request.content.read(UPLOAD_READ_BYTES)
        if not piece:
            return
        yield piece
