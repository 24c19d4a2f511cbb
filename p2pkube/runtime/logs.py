"""Container logs on disk: CRI-format lines with timestamps, rotated, bounded.

Each container instance writes one log file, ``<restart>.log``, in the format the kubelet and
containerd use (``<RFC 3339 nano time> <stream> <F|P> <text>``; ``P`` marks a part of a line
longer than ``max_line_bytes``, ``F`` the full line or its last part). When the file reaches
``max_bytes`` it is renamed to ``<restart>.log.1`` (older parts shift to ``.2`` ...) and only
``max_files`` files are kept, so a pod that prints gigabytes costs at most
``max_bytes * max_files`` of disk and a few line buffers of memory. The request instances of a
handler container (many at once) share the container's one file (:class:`LogFiles`): each
appends whole lines, and the file is rotated once.

The writer runs on the instance's worker thread (wasm output callbacks); readers run off the
event loop (``asyncio.to_thread``), and a follower (``logs -f``) waits for the writers'
notification (:class:`LogNotifier`) rather than polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
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


def prepare_log_dir(log_path: Path) -> None:
    """Create the directory of an instance's log (``<restart>.log``) and remove the files
    instances before the previous one left (their logs, rotated logs and stdin): ``logs
    --previous`` reads the one before, nothing reads older ones."""
    directory = log_path.parent
    directory.mkdir(parents=True, exist_ok=True)
    current = log_path.name.split(".", 1)[0]
    for old in directory.iterdir() if current.isdigit() else ():
        number = old.name.split(".", 1)[0]
        if number.isdigit() and int(number) < int(current) - 1:
            old.unlink(missing_ok=True)


def remove_pod_dirs_except(pods_dir: Path, keep: set[str]) -> None:
    """Remove every pod directory under ``pods_dir`` whose name is not in ``keep`` (what
    pods that ended while the agent was away left)."""
    if not pods_dir.is_dir():
        return
    for entry in pods_dir.iterdir():
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)


class LogFile:
    """One log file on disk, rotated at ``max_bytes`` and kept to ``max_files`` files.

    Shared by every writer that logs to the same path (the request instances of one handler
    container all log to its one file, :class:`LogFiles`), so the file is rotated once and no
    two writers append through different file objects. Records are written whole under the
    lock, so lines of concurrent writers never tear.
    """

    def __init__(self, path: Path, *, max_bytes: int, max_files: int) -> None:
        if max_files < 1 or max_bytes < 1024:
            raise ValueError("log limits too small")
        self.path = path
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.error: OSError | None = None
        self.bytes_written = 0
        self.users = 0
        """Writers using the file (:class:`LogFiles` closes it when the last one leaves)."""
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")
        self._size = self._file.tell()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def emit(self, stream: str, lines: list[tuple[bytes, bytes]]) -> None:
        """Append ``(tag, text)`` records of ``stream``; the caller holds :attr:`lock`."""
        if self.error is not None or self._file.closed:
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

    def close(self) -> None:
        """Close the file; the caller holds :attr:`lock`."""
        with contextlib.suppress(OSError):
            self._file.close()

    def _rotate(self) -> None:
        self._file.close()
        rotated(self.path, self.max_files - 1).unlink(missing_ok=True)
        for index in range(self.max_files - 2, -1, -1):
            source = rotated(self.path, index)
            if source.exists():
                os.replace(source, rotated(self.path, index + 1))
        self._file = open(self.path, "ab")
        self._size = 0


class LogFiles:
    """The open log files by path, each shared by the writers that use it (counted).

    A runtime keeps one: a container instance's writer takes its file here and gives it back
    when it closes; the file is closed when no writer uses it any more. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, LogFile] = {}

    def acquire(self, path: Path, *, max_bytes: int, max_files: int) -> LogFile:
        with self._lock:
            file = self._open.get(path)
            if file is None or file.closed:
                file = self._open[path] = LogFile(path, max_bytes=max_bytes, max_files=max_files)
            file.users += 1
            return file

    def release(self, file: LogFile) -> None:
        with self._lock:
            file.users -= 1
            if file.users > 0:
                return
            if self._open.get(file.path) is file:
                del self._open[file.path]
        with file.lock:
            file.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


class LogWriter:
    """Turns one instance's output bytes into timestamped lines in a rotated file.

    Thread-safe (stdout and stderr callbacks may interleave); never raises into the wasm
    callback that feeds it: a disk error stops logging to the file and is reported by
    :attr:`error`. Each writer keeps its own unterminated lines, so writers sharing a file
    (``files``) append whole lines only. With ``wrap_long_lines`` a line over
    ``max_line_bytes`` becomes several full lines rather than ``P`` parts, which another
    writer's line could come between (what writers sharing a file want).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_files: int,
        max_line_bytes: int,
        on_write: Callable[[], None] | None = None,
        files: LogFiles | None = None,
        wrap_long_lines: bool = False,
    ) -> None:
        if max_files < 1 or max_bytes < 1024 or max_line_bytes < 1:
            raise ValueError("log limits too small")
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.on_write = on_write
        self._files = files
        self._part_tag = b"F" if wrap_long_lines else b"P"
        self._partial = {stream: bytearray() for stream in STREAMS}
        self._closed = False
        if files is None:
            self._file = LogFile(path, max_bytes=max_bytes, max_files=max_files)
        else:
            self._file = files.acquire(path, max_bytes=max_bytes, max_files=max_files)

    @property
    def error(self) -> OSError | None:
        return self._file.error

    @property
    def bytes_written(self) -> int:
        """Bytes written to the file, by every writer sharing it."""
        return self._file.bytes_written

    def write(self, stream: str, data: bytes) -> None:
        """Record output ``data`` of ``stream``; complete lines are written at once."""
        lines: list[tuple[bytes, bytes]] = []
        with self._file.lock:
            if self._closed:
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
                    lines.append((self._part_tag, bytes(buffer[position : position + limit])))
                    position += limit
                else:
                    break
            del buffer[:position]
            if lines:
                self._file.emit(stream, lines)
        if lines and self.on_write is not None:
            self.on_write()

    def close(self) -> None:
        """Write what is left of unterminated lines; give the file back (or close it)."""
        with self._file.lock:
            if self._closed:
                return
            self._closed = True
            for stream, buffer in self._partial.items():
                if buffer:
                    self._file.emit(stream, [(b"F", bytes(buffer))])
                    buffer.clear()
            if self._files is None:
                self._file.close()
        if self._files is not None:
            self._files.release(self._file)
        if self.on_write is not None:
            self.on_write()


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


_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9})\d*)?(Z|[+-]\d{2}:\d{2})$"
)


def timestamp_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (``...Z`` or ``...+01:00``, with or
    without a fraction); ValueError naming the expected form otherwise."""
    match = _RFC3339.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time like 2026-12-01T14:33:16Z")
    whole, fraction, zone = match.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return int(moment.timestamp()) * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def read_log(path: Path, *, tail: int | None = None, since: str | None = None) -> list[LogLine]:
    """The lines of one instance's log, oldest first; blocking (call it in a thread).

    ``tail`` keeps the last N lines, ``since`` the lines written at or after an RFC 3339 time
    (compared as instants: ``...:08Z`` includes everything written during that second).
    """
    since_ns = None if since is None else timestamp_ns(since)
    joiner = _Joiner()
    lines: deque[LogLine] = deque(maxlen=tail if tail is not None and tail >= 0 else None)
    for file in log_files(path):
        try:
            with open(file, "rb") as fh:
                for record in fh:
                    line = joiner.feed(record)
                    if line is not None and (since_ns is None or _line_ns(line) >= since_ns):
                        lines.append(line)
        except FileNotFoundError:
            continue  # rotated away while we read
    return list(lines)


def _line_ns(line: LogLine) -> int:
    try:
        return timestamp_ns(line.time)
    except ValueError:  # a torn record's time: keep the line rather than lose it
        return 1 << 62


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
