"""One pod's life on this node: the :class:`PodWorker` the kubelet starts for each pod assigned
here, and what it records of each container.

The lifecycle is Kubernetes': Pending (fetching and compiling the module) → Running →
Succeeded/Failed, with ``restartPolicy`` Always/OnFailure/Never, exponential back-off between
restarts (CrashLoopBackOff), ``activeDeadlineSeconds``, and two-phase deletion: a user's delete
marks the pod (``metadata.deletionTimestamp``), the worker stops it, writes its final status and
then the kubelet deletes the object itself.

The agent may crash while pods run (their instances die with it). On the next start a worker
finds, in the replicated status, containers it left running: it records them terminated with
reason AgentRestarted and restarts them if their restart policy says so.

Shared Python (the browser node runs it too): no threads, sockets or wasmtime here. Which pods
run, admission and the batched status writes are the kubelet's (``runtime/kubelet.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from p2pkube.backoff import Backoff
from p2pkube.model.quantity import parse_quantity
from p2pkube.model.resources import Resources, cpu_limit, memory_limit, pod_requests
from p2pkube.model.timestamps import parse_time, utc_now
from p2pkube.runtime import configvolumes, podenv
from p2pkube.runtime import interface as rt
from p2pkube.runtime.base import failed
from p2pkube.runtime.configsources import SourceMissing
from p2pkube.runtime.handler import HandlerPool, container_concurrency
from p2pkube.runtime.probe import HttpGetProbe, ReadinessProber, container_ports, is_handler
from p2pkube.state.store import STATUS

if TYPE_CHECKING:  # the worker's owner; it imports this module
    from p2pkube.runtime.kubelet import Kubelet

log = logging.getLogger(__name__)
T = TypeVar("T")

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
TERMINAL_PHASES = (SUCCEEDED, FAILED)


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
    handler: HandlerPool | None = None
    """An HTTP handler container's request pool, while it serves (``runtime/handler.py``)."""
    probe_ok: bool = True
    """False while its readiness probe has not passed (or failed ``failureThreshold`` times)."""
    imports_told: bool = False
    """Its module's trapped imports have been named in an event (once per container)."""

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
            "ready": "running" in self.state and self.probe_ok,
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
        self.secret_dir = kubelet.secret_dir / pod_dir_name(self.namespace, self.name, self.uid)
        """Where its secret volumes are projected (``kubelet.secret_volume_dir``)."""
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
        self._projected: dict[str, dict[str, bytes]] = {}
        """configMap volume -> the files its last projection wrote (this life of the agent)."""
        self.delete_when_stopped = False
        self.written: dict[str, Any] | None = None
        """The last status this worker wrote (the kubelet's writer skips unchanged ones)."""
        self.task: asyncio.Task[None] | None = None
        self.seen = time.monotonic()
        """When this kubelet first saw the pod (the start of its start latency)."""

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @cached_property
    def requests(self) -> Resources:
        """What the pod asks of this node, parsed once: admission sums it over every active
        pod here at each new pod, and parsing the quantities again each time made a burst of
        N pods cost N² parses (a 1,000-pod Job: the largest CPU cost of a node). A pod's
        containers (hence its requests) never change for its uid. A malformed quantity raises
        ValueError here, at each read (nothing is cached then)."""
        return pod_requests(self.spec)

    # -- control ---------------------------------------------------------------------------------
    def stop(self, *, delete: bool, reason: str = rt.KILLED, message: str = "") -> None:
        """Stop the pod's containers; with ``delete``, then remove the object (2-phase delete)."""
        self.delete_when_stopped = self.delete_when_stopped or delete
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.halted.set()
        for record in self.containers:
            if record.instance is not None or record.handler is not None:
                self._event("Killing", f"Stopping container {record.name}")
            if record.instance is not None:
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
        refresher: asyncio.Task[None] | None = None
        try:
            if self._config_volumes() and await self._wait_config_volumes():
                refresher = asyncio.create_task(
                    self._refresh_config_volumes(), name=f"configMap volumes {self.key}"
                )
            if not self.halted.is_set():
                await asyncio.gather(*(self._run_container(r) for r in self.containers))
        finally:
            for task in (expiry, refresher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if self.expired:
            self._finish_pod(
                FAILED,
                rt.DEADLINE_EXCEEDED,
                "Pod was active on the node longer than the specified deadline",
            )
        elif not self.terminal and not self.stopping.is_set():
            self._finish_pod(self._phase_when_done(), "", "")

    # -- configMap and secret volumes (runtime/configvolumes.py) ----------------------------------
    def _config_volumes(self) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
        """(volume, kind, source) of every volume projected from a ConfigMap or Secret."""
        return [
            (volume, *found)
            for volume in self.spec.get("volumes", [])
            if (found := configvolumes.projected_source(volume))
        ]

    async def _project_config_volumes(self) -> None:
        """Project every configMap and secret volume from the replicated objects;
        SourceMissing when one cannot be (retried whole: nothing of the others matters)."""
        changed = False
        for volume, kind, source in self._config_volumes():
            wanted = configvolumes.files(kind, source, self.namespace, self.kubelet.read_object)
            if self._projected.get(volume["name"]) == wanted:
                continue  # unchanged: no thread hop, no file read each interval
            await asyncio.to_thread(configvolumes.project, self._volume_dir(volume), wanted)
            self._projected[volume["name"]] = wanted
            changed = True
        if changed:  # running instances of a runtime that copies the files take the new ones
            for record in self.containers:
                if record.instance is not None:
                    record.instance.files_changed()

    async def _until_configured(
        self,
        attempt: Callable[[], Awaitable[T]],
        missing: type[Exception],
        tell: Callable[[str], None],
    ) -> T | None:
        """``attempt()``'s result once no ConfigMap or key it needs is ``missing``, looked at
        again every ``kubelet.config_map_interval``; ``tell(reason)`` once per new reason
        meanwhile. None if the pod stops first."""
        told = ""
        while not self.halted.is_set():
            try:
                return await attempt()
            except missing as exc:
                if str(exc) != told:
                    told = str(exc)
                    tell(told)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.kubelet.settings.config_map_interval):
                    await self.halted.wait()
        return None

    async def _wait_config_volumes(self) -> bool:
        """Before the containers start: project the configMap volumes, holding the pod
        Pending (its containers ContainerCreating, a FailedMount event per new reason) while
        a ConfigMap or key is missing, as Kubernetes does. False if the pod stops first."""

        async def project() -> bool:
            await self._project_config_volumes()
            return True

        def tell(reason: str) -> None:
            message = f"MountVolume.SetUp failed: {reason}"
            for record in self.containers:
                record.waiting("ContainerCreating", message)
            self._changed()
            self._event("FailedMount", message, warning=True)

        return bool(await self._until_configured(project, SourceMissing, tell))

    async def _refresh_config_volumes(self) -> None:
        """While the pod runs: a changed ConfigMap reaches its files. One that has gone away
        (or lost a key) leaves the last files in place, as in Kubernetes."""
        interval = self.kubelet.settings.config_map_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self._project_config_volumes()
            except SourceMissing:
                continue
            except OSError as exc:
                log.warning("pod %s: could not update its configMap volumes: %s", self.key, exc)

    async def _wait_environment(self, record: ContainerRecord) -> list[tuple[str, str]] | None:
        """The container's environment (``runtime/podenv.py``), once its ConfigMaps have what
        it needs: meanwhile it waits ``CreateContainerConfigError`` with the reason, and a
        Failed event says it once per new reason, as Kubernetes does. None if the pod stops
        first."""

        async def resolve() -> list[tuple[str, str]]:
            env, skipped = podenv.container_env(
                self.pod, record.spec, self.kubelet.node_name, self.kubelet.read_object
            )
            if skipped:
                self._event(
                    "InvalidEnvironmentVariableNames",
                    f"Container {record.name}: keys {', '.join(skipped)} from envFrom "
                    "were skipped: not valid environment variable names",
                    warning=True,
                )
            return env

        def tell(reason: str) -> None:
            record.waiting("CreateContainerConfigError", reason)
            self._changed()
            self._event("Failed", f"Error: {reason}", warning=True)

        return await self._until_configured(resolve, SourceMissing, tell)

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
            if is_handler(record.spec):  # nothing crashed, no instance ran: serve at once
                record.restart_count += 1
                kubelet.observer.container_restarted()
            elif not await self._back_off(record, restart.current):
                return
        path = await self._pull(record, image)
        if is_handler(record.spec):
            if path is not None and not self._over(record):
                await self._serve(record, image, path)
            return
        while path is not None and not self._over(record):
            env = await self._wait_environment(record)
            if env is None:  # the pod stopped while its ConfigMap was missing
                record.done = True
                self._changed()
                return
            ran_since = time.monotonic()
            termination = await self._run_once(record, image, path, env)
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
        self.kubelet.observer.container_restarted()
        return True

    async def _pull(self, record: ContainerRecord, image: str) -> Path | None:
        """The module's local path, retried with back-off; None if the pod stops first."""
        settings = self.kubelet.settings
        pull_backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        failures = 0
        while not self._over(record):
            try:
                async with asyncio.timeout(settings.image_pull_timeout):
                    path = await self._ensure_module(record, image)
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

    async def _ensure_module(self, record: ContainerRecord, image: str) -> Path:
        """``images.ensure(image)``, saying meanwhile how far the pull is: at most every
        ``kubelet.pull_progress_interval`` the container waits ContainerCreating with the
        pull's summary as its message (the status every node replicates, so ``describe pod``
        shows it anywhere), and a Pulling event once a pull is under way."""
        images = self.kubelet.images
        pull = asyncio.ensure_future(images.ensure(image))
        told = ""
        try:
            while True:
                done, _ = await asyncio.wait(
                    {pull}, timeout=self.kubelet.settings.pull_progress_interval
                )
                if done:
                    break
                progress = images.progress(image)
                line = progress.summary() if progress is not None else ""
                if line and line != told:
                    if not told:
                        self._event("Pulling", f"Pulling module {image}")
                    told = line
                    record.waiting("ContainerCreating", line)
                    self._changed()
        finally:
            pull.cancel()  # only our wait when we are cancelled: a fetch outlives its callers
        if told:
            record.waiting("ContainerCreating")
            self._changed()
        return pull.result()

    async def _prepare(self, record: ContainerRecord, image: str, path: Path) -> None:
        """The runtime's prepare; the first time, a Normal event names the imports that it
        linked as traps (what ``--trap-unknown-imports`` would say nothing about)."""
        info = await self.kubelet.runtime.prepare(image, path)
        if info.trapped_imports and not record.imports_told:
            record.imports_told = True
            names = ", ".join(info.trapped_imports)
            self._event(
                "ImportsTrapped",
                f"Container {record.name}: imports outside WASI preview 1 are traps "
                f"(the container fails if it calls one): {names}",
            )

    async def _run_once(
        self, record: ContainerRecord, image: str, path: Path, env: list[tuple[str, str]]
    ) -> rt.Termination:
        kubelet = self.kubelet
        try:
            await self._prepare(record, image, path)
            launch = self._launch(record, image, path, env)
        except rt.InvalidModuleError as exc:
            return failed(rt.INVALID_MODULE, str(exc))
        instance = kubelet.runtime.start(launch)
        ran_since = time.monotonic()
        self._event("Started", f"Started container {record.name}")
        record.instance = instance
        record.started = True
        record.state = {"running": {"startedAt": instance.started_at}}
        self._running()
        self._changed()
        if self.halted.is_set():
            instance.stop(
                rt.DEADLINE_EXCEEDED if self.expired else rt.KILLED, "the pod is stopping"
            )
        termination = await instance.done
        kubelet.observer.container_ended(time.monotonic() - ran_since, termination.succeeded)
        return termination

    def _running(self) -> None:
        """A container of this pod runs: the pod is Running (if it was Pending, that is its
        start, which the observer times from when this kubelet first saw it)."""
        self.kubelet.observer.container_started()
        if self.phase == PENDING:
            self.phase = RUNNING
            self.kubelet.observer.pod_started(time.monotonic() - self.seen)

    async def _serve(self, record: ContainerRecord, image: str, path: Path) -> None:
        """An HTTP handler container: no long-running instance; running once its module is
        ready here, serving requests (one instance each) until the pod stops."""
        kubelet = self.kubelet
        try:
            await self._prepare(record, image, path)
        except rt.InvalidModuleError as exc:
            self._ended_for_good(record, failed(rt.INVALID_MODULE, str(exc)))
            return
        env = await self._wait_environment(record)
        if env is None:
            return
        kubelet.runtime.expect_requests()
        services = kubelet.services
        annotations = self.pod["metadata"].get("annotations")
        pool = HandlerPool(
            kubelet.runtime,
            self._launch(record, image, path, env),
            pod_name=self.name,
            pod_namespace=self.namespace,
            node_name=kubelet.node_name,
            settings=services,
            concurrency=container_concurrency(annotations, services.container_concurrency),
            stop_timeout=kubelet.runtime_settings.stop_timeout,
            on_failure=lambda reason, message: self._event(
                "RequestFailed", f"Request to container {record.name} failed: {message}", True
            ),
        )
        started_at = utc_now()
        record.handler, record.started = pool, True
        record.state = {"running": {"startedAt": started_at}}
        probe = HttpGetProbe.of(record.spec, services)
        record.probe_ok = probe is None
        served_since = time.monotonic()
        self._running()
        self._event("Started", f"Started container {record.name}")
        self._changed()
        prober = self._prober(record, probe) if probe is not None else None
        try:
            await self.halted.wait()
        finally:
            if prober is not None:
                await prober.stop()
            record.handler = None
            await pool.close()
            kubelet.observer.container_ended(time.monotonic() - served_since, False)
        reason = rt.DEADLINE_EXCEEDED if self.expired else rt.KILLED
        message = "active deadline reached" if self.expired else "the pod is stopping"
        self._ended_for_good(
            record, rt.Termination(rt.EXIT_KILLED, reason, message, started_at, utc_now())
        )

    def _ended_for_good(self, record: ContainerRecord, termination: rt.Termination) -> None:
        record.ended(termination)
        record.done = True
        if not termination.succeeded and termination.reason != rt.KILLED:
            self._event(
                termination.reason,
                f"Container {record.name} ended: {termination.message or termination.reason}",
                warning=True,
            )
        self._changed()

    def _prober(self, record: ContainerRecord, probe: HttpGetProbe) -> ReadinessProber:
        def on_ready(ready: bool) -> None:
            record.probe_ok = ready
            self._changed()

        return ReadinessProber(
            probe,
            resolve_port=self.port_number,
            resolve=self.handler_on,
            on_ready=on_ready,
            on_failure=lambda message: self._event("Unhealthy", message, warning=True),
            name=f"{self.key}/{record.name}",
        )

    def port_number(self, port: int | str) -> int | None:
        """The containerPort a probe's ``port`` (a number or a port's name) means here."""
        for record in self.containers:
            for number, name in container_ports(record.spec).items():
                if port in (number, name) or str(port) == str(number):
                    return number
        return None

    def handler_on(self, port: int) -> HandlerPool | None:
        """The pool of the container serving containerPort ``port`` now, if any."""
        for record in self.containers:
            if record.handler is not None and port in container_ports(record.spec):
                return record.handler
        return None

    def _launch(
        self, record: ContainerRecord, image: str, path: Path, env: list[tuple[str, str]]
    ) -> rt.Launch:
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
            env=env,
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
            guest = mount["mountPath"]
            if configvolumes.projected_source(volume):  # by the kubelet; always read-only
                host = self._volume_dir(volume)
                mounts.append(rt.Mount(host, guest, read_only=True, projected=True))
                continue
            empty_dir = "emptyDir" in volume
            host = (
                self._volume_dir(volume)
                if empty_dir
                else self.host_paths[volume["name"]]  # admitted and resolved
            )
            mounts.append(rt.Mount(host, guest, bool(mount.get("readOnly", True)), empty_dir))
        return mounts

    def _volume_dir(self, volume: dict[str, Any]) -> Path:
        """Where an emptyDir or a projected volume lives on this node: a secret volume in
        the kubelet's in-memory directory, never in the data dir."""
        if "secret" in volume:
            return self.secret_dir / volume["name"]
        return self.dir / "volumes" / volume["name"]

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
        ready = self.phase == RUNNING and all(
            "running" in r.state and r.probe_ok for r in self.containers
        )
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
