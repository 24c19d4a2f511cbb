"""The native PodRuntime: wasmtime instances on worker threads, one thread per instance.

wasm runs with the GIL released, so instances use every core while the agent's event loop stays
responsive (worst stall measured: 1 ms). A pod may run for months, so instances get their own
threads rather than a pool's. Nothing here blocks the loop: compiling, reading logs and
stopping threads happen in threads; results come back with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2pkube.runtime import interface as rt
from p2pkube.runtime import logs
from p2pkube.runtime.base import BaseInstance, BaseRuntime, SetupError, failed
from p2pkube.runtime.budget import OutputBudget
from p2pkube.runtime.pipes import InstanceOutput, PipedInstance, close_fds
from p2pkube.runtime.settings import RuntimeSettings
from p2pkube.runtime.workers import WorkerThreads

if TYPE_CHECKING:  # wasmtime is loaded when the first pod needs it (see NativeRuntime.loader)
    from p2pkube.runtime import sandbox
    from p2pkube.runtime.engine import LoadedModule, ModuleLoader
    from p2pkube.runtime.procs import RequestProcesses

log = logging.getLogger(__name__)


class NativeInstance(PipedInstance):
    """One container instance on its worker thread."""

    def __init__(self, launch: rt.Launch, control: sandbox.Control) -> None:
        super().__init__(launch)
        self.control = control
        self.thread: threading.Thread | None = None

    def stop(self, reason: str = rt.KILLED, message: str = "") -> None:
        self.control.stop(reason, message or "stopped by the agent")
        self.stop_output()

    def usage(self) -> tuple[float, int]:
        """What its worker thread measured at the last epoch tick or sleep (sandbox.Control)."""
        return self.control.cpu_seconds, self.control.memory_bytes


def _prepare_files(launch: rt.Launch, *, pod: bool) -> None:
    """On the worker thread: a pod instance's log directory and its empty log file (which
    the agent fills from the instance's pipes: ``instance_log_writer``, where a request
    instance's shared log is prepared instead), emptyDir volumes and hostPath checks.

    A hostPath arrives resolved by admission (``runtime/hostpaths.py``); it must still
    resolve to itself now, just before wasmtime opens it, or a symlink was swapped in since
    (the window left is this check to the preopen, not the fetch and compile before it).
    """
    if pod:
        logs.prepare_log_dir(launch.log_path)
        launch.log_path.touch()  # a pod that writes nothing has an empty log, not none
    for mount in launch.mounts:
        if mount.create or mount.projected:
            mount.host_path.mkdir(parents=True, exist_ok=True)
            continue
        real = os.path.realpath(mount.host_path)
        if real != str(mount.host_path):
            raise SetupError(
                f"hostPath {mount.host_path} changed since admission: it resolves to {real} now"
            )
        if not mount.host_path.is_dir():
            raise SetupError(f"hostPath {mount.host_path} is not a directory on this node")


def run_instance(
    launch: rt.Launch,
    control: sandbox.Control,
    load: Callable[[str, Path], LoadedModule],
    outputs: tuple[int, int],
    *,
    pod: bool,
) -> rt.Termination:
    """On the instance's thread: prepare its files, load its module, run it to its end;
    every failure becomes its Termination (never raises). Shared by the agent's instance
    threads and the request worker processes (``runtime/procs.py``).

    ``outputs``: the write ends of the instance's stdout and stderr pipes
    (``runtime/pipes.py``), closed here once the instance has ended, so the agent reads
    their end. ``pod``: a pod's own instance, not a request's (see :func:`sandbox.run`)."""
    from p2pkube.runtime import sandbox

    try:
        _prepare_files(launch, pod=pod)
        loaded = load(launch.image, launch.module_path)
        return sandbox.run(loaded, launch, control, outputs, pod=pod)
    except rt.InvalidModuleError as exc:
        return failed(rt.INVALID_MODULE, str(exc))
    except SetupError as exc:
        return failed(rt.CREATE_CONTAINER_ERROR, str(exc))
    except Exception as exc:  # a disk error creating the log, a bug: fail the pod only
        log.exception("instance %s/%s could not start", launch.pod, launch.container)
        return failed(rt.TRAPPED, f"could not start: {exc}")
    finally:
        close_fds(outputs)


class NativeRuntime(BaseRuntime[BaseInstance]):
    """Runs pods natively with wasmtime; see :class:`p2pkube.runtime.interface.PodRuntime`."""

    def __init__(self, data_dir: Path, settings: RuntimeSettings) -> None:
        super().__init__(settings)
        self._cache_dir = data_dir / "runtime" / "compiled"
        self._loader: ModuleLoader | None = None
        self._loader_lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._threads = WorkerThreads(
            max_idle=settings.idle_threads, idle_timeout=settings.idle_thread_timeout
        )
        self._procs: RequestProcesses | None = None
        if settings.request_processes > 0:
            from p2pkube.runtime import procs

            self._procs = procs.RequestProcesses(self, self._cache_dir, settings.request_processes)

    @property
    def loader(self) -> ModuleLoader:
        """The engines, made on first use: wasmtime and two engines cost an idle node ~15 MB
        of memory, and a node may never run a pod. Thread-safe (workers may ask first)."""
        with self._loader_lock:
            if self._loader is None:
                from p2pkube.runtime.engine import ModuleLoader

                self._loader = ModuleLoader(self._cache_dir, self.settings)
            return self._loader

    async def prepare(self, image: str, module_path: Path) -> rt.ModuleInfo:
        loaded = await asyncio.to_thread(self.loader.load, image, module_path)
        return rt.ModuleInfo(trapped_imports=loaded.trapped_imports)

    def start(self, launch: rt.Launch) -> rt.Instance:
        if launch.stdout is not None and self._procs is not None:
            instance = self._procs.start(launch)
            if instance is not None:
                self._started(instance)
                return instance
            self._procs.start_soon()  # on threads until the workers are up (first request)
        return self._start_thread(launch)

    def expect_requests(self) -> None:
        """A handler pod runs here: start the request workers now (in a task), so that its
        first requests need not share the CPU with their start."""
        if self._procs is not None:
            self._procs.start_soon()

    async def start_request_processes(self) -> None:
        """Start the request worker processes now rather than at the first handler request
        (which runs on a thread while they start); returns once they are up or failed."""
        if self._procs is not None:
            await self._procs.ensure_started()

    def _start_thread(self, launch: rt.Launch) -> NativeInstance:
        from p2pkube.runtime import sandbox

        settings = self.settings
        control = sandbox.Control(launch.limits, cpu_period=settings.cpu_period)
        instance = NativeInstance(launch, control)
        instance.output = output = self.instance_output(launch, instance.stop)
        outputs = output.take_write_fds()
        self._started(instance)
        try:
            self._threads.submit(
                lambda thread: self._run(instance, thread, outputs),
                f"pod {launch.pod}/{launch.container}",
            )
        except BaseException:
            close_fds(outputs)
            output.close()
            raise
        return instance

    def _run(
        self, instance: NativeInstance, thread: threading.Thread, outputs: tuple[int, int]
    ) -> None:
        """The worker thread: load (cached: ~1 ms), run, report back to the loop."""
        instance.thread = thread
        launch = instance.launch
        termination = run_instance(
            launch, instance.control, self.loader.load, outputs, pod=launch.stdout is None
        )
        with contextlib.suppress(RuntimeError):  # loop closed: the agent is gone anyway
            self._loop.call_soon_threadsafe(self.ended, instance, termination)

    def instance_output(
        self, launch: rt.Launch, stop: Callable[[str, str], None]
    ) -> InstanceOutput:
        """The pipes of an instance's stdout and stderr, read on the loop: what is logged
        goes to the container's log against the instance's output budget."""
        settings = self.settings
        return InstanceOutput(
            launch,
            log_writer=self._instance_log_writer,
            budget=OutputBudget(settings.log_rate_bytes, settings.log_burst_bytes),
            stop=stop,
        )

    def _instance_log_writer(self, launch: rt.Launch) -> logs.LogWriter:
        """On the loop, at an instance's first logged output: the writer of its container's
        log. A pod instance's thread prepared it before the instance ran. Request instances
        share the container's log: the first prepares its directory (listing it on every
        request would cost each one a directory scan)."""
        if not launch.log_path.exists():
            logs.prepare_log_dir(launch.log_path)
        return self._log_writer(launch)

    def ended(self, instance: PipedInstance, termination: rt.Termination) -> None:
        """On the loop: ``instance``'s runner reported its end; it ends once its output pipes
        have been read to their end too (or were closed by a stop)."""
        output = instance.output
        if output is None:
            self._ended(instance, termination)
        else:
            output.when_drained(lambda: self._ended(instance, termination))

    def request_pids(self) -> list[int]:
        """The request worker processes' ids (``runtime/procs.py``): what the node's usage
        adds to the agent's own (a copy: safe to read from another thread)."""
        return self._procs.pids() if self._procs is not None else []

    async def forget(self, image: str) -> None:
        if self._loader is not None:
            await asyncio.to_thread(self._loader.forget, image)

    def stats(self) -> dict[str, Any]:
        return {
            **(self._loader.stats() if self._loader is not None else {"engines": []}),
            "running": len(self._instances),
            "started": self.started,
            "finished": self.finished,
            "threads": threading.active_count(),
            "idleThreads": self._threads.idle(),
            "threadsStarted": self._threads.started,
            "requestProcesses": self._procs.stats() if self._procs is not None else [],
        }

    async def close(self) -> None:
        """Stop every instance (each at its next epoch tick) and wait for them, bounded."""
        await self._stop_instances()
        if self._procs is not None:
            await self._procs.close()
        self._threads.close()
        if self._loader is not None:
            await asyncio.to_thread(self._loader.close)


if TYPE_CHECKING:  # mypy checks that the native runtime fills the seam the kubelet uses
    _SEAM: type[rt.PodRuntime] = NativeRuntime
