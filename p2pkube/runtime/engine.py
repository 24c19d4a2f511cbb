"""The node's wasmtime engine: one Engine, one epoch ticker, a compiled-module cache.

Epoch interruption, not fuel: fuel metering slows CPU-bound code ~1.55x, epoch checks ~1.14x
(measured here). Epochs are engine-wide, so there is one ticker thread for all instances; each
store gets a deadline of one tick and a deadline *callback* (``sandbox.py``) that decides, at
every tick, whether the instance goes on, sleeps (CPU throttling) or stops (killed, deadline,
output flood). A deadline is always set: without one an epoch engine traps at once (wasmtime
issue 4342). The ticker is a thread because a signal handler cannot interrupt wasm from Python
(wasmtime-py issue 126); it runs only while an instance does, so an idle node pays nothing.

Compiling a real module takes 280-500 ms, deserializing a compiled one ~1.3 ms: compiled
modules are kept on disk under ``<data-dir>/runtime/compiled/<engine fingerprint>/`` (the
fingerprint covers everything that makes compiled code incompatible) and the most recently
used ones in memory, as ``InstancePre`` (imports already resolved), so a warm start is an
instantiation only. Every method that compiles or reads files blocks: call it off the loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import queue
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from p2pkube.fsutil import write_file_atomically
from p2pkube.runtime.base import WASI_MODULE, trapped_imports
from p2pkube.runtime.interface import InvalidModuleError
from p2pkube.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

_WASM_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\x00\x00\x00"

# WASI preview 1 constants used by the host functions below.
_ERRNO_SUCCESS = 0
_ERRNO_FAULT = 21
_ERRNO_INVAL = 28
_SUBSCRIPTION_SIZE = 48
_EVENT_SIZE = 32
_EVENTTYPE_CLOCK = 0
_SUBCLOCKFLAG_ABSTIME = 1
_CLOCK_REALTIME = 0
_CLOCK_MONOTONIC = 1
_MAX_SUBSCRIPTIONS = 4096


@dataclass
class LoadedModule:
    """A module ready to instantiate in a store of ``engine``, and how it was obtained."""

    engine: WasmEngine
    digest: str
    pre: wasmtime.InstancePre
    compile_seconds: float
    """0 when it came from the disk cache or memory."""
    from_disk_cache: bool
    plain_start: bool = False
    """``_start`` takes no parameters and returns nothing (every WASI command's does): the
    sandbox then calls it without wasmtime-py's per-call type check, checked here once."""
    trapped_imports: tuple[str, ...] = ()
    """Function imports outside WASI preview 1 (``module.name``), linked as traps."""


class CompileError(InvalidModuleError):
    """This engine's compiler refused the module (another compiler may take it)."""


class InstanceHooks:
    """What the host functions of one instance consult: set per worker thread by the sandbox.

    The overridden WASI ``poll_oneoff`` (sleeps) must be interruptible by a kill and must not
    outlast the deadline, so it sleeps through :meth:`sleep` instead of blocking the thread.
    """

    def sleep(self, seconds: float) -> None:  # pragma: no cover - replaced by the sandbox
        time.sleep(seconds)


_current = threading.local()


def current_hooks() -> InstanceHooks:
    hooks = getattr(_current, "hooks", None)
    return hooks if hooks is not None else InstanceHooks()


@contextlib.contextmanager
def hooks_installed(hooks: InstanceHooks) -> Iterator[None]:
    """Make ``hooks`` the ones the host functions of this thread's instance use."""
    _current.hooks = hooks
    try:
        yield
    finally:
        _current.hooks = None


def _now_ns(clock_id: int) -> int | None:
    if clock_id == _CLOCK_REALTIME:
        return time.time_ns()
    if clock_id == _CLOCK_MONOTONIC:
        return time.monotonic_ns()
    if clock_id in (2, 3):  # process / thread CPU time: the instance is one thread
        return time.thread_time_ns()
    return None


def _memory(caller: wasmtime.Caller) -> wasmtime.Memory | None:
    memory = caller.get("memory")
    return memory if isinstance(memory, wasmtime.Memory) else None


def _u32(value: int) -> int:
    return value & 0xFFFFFFFF


def wasi_clock_time_get(caller: wasmtime.Caller, clock_id: int, _precision: int, out: int) -> int:
    """WASI ``clock_time_get`` on the host clocks ``poll_oneoff`` below also uses, so absolute
    sleeps computed by the guest from this clock mean the same instant to both."""
    try:
        now = _now_ns(clock_id)
        memory = _memory(caller)
        if now is None or memory is None:
            return _ERRNO_INVAL
        memory.write(caller, struct.pack("<Q", now), _u32(out))
        return _ERRNO_SUCCESS
    except Exception:  # never raise into wasmtime: it would trap another thread (see sandbox)
        return _ERRNO_FAULT


def wasi_poll_oneoff(
    caller: wasmtime.Caller, in_ptr: int, out_ptr: int, count: int, nout: int
) -> int:
    """WASI ``poll_oneoff``: the only blocking call a WASI p1 command makes here (sleeps).

    wasmtime's own implementation blocks the thread in the host, where neither an epoch
    deadline nor a kill can reach it: a pod sleeping for an hour could not be stopped. Clock
    subscriptions therefore sleep through the instance's hooks (interruptible, cut at the
    deadline). Descriptors here are files and captured output, always ready, so fd
    subscriptions complete at once.
    """
    try:
        memory = _memory(caller)
        count = _u32(count)
        if memory is None or count == 0 or count > _MAX_SUBSCRIPTIONS:
            return _ERRNO_INVAL
        data = bytes(memory.read(caller, _u32(in_ptr), _u32(in_ptr) + _SUBSCRIPTION_SIZE * count))
        clocks: list[tuple[int, int]] = []  # (userdata, ns to wait)
        ready: list[tuple[int, int]] = []  # (userdata, event type)
        for index in range(count):
            base = index * _SUBSCRIPTION_SIZE
            userdata, tag = struct.unpack_from("<QB", data, base)
            if tag == _EVENTTYPE_CLOCK:
                clock_id, timeout, _precision, flags = struct.unpack_from(
                    "<I4xQQH", data, base + 16
                )
                if flags & _SUBCLOCKFLAG_ABSTIME:
                    now = _now_ns(clock_id)
                    if now is None:
                        return _ERRNO_INVAL
                    timeout = max(0, timeout - now)
                clocks.append((userdata, timeout))
            elif tag in (1, 2):  # fd_read, fd_write
                ready.append((userdata, tag))
            else:
                return _ERRNO_INVAL
        if not ready and clocks:
            wait = min(timeout for _, timeout in clocks)
            current_hooks().sleep(wait / 1e9)
            ready = [(userdata, _EVENTTYPE_CLOCK) for userdata, t in clocks if t <= wait]
        events = b"".join(
            struct.pack("<QHB5xQH6x", userdata, _ERRNO_SUCCESS, kind, 0, 0)
            for userdata, kind in ready
        )
        memory.write(caller, events, _u32(out_ptr))
        memory.write(caller, struct.pack("<I", len(ready)), _u32(nout))
        return _ERRNO_SUCCESS
    except Exception:
        return _ERRNO_FAULT


COMPILERS = {"cranelift": 1, "winch": 2}
"""wasmtime's strategies by name (the C API's values: wasmtime-py's setter knows only
cranelift)."""


def engine_fingerprint(compiler: str, settings: RuntimeSettings) -> str:
    """Names the compiled-code cache: anything that changes machine code changes it."""
    parts = [
        "p2pkube-compiled-v1",
        version("wasmtime"),
        platform.machine(),
        compiler,
        str(settings.max_wasm_stack),
        "epoch",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def check_wasm_header(data: bytes) -> None:
    """InvalidModuleError unless ``data`` starts like a core WebAssembly module."""
    if data[:4] != _WASM_MAGIC:
        raise InvalidModuleError("not a WebAssembly binary (no \\0asm magic)")
    if data[4:8] != _CORE_VERSION:
        raise InvalidModuleError(
            "a WebAssembly component (WASI preview 2); only preview 1 command modules run here"
        )


class WasmEngine:
    """One engine (one compiler), its linker (WASI preview 1) and its caches; thread-safe."""

    def __init__(
        self, cache_dir: Path, settings: RuntimeSettings, compiler: str, *, parallel: bool = True
    ) -> None:
        if compiler not in COMPILERS:
            raise ValueError(f"unknown compiler {compiler!r} (one of {sorted(COMPILERS)})")
        self.settings = settings
        self.compiler = compiler
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.max_wasm_stack = settings.max_wasm_stack
        ffi.wasmtime_config_strategy_set(config.ptr(), COMPILERS[compiler])
        config.parallel_compilation = parallel
        self.engine = wasmtime.Engine(config)
        self.fingerprint = engine_fingerprint(compiler, settings)
        self.cache_dir = cache_dir / self.fingerprint
        self.linker = self._wasi_linker()
        self._modules: OrderedDict[str, LoadedModule] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._active = 0
        self.memory_hits = 0
        """Loads answered from the in-memory module cache."""
        self.disk_hits = 0
        """Loads that deserialized a compiled module from the disk cache (no compile)."""
        self.compiles = 0
        """Loads that compiled the module (neither cache had it): the cache's misses."""
        self._ticking = threading.Condition()
        self._closed = False
        self._ticker = threading.Thread(target=self._tick, name="wasm-epoch", daemon=True)
        self._ticker.start()

    def _wasi_linker(self) -> wasmtime.Linker:
        """A linker with WASI preview 1, our sleeps and clocks replacing wasmtime's."""
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        linker.allow_shadowing = True
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        linker.define_func(
            WASI_MODULE,
            "poll_oneoff",
            wasmtime.FuncType([i32, i32, i32, i32], [i32]),
            wasi_poll_oneoff,
            access_caller=True,
        )
        linker.define_func(
            WASI_MODULE,
            "clock_time_get",
            wasmtime.FuncType([i32, i64, i32], [i32]),
            wasi_clock_time_get,
            access_caller=True,
        )
        return linker

    # -- the epoch clock -------------------------------------------------------------------------
    def _tick(self) -> None:
        interval = self.settings.epoch_tick
        while True:
            with self._ticking:
                while self._active == 0 and not self._closed:
                    self._ticking.wait()
                if self._closed:
                    return
            time.sleep(interval)
            self.engine.increment_epoch()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Keep the ticker going while an instance runs inside this block."""
        with self._ticking:
            self._active += 1
            self._ticking.notify_all()
        try:
            yield
        finally:
            with self._ticking:
                self._active -= 1

    def close(self) -> None:
        with self._ticking:
            self._closed = True
            self._ticking.notify_all()
        self._ticker.join(timeout=1.0)

    # -- modules ---------------------------------------------------------------------------------
    def _cache_path(self, digest: str) -> Path:
        return self.cache_dir / f"{digest.removeprefix('sha256:')}.cwasm"

    def load(self, digest: str, module_path: Path) -> LoadedModule:
        """The module of ``digest`` ready to instantiate (memory, disk cache, or compiled now).

        Blocking. Concurrent loads of one digest compile once. InvalidModuleError when the
        module cannot run here.
        """
        with self._lock:
            loaded = self._modules.get(digest)
            if loaded is not None:
                self._modules.move_to_end(digest)
                self.memory_hits += 1
                return loaded
            load_lock = self._load_locks.setdefault(digest, threading.Lock())
        with load_lock:
            with self._lock:
                loaded = self._modules.get(digest)
                if loaded is not None:  # a concurrent load of the same digest filled it
                    self.memory_hits += 1
            if loaded is None:
                loaded = self._load_uncached(digest, module_path)
            with self._lock:
                if loaded.from_disk_cache:
                    self.disk_hits += 1
                else:
                    self.compiles += 1
                self._modules[digest] = loaded
                self._modules.move_to_end(digest)
                while len(self._modules) > max(1, self.settings.module_cache_entries):
                    self._modules.popitem(last=False)
                self._load_locks.pop(digest, None)
            return loaded

    def _load_uncached(self, digest: str, module_path: Path) -> LoadedModule:
        cached = self._cache_path(digest)
        if cached.exists():
            try:
                module = wasmtime.Module.deserialize_file(self.engine, str(cached))
                pre, plain, trapped = self._prepare(module)
                return LoadedModule(
                    self, digest, pre, 0.0, True, plain_start=plain, trapped_imports=trapped
                )
            except (wasmtime.WasmtimeError, InvalidModuleError) as exc:
                log.warning("compiled cache entry %s unusable (%s): recompiling", cached, exc)
                cached.unlink(missing_ok=True)
        data = module_path.read_bytes()
        check_wasm_header(data)
        started = time.perf_counter()
        try:
            module = wasmtime.Module(self.engine, data)
        except wasmtime.WasmtimeError as exc:
            raise CompileError(f"does not compile: {_first_line(exc)}") from None
        pre, plain, trapped = self._prepare(module)
        compile_seconds = time.perf_counter() - started
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            write_file_atomically(cached, bytes(module.serialize()))
        except OSError as exc:
            log.warning("could not cache the compiled module %s: %s", digest, exc)
        return LoadedModule(
            self, digest, pre, compile_seconds, False, plain_start=plain, trapped_imports=trapped
        )

    def _prepare(
        self, module: wasmtime.Module
    ) -> tuple[wasmtime.InstancePre, bool, tuple[str, ...]]:
        """Check that it is a WASI command and resolve its imports once; also whether its
        ``_start`` is ``() -> ()`` (:attr:`LoadedModule.plain_start`) and which function
        imports outside WASI preview 1 are linked as traps.

        Toolchains leave such imports in modules that never call them on the paths a WASI
        host takes (micropython-wasi imports its embedder's ``host_call``): as wasmtime's
        ``--trap-unknown-imports``, each becomes a function that traps when called, naming
        itself. A non-function import (a memory, table or global) has no such stand-in and is
        refused. Such a module gets a linker of its own, so that two modules importing one
        name with different types never meet."""
        exports = {export.name: export.type for export in module.exports}
        start = exports.get("_start")
        if not isinstance(start, wasmtime.FuncType):
            raise InvalidModuleError(
                "not a WASI command: it exports no _start function (a reactor or a library?)"
            )
        trapped = trapped_imports(
            (imp.module, imp.name or "", isinstance(imp.type, wasmtime.FuncType))
            for imp in module.imports
        )
        linker = self.linker
        if trapped:
            linker = self._wasi_linker()
            linker.define_unknown_imports_as_traps(module)
        try:
            pre = linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise InvalidModuleError(f"cannot link: {_first_line(exc)}") from None
        return pre, not start.params and not start.results, trapped

    def forget(self, digest: str) -> None:
        """Drop a module from the caches (its blob is gone); blocking."""
        with self._lock:
            self._modules.pop(digest, None)
        self._cache_path(digest).unlink(missing_ok=True)

    def has(self, digest: str) -> bool:
        """Whether ``digest`` loads without compiling (in memory or in the disk cache)."""
        with self._lock:
            if digest in self._modules:
                return True
        return self._cache_path(digest).exists()

    def cached_on_disk(self) -> list[str]:
        """Digests with a compiled module on disk."""
        if not self.cache_dir.is_dir():
            return []
        return sorted(f"sha256:{p.stem}" for p in self.cache_dir.glob("*.cwasm"))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            in_memory = len(self._modules)
        return {
            "fingerprint": self.fingerprint,
            "compiler": self.compiler,
            "modulesInMemory": in_memory,
            "activeInstances": self._active,
            "memoryHits": self.memory_hits,
            "diskHits": self.disk_hits,
            "compiles": self.compiles,
            "cacheDir": os.fspath(self.cache_dir),
        }


def load_or_fall_back(
    engine: WasmEngine, fallback: WasmEngine | None, digest: str, module_path: Path
) -> LoadedModule:
    """``engine``'s load of the module; when its compiler refuses it, ``fallback``'s. Winch
    implements fewer proposals than Cranelift (exceptions, for one): a module Winch refuses
    is compiled by Cranelift, and is InvalidModule only if that fails too. Blocking."""
    try:
        return engine.load(digest, module_path)
    except CompileError as exc:
        if fallback is None:
            raise
        log.info(
            "%s: %s refused it (%s); compiling with %s",
            digest,
            engine.compiler,
            exc,
            fallback.compiler,
        )
        return fallback.load(digest, module_path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ModuleLoader:
    """Loads modules through one or two engines: tiered compilation.

    Compiling a 1 MB module with Cranelift (optimising) takes ~1 s on this machine, with Winch
    (a baseline compiler) ~0.15 s, but Winch's code runs ~1.6x slower (measured, primes).
    With ``compiler = "tiered"`` a module's first start uses Winch, while a background thread
    compiles it with Cranelift; every later start uses Cranelift's code (from memory or the
    disk cache). ``cranelift`` or ``winch`` use that compiler alone. Blocking: call off the loop.
    """

    def __init__(self, cache_dir: Path, settings: RuntimeSettings) -> None:
        settings.check()
        mode = settings.compiler
        self.optimizing = WasmEngine(
            cache_dir, settings, "winch" if mode == "winch" else "cranelift"
        )
        self.baseline = WasmEngine(cache_dir, settings, "winch") if mode == "tiered" else None
        self._queue: queue.Queue[tuple[str, Path] | None] = queue.Queue(maxsize=64)
        self._queued: set[str] = set()
        self._lock = threading.Lock()
        self.optimized = 0
        self._worker: threading.Thread | None = None
        if self.baseline is not None:
            self._worker = threading.Thread(
                target=self._optimize, name="wasm-optimize", daemon=True
            )
            self._worker.start()

    @property
    def engines(self) -> list[WasmEngine]:
        return [self.optimizing] if self.baseline is None else [self.optimizing, self.baseline]

    def load(self, digest: str, module_path: Path) -> LoadedModule:
        baseline = self.baseline
        if baseline is None or self.optimizing.has(digest):
            return self.optimizing.load(digest, module_path)
        loaded = load_or_fall_back(baseline, self.optimizing, digest, module_path)
        if loaded.engine is self.optimizing:  # Winch refused it: nothing left to optimise
            return loaded
        with self._lock:
            if digest not in self._queued:
                with contextlib.suppress(queue.Full):  # queued again at its next start
                    self._queue.put_nowait((digest, module_path))
                    self._queued.add(digest)
        return loaded

    def _optimize(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # Linux: nice is per thread
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while True:
            item = self._queue.get()
            if item is None:
                return
            digest, module_path = item
            try:
                self.optimizing.load(digest, module_path)
                self.optimized += 1
                if self.baseline is not None:
                    self.baseline.forget(digest)  # its Cranelift code replaces it
            except Exception as exc:  # the module may have been removed meanwhile
                log.info("background compile of %s failed: %s", digest, exc)
            finally:
                with self._lock:
                    self._queued.discard(digest)

    def wait_optimized(self, timeout: float) -> bool:
        """Block until the background compiles queued so far are done (benchmarks, tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queued:
                    return True
            time.sleep(0.01)
        return False

    def forget(self, digest: str) -> None:
        for engine in self.engines:
            engine.forget(digest)

    def cached_on_disk(self) -> list[str]:
        return sorted({d for engine in self.engines for d in engine.cached_on_disk()})

    def stats(self) -> dict[str, Any]:
        return {
            "compiler": self.optimizing.settings.compiler,
            "engines": [engine.stats() for engine in self.engines],
            "optimizedInBackground": self.optimized,
        }

    def close(self) -> None:
        if self._worker is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._worker.join(timeout=2.0)
        for engine in self.engines:
            engine.close()
