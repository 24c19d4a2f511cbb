"""HTTP handler request instances in worker processes (``runtime.request_processes`` > 0).

Why: a handler pod runs one wasm instance per request. On the agent's threads every request
costs the agent's one GIL about 1.5 ms (the instance's ctypes calls into wasmtime and its
stdout and epoch callbacks, each taking the GIL back from the event loop), so the loop and
the instances slow each other down. A worker process has its own GIL, its own wasmtime engines
and its own threads (one per running instance, as in the agent: a long streaming response
blocks no other request).

The worker loads what the agent compiled from the disk cache (``runtime/compiled``, the same
engine fingerprints); it compiles only a module whose cache entry is missing.

**IPC**: one Unix socket pair per worker, length-prefixed pickles (both ends are this code).
The agent sends ``run`` (the Launch's fields without its receiver, the deadline as seconds
left), ``stop`` and ``credit``; the worker sends ``out`` (stdout writes, in order), ``err``
(stderr after the instance's output budget), ``wait`` (a writer waits for credit) and ``end``
(the Termination). A request that fits its window costs three messages: run, out, end. The
agent reads with ``loop.add_reader`` (never a thread, never a wait on the loop); writes that
do not fit the socket wait in a buffer sent by ``add_writer``.

**Logs**: stderr comes back to the agent and goes through the agent's shared
:class:`~p2pkube.runtime.logs.LogWriter` of the container (one rotated file per path, whole
lines), written on the event loop: a few hundred bytes appended to the page cache, and only
for requests that write to stderr.

**Backpressure**: a credit window per stream. The worker sends at most
``services.response_buffer_bytes`` stdout bytes that the agent's reader has not consumed
(:meth:`~p2pkube.runtime.interface.Instance.stdout_read` gives them back: per quarter window,
or at once to a writer that said it waits); beyond
that the instance's thread in the worker waits (until credit comes, a stop, or its deadline),
as a native writer thread waits today. So the agent holds at most the window per stream, and
the socket at most what is in flight.

**Failures**: a worker that dies fails only its in-flight instances (``Killed``, so a
request gets 502 with the reason) and is replaced; when no worker is up, requests run on the
agent's threads. On close the workers are told to exit, waited for (bounded), then killed.

Native only: the browser never imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from p2pkube.runtime import interface as rt
from p2pkube.runtime.base import BaseInstance, failed
from p2pkube.runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    from p2pkube.runtime import logs, sandbox
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
class ProcInstance(BaseInstance):
    """A request instance running in a worker process."""

    def __init__(self, launch: rt.Launch, worker: _Worker, number: int, window: int) -> None:
        super().__init__(launch)
        self.worker = worker
        self.number = number
        self.window = window
        self.delivered = 0  # stdout bytes handed to the receiver
        self.consumed = 0  # ... that it consumed
        self.acked = 0  # ... that the worker was told of
        self.waiting = False  # the writer waits for credit (the worker said so)
        self.log: logs.LogWriter | None = None

    def stop(self, reason: str = rt.KILLED, message: str = "") -> None:
        if not self.done.done():
            self.worker.send(("stop", self.number, reason, message or "stopped by the agent"))

    def stdout_read(self, size: int) -> None:
        self.consumed += size
        self._credit()

    def writer_waits(self) -> None:
        """The worker said this instance's writer waits for credit."""
        self.waiting = True
        self._credit()

    def _credit(self) -> None:
        """Give the worker back what the reader consumed: a credit per quarter window, or
        all of it once the reader has caught up with a writer that waits. Most responses
        fit the window whole and never cost a credit message."""
        pending = self.consumed - self.acked
        if not pending or self.done.done():
            return
        if pending >= self.window // 4 or (self.waiting and self.consumed >= self.delivered):
            self.acked = self.consumed
            self.waiting = False
            self.worker.send(("credit", self.number, pending))


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
        self._outgoing = bytearray()

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: tuple[Any, ...]) -> None:
        """Send now, or buffer what does not fit and flush it when the socket is writable."""
        if not self.alive:
            return
        data = encode(message)
        if not self._outgoing:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.pool.died(self)
                return
            data = data[sent:]
            if not data:
                return
            self.pool.loop.add_writer(self.sock.fileno(), self._flush)
        self._outgoing += data

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self._outgoing)
        except BlockingIOError:
            return
        except OSError:
            self.pool.died(self)
            return
        del self._outgoing[:sent]
        if not self._outgoing:
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
            self._end(
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
        window = launch.stdout_buffer
        instance = ProcInstance(launch, worker, number, window)
        deadline = launch.limits.deadline
        remaining = None if deadline is None else deadline - time.monotonic()
        worker.instances[number] = instance
        worker.send(("run", number, *_launch_fields(launch), remaining))
        return instance

    def dispatch(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind, number = message[0], message[1]
        instance = worker.instances.get(number)
        if instance is None:
            return  # ended already (its worker was taken for dead, or a late credit)
        if kind == "out":
            data = message[2]
            instance.delivered += len(data)
            receiver = instance.launch.stdout
            if receiver is not None:
                receiver(data)
        elif kind == "err":
            if instance.log is None:
                instance.log = self.runtime._log_writer(instance.launch)
            instance.log.write("stderr", message[2])
        elif kind == "wait":
            instance.writer_waits()
        elif kind == "end":
            del worker.instances[number]
            self._end(instance, message[2])

    def _end(self, instance: ProcInstance, termination: rt.Termination) -> None:
        if instance.log is not None:
            instance.log.close()
        self.runtime._ended(instance, termination)

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
class _Stream:
    """One instance in the worker: its Control and the credit window of its stdout."""

    def __init__(self, server: _Server, number: int, control: sandbox.Control, window: int):
        self.server = server
        self.number = number
        self.control = control
        self.window = max(1, window)
        self._credit = threading.Condition()
        self._unacked = 0

    def write(self, data: bytes) -> None:
        """``Launch.stdout`` on the instance's thread: send, in pieces that fit the window,
        each once the agent's reader has left room for it."""
        view = memoryview(data)
        while view:
            piece = view[: self.window]
            if not self._wait_room(len(piece)):
                return  # stopped (a stop, the deadline): the rest is dropped
            self.server.send(("out", self.number, bytes(piece)))
            view = view[len(piece) :]

    def _wait_room(self, size: int) -> bool:
        control = self.control
        with self._credit:
            if self._unacked + size > self.window and not control.must_stop():
                # Told once per wait: the agent credits a waiting writer as soon as its
                # reader has caught up (else only per quarter window: few messages).
                self.server.send(("wait", self.number))
            while self._unacked + size > self.window:
                if control.must_stop():
                    return False
                deadline = control.limits.deadline
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._credit.wait(wait)
            if control.must_stop():
                return False
            self._unacked += size
            return True

    def credit(self, size: int) -> None:
        with self._credit:
            self._unacked -= size
            self._credit.notify_all()

    def stop(self, reason: str, message: str) -> None:
        self.control.stop(reason, message)
        with self._credit:
            self._credit.notify_all()


class _RemoteLog:
    """stderr of one instance, sent to the agent's log writer (``sandbox.LogSink``)."""

    def __init__(self, server: _Server, number: int) -> None:
        self.server = server
        self.number = number

    def write(self, stream: str, data: bytes) -> None:
        self.server.send(("err", self.number, bytes(data)))

    def close(self) -> None:
        pass


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
        self.streams: dict[int, _Stream] = {}

    def send(self, message: tuple[Any, ...]) -> None:
        data = encode(message)
        with self._send_lock, contextlib.suppress(OSError):  # the agent is gone: we exit soon
            self.sock.sendall(data)

    def serve(self) -> None:
        decoder = Decoder()
        while True:
            try:
                data = self.sock.recv(_READ_SIZE)
            except OSError:
                data = b""
            if not data:
                break
            if not all(self._handle(message) for message in decoder.feed(data)):
                break
        self._stop_all()

    def _handle(self, message: tuple[Any, ...]) -> bool:
        kind = message[0]
        if kind == "run":
            self._run(message[1], message[2:-1], message[-1])
        elif kind in ("stop", "credit"):
            with self._lock:
                stream = self.streams.get(message[1])
            if stream is not None and kind == "stop":
                stream.stop(message[2], message[3])
            elif stream is not None:
                stream.credit(message[2])
        elif kind == "exit":
            return False
        return True

    def _run(self, number: int, fields: tuple[Any, ...], remaining: float | None) -> None:
        from p2pkube.runtime import sandbox

        settings = self.settings
        deadline = None if remaining is None else time.monotonic() + remaining
        launch = _launch_of(fields, deadline)
        control = sandbox.Control(
            launch.limits,
            cpu_period=settings.cpu_period,
            rate=settings.log_rate_bytes,
            burst=settings.log_burst_bytes,
        )
        stream = _Stream(self, number, control, launch.stdout_buffer)
        launch = dataclasses.replace(launch, stdout=stream.write)
        with self._lock:
            self.streams[number] = stream
        self.threads.submit(lambda _thread: self._instance(stream, launch), f"request {launch.pod}")

    def _instance(self, stream: _Stream, launch: rt.Launch) -> None:
        from p2pkube.runtime.native import run_instance

        try:
            termination = run_instance(
                launch,
                stream.control,
                self.loader.load,
                lambda _launch: _RemoteLog(self, stream.number),
            )
        finally:
            with self._lock:
                self.streams.pop(stream.number, None)
                self._lock.notify_all()
        self.send(("end", stream.number, termination))

    def _stop_all(self) -> None:
        """The agent is stopping (or gone): stop every instance, wait for them, bounded."""
        with self._lock:
            streams = list(self.streams.values())
        for stream in streams:
            stream.stop(rt.KILLED, "the agent is stopping")
        with self._lock:
            self._lock.wait_for(lambda: not self.streams, timeout=self.settings.stop_timeout)
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
        for engine in self.engines:
            if engine.has(digest):
                return engine.load(digest, module_path)
        return self.engines[-1].load(digest, module_path)

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
