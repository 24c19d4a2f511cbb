"""Start ``python -m p2pkube ...`` processes by forking one that has imported p2pkube already.

Why: the test suite starts about 250 agents and runs several hundred CLI commands, each a new
interpreter that spends most of its CPU importing (an agent about 1.9 CPU-seconds: aiohttp,
aiortc, pycrdt, wasmtime, pydantic...; a CLI command about 0.3). The suite is CPU-bound on a
2-core machine, so those imports were a large share of its time. A zygote (Android's name for
the same trick) imports everything once; each start is then a fork of it, which takes
milliseconds and shares the imported modules copy-on-write.

What a started process is: a real, separate process running exactly what ``python -m
p2pkube ARGS`` runs (``p2pkube.cli.main.main(ARGS)``), with its own environment, working
directory, standard streams and pid, killed and signalled like any other. What differs from a
fresh interpreter: the modules were imported before the environment was set, so nothing may
read the environment at import time (p2pkube does not), and the interpreter's own start-up is
not exercised. The tests that are about a fresh start (the demo, the compose topology, the
wheel) start real interpreters; docs/contributing.md says which path each takes.

Protocol, over a Unix socket (one connection per started process): the client sends the length
of its JSON request (4 bytes, big-endian) with the child's stdin/stdout/stderr as SCM_RIGHTS
file descriptors, then the request (argv after ``-m p2pkube``, env, cwd; an argument can be
megabytes); the zygote forks, answers ``{"pid": N}``, and when the child has
exited sends ``{"returncode": N}`` (negative: killed by that signal) and closes.

The zygote is single-threaded (forking a threaded process is unsafe) and reaps its children
through pidfds; it exits when its parent's socket connection to it closes or on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

PRELOAD = (
    "p2pkube.agent",
    "p2pkube.cli.main",
    "p2pkube.cli.daemons",
    "p2pkube.cli.get",
    "p2pkube.cli.describe",
    "p2pkube.cli.workloads",
    "p2pkube.cli.create",
    "p2pkube.cli.delete",
    "p2pkube.cli.logs",
    "p2pkube.cli.rollout",
    "p2pkube.cli.nodes",
    "p2pkube.api.kube.face",
    "signaling.server",
)
"""What the zygote imports before it forks: the agent, every command and the signaling server."""

MAX_REQUEST_BYTES = 256 << 20
START_TIMEOUT = 30.0
"""Longest a start waits for the zygote's answer (it forks at once; this only bounds a hang)."""


# --- the zygote process ----------------------------------------------------------------------


def _child(request: dict[str, Any], fds: list[int], inherited: list[int]) -> None:
    """In the forked child: become ``python -m p2pkube ARGV`` and never return.
    ``inherited``: the zygote's own descriptors (its socket, its siblings' pidfds and
    connections), closed first so a child holds nothing of the others'."""
    code = 1
    try:
        for fd in inherited:
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import p2pkube.__main__ as entry  # what `python -m p2pkube` runs, as argv[0] says
        from p2pkube.cli.main import main

        sys.argv = [entry.__file__, *request["argv"]]

        try:
            main(request["argv"])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = 130
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise ValueError(f"the request ended after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def _receive_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    conn.settimeout(START_TIMEOUT)
    header, fds, _flags, _addr = socket.recv_fds(conn, 4, 3)
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"{len(fds)} file descriptors instead of 3")
    try:
        header += _read_exactly(conn, 4 - len(header))
        (size,) = struct.unpack("!I", header)
        if size > MAX_REQUEST_BYTES:
            raise ValueError(f"a request of {size} bytes")
        request = json.loads(_read_exactly(conn, size))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    conn.settimeout(None)
    return request, fds


def _status_code(status: int) -> int:
    """A wait status as Popen.returncode says it (negative: the killing signal)."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def serve(path: str) -> None:
    """Run the zygote on the Unix socket ``path`` until its parent goes away."""
    for name in PRELOAD:
        __import__(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    # The parent holds our stdin open; EOF there means it is gone (even killed), so we go too.
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "parent")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    running = True
    while running:
        for key, _ in selector.select():
            what = key.data
            if what == "parent":
                running = False
            elif what == "accept":
                conn, _ = listener.accept()
                try:
                    request, fds = _receive_request(conn)
                except (OSError, ValueError) as exc:
                    print(f"zygote: a bad request: {exc}", file=sys.stderr, flush=True)
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    inherited = [conn.fileno(), listener.fileno()]
                    for key in selector.get_map().values():
                        if isinstance(key.data, tuple):
                            inherited += [key.fd, key.data[1].fileno()]
                    selector.close()
                    _child(request, fds, inherited)
                for fd in fds:
                    os.close(fd)
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                pidfd = os.pidfd_open(pid)
                selector.register(pidfd, selectors.EVENT_READ, (pid, conn))
            else:
                pid, conn = what
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"returncode": _status_code(status)}).encode() + b"\n")
                conn.close()


# --- the client side -------------------------------------------------------------------------


class ZygoteProcess:
    """A started process, with the part of :class:`subprocess.Popen`'s interface the test
    clusters use (pid, poll, wait, send_signal, terminate, kill, returncode)."""

    def __init__(self, conn: socket.socket, pid: int, args: Sequence[str]) -> None:
        self._conn = conn
        self._buffer = b""
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None

    def _read_status(self, timeout: float | None) -> None:
        if self.returncode is not None:
            return
        self._conn.settimeout(timeout)
        try:
            while b"\n" not in self._buffer:
                chunk = self._conn.recv(4096)
                if not chunk:  # the zygote went away: the child cannot be told apart
                    self.returncode = -signal.SIGKILL
                    return
                self._buffer += chunk
        except (TimeoutError, BlockingIOError):
            return
        self.returncode = int(json.loads(self._buffer.split(b"\n", 1)[0])["returncode"])
        self._conn.close()

    def poll(self) -> int | None:
        self._read_status(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._read_status(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The client: starts the zygote process on first use and forks processes from it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._path = ""

    def _ensure(self) -> str:
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return self._path
            self._dir = tempfile.TemporaryDirectory(prefix="p2pkube-zygote-")
            self._path = str(Path(self._dir.name) / "zygote.sock")
            self._process = subprocess.Popen(
                [sys.executable, "-m", "harness.zygote", self._path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                cwd=Path(__file__).resolve().parent.parent,
            )
            assert self._process.stdout is not None
            line = self._process.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"the zygote did not start: {line!r}")
            return self._path

    def close(self) -> None:
        with self._lock:
            if self._process is not None:
                with contextlib.suppress(OSError):
                    assert self._process.stdin is not None
                    self._process.stdin.close()
                try:
                    self._process.wait(10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(10)
                self._process = None
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        stdin: int,
        stdout: int,
        stderr: int,
        cwd: str | None = None,
    ) -> ZygoteProcess:
        """Fork ``python -m p2pkube ARGV`` with these standard streams (file descriptors)."""
        path = self._ensure()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(START_TIMEOUT)
        conn.connect(path)
        request = {"argv": list(argv), "env": dict(env), "cwd": cwd or os.getcwd()}
        body = json.dumps(request).encode()
        socket.send_fds(conn, [struct.pack("!I", len(body))], [stdin, stdout, stderr])
        conn.sendall(body)
        answer = b""
        while b"\n" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                raise RuntimeError("the zygote closed the connection before forking")
            answer += chunk
        line, rest = answer.split(b"\n", 1)
        process = ZygoteProcess(conn, int(json.loads(line)["pid"]), argv)
        process._buffer = rest
        return process

    def popen(
        self, args: Sequence[str], *, env: Mapping[str, str], stdout: IO[Any], stderr: int | IO[Any]
    ) -> ZygoteProcess:
        """As ``subprocess.Popen(args, stdout=FILE, stderr=FILE|STDOUT)`` for ``args`` of the form
        ``[sys.executable, "-m", "p2pkube", ...]``; stdin is /dev/null."""
        out = stdout.fileno()
        err = out if isinstance(stderr, int) else stderr.fileno()
        if isinstance(stderr, int) and stderr != subprocess.STDOUT:
            raise ValueError("stderr: a file or subprocess.STDOUT")
        argv = _p2pkube_argv(args)
        with open(os.devnull, "rb") as null:
            return self.start(argv, env=env, stdin=null.fileno(), stdout=out, stderr=err)

    def run(
        self, args: Sequence[str], *, env: Mapping[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """As ``subprocess.run(args, capture_output=True, text=True, timeout=...)``."""
        argv = _p2pkube_argv(args)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        with open(os.devnull, "rb") as null:
            try:
                process = self.start(argv, env=env, stdin=null.fileno(), stdout=out_w, stderr=err_w)
            finally:
                os.close(out_w)
                os.close(err_w)
        deadline = time.monotonic() + timeout
        chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
        with selectors.DefaultSelector() as selector:
            for fd in chunks:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    process.kill()
                    process.wait(10)
                    for fd in chunks:
                        os.close(fd)
                    raise subprocess.TimeoutExpired(list(args), timeout)
                for key, _ in selector.select(left):
                    data = os.read(key.fd, 65536)
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        selector.unregister(key.fd)
                        os.close(key.fd)
        code = process.wait(max(1.0, deadline - time.monotonic()))
        return subprocess.CompletedProcess(
            list(args),
            code,
            b"".join(chunks[out_r]).decode(errors="replace"),
            b"".join(chunks[err_r]).decode(errors="replace"),
        )


def _p2pkube_argv(args: Sequence[str]) -> list[str]:
    if list(args[:3]) != [sys.executable, "-m", "p2pkube"]:
        raise ValueError(f"the zygote starts `python -m p2pkube ...` only, not {list(args)!r}")
    return list(args[3:])


if __name__ == "__main__":
    serve(sys.argv[1])
