"""HTTP handler request instances in worker processes (``runtime.request_processes`` > 0).

Why: a handler pod runs one wasm instance per request. On the agent's threads every request
costs the agent's one GIL about 1.5 ms (the instance's ctypes calls into wasmtime and its
epoch callbacks, each taking the GIL back from the event loop), so the loop and the
instances slow each other down. A worker process has its own GIL, its own wasmtime engines
and its own threads (one per running instance, as in the agent: a long streaming response
blocks no other request).

The worker loads what the agent compiled from the disk cache (``runtime/compiled``, the same
engine fingerprints); it compiles only a module whose cache entry is missing.

**IPC**: one Unix socket pair per worker, length-prefixed pickles (both ends are this code).
The agent sends ``run`` (the Launch's fields without its receiver, the deadline as seconds
left) with the write ends of the instance's stdout and stderr pipes attached
(``SCM_RIGHTS``), ``stop`` and ``exit``; the worker sends ``end`` (the Termination). The
output never crosses the socket: the agent reads it from the pipes (``runtime/pipes.py``),
so a request costs two messages and no Python in the worker per write. The agent reads
with ``loop.add_reader`` (never a thread, never a wait on the loop); writes that do not fit
the socket wait in a buffer sent by ``add_writer``, with their descriptors.

**Logs and backpressure** are the pipes': the agent writes stderr to the container's
shared :class:`~p2pkube.runtime.logs.LogWriter` against the output budget, and reads
stdout no further ahead of the response's reader than its window, so the instance's writes
in the worker block on the full pipe, as they would on the agent's own thread.

**Failures**: a worker that dies fails only its in-flight instances (``Killed``, so a
request gets 502 with the reason) and is replaced; when no worker is up, requests run on the
agent's threads. On close the workers are told to exit, waited for (bounded), then killed.

Native only: the browser never imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from p2pkube.runtime import interface as rt
from p2pkube.runtime.base import failed
from p2pkube.runtime.pipes import PipedInstance, close_fds
from p2pkube.runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    from p2pkube.runtime import sandbox
    from p2pkube.runtime.native import NativeRuntime

log = logging.getLogger(__name__)

_HEADER: Final = struct.Struct("!I")
MAX_MESSAGE: Final = 256 * 1024 * 1024
"""Largest message either side accepts (a launch carries the request body)."""
_SOCKET_BUFFER: Final = 1024 * 1024
_READ_SIZE: Final = 256 * 1024


def encode(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


class Decoder:
    """Splits a byte stream into the messages :func:`encode` made."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        while len(buffer) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, start)
            if size > MAX_MESSAGE:
                raise ValueError(f"message of {size} bytes is over the limit")
            end = start + _HEADER.size + size
            if len(buffer) < end:
                break
            messages.append(pickle.loads(memoryview(buffer)[start + _HEADER.size : end]))
            start = end
        del buffer[:start]
        return messages


# -- the agent's side ------------------------------------------------------------------------------
class ProcInstance(PipedInstance):
    """A request instance running in a worker process; its output comes through the pipes
    of ``output``, read here."""

    def __init__(self, launch: rt.Launch, worker: _Worker, number: int) -> None:
        super().__init__(launch)
        self.worker = worker
        self.number = number

    def stop(self, reason: str = rt.KILLED, message: str = "") -> None:
        if not self.done.done():
            self.worker.send(("stop", self.number, reason, message or "stopped by the agent"))
        self.stop_output()


class _Worker:
    """The agent's handle on one worker process."""

    def __init__(
        self, pool: RequestProcesses, process: subprocess.Popen[bytes], sock: socket.socket
    ) -> None:
        self.pool = pool
        self.process = process
        self.sock = sock
        self.decoder = Decoder()
        self.instances: dict[int, ProcInstance] = {}
        self.alive = True
        self._outgoing: deque[tuple[bytes, tuple[int, ...]]] = deque()
        """What did not fit the socket yet: bytes, and the descriptors to send with them."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: tuple[Any, ...], fds: tuple[int, ...] = ()) -> None:
        """Send now, or buffer what does not fit and flush it when the socket is writable.
        ``fds`` go with the message's first byte (``SCM_RIGHTS``); this closes the agent's
        copies once they are sent (or the worker is gone)."""
        if not self.alive:
            close_fds(fds)
            return
        if not self._outgoing:
            data = encode(message)
            if not self._send_now(data, fds):
                return
            self.pool.loop.add_writer(self.sock.fileno(), self._flush)
            return
        self._outgoing.append((encode(message), fds))

    def _send_now(self, data: bytes, fds: tuple[int, ...]) -> bool:
        """Send what fits of ``data``; True when a rest is left in the buffer to flush."""
        try:
            sent = socket.send_fds(self.sock, [data], fds) if fds else self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            close_fds(fds)
            self.pool.died(self)
            return False
        if sent:
            close_fds(fds)  # they went with the first byte
            fds = ()
        if sent == len(data):
            return False
        self._outgoing.appendleft((data[sent:], fds))
        return True

    def _flush(self) -> None:
        while self._outgoing:
            data, fds = self._outgoing.popleft()
            if self._send_now(data, fds) or not self.alive:
                return
        self.pool.loop.remove_writer(self.sock.fileno())

    def readable(self) -> None:
        try:
            data = self.sock.recv(_READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.pool.died(self)
            return
        try:
            messages = self.decoder.feed(data)
        except Exception:  # our own worker sent garbage: a bug; it cannot be trusted now
            log.exception("request worker %d sent a malformed message", self.pid)
            self.process.kill()
            self.pool.died(self)
            return
        for message in messages:
            self.pool.dispatch(self, message)

    def close_socket(self) -> None:
        loop = self.pool.loop
        with contextlib.suppress(Exception):
            loop.remove_reader(self.sock.fileno())
            loop.remove_writer(self.sock.fileno())
        self.sock.close()
        while self._outgoing:
            close_fds(self._outgoing.popleft()[1])


class RequestProcesses:
    """The agent's pool of request worker processes (``runtime.request_processes``)."""

    def __init__(self, runtime: NativeRuntime, cache_dir: Path, count: int) -> None:
        self.runtime = runtime
        self.settings: RuntimeSettings = runtime.settings
        self.cache_dir = cache_dir
        self.count = count
        self.loop = asyncio.get_running_loop()
        self.workers: list[_Worker] = []
        self._numbers = itertools.count(1)
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        self.replaced = 0
        """Workers started again after one died."""

    # -- processes ---------------------------------------------------------------------------------
    async def ensure_started(self) -> None:
        """Start the missing workers (off the loop); returns when they are up (or failed)."""
        starting = self.start_soon()
        if starting is not None:
            await asyncio.shield(starting)

    def start_soon(self) -> asyncio.Task[None] | None:
        """Start the missing workers in a task (it spawns them off the loop), unless one
        already does; workers start at the first handler request, not with the agent, so a
        node that serves none pays nothing."""
        if self._closed:
            return None
        if self._starting is None or self._starting.done():
            if len(self.workers) >= self.count:
                return None
            self._starting = asyncio.create_task(self._start_missing(), name="request workers")
        return self._starting

    async def _start_missing(self) -> None:
        while not self._closed and len(self.workers) < self.count:
            try:
                worker = await asyncio.to_thread(self._spawn)
            except Exception:
                log.exception("could not start a request worker process")
                return
            if self._closed:
                worker.process.kill()
                worker.sock.close()
                return
            self.workers.append(worker)
            self.loop.add_reader(worker.sock.fileno(), worker.readable)

    def _spawn(self) -> _Worker:
        """Blocking: start one worker (fork+exec through subprocess, which is safe in a
        threaded agent) and wait until it has loaded wasmtime and answered."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for end in (ours, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "p2pkube.runtime.procs", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            theirs.close()
        try:
            ours.settimeout(self.settings.request_process_start_timeout)
            ours.sendall(encode(("init", self.settings, str(self.cache_dir))))
            reply = _first_message(ours)
            if reply != ("ready",):
                raise RuntimeError(f"unexpected first message {reply[0]!r}")
        except BaseException:
            process.kill()
            ours.close()
            raise
        ours.setblocking(False)
        return _Worker(self, process, ours)

    def died(self, worker: _Worker) -> None:
        """On the loop: ``worker`` is gone; fail its in-flight instances, start another."""
        if not worker.alive:
            return
        worker.alive = False
        worker.close_socket()
        if worker in self.workers:
            self.workers.remove(worker)
        lost = list(worker.instances.values())
        worker.instances.clear()
        if lost or not self._closed:
            log.warning("request worker %d died; %d requests fail", worker.pid, len(lost))
        for instance in lost:
            if instance.output is not None:
                instance.output.close()
            self.runtime.ended(
                instance,
                failed(
                    rt.KILLED,
                    f"its request worker process (pid {worker.pid}) died",
                    rt.EXIT_KILLED,
                ),
            )
        self.loop.run_in_executor(None, _reap, worker.process)
        if not self._closed:
            self.replaced += 1
            self.start_soon()

    # -- instances ---------------------------------------------------------------------------------
    def start(self, launch: rt.Launch) -> ProcInstance | None:
        """Run ``launch`` in the least-loaded worker; None when no worker is up."""
        alive = [worker for worker in self.workers if worker.alive]
        if not alive or self._closed:
            return None
        worker = min(alive, key=lambda w: len(w.instances))
        number = next(self._numbers)
        instance = ProcInstance(launch, worker, number)
        instance.output = output = self.runtime.instance_output(launch, instance.stop)
        deadline = launch.limits.deadline
        remaining = None if deadline is None else deadline - time.monotonic()
        worker.instances[number] = instance
        worker.send(("run", number, *_launch_fields(launch), remaining), output.take_write_fds())
        return instance

    def dispatch(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind, number = message[0], message[1]
        instance = worker.instances.get(number)
        if instance is None:
            return  # ended already (its worker was taken for dead)
        if kind == "end":
            del worker.instances[number]
            self.runtime.ended(instance, message[2])

    def pids(self) -> list[int]:
        """The worker processes' ids (a copy: safe to read from another thread)."""
        return [worker.pid for worker in list(self.workers)]

    def stats(self) -> list[dict[str, Any]]:
        return [
            {"pid": w.pid, "running": len(w.instances), "rssBytes": rss_bytes(w.pid)}
            for w in self.workers
        ]

    async def close(self) -> None:
        """Tell every worker to exit (after stopping its instances); kill what outlives the
        bound."""
        self._closed = True
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        workers = list(self.workers)
        for worker in workers:
            worker.send(("exit",))
        timeout = self.settings.stop_timeout
        await asyncio.gather(
            *(asyncio.to_thread(_reap, w.process, timeout) for w in workers),
            return_exceptions=True,
        )
        for worker in workers:
            self.died(worker)


def _launch_fields(launch: rt.Launch) -> tuple[Any, ...]:
    """What a worker needs of ``launch``, as plain values (cheaper to pickle than the
    dataclasses; the receiver and the deadline instant do not cross)."""
    limits = launch.limits
    return (
        launch.pod,
        launch.container,
        launch.image,
        str(launch.module_path),
        launch.argv,
        launch.env,
        str(launch.log_path),
        launch.stdin,
        launch.mounts,
        launch.stdout_buffer,
        limits.memory_bytes,
        limits.cpu_cores,
    )


def _launch_of(fields: tuple[Any, ...], deadline: float | None) -> rt.Launch:
    """The worker's Launch from :func:`_launch_fields` (its receiver is set afterwards)."""
    pod, container, image, module, argv, env, log_path, stdin, mounts, buffer, memory, cpu = fields
    return rt.Launch(
        pod=pod,
        container=container,
        image=image,
        module_path=Path(module),
        argv=argv,
        env=env,
        limits=rt.Limits(memory_bytes=memory, cpu_cores=cpu, deadline=deadline),
        log_path=Path(log_path),
        stdin=stdin,
        mounts=mounts,
        stdout_buffer=buffer,
    )


def _reap(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Blocking: wait for ``process`` to exit, killing it after ``timeout``."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(2.0)


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` (Linux), or None."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# -- the worker's side -----------------------------------------------------------------------------
_MAX_FDS: Final = 16
"""Descriptors one receive takes at most (Linux gives those of one send per receive: 2)."""


class _Server:
    """The worker process: runs what the agent sends, on threads of its own."""

    def __init__(self, sock: socket.socket, settings: RuntimeSettings, cache_dir: Path) -> None:
        from p2pkube.runtime.workers import WorkerThreads

        self.sock = sock
        self.settings = settings
        self.loader = _CachedLoader(cache_dir, settings)
        self.threads = WorkerThreads(
            max_idle=settings.idle_threads, idle_timeout=settings.idle_thread_timeout
        )
        self._send_lock = threading.Lock()
        self._lock = threading.Condition()
        self.controls: dict[int, sandbox.Control] = {}
        self._fds: deque[int] = deque()
        """Received descriptors not yet claimed by their ``run`` message (a run's pair
        arrives with its first byte, so never after the message itself)."""

    def send(self, message: tuple[Any, ...]) -> None:
        data = encode(message)
        with self._send_lock, contextlib.suppress(OSError):  # the agent is gone: we exit soon
            self.sock.sendall(data)

    def serve(self) -> None:
        decoder = Decoder()
        while True:
            try:
                data, fds, flags, _address = socket.recv_fds(self.sock, _READ_SIZE, _MAX_FDS)
            except OSError:
                data, fds, flags = b"", [], 0
            self._fds.extend(fds)
            if flags & socket.MSG_CTRUNC:
                log.error("descriptors from the agent were cut off; exiting")
                break
            if not data:
                break
            if not all(self._handle(message) for message in decoder.feed(data)):
                break
        self._stop_all()
        close_fds(tuple(self._fds))

    def _handle(self, message: tuple[Any, ...]) -> bool:
        kind = message[0]
        if kind == "run":
            outputs = (self._fds.popleft(), self._fds.popleft())
            self._run(message[1], message[2:-1], message[-1], outputs)
        elif kind == "stop":
            with self._lock:
                control = self.controls.get(message[1])
            if control is not None:
                control.stop(message[2], message[3])
        elif kind == "exit":
            return False
        return True

    def _run(
        self,
        number: int,
        fields: tuple[Any, ...],
        remaining: float | None,
        outputs: tuple[int, int],
    ) -> None:
        from p2pkube.runtime import sandbox

        settings = self.settings
        deadline = None if remaining is None else time.monotonic() + remaining
        launch = _launch_of(fields, deadline)
        control = sandbox.Control(launch.limits, cpu_period=settings.cpu_period)
        with self._lock:
            self.controls[number] = control
        try:
            self.threads.submit(
                lambda _thread: self._instance(number, control, launch, outputs),
                f"request {launch.pod}",
            )
        except RuntimeError:  # closed: the agent said exit
            close_fds(outputs)
            with self._lock:
                self.controls.pop(number, None)

    def _instance(
        self, number: int, control: sandbox.Control, launch: rt.Launch, outputs: tuple[int, int]
    ) -> None:
        from p2pkube.runtime.native import run_instance

        try:
            termination = run_instance(launch, control, self.loader.load, outputs, pod=False)
        finally:
            with self._lock:
                self.controls.pop(number, None)
                self._lock.notify_all()
        self.send(("end", number, termination))

    def _stop_all(self) -> None:
        """The agent is stopping (or gone): stop every instance, wait for them, bounded."""
        with self._lock:
            controls = list(self.controls.values())
        for control in controls:
            control.stop(rt.KILLED, "the agent is stopping")
        with self._lock:
            self._lock.wait_for(lambda: not self.controls, timeout=self.settings.stop_timeout)
        self.threads.close()
        self.loader.close()


class _CachedLoader:
    """The worker's engines: what the agent compiled, from the disk cache; the optimised
    code once the agent's background compile has written it (checked at every load that
    still uses the baseline's), else the baseline's. Compiles only when neither is on disk."""

    def __init__(self, cache_dir: Path, settings: RuntimeSettings) -> None:
        from p2pkube.runtime.engine import WasmEngine

        mode = settings.compiler
        self.engines = [
            WasmEngine(cache_dir, settings, "winch" if mode == "winch" else "cranelift")
        ]
        if mode == "tiered":
            self.engines.append(WasmEngine(cache_dir, settings, "winch"))

    def load(self, digest: str, module_path: Path) -> Any:
        from p2pkube.runtime.engine import load_or_fall_back

        for engine in self.engines:
            if engine.has(digest):
                return engine.load(digest, module_path)
        fallback = self.engines[0] if len(self.engines) > 1 else None
        return load_or_fall_back(self.engines[-1], fallback, digest, module_path)

    def close(self) -> None:
        for engine in self.engines:
            engine.close()


def _first_message(sock: socket.socket) -> tuple[Any, ...]:
    """Blocking (within the socket's timeout): the first message; EOFError if it closes."""
    decoder = Decoder()
    while True:
        data = sock.recv(65536)
        if not data:
            raise EOFError("closed before its first message")
        if messages := decoder.feed(data):
            return messages[0]


def worker_main(fd: int) -> None:
    """A worker process's main: read its settings, say ready, serve until told to exit or
    until the agent is gone (the socket closes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when its workers end
    logging.basicConfig(level=logging.WARNING, format="request worker: %(message)s")
    sock = socket.socket(fileno=fd)
    try:
        _init, settings, cache_dir = _first_message(sock)
    except (OSError, EOFError, ValueError):
        return  # the agent went away before it said anything
    server = _Server(sock, settings, Path(cache_dir))
    server.send(("ready",))
    server.serve()


if __name__ == "__main__":
    worker_main(int(sys.argv[1]))
