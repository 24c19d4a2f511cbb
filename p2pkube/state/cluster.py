"""ClusterState: the state document + its persistence + peer sync, transport-agnostic.

The transport (WebRTC data channels, or plain callables in tests) owns the
connections; this service only needs, per neighbour, a synchronous and
non-blocking `send(bytes)` and a call to `receive(peer_id, bytes)` for every
frame that neighbour sent. The protocol is y-protocols sync with flooding:

* on attach, and then every `anti_entropy_interval`, we send step 1 (our state
  vector); a step 1 is answered with step 2 (exactly what the asker misses).
  The periodic step 1 repairs anything a bounded transport queue dropped or a
  peer could not integrate yet (Yjs keeps structs with missing dependencies
  pending until they arrive);
* every transaction applied here (a local write, or an update from peer X) is
  relayed as an update message to every attached peer except X. Applying an
  already-known update produces no transaction, so flooding stops by itself.

Durability: `put`/`delete`/`batch` return only after their update is fsynced
(the acknowledgement point). Updates from peers are persisted the same way.
An update may reach peers before it is durable here; that is safe because
every start uses a fresh Yjs client id, so a restarted node never re-issues an
id that a lost-but-relayed update already used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from .persist import Persister, PersistSettings
from .store import (
    LOAD,
    LOCAL,
    MAP_NAMES,
    ChangeCallback,
    PycrdtStore,
    UnknownMapError,
    encode_value,
)
from .sync import (
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_MAX_SV_ENTRIES,
    SyncMessageKind,
    SyncProtocolError,
    decode_frame,
    decode_state_vector,
    encode_frame,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)

__all__ = ["ClusterState", "StateSettings", "StateStats", "WriteBatch"]

log = logging.getLogger(__name__)

GENERATION: Final = 0
"""Document generation carried in every frame (see docs/state.md, compaction)."""

SendFn = Callable[[bytes], None]


_PERSIST_DEFAULTS: Final = PersistSettings()


@dataclass(slots=True)
class StateSettings:
    """Timings and limits of the cluster-state service (flat and mutable, so that
    `p2pkube join --set state.FIELD=VALUE` can override any of them)."""

    anti_entropy_interval: float = 5.0
    """Seconds between step-1 rounds to every attached peer: the repair latency for
    a dropped message, paid with one state vector + one (usually tiny) diff."""
    max_message_bytes: int = DEFAULT_MAX_PAYLOAD
    """Largest payload accepted from a peer (a full 10k-object state is ~3 MB)."""
    max_state_vector_entries: int = DEFAULT_MAX_SV_ENTRIES
    """Largest state vector accepted from a peer (one entry per process start)."""
    snapshot_log_bytes: int = _PERSIST_DEFAULTS.snapshot_log_bytes
    """Compact the on-disk log into a snapshot once it reaches this many bytes
    (bounds replay time at start and disk use)."""
    snapshot_log_records: int = _PERSIST_DEFAULTS.snapshot_log_records
    """...or once it holds this many records (many tiny updates replay slowly)."""
    persist_buffer_bytes: int = _PERSIST_DEFAULTS.max_buffer_bytes
    """Bound on updates waiting for the disk writer; beyond it a snapshot replaces
    them (memory stays bounded, nothing is lost: the document holds them)."""
    max_log_record_bytes: int = _PERSIST_DEFAULTS.max_record_bytes
    """A log record claiming more than this is treated as a corrupt tail at load."""
    persist_idle_timeout: float = _PERSIST_DEFAULTS.writer_idle_timeout
    """The disk writer re-checks for work at least this often."""
    flush_timeout: float = _PERSIST_DEFAULTS.flush_timeout
    """`put`/`flush` raise TimeoutError when the disk has not confirmed within this."""
    io_retry_delay: float = _PERSIST_DEFAULTS.io_retry_delay
    """Pause after a failed disk write before retrying it as a snapshot."""
    close_timeout: float = _PERSIST_DEFAULTS.close_timeout
    """How long `close()` waits for the final flush."""

    def persist_settings(self) -> PersistSettings:
        """The persistence layer's view of these settings."""
        return PersistSettings(
            snapshot_log_bytes=self.snapshot_log_bytes,
            snapshot_log_records=self.snapshot_log_records,
            max_buffer_bytes=self.persist_buffer_bytes,
            max_record_bytes=self.max_log_record_bytes,
            writer_idle_timeout=self.persist_idle_timeout,
            flush_timeout=self.flush_timeout,
            io_retry_delay=self.io_retry_delay,
            close_timeout=self.close_timeout,
        )


@dataclass(slots=True)
class StateStats:
    """Counters for `p2pkube status`/benchmarks; a copy taken when read."""

    updates_sent: int = 0
    updates_received: int = 0
    sync_step1_sent: int = 0
    sync_step1_received: int = 0
    sync_step2_bytes_sent: int = 0
    sync_step2_bytes_received: int = 0
    send_errors: int = 0
    protocol_errors: int = 0
    bytes_persisted: int = 0
    disk_writes: int = 0
    snapshots_written: int = 0
    peers: int = 0
    doc_size: int = 0
    """Encoded size of the whole document (recomputed only after it changed)."""
    state_vector: dict[int, int] = field(default_factory=dict)


class WriteBatch:
    """Writes collected by `ClusterState.batch()` and applied as one Yjs transaction.

    Values are encoded when added, so a bad value fails before anything is
    written: Yjs has no rollback, and a half-applied batch would stay applied.
    """

    def __init__(self) -> None:
        self.ops: list[tuple[str, str, Any, bool]] = []

    def put(self, map_name: str, key: str, value: Any) -> None:
        """Queue `map_name[key] = value`."""
        _check_map(map_name)
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty str")
        encode_value(value)
        self.ops.append((map_name, key, value, False))

    def delete(self, map_name: str, key: str) -> None:
        """Queue the removal of `map_name[key]`."""
        _check_map(map_name)
        self.ops.append((map_name, key, None, True))


def _check_map(map_name: str) -> None:
    if map_name not in MAP_NAMES:
        raise UnknownMapError(map_name)


def _is_rust_panic(exc: BaseException) -> bool:
    """pyo3 turns a Rust panic into PanicException, a BaseException subclass."""
    return type(exc).__name__ == "PanicException"


class ClusterState:
    """The replicated cluster state of one node."""

    def __init__(self, data_dir: Path | None, settings: StateSettings | None = None) -> None:
        self.settings = settings or StateSettings()
        self._data_dir = data_dir
        self._store: PycrdtStore | None = None
        self._persister: Persister | None = None
        self._peers: dict[str, SendFn] = {}
        self._change_cbs: list[ChangeCallback] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self._anti_entropy: asyncio.Task[None] | None = None
        self._stats = StateStats()
        self._doc_size: int | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------
    async def open(self) -> None:
        """Load snapshot + log (if persistent) and start the background tasks."""
        if self._store is not None or self._closed:
            raise RuntimeError("ClusterState can be opened once")
        store = PycrdtStore()  # a fresh random client id on every start
        self._unsubscribe.append(store.on_change(self._dispatch_change))
        if self._data_dir is not None:
            persister = Persister(
                self._data_dir / "state", store.encode_state, self.settings.persist_settings()
            )
            loaded = await persister.open()
            self._persister = persister
            if loaded.snapshot is not None:
                store.apply_update(loaded.snapshot, LOAD)
            for update in loaded.updates:
                try:
                    store.apply_update(update, LOAD)
                except ValueError:
                    log.exception("skipping an undecodable logged update")
        self._unsubscribe.append(store.on_update(self._on_update))
        self._store = store
        self._anti_entropy = asyncio.create_task(self._anti_entropy_loop(), name="anti-entropy")

    async def close(self) -> None:
        """Stop anti-entropy, flush and close persistence, forget peers."""
        if self._closed:
            return
        self._closed = True
        if self._anti_entropy is not None:
            self._anti_entropy.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._anti_entropy
            self._anti_entropy = None
        self._peers.clear()
        if self._persister is not None:
            await self._persister.close()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self._store is not None:
            self._store.close()

    async def __aenter__(self) -> ClusterState:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _require(self) -> PycrdtStore:
        if self._store is None or self._closed:
            raise RuntimeError("ClusterState is not open")
        return self._store

    @property
    def store(self) -> PycrdtStore:
        """The underlying document (read-mostly: writes through it are not awaited)."""
        return self._require()

    @property
    def client_id(self) -> int:
        """This run's Yjs client id."""
        return self._require().client_id

    # -- reads -------------------------------------------------------------
    def get(self, map_name: str, key: str) -> Any | None:
        """Decoded value at `map_name[key]`, or None."""
        return self._require().get(map_name, key)

    def items(self, map_name: str) -> list[tuple[str, Any]]:
        """All (key, value) pairs of a map."""
        return self._require().items(map_name)

    def keys(self, map_name: str) -> list[str]:
        """All keys of a map."""
        return self._require().keys(map_name)

    def state_vector(self) -> bytes:
        """Encoded state vector of the document."""
        return self._require().state_vector()

    # -- writes ------------------------------------------------------------
    async def put(self, map_name: str, key: str, value: Any) -> None:
        """Write `map_name[key] = value`; returns once it is durable."""
        self._require().put(map_name, key, value)
        await self.flush()

    async def delete(self, map_name: str, key: str) -> bool:
        """Remove `map_name[key]`; returns (once durable) whether it existed."""
        existed = self._require().delete(map_name, key)
        if existed:
            await self.flush()
        return existed

    async def put_many(self, map_name: str, entries: Mapping[str, Any]) -> None:
        """Write several entries of one map in one transaction; returns once durable."""
        async with self.batch() as batch:
            for key, value in entries.items():
                batch.put(map_name, key, value)

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[WriteBatch]:
        """Collect writes, then apply them as one Yjs transaction and wait for durability.

        Nothing is written if the block raises. Reads inside the block do not
        see the queued writes yet.
        """
        batch = WriteBatch()
        yield batch
        self.apply_batch(batch.ops)
        await self.flush()

    def apply_batch(self, ops: Iterable[tuple[str, str, Any, bool]]) -> None:
        """Apply (map, key, value, is_delete) ops in one transaction, without waiting."""
        store = self._require()
        with store.transaction(LOCAL):
            for map_name, key, value, is_delete in ops:
                if is_delete:
                    store.delete(map_name, key)
                else:
                    store.put(map_name, key, value)

    async def flush(self) -> None:
        """Wait until every update applied so far (local or remote) is on disk."""
        if self._persister is not None:
            await self._persister.flush()

    # -- watchers ----------------------------------------------------------
    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call `callback(map_name, changed_keys, origin)` after each change.

        `origin` is LOCAL, LOAD or the peer id the update came from. Runs on the
        event loop right after the transaction: keep it short (push to a queue).
        """
        self._change_cbs.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._change_cbs.remove(callback)

        return unsubscribe

    def _dispatch_change(self, map_name: str, keys: set[str], origin: object) -> None:
        for cb in list(self._change_cbs):
            try:
                cb(map_name, keys, origin)
            except Exception:
                log.exception("state watcher failed")

    # -- peers -------------------------------------------------------------
    def attach_peer(self, peer_id: str, send: SendFn) -> None:
        """Start syncing with a neighbour: remember its `send`, send our step 1.

        Ignored once closed (a link can come up while the agent shuts down)."""
        if self._closed:
            return
        self._require()
        self._peers[peer_id] = send
        self._send_step1(peer_id, send)

    def detach_peer(self, peer_id: str) -> None:
        """Stop syncing with a neighbour (its late frames are ignored)."""
        self._peers.pop(peer_id, None)

    @property
    def peers(self) -> list[str]:
        """Ids of the attached peers."""
        return list(self._peers)

    def receive(self, peer_id: str, message: bytes) -> None:
        """Handle one frame from `peer_id`.

        Raises SyncProtocolError on a malformed frame, a frame for another
        document generation, or an update the CRDT cannot decode; the state is
        unchanged then and the caller should drop and log the peer. Frames
        arriving after `close()` (the transport closes after us) are ignored.
        """
        if self._closed:
            return
        store = self._require()
        send = self._peers.get(peer_id)
        if send is None:
            log.debug("frame from detached peer %s ignored", peer_id)
            return
        try:
            frame = decode_frame(message, self.settings.max_message_bytes)
            if frame.generation != GENERATION:
                raise SyncProtocolError(
                    f"frame for document generation {frame.generation}, this node has {GENERATION}"
                )
            if frame.kind is SyncMessageKind.STEP1:
                self._stats.sync_step1_received += 1
                decode_state_vector(frame.payload, self.settings.max_state_vector_entries)
                diff = self._guarded(store.encode_diff, frame.payload)
                self._stats.sync_step2_bytes_sent += len(diff)
                self._send(peer_id, send, encode_frame(GENERATION, encode_sync_step2(diff)))
                return
            if frame.kind is SyncMessageKind.STEP2:
                self._stats.sync_step2_bytes_received += len(frame.payload)
            else:
                self._stats.updates_received += 1
            self._guarded(store.apply_update, frame.payload, peer_id)
        except SyncProtocolError:
            self._stats.protocol_errors += 1
            raise

    @staticmethod
    def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
        """Run a CRDT call on peer-supplied bytes; any decode failure is the peer's."""
        try:
            return fn(*args)
        except ValueError as exc:
            raise SyncProtocolError(f"CRDT rejected peer data: {exc}") from exc
        except BaseException as exc:
            if _is_rust_panic(exc):
                raise SyncProtocolError(f"CRDT panicked on peer data: {exc}") from exc
            raise

    def _send(self, peer_id: str, send: SendFn, data: bytes) -> None:
        try:
            send(data)
        except Exception:
            # The transport's queue is full or closing: anti-entropy repairs it.
            self._stats.send_errors += 1
            log.debug("send to %s failed", peer_id, exc_info=True)

    def _send_step1(self, peer_id: str, send: SendFn) -> None:
        sv = self._require().state_vector()
        self._stats.sync_step1_sent += 1
        self._send(peer_id, send, encode_frame(GENERATION, encode_sync_step1(sv)))

    def _on_update(self, update: bytes, origin: object) -> None:
        """Persist and relay every transaction (except replays from disk)."""
        if origin is LOAD:
            return
        self._doc_size = None
        if self._persister is not None:
            self._persister.append(update)
        frame: bytes | None = None
        for peer_id, send in list(self._peers.items()):
            if peer_id == origin:
                continue
            if frame is None:
                frame = encode_frame(GENERATION, encode_update(update))
            self._stats.updates_sent += 1
            self._send(peer_id, send, frame)

    async def _anti_entropy_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.anti_entropy_interval)
            if self._store is None or self._closed:
                return
            for peer_id, send in list(self._peers.items()):
                self._send_step1(peer_id, send)

    # -- stats -------------------------------------------------------------
    @property
    def stats(self) -> StateStats:
        """A copy of the counters, with the doc size (cached until the next change)."""
        store = self._require()
        if self._doc_size is None:
            self._doc_size = len(store.encode_state())
        s = self._stats
        out = StateStats(
            updates_sent=s.updates_sent,
            updates_received=s.updates_received,
            sync_step1_sent=s.sync_step1_sent,
            sync_step1_received=s.sync_step1_received,
            sync_step2_bytes_sent=s.sync_step2_bytes_sent,
            sync_step2_bytes_received=s.sync_step2_bytes_received,
            send_errors=s.send_errors,
            protocol_errors=s.protocol_errors,
            peers=len(self._peers),
            doc_size=self._doc_size,
            state_vector=decode_state_vector(store.state_vector()),
        )
        if self._persister is not None:
            out.bytes_persisted = self._persister.stats.bytes_persisted
            out.snapshots_written = self._persister.stats.snapshots_written
            out.disk_writes = self._persister.stats.disk_writes
        return out

    def measure_growth(self) -> tuple[int, int]:
        """(encoded document bytes, bytes of a fresh document with only the live
        entries): their ratio is the tombstone overhead (O(n); not for hot paths)."""
        store = self._require()
        return len(store.encode_state()), len(store.encode_live_state())

    def stats_dict(self) -> dict[str, Any]:
        """The stats as JSON-ready camelCase (the agent's `/v1/status` "state" section)."""
        stats = self.stats
        out: dict[str, Any] = {"clientId": self.client_id, "generation": GENERATION}
        for f in fields(stats):
            camel = "".join(
                part if i == 0 else part.capitalize() for i, part in enumerate(f.name.split("_"))
            )
            out[camel] = getattr(stats, f.name)
        out["stateVector"] = {str(k): v for k, v in stats.state_vector.items()}
        return out
