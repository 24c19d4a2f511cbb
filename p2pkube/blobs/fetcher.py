"""Pulling a blob's chunks from the nodes that hold it: ``BlobFetcher.ensure(digest)``.

The receiver drives the transfer: it keeps at most ``blobs.window`` chunk requests in flight,
each to the holder with the fewest outstanding requests (direct neighbours, then fewer hops,
first on ties), so chunks spread over every holder and no holder can push more than asked.
Every chunk is checked against the manifest's chunk digest as it arrives, the whole file
against the blob's digest at the end (both by the storage, which on a native node hashes in a
worker thread). A holder that sends a corrupt chunk, fails a request or stops being Ready is
dropped for the rest of this fetch and the chunks it owed go back into the queue for the
others: the fetch resumes, it does not restart. Concurrent ``ensure`` calls for one digest
share one fetch.

Quotas (``p2pkube.blobs.limits``): a manifest declaring more than ``blobs.max_blob_bytes`` is
refused before anything is created or asked for; a pull that would leave less than
``blobs.min_free_bytes`` free (counting what the pulls already running still write) is refused
before its partial file is created, and stopped if that happens while its chunks land. Nothing
is ever written beyond the declared size: the storage writes a chunk only when its length and
digest are the manifest's, at the manifest's offset.

No threads and no sockets here: calls go through ``Rpc`` (hence the ``Transport``), storage
through the ``BlobStorage`` protocol, so the browser node runs this same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from p2pkube.blobs.errors import (
    BlobError,
    BlobFetchError,
    BlobNotFound,
    BlobTooLarge,
    InsufficientStorage,
    NoHolderError,
)
from p2pkube.blobs.limits import check_size, check_space, size_text
from p2pkube.blobs.manifest import Manifest
from p2pkube.blobs.settings import BlobSettings
from p2pkube.net.rpc import Rpc, RpcBusy, RpcError, counters

log = logging.getLogger(__name__)

CHUNK_METHOD = "blob.chunk"
"""Rpc method: ``{digest, index, chunkSize}`` -> ``{data: bin}`` (docs/protocol.md)."""
FAR = 1 << 16
"""Hop count of a node whose position in the mesh is unknown (ranked last)."""


class PartialBlobWriter(Protocol):
    """One blob being fetched, as the fetcher writes it."""

    def missing(self) -> list[int]:
        """Chunk indices still to fetch (a resumed partial already has some)."""
        ...

    async def store_chunk(self, index: int, data: bytes) -> bool:
        """Verify ``data`` against the manifest's digest of chunk ``index`` and keep it;
        False when it does not match (a corrupt chunk: nothing is kept)."""
        ...

    async def finish(self) -> Path:
        """Verify the whole blob against its digest and make it complete (BlobCorrupt)."""
        ...

    async def close(self) -> None: ...


class BlobStorage(Protocol):
    """What the fetcher needs from a store (native: ``BlobStore``)."""

    root: Path
    """Where the blobs are (named in a refusal for want of space)."""

    def path(self, digest: str) -> Path | None: ...
    async def open_partial(self, manifest: Manifest) -> PartialBlobWriter: ...
    async def free_bytes(self) -> int | None:
        """Bytes still free on the store's filesystem; None where that is unknown."""
        ...


@dataclass(frozen=True)
class Holder:
    """A Ready node that lists the blob in its ``status.images``."""

    node: str
    name: str
    hops: int = FAR
    """Links between us and it (1: a direct neighbour)."""


@dataclass
class FetchProgress:
    """Where one fetch stands; read by ``p2pkube pull`` while it runs."""

    digest: str
    size: int
    total_chunks: int
    chunks: int = 0
    bytes: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    """Holder name -> chunks received from it in this fetch."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Holder name -> why it is no longer asked."""
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        """The pull for a person, as a pod waiting for its module shows it (``describe pod``):
        ``Pulling module sha256:0123456789ab…: 3.1 MiB of 8 MiB from 2 peers``."""
        peers = len(self.sources)
        return (
            f"Pulling module {self.digest[: len('sha256:') + 12]}…: {size_text(self.bytes)} of "
            f"{size_text(self.size)} from {peers} peer{'' if peers == 1 else 's'}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "chunks": self.chunks,
            "totalChunks": self.total_chunks,
            "bytes": self.bytes,
            "sizeBytes": self.size,
            "sources": dict(self.sources),
            "dropped": dict(self.dropped),
            "seconds": round(time.monotonic() - self.started, 3),
        }


@dataclass
class FetchStats:
    """Counters shown in ``p2pkube status`` under ``blobs``."""

    fetches: int = 0
    fetches_failed: int = 0
    chunks_fetched: int = 0
    bytes_fetched: int = 0
    corrupt_chunks: int = 0
    retries: int = 0
    holders_dropped: int = 0
    refused_too_large: int = 0
    """Pulls refused because the manifest declares more than ``blobs.max_blob_bytes``."""
    refused_no_space: int = 0
    """Pulls refused or stopped because they would leave less than ``blobs.min_free_bytes``."""


def hop_counts(
    origin: str, neighbours: Iterable[str], peers_of: Callable[[str], Iterable[str]]
) -> dict[str, int]:
    """Links from ``origin`` to every node reachable over the neighbour lists member records
    carry (breadth first)."""
    hops = {origin: 0}
    frontier = [n for n in neighbours if n != origin]
    for node in frontier:
        hops[node] = 1
    while frontier:
        following = []
        for node in frontier:
            for peer in peers_of(node):
                if peer not in hops:
                    hops[peer] = hops[node] + 1
                    following.append(peer)
        frontier = following
    return hops


@dataclass
class _Fetch:
    progress: FetchProgress
    task: asyncio.Task[Path] | None = None
    admitted: bool = False
    """Past its free-space check: what it still has to write counts in the others' checks."""

    @property
    def remaining(self) -> int:
        """Bytes this fetch still has to write."""
        return self.progress.size - self.progress.bytes


class BlobFetcher:
    """Makes blobs local: ``await fetcher.ensure(digest)`` -> the path of the verified file."""

    def __init__(
        self,
        storage: BlobStorage,
        rpc: Rpc,
        settings: BlobSettings,
        *,
        manifest: Callable[[str], Manifest | None],
        holders: Callable[[str], list[Holder]],
        on_fetched: Callable[[Manifest], Awaitable[None]] | None = None,
    ) -> None:
        """``manifest(digest)`` reads the Blob's manifest from the cluster state;
        ``holders(digest)`` lists the Ready nodes (other than us) holding it;
        ``on_fetched`` runs once a blob became complete here (to re-publish status.images)."""
        self.settings = settings
        self.stats = FetchStats()
        self._storage = storage
        self._rpc = rpc
        self._manifest = manifest
        self._holders = holders
        self._on_fetched = on_fetched
        self._fetches: dict[str, _Fetch] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrent_fetches)
        self._closed = False

    # -- public --------------------------------------------------------------------------------
    async def ensure(self, digest: str) -> Path:
        """The local path of blob ``digest``, fetching it first unless it is held here.

        Raises BlobNotFound (no manifest in the state), BlobTooLarge (its manifest declares
        more than ``blobs.max_blob_bytes``: refused before anything is fetched),
        InsufficientStorage (it would leave less than ``blobs.min_free_bytes`` free),
        NoHolderError (nobody Ready holds it, or every holder failed) or BlobFetchError.
        Cancelling one caller does not stop a fetch other callers share.
        """
        path = self._storage.path(digest)
        if path is not None:
            return path
        if self._closed:
            raise BlobError("the blob fetcher is closed")
        fetch = self._fetches.get(digest)
        if fetch is None:
            manifest = self._manifest(digest)
            if manifest is None:
                raise BlobNotFound(f"no blob {digest} is published in this cluster")
            self._check_size(manifest)
            fetch = _Fetch(FetchProgress(digest, manifest.size, manifest.count))
            task = asyncio.get_running_loop().create_task(
                self._run(fetch, manifest), name=f"fetch {digest}"
            )
            fetch.task = task
            self._fetches[digest] = fetch
            task.add_done_callback(functools.partial(self._finished, digest))
        assert fetch.task is not None
        return await asyncio.shield(fetch.task)

    def progress(self, digest: str) -> FetchProgress | None:
        """The running fetch of ``digest``, if any."""
        fetch = self._fetches.get(digest)
        return fetch.progress if fetch is not None else None

    def active(self) -> set[str]:
        """Digests being fetched now (the collector leaves them alone)."""
        return set(self._fetches)

    async def close(self) -> None:
        """Cancel every fetch (partials stay on disk for a resume after restart)."""
        self._closed = True
        tasks = [f.task for f in self._fetches.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await asyncio.gather(*tasks, return_exceptions=True)

    def stats_dict(self) -> dict[str, Any]:
        return {**counters(self.stats), "fetching": len(self._fetches)}

    # -- quotas --------------------------------------------------------------------------------
    def _check_size(self, manifest: Manifest) -> None:
        """BlobTooLarge, from the manifest alone, when it declares more than the cap."""
        try:
            check_size("the module", manifest.size, self.settings)
        except BlobTooLarge as exc:
            self.stats.refused_too_large += 1
            log.warning("not pulling %s: %s", manifest.digest, exc)
            raise

    async def check_space(self, digest: str, needed: int) -> None:
        """InsufficientStorage when writing ``needed`` more bytes of ``digest``, besides what
        the other admitted fetches still write, would leave less than ``blobs.min_free_bytes``
        free. Nothing is checked when the reserve is 0 or the free space is unknown."""
        if self.settings.min_free_bytes <= 0:
            return
        free = await self._storage.free_bytes()
        if free is None:
            return
        promised = sum(f.remaining for d, f in self._fetches.items() if f.admitted and d != digest)
        try:
            check_space("the module", needed, free, promised, self._storage.root, self.settings)
        except InsufficientStorage as exc:
            self.stats.refused_no_space += 1
            log.warning("not pulling %s: %s", digest, exc)
            raise

    # -- one fetch -----------------------------------------------------------------------------
    def _finished(self, digest: str, task: asyncio.Task[Path]) -> None:
        self._fetches.pop(digest, None)
        if not task.cancelled() and task.exception() is not None:
            self.stats.fetches_failed += 1  # also marks the exception as retrieved

    async def _run(self, fetch: _Fetch, manifest: Manifest) -> Path:
        try:
            async with asyncio.timeout(self.settings.stall_timeout):
                await self._slots.acquire()  # at most max_concurrent_fetches blobs at once
        except TimeoutError:
            raise BlobFetchError(
                f"{manifest.digest} waited {self.settings.stall_timeout:g}s for one of "
                f"{self.settings.max_concurrent_fetches} fetch slots"
            ) from None
        try:
            self.stats.fetches += 1
            # The whole blob counts, even when a partial copy is on disk: conservative by at
            # most what that copy holds, and checked before a partial file is created.
            await self.check_space(manifest.digest, manifest.size)
            fetch.admitted = True
            partial = await self._storage.open_partial(manifest)
            try:
                await _Transfer(self, manifest, partial, fetch.progress).run()
                path = await partial.finish()
            finally:
                await partial.close()
            log.info(
                "fetched %s (%d bytes, %d chunks) in %.2fs from %s",
                manifest.digest,
                manifest.size,
                manifest.count,
                time.monotonic() - fetch.progress.started,
                ", ".join(f"{k} ({v})" for k, v in sorted(fetch.progress.sources.items()))
                or "disk (resumed)",
            )
            if self._on_fetched is not None:
                try:
                    await self._on_fetched(manifest)
                except Exception:  # the blob is here all the same
                    log.exception("after fetching %s", manifest.digest)
            return path
        finally:
            self._slots.release()


class _Transfer:
    """The chunk loop of one fetch: a queue of missing chunks, a window of requests."""

    def __init__(
        self,
        fetcher: BlobFetcher,
        manifest: Manifest,
        partial: PartialBlobWriter,
        progress: FetchProgress,
    ) -> None:
        self.fetcher = fetcher
        self.settings = fetcher.settings
        self.stats = fetcher.stats
        self.manifest = manifest
        self.partial = partial
        self.progress = progress
        self.queue: deque[int] = deque(partial.missing())
        self.inflight: dict[asyncio.Task[bool], tuple[int, Holder]] = {}
        self.load: Counter[str] = Counter()
        self.attempts: Counter[int] = Counter()
        self.dropped: dict[str, str] = {}  # node id -> reason
        self.listed: list[Holder] = []
        self.listed_at = 0.0
        self.cooling: dict[str, float] = {}
        """Node id -> when a holder that answered ``busy`` may be asked again."""
        progress.chunks = manifest.count - len(self.queue)
        progress.bytes = manifest.size - sum(manifest.length(i) for i in self.queue)

    async def run(self) -> None:
        settings = self.settings
        now = time.monotonic()
        last_progress = last_disk_check = now
        no_holder_since: float | None = None
        try:
            while self.queue or self.inflight:
                if time.monotonic() - last_disk_check >= settings.disk_check_interval:
                    last_disk_check = time.monotonic()
                    remaining = self.progress.size - self.progress.bytes
                    await self.fetcher.check_space(self.manifest.digest, remaining)
                holders = self._current_holders()
                now = time.monotonic()
                if holders or self.inflight:
                    no_holder_since = None
                elif no_holder_since is None:
                    no_holder_since = now
                elif now - no_holder_since > settings.holder_wait:
                    raise self._no_holder()
                self._fill_window(holders)
                if not self.inflight:
                    await asyncio.sleep(settings.refresh_interval)
                    continue
                done, _ = await asyncio.wait(
                    self.inflight,
                    timeout=settings.refresh_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                delivered = [self._settle(task) for task in done]  # settle every one
                if any(delivered):
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > settings.stall_timeout:
                    raise BlobFetchError(
                        f"no chunk of {self.manifest.digest} arrived for "
                        f"{settings.stall_timeout:g}s"
                    )
        finally:
            for task in self.inflight:
                task.cancel()
            if self.inflight:
                await asyncio.gather(*self.inflight, return_exceptions=True)

    def _current_holders(self) -> list[Holder]:
        """Holders not dropped; in-flight requests to holders no longer listed (NotReady,
        gone) are cancelled, their chunks requeued. The list is re-read at most every
        ``refresh_interval`` (it decodes every Node status), sooner when it is empty."""
        now = time.monotonic()
        if not self.listed or now - self.listed_at >= self.settings.refresh_interval:
            self.listed = self.fetcher._holders(self.manifest.digest)
            self.listed_at = now
        holders = [h for h in self.listed if h.node not in self.dropped]
        listed = {h.node for h in holders}
        for task, (_, holder) in self.inflight.items():
            if holder.node not in listed and not task.done():
                self._drop(holder, "no longer Ready or no longer holding it")
                task.cancel()
        return holders

    def _fill_window(self, holders: list[Holder]) -> None:
        now = time.monotonic()
        ready = [h for h in holders if self.cooling.get(h.node, 0.0) <= now]
        while self.queue and ready and len(self.inflight) < self.settings.window:
            holder = min(ready, key=lambda h: (self.load[h.node], h.hops, h.name))
            index = self.queue.popleft()
            self.attempts[index] += 1
            task = asyncio.get_running_loop().create_task(self._request(holder, index))
            self.inflight[task] = (index, holder)
            self.load[holder.node] += 1

    async def _request(self, holder: Holder, index: int) -> bool:
        """Ask ``holder`` for chunk ``index`` and store it; False if it was corrupt."""
        manifest = self.manifest
        answer = await self.fetcher._rpc.call(
            holder.node,
            CHUNK_METHOD,
            {"digest": manifest.digest, "index": index, "chunkSize": manifest.chunk_size},
            timeout=self.settings.chunk_timeout,
        )
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, bytes):
            raise RpcError(f"{holder.name} answered chunk {index} without data")
        return await self.partial.store_chunk(index, data)

    def _settle(self, task: asyncio.Task[bool]) -> bool:
        """Account for one finished request; True when it delivered a good chunk."""
        index, holder = self.inflight.pop(task)
        self.load[holder.node] -= 1
        digest = self.manifest.digest
        if not task.cancelled() and task.exception() is None and task.result():
            length = self.manifest.length(index)
            self.stats.chunks_fetched += 1
            self.stats.bytes_fetched += length
            self.progress.chunks += 1
            self.progress.bytes += length
            self.progress.sources[holder.name] = self.progress.sources.get(holder.name, 0) + 1
            return True
        if task.cancelled():
            reason = "cancelled (holder gone)"
        elif (exc := task.exception()) is not None:
            if isinstance(exc, BlobError | OSError):
                raise exc  # our own storage failed: no other holder can fix that
            reason = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, RpcBusy):
                # Not the holder's fault nor the chunk's: ask again after a pause, for free.
                self.attempts[index] -= 1
                self.cooling[holder.node] = time.monotonic() + self.settings.refresh_interval
                log.info(
                    "holder %s is busy; chunk %d of %s asked again", holder.name, index, digest
                )
            else:
                log.warning("chunk %d of %s from %s failed: %s", index, digest, holder.name, reason)
                self._drop(holder, reason)
        else:
            self.stats.corrupt_chunks += 1
            reason = f"sent a corrupt chunk ({index})"
            log.warning(
                "corrupt chunk %d of %s from holder %s (%s): it does not match the manifest; "
                "asking another holder",
                index,
                digest,
                holder.name,
                holder.node,
            )
            self._drop(holder, reason)
        self.stats.retries += 1
        if self.attempts[index] >= self.settings.max_chunk_attempts:
            raise BlobFetchError(
                f"chunk {index} of {digest} failed {self.attempts[index]} times (last: {reason})"
            )
        self.queue.appendleft(index)
        return False

    def _drop(self, holder: Holder, reason: str) -> None:
        if holder.node not in self.dropped:
            self.dropped[holder.node] = reason
            self.progress.dropped[holder.name] = reason
            self.stats.holders_dropped += 1

    def _no_holder(self) -> NoHolderError:
        digest = self.manifest.digest
        if not self.dropped:
            return NoHolderError(
                f"no Ready node holds {digest} (none lists it in status.images); "
                f"waited {self.settings.holder_wait:g}s"
            )
        reasons = "; ".join(f"{name}: {why}" for name, why in self.progress.dropped.items())
        return NoHolderError(f"no holder of {digest} left to ask ({reasons})")
