"""What both pod runtimes share: the native one (``runtime/native.py``, wasmtime on worker
threads) and the browser's (``browser/runtime.py``, a Web Worker per instance).

Both keep their running instances in a set, count starts and ends, write each instance's
output through a :class:`~p2pkube.runtime.logs.LogWriter` (whose writes wake log followers),
keep pod files alike on disk and fail an instance that cannot start with the same
Termination. Only how an instance runs differs, so that is all each runtime writes itself.

Imported by the browser node in Pyodide: nothing here may load wasmtime, psutil or any other
platform library (the engine is behind ``native.NativeRuntime.loader``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Generic, TypeVar

from p2pkube.model.timestamps import utc_now
from p2pkube.runtime import interface as rt
from p2pkube.runtime import logs
from p2pkube.runtime.settings import RuntimeSettings


class SetupError(Exception):
    """What the container needs cannot be set up (a hostPath); the message says what.

    The instance ends ``CreateContainerError`` without running."""


def failed(reason: str, message: str, exit_code: int = rt.EXIT_TRAPPED) -> rt.Termination:
    """The Termination of an instance that ended before it ran (started and finished now)."""
    now = utc_now()
    return rt.Termination(exit_code, reason, message, now, now)


WASI_MODULE = "wasi_snapshot_preview1"


def trapped_imports(imports: Iterable[tuple[str, str, bool]]) -> tuple[str, ...]:
    """``module.name`` of each function import from outside WASI preview 1, sorted: what a
    runtime links as a trap (wasmtime's ``--trap-unknown-imports``). ``imports``: (module,
    name, is a function). InvalidModuleError when a memory, table, global or tag comes from
    outside: no stand-in can take its place."""
    foreign = [(module, name, func) for module, name, func in imports if module != WASI_MODULE]
    unlinkable = sorted(f"{module}.{name}" for module, name, func in foreign if not func)
    if unlinkable:
        raise rt.InvalidModuleError(
            f"imports what this node does not offer (only {WASI_MODULE}, and functions "
            "from elsewhere as traps): "
            + ", ".join(unlinkable[:5])
            + (" ..." if len(unlinkable) > 5 else "")
        )
    return tuple(sorted({f"{module}.{name}" for module, name, _ in foreign}))


class BaseInstance(abc.ABC):
    """One container instance: what it runs, when it started, and a future of its end.

    Made on the event loop (``done`` belongs to the running loop)."""

    def __init__(self, launch: rt.Launch) -> None:
        self.launch = launch
        self.started_at = utc_now()
        self.done: asyncio.Future[rt.Termination] = asyncio.get_running_loop().create_future()

    @abc.abstractmethod
    def stop(self, reason: str = rt.KILLED, message: str = "") -> None:
        """Ask the instance to end soon; ``done`` then resolves with ``reason``."""

    def files_changed(self) -> None:
        """See :meth:`p2pkube.runtime.interface.Instance.files_changed` (nothing to do for a
        runtime that mounts a projected directory itself)."""
        return

    def stdout_read(self, size: int) -> None:
        """See :meth:`p2pkube.runtime.interface.Instance.stdout_read` (nothing to do unless
        a runtime holds its instance's writes back)."""
        return

    def usage(self) -> tuple[float, int]:
        """See :meth:`p2pkube.runtime.interface.Instance.usage`. An instance whose runtime
        cannot see it while it runs (a request instance in a worker process) reports
        nothing until its end, when its Termination carries the CPU it used."""
        return 0.0, 0


UsageKey = tuple[str, str, str]
"""(pod directory, ``namespace/name``, container): one container of one pod uid."""


def usage_key(launch: rt.Launch) -> UsageKey:
    """The key of ``launch``'s container (its log is ``<pod dir>/<container>/<n>.log``)."""
    return str(launch.log_path.parent.parent), launch.pod, launch.container


InstanceT = TypeVar("InstanceT", bound=BaseInstance)


class BaseRuntime(Generic[InstanceT]):
    """The bookkeeping and the pod files of a :class:`~p2pkube.runtime.interface.PodRuntime`.

    File work goes through ``asyncio.to_thread`` (a thread natively, inline in a tab). A
    runtime calls :meth:`_started` when it starts an instance and :meth:`_ended` on the loop
    when it has ended, and writes its output through :meth:`_log_writer`."""

    def __init__(self, settings: RuntimeSettings) -> None:
        settings.check()
        self.settings = settings
        self._notifier = logs.LogNotifier(asyncio.get_running_loop())
        self._log_files = logs.LogFiles()
        """Log files open now, one per path however many instances write to it (the request
        instances of a handler container all log to the container's one file)."""
        self._instances: set[InstanceT] = set()
        self.started = 0
        self.finished = 0
        self._spent: dict[UsageKey, float] = {}
        """CPU seconds of the ended instances of each container, until its pod's files are
        removed (bounded by the pods on this node)."""

    # -- instances -------------------------------------------------------------------------------
    def _started(self, instance: InstanceT) -> None:
        """Count ``instance`` as running (until :meth:`_ended`)."""
        self._instances.add(instance)
        self.started += 1

    def _ended(self, instance: InstanceT, termination: rt.Termination) -> None:
        """On the loop: ``instance`` has ended so; resolve its ``done`` (once)."""
        self._instances.discard(instance)
        self.finished += 1
        key = usage_key(instance.launch)
        self._spent[key] = self._spent.get(key, 0.0) + termination.cpu_seconds
        if not instance.done.done():
            instance.done.set_result(termination)

    async def _stop_instances(self) -> None:
        """Stop every instance (the agent is stopping) and wait for them, bounded."""
        await rt.stop_all(self._instances, self.settings.stop_timeout)

    def expect_requests(self) -> None:
        """See :meth:`p2pkube.runtime.interface.PodRuntime.expect_requests` (nothing to do
        unless a runtime overrides it)."""
        return

    def _log_writer(self, launch: rt.Launch) -> logs.LogWriter:
        """The writer of ``launch``'s log file (its directory already made), rotated and
        capped as the settings say; each write wakes the followers (:meth:`output_waiter`).

        Instances logging to the same path share the open file (so concurrent requests of a
        handler append whole lines to one rotated log); a request instance's over-long lines
        are wrapped, since another request's line may come between their parts."""
        settings = self.settings
        return logs.LogWriter(
            launch.log_path,
            max_bytes=settings.log_max_bytes,
            max_files=settings.log_max_files,
            max_line_bytes=settings.log_max_line_bytes,
            on_write=self._notifier.notify,
            files=self._log_files,
            wrap_long_lines=launch.stdout is not None,
        )

    def usage(self) -> list[rt.ContainerUsage]:
        """See :meth:`p2pkube.runtime.interface.PodRuntime.usage`: the ended instances' CPU
        plus what the running ones measured so far."""
        totals = {key: [spent, 0] for key, spent in self._spent.items()}
        for instance in self._instances:
            cpu, memory = instance.usage()
            entry = totals.setdefault(usage_key(instance.launch), [0.0, 0])
            entry[0] += cpu
            entry[1] += memory
        return [
            rt.ContainerUsage(pod, container, pod_dir, float(cpu), int(memory))
            for (pod_dir, pod, container), (cpu, memory) in totals.items()
        ]

    # -- pod files (the same for both runtimes) --------------------------------------------------
    async def read_log(
        self, log_path: Path, *, tail: int | None = None, since: str | None = None
    ) -> list[rt.LogLine]:
        return await asyncio.to_thread(logs.read_log, log_path, tail=tail, since=since)

    def output_waiter(self) -> contextlib.AbstractContextManager[asyncio.Event]:
        return self._notifier.waiter()

    async def remove_pod_files(self, pod_dir: Path) -> None:
        gone = str(pod_dir)  # the pod left this node: its usage goes with its files
        for key in [key for key in self._spent if key[0] == gone]:
            del self._spent[key]
        await asyncio.to_thread(shutil.rmtree, pod_dir, True)

    async def remove_stale_pod_files(self, pods_dir: Path, keep: set[str]) -> None:
        await asyncio.to_thread(logs.remove_pod_dirs_except, pods_dir, keep)
