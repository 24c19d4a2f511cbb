"""Crash-safe persistence of the state document: snapshot + append-only update log.

Layout of `<data_dir>/state/` (all integers little-endian)::

    snapshot.bin   MAGIC "P2PKSNP2" | u64 generation number | u64 generation creator
                   | u64 clock wall ms | u64 clock counter | u64 length | u32 crc32
                   | whole-document update            (crc32 covers the four u64
                                                        meta fields + length + update)
    updates.log    header-record (record | clock-record)*
                   record        := u32 length | u32 crc32 | update bytes
                   header-record := a record whose bytes are
                                    "P2PKLOG2" | u64 generation number | u64 creator
                   clock-record  := a record whose 24 bytes are
                                    "P2PKCLK2" | u64 clock wall ms | u64 clock counter

The snapshot names the document generation and the hybrid-clock state it was
taken at; the log's first record names the generation its updates belong to, and
every batch written to the log ends with a clock record, so a reopen restores the
clock as of the last durable write (stamps never go backwards across a restart,
even when the wall clock did). A clock record cannot be mistaken for a Yjs update:
an update starting with byte 0x50 ("P") declares 80 clients, which needs far more
than 24 bytes.
A log of another generation than the snapshot's is stale (see below) and is
discarded at load.

Why this shape:

* Every Yjs update is idempotent and commutative *within one document*, so
  replaying the log on top of a snapshot that already contains some of its
  records is harmless. That makes
  compaction simple: write the new snapshot to a temp file, fsync it, rename it
  over the old one, fsync the directory, and only then empty the log. A crash
  between any two of those steps loads either (old snapshot + full log) or
  (new snapshot + a log it already contains).
* A generation switch is a snapshot of the *new* document: the same steps, then
  the log is reset with a header naming the new generation. A crash before the
  rename reopens the old generation complete (old snapshot + its log); after the
  rename, the new snapshot + a log whose header names the old generation, which
  is discarded (the new document already holds everything it carried over).
  Replaying old-generation updates into the new document would be wrong: they
  are updates of a different Yjs document.
* A crash can tear the last log record. Each record carries its length and a
  crc32; a record that is short, zero length (a file extended but never written
  reads back as zeros), oversize or fails its crc is *bad*. Bad bytes with no
  valid record after them are a torn tail: dropped quietly and the file truncated
  there (only unacknowledged data can be in it, because an append is acknowledged
  after its fsync). Bad bytes *followed by* valid records are corruption (a flipped
  bit, a lost sector): loading logs an ERROR naming the file and the offset, skips
  to the next offset where a valid record frames (first where the bad record's
  length says the next one starts, else byte by byte) and keeps every record from
  there on. What the damaged bytes held comes back from peers at the first sync
  (our state vector lacks it); updates after them that depend on it wait in Yjs
  until then. The damaged bytes stay in the file until the next log compaction.
* Group commit: `append` only buffers; one writer task writes and fsyncs
  whatever accumulated in a worker thread (never on the event loop), then wakes
  every `flush()` waiting for a sequence number it covered. Many concurrent
  puts share one fsync.
* The buffer is bounded. When it would overflow, or after a failed write (the
  log may now have a torn tail that would hide later records), the buffered
  records are dropped and the next write is a snapshot: the in-memory document
  already contains them, so nothing is lost and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from p2pkube.fsutil import fsync_dir
from p2pkube.ticker import timeout_on_beat

from .settings import PersistSettings
from .sync import GENESIS, Generation

__all__ = [
    "LoadedState",
    "PersistSettings",
    "PersistStats",
    "PersistenceError",
    "Persister",
    "Snapshot",
    "StateFiles",
]

log = logging.getLogger(__name__)

SNAPSHOT_NAME: Final = "snapshot.bin"
SNAPSHOT_TMP_NAME: Final = "snapshot.bin.tmp"
LOG_NAME: Final = "updates.log"
_SNAP_MAGIC: Final = b"P2PKSNP2"
_OLD_SNAP_MAGIC: Final = b"P2PKSNP1"
_SNAP_HEADER: Final = struct.Struct("<8sQQQQQI")
_SNAP_META: Final = struct.Struct("<QQQQQ")
"""The part of the snapshot header the crc covers (with the document)."""
_REC_HEADER: Final = struct.Struct("<II")
_LOG_MAGIC: Final = b"P2PKLOG2"
_LOG_HEADER: Final = struct.Struct("<8sQQ")
_CLOCK_MAGIC: Final = b"P2PKCLK2"
_CLOCK_RECORD: Final = struct.Struct("<8sQQ")


class PersistenceError(RuntimeError):
    """The state files are unusable (corrupt snapshot) or the persister is closed."""


@dataclass(slots=True)
class PersistStats:
    """Counters of the persistence layer."""

    bytes_persisted: int = 0
    records_persisted: int = 0
    disk_writes: int = 0
    """fsynced batches + snapshots: with group commit, far fewer than records."""
    snapshots_written: int = 0
    write_errors: int = 0
    buffer_overflows: int = 0
    log_bytes: int = 0
    log_records: int = 0
    truncated_tail_bytes: int = 0
    corrupt_log_bytes: int = 0
    """Damaged bytes found in the middle of the log at load (valid records followed)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A whole document with the generation it belongs to and the clock state."""

    generation: Generation
    clock: tuple[int, int]
    """Hybrid clock (wall ms, counter) when it was taken: restored at open so that
    stamps never go backwards across a restart, even if the wall clock did."""
    state: bytes


@dataclass(slots=True)
class LoadedState:
    """What was on disk: the snapshot (if any) and the log records after it."""

    snapshot: bytes | None = None
    generation: Generation = GENESIS
    clock: tuple[int, int] = (0, 0)
    updates: list[bytes] = field(default_factory=list)
    log_bytes: int = 0
    truncated_tail_bytes: int = 0
    corrupt_ranges: list[tuple[int, int]] = field(default_factory=list)
    """(offset, length) of each damaged stretch of the log that valid records followed."""
    stale_log_bytes: int = 0
    """Bytes of a log of another generation discarded at load (a crash mid-switch)."""


def clock_record(clock: tuple[int, int]) -> bytes:
    """The log record saving the hybrid-clock state (wall ms, counter)."""
    return _CLOCK_RECORD.pack(_CLOCK_MAGIC, *clock)


def _parse_clock_record(record: bytes) -> tuple[int, int] | None:
    if len(record) != _CLOCK_RECORD.size or not record.startswith(_CLOCK_MAGIC):
        return None
    _, wall, counter = _CLOCK_RECORD.unpack(record)
    return wall, counter


def _parse_log_header(record: bytes) -> Generation | None:
    """The generation named by a log header record, or None if it is not one."""
    if len(record) != _LOG_HEADER.size:
        return None
    magic, number, creator = _LOG_HEADER.unpack(record)
    if magic != _LOG_MAGIC or (number == 0) != (creator == 0):
        return None
    return Generation(number, creator)


def _sync_data(fd: int) -> None:
    """fdatasync where available: appends need the data and size, not the mtime."""
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


class StateFiles:
    """Blocking file operations on the state directory; call them from a worker thread."""

    def __init__(self, directory: Path, max_record_bytes: int) -> None:
        self.directory = directory
        self._max_record_bytes = max_record_bytes
        self._log: BinaryIO | None = None
        self.generation = GENESIS
        """The generation of the snapshot on disk, hence of the log's records."""

    @property
    def snapshot_path(self) -> Path:
        """The compacted whole-document snapshot."""
        return self.directory / SNAPSHOT_NAME

    @property
    def log_path(self) -> Path:
        """The append-only update log."""
        return self.directory / LOG_NAME

    def load(self) -> LoadedState:
        """Create the directory if needed, read snapshot + log, cut a torn log tail."""
        if not self.directory.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.directory.parent)
        tmp = self.directory / SNAPSHOT_TMP_NAME
        if tmp.exists():
            tmp.unlink()  # an interrupted compaction; the old snapshot + log are intact
        result = LoadedState()
        if self.snapshot_path.exists():
            snap = self._read_snapshot()
            result.snapshot = snap.state
            result.generation = snap.generation
            result.clock = snap.clock
        self.generation = result.generation
        created = not self.log_path.exists()
        self._log = open(self.log_path, "a+b")  # kept open: every append reuses it
        try:
            if created:
                fsync_dir(self.directory)
            return self._load_log(result)
        except BaseException:
            self.close()
            raise

    def _record_at(self, data: bytes, pos: int) -> bytes | None:
        """The payload of a valid record starting at `pos`, or None."""
        if len(data) - pos < _REC_HEADER.size:
            return None
        length, crc = _REC_HEADER.unpack_from(data, pos)
        start = pos + _REC_HEADER.size
        if length == 0 or length > self._max_record_bytes or start + length > len(data):
            return None
        payload = data[start : start + length]
        return payload if zlib.crc32(payload) == crc else None

    def _resync(self, data: bytes, bad: int) -> int | None:
        """The offset of the next valid record after a bad one at `bad`, or None (a torn
        tail). First where the bad record's own length says the next one starts (a flipped
        payload or crc byte leaves the framing intact), else the first offset that frames."""
        if len(data) - bad >= _REC_HEADER.size:
            length = _REC_HEADER.unpack_from(data, bad)[0]
            after = bad + _REC_HEADER.size + length
            if length and self._record_at(data, after) is not None:
                return after
        for pos in range(bad + 1, len(data) - _REC_HEADER.size + 1):
            if self._record_at(data, pos) is not None:
                return pos
        return None

    def _frame_log(self, data: bytes, result: LoadedState) -> tuple[list[bytes], int]:
        """Every record the log still frames, and where the last one ends. Damaged stretches
        followed by valid records go to `result.corrupt_ranges` (logged as an ERROR)."""
        records: list[bytes] = []
        pos = valid_end = 0
        while pos < len(data):
            record = self._record_at(data, pos)
            if record is not None:
                records.append(record)
                pos = valid_end = pos + _REC_HEADER.size + len(record)
                continue
            after = self._resync(data, pos)
            if after is None:
                break  # nothing frames after it: a torn tail
            log.error(
                "state log %s: %d bytes at offset %d are corrupt (they frame no valid record, "
                "and valid records follow: not a torn tail); keeping the records from offset %d "
                "on, what the damaged bytes held is fetched again from peers",
                self.log_path,
                after - pos,
                pos,
                after,
            )
            result.corrupt_ranges.append((pos, after - pos))
            pos = after
        return records, valid_end

    def _load_log(self, result: LoadedState) -> LoadedState:
        """Read the log's records into `result`: skip corrupt stretches, cut a torn tail,
        drop a stale generation."""
        assert self._log is not None
        self._log.seek(0)
        data = self._log.read()
        end = len(data)
        records, pos = self._frame_log(data, result)
        if pos < end:
            log.info("state log %s: dropping %d bytes of torn tail", self.log_path, end - pos)
            self._log.truncate(pos)
            self._log.flush()
            os.fsync(self._log.fileno())
            result.truncated_tail_bytes = end - pos
        if result.corrupt_ranges and result.corrupt_ranges[0][0] == 0:
            # Without its header the log's generation is unknown: replaying updates of
            # another generation's document would integrate stale items (see below).
            log.error(
                "state log %s: its header is damaged, so the generation its updates belong "
                "to is unknown: discarding the log (%d bytes); peers send what it held",
                self.log_path,
                pos,
            )
            records = []
        if records:
            header = records[0]
            log_generation = _parse_log_header(header)
            if log_generation is None:
                raise PersistenceError(
                    f"{self.log_path}: no generation header (written by an older p2pkube?)"
                )
            if log_generation != self.generation:
                # Crash between the rename of a new generation's snapshot and the log
                # reset: these updates belong to the previous document, which the new
                # snapshot already carried over. They must not be replayed into it.
                log.warning(
                    "state log %s belongs to generation %s, the snapshot to %s: discarded",
                    self.log_path,
                    log_generation,
                    self.generation,
                )
                result.stale_log_bytes = pos
                records = []
                pos = 0
        if not records:
            pos = self._reset_log()
        for record in records[1:]:
            clock = _parse_clock_record(record)
            if clock is None:
                result.updates.append(record)
            elif clock > result.clock:
                result.clock = clock
        result.log_bytes = pos
        return result

    def _reset_log(self) -> int:
        """Empty the log and write its header for `self.generation`; return its size."""
        assert self._log is not None
        header = _LOG_HEADER.pack(_LOG_MAGIC, *self.generation)
        record = _REC_HEADER.pack(len(header), zlib.crc32(header)) + header
        self._log.truncate(0)
        self._log.seek(0)
        self._log.write(record)
        self._log.flush()
        os.fsync(self._log.fileno())
        return len(record)

    def _read_snapshot(self) -> Snapshot:
        data = self.snapshot_path.read_bytes()
        if data[:8] == _OLD_SNAP_MAGIC:
            raise PersistenceError(
                f"{self.snapshot_path}: format 1 (unversioned values) is not supported; "
                "remove the data directory to rejoin"
            )
        if len(data) < _SNAP_HEADER.size:
            raise self._corrupt_snapshot(f"{len(data)} bytes, shorter than its header")
        magic, number, creator, wall, counter, length, crc = _SNAP_HEADER.unpack_from(data, 0)
        payload = data[_SNAP_HEADER.size :]
        meta = data[8 : 8 + _SNAP_META.size]
        if magic != _SNAP_MAGIC:
            raise self._corrupt_snapshot(f"bad magic {magic!r} at offset 0")
        if length != len(payload):
            raise self._corrupt_snapshot(
                f"its header declares {length:,} bytes of document, {len(payload):,} follow"
            )
        if zlib.crc32(payload, zlib.crc32(meta)) != crc:
            raise self._corrupt_snapshot(
                f"crc mismatch over the {length:,}-byte document at offset {_SNAP_HEADER.size}"
            )
        if (number == 0) != (creator == 0):
            raise self._corrupt_snapshot(f"impossible generation {number}.{creator}")
        return Snapshot(Generation(number, creator), (wall, counter), payload)

    def _corrupt_snapshot(self, what: str) -> PersistenceError:
        """The error for a damaged snapshot, logged. Snapshots are only ever renamed into
        place after an fsync, so this is media corruption or tampering. Starting anyway
        would serve a partial state: the log holds only what came after the snapshot, so
        neither it nor a wait for peers can tell what this node alone held."""
        message = (
            f"state snapshot {self.snapshot_path} is corrupt ({what}); the update log only "
            "holds what came after it, so this node cannot rebuild its state alone. To "
            f"rejoin from the peers: stop the agent, move {self.directory} aside and start "
            "again (writes that only this node held are lost; keep the moved directory)"
        )
        log.error("%s", message)
        return PersistenceError(message)

    def append(self, records: list[bytes]) -> int:
        """Append records and fsync; return the bytes written."""
        if self._log is None:
            raise PersistenceError("state files are not open")
        parts: list[bytes] = []
        for rec in records:
            parts.append(_REC_HEADER.pack(len(rec), zlib.crc32(rec)))
            parts.append(rec)
        blob = b"".join(parts)
        self._log.write(blob)
        self._log.flush()
        _sync_data(self._log.fileno())
        return len(blob)

    def write_snapshot(self, snapshot: Snapshot) -> int:
        """Atomically replace the snapshot, then reset the log for its generation.

        Returns the bytes written (snapshot + new log header)."""
        if self._log is None:
            raise PersistenceError("state files are not open")
        tmp = self.directory / SNAPSHOT_TMP_NAME
        state = snapshot.state
        meta = _SNAP_META.pack(*snapshot.generation, *snapshot.clock, len(state))
        crc = zlib.crc32(state, zlib.crc32(meta))
        header = _SNAP_HEADER.pack(
            _SNAP_MAGIC, *snapshot.generation, *snapshot.clock, len(state), crc
        )
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(state)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.snapshot_path)
        fsync_dir(self.directory)
        # Only now is the log redundant: a crash before this point replays it
        # (idempotently) on top of the new snapshot, or, if the snapshot started a
        # new generation, discards it at load because its header names the old one.
        self.generation = snapshot.generation
        return len(header) + len(state) + self._reset_log()

    def close(self) -> None:
        """Close the log file."""
        if self._log is not None:
            self._log.close()
            self._log = None


class Persister:
    """Group-committing writer of the update log and snapshots, owned by one event loop."""

    def __init__(
        self,
        directory: Path,
        snapshot_source: Callable[[], Snapshot],
        settings: PersistSettings | None = None,
        clock_source: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.settings = settings or PersistSettings()
        self.stats = PersistStats()
        self._files = StateFiles(directory, self.settings.max_record_bytes)
        self._snapshot_source = snapshot_source
        self._clock_source = clock_source
        self._buffer: list[bytes] = []
        self._buffer_bytes = 0
        self._appended_seq = 0
        self._durable_seq = 0
        self._force_snapshot = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False

    async def open(self) -> LoadedState:
        """Load what is on disk and start the writer task."""
        loaded = await asyncio.to_thread(self._files.load)
        self.stats.log_bytes = loaded.log_bytes
        self.stats.log_records = len(loaded.updates)
        self.stats.truncated_tail_bytes = loaded.truncated_tail_bytes
        self.stats.corrupt_log_bytes = sum(length for _, length in loaded.corrupt_ranges)

        self._task = asyncio.create_task(self._run(), name="state-persister")
        return loaded

    def switch_generation(self) -> None:
        """The document was replaced by a new generation: the next write is a snapshot.

        Buffered updates of the old document are dropped (they are of another Yjs
        document, and the new one already holds what they carried); waiters for
        them are released by that snapshot, which covers their sequence numbers.
        """
        if self._closed:
            raise PersistenceError("persister is closed")
        self._appended_seq += 1
        self._buffer.clear()
        self._buffer_bytes = 0
        self._force_snapshot = True
        self._wake.set()

    def append(self, update: bytes) -> None:
        """Queue one update for the log; never blocks. `flush()` waits for it."""
        if self._closed:
            raise PersistenceError("persister is closed")
        self._appended_seq += 1
        if self._force_snapshot:
            pass  # the pending snapshot will contain it
        elif self._buffer_bytes + len(update) > self.settings.max_buffer_bytes:
            self.stats.buffer_overflows += 1
            self._buffer.clear()
            self._buffer_bytes = 0
            self._force_snapshot = True
        else:
            self._buffer.append(update)
            self._buffer_bytes += len(update)
        self._wake.set()

    async def flush(self) -> None:
        """Return once everything appended so far is fsynced (TimeoutError after
        `flush_timeout`, PersistenceError if closed before)."""
        target = self._appended_seq
        if self._durable_seq >= target:
            return
        if self._task is None or self._task.done():
            raise PersistenceError("persister is not running")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        self._wake.set()
        try:
            # Not asyncio.wait_for: on Python 3.11 it returns the result and drops a cancel
            # that lands as ``fut`` completes, so a cancelled caller (a kubelet's status
            # writer being closed) loops on and whoever awaits it hangs.
            async with asyncio.timeout(self.settings.flush_timeout):
                await fut
        finally:
            if not fut.done():
                fut.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove((target, fut))

    def _has_work(self) -> bool:
        return self._appended_seq > self._durable_seq

    async def _run(self) -> None:
        """The writer loop: one write/fsync (or snapshot) per batch."""
        while True:
            if not self._has_work():
                if self._stopping:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with timeout_on_beat(self.settings.writer_idle_timeout):
                        await self._wake.wait()
                continue
            try:
                await self._write_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.write_errors += 1
                log.exception("state persistence failed; retrying as a snapshot")
                # The log may now end in a torn record that would hide anything
                # appended after it: the next write must be a snapshot.
                self._force_snapshot = True
                self._buffer.clear()
                self._buffer_bytes = 0
                await asyncio.sleep(self.settings.io_retry_delay)

    async def _write_once(self) -> None:
        seq = self._appended_seq
        s = self.settings
        if (
            self._force_snapshot
            or self.stats.log_bytes + self._buffer_bytes >= s.snapshot_log_bytes
            or self.stats.log_records + len(self._buffer) >= s.snapshot_log_records
        ):
            # Taken on the loop, so it contains every update appended up to `seq`.
            snapshot = self._snapshot_source()
            self._buffer.clear()
            self._buffer_bytes = 0
            self._force_snapshot = False
            written = await asyncio.to_thread(self._files.write_snapshot, snapshot)
            self.stats.snapshots_written += 1
            self.stats.log_bytes = 0
            self.stats.log_records = 0
        else:
            batch = self._buffer
            self._buffer = []
            self._buffer_bytes = 0
            records = batch
            if self._clock_source is not None:
                # Taken now, on the loop: at least every stamp in the batch.
                records = [*batch, clock_record(self._clock_source())]
            written = await asyncio.to_thread(self._files.append, records)
            self.stats.log_bytes += written
            self.stats.log_records += len(records)
            self.stats.records_persisted += len(batch)
        self.stats.bytes_persisted += written
        self.stats.disk_writes += 1
        self._durable_seq = max(self._durable_seq, seq)
        for target, fut in self._waiters:
            if target <= seq and not fut.done():
                fut.set_result(None)

    async def close(self) -> None:
        """Flush what is pending, stop the writer and close the files."""
        if self._closed:
            return
        self._stopping = True
        self._wake.set()
        task = self._task
        abandoned = False
        if task is not None:
            try:
                async with asyncio.timeout(self.settings.close_timeout):  # keeps a cancel (3.11)
                    await asyncio.shield(task)
            except TimeoutError:
                log.error("state persister did not finish within %ss", self.settings.close_timeout)
                abandoned = True
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._closed = True
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(PersistenceError("persister closed"))
        self._waiters.clear()
        if not abandoned:
            # A write still hung in its worker thread keeps the file; the OS closes it.
            await asyncio.to_thread(self._files.close)
