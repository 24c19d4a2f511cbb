"""One container instance in a wasmtime store, with limits that hold; runs on a worker thread.

What bounds a hostile module:

* **memory**: ``Store.set_limits`` caps each linear memory; ``memory.grow`` past it returns -1
  (it does not trap), the C library's ``malloc`` returns NULL and the program usually aborts.
  A failure while the memory is within a 16th of its cap (two pages at least) is reported
  ``OOMKilled``.
* **CPU and time**: at every epoch tick the deadline callback below runs on the instance's own
  thread. It stops the instance when asked (kill), at its deadline (``activeDeadlineSeconds``)
  or after an output flood, by returning an error, which wasmtime turns into a trap; and it
  throttles an instance that used its CPU quota of the current period by sleeping the rest of
  the period, as a CFS quota does. Sleeps inside the module (``poll_oneoff``) go through
  :meth:`Control.sleep`, so they end early on a kill and never outlast the deadline.
* **stack**: the engine's ``max_wasm_stack``; overflow traps with ``STACK_OVERFLOW``.
* **output**: stdout and stderr go to pipes, which the agent reads (``pipes.py``): into a
  rotated, size-bounded log (``logs.py``) against a token bucket on the bytes written,
  beyond which the instance is stopped with ``OutputFlood``; a request instance's stdout to
  its receiver, within the receiver's window.
* **host access**: WASI preview 1 only, no sockets, no directories except the granted mounts
  (read-only unless the manifest says otherwise), no inherited environment.

Host functions never raise: wasmtime-py keeps the exception of a failing host function in a
process-wide variable and re-raises it from whatever call traps next, on any thread.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import _bindings
from wasmtime import _ffi as ffi
from wasmtime._func import maybe_raise_last_exn

from p2pkube.model.quantity import format_bytes
from p2pkube.model.timestamps import utc_now
from p2pkube.runtime import interface as rt
from p2pkube.runtime.engine import InstanceHooks, LoadedModule, hooks_installed
from p2pkube.runtime.pipes import fd_path

log = logging.getLogger(__name__)

_WASM_PAGE = 65536
_UPDATE_CONTINUE = 0

_HELD = ctypes.PyDLL(ffi.dll._name)


def _held(name: str) -> Any:
    """``ffi.<name>`` called without releasing the GIL (through ``ctypes.PyDLL``).

    wasmtime-py calls every C function through ``ctypes.CDLL``, which releases the GIL before
    the call and takes it back after. For the short setup calls of an instance that is two
    GIL transitions for a few microseconds of C, and under load every taking back waits for
    the event loop thread (and the other instances) to let go: the instances then spend
    most of their time waiting for the GIL (a py-spy dump at 32 concurrent requests found 9
    of 16 instance threads waiting). Only calls that run no wasm and wait on nothing use
    this; instantiation (a start section runs wasm), the call of ``_start`` and the store's
    deletion still release the GIL."""
    function = getattr(_HELD, name)
    declared = getattr(_bindings, f"_{name}")
    function.argtypes, function.restype = declared.argtypes, declared.restype
    return function


_store_limiter = _held("wasmtime_store_limiter")
_store_epoch_deadline_callback = _held("wasmtime_store_epoch_deadline_callback")
_context_set_epoch_deadline = _held("wasmtime_context_set_epoch_deadline")
_context_set_wasi = _held("wasmtime_context_set_wasi")
_wasi_config_set_argv = _held("wasi_config_set_argv")
_wasi_config_set_env = _held("wasi_config_set_env")
_wasi_config_set_stdout_file = _held("wasi_config_set_stdout_file")
_wasi_config_set_stderr_file = _held("wasi_config_set_stderr_file")
_instance_export_get = _held("wasmtime_instance_export_get")
_store_new = _held("wasmtime_store_new")
_store_context = _held("wasmtime_store_context")
_wasi_config_new = _held("wasi_config_new")
_byte_vec_new = _held("wasm_byte_vec_new")
_wasi_config_set_stdin_bytes = _held("wasi_config_set_stdin_bytes")
_memory_data_size = _held("wasmtime_memory_data_size")
_NO_STORE_DATA_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))


class _Store(wasmtime.Store):
    """``wasmtime.Store(engine)`` made with the GIL held (:func:`_held`): the same object,
    without two GIL transitions. Under load, at several instances per process, the setup
    calls that released the GIL cost a request worker about a sixth of its CPU in futex
    wake-ups (``strace -c``: ~35 futex calls per instance)."""

    def __init__(self, engine: wasmtime.Engine) -> None:  # no super(): it would call ffi
        self._set_ptr(_store_new(engine.ptr(), None, _NO_STORE_DATA_FINALIZER))
        # wasmtime.Store keeps its context in the private ``__context`` (name-mangled).
        self._Store__context = _store_context(self.ptr())
        self.engine = engine


class _WasiConfig(wasmtime.WasiConfig):
    """``wasmtime.WasiConfig()`` made with the GIL held (see :class:`_Store`)."""

    def __init__(self) -> None:  # no super(): it would call ffi
        self._set_ptr(_wasi_config_new())


_DeadlineCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ctypes.c_uint8),
)
_Finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_NO_FINALIZER = _Finalizer(lambda _data: None)


class Control(InstanceHooks):
    """Shared by the agent (which may ask for a stop) and the instance's worker thread."""

    def __init__(self, limits: rt.Limits, *, cpu_period: float) -> None:
        self.limits = limits
        self.cpu_period = cpu_period
        self.stop_reason: str | None = None
        self.stop_message = ""
        self._wake = threading.Event()
        self._lock = threading.Lock()
        # CPU quota accounting (worker thread only).
        self._period_start = 0.0
        self._period_cpu = 0.0
        self.throttled_seconds = 0.0
        # Usage (``kubectl top``): written on the worker thread at every epoch tick and before
        # every sleep, read on the loop. Each is one attribute replaced whole, so a reader
        # gets one reading or the next, never a torn one.
        self.cpu_seconds = 0.0
        """CPU time of the instance's thread since its run began (``time.thread_time``)."""
        self.memory_bytes = 0
        """Size of its exported linear memory at the last tick."""
        self._cpu_start: float | None = None
        self._memory: Any = None
        """Its exported ``memory`` (a ``wasmtime_memory_t``), once instantiated."""

    # -- from any thread ---------------------------------------------------------------------------
    def stop(self, reason: str, message: str) -> None:
        """Ask the instance to end at its next check; the first reason given wins."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
                self.stop_message = message
        self._wake.set()

    # -- from the worker thread --------------------------------------------------------------------
    def must_stop(self) -> bool:
        """True when the instance must end now (a stop was asked, or the deadline passed)."""
        deadline = self.limits.deadline
        if self.stop_reason is None and deadline is not None and time.monotonic() >= deadline:
            self.stop(rt.DEADLINE_EXCEEDED, "active deadline reached")
        return self.stop_reason is not None

    def start_measuring(self) -> None:
        """The instance's run begins on this thread: its CPU is counted from now (a reused
        worker thread's clock already holds its earlier instances' time)."""
        self._cpu_start = time.thread_time()

    def measure_memory_of(self, memory: Any) -> None:
        """Read the size of ``memory`` (the instance's export) at every measure from now."""
        self._memory = memory

    def measure(self, context: Any = None) -> float:
        """Take the thread's CPU time (and, given the store's ``context``, the memory's
        size) now; returns the CPU seconds. One clock read and one C call without the GIL
        released: cheap at every tick."""
        if self._cpu_start is not None:
            self.cpu_seconds = time.thread_time() - self._cpu_start
        if context is not None and self._memory is not None:
            self.memory_bytes = int(_memory_data_size(context, ctypes.byref(self._memory)))
        return self.cpu_seconds

    def sleep(self, seconds: float) -> None:
        """Sleep for the module, waking early on a stop and never past the deadline."""
        self.measure()  # nothing is spent while asleep: the reading stays true throughout
        if self.limits.deadline is not None:
            seconds = min(seconds, max(0.0, self.limits.deadline - time.monotonic()))
        if seconds > 0:
            self._wake.wait(seconds)
        self.must_stop()

    def throttle(self) -> None:
        """Sleep out the period when this thread used its CPU quota in it (CFS-like); reads
        the CPU :meth:`measure` took at this tick."""
        cores = self.limits.cpu_cores
        if cores is None:
            return
        now = time.monotonic()
        cpu = self.cpu_seconds  # measured at this tick, just before (one clock read a tick)
        if now - self._period_start >= self.cpu_period:
            self._period_start, self._period_cpu = now, cpu
            return
        if cpu - self._period_cpu >= cores * self.cpu_period:
            pause = self._period_start + self.cpu_period - now
            self.throttled_seconds += pause
            self.sleep(pause)
            self._period_start, self._period_cpu = time.monotonic(), self.measure()


def _deadline_callback(control: Control) -> Any:
    """The per-store epoch deadline callback: continue one more tick, or trap."""

    def callback(context: Any, _env: Any, delta: Any, kind: Any) -> int:
        try:
            control.measure(context)
            if not control.must_stop():
                control.throttle()
            if control.must_stop():
                error = ffi.wasmtime_error_new(f"stopped: {control.stop_reason}".encode())
                return ctypes.cast(error, ctypes.c_void_p).value or 0
            delta[0] = 1
            kind[0] = _UPDATE_CONTINUE
            return 0
        except Exception:  # never raise into wasmtime
            log.exception("epoch callback failed; continuing")
            delta[0] = 1
            kind[0] = _UPDATE_CONTINUE
            return 0

    return _DeadlineCallback(callback)


def _memory_at_limit(store: wasmtime.Store, instance: wasmtime.Instance, cap: int) -> bool:
    """Whether the instance's memory is so close to its cap that a failed grow is the likely
    cause of its failure. Allocators grow in steps (zig's malloc rounds big requests up to a
    power of two), so "close" is within a 16th of the cap, at least two pages."""
    try:
        memory = instance.exports(store).get("memory")
    except Exception:
        return False
    if not isinstance(memory, wasmtime.Memory):
        return False
    return memory.data_len(store) + max(cap // 16, 2 * _WASM_PAGE) > cap


_START = ctypes.create_string_buffer(b"_start", 6)  # read only, shared by every thread
_MEMORY = ctypes.create_string_buffer(b"memory", 6)
_NO_VALUES = (ffi.wasmtime_val_t * 0)()


def _exported_memory(store: wasmtime.Store, instance: wasmtime.Instance) -> Any:
    """The instance's exported ``memory`` as a ``wasmtime_memory_t`` (None without one),
    looked up by name like ``_start`` (see :func:`_call_start`)."""
    item = ffi.wasmtime_extern_t()
    found = _instance_export_get(
        store._context(), ctypes.byref(instance._instance), _MEMORY, 6, ctypes.byref(item)
    )
    if not found or item.kind != ffi.WASMTIME_EXTERN_MEMORY.value:
        return None
    return item.of.memory  # a view that keeps ``item`` alive


def _call_start(store: wasmtime.Store, instance: wasmtime.Instance) -> None:
    """Call ``_start`` (``() -> ()``, checked once per module at load) as ``Func.__call__``
    does, raising the same Trap, ExitTrap or WasmtimeError, with fewer ffi calls: the export
    is looked up by name (wasmtime-py's ``exports()`` wraps every export, one call each) and
    called without the type check ``Func.__call__`` makes on every call (four calls more).
    Each ffi call releases and retakes the GIL, which the event loop thread wants too."""
    context = store._context()
    item = ffi.wasmtime_extern_t()
    found = _instance_export_get(
        context, ctypes.byref(instance._instance), _START, 6, ctypes.byref(item)
    )
    if not found:
        raise KeyError("_start")  # as exports()["_start"] (the loader refuses such a module)
    assert item.kind == ffi.WASMTIME_EXTERN_FUNC.value
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    error = ffi.wasmtime_func_call(
        context, ctypes.byref(item.of.func), _NO_VALUES, 0, _NO_VALUES, 0, ctypes.byref(trap)
    )
    if error:
        failure = wasmtime.WasmtimeError._from_ptr(error)
        maybe_raise_last_exn()  # as enter_wasm: a host function's exception comes first
        raise failure
    if trap:
        trapped = wasmtime.Trap._from_ptr(trap)
        maybe_raise_last_exn()
        raise trapped


def run(
    loaded: LoadedModule,
    launch: rt.Launch,
    control: Control,
    outputs: tuple[int, int],
    *,
    pod: bool,
) -> rt.Termination:
    """Run ``launch`` to its end on this thread; never raises.

    Its stdout and stderr go to the write ends ``outputs`` (pipes the agent reads,
    ``runtime/pipes.py``). A ``pod``'s own instance reads its stdinData from the file kept
    beside its log; a request instance reads its body from memory."""
    started = utc_now()
    store: wasmtime.Store | None = None
    instance: wasmtime.Instance | None = None
    callback = _deadline_callback(control)  # referenced until the store is gone
    engine = loaded.engine
    control.start_measuring()
    with engine.running(), hooks_installed(control):
        try:
            store = _Store(engine.engine)
            settings = engine.settings
            _store_limiter(  # Store.set_limits
                store.ptr(),
                launch.limits.memory_bytes,
                settings.max_table_elements,
                settings.max_instances,
                settings.max_tables,
                settings.max_memories,
            )
            _store_epoch_deadline_callback(store.ptr(), callback, None, _NO_FINALIZER)
            _context_set_epoch_deadline(store._context(), 1)  # Store.set_epoch_deadline(1)
            # WASI must be set before instantiation: a WASI import called in a store without
            # it aborts the whole process (a Rust panic), so no code path skips this.
            _set_wasi(store, _wasi_config(launch, outputs, pod=pod))
            instance = loaded.pre.instantiate(store)
            control.measure_memory_of(_exported_memory(store, instance))
            control.measure(store._context())
            if loaded.plain_start:
                _call_start(store, instance)
            else:  # wasmtime-py's checked call gives its own error for a _start with params
                start = instance.exports(store)["_start"]
                assert isinstance(start, wasmtime.Func)
                start(store)
            code, reason, message = 0, rt.COMPLETED, ""
        except wasmtime.ExitTrap as exit_trap:
            code = exit_trap.code
            reason = rt.COMPLETED if code == 0 else rt.ERROR
            message = "" if code == 0 else f"exited with code {code}"
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            code, reason, message = _classify(exc, control, store, instance, launch)
        except Exception as exc:  # a bug of ours: report it on the pod, keep the agent
            log.exception("instance %s/%s failed unexpectedly", launch.pod, launch.container)
            code, reason, message = rt.EXIT_TRAPPED, rt.TRAPPED, f"runtime error: {exc}"
        finally:
            control.measure_memory_of(None)  # the store goes: its memory must not be read
            if store is not None:
                store.close()
    return rt.Termination(code, reason, message, started, utc_now(), control.measure())


def _wasi_config(launch: rt.Launch, outputs: tuple[int, int], *, pod: bool) -> wasmtime.WasiConfig:
    wasi = _WasiConfig()
    _set_argv_env(wasi, launch.argv, launch.env)
    if launch.stdin is not None:
        if pod:  # stdinData, from the file kept beside its log (docs/protocol.md)
            stdin_path = launch.log_path.with_suffix(".stdin")
            stdin_path.write_bytes(launch.stdin)
            wasi.stdin_file = str(stdin_path)
        else:
            _set_stdin_bytes(wasi, launch.stdin)
    _set_output_fds(wasi, *outputs)
    for mount in launch.mounts:
        wasi.preopen_dir(str(Path(mount.host_path)), mount.guest_path, not mount.read_only)
    return wasi


_CHAR_PP = ctypes.POINTER(ctypes.POINTER(ctypes.c_char))


def _set_output_fds(wasi: wasmtime.WasiConfig, stdout: int, stderr: int) -> None:
    """stdout and stderr to this process's file descriptors (pipes the agent reads): wasmtime
    opens each by its ``/proc/self/fd`` path now, as its own blocking file. Not its custom
    streams, which pay a tokio thread round trip per write (``runtime/pipes.py``)."""
    for setter, fd in (
        (_wasi_config_set_stdout_file, stdout),
        (_wasi_config_set_stderr_file, stderr),
    ):
        if not setter(wasi.ptr(), fd_path(fd).encode()):
            raise wasmtime.WasmtimeError(f"cannot open the output pipe {fd_path(fd)}")


def _set_stdin_bytes(wasi: wasmtime.WasiConfig, data: bytes) -> None:
    """A request instance reads its body on stdin from memory: a file per request (written,
    then removed, under a name of its own since many run at once on one log path) cost every
    request with a body two file operations on its hot path. wasmtime takes the vector."""
    vector = ffi.wasm_byte_vec_t()
    buffer = (ffi.wasm_byte_t * len(data)).from_buffer_copy(data)
    _byte_vec_new(ctypes.byref(vector), len(data), buffer)
    _wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vector))


def _set_wasi(store: wasmtime.Store, wasi: wasmtime.WasiConfig) -> None:
    """``store.set_wasi(wasi)`` with the GIL held (see :func:`_held`); the same error."""
    error = _context_set_wasi(store._context(), wasi._consume())
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)


def _c_strings(strings: list[str]) -> Any:
    """A C array of the UTF-8 strings (it keeps them alive; wasmtime copies them)."""
    encoded = [text.encode() for text in strings]
    return ctypes.cast((ctypes.c_char_p * len(encoded))(*encoded), _CHAR_PP)


def _set_argv_env(wasi: wasmtime.WasiConfig, argv: list[str], env: list[tuple[str, str]]) -> None:
    """``wasi.argv = argv; wasi.env = env`` with the same errors, in half the time: wasmtime-py
    builds its arrays one ctypes object per string (a request's env has some 25 entries)."""
    if not _wasi_config_set_argv(wasi.ptr(), len(argv), _c_strings(argv)):
        raise wasmtime.WasmtimeError("failed to configure argv")
    names = _c_strings([name for name, _ in env])
    values = _c_strings([value for _, value in env])
    if not _wasi_config_set_env(wasi.ptr(), len(env), names, values):
        raise wasmtime.WasmtimeError("failed to configure environment")


def _classify(
    exc: Exception,
    control: Control,
    store: wasmtime.Store | None,
    instance: wasmtime.Instance | None,
    launch: rt.Launch,
) -> tuple[int, str, str]:
    """(exit code, reason, message) of an instance that trapped or failed to start."""
    text = str(exc).strip()
    first = _summary(exc)
    if control.stop_reason is not None:
        return rt.EXIT_KILLED, control.stop_reason, control.stop_message
    if instance is None:
        if "memory" in text and ("limit" in text or "minimum" in text):
            return rt.EXIT_KILLED, rt.OOM_KILLED, f"cannot start within its memory: {first}"
        return rt.EXIT_TRAPPED, rt.INVALID_MODULE, f"cannot instantiate: {first}"
    trap_code = exc.trap_code if isinstance(exc, wasmtime.Trap) else None
    if trap_code == wasmtime.TrapCode.STACK_OVERFLOW:
        return rt.EXIT_STACK_OVERFLOW, rt.STACK_OVERFLOW, "wasm call stack exhausted"
    cap = launch.limits.memory_bytes
    if store is not None and _memory_at_limit(store, instance, cap):
        return rt.EXIT_KILLED, rt.OOM_KILLED, f"memory limit {format_bytes(cap)} reached ({first})"
    return rt.EXIT_TRAPPED, rt.TRAPPED, f"wasm trap: {first}"


def _summary(exc: Exception) -> str:
    """The line of a wasmtime error that says what happened (not the backtrace header)."""
    text = exc.message if isinstance(exc, wasmtime.Trap) else str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if "Caused by:" in lines and lines.index("Caused by:") + 1 < len(lines):
        return lines[lines.index("Caused by:") + 1].removeprefix("wasm trap: ")
    for line in lines:
        if not line.startswith("error while executing") and not line[:1].isdigit():
            return line.removeprefix("wasm trap: ")
    return type(exc).__name__
