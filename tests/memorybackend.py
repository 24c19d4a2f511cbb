"""The one in-memory agent backend of the tests: the real object service, no network, no disk.

:class:`MemoryBackend` is what the local API server needs from an agent (``AgentBackend``),
built from the agent's own parts: the real :class:`~p2pkube.model.objects.ObjectService`
(validation, metadata, status merge, deletion) and its :class:`~p2pkube.model.watch.WatchHub`
over an in-memory :class:`~p2pkube.state.ClusterState`. What a real agent learns from other
nodes is given by the test instead: Nodes are objects it writes with their status (Ready
included), and :meth:`MemoryBackend.set` / :meth:`MemoryBackend.remove` write the state
directly, as a controller, a kubelet or a peer would.

Open it on the loop that serves it (``await backend.open()``) and close it there.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from p2pkube.api.server import ApiServer
from p2pkube.blobs.manifest import BLOB_API_VERSION
from p2pkube.model.objects import BLOB_KIND, ObjectService, Validator, map_of
from p2pkube.model.schema import validate_object
from p2pkube.model.watch import DEFAULT_WATCH_SECONDS, WATCH_QUEUE_SIZE, Watch
from p2pkube.runtime.interface import LogLine
from p2pkube.runtime.podlogs import LogReply, LogRequest, LogsUnavailable
from p2pkube.runtime.usage import UsageReport, UsageUnavailable
from p2pkube.services.endpoints import ENDPOINTS_KIND, computed_endpoints
from p2pkube.state import ClusterState, object_key
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.store import OBJECTS, STATUS

__all__ = ["MemoryBackend", "blob"]


def blob(digest: str) -> dict[str, Any]:
    """A Blob object for ``digest``: what makes an image name acceptable to a write."""
    return {"apiVersion": BLOB_API_VERSION, "kind": BLOB_KIND, "metadata": {"name": digest}}


def key_of(obj: dict[str, Any]) -> str:
    """The document key of ``obj`` (cluster-scoped kinds have namespace "")."""
    meta = obj["metadata"]
    return object_key(obj["kind"], meta.get("namespace") or "", meta["name"])


class MemoryBackend:
    """An agent as the local API sees it; see the module docstring.

    ``puts`` records every body the API handed to :meth:`put_object`. ``on_watch`` (if set)
    is called whenever a watch starts, on the serving loop, to script what happens while a
    client waits (see :meth:`spawn`).
    """

    def __init__(
        self,
        node_name: str = "n1",
        *,
        status: dict[str, Any] | None = None,
        validate: Validator = validate_object,
    ) -> None:
        self.node_name = node_name
        self.state = ClusterState(None, store_factory=PycrdtStore)  # None: no disk
        self.objects = ObjectService(self.state, node_ready=self.node_ready, validate=validate)
        self.watches = self.objects.watch_hub()
        self.usage_reports: dict[str, UsageReport] = {}
        """Node name -> its usage report, as :meth:`read_usage` answers (tests set them)."""
        self.puts: list[dict[str, Any]] = []
        self.stalled: list[float] = []
        """The seconds of every ``stall_loop`` asked (it does not block: nothing to starve)."""
        self.on_watch: Callable[[MemoryBackend, str], None] | None = None
        self._status = status if status is not None else {"node": node_name}
        self._jobs: set[asyncio.Task[Any]] = set()

    async def open(self, objects: Iterable[dict[str, Any]] = ()) -> MemoryBackend:
        """Open the state and write ``objects`` as they are (see :meth:`set`)."""
        await self.state.open()
        for obj in objects:
            await self.set(obj)
        return self

    async def close(self) -> None:
        """End the watches and the scripted jobs, close the state."""
        self.watches.close()
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        await self.state.close()

    # -- what the test writes, as other parts of a cluster would ---------------------------------
    async def set(self, obj: dict[str, Any]) -> None:
        """Store ``obj`` as it is, its status apart (as the agent keeps them), in one
        transaction: no validation, no metadata filled in."""
        key = key_of(obj)
        spec = {k: v for k, v in obj.items() if k != "status"}
        async with self.state.batch() as batch:
            batch.put(map_of(obj["kind"]), key, copy.deepcopy(spec))
            if "status" in obj:
                batch.put(STATUS, key, copy.deepcopy(obj["status"]))
            elif self.state.get(STATUS, key) is not None:
                batch.delete(STATUS, key)

    async def remove(self, kind: str, namespace: str, name: str) -> None:
        """Remove an object and its status at once (no graceful deletion)."""
        key = object_key(kind, namespace, name)
        async with self.state.batch() as batch:
            batch.delete(map_of(kind), key)
            if map_of(kind) == OBJECTS and self.state.get(STATUS, key) is not None:
                batch.delete(STATUS, key)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a scripted step on the serving loop; cancelled by :meth:`close` if unfinished."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    # -- AgentBackend ------------------------------------------------------------------------
    def node_ready(self, name: str) -> bool:
        """Whether the Node object ``name`` says Ready (the test writes its conditions)."""
        node = self.objects.get("Node", "", name)
        conditions = ((node or {}).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def list_nodes(self) -> list[dict[str, Any]]:
        return self.objects.list("Node", "")

    def list_objects(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        if kind == ENDPOINTS_KIND:  # computed, as the agent computes them
            return self._endpoints(namespace)
        return self.objects.list(kind, namespace)

    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == ENDPOINTS_KIND:
            return next(iter(self._endpoints(namespace, name)), None)
        return self.objects.get(kind, namespace, name)

    def _endpoints(self, namespace: str | None, name: str | None = None) -> list[dict[str, Any]]:
        return computed_endpoints(
            self.objects,
            namespace,
            name,
            node_ready=self.node_ready,
            node_id_of=lambda node: (
                (self.objects.get("Node", "", node) or {}).get("metadata") or {}
            ).get("uid"),
        )

    async def put_object(
        self,
        obj: dict[str, Any],
        warn: Callable[[str], None] | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        self.puts.append(copy.deepcopy(obj))
        return await self.objects.put(obj, warn, dry_run=dry_run)

    async def put_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        return await self.objects.put_status(kind, namespace, name, status, dry_run=dry_run)

    async def delete_object(
        self, kind: str, namespace: str, name: str, *, force: bool = False
    ) -> bool:
        return await self.objects.delete(kind, namespace, name, force=force)

    async def read_logs(self, request: LogRequest) -> LogReply:
        raise LogsUnavailable(f"pod {request.namespace}/{request.name} runs nowhere here")

    async def follow_logs(
        self, request: LogRequest, seconds: float
    ) -> AsyncGenerator[LogLine, None]:
        raise LogsUnavailable(f"pod {request.namespace}/{request.name} runs nowhere here")
        yield  # an async generator, as the agent's

    async def read_usage(self, names: list[str]) -> dict[str, UsageReport | UsageUnavailable]:
        """The reports a test put in :attr:`usage_reports` (the agent's are measured; the
        shape of the metrics documents is what tests of this backend check)."""
        return {
            name: self.usage_reports.get(name) or UsageUnavailable(f"node {name} has no report")
            for name in names
        }

    def watch(
        self,
        kind: str | tuple[str, ...],
        namespace: str | None,
        *,
        match: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = DEFAULT_WATCH_SECONDS,
        max_queue: int = WATCH_QUEUE_SIZE,
        since: int | None = None,
        gone: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> Watch:
        watch = self.watches.subscribe(
            kind,
            namespace,
            match=match,
            timeout=timeout,
            max_queue=max_queue,
            since=since,
            gone=gone,
        )
        if self.on_watch is not None:
            self.on_watch(self, kind)
        return watch

    def revision(self, key: str | None = None) -> int:
        return self.watches.revision if key is None else self.watches.revision_of(key)

    def status(self) -> dict[str, Any]:
        return copy.deepcopy(self._status)

    async def dashboard(self) -> dict[str, Any]:
        return {"node": self.node_name, "nodes": [], "edges": [], "leases": []}

    def block_nodes(self, names: list[str]) -> list[str]:
        if names:
            raise LookupError(f"no other node named {names[0]!r}")
        return []

    def stall_loop(self, seconds: float) -> float:
        self.stalled.append(seconds)
        return seconds


@contextmanager
def serving(
    backend: MemoryBackend, objects: list[dict[str, Any]], data_dir: Path, **options: Any
) -> Iterator[tuple[ApiServer, asyncio.AbstractEventLoop]]:
    """A real ApiServer (``options`` go to it) on 127.0.0.1:0 over ``backend`` opened with
    ``objects``, on an event loop in a thread of its own: the CLI under test runs in the test's
    thread and talks to it over HTTP, as it talks to an agent. Yields the server and its loop
    (where the backend lives); closes both, and the loop, on the way out."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-server", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(backend.open(objects), loop).result(timeout=10)
    server = ApiServer(backend, data_dir, **options)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
    try:
        yield server, loop
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        asyncio.run_coroutine_threadsafe(backend.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
