"""The kubelet: runs the pods assigned to this node and reports their status.

Shared Python (it will run in the browser node too): no threads, no sockets, no wasmtime here;
modules come from an :class:`ImageSource` (the peer-to-peer blob fetcher), instances from a
:class:`~p2pkube.runtime.interface.PodRuntime`.

Desired state is the document: a Pod whose ``spec.nodeName`` is this node runs here. The node
that runs a pod is the only writer of its ``status`` key (phase, container states, restart
counts), so a user's spec writes and the node's status writes never collide. The kubelet starts
a :class:`~p2pkube.runtime.pod.PodWorker` per pod assigned here (which runs the pod's lifecycle:
restarts, back-off, deadline, two-phase deletion), stops the workers of pods gone or being
deleted, admits pods (capacity, hostPath grants), writes their statuses in batches and serves
their logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from p2pkube.model.resources import Resources
from p2pkube.observe import NO_OBSERVER, Observer
from p2pkube.runtime import interface as rt
from p2pkube.runtime.configsources import ObjectLookup
from p2pkube.runtime.handler import HandlerPool
from p2pkube.runtime.hostpaths import (
    HOST_PATH_NOT_ALLOWED,
    HostPathPolicy,
    HostPathRefused,
    requested_host_paths,
)
from p2pkube.runtime.pod import ContainerRecord, PodWorker, pod_dir_name
from p2pkube.runtime.settings import KubeletSettings, RuntimeSettings
from p2pkube.services.settings import ServiceSettings
from p2pkube.state import object_key
from p2pkube.state.cluster import ClusterState
from p2pkube.state.store import OBJECTS, STATUS
from p2pkube.ticker import timeout_on_beat

log = logging.getLogger(__name__)

POD_PREFIX = "Pod/"


class PullProgress(Protocol):
    """How far one module's pull is (natively: ``p2pkube.blobs.fetcher.FetchProgress``)."""

    def summary(self) -> str:
        """One line for a person: bytes done of the size, and from how many peers."""
        ...


class ImageSource(Protocol):
    """Where module bytes come from (natively: the blob fetcher)."""

    async def ensure(self, digest: str) -> Path:
        """The local path of the blob ``digest``, fetched from peers if needed. An exception
        whose ``retryable`` attribute is False (``BlobTooLarge``) is not retried."""
        ...

    def progress(self, digest: str) -> PullProgress | None:
        """The running pull of ``digest``, if one runs (a pod waiting for it says how far
        it is)."""
        ...


class Kubelet:
    """Keeps the pods assigned to this node running, and their status current."""

    def __init__(
        self,
        node_name: str,
        state: ClusterState,
        runtime: rt.PodRuntime,
        images: ImageSource,
        pods_dir: Path,
        *,
        allocatable: Callable[[], Resources],
        settings: KubeletSettings,
        runtime_settings: RuntimeSettings,
        record: Callable[..., None] = lambda obj, reason, message, warning=False: None,
        host_paths: HostPathPolicy | None = None,
        on_host_path_refused: Callable[[], None] = lambda: None,
        services: ServiceSettings | None = None,
        read_object: ObjectLookup | None = None,
        secret_dir: Path | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self.node_name = node_name
        self.observer = observer
        """Told of pod starts, container starts, restarts and runs (metrics)."""
        self.read_object: ObjectLookup = read_object or self._stored_object
        """``(kind, namespace, name)`` -> a ConfigMap or Secret as the node's object service
        shows it (a Secret opened); what env and projected volumes are made from."""
        self.secret_dir = secret_dir or pods_dir.parent / "secret-volumes"
        """Where secret volumes are projected, one directory per pod: in memory
        (``kubelet.secret_volume_dir``), so Secret values never reach the data dir."""
        self.services = services or ServiceSettings()
        """Limits of the HTTP handler containers here (deadline, concurrency, probes)."""
        self.host_paths = host_paths or HostPathPolicy()
        """Which host directories pods may mount here (none unless the operator granted)."""
        self.refused_host_paths: dict[str, None] = {}
        """hostPaths refused here that the published grants allow as written (a symlink in
        them leads out of the grants), oldest first, at most ``max_refused_host_paths``: the
        Node status lists them, so placement does not send them here again."""
        self._on_host_path_refused = on_host_path_refused
        """Called when ``refused_host_paths`` changed (the node republishes its status)."""
        self.record = record
        """``record(pod, reason, message, warning=False)``: an event about a pod."""
        self.state = state
        self.runtime = runtime
        self.images = images
        self.pods_dir = pods_dir
        self.allocatable = allocatable
        self.settings = settings
        self.runtime_settings = runtime_settings
        self.workers: dict[str, PodWorker] = {}
        self._dirty: dict[str, PodWorker] = {}
        self._status_wake = asyncio.Event()
        self._status_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._finalizers: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._desired: dict[str, dict[str, Any]] | None = None
        """The pods assigned here by key, kept current from the keys each change names (None:
        read every pod at the next sync). Decoding every pod of the document at every
        change cost each node O(all pods) per pod created, in a 1,000-pod burst too."""
        self._changed: set[str] = set()
        """Pod keys changed since the last sync (bounded by the document's pod keys)."""

    async def start(self) -> None:
        self._unsubscribe = self.state.on_change(self._on_change)
        await self._remove_stale_dirs()
        self._task = asyncio.create_task(self._loop(), name="kubelet")
        self._status_task = asyncio.create_task(self._status_writer(), name="pod statuses")

    async def close(self) -> None:
        """Stop every pod's containers (they are restarted on the next start) and the loop."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        loops = [task for task in (self._task, self._status_task) if task is not None]
        for task in loops:
            task.cancel()
        if loops:  # bounded: a loop that lost its cancel must not hang the agent's stop
            _, pending = await asyncio.wait(loops, timeout=self.runtime_settings.stop_timeout)
            if pending:
                log.warning("the kubelet's loops did not stop in time: %s", pending)
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        tasks += list(self._finalizers)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.runtime_settings.stop_timeout)
            if pending:
                log.warning("%d pod tasks did not stop in time", len(pending))

    # -- status ----------------------------------------------------------------------------------
    def status_changed(self, worker: PodWorker) -> None:
        """A pod's status changed: it is written with the next batch (never blocks)."""
        self._dirty[worker.key] = worker
        self._status_wake.set()

    async def _status_writer(self) -> None:
        """Write changed statuses, all of a burst in one transaction (one fsync, one update
        to the peers) instead of one per pod and change: at once when things are quiet, then
        at most every ``status_batch_interval`` while they change."""
        while True:
            await self._status_wake.wait()
            self._status_wake.clear()
            workers, self._dirty = list(self._dirty.values()), {}
            await self.write_statuses(workers)
            await asyncio.sleep(self.settings.status_batch_interval)

    async def write_statuses(self, workers: list[PodWorker]) -> None:
        """Write the statuses of ``workers`` that changed and are still theirs to report."""
        writes = []
        for worker in workers:
            if self._dirty.get(worker.key) is worker:
                del self._dirty[worker.key]  # written now, not again with the next batch
            status = worker.status()
            if status != worker.written and self.owns(worker.key, worker.uid):
                writes.append((worker, status))
        if not writes:
            return
        try:
            async with self.state.batch() as batch:
                for worker, status in writes:
                    batch.put(STATUS, worker.key, status)
        except Exception as exc:  # disk trouble: retry, the workers keep the truth
            log.warning("writing %d pod statuses failed (%s); retrying", len(writes), exc)
            await asyncio.sleep(self.settings.status_retry_delay)
            for worker, _ in writes:
                self.status_changed(worker)
            return
        for worker, status in writes:
            worker.written = status

    # -- desired state ---------------------------------------------------------------------------
    def _on_change(self, map_name: str, keys: set[str], _origin: object) -> None:
        if map_name != OBJECTS:
            return
        pods = {key for key in keys if key.startswith(POD_PREFIX)}
        if pods:
            if self._desired is not None:
                self._changed |= pods
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                self.sync()
            except Exception:
                log.exception("kubelet sync failed")
                self._desired = None
            try:
                async with timeout_on_beat(self.settings.resync_interval):
                    await self._wake.wait()
            except TimeoutError:
                self._desired = None  # the safety net reads every pod again

    def assigned(self) -> dict[str, dict[str, Any]]:
        """Pods whose spec.nodeName is this node, by key (every pod of the document read)."""
        return {
            key: pod for key, pod in self.state.items(OBJECTS, POD_PREFIX) if self._is_mine(pod)
        }

    def _is_mine(self, pod: Any) -> TypeGuard[dict[str, Any]]:
        return isinstance(pod, dict) and pod.get("spec", {}).get("nodeName") == self.node_name

    def desired(self) -> dict[str, dict[str, Any]]:
        """``assigned()``, read again only for the pod keys changed since the last call."""
        if self._desired is None:
            self._changed.clear()
            self._desired = self.assigned()
        else:
            changed, self._changed = self._changed, set()
            for key in changed:
                pod = self.state.get(OBJECTS, key)
                if self._is_mine(pod):
                    self._desired[key] = pod
                else:
                    self._desired.pop(key, None)
        return dict(self._desired)

    def owns(self, key: str, uid: str) -> bool:
        """Whether the pod ``key`` with ``uid`` is (still) this node's to report on."""
        pod = self.state.get(OBJECTS, key)
        return (
            isinstance(pod, dict)
            and pod.get("metadata", {}).get("uid") == uid
            and pod.get("spec", {}).get("nodeName") == self.node_name
        )

    def sync(self) -> None:
        """Start workers for new pods, stop the ones of pods gone or being deleted."""
        desired = self.desired()
        for key, worker in list(self.workers.items()):
            pod = desired.get(key)
            if pod is None or pod["metadata"].get("uid") != worker.uid:
                worker.stop(delete=False, message="the pod is no longer assigned to this node")
                self._forget(key, worker)
        for key, pod in desired.items():
            worker = self.workers.get(key) or self._start_worker(key, pod)
            if pod["metadata"].get("deletionTimestamp"):
                worker.stop(delete=True)

    def _start_worker(self, key: str, pod: dict[str, Any]) -> PodWorker:
        """A worker for the pod ``key`` that has none, running from now on."""
        worker = PodWorker(self, key, pod)
        self.workers[key] = worker
        worker.task = asyncio.create_task(self._run_worker(worker), name=f"pod {key}")
        return worker

    async def _run_worker(self, worker: PodWorker) -> None:
        try:
            await worker.run()
        except asyncio.CancelledError:
            for record in worker.containers:
                if record.instance is not None:
                    record.instance.stop(rt.KILLED, "the agent is stopping")
            raise
        except Exception:
            log.exception("pod %s: worker failed", worker.key)
        finally:
            if self.workers.get(worker.key) is worker:
                del self.workers[worker.key]

    def _forget(self, key: str, worker: PodWorker) -> None:
        """The pod left this node (deleted elsewhere, or reassigned): clean up after it."""
        if self.workers.get(key) is worker:
            del self.workers[key]
        task = asyncio.create_task(self._clean_up(worker), name=f"clean up {key}")
        self._finalizers.add(task)
        task.add_done_callback(self._finalizers.discard)

    async def _clean_up(self, worker: PodWorker) -> None:
        if worker.task is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.runtime_settings.stop_timeout + 5):
                    await asyncio.shield(worker.task)
        status = self.state.get(STATUS, worker.key)
        if isinstance(status, dict) and status.get("podUID") == worker.uid:
            if self.state.get(OBJECTS, worker.key) is None:
                await self.state.delete(STATUS, worker.key)
        await self._remove_files(worker)

    async def _remove_files(self, worker: PodWorker) -> None:
        await self.runtime.remove_pod_files(worker.dir)
        await self.runtime.remove_pod_files(worker.secret_dir)

    def _stored_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """An object as stored (a Secret sealed): for a kubelet given no object service."""
        found = self.state.get(OBJECTS, object_key(kind, namespace, name))
        return found if isinstance(found, dict) else None

    async def finalize_delete(self, worker: PodWorker) -> None:
        """The last step of a delete: the pod has stopped; remove it from the cluster.

        Its files and status go first and the object last, as a finalizer would: a client
        that sees the object gone may take the delete as complete (an agent that stops in
        between finds the object on its next start and finishes the delete)."""
        status = self.state.get(STATUS, worker.key)
        if isinstance(status, dict) and status.get("podUID") == worker.uid:
            await self.state.delete(STATUS, worker.key)
        await self._remove_files(worker)
        if self.owns(worker.key, worker.uid):
            await self.state.delete(OBJECTS, worker.key)
        log.info("pod %s deleted", worker.key)

    async def _remove_stale_dirs(self) -> None:
        """Remove the files of pods that are no longer this node's (deleted offline)."""
        live = {
            pod_dir_name(
                p["metadata"].get("namespace", "default"),
                p["metadata"]["name"],
                p["metadata"].get("uid", ""),
            )
            for p in self.assigned().values()
        }
        await self.runtime.remove_stale_pod_files(self.pods_dir, live)
        await self.runtime.remove_stale_pod_files(self.secret_dir, live)

    # -- admission -------------------------------------------------------------------------------
    def admit(self, worker: PodWorker) -> tuple[str, str] | None:
        """(reason, message) when this node cannot take the pod, as the kubelet's admission."""
        active = [w for w in self.workers.values() if w is not worker and not w.terminal]
        if len(active) >= self.settings.max_pods:
            return (
                "OutOfpods",
                f"Node didn't have enough capacity: pods, max {self.settings.max_pods}",
            )
        used = sum((other.requests for other in active), Resources())
        available = self.allocatable() - used
        wanted = worker.requests
        if wanted.milli_cpu > available.milli_cpu:
            return "OutOfcpu", "Node didn't have enough resource: cpu"
        if wanted.memory > available.memory:
            return "OutOfmemory", "Node didn't have enough resource: memory"
        return None

    async def admit_host_paths(self, worker: PodWorker) -> tuple[str, str] | None:
        """(HostPathNotAllowed, message) when a ``hostPath`` of the pod is not this node's
        operator's grant, or is (in, or above) the data dir; else None, and the worker keeps
        the resolved directories to mount."""
        requests = requested_host_paths(worker.spec)
        if not requests:
            return None
        try:
            worker.host_paths = await asyncio.to_thread(self.host_paths.resolve, requests)
        except HostPathRefused as exc:
            message = f"{exc}; node {self.node_name} allows {self.host_paths.describe()}"
            log.warning("pod %s refused: %s", worker.key, message)
            if exc.unforeseen and exc.path not in self.refused_host_paths:
                self.refused_host_paths[exc.path] = None
                while len(self.refused_host_paths) > self.settings.max_refused_host_paths:
                    del self.refused_host_paths[next(iter(self.refused_host_paths))]
                self._on_host_path_refused()
            return HOST_PATH_NOT_ALLOWED, message
        return None

    # -- logs ------------------------------------------------------------------------------------
    def _worker_for(self, namespace: str, name: str) -> PodWorker:
        worker = self.workers.get(f"{POD_PREFIX}{namespace}/{name}")
        if worker is None:
            raise LookupError(f"pod {namespace}/{name} is not running on node {self.node_name}")
        return worker

    def _container(self, worker: PodWorker, container: str | None) -> ContainerRecord:
        if container is None:
            if len(worker.containers) > 1:
                names = " ".join(r.name for r in worker.containers)
                raise ValueError(
                    f"a container name must be specified for pod {worker.name}, "
                    f"choose one of: [{names}]"
                )
            return worker.containers[0]
        for record in worker.containers:
            if record.name == container:
                return record
        raise LookupError(f"container {container} is not valid for pod {worker.name}")

    async def logs(
        self,
        namespace: str,
        name: str,
        container: str | None = None,
        *,
        previous: bool = False,
        tail: int | None = None,
        since: str | None = None,
    ) -> list[rt.LogLine]:
        """The lines a container of a pod on this node wrote (``previous``: the instance before)."""
        worker = self._worker_for(namespace, name)
        record = self._container(worker, container)
        restart = record.restart_count - (1 if previous else 0)
        if restart < 0 or (previous and record.restart_count == 0):
            raise LookupError(
                f"previous terminated container {record.name} in pod {name} not found"
            )
        return await self.runtime.read_log(
            worker.log_path(record.name, restart), tail=tail, since=since
        )

    def running(self, namespace: str, name: str, container: str | None) -> bool:
        """Whether the container has a running instance or serves requests (a follower may
        wait for more)."""
        record = self._container(self._worker_for(namespace, name), container)
        return record.instance is not None or record.handler is not None

    # -- services --------------------------------------------------------------------------------
    def handler_for(self, namespace: str, pod: str, port: int) -> HandlerPool | None:
        """The request handler of the container of pod ``namespace/pod`` that declares
        containerPort ``port``, if the pod runs on this node and that container serves now
        (its module is ready and the pod is not stopping); None otherwise."""
        worker = self.workers.get(f"{POD_PREFIX}{namespace}/{pod}")
        if worker is None or worker.stopping.is_set():
            return None
        handler = worker.handler_on(port)
        return handler if handler is not None and not handler.closed else None

    def stats(self) -> dict[str, Any]:
        phases: dict[str, int] = {}
        for worker in self.workers.values():
            phases[worker.phase] = phases.get(worker.phase, 0) + 1
        handlers = {
            f"{worker.namespace}/{worker.name}/{record.name}": record.handler.stats()
            for worker in self.workers.values()
            for record in worker.containers
            if record.handler is not None
        }
        return {"pods": len(self.workers), "phases": phases, "handlers": handlers}
