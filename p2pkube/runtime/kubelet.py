"""The kubelet: runs the pods assigned to this node and reports their status.

Shared Python (it will run in the browser node too): no threads, no sockets, no wasmtime here;
modules come from an :class:`ImageSource` (the peer-to-peer blob fetcher), instances from a
:class:`~p2pkube.runtime.interface.PodRuntime`.

Desired state is the document: a Pod whose ``spec.nodeName`` is this node runs here. The node
that runs a pod is the only writer of its ``status`` key (phase, container states, restart
counts), so a user's spec writes and the node's status writes never collide. The lifecycle is
Kubernetes': Pending (fetching and compiling the module) → Running → Succeeded/Failed, with
``restartPolicy`` Always/OnFailure/Never, exponential back-off between restarts
(CrashLoopBackOff), ``activeDeadlineSeconds``, and two-phase deletion: a user's delete marks the
pod (``metadata.deletionTimestamp``), the kubelet stops it, writes its final status and then
deletes the object itself.

The agent may crash while pods run (their instances die with it). On the next start the kubelet
finds, in the replicated status, containers it left running: it records them terminated with
reason AgentRestarted and restarts them if their restart policy says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from p2pkube.backoff import Backoff
from p2pkube.model.quantity import parse_quantity
from p2pkube.model.resources import Resources, cpu_limit, memory_limit, pod_requests
from p2pkube.model.timestamps import parse_time, utc_now
from p2pkube.runtime import interface as rt
from p2pkube.runtime.hostpaths import (
    HOST_PATH_NOT_ALLOWED,
    HostPathPolicy,
    HostPathRefused,
    requested_host_paths,
)
from p2pkube.runtime.settings import KubeletSettings, RuntimeSettings
from p2pkube.state.cluster import ClusterState
from p2pkube.state.store import OBJECTS, STATUS

log = logging.getLogger(__name__)

POD_PREFIX = "Pod/"
PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
TERMINAL_PHASES = (SUCCEEDED, FAILED)


class ImageSource(Protocol):
    """Where module bytes come from (natively: the blob fetcher)."""

    async def ensure(self, digest: str) -> Path:
        """The local path of the blob ``digest``, fetched from peers if needed. An exception
        whose ``retryable`` attribute is False (``BlobTooLarge``) is not retried."""
        ...


def pod_dir_name(namespace: str, name: str, uid: str) -> str:
    """``<namespace>_<name>_<uid>``, the kubelet's layout under /var/log/pods."""
    return f"{namespace}_{name}_{uid}"


def restarts(policy: str, termination: rt.Termination) -> bool:
    """Whether a container that ended so runs again under ``policy``."""
    return policy == "Always" or (policy == "OnFailure" and not termination.succeeded)


def _terminated(termination: rt.Termination) -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": termination.exit_code,
            "reason": termination.reason,
            **({"message": termination.message} if termination.message else {}),
            "startedAt": termination.started_at,
            "finishedAt": termination.finished_at,
        }
    }


def _termination_of(state: dict[str, Any]) -> rt.Termination | None:
    """The Termination recorded in a containerStatus ``state``/``lastState``, if any."""
    terminated = state.get("terminated") if isinstance(state, dict) else None
    if not isinstance(terminated, dict):
        return None
    return rt.Termination(
        int(terminated.get("exitCode", 0)),
        str(terminated.get("reason", "")),
        str(terminated.get("message", "")),
        str(terminated.get("startedAt", "")),
        str(terminated.get("finishedAt", "")),
    )


@dataclass
class ContainerRecord:
    """What the kubelet knows of one container of a pod it runs."""

    spec: dict[str, Any]
    restart_count: int = 0
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    started: bool = False
    done: bool = False
    """True once it will not run again (its policy says so, the pod is stopping, ...)."""
    instance: rt.Instance | None = None
    last: rt.Termination | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def waiting(self, reason: str, message: str = "") -> None:
        self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}

    def ended(self, termination: rt.Termination) -> None:
        self.instance = None
        self.last = termination
        self.state = _terminated(termination)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.spec["image"],
            "imageID": self.spec["image"],
            "ready": "running" in self.state,
            "started": "running" in self.state,
            "restartCount": self.restart_count,
            "state": self.state,
            **({"lastState": self.last_state} if self.last_state else {}),
        }


class PodWorker:
    """Runs one pod (one uid) on this node until it ends or is deleted."""

    def __init__(self, kubelet: Kubelet, key: str, pod: dict[str, Any]) -> None:
        self.kubelet = kubelet
        self.key = key
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta.get("uid", "")
        self.namespace: str = meta.get("namespace", "default")
        self.name: str = meta["name"]
        self.spec: dict[str, Any] = pod["spec"]
        self.policy: str = self.spec.get("restartPolicy", "Always")
        self.dir = kubelet.pods_dir / pod_dir_name(self.namespace, self.name, self.uid)
        self.containers = [ContainerRecord(dict(c)) for c in self.spec["containers"]]
        self.phase = PENDING
        self.reason = ""
        self.message = ""
        self.start_time: str | None = None
        self.deadline: float | None = None
        self.stopping = asyncio.Event()
        """Set when the pod leaves this node (deleted, reassigned): the worker ends."""
        self.halted = asyncio.Event()
        """Set when no container may start again (stopping, or the pod's deadline passed)."""
        self.expired = False
        self.rejected = False
        """Admission refused it: no container was ever set up (none is listed)."""
        self.host_paths: dict[str, Path] = {}
        """Volume name -> the resolved host directory admission checked, which is what is
        mounted (not the path as written, which a symlink swapped in since could redirect)."""
        self.delete_when_stopped = False
        self.written: dict[str, Any] | None = None
        """The last status this worker wrote (the kubelet's writer skips unchanged ones)."""
        self.task: asyncio.Task[None] | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    # -- control ---------------------------------------------------------------------------------
    def stop(self, *, delete: bool, reason: str = rt.KILLED, message: str = "") -> None:
        """Stop the pod's containers; with ``delete``, then remove the object (2-phase delete)."""
        self.delete_when_stopped = self.delete_when_stopped or delete
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.halted.set()
        for record in self.containers:
            if record.instance is not None:
                self._event("Killing", f"Stopping container {record.name}")
                record.instance.stop(reason, message or "the pod is being deleted")

    # -- the pod's life --------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            if self._resume() and not self.terminal:
                problem = self.kubelet.admit(self) or await self.kubelet.admit_host_paths(self)
                if problem is not None:
                    reason, message = problem
                    self.rejected = True
                    self._finish_pod(FAILED, reason, message)
                    self._event(reason, message, warning=True)
                else:
                    await self._run_containers()
            self._changed()
            if not self.delete_when_stopped:
                await self.stopping.wait()  # terminal or not, the object stays until deleted
        finally:
            await self.kubelet.write_statuses([self])
        if self.delete_when_stopped:
            await self.kubelet.finalize_delete(self)

    def _resume(self) -> bool:
        """Take over what a previous life of this agent recorded; False when it must not run."""
        previous = self.kubelet.state.get(STATUS, self.key)
        if not isinstance(previous, dict) or previous.get("podUID") != self.uid:
            return True
        self.phase = previous.get("phase", PENDING)
        self.reason = previous.get("reason", "")
        self.message = previous.get("message", "")
        self.start_time = previous.get("startTime")
        by_name = {
            s.get("name"): s for s in previous.get("containerStatuses", []) if isinstance(s, dict)
        }
        now = utc_now()
        for record in self.containers:
            old = by_name.get(record.name)
            if old is None:
                continue
            record.restart_count = int(old.get("restartCount", 0))
            record.last_state = old.get("lastState", {}) or {}
            state = old.get("state", {}) or {}
            ended = _termination_of(state)
            if ended is None and ("running" in state or old.get("started")):
                started = state.get("running", {}).get("startedAt", now)
                ended = rt.Termination(
                    rt.EXIT_KILLED,
                    rt.AGENT_RESTARTED,
                    "the agent running this container stopped while it ran",
                    started,
                    now,
                )
            if ended is not None:
                record.ended(ended)
                record.started = True
                record.done = self.terminal or not restarts(self.policy, ended)
        if not self.terminal and self.containers and all(r.done for r in self.containers):
            self._finish_pod(self._phase_when_done(), "", "")
        return not self.terminal

    async def _run_containers(self) -> None:
        if self.start_time is None:
            self.start_time = utc_now()
        deadline_seconds = self.spec.get("activeDeadlineSeconds")
        expiry: asyncio.Task[None] | None = None
        if deadline_seconds:
            started = parse_time(self.start_time) or time.time()
            remaining = started + float(deadline_seconds) - time.time()
            self.deadline = time.monotonic() + remaining
            expiry = asyncio.create_task(self._expire(remaining), name=f"deadline {self.key}")
        self.phase = RUNNING if any(r.started for r in self.containers) else PENDING
        self._changed()
        try:
            await asyncio.gather(*(self._run_container(r) for r in self.containers))
        finally:
            if expiry is not None:
                expiry.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await expiry
        if self.expired:
            self._finish_pod(
                FAILED,
                rt.DEADLINE_EXCEEDED,
                "Pod was active on the node longer than the specified deadline",
            )
        elif not self.terminal and not self.stopping.is_set():
            self._finish_pod(self._phase_when_done(), "", "")

    async def _expire(self, remaining: float) -> None:
        """activeDeadlineSeconds: stop every container; the pod fails once they have ended."""
        await asyncio.sleep(max(0.0, remaining))
        self.expired = True
        self._event(
            "DeadlineExceeded", "Pod was active longer than activeDeadlineSeconds", warning=True
        )
        self.halted.set()
        for record in self.containers:
            if record.instance is not None:
                record.instance.stop(rt.DEADLINE_EXCEEDED, "active deadline reached")

    async def _run_container(self, record: ContainerRecord) -> None:
        kubelet = self.kubelet
        image = str(record.spec["image"])
        restart = Backoff(kubelet.settings.backoff_initial, kubelet.settings.backoff_max)
        if record.done:
            return
        if record.last is not None:  # resumed after an agent restart: back off first
            record.last_state = record.state
            if not await self._back_off(record, restart.current):
                return
        path = await self._pull(record, image)
        while path is not None and not self._over(record):
            ran_since = time.monotonic()
            termination = await self._run_once(record, image, path)
            record.last_state = {}
            record.ended(termination)
            self._changed()
            if not termination.succeeded:
                self._event(
                    termination.reason,
                    f"Container {record.name} ended: {termination.message or termination.reason} "
                    f"(exit code {termination.exit_code})",
                    warning=True,
                )
            if self._over(record) or not restarts(self.policy, termination):
                record.done = True
                self._changed()
                return
            if time.monotonic() - ran_since >= kubelet.settings.backoff_reset_after:
                restart.reset()
            record.last_state = record.state
            if not await self._back_off(record, restart.next()):
                return

    def _over(self, record: ContainerRecord) -> bool:
        """The container must not (re)start: the pod is halted, over, or it is done."""
        return self.halted.is_set() or self.terminal or record.done

    async def _back_off(self, record: ContainerRecord, delay: float) -> bool:
        """Wait ``delay`` before the next restart (CrashLoopBackOff); False if it must not."""
        record.waiting(
            "CrashLoopBackOff",
            f"back-off {delay:g}s restarting failed container={record.name} "
            f"pod={self.name}_{self.namespace}",
        )
        self._changed()
        self._event("BackOff", f"Back-off restarting container {record.name}", warning=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self.halted.wait()
        if self._over(record):
            record.done = True
            record.state = record.last_state or record.state
            record.last_state = {}
            self._changed()
            return False
        record.restart_count += 1
        return True

    async def _pull(self, record: ContainerRecord, image: str) -> Path | None:
        """The module's local path, retried with back-off; None if the pod stops first."""
        settings = self.kubelet.settings
        pull_backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        failures = 0
        while not self._over(record):
            try:
                async with asyncio.timeout(settings.image_pull_timeout):
                    path = await self.kubelet.images.ensure(image)
                self._event("Pulled", f"Module {image} is on the node")
                return path
            except Exception as exc:
                failures += 1
                message = f"failed to fetch {image}: {exc or type(exc).__name__}"
                log.warning("pod %s: %s", self.key, message)
                self._event("Failed", message, warning=True)
                if not getattr(exc, "retryable", True):
                    # E.g. a module over blobs.max_blob_bytes: it will not shrink, so no retry
                    # (like Kubernetes' InvalidImageName): the pod waits, Pending, until it is
                    # deleted or its deadline passes; a restarted agent tries once more.
                    record.waiting("ErrImagePull", message)
                    self._changed()
                    await self.halted.wait()
                    break
                # Kubernetes shows ErrImagePull after the first failure, then ImagePullBackOff.
                if failures == 1:
                    record.waiting("ErrImagePull", message)
                else:
                    record.waiting(
                        "ImagePullBackOff", f"back-off {pull_backoff.current:g}s: {message}"
                    )
                self._changed()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pull_backoff.next()):
                    await self.halted.wait()
        record.done = True
        return None

    async def _run_once(self, record: ContainerRecord, image: str, path: Path) -> rt.Termination:
        kubelet = self.kubelet
        try:
            await kubelet.runtime.prepare(image, path)
            launch = self._launch(record, image, path)
        except rt.InvalidModuleError as exc:
            now = utc_now()
            return rt.Termination(rt.EXIT_TRAPPED, rt.INVALID_MODULE, str(exc), now, now)
        instance = kubelet.runtime.start(launch)
        self._event("Started", f"Started container {record.name}")
        record.instance = instance
        record.started = True
        record.state = {"running": {"startedAt": instance.started_at}}
        if self.phase == PENDING:
            self.phase = RUNNING
        self._changed()
        if self.halted.is_set():
            instance.stop(
                rt.DEADLINE_EXCEEDED if self.expired else rt.KILLED, "the pod is stopping"
            )
        return await instance.done

    def _launch(self, record: ContainerRecord, image: str, path: Path) -> rt.Launch:
        spec = record.spec
        settings = self.kubelet.runtime_settings
        log_path = self.log_path(record.name, record.restart_count)
        command = spec.get("command") or [record.name]
        stdin = spec.get("stdinData")
        return rt.Launch(
            pod=f"{self.namespace}/{self.name}",
            container=record.name,
            image=image,
            module_path=path,
            argv=[*command, *spec.get("args", [])],
            env=[(e["name"], e.get("value", "")) for e in spec.get("env", [])],
            limits=rt.Limits(
                memory_bytes=memory_limit(spec, int(parse_quantity(settings.default_memory_limit))),
                cpu_cores=cpu_limit(spec),
                deadline=self.deadline,
            ),
            log_path=log_path,
            stdin=stdin.encode() if isinstance(stdin, str) else None,
            mounts=self._mounts(spec),
        )

    def _mounts(self, spec: dict[str, Any]) -> list[rt.Mount]:
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        mounts = []
        for mount in spec.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            empty_dir = "emptyDir" in volume
            host = (
                self.dir / "volumes" / volume["name"]
                if empty_dir
                else self.host_paths[volume["name"]]  # admitted and resolved
            )
            mounts.append(
                rt.Mount(host, mount["mountPath"], bool(mount.get("readOnly", True)), empty_dir)
            )
        return mounts

    def log_path(self, container: str, restart: int) -> Path:
        return self.dir / container / f"{restart}.log"

    # -- phase and status ------------------------------------------------------------------------
    def _phase_when_done(self) -> str:
        failed = any(r.last is not None and not r.last.succeeded for r in self.containers)
        never_ran = any(r.last is None for r in self.containers)
        return FAILED if failed or never_ran else SUCCEEDED

    def _finish_pod(self, phase: str, reason: str, message: str) -> None:
        if self.terminal:
            return
        self.phase, self.reason, self.message = phase, reason, message
        self._changed()

    def status(self) -> dict[str, Any]:
        ready = self.phase == RUNNING and all("running" in r.state for r in self.containers)
        return {
            "podUID": self.uid,
            "phase": self.phase,
            **({"reason": self.reason} if self.reason else {}),
            **({"message": self.message} if self.message else {}),
            **({"startTime": self.start_time} if self.start_time else {}),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [] if self.rejected else [r.status() for r in self.containers],
        }

    def _changed(self) -> None:
        self.kubelet.status_changed(self)

    def _event(self, reason: str, message: str, warning: bool = False) -> None:
        self.kubelet.record(self.pod, reason, message, warning=warning)


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
    ) -> None:
        self.node_name = node_name
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
        if map_name == OBJECTS and any(key.startswith(POD_PREFIX) for key in keys):
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                self.sync()
            except Exception:
                log.exception("kubelet sync failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.resync_interval):
                    await self._wake.wait()

    def assigned(self) -> dict[str, dict[str, Any]]:
        """Pods whose spec.nodeName is this node, by key."""
        return {
            key: pod
            for key, pod in self.state.items(OBJECTS, POD_PREFIX)
            if isinstance(pod, dict) and pod.get("spec", {}).get("nodeName") == self.node_name
        }

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
        desired = self.assigned()
        for key, worker in list(self.workers.items()):
            pod = desired.get(key)
            if pod is None or pod["metadata"].get("uid") != worker.uid:
                worker.stop(delete=False, message="the pod is no longer assigned to this node")
                self._forget(key, worker)
        for key, pod in desired.items():
            worker = self.workers.get(key)
            if worker is None:
                worker = PodWorker(self, key, pod)
                self.workers[key] = worker
                worker.task = asyncio.create_task(self._run_worker(worker), name=f"pod {key}")
            if pod["metadata"].get("deletionTimestamp"):
                worker.stop(delete=True)

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
        await self.runtime.remove_pod_files(worker.dir)

    async def finalize_delete(self, worker: PodWorker) -> None:
        """The last step of a delete: the pod has stopped; remove it from the cluster."""
        if self.owns(worker.key, worker.uid):
            await self.state.delete(OBJECTS, worker.key)
        status = self.state.get(STATUS, worker.key)
        if isinstance(status, dict) and status.get("podUID") == worker.uid:
            await self.state.delete(STATUS, worker.key)
        await self.runtime.remove_pod_files(worker.dir)
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

    # -- admission -------------------------------------------------------------------------------
    def admit(self, worker: PodWorker) -> tuple[str, str] | None:
        """(reason, message) when this node cannot take the pod, as the kubelet's admission."""
        active = [w for w in self.workers.values() if w is not worker and not w.terminal]
        if len(active) >= self.settings.max_pods:
            return (
                "OutOfpods",
                f"Node didn't have enough capacity: pods, max {self.settings.max_pods}",
            )
        used = Resources()
        for other in active:
            used = used + pod_requests(other.spec)
        available = self.allocatable() - used
        wanted = pod_requests(worker.spec)
        if wanted.cpu > available.cpu:
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
        """Whether the container has a running instance (a follower may wait for more)."""
        worker = self._worker_for(namespace, name)
        return self._container(worker, container).instance is not None

    def stats(self) -> dict[str, Any]:
        phases: dict[str, int] = {}
        for worker in self.workers.values():
            phases[worker.phase] = phases.get(worker.phase, 0) + 1
        return {"pods": len(self.workers), "phases": phases}
