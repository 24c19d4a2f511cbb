"""Container logs on disk: CRI-format lines with timestamps, rotated, bounded.

Each container instance writes one log file, ``<restart>.log``, in the format the kubelet and
containerd use (``<RFC 3339 nano time> <stream> <F|P> <text>``; ``P`` marks a part of a line
longer than ``max_line_bytes``, ``F`` the full line or its last part). When the file reaches
``max_bytes`` it is renamed to ``<restart>.log.1`` (older parts shift to ``.2`` ...) and only
``max_files`` files are kept, so a pod that prints gigabytes costs at most
``max_bytes * max_files`` of disk and a few line buffers of memory.

The writer runs on the instance's worker thread (wasm output callbacks); readers run off the
event loop (``asyncio.to_thread``) and :func:`follow` wakes up on a notification from the
writer rather than polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from p2pkube.runtime.interface import LogLine

STREAMS = ("stdout", "stderr")


def rfc3339_nano(ns: int | None = None) -> str:
    """``2026-12-01T14:33:16.123456789Z`` for ``ns`` nanoseconds since the epoch (now)."""
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def rotated(path: Path, index: int) -> Path:
    """The ``index``-th older file of ``path`` (0 is ``path`` itself)."""
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


def log_files(path: Path) -> list[Path]:
    """The files of one instance's log that exist, oldest first."""
    files = []
    index = 0
    while True:
        candidate = rotated(path, index)
        if not candidate.exists():
            if index > 0:
                break
        else:
            files.append(candidate)
        index += 1
    return list(reversed(files))


class LogWriter:
    """Turns an instance's output bytes into timestamped lines in a rotated file.

    Thread-safe (stdout and stderr callbacks may interleave); never raises into the wasm
    callback that feeds it: a disk error stops logging for this instance and is reported by
    :attr:`error`.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_files: int,
        max_line_bytes: int,
        on_write: Callable[[], None] | None = None,
    ) -> None:
        if max_files < 1 or max_bytes < 1024 or max_line_bytes < 1:
            raise ValueError("log limits too small")
        self.path = path
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.max_line_bytes = max_line_bytes
        self.on_write = on_write
        self.error: OSError | None = None
        self.bytes_written = 0
        self._lock = threading.Lock()
        self._partial = {stream: bytearray() for stream in STREAMS}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")
        self._size = self._file.tell()

    def write(self, stream: str, data: bytes) -> None:
        """Record output ``data`` of ``stream``; complete lines are written at once."""
        lines: list[tuple[bytes, bytes]] = []
        with self._lock:
            if self._file.closed:
                return
            buffer = self._partial[stream]
            buffer += data
            limit = self.max_line_bytes
            position = 0  # consumed so far; the buffer is trimmed once, not per line
            while True:
                newline = buffer.find(b"\n", position, position + limit + 1)
                if newline >= 0:
                    lines.append((b"F", bytes(buffer[position:newline])))
                    position = newline + 1
                elif len(buffer) - position > limit:
                    lines.append((b"P", bytes(buffer[position : position + limit])))
                    position += limit
                else:
                    break
            del buffer[:position]
            if lines:
                self._emit(stream, lines)
        if lines and self.on_write is not None:
            self.on_write()

    def close(self) -> None:
        """Write what is left of unterminated lines and close the file."""
        with self._lock:
            if self._file.closed:
                return
            for stream, buffer in self._partial.items():
                if buffer:
                    self._emit(stream, [(b"F", bytes(buffer))])
                    buffer.clear()
            with contextlib.suppress(OSError):
                self._file.close()
        if self.on_write is not None:
            self.on_write()

    def _emit(self, stream: str, lines: list[tuple[bytes, bytes]]) -> None:
        if self.error is not None:
            return
        prefix = f" {stream} ".encode()
        try:
            for tag, text in lines:
                record = rfc3339_nano().encode() + prefix + tag + b" " + text + b"\n"
                if self._size + len(record) > self.max_bytes and self._size > 0:
                    self._rotate()
                self._file.write(record)
                self._size += len(record)
                self.bytes_written += len(record)
            self._file.flush()
        except OSError as exc:
            self.error = exc

    def _rotate(self) -> None:
        self._file.close()
        rotated(self.path, self.max_files - 1).unlink(missing_ok=True)
        for index in range(self.max_files - 2, -1, -1):
            source = rotated(self.path, index)
            if source.exists():
                os.replace(source, rotated(self.path, index + 1))
        self._file = open(self.path, "ab")
        self._size = 0


def parse_record(record: bytes) -> tuple[str, str, bool, str] | None:
    """(time, stream, is_full, text) of one CRI record, None if it is not one (a torn write)."""
    parts = record.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[1].decode(errors="replace") not in STREAMS:
        return None
    text = parts[3] if len(parts) == 4 else b""
    return (
        parts[0].decode(errors="replace"),
        parts[1].decode(),
        parts[2] == b"F",
        text.decode(errors="replace"),
    )


class _Joiner:
    """Joins partial records back into lines, per stream."""

    def __init__(self) -> None:
        self._parts: dict[str, tuple[str, list[str]]] = {}

    def feed(self, record: bytes) -> LogLine | None:
        parsed = parse_record(record)
        if parsed is None:
            return None
        when, stream, full, text = parsed
        started, parts = self._parts.pop(stream, (when, []))
        parts.append(text)
        if not full:
            self._parts[stream] = (started, parts)
            return None
        return LogLine(time=started, stream=stream, text="".join(parts))


def read_log(path: Path, *, tail: int | None = None, since: str | None = None) -> list[LogLine]:
    """The lines of one instance's log, oldest first; blocking (call it in a thread).

    ``tail`` keeps the last N lines, ``since`` the lines written at or after an RFC 3339 time
    (string comparison works: every timestamp has the same UTC format).
    """
    joiner = _Joiner()
    lines: deque[LogLine] = deque(maxlen=tail if tail is not None and tail >= 0 else None)
    for file in log_files(path):
        try:
            with open(file, "rb") as fh:
                for record in fh:
                    line = joiner.feed(record)
                    if line is not None and (since is None or line.time >= since):
                        lines.append(line)
        except FileNotFoundError:
            continue  # rotated away while we read
    return list(lines)


class LogNotifier:
    """Wakes followers on the event loop when a writer thread wrote something.

    The writer calls :meth:`notify` from its thread; it schedules at most one wake-up at a
    time, so a flood of output costs the loop one callback per wake-up, not one per line.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: set[asyncio.Event] = set()
        self._scheduled = threading.Event()

    def notify(self) -> None:
        if self._scheduled.is_set():
            return
        self._scheduled.set()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is following
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._scheduled.clear()
        for event in self._waiters:
            event.set()

    @contextlib.contextmanager
    def waiter(self) -> Iterator[asyncio.Event]:
        """An event set on every notification while the ``with`` block lasts."""
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            yield event
        finally:
            self._waiters.discard(event)


async def follow(
    path: Path,
    notifier: LogNotifier,
    *,
    seconds: float,
    until: Callable[[], bool] = lambda: False,
    poll: float = 1.0,
) -> AsyncIterator[LogLine]:
    """Lines appended to ``path`` from now on, for ``seconds`` seconds or until ``until()``
    is true (the writer has finished) and everything it wrote has been read.

    Wakes on the writer's notification; ``poll`` is only a safety net (a notification lost
    to a closed loop, a log written by another process). Rotation is followed: when the file
    is replaced, the rest of the old one is read first (it is now ``.1``), then the new one.
    """
    deadline = asyncio.get_running_loop().time() + seconds
    joiner = _Joiner()
    position = await asyncio.to_thread(_end_of, path)
    with notifier.waiter() as event:
        while True:
            finished = until()  # checked before reading: what it wrote before ending is read
            records, position = await asyncio.to_thread(_read_from, path, position)
            for record in records:
                line = joiner.feed(record)
                if line is not None:
                    yield line
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or finished:
                return
            event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(poll, remaining)):
                    await event.wait()


_Position = tuple[int, int]
"""(inode, offset) in a log file."""


def _end_of(path: Path) -> _Position:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return (0, 0)
    return (stat.st_ino, stat.st_size)


def _read_from(path: Path, position: _Position) -> tuple[list[bytes], _Position]:
    """Complete records after ``position``; follows one rotation."""
    inode, offset = position
    records: list[bytes] = []
    try:
        stat = path.stat()
    except FileNotFoundError:
        return records, position
    if inode and stat.st_ino != inode:
        previous = rotated(path, 1)
        with contextlib.suppress(FileNotFoundError):
            if previous.stat().st_ino == inode:
                records += _records(previous, offset)[0]
        offset = 0
    more, offset = _records(path, offset)
    return records + more, (stat.st_ino, offset)


def _records(file: Path, offset: int) -> tuple[list[bytes], int]:
    with open(file, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1  # a record still being written stays for next time
    return data[:end].splitlines(keepends=True), offset + end
