"""A node's blob service: its store, the chunk server, the fetcher and the collector.

``BlobService`` is what the agent creates and what the local API calls. It owns:

* the on-disk ``BlobStore`` (``<data-dir>/blobs``);
* the rpc method ``blob.chunk`` that serves chunks of complete blobs to other nodes;
* the ``BlobFetcher`` (``ensure(digest)``: what the pod runtime calls before running a pod);
* publishing (a streamed upload becomes a local blob plus its Blob object in the state);
* the collector loop (unreferenced blobs go after ``blobs.gc_grace``).

What the agent decides is passed in as callables: which nodes hold what (from Node statuses
and membership), which digests objects refer to, whether this node deletes manifests, and what
to do when the local set of blobs changed (re-publish ``status.images``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterable, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeGuard

from p2pkube.blobs.errors import AmbiguousBlob, BlobError, BlobNotFound, InvalidBlob
from p2pkube.blobs.fetcher import CHUNK_METHOD, BlobFetcher, FetchProgress, Holder
from p2pkube.blobs.gc import BlobCollector, GcDecision
from p2pkube.blobs.limits import check_size
from p2pkube.blobs.manifest import (
    BLOB_KIND,
    DIGEST_PREFIX,
    WASM_MAGIC,
    Manifest,
    blob_key,
    blob_object,
    is_digest,
    manifest_of,
    wasm_magic_problem,
)
from p2pkube.blobs.settings import BlobSettings
from p2pkube.blobs.store import BlobStore
from p2pkube.model.timestamps import utc_now
from p2pkube.net.rpc import Rpc, RpcRemoteError
from p2pkube.state.cluster import ClusterState
from p2pkube.state.store import OBJECTS

log = logging.getLogger(__name__)

MIN_PREFIX = 4
"""Shortest digest prefix (hex digits) accepted where a blob is named (``pull sha256:1a2b``)."""
_REF = re.compile(r"(?:blobs?/)?(?:sha256:)?([0-9a-f]+)")
_SOURCE = re.compile(r"[^\x00-\x1f\x7f/\\]{1,253}")

HolderMap = Callable[[], dict[str, list[Holder]]]
"""Digest -> the Ready nodes other than this one that list it in ``status.images``."""


def _is_int(value: Any) -> TypeGuard[int]:
    """An int and not a bool (``True`` is an int to ``isinstance``)."""
    return isinstance(value, int) and not isinstance(value, bool)


class BlobService:
    """One node's blobs (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        settings: BlobSettings,
        *,
        node_name: str,
        state: ClusterState,
        rpc: Rpc,
        holders: HolderMap,
        references: Callable[[], set[str]],
        is_collector: Callable[[], bool],
        on_local_change: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.node_name = node_name
        self.store = BlobStore(root, io_timeout=settings.io_timeout)
        self.collector = BlobCollector(settings.gc_grace)
        self._state = state
        self._rpc = rpc
        self._holders = holders
        self._references = references
        self._is_collector = is_collector
        self._on_local_change = on_local_change
        self.fetcher = BlobFetcher(
            self.store,
            rpc,
            settings,
            manifest=self.manifest,
            holders=lambda digest: self._holders().get(digest, []),
            on_fetched=self._fetched,
        )
        self.on_collected: Callable[[str], None] = lambda digest: None
        """Called with each digest whose local copy the collector removed (the pod runtime
        drops its compiled module then)."""
        self.chunks_served = 0
        self.bytes_served = 0
        self.serve_errors = 0
        self._gc_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store and start serving chunks and collecting."""
        await self.store.open()
        self._rpc.register(CHUNK_METHOD, self._serve_chunk)
        self._gc_task = asyncio.get_running_loop().create_task(self._gc_loop(), name="blob-gc")

    async def close(self) -> None:
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc_task
        await self.fetcher.close()

    # -- what is where -------------------------------------------------------------------------
    def images(self) -> list[dict[str, Any]]:
        """This node's ``status.images``: every complete blob held here (Kubernetes' shape)."""
        return [
            {"names": [digest], "sizeBytes": size}
            for digest, size in sorted(self.store.sizes().items())
        ]

    def manifest(self, digest: str) -> Manifest | None:
        """The validated manifest of ``digest`` from the cluster state."""
        obj = self._state.get(OBJECTS, blob_key(digest))
        return manifest_of(obj, self.settings.max_chunk_size)

    def _blob_objects(self) -> dict[str, dict[str, Any]]:
        prefix = f"{BLOB_KIND}//"
        return {
            key[len(prefix) :]: obj
            for key, obj in self._state.items(OBJECTS, prefix)
            if isinstance(obj, dict)
        }

    def resolve(self, ref: str) -> str:
        """The digest a user means: ``sha256:<hex>``, its hex, or a unique prefix of at least
        MIN_PREFIX digits (as ``get blobs`` prints them); BlobNotFound / AmbiguousBlob."""
        match = _REF.fullmatch(ref.strip().lower())
        if match is None or len(match.group(1)) < MIN_PREFIX:
            raise BlobNotFound(
                f"{ref!r} is not a blob digest (sha256:<hex>, or at least {MIN_PREFIX} hex digits)"
            )
        wanted = DIGEST_PREFIX + match.group(1)
        known = set(self._blob_objects()) | set(self.store.sizes())
        if wanted in known:
            return wanted
        candidates = sorted(d for d in known if d.startswith(wanted))
        if not candidates:
            raise BlobNotFound(f'blobs "{ref}" not found')
        if len(candidates) > 1:
            raise AmbiguousBlob(f"{ref!r} matches {len(candidates)} blobs: {', '.join(candidates)}")
        return candidates[0]

    def describe(self, digest: str) -> dict[str, Any] | None:
        """The Blob object with a status computed here: holders and this node's copy."""
        obj = self._blob_objects().get(digest)
        return None if obj is None else self._render(digest, obj, self._holders())

    def list_blobs(self) -> list[dict[str, Any]]:
        holder_map = self._holders()
        return [
            self._render(digest, obj, holder_map)
            for digest, obj in sorted(self._blob_objects().items())
        ]

    def _render(
        self, digest: str, obj: dict[str, Any], holder_map: dict[str, list[Holder]]
    ) -> dict[str, Any]:
        holders = {h.name for h in holder_map.get(digest, [])}
        if self.store.path(digest) is not None:
            holders.add(self.node_name)
            local = "Complete"
        elif digest in self.store.partials():
            local = "Partial"
        else:
            local = "Absent"
        status: dict[str, Any] = {"holders": sorted(holders), "local": local}
        progress = self.fetcher.progress(digest)
        if progress is not None:
            status["fetch"] = progress.to_dict()
        return {**obj, "status": status}

    # -- publishing ----------------------------------------------------------------------------
    async def publish(
        self, pieces: AsyncIterable[bytes], source: str
    ) -> tuple[dict[str, Any], bool]:
        """Store a streamed WebAssembly module here and publish its manifest.

        Returns (the Blob object as ``describe`` shows it, whether anything was new). Raises
        InvalidBlob (not ``\\0asm``) or BlobTooLarge (over ``blobs.max_blob_bytes``: this node
        would not pull it either); publishing the same bytes again changes nothing.
        """
        source = source if _SOURCE.fullmatch(source or "") else ""
        upload = self.store.upload(self.settings.chunk_size)
        head = b""
        try:
            async for piece in pieces:
                size = upload.size + len(piece)
                check_size(source or "the upload", size, self.settings, at_least=True)
                if len(head) < len(WASM_MAGIC):
                    head += piece[: len(WASM_MAGIC) - len(head)]
                    _check_magic(head, final=False)
                await upload.write(piece)
            _check_magic(head, final=True)
            stored = await upload.commit()
        except BaseException:
            await upload.abort()
            raise
        digest = stored.manifest.digest
        new_object = self.manifest(digest) is None
        if new_object:
            await self._state.put(
                OBJECTS, blob_key(digest), blob_object(stored.manifest, source, utc_now())
            )
        self.collector.touch(digest)
        if stored.created:
            await self._on_local_change()
        log.info(
            "published %s (%d bytes, %d chunks)%s",
            digest,
            stored.manifest.size,
            stored.manifest.count,
            "" if stored.created or new_object else ": already published",
        )
        described = self.describe(digest)
        assert described is not None
        return described, stored.created or new_object

    # -- fetching ------------------------------------------------------------------------------
    async def ensure(self, digest: str) -> Path:
        """``BlobFetcher.ensure`` (the path of the verified local file, fetched if need be);
        a user-requested pull also restarts the blob's collection grace here."""
        path = await self.fetcher.ensure(digest)
        self.collector.touch(digest)
        return path

    def progress(self, digest: str) -> FetchProgress | None:
        return self.fetcher.progress(digest)

    async def _fetched(self, manifest: Manifest) -> None:
        self.collector.touch(manifest.digest)
        await self._on_local_change()

    # -- serving -------------------------------------------------------------------------------
    async def _serve_chunk(self, src: str, body: Any) -> dict[str, bytes]:
        """rpc ``blob.chunk``: ``{digest, index, chunkSize}`` -> ``{data}``."""
        try:
            digest, offset, length = self._chunk_request(body)
            data = await self.store.read_chunk(digest, offset, length)
        except RpcRemoteError:
            self.serve_errors += 1
            raise
        except FileNotFoundError:
            self.serve_errors += 1
            raise RpcRemoteError("not-found", f"{self.node_name} no longer holds it") from None
        self.chunks_served += 1
        self.bytes_served += len(data)
        return {"data": data}

    def _chunk_request(self, body: Any) -> tuple[str, int, int]:
        """(digest, offset, length) of a valid chunk request; RpcRemoteError otherwise."""
        if not isinstance(body, dict):
            raise RpcRemoteError("bad-request", "expected a map {digest, index, chunkSize}")
        digest, index, chunk_size = body.get("digest"), body.get("index"), body.get("chunkSize")
        if not is_digest(digest):
            raise RpcRemoteError("bad-request", "digest must be sha256:<64 hex>")
        if not _is_int(index) or index < 0:
            raise RpcRemoteError("bad-request", "index must be a non-negative integer")
        if not _is_int(chunk_size) or not 0 < chunk_size <= self.settings.max_chunk_size:
            raise RpcRemoteError(
                "bad-request", f"chunkSize must be 1..{self.settings.max_chunk_size}"
            )
        size = self.store.size(digest)
        if size is None:
            raise RpcRemoteError("not-found", f"{digest} is not held by {self.node_name}")
        offset = index * chunk_size
        if offset >= size and not (index == 0 and size == 0):
            raise RpcRemoteError(
                "bad-request", f"chunk {index} of {chunk_size} bytes is beyond the {size}-byte blob"
            )
        return digest, offset, min(chunk_size, size - offset)

    # -- collecting ----------------------------------------------------------------------------
    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gc_interval)
            try:
                await self.collect()
            except Exception:
                log.exception("blob collection failed")

    async def collect(self) -> GcDecision:
        """One sweep: remove what the collector says is due (see ``p2pkube.blobs.gc``)."""
        decision = self.collector.decide(
            local=set(self.store.sizes()) | self.store.partials(),
            manifests=set(self._blob_objects()),
            referenced=self._references(),
            busy=self.fetcher.active(),
            collector=self._is_collector(),
        )
        held_changed = False
        for digest in decision.remove_local:
            complete = self.store.path(digest) is not None
            try:
                await self.store.remove(digest)
            except BlobError as exc:  # a fetch of it started meanwhile
                log.info("not collecting %s now: %s", digest, exc)
                continue
            self.collector.collected += 1
            held_changed |= complete
            try:
                self.on_collected(digest)
            except Exception:
                log.exception("on_collected(%s) failed", digest)
            log.info(
                "collected %s: no object referred to it for %gs", digest, self.settings.gc_grace
            )
        for digest in decision.delete_manifests:
            if await self._state.delete(OBJECTS, blob_key(digest)):
                self.collector.manifests_deleted += 1
                log.info("deleted the Blob object of %s (unreferenced)", digest)
        if held_changed:
            await self._on_local_change()
        return decision

    def stats_dict(self) -> dict[str, Any]:
        sizes = self.store.sizes()
        return {
            **self.fetcher.stats_dict(),
            "held": len(sizes),
            "heldBytes": sum(sizes.values()),
            "partial": len(self.store.partials()),
            "chunksServed": self.chunks_served,
            "bytesServed": self.bytes_served,
            "serveErrors": self.serve_errors,
            "collected": self.collector.collected,
            "manifestsDeleted": self.collector.manifests_deleted,
        }


def _check_magic(head: bytes, *, final: bool) -> None:
    """Reject anything that does not start like a WebAssembly binary."""
    problem = wasm_magic_problem(head, complete=final)
    if problem is not None:
        raise InvalidBlob(problem)
