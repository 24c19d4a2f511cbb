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

Values are versioned (`versioned.py`): each carries a hybrid-clock stamp and a
delete writes a tombstone. When Yjs lets a concurrent write with the *lower*
stamp win (it picks the higher client id), the peer that held the higher version
re-puts it, so every peer converges on the highest stamp: last writer wins by
time, not by client id.

Compaction: Yjs never forgets a deleted item, so under churn the document grows
without bound. Every `compact_check_interval` the compactor (see `is_compactor`)
checks the encoded size against the live size and, past the thresholds, starts
a new *generation*: a fresh document holding only the newest version of every
key. Every frame names its generation; a peer that sees a higher one fetches
that document, carries every newer version it holds over into it, and switches.
The correctness argument is in docs/state.md.

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
import random
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from .admission import LinkBudget, RefusalKind, TokenBucket, check_update
from .persist import Persister, Snapshot
from .settings import StateSettings
from .store import (
    LOAD,
    LOCAL,
    MAP_NAMES,
    REPAIR,
    SWITCH,
    ChangeCallback,
    StateStore,
    StoreFactory,
    UnknownMapError,
    encode_value,
    new_client_id,
)
from .sync import (
    EMPTY_STATE_VECTOR,
    GENESIS,
    Generation,
    SyncMessageKind,
    SyncProtocolError,
    decode_state_message,
    decode_state_vector,
    encode_state_message,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)
from .versioned import (
    HybridClock,
    Stamp,
    Version,
    decode_version,
    encode_tombstone,
    encode_version,
    header_size,
    inspect_blob,
    read_stamp,
)

__all__ = ["ClusterState", "StateSettings", "StateStats", "ValueTooLarge", "WriteBatch"]

log = logging.getLogger(__name__)

SendFn = Callable[[bytes], None]

TOMBSTONE_BUCKETS_PER_TTL: Final = 64
"""Granularity of the tombstone-age accounting: ttl / 64 (at most a minute, at least
1 ms). A bucket counts as live until its end passes the ttl horizon, so the estimate
errs towards compacting later, by less than 1/64 of the ttl's deletes."""

ENTRY_OVERHEAD: Final = 8
"""Bytes a map entry costs in a freshly built document besides its map name, key and
blob (item header, parent and length varUints); calibrated against pycrdt, used only
to estimate the live size cheaply between compaction checks."""

MAX_PEERS_IN_REFUSAL_STATS: Final = 64
"""`StateStats.refusals_by_peer` keeps the links most recently refused, at most this many."""


@dataclass(slots=True)
class StateStats:
    """Counters for `p2pkube status`/benchmarks; a copy taken when read."""

    updates_sent: int = 0
    updates_received: int = 0
    sync_step1_sent: int = 0
    sync_step1_received: int = 0
    sync_step2_bytes_sent: int = 0
    sync_step2_bytes_received: int = 0
    sync_step2_received: int = 0
    send_errors: int = 0
    protocol_errors: int = 0
    bytes_persisted: int = 0
    disk_writes: int = 0
    snapshots_written: int = 0
    corrupt_log_bytes: int = 0
    """Damaged bytes skipped in the middle of the update log at open (valid records
    followed them; logged as an ERROR with the offset): what they held comes from peers."""
    peers: int = 0
    doc_size: int = 0
    """Encoded size of the whole document (recomputed only after it changed)."""
    live_size: int = 0
    """Estimated size of the document a compaction would build now (newest version of
    every key, unexpired tombstones included); exact right after a compaction check
    that built one."""
    generation: int = 0
    """Number of the current document generation (0 until the first compaction)."""
    generation_creator: int = 0
    """Client id of the node that created the current generation (0 for genesis)."""
    compactions: int = 0
    """Generations this node created."""
    generation_switches: int = 0
    """Generation switches (own compactions included) since open."""
    generation_fetches: int = 0
    """Requests for the whole document of a newer generation."""
    stale_frames: int = 0
    """Frames of an older generation received (answered with our step 1)."""
    lww_repairs: int = 0
    """Re-puts of a newer version after Yjs let a concurrent older one win."""
    tombstones: int = 0
    """Deleted keys still held as tombstones."""
    clock_skew_clamps: int = 0
    """Remote stamps our clock did not follow all the way (beyond `max_clock_skew` / 2)."""
    clock_lowered: int = 0
    """Times our clock was pulled back to wall clock + `max_clock_skew` / 2 to issue a stamp
    (it was restored from a run whose wall clock was ahead)."""
    refused_future_stamps: int = 0
    """Updates from peers refused for a value stamped beyond now + `max_clock_skew`."""
    refused_oversize: int = 0
    """Updates from peers refused for a value over `max_object_bytes`."""
    budget_drops: int = 0
    """Updates dropped because their link was over `link_update_bytes_per_second`."""
    budget_dropped_bytes: int = 0
    """Bytes of those updates."""
    refusals_by_peer: dict[str, int] = field(default_factory=dict)
    """Refused and dropped updates per link (peer id), for the links most recently refused."""
    future_versions_ignored: int = 0
    """Stored versions stamped beyond now + `max_clock_skew` that a write overwrote, a
    repair did not restore, or a compaction or switch dropped."""

    state_vector: dict[int, int] = field(default_factory=dict)


class ValueTooLarge(ValueError):
    """A value whose encoding exceeds `StateSettings.max_object_bytes`; nothing was written."""

    def __init__(self, map_name: str, key: str, size: int, limit: int) -> None:
        super().__init__(
            f"{map_name}/{key}: the encoded value is {size:,} bytes, over the limit of "
            f"{limit:,} bytes (state.max_object_bytes)"
        )
        self.size = size
        self.limit = limit


def _check_size(map_name: str, key: str, size: int, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise ValueTooLarge(map_name, key, size, limit)


class WriteBatch:
    """Writes collected by `ClusterState.batch()` and applied as one Yjs transaction.

    Values are encoded (and their size checked) when added, so a bad value fails before
    anything is written: Yjs has no rollback, and a half-applied batch would stay applied.
    """

    def __init__(self, max_value_bytes: int | None = None) -> None:
        self.ops: list[tuple[str, str, Any, bool]] = []
        self._max_value_bytes = max_value_bytes

    def put(self, map_name: str, key: str, value: Any) -> None:
        """Queue `map_name[key] = value` (ValueTooLarge over the size cap)."""
        _check_map(map_name)
        _check_key(key)
        _check_size(map_name, key, len(encode_value(value)), self._max_value_bytes)
        self.ops.append((map_name, key, value, False))

    def delete(self, map_name: str, key: str) -> None:
        """Queue the removal of `map_name[key]`."""
        _check_map(map_name)
        self.ops.append((map_name, key, None, True))


@dataclass(slots=True)
class _Fetch:
    """An outstanding request for the whole document of a newer generation."""

    generation: Generation
    peer: str
    deadline: float
    """`time.monotonic()` after which another request may replace this one."""


def _check_map(map_name: str) -> None:
    if map_name not in MAP_NAMES:
        raise UnknownMapError(map_name)


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty str")


def _is_rust_panic(exc: BaseException) -> bool:
    """pyo3 turns a Rust panic into PanicException, a BaseException subclass."""
    return type(exc).__name__ == "PanicException"


def _entry_size(map_name: str, key: str, blob: bytes) -> int:
    return len(map_name) + len(key) + len(blob) + ENTRY_OVERHEAD


def _visible(blob: bytes | None) -> bytes | None:
    """`blob` if it holds a value, None for absent, tombstone or garbage."""
    header = read_stamp(blob)
    return blob if header is not None and not header[1] else None


def _always() -> bool:
    return True


def _frame_name(kind: SyncMessageKind) -> str:
    return "a step 2" if kind is SyncMessageKind.STEP2 else "an update"


class ClusterState:
    """The replicated cluster state of one node.

    `is_compactor()` says whether this node may start a new generation right now;
    the default (always) is safe, since concurrent compactions converge on one
    generation, but wastes work: the agent should pass e.g. "I am the Ready node
    with the lowest id". `wall_clock` (seconds since the epoch) feeds the hybrid
    clock and tombstone expiry; tests inject a fake one. `store_factory` makes the
    empty documents: the native agent passes `pycrdt_store.PycrdtStore`, the browser
    its `YjsStore`; nothing in this package imports a CRDT library.
    """

    def __init__(
        self,
        data_dir: Path | None,
        settings: StateSettings | None = None,
        *,
        is_compactor: Callable[[], bool] | None = None,
        relay_exclude: Callable[[str], Collection[str]] | None = None,
        wall_clock: Callable[[], float] = time.time,
        store_factory: StoreFactory,
    ) -> None:
        self.settings = settings or StateSettings()
        self._store_factory = store_factory
        """Makes empty documents: pycrdt natively, yjs in the browser (p2pkube.browser)."""
        self._data_dir = data_dir
        self._is_compactor = is_compactor or _always
        self._relay_exclude = relay_exclude or (lambda peer_id: ())
        """Peers that need not get an update relayed from a given peer, because that peer is
        linked to them and forwards it itself (membership knows; see Membership.relay_exclude).
        Anti-entropy repairs a copy missed through a stale neighbour list."""
        self._hlc = HybridClock(wall_clock, int(self.settings.max_clock_skew * 1000))
        self._client_id = 0
        self._generation = GENESIS
        self._store: StateStore | None = None
        self._store_unsubscribe: list[Callable[[], None]] = []
        self._persister: Persister | None = None
        self._peers: dict[str, SendFn] = {}
        self._budgets: dict[str, LinkBudget] = {}
        """Per attached peer: its update byte budget and our unanswered step 1s."""
        self._caught_up = False
        """Whether a peer's step 2 was applied at least once (see `synced_with_a_peer`)."""
        self._change_cbs: list[ChangeCallback] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stats = StateStats()
        self._doc_size: int | None = None
        self._closed = False
        self._fetch: _Fetch | None = None
        self._nudged: dict[str, float] = {}
        self._repairs: dict[tuple[str, str], bytes] = {}
        """Versions to re-put after the current transaction (conflict repair)."""
        self._value_bytes = 0
        """Estimated fresh-document bytes of all live values (kept by `_on_entry`)."""
        self._tombstone_bucket_ms = max(1, min(60_000, self._ttl_ms() // TOMBSTONE_BUCKETS_PER_TTL))
        """Fixed here: changing it later would subtract from the wrong buckets."""
        self._tombstone_bytes: dict[int, int] = {}
        """Estimated bytes of tombstones by stamp time bucket (wall // bucket ms):
        expiry is time-based, so the live estimate must know their ages. Kept as
        buckets, not per key: each change event carries the old blob, hence the
        bucket to subtract from, and a ttl of deletes is at most ~64 buckets (1440
        for the 24 h default) plus older ones until the next compaction."""
        self._tombstone_count = 0

    # -- lifecycle ---------------------------------------------------------
    async def open(self) -> None:
        """Load snapshot + log (if persistent) and start the background tasks."""
        if self._store is not None or self._closed:
            raise RuntimeError("ClusterState can be opened once")
        self._client_id = new_client_id()  # a fresh random client id on every start
        store = self._store_factory(self._client_id)
        # Watchers and the entry observer see the replay (origin LOAD); the update
        # callback (persist + relay) is subscribed only after it.
        self._store_unsubscribe = [
            store.on_entry_change(self._on_entry),
            store.on_change(self._dispatch_change),
        ]
        if self._data_dir is not None:
            persister = Persister(
                self._data_dir / "state",
                self._snapshot,
                self.settings.persist_settings(),
                clock_source=lambda: self._hlc.state,
            )
            loaded = await persister.open()
            self._persister = persister
            self._generation = loaded.generation
            self._hlc.restore(*loaded.clock)
            try:
                if loaded.snapshot is not None:
                    store.apply_update(loaded.snapshot, LOAD)
            except BaseException:
                await persister.close()
                raise
            for update in loaded.updates:
                try:
                    self._guarded(store.apply_update, update, LOAD)
                except SyncProtocolError:
                    log.exception("skipping an undecodable logged update")
        self._store_unsubscribe.append(store.on_update(self._on_update))
        self._store = store
        # A crash can lose a repair that was not yet durable; the replay above
        # detected it again (the log holds each update as its own record).
        self._apply_repairs()
        self._warn_future_versions(store)
        self._tasks = [
            asyncio.create_task(self._anti_entropy_loop(), name="state-anti-entropy"),
            asyncio.create_task(self._compaction_loop(), name="state-compaction"),
        ]

    async def close(self) -> None:
        """Stop the background tasks, flush and close persistence, forget peers."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._peers.clear()
        if self._persister is not None:
            await self._persister.close()
        for unsubscribe in self._store_unsubscribe:
            unsubscribe()
        self._store_unsubscribe.clear()
        if self._store is not None:
            self._store.close()

    async def __aenter__(self) -> ClusterState:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _store_from_entries(
        self, entries: Iterable[tuple[str, str, bytes]], client_id: int | None
    ) -> StateStore:
        """A fresh document holding ``(map, key, blob)`` entries, written in one transaction
        before anyone listens (the base of a new generation: no history)."""
        fresh = self._store_factory(client_id)
        with fresh.transaction(LOAD):
            for map_name, key, blob in entries:
                fresh.put_raw(map_name, key, blob)
        return fresh

    def _require(self) -> StateStore:
        if self._store is None or self._closed:
            raise RuntimeError("ClusterState is not open")
        return self._store

    @property
    def store(self) -> StateStore:
        """The current generation's document (read-mostly: writes through it bypass
        versioning and are not awaited)."""
        return self._require()

    @property
    def client_id(self) -> int:
        """This run's Yjs client id (also the writer id in stamps and the creator id
        of generations this node builds)."""
        self._require()
        return self._client_id

    @property
    def generation(self) -> Generation:
        """The generation of the current document."""
        return self._generation

    # -- reads -------------------------------------------------------------
    def version(self, map_name: str, key: str) -> Version | None:
        """The stored version at `map_name[key]`, tombstones included (None if absent
        or undecodable)."""
        return inspect_blob(self._require().get_raw(map_name, key))

    def get(self, map_name: str, key: str) -> Any | None:
        """Decoded value at `map_name[key]`, or None (absent or deleted)."""
        blob = self._require().get_raw(map_name, key)
        if blob is None:
            return None
        version = self._decode(map_name, key, blob)
        return None if version is None or version.tombstone else version.value

    def items(self, map_name: str, prefix: str = "") -> list[tuple[str, Any]]:
        """All (key, value) pairs of a map whose key starts with ``prefix``, deleted keys
        hidden. Keys are matched before values are decoded: decoding is what a scan costs
        (the 10 Node objects among 1,000 pods: 0.6 ms instead of 13.5 ms)."""
        out: list[tuple[str, Any]] = []
        for key, blob in self._require().raw_items(map_name):
            if not key.startswith(prefix):
                continue
            version = self._decode(map_name, key, blob)
            if version is not None and not version.tombstone:
                out.append((key, version.value))
        return out

    def keys(self, map_name: str, prefix: str = "") -> list[str]:
        """All keys of a map (starting with ``prefix``), deleted keys hidden."""
        return [key for key, _ in self.items(map_name, prefix)]

    @staticmethod
    def _decode(map_name: str, key: str, blob: bytes) -> Version | None:
        """Decode a stored blob; garbage (a buggy or hostile peer) reads as absent."""
        try:
            return decode_version(blob)
        except Exception:
            log.warning("undecodable value at %s/%s ignored", map_name, key)
            return None

    def state_vector(self) -> bytes:
        """Encoded state vector of the current document."""
        return self._require().state_vector()

    # -- writes ------------------------------------------------------------
    async def put(self, map_name: str, key: str, value: Any) -> None:
        """Write `map_name[key] = value`; returns once it is durable. ValueTooLarge (nothing
        written) when the encoded value exceeds `max_object_bytes`."""
        store = self._require()
        _check_map(map_name)
        _check_key(key)
        stamp = self._stamp_for(store, map_name, key)
        blob = encode_version(stamp, value)
        size = len(blob) - header_size(blob)  # the value without its stamp header
        _check_size(map_name, key, size, self.settings.max_object_bytes)
        store.put_raw(map_name, key, blob)
        await self.flush()

    async def delete(self, map_name: str, key: str) -> bool:
        """Delete `map_name[key]` (writes a tombstone); returns, once durable, whether
        a value was there."""
        existed = self._delete(self._require(), map_name, key)
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
        batch = WriteBatch(self.settings.max_object_bytes)
        yield batch
        self.apply_batch(batch.ops)
        await self.flush()

    def apply_batch(self, ops: Iterable[tuple[str, str, Any, bool]]) -> None:
        """Apply (map, key, value, is_delete) ops in one transaction, without waiting.

        Every op is validated first: Yjs has no rollback."""
        store = self._require()
        ops = list(ops)
        for map_name, key, value, is_delete in ops:
            _check_map(map_name)
            _check_key(key)
            if not is_delete:
                size = len(encode_value(value))
                _check_size(map_name, key, size, self.settings.max_object_bytes)
        with store.transaction(LOCAL):
            for map_name, key, value, is_delete in ops:
                if is_delete:
                    self._delete(store, map_name, key)
                else:
                    stamp = self._stamp_for(store, map_name, key)
                    store.put_raw(map_name, key, encode_version(stamp, value))

    def _stamp_for(self, store: StateStore, map_name: str, key: str) -> Stamp:
        """A stamp for a new write of `key`: from the hybrid clock, and in any case
        after the version it replaces (which may come from a clock ahead), unless that
        version is stamped beyond now + max_clock_skew: no peer would take a stamp after it,
        so it is overwritten with a stamp of our clock (it can only have been written before
        stamps were bounded, or by our own clock before it stepped back)."""
        wall, counter = self._hlc.now()
        stamp = Stamp(wall, counter, self._client_id)
        current = read_stamp(store.get_raw(map_name, key))
        if current is not None and stamp <= current[0]:
            if self._hlc.beyond_bound(current[0].wall):
                self._ignore_future_version(map_name, key, current[0], "overwriting it")
            else:
                stamp = current[0].successor(self._client_id)
        return stamp

    def _ignore_future_version(self, map_name: str, key: str, stamp: Stamp, what: str) -> None:
        self._stats.future_versions_ignored += 1
        log.warning(
            "%s/%s holds a version stamped %.1f s ahead, beyond state.max_clock_skew: %s",
            map_name,
            key,
            (stamp.wall - self._hlc.wall_ms()) / 1000,
            what,
        )

    def _warn_future_versions(self, store: StateStore) -> None:
        """Say at open if the document holds versions no peer would take any more."""
        count = sum(
            1
            for map_name in MAP_NAMES
            for _, blob in store.raw_items(map_name)
            if (header := read_stamp(blob)) is not None and self._hlc.beyond_bound(header[0].wall)
        )
        if count:
            log.warning(
                "the state holds %d versions stamped beyond now + state.max_clock_skew (written "
                "before stamps were bounded, or while this clock was ahead): writes replace "
                "them, repairs do not restore them, the next compaction drops them",
                count,
            )

    def _delete(self, store: StateStore, map_name: str, key: str) -> bool:
        """Write a tombstone over a value; False (nothing written) if there is none."""
        _check_map(map_name)
        current = read_stamp(store.get_raw(map_name, key))
        if current is None or current[1]:
            return False
        store.put_raw(map_name, key, encode_tombstone(self._stamp_for(store, map_name, key)))
        return True

    async def flush(self) -> None:
        """Wait until every update applied so far (local or remote) is on disk."""
        if self._persister is not None:
            await self._persister.flush()

    # -- watchers ----------------------------------------------------------
    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call `callback(map_name, changed_keys, origin)` after each change.

        `origin` is LOCAL, LOAD (replayed from disk at open), REPAIR (a newer version
        re-put after a conflict), SWITCH (a generation switch changed these keys) or
        the peer id the update came from. Runs on the event loop right after the
        transaction: keep it short (push to a queue).
        """
        self._change_cbs.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._change_cbs.remove(callback)

        return unsubscribe

    def _dispatch_change(self, map_name: str, keys: set[str], origin: object) -> None:
        if origin is SWITCH:
            return  # `_switch` reports the net visible change of the whole switch
        self._notify(map_name, keys, origin)

    def _notify(self, map_name: str, keys: set[str], origin: object) -> None:
        for cb in list(self._change_cbs):
            try:
                cb(map_name, keys, origin)
            except Exception:
                log.exception("state watcher failed")

    # -- conflict repair, clock, size accounting -----------------------------
    def _on_entry(
        self, map_name: str, key: str, old: bytes | None, new: bytes | None, origin: object
    ) -> None:
        """Every visible change of an entry: account sizes; for changes that came
        from elsewhere, advance the clock and queue a repair when Yjs let an older
        version replace a newer one."""
        old_header = read_stamp(old)
        new_header = read_stamp(new)
        self._account(map_name, key, old, old_header, -1)
        self._account(map_name, key, new, new_header, +1)
        if origin is LOCAL or origin is REPAIR or origin is SWITCH:
            return  # our own writes are newer than what they replace by construction
        if new_header is not None:
            self._hlc.observe(new_header[0].wall, new_header[0].counter)
        if old_header is not None and (new_header is None or new_header[0] < old_header[0]):
            queued = read_stamp(self._repairs.get((map_name, key)))
            if queued is None or queued[0] < old_header[0]:
                assert old is not None
                self._repairs[(map_name, key)] = old

    def _account(
        self,
        map_name: str,
        key: str,
        blob: bytes | None,
        header: tuple[Stamp, bool] | None,
        sign: int,
    ) -> None:
        if blob is None or header is None:
            return
        stamp, tombstone = header
        if tombstone:
            bucket = stamp.wall // self._tombstone_bucket_ms
            size = self._tombstone_bytes.get(bucket, 0) + sign * _entry_size(map_name, key, blob)
            if size:
                self._tombstone_bytes[bucket] = size
            else:
                self._tombstone_bytes.pop(bucket, None)
            self._tombstone_count += sign
        else:
            self._value_bytes += sign * _entry_size(map_name, key, blob)

    def _recount(self, store: StateStore) -> None:
        """Rebuild the size accounting from scratch (after a generation switch)."""
        self._value_bytes = 0
        self._tombstone_bytes.clear()
        self._tombstone_count = 0
        for map_name in MAP_NAMES:
            for key, blob in store.raw_items(map_name):
                self._account(map_name, key, blob, read_stamp(blob), +1)

    def _apply_repairs(self) -> None:
        """Re-put, in one transaction, every newer version Yjs let an older one replace.

        The re-put is a new Yjs item causally after the older version, so it wins
        everywhere unless yet another concurrent write races it, which triggers the
        same repair again at whoever held the newer version (docs/state.md).
        """
        if not self._repairs or self._store is None:
            return
        repairs, self._repairs = self._repairs, {}
        store = self._store
        with store.transaction(REPAIR):
            for (map_name, key), blob in repairs.items():
                wanted = read_stamp(blob)
                current = read_stamp(store.get_raw(map_name, key))
                if wanted is None or (current is not None and current[0] >= wanted[0]):
                    continue
                if self._hlc.beyond_bound(wanted[0].wall):
                    self._ignore_future_version(map_name, key, wanted[0], "not restoring it")
                    continue
                store.put_raw(map_name, key, blob)
                self._stats.lww_repairs += 1

    def _ttl_ms(self) -> int:
        return int(self.settings.tombstone_ttl * 1000)

    def _live_estimate(self) -> int:
        """Bytes of the document a compaction would build now (O(minutes of deletes))."""
        horizon = self._hlc.wall_ms() - self._ttl_ms()
        kept = sum(
            size
            for bucket, size in self._tombstone_bytes.items()
            if (bucket + 1) * self._tombstone_bucket_ms > horizon
        )
        return self._value_bytes + kept

    # -- peers -------------------------------------------------------------
    def attach_peer(self, peer_id: str, send: SendFn) -> None:
        """Start syncing with a neighbour: remember its `send`, send our step 1.

        Ignored once closed (a link can come up while the agent shuts down)."""
        if self._closed:
            return
        self._require()
        self._peers[peer_id] = send
        s = self.settings
        self._budgets[peer_id] = LinkBudget(
            TokenBucket(s.link_update_bytes_per_second, s.link_update_burst_bytes)
        )
        self._nudged.pop(peer_id, None)
        self._send_step1(peer_id, send)

    def detach_peer(self, peer_id: str) -> None:
        """Stop syncing with a neighbour (its late frames are ignored)."""
        self._peers.pop(peer_id, None)
        self._budgets.pop(peer_id, None)
        self._nudged.pop(peer_id, None)
        if self._fetch is not None and self._fetch.peer == peer_id:
            self._fetch = None  # ask the next peer that advertises it

    @property
    def peers(self) -> list[str]:
        """Ids of the attached peers."""
        return list(self._peers)

    def receive(self, peer_id: str, message: bytes) -> None:
        """Handle one frame from `peer_id`.

        Raises SyncProtocolError on a malformed frame, an impossible generation, or
        an update the CRDT cannot decode; the state is unchanged then and the caller
        should drop and log the peer. Frames arriving after `close()` (the transport
        closes after us) are ignored.
        """
        if self._closed:
            return
        store = self._require()
        send = self._peers.get(peer_id)
        if send is None:
            log.debug("frame from detached peer %s ignored", peer_id)
            return
        try:
            frame = decode_state_message(message, self.settings.max_message_bytes)
            generation = frame.generation
            if generation.number > self._generation.number + self.settings.max_generation_jump:
                raise SyncProtocolError(
                    f"generation {generation} is implausibly far ahead of {self._generation}"
                )
            if frame.kind is SyncMessageKind.STEP1:
                self._stats.sync_step1_received += 1
                decode_state_vector(frame.payload, self.settings.max_state_vector_entries)
            if generation < self._generation:
                self._stats.stale_frames += 1
                self._nudge(peer_id, send)
                return
            if generation > self._generation:
                self._newer_generation(peer_id, send, frame.generation, frame.kind, frame.payload)
                return
            if frame.kind is SyncMessageKind.STEP1:
                diff = self._guarded(store.encode_diff, frame.payload)
                self._stats.sync_step2_bytes_sent += len(diff)
                self._send(
                    peer_id, send, encode_state_message(self._generation, encode_sync_step2(diff))
                )
                return
            if frame.kind is SyncMessageKind.STEP2:
                self._stats.sync_step2_received += 1
                self._stats.sync_step2_bytes_received += len(frame.payload)
            else:
                self._stats.updates_received += 1
            if not self._admit(peer_id, frame.kind, frame.payload):
                return
            self._guarded(store.apply_update, frame.payload, peer_id)
            if frame.kind is SyncMessageKind.STEP2:
                self._caught_up = True
            self._apply_repairs()
        except SyncProtocolError:
            self._stats.protocol_errors += 1
            raise

    def _nudge(self, peer_id: str, send: SendFn) -> None:
        """Tell a peer on an older generation about ours (it then fetches ours).

        Its writes in that generation are not lost: it carries them over itself
        when it switches."""
        now = time.monotonic()
        last = self._nudged.get(peer_id)
        if last is not None and now - last < self.settings.generation_nudge_interval:
            return
        self._nudged[peer_id] = now
        self._send_step1(peer_id, send)

    def _newer_generation(
        self,
        peer_id: str,
        send: SendFn,
        generation: Generation,
        kind: SyncMessageKind,
        payload: bytes,
    ) -> None:
        """A frame of a newer generation: fetch that document, or switch to it if this
        is the answer to our fetch."""
        fetch = self._fetch
        now = time.monotonic()
        if (
            kind is SyncMessageKind.STEP2
            and fetch is not None
            and fetch.generation == generation
            and fetch.peer == peer_id
        ):
            self._stats.sync_step2_bytes_received += len(payload)
            base: StateStore | None = None
            try:
                if not self._admit(peer_id, kind, payload):
                    return  # the fetch stays outstanding until its deadline, then is asked again
                base = self._store_factory(self._client_id)
                self._guarded(base.apply_update, payload, peer_id)
            except SyncProtocolError:
                if base is not None:
                    base.close()
                self._fetch = None
                raise
            self._switch(generation, base)
            return
        if fetch is None or generation > fetch.generation or now >= fetch.deadline:
            # Everything else of that generation is useless without its document.
            self._fetch = _Fetch(generation, peer_id, now + self.settings.generation_fetch_timeout)
            self._stats.generation_fetches += 1
            log.info("fetching state generation %s from %s", generation, peer_id)
            frame = encode_state_message(generation, encode_sync_step1(EMPTY_STATE_VECTOR))
            if self._send(peer_id, send, frame):
                self._asked(peer_id)

    def _asked(self, peer_id: str) -> None:
        budget = self._budgets.get(peer_id)
        if budget is not None:
            budget.asked()

    def _admit(self, peer_id: str, kind: SyncMessageKind, payload: bytes) -> bool:
        """Whether an update or step 2 from `peer_id` may be applied: within the link's
        budget, and no value stamped too far ahead or too large (admission.py). A refusal
        is counted and logged with the link; SyncProtocolError if the update is unreadable."""
        budget = self._budgets.get(peer_id)
        if budget is None:
            return False
        now = time.monotonic()
        s = self.settings
        if not budget.admit(len(payload), step2=kind is SyncMessageKind.STEP2, now=now):
            self._stats.budget_drops += 1
            self._stats.budget_dropped_bytes += len(payload)
            self._count_refusal(
                peer_id,
                budget,
                now,
                f"dropped {_frame_name(kind)} of {len(payload):,} bytes from peer {peer_id}: "
                f"over the link's budget (state.link_update_bytes_per_second "
                f"{s.link_update_bytes_per_second:,}, burst {s.link_update_burst_bytes:,}); "
                "anti-entropy fetches it again",
            )
            return False
        refusal = self._guarded(
            lambda: check_update(
                payload,
                wall_ms=self._hlc.wall_ms(),
                max_skew_ms=self._hlc.max_skew_ms,
                max_value_bytes=s.max_object_bytes,
            )
        )
        if refusal is None:
            return True
        if refusal.kind is RefusalKind.FUTURE_STAMP:
            self._stats.refused_future_stamps += 1
        else:
            self._stats.refused_oversize += 1
        self._count_refusal(
            peer_id, budget, now, f"refused {_frame_name(kind)} from peer {peer_id}: {refusal}"
        )
        return False

    def _count_refusal(self, peer_id: str, budget: LinkBudget, now: float, message: str) -> None:
        """Count a refused or dropped update for its link; log it (paced per link)."""
        by_peer = self._stats.refusals_by_peer
        by_peer[peer_id] = by_peer.pop(peer_id, 0) + 1  # re-inserted: most recent last
        if len(by_peer) > MAX_PEERS_IN_REFUSAL_STATS:
            del by_peer[next(iter(by_peer))]
        folded = budget.pacer.report(now, self.settings.refusal_log_interval)
        if folded is not None:
            more = f" ({folded - 1} more since the last report)" if folded > 1 else ""
            log.warning("%s%s", message, more)

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

    def _send(self, peer_id: str, send: SendFn, data: bytes) -> bool:
        """Hand a frame to the transport; False (counted) if it would not take it."""
        try:
            send(data)
        except Exception:
            # The transport's queue is full or closing: anti-entropy repairs it.
            self._stats.send_errors += 1
            log.debug("send to %s failed", peer_id, exc_info=True)
            return False
        return True

    def _send_step1(self, peer_id: str, send: SendFn) -> None:
        sv = self._require().state_vector()
        self._stats.sync_step1_sent += 1
        if self._send(peer_id, send, encode_state_message(self._generation, encode_sync_step1(sv))):
            self._asked(peer_id)

    def _on_update(self, update: bytes, origin: object) -> None:
        """Persist and relay every transaction (except replays from disk)."""
        if origin is LOAD:
            return
        self._doc_size = None
        if self._persister is not None:
            self._persister.append(update)
        frame: bytes | None = None
        skip = self._relay_exclude(origin) if isinstance(origin, str) else ()
        for peer_id, send in list(self._peers.items()):
            if peer_id == origin or peer_id in skip:
                continue
            if frame is None:
                frame = encode_state_message(self._generation, encode_update(update))
            self._stats.updates_sent += 1
            self._send(peer_id, send, frame)

    async def _anti_entropy_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.anti_entropy_interval)
            if self._store is None or self._closed:
                return
            for peer_id, send in list(self._peers.items()):
                self._send_step1(peer_id, send)

    # -- generations ---------------------------------------------------------
    def _snapshot(self) -> Snapshot:
        """What the persister writes: the current document with its generation and
        clock (taken on the loop, so consistent with every update appended so far)."""
        return Snapshot(self._generation, self._hlc.state, self._require().encode_state())

    def _compacted_entries(self, store: StateStore) -> list[tuple[str, str, bytes]]:
        """The newest version of every key, minus expired tombstones and garbage."""
        horizon = self._hlc.wall_ms() - self._ttl_ms()
        out: list[tuple[str, str, bytes]] = []
        for map_name in sorted(MAP_NAMES):
            for key, blob in store.raw_items(map_name):
                header = read_stamp(blob)
                if header is None or (header[1] and header[0].wall < horizon):
                    continue
                if self._hlc.beyond_bound(header[0].wall):
                    self._ignore_future_version(map_name, key, header[0], "compacting it away")
                    continue
                out.append((map_name, key, blob))
        return out

    def encode_compacted_state(self) -> bytes:
        """The document a compaction would build now, encoded (O(n); benchmarks/tests)."""
        store = self._require()
        fresh = self._store_from_entries(self._compacted_entries(store), self._client_id)
        state = fresh.encode_state()
        fresh.close()
        return state

    def _doc_size_now(self) -> int:
        if self._doc_size is None:
            self._doc_size = len(self._require().encode_state())
        return self._doc_size

    def maybe_compact(self) -> bool:
        """One compaction check (what the background task runs): start a new
        generation if this node is the compactor and the document exceeds
        max(compact_min_bytes, compact_ratio x live size). Returns whether it did."""
        if self._closed or self._store is None:
            return False
        if self._fetch is not None and time.monotonic() < self._fetch.deadline:
            return False  # a newer generation is on its way: compacting is moot
        s = self.settings
        doc_size = self._doc_size_now()
        if doc_size <= s.compact_min_bytes:
            return False
        if doc_size <= s.compact_ratio * self._live_estimate():
            return False
        try:
            eligible = self._is_compactor()
        except Exception:
            log.exception("is_compactor callback failed; not compacting")
            return False
        if not eligible:
            return False
        base = self._store_from_entries(self._compacted_entries(self._store), self._client_id)
        live = len(base.encode_state())
        if doc_size <= max(s.compact_min_bytes, s.compact_ratio * live):
            base.close()  # the estimate was off; the next check re-estimates
            return False
        self._start_generation(base)
        return True

    async def compact(self) -> Generation:
        """Start a new generation now regardless of thresholds; returns once it is
        durable (tests, operators)."""
        store = self._require()
        base = self._store_from_entries(self._compacted_entries(store), self._client_id)
        generation = self._start_generation(base)
        await self.flush()
        return generation

    def _start_generation(self, base: StateStore) -> Generation:
        generation = Generation(self._generation.number + 1, self._client_id)
        before = self._doc_size_now()
        self._stats.compactions += 1
        self._switch(generation, base)
        log.info(
            "compacted state into generation %s: %d -> %d bytes",
            generation,
            before,
            self._doc_size_now(),
        )
        return generation

    def _switch(self, generation: Generation, new: StateStore) -> None:
        """Replace the document by `new` (generation `generation`), carrying over
        every version of the old document that is newer than the one in `new`.

        Synchronous, so no write or frame interleaves with it. Carried versions keep
        their stamps (concurrent carries of one version agree) and are relayed as
        ordinary updates of the new generation; conflicts between carries of
        different versions are resolved by the usual repair.
        """
        old = self._require()
        now_ms = self._hlc.wall_ms()
        ttl_ms = self._ttl_ms()
        carries: list[tuple[str, str, bytes]] = []
        changed: dict[str, set[str]] = {}
        for map_name in sorted(MAP_NAMES):
            new_entries = dict(new.raw_items(map_name))
            new_stamps: dict[str, Stamp] = {}
            for key, blob in new_entries.items():
                header = read_stamp(blob)
                if header is not None:
                    new_stamps[key] = header[0]
                    self._hlc.observe(header[0].wall, header[0].counter)
            old_entries = dict(old.raw_items(map_name))
            for key, blob in old_entries.items():
                mine = read_stamp(blob)
                if mine is None:
                    continue
                theirs = new_stamps.get(key)
                if theirs is not None and theirs >= mine[0]:
                    continue
                if self._hlc.beyond_bound(mine[0].wall):
                    self._ignore_future_version(map_name, key, mine[0], "not carrying it over")
                    continue

                if key not in new_entries and mine[1] and now_ms - mine[0].wall > ttl_ms:
                    continue  # an expired tombstone: the compactor dropped it on purpose
                carries.append((map_name, key, blob))
                new_entries[key] = blob
            changed[map_name] = {
                key
                for key in old_entries.keys() | new_entries.keys()
                if old_entries.get(key) != new_entries.get(key)
                and _visible(old_entries.get(key)) != _visible(new_entries.get(key))
            }
        for unsubscribe in self._store_unsubscribe:
            unsubscribe()
        self._repairs.clear()
        self._store = new
        self._generation = generation
        self._fetch = None
        self._nudged.clear()
        self._doc_size = None
        self._recount(new)
        self._store_unsubscribe = [
            new.on_entry_change(self._on_entry),
            new.on_change(self._dispatch_change),
            new.on_update(self._on_update),
        ]
        if self._persister is not None:
            self._persister.switch_generation()
        if carries:
            with new.transaction(SWITCH):
                for map_name, key, blob in carries:
                    new.put_raw(map_name, key, blob)
        old.close()
        self._stats.generation_switches += 1
        log.info(
            "switched to state generation %s (%d versions carried over)",
            generation,
            len(carries),
        )
        for map_name, keys in changed.items():
            if keys:
                self._notify(map_name, keys, SWITCH)
        # Advertise: peers on the old generation fetch this one, peers on this one
        # send what we miss.
        for peer_id, send in list(self._peers.items()):
            self._send_step1(peer_id, send)

    async def _compaction_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.compact_check_interval * random.uniform(0.5, 1.5))
            if self._store is None or self._closed:
                return
            try:
                self.maybe_compact()
            except Exception:
                log.exception("state compaction check failed")

    # -- stats -------------------------------------------------------------
    @property
    def synced_with_a_peer(self) -> bool:
        """Whether a peer's answer to our state vector was applied at least once (cheap)."""
        return self._caught_up

    @property
    def stats(self) -> StateStats:
        """A copy of the counters, with the doc size (cached until the next change)."""
        store = self._require()
        out = replace(
            self._stats,
            peers=len(self._peers),
            doc_size=self._doc_size_now(),
            live_size=self._live_estimate(),
            generation=self._generation.number,
            generation_creator=self._generation.creator,
            tombstones=self._tombstone_count,
            clock_skew_clamps=self._hlc.clamped,
            clock_lowered=self._hlc.lowered,
            refusals_by_peer=dict(self._stats.refusals_by_peer),
            state_vector=decode_state_vector(store.state_vector()),
        )
        if self._persister is not None:
            out.bytes_persisted = self._persister.stats.bytes_persisted
            out.snapshots_written = self._persister.stats.snapshots_written
            out.disk_writes = self._persister.stats.disk_writes
            out.corrupt_log_bytes = self._persister.stats.corrupt_log_bytes
        return out

    def measure_growth(self) -> tuple[int, int]:
        """(encoded document bytes, bytes of the document a compaction would build now):
        their ratio is the overhead compaction removes (O(n); not for hot paths)."""
        store = self._require()
        return len(store.encode_state()), len(self.encode_compacted_state())

    def stats_dict(self) -> dict[str, Any]:
        """The stats as JSON-ready camelCase (the agent's `/v1/status` "state" section)."""
        stats = self.stats
        out: dict[str, Any] = {"clientId": self.client_id, "generationId": str(self._generation)}
        for f in fields(stats):
            camel = "".join(
                part if i == 0 else part.capitalize() for i, part in enumerate(f.name.split("_"))
            )
            out[camel] = getattr(stats, f.name)
        out["stateVector"] = {str(k): v for k, v in stats.state_vector.items()}
        return out
