"""The blob store of a node: on disk natively (file I/O and hashing run in worker threads); in
a browser tab in Emscripten's in-memory file system, where the same "threads" run inline.

Layout under ``<data-dir>/blobs/``::

    sha256/<hex>           complete, verified blobs (the file a pod runs)
    partial/<hex>.part     a blob being fetched: a sparse file, chunks written at their offsets
    partial/<hex>.chunks   which chunks of it are present (header, then u32 LE indices)
    tmp/                   uploads in progress (emptied at start)

Crash safety: a complete blob appears only by ``rename`` of a fully written and fsynced file
(then its directory is fsynced, ``p2pkube.fsutil.fsync_dir``), so ``sha256/`` never holds half
a file. A partial blob's chunk record is appended without fsync; it is a hint, not a promise:
when a fetch resumes (after a failure, or a restart) every recorded chunk is read back and
checked against the manifest, and only the chunks that still match are kept. A fetch ends by
checking the whole file against the blob's digest before the rename.

The fetcher reaches this store only through the small ``BlobStorage`` protocol
(``p2pkube.blobs.fetcher``), so the browser node can bring its own storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from p2pkube.blobs.errors import BlobCorrupt, BlobError
from p2pkube.blobs.limits import disk_free
from p2pkube.blobs.manifest import DIGEST_PREFIX, Manifest, digest_hex
from p2pkube.fsutil import fsync_dir, write_file_atomically

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_SIZE = 1024 * 1024
"""Bytes per read when copying or hashing a file."""
_RECORD_MAGIC = b"p2pkchk1"
_INDEX = struct.Struct("<I")


class _Digester:
    """sha256 of a whole stream and of each ``chunk_size`` piece of it, in one pass."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.size = 0
        self._whole = hashlib.sha256()
        self._chunk = hashlib.sha256()
        self._in_chunk = 0
        self._chunks: list[str] = []

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        self._whole.update(view)
        self.size += len(view)
        while view:
            take = min(len(view), self.chunk_size - self._in_chunk)
            self._chunk.update(view[:take])
            self._in_chunk += take
            view = view[take:]
            if self._in_chunk == self.chunk_size:
                self._chunks.append(self._chunk.hexdigest())
                self._chunk, self._in_chunk = hashlib.sha256(), 0

    def manifest(self) -> Manifest:
        chunks = list(self._chunks)
        if self._in_chunk:
            chunks.append(self._chunk.hexdigest())
        digest = DIGEST_PREFIX + self._whole.hexdigest()
        return Manifest(digest, self.size, self.chunk_size, tuple(chunks))


@dataclass(frozen=True)
class StoredBlob:
    """A blob that is now complete in the store; ``created`` is False when it was there."""

    manifest: Manifest
    path: Path
    created: bool


class BlobStore:
    """Complete and partial blobs under one directory (see the module docstring)."""

    def __init__(self, root: Path, *, io_timeout: float = 120.0) -> None:
        self.root = Path(root)
        self.io_timeout = io_timeout
        self.complete_dir = self.root / "sha256"
        self.partial_dir = self.root / "partial"
        self.tmp_dir = self.root / "tmp"
        self._sizes: dict[str, int] = {}
        self._partials: set[str] = set()
        self._open_partials: set[str] = set()

    async def open(self) -> None:
        """Create the layout, forget interrupted uploads, list what is held."""
        sizes, partials = await self._run(self._scan)
        self._sizes, self._partials = sizes, partials

    def _scan(self) -> tuple[dict[str, int], set[str]]:
        for directory in (self.complete_dir, self.partial_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.tmp_dir.iterdir():
            leftover.unlink(missing_ok=True)
        sizes = {
            DIGEST_PREFIX + p.name: p.stat().st_size
            for p in self.complete_dir.iterdir()
            if len(p.name) == 64 and p.is_file()
        }
        partials = {
            DIGEST_PREFIX + p.name.removesuffix(".part")
            for p in self.partial_dir.glob("*.part")
            if len(p.name) == 69
        }
        return sizes, partials

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking file work off the event loop, bounded by ``io_timeout``."""
        async with asyncio.timeout(self.io_timeout):
            return await asyncio.to_thread(fn, *args)

    # -- queries (in memory, no I/O) -----------------------------------------------------------
    def path(self, digest: str) -> Path | None:
        """The file of a complete blob, or None when it is not held here."""
        return self.complete_dir / digest_hex(digest) if digest in self._sizes else None

    def size(self, digest: str) -> int | None:
        """Size of a complete blob held here, or None."""
        return self._sizes.get(digest)

    def sizes(self) -> dict[str, int]:
        """Digest -> size of every complete blob held here."""
        return dict(self._sizes)

    def partials(self) -> set[str]:
        """Digests of blobs partly fetched (kept for a resume)."""
        return set(self._partials)

    async def free_bytes(self) -> int | None:
        """Bytes still free for us on the store's filesystem; None where that is unknown (a
        browser tab, see ``p2pkube.blobs.limits.disk_free``)."""
        return await self._run(disk_free, self.root)

    # -- adding --------------------------------------------------------------------------------
    def upload(self, chunk_size: int) -> Upload:
        """Start a streamed upload: ``await u.write(piece)``..., then ``await u.commit()``."""
        return Upload(self, chunk_size)

    async def add_file(self, source: Path, chunk_size: int) -> StoredBlob:
        """Copy a local file into the store, hashing it on the way (one pass, in a thread)."""
        upload = self.upload(chunk_size)
        try:
            await self._run(upload.copy_from, Path(source))
            return await upload.commit()
        except BaseException:
            await upload.abort()
            raise

    def _install(self, tmp: Path, manifest: Manifest) -> StoredBlob:
        """Rename a written, fsynced file into place (blocking)."""
        final = self.complete_dir / digest_hex(manifest.digest)
        if final.exists():
            tmp.unlink(missing_ok=True)
            return StoredBlob(manifest, final, created=False)
        os.replace(tmp, final)
        fsync_dir(self.complete_dir)
        return StoredBlob(manifest, final, created=True)

    def _added(self, stored: StoredBlob) -> StoredBlob:
        self._sizes[stored.manifest.digest] = stored.manifest.size
        return stored

    # -- serving -------------------------------------------------------------------------------
    async def read_chunk(self, digest: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of a complete blob (FileNotFoundError if gone)."""
        path = self.path(digest)
        if path is None:
            raise FileNotFoundError(digest)
        return await self._run(_pread, path, offset, length)

    # -- removing ------------------------------------------------------------------------------
    async def remove(self, digest: str) -> bool:
        """Delete the complete and partial copies of ``digest``; True if anything went."""
        if digest in self._open_partials:
            raise BlobError(f"{digest} is being fetched")
        had = digest in self._sizes or digest in self._partials
        self._sizes.pop(digest, None)
        self._partials.discard(digest)
        await self._run(self._unlink, digest)
        return had

    def _unlink(self, digest: str) -> None:
        name = digest_hex(digest)
        for path in (
            self.complete_dir / name,
            self.partial_dir / f"{name}.part",
            self.partial_dir / f"{name}.chunks",
        ):
            path.unlink(missing_ok=True)
        fsync_dir(self.complete_dir)

    # -- partial blobs ---------------------------------------------------------------------------
    async def open_partial(self, manifest: Manifest) -> PartialBlob:
        """The partial file of ``manifest``'s blob, resumed if one is on disk (its recorded
        chunks re-verified), else new. One writer per blob at a time."""
        digest = manifest.digest
        if digest in self._open_partials:
            raise BlobError(f"{digest} is already being fetched")
        self._open_partials.add(digest)
        try:
            partial = await self._run(PartialBlob.open, self, manifest)
        except BaseException:
            self._open_partials.discard(digest)
            raise
        self._partials.add(digest)
        return partial


class Upload:
    """A blob being written from a stream; hashed (whole and per chunk) as it is written."""

    def __init__(self, store: BlobStore, chunk_size: int) -> None:
        self._store = store
        self._digester = _Digester(chunk_size)
        self._file: BinaryIO | None = None
        self._tmp: Path | None = None

    @property
    def size(self) -> int:
        return self._digester.size

    def _write(self, data: bytes) -> None:
        if self._file is None:
            fd, tmp = tempfile.mkstemp(dir=self._store.tmp_dir, prefix="upload-")
            self._file, self._tmp = os.fdopen(fd, "wb"), Path(tmp)
        self._file.write(data)
        self._digester.update(data)

    def copy_from(self, source: Path) -> None:
        """Copy a whole file (blocking; ``BlobStore.add_file`` runs it in a thread)."""
        with source.open("rb") as fh:
            while piece := fh.read(READ_SIZE):
                self._write(piece)

    async def write(self, data: bytes) -> None:
        await self._store._run(self._write, data)

    def _commit(self) -> StoredBlob:
        self._write(b"")  # an empty upload still gets its (empty) file
        assert self._file is not None and self._tmp is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._store._install(self._tmp, self._digester.manifest())

    async def commit(self) -> StoredBlob:
        """Make the blob complete in the store (idempotent for content already held)."""
        return self._store._added(await self._store._run(self._commit))

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    async def abort(self) -> None:
        """Forget the upload and its temporary file."""
        await self._store._run(self._discard)


class PartialBlob:
    """One blob being fetched: chunks arrive in any order and are written at their offsets."""

    def __init__(
        self, store: BlobStore, manifest: Manifest, data_fd: int, record_fd: int, present: set[int]
    ) -> None:
        self.manifest = manifest
        self._store = store
        self._data_fd = data_fd
        self._record_fd = record_fd
        self._present = present
        self._closed = False

    @classmethod
    def open(cls, store: BlobStore, manifest: Manifest) -> PartialBlob:
        """Open or create the partial file and its record (blocking)."""
        name = digest_hex(manifest.digest)
        part = store.partial_dir / f"{name}.part"
        record = store.partial_dir / f"{name}.chunks"
        header = (
            _RECORD_MAGIC
            + struct.pack("<II", manifest.chunk_size, manifest.count)
            + bytes.fromhex(name)
        )
        data_fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(data_fd).st_size != manifest.size:
                os.ftruncate(data_fd, manifest.size)
            recorded = _read_record(record, header, manifest.count)
            present = {i for i in recorded if _chunk_matches(data_fd, manifest, i)}
            if present != recorded or not record.exists() or len(recorded) == 0:
                # Rewrite the record to exactly what was verified (a new one starts empty).
                write_file_atomically(record, header + b"".join(_INDEX.pack(i) for i in present))
            if recorded:
                log.info(
                    "resuming %s: %d of %d chunks on disk",
                    manifest.digest,
                    len(present),
                    manifest.count,
                )
            record_fd = os.open(record, os.O_WRONLY | os.O_APPEND)
        except BaseException:
            os.close(data_fd)
            raise
        return cls(store, manifest, data_fd, record_fd, present)

    def missing(self) -> list[int]:
        """Indices of the chunks still to fetch, in order."""
        return [i for i in range(self.manifest.count) if i not in self._present]

    @property
    def present(self) -> int:
        return len(self._present)

    def _store_chunk(self, index: int, data: bytes) -> bool:
        manifest = self.manifest
        if len(data) != manifest.length(index):
            return False
        if hashlib.sha256(data).hexdigest() != manifest.chunks[index]:
            return False
        os.pwrite(self._data_fd, data, manifest.offset(index))
        os.write(self._record_fd, _INDEX.pack(index))
        return True

    async def store_chunk(self, index: int, data: bytes) -> bool:
        """Verify ``data`` against the manifest's digest of chunk ``index`` and write it;
        False (nothing written) when it does not match: a corrupt chunk."""
        if not 0 <= index < self.manifest.count:
            raise IndexError(index)
        if index in self._present:
            return True
        ok = await self._store._run(self._store_chunk, index, data)
        if ok:
            self._present.add(index)
        return ok

    def _finish(self) -> StoredBlob:
        manifest = self.manifest
        os.fsync(self._data_fd)
        whole = hashlib.sha256()
        for offset in range(0, manifest.size, READ_SIZE):
            whole.update(os.pread(self._data_fd, min(READ_SIZE, manifest.size - offset), offset))
        name = digest_hex(manifest.digest)
        part = self._store.partial_dir / f"{name}.part"
        self._close_fds()
        if DIGEST_PREFIX + whole.hexdigest() != manifest.digest:
            part.unlink(missing_ok=True)
            (self._store.partial_dir / f"{name}.chunks").unlink(missing_ok=True)
            raise BlobCorrupt(
                f"every chunk matched the manifest but the whole file is sha256:"
                f"{whole.hexdigest()}, not {manifest.digest}: the manifest is inconsistent"
            )
        stored = self._store._install(part, manifest)
        (self._store.partial_dir / f"{name}.chunks").unlink(missing_ok=True)
        fsync_dir(self._store.partial_dir)
        return stored

    async def finish(self) -> Path:
        """Check the whole file against the blob's digest and move it into place; raises
        BlobCorrupt (and discards the partial) when it does not match."""
        if len(self._present) != self.manifest.count:
            raise BlobError(f"{self.manifest.count - len(self._present)} chunks are missing")
        store, digest = self._store, self.manifest.digest
        try:
            stored = await store._run(self._finish)
        except BlobCorrupt:
            store._partials.discard(digest)  # _finish removed it
            raise
        finally:
            store._open_partials.discard(digest)
        store._partials.discard(digest)
        return store._added(stored).path

    def _close_fds(self) -> None:
        if not self._closed:
            self._closed = True
            for fd in (self._data_fd, self._record_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def close(self) -> None:
        """Release the files (the partial stays on disk for a later resume)."""
        self._close_fds()
        self._store._open_partials.discard(self.manifest.digest)


def _pread(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as fh:
        return os.pread(fh.fileno(), length, offset)


def _read_record(record: Path, header: bytes, count: int) -> set[int]:
    """Chunk indices a record lists (empty when absent or written for other chunking)."""
    try:
        raw = record.read_bytes()
    except FileNotFoundError:
        return set()
    if not raw.startswith(header):
        return set()
    body = raw[len(header) :]
    usable = len(body) - len(body) % _INDEX.size  # a torn last append is ignored
    return {i for (i,) in _INDEX.iter_unpack(body[:usable]) if i < count}


def _chunk_matches(data_fd: int, manifest: Manifest, index: int) -> bool:
    data = os.pread(data_fd, manifest.length(index), manifest.offset(index))
    return hashlib.sha256(data).hexdigest() == manifest.chunks[index]
