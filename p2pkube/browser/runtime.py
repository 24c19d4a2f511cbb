"""The browser's PodRuntime: each container instance in a dedicated Web Worker.

Same phases, exit codes, reasons and logs as natively (``runtime/native.py``), so the
kubelet above is the shared one. How the limits hold in a tab:

* **memory**: the module's memory maximum is rewritten to the pod's limit before it is
  compiled (``runtime/wasmbin.py``); ``memory.grow`` past it fails, and a trap with the
  memory at its limit is ``OOMKilled`` (the same 1/16 rule as natively). A compiled module
  is kept per (image, limit).
* **time**: ``activeDeadlineSeconds`` and a stop (pod deleted, output flood, node leaving)
  terminate the Worker at once, even mid-loop: an endless loop cannot freeze the node, which
  runs on the page's thread.
* **output**: the same token bucket as natively (``runtime/budget.py``), then
  ``OutputFlood``; lines go to the same rotated CRI log files, on the tab's file system. An
  instance of a handler request (``Launch.stdout`` set) hands its stdout to that callback on
  the event loop instead, as written: one chunk per WASI ``fd_write`` (C stdio flushes its
  buffer, or ``fflush``), coalesced with the writes that came before the page drained the
  output ring (crossOriginIsolated), else batched for at most 2 ms.
* **start**: instances take a warm, idle Worker from the bridge's pool
  (``browser.worker_pool``), refilled in the background; a Worker whose instance exited or
  trapped is reused, one that was stopped mid-run is terminated.
* **CPU**: not throttled; each instance has its own Worker, so it uses at most one core
  (``resources.limits.cpu`` counts for placement only). A Worker has no CPU clock: what
  ``kubectl top`` shows of an instance is the time it ran awake (not asleep in
  ``poll_oneoff``, not waiting for room in the output ring), as its Worker measured it, and
  its linear memory as the Worker last saw it (``Instance.usage`` in bridge/instances.js).
* **host access**: WASI preview 1 in the Worker (``@bjorn3/browser_wasi_shim``); an
  ``emptyDir`` is an in-memory directory of the instance (it does not outlive a restart,
  unlike natively). A tab has no host paths: it grants none (its Node status publishes an
  empty ``allowedHostPaths``), so placement never sends it a ``hostPath`` pod and the shared
  kubelet refuses one bound to it (``HostPathNotAllowed``); were one to reach this runtime
  anyway, it fails with ``CreateContainerError``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import js  # type: ignore[import-not-found]  # Pyodide's JS globals, only in a tab
import p2pjs  # type: ignore[import-not-found]  # bridge.js, registered by the page
from pyodide.ffi import JsException, to_js  # type: ignore[import-not-found]  # Pyodide only

from p2pkube.fsutil import is_partial_write
from p2pkube.model.quantity import format_bytes
from p2pkube.model.timestamps import utc_now
from p2pkube.runtime import interface as rt
from p2pkube.runtime import logs, wasmbin
from p2pkube.runtime.base import (
    BaseInstance,
    BaseRuntime,
    SetupError,
    failed,
    trapped_imports,
)
from p2pkube.runtime.budget import OutputBudget
from p2pkube.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)


def termination_of(
    result: dict[str, Any],
    limits: rt.Limits,
    stop: tuple[str, str] | None,
    started_at: str,
) -> rt.Termination:
    """The Termination of a Worker's result (see bridge.js ``startInstance``)."""
    kind = result.get("kind")
    finished = utc_now()
    if kind == "exit":
        code = int(result.get("code", 1))
        reason = rt.COMPLETED if code == 0 else rt.ERROR
        return rt.Termination(
            code, reason, "" if code == 0 else f"exit code {code}", started_at, finished
        )
    if stop is not None:  # stopped by us: our reason, whatever the Worker saw last
        return rt.Termination(rt.EXIT_KILLED, stop[0], stop[1], started_at, finished)
    if kind == "killed":
        if result.get("reason") == "deadline":
            return rt.Termination(
                rt.EXIT_KILLED,
                rt.DEADLINE_EXCEEDED,
                "active deadline reached",
                started_at,
                finished,
            )
        return rt.Termination(
            rt.EXIT_KILLED, rt.KILLED, str(result.get("reason")), started_at, finished
        )
    message = str(result.get("message", ""))
    if kind == "stack-overflow":
        return rt.Termination(
            rt.EXIT_STACK_OVERFLOW,
            rt.STACK_OVERFLOW,
            "wasm call stack exhausted",
            started_at,
            finished,
        )
    if kind == "trap":
        cap = limits.memory_bytes
        used = int(result.get("memoryBytes") or 0)
        if used >= cap - max(2 * wasmbin.PAGE_BYTES, cap // 16):
            return rt.Termination(
                rt.EXIT_KILLED,
                rt.OOM_KILLED,
                f"memory limit {format_bytes(cap)} reached ({message})",
                started_at,
                finished,
            )
        return rt.Termination(
            rt.EXIT_TRAPPED, rt.TRAPPED, f"wasm trap: {message}", started_at, finished
        )
    if message.startswith("cannot instantiate"):
        return rt.Termination(rt.EXIT_TRAPPED, rt.INVALID_MODULE, message, started_at, finished)
    return rt.Termination(
        rt.EXIT_TRAPPED, rt.TRAPPED, message or f"worker ended: {kind}", started_at, finished
    )


class WorkerInstance(BaseInstance):
    """One container instance in its Worker."""

    def __init__(self, launch: rt.Launch, budget: OutputBudget) -> None:
        super().__init__(launch)
        self.budget = budget
        self.stop_request: tuple[str, str] | None = None
        self.handle: Any = None
        """The bridge's Instance, once the Worker started."""
        self.told_stale = False
        """Whether the log said once that new files cannot reach it while it runs."""

    def stop(self, reason: str = rt.KILLED, message: str = "") -> None:
        if self.stop_request is None:
            self.stop_request = (reason, message or "stopped by the agent")
        if self.handle is not None:
            self.handle.kill(reason)

    def usage(self) -> tuple[float, int]:
        """What its Worker measured: the time the instance ran awake and its linear memory
        (bridge/instances.js ``Instance.usage``)."""
        if self.handle is None:
            return 0.0, 0
        measured = self.handle.usage()
        return float(measured.cpuMs) / 1000, int(measured.memoryBytes)

    def files_changed(self) -> None:
        """Hand the running module the new files of its configMap and secret volumes: the
        bridge puts them in the instance's shared buffer, and the Worker takes them at the
        module's next file lookup (web/files.js)."""
        if self.handle is None or self.stop_request is not None:
            return
        files = to_js(_projected_files(self.launch), dict_converter=js.Object.fromEntries)
        if not self.handle.updateFiles(files) and not self.told_stale:
            self.told_stale = True
            log.warning(
                "instance %s/%s keeps the files it started with: new ones cannot reach it "
                "while it runs (no cross-origin isolation, or they outgrew its buffer); "
                "they reach its next start",
                self.launch.pod,
                self.launch.container,
            )


def _tree(top: Path) -> list[tuple[str, bytes]]:
    """Every file under ``top`` (a volume the kubelet projected into this tab's in-memory
    file system), by path relative to it: what the Worker gets a copy of."""
    return [
        (path.relative_to(top).as_posix(), path.read_bytes())
        for path in sorted(top.rglob("*"))
        if path.is_file() and not is_partial_write(path)
    ]


def _projected_files(launch: rt.Launch) -> dict[str, list[list[Any]]]:
    """Guest path -> [[relative path, bytes]] of every projected mount (the bridge's
    ``files``), at the instance's start and at each change."""
    return {
        m.guest_path: [[path, to_js(data)] for path, data in _tree(m.host_path)]
        for m in launch.mounts
        if m.projected
    }


class WorkerRuntime(BaseRuntime[WorkerInstance]):
    """Runs pods in Web Workers; see :class:`p2pkube.runtime.interface.PodRuntime`."""

    def __init__(
        self, settings: RuntimeSettings, *, worker_pool: tuple[int, float] | None = None
    ) -> None:
        super().__init__(settings)
        if worker_pool is not None:  # browser.worker_pool and its refill delay (s)
            size, refill_delay = worker_pool
            p2pjs.configurePool(size, refill_delay * 1000)
        self._modules: dict[str, bytes] = {}
        """Image -> the module's bytes (prepared, not yet capped)."""
        self._infos: dict[str, rt.ModuleInfo] = {}
        """Image -> what its prepare found (each image is parsed once)."""
        self._compiled: dict[str, set[str]] = {}
        """Image -> keys (image@pages) of its compiled, capped versions in the bridge."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.compile_ms: list[float] = []

    async def prepare(self, image: str, module_path: Path) -> rt.ModuleInfo:
        """Check the module's memories and imports; its function imports from outside WASI
        are traps in the Worker (worker.js), as natively."""
        info = self._infos.get(image)
        if info is not None:
            return info
        data = await asyncio.to_thread(module_path.read_bytes)  # inline: an in-memory file
        try:
            wasmbin.memories(data)
            imports = wasmbin.imports(data)
        except wasmbin.WasmFormatError as exc:
            raise rt.InvalidModuleError(str(exc)) from None
        trapped = trapped_imports((i.module, i.name, i.kind == "func") for i in imports)
        self._modules[image] = data
        info = self._infos[image] = rt.ModuleInfo(trapped_imports=trapped)
        return info

    def start(self, launch: rt.Launch) -> WorkerInstance:
        settings = self.settings
        instance = WorkerInstance(
            launch, OutputBudget(settings.log_rate_bytes, settings.log_burst_bytes)
        )
        self._started(instance)
        task = asyncio.get_running_loop().create_task(self._run(instance))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return instance

    async def _compiled_key(self, image: str, memory_bytes: int) -> str:
        """The bridge's key of ``image`` capped at ``memory_bytes``, compiled if needed."""
        pages = memory_bytes // wasmbin.PAGE_BYTES
        key = f"{image}@{pages}"
        if not p2pjs.hasModule(key):
            capped = wasmbin.cap_memory(self._modules[image], memory_bytes)
            started = time.monotonic()
            await p2pjs.compileModule(key, to_js(capped))
            self.compile_ms.append(round((time.monotonic() - started) * 1000, 1))
            self._compiled.setdefault(image, set()).add(key)
        return key

    async def _run(self, instance: WorkerInstance) -> None:
        launch = instance.launch
        writer: logs.LogWriter | None = None
        try:
            for mount in launch.mounts:
                if not mount.create and not mount.projected:
                    raise SetupError(
                        f"hostPath {mount.host_path} is not available on a browser node"
                    )
            logs.prepare_log_dir(launch.log_path)
            writer = self._log_writer(launch)
            key = await self._compiled_key(launch.image, launch.limits.memory_bytes)
            termination = await self._execute(instance, key, writer)
        except wasmbin.MemoryTooSmall as exc:
            termination = failed(
                rt.OOM_KILLED, f"cannot start within its memory: {exc}", rt.EXIT_KILLED
            )
        except SetupError as exc:
            termination = failed(rt.CREATE_CONTAINER_ERROR, str(exc))
        except JsException as exc:  # compileModule refused it: the message names the cause
            termination = failed(rt.INVALID_MODULE, _js_message(exc))
        except asyncio.CancelledError:
            termination = failed(rt.KILLED, "the agent is stopping", rt.EXIT_KILLED)
            raise
        except Exception as exc:  # a bug: fail this pod only
            log.exception("instance %s/%s could not start", launch.pod, launch.container)
            termination = failed(rt.TRAPPED, f"could not start: {exc}")
        finally:
            if writer is not None:
                writer.close()
            self._ended(instance, termination)

    async def _execute(
        self, instance: WorkerInstance, key: str, writer: logs.LogWriter
    ) -> rt.Termination:
        launch = instance.launch
        if instance.stop_request is not None:  # stopped before the Worker existed
            reason, message = instance.stop_request
            return failed(reason, message, rt.EXIT_KILLED)
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[dict[str, Any]] = loop.create_future()
        sink = launch.stdout

        def on_output(stream: Any, data: Any) -> None:
            chunk = bytes(data.to_bytes())
            if sink is not None and str(stream) == "stdout":
                _to_sink(instance, sink, chunk)
                return
            if instance.stop_request is None and not instance.budget.spend(len(chunk)):
                instance.stop(rt.OUTPUT_FLOOD, instance.budget.message())
                return
            writer.write(str(stream), chunk)

        def on_exit(result: Any) -> None:
            if not ended.done():
                ended.set_result(result.to_py() if hasattr(result, "to_py") else dict(result))

        deadline_ms = None
        if launch.limits.deadline is not None:
            deadline_ms = max(0.0, (launch.limits.deadline - time.monotonic()) * 1000)
        options = {
            "argv": list(launch.argv),
            "env": [list(pair) for pair in launch.env],
            "stdin": to_js(launch.stdin) if launch.stdin is not None else None,
            "deadlineMs": deadline_ms,
            "dirs": [m.guest_path for m in launch.mounts if m.create],
            "files": _projected_files(launch),
        }
        instance.handle = p2pjs.startInstance(
            key,
            to_js(options, dict_converter=js.Object.fromEntries),
            {"onOutput": on_output, "onExit": on_exit},
        )
        if instance.stop_request is not None:
            instance.handle.kill(instance.stop_request[0])
        result = await ended
        termination = termination_of(
            result, launch.limits, instance.stop_request, instance.started_at
        )
        return replace(termination, cpu_seconds=instance.usage()[0])

    async def forget(self, image: str) -> None:
        self._modules.pop(image, None)
        for key in self._compiled.pop(image, set()):
            p2pjs.forgetModule(key)

    def stats(self) -> dict[str, Any]:
        info = p2pjs.runtimeInfo().to_py()
        return {
            "engine": "browser",
            "running": len(self._instances),
            "started": self.started,
            "finished": self.finished,
            "modules": len(self._modules),
            "compiled": sum(len(keys) for keys in self._compiled.values()),
            "sleepMode": info.get("sleepMode"),
            "crossOriginIsolated": info.get("crossOriginIsolated"),
            "workerPool": info.get("pool"),
        }

    async def close(self) -> None:
        """Stop every instance (its Worker is terminated at once) and wait for them."""
        await self._stop_instances()
        for task in list(self._tasks):
            task.cancel()
        for keys in self._compiled.values():
            for key in keys:
                p2pjs.forgetModule(key)
        self._compiled.clear()


def _to_sink(instance: WorkerInstance, sink: Callable[[bytes], None], chunk: bytes) -> None:
    """A handler request's stdout, in order, to its ``Launch.stdout`` (on the event loop);
    not logged and not charged to the log budget (the handler caps a response's size). A sink
    that raises stops the instance: its response can no longer be delivered."""
    if instance.stop_request is not None:
        return
    try:
        sink(chunk)
    except Exception as exc:
        log.exception("stdout sink of %s/%s failed", instance.launch.pod, instance.launch.container)
        instance.stop(rt.KILLED, f"response sink failed: {exc}")


def _js_message(exc: JsException) -> str:
    text = str(exc)
    return text.removeprefix("Error: ")


if TYPE_CHECKING:  # mypy checks that the browser runtime fills the seam the kubelet uses
    _SEAM: type[rt.PodRuntime] = WorkerRuntime
