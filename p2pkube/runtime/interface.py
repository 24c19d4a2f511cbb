"""What the node's pod lifecycle (the kubelet) needs from a WebAssembly runtime.

The kubelet (``p2pkube.runtime.kubelet``) is shared Python: it runs natively and, in a later
issue, inside a browser tab. Only what is behind :class:`PodRuntime` differs: natively wasmtime
in worker threads (``p2pkube.runtime.native``), in the browser Web Workers. Both report the same
:class:`Termination` reasons, so ``p2pkube get pods`` reads alike whatever ran the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

# Why a container ended, as shown in containerStatuses[].state.terminated.reason. Kubernetes
# uses Completed, Error, OOMKilled, DeadlineExceeded; the rest are wasm-specific.
COMPLETED: Final = "Completed"
"""``_start`` returned or the module called ``proc_exit(0)``."""
ERROR: Final = "Error"
"""``proc_exit`` with a non-zero code."""
OOM_KILLED: Final = "OOMKilled"
"""The module failed while its memory was at its limit (a grow past it was refused)."""
DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
"""The pod ran past ``activeDeadlineSeconds``."""
STACK_OVERFLOW: Final = "StackOverflow"
"""The wasm call stack exceeded ``runtime.max_wasm_stack``."""
TRAPPED: Final = "Trapped"
"""Any other wasm trap (``unreachable`` from ``abort()``, out-of-bounds access, ...)."""
OUTPUT_FLOOD: Final = "OutputFlood"
"""The module wrote more output than ``runtime.log_rate_bytes`` / ``log_burst_bytes`` allow."""
KILLED: Final = "Killed"
"""Stopped on request: the pod was deleted, or the agent is shutting down."""
CREATE_CONTAINER_ERROR: Final = "CreateContainerError"
"""What the container needs cannot be set up (a hostPath that is not a directory)."""
INVALID_MODULE: Final = "InvalidModule"
"""Not a WASI preview 1 command module, or it needs imports this node does not offer."""
AGENT_RESTARTED: Final = "AgentRestarted"
"""The agent that ran it stopped or crashed while it ran (found on the agent's next start)."""

EXIT_KILLED: Final = 137
"""Exit code reported for a container stopped from outside (128 + SIGKILL, as Kubernetes)."""
EXIT_TRAPPED: Final = 134
"""Exit code reported for a trap (128 + SIGABRT: what ``abort()`` would give natively)."""
EXIT_STACK_OVERFLOW: Final = 139
"""Exit code reported for a stack overflow (128 + SIGSEGV, like a native stack overflow)."""


class InvalidModuleError(ValueError):
    """The bytes are not a runnable WASI command module; the message says why."""


@dataclass(frozen=True)
class ModuleInfo:
    """What preparing a module found that its pods' events should say."""

    trapped_imports: tuple[str, ...] = ()
    """``module.name`` of each function import outside WASI preview 1, defined as a trap
    (wasmtime's ``--trap-unknown-imports``): the module runs, and fails only if it calls one."""


@dataclass(frozen=True)
class Mount:
    """A host directory the module may see (a WASI preopen); nothing else of the host is."""

    host_path: Path
    guest_path: str
    read_only: bool = True
    create: bool = False
    """The runtime creates the directory (an emptyDir); otherwise it must exist (hostPath)."""
    projected: bool = False
    """A directory the kubelet fills and keeps up to date (a configMap volume): it exists
    before the start, and is not a host path to check."""


@dataclass(frozen=True)
class Limits:
    """What one container instance may use; every field always holds a bound."""

    memory_bytes: int
    """Cap on each linear memory; ``memory.grow`` beyond it fails."""
    cpu_cores: float | None = None
    """CPU the instance may use, in cores (``0.5`` for ``500m``); it is throttled beyond it, as
    a CFS quota would. ``None``: unthrottled (it may use a whole core)."""
    deadline: float | None = None
    """``time.monotonic()`` instant at which it is stopped (``activeDeadlineSeconds``)."""


@dataclass(frozen=True)
class Launch:
    """Everything needed to start one container instance."""

    pod: str
    """``namespace/name`` (for logs and thread names)."""
    container: str
    image: str
    """The module's digest, ``sha256:<hex>``."""
    module_path: Path
    argv: list[str]
    env: list[tuple[str, str]]
    limits: Limits
    log_path: Path
    """The instance's log file (CRI format), ``<restart>.log``; rotated files sit beside it.
    The runtime removes the files of instances before the previous one."""
    stdin: bytes | None = None
    mounts: list[Mount] = field(default_factory=list)
    stdout: Callable[[bytes], None] | None = None
    """Set for the instance of one HTTP request to a handler pod (``runtime/handler.py``):
    its stdout goes to this callback, in order, on the event loop, instead of the log (stderr
    still goes to the log)."""
    stdout_buffer: int = 4 * 1024 * 1024
    """Stdout bytes the receiver holds unread at most (``services.response_buffer_bytes``):
    the native runtime reads the instance's stdout pipe no more than that ahead of
    :meth:`Instance.stdout_read` (``runtime/pipes.py``), so the instance's writes block."""


@dataclass(frozen=True)
class Termination:
    """How an instance ended: Kubernetes' ``state.terminated``."""

    exit_code: int
    reason: str
    message: str
    started_at: str
    finished_at: str
    cpu_seconds: float = 0.0
    """CPU time the instance used, measured where it ran (the worker thread's CPU clock
    natively, the Worker's own timing in a tab): what its container's usage adds up."""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class LogLine:
    """One line a container wrote, with the time it was written."""

    time: str
    """RFC 3339 with nanoseconds, UTC."""
    stream: str
    """``stdout`` or ``stderr``."""
    text: str


@dataclass(frozen=True)
class ContainerUsage:
    """What one container of a pod here has used, as measured (``kubectl top pod``).

    ``cpu_seconds`` is cumulative (every instance of the container so far, ended and running),
    so a rate over any window is a difference of two readings; ``memory_bytes`` is the linear
    memory of its running instances now (0 when none runs, a handler between requests)."""

    pod: str
    """``namespace/name``, as :attr:`Launch.pod`."""
    container: str
    pod_dir: str
    """The pod's directory (it names the pod's uid): a pod deleted and made again under the
    same name starts from zero."""
    cpu_seconds: float
    memory_bytes: int


class Instance(Protocol):
    """A running container instance."""

    started_at: str
    done: asyncio.Future[Termination]
    """Resolves when the instance has ended (never raises)."""

    def stop(self, reason: str = KILLED, message: str = "") -> None:
        """Ask the instance to end at its next safe point (within one epoch tick)."""
        ...

    def files_changed(self) -> None:
        """The kubelet projected new files into a ``projected`` mount of this instance (a
        ConfigMap or Secret changed): a runtime that copied them at the start (a browser
        tab's) hands the running instance the new ones; one that mounts the directory itself
        (native) has nothing to do."""
        ...

    def usage(self) -> tuple[float, int]:
        """(CPU seconds used so far, linear memory bytes now), as last measured: at the
        latest one epoch tick old natively, one report of the Worker in a tab."""
        ...

    def stdout_read(self, size: int) -> None:
        """The receiver of ``Launch.stdout`` consumed ``size`` more bytes of it: the native
        runtime reads that much more of the instance's stdout pipe (its backpressure); the
        browser's need not do anything."""
        ...


async def stop_all(instances: Iterable[Instance], within: float) -> None:
    """Stop every instance (the agent is stopping) and wait for them, at most ``within`` s."""
    stopping = list(instances)  # a copy: instances leave the runtime's set as they end
    for instance in stopping:
        instance.stop(KILLED, "the agent is stopping")
    if stopping:
        await asyncio.wait([instance.done for instance in stopping], timeout=within)


class PodRuntime(Protocol):
    """Runs WebAssembly container instances on this node."""

    async def prepare(self, image: str, module_path: Path) -> ModuleInfo:
        """Compile (or load from the cache) the module; InvalidModuleError if it cannot run."""
        ...

    def start(self, launch: Launch) -> Instance:
        """Start an instance of a prepared module; returns at once."""
        ...

    def expect_requests(self) -> None:
        """A handler container is serving here: get ready for its requests now (natively,
        start the request worker processes, ``runtime.request_processes``); returns at once."""
        ...

    async def read_log(
        self, log_path: Path, *, tail: int | None = None, since: str | None = None
    ) -> list[LogLine]:
        """Lines of one instance's log (rotated files included), oldest first."""
        ...

    def output_waiter(self) -> contextlib.AbstractContextManager[asyncio.Event]:
        """An event set whenever any instance writes output, while the block lasts: a
        follower clears it, reads, and waits on it, so no line falls in between."""
        ...

    async def remove_pod_files(self, pod_dir: Path) -> None:
        """Remove what the instances of one pod left (logs, stdin, emptyDir volumes)."""
        ...

    async def remove_stale_pod_files(self, pods_dir: Path, keep: set[str]) -> None:
        """Remove the files of every pod under ``pods_dir`` whose directory is not in ``keep``."""
        ...

    async def forget(self, image: str) -> None:
        """Drop the compiled module of ``image`` from memory and disk (its blob was removed)."""
        ...

    def usage(self) -> list[ContainerUsage]:
        """What each container with instances here (running, or ended and not yet removed
        with its pod's files) has used: ``kubectl top``'s figures (``runtime/usage.py``)."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters for ``/v1/status`` (running, started, finished, the engine's own)."""
        ...

    async def close(self) -> None:
        """Stop every instance and release the engine."""
        ...
