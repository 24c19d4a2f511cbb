"""ClusterState: the key-value API over the replicated state document.

`ClusterState` ties the pieces of this package together for one node: the document
(`store.py`, injected through `store_factory`), versioned values (`versioned.py`), the
disk (`persist.py`), the sync sessions with the peers (`peersync.py`), compaction into
generations (`compaction.py`) and size accounting (`sizes.py`). Here live the reads and
writes, the watch callbacks, the lifecycle and the generation switch.

Values are versioned (`versioned.py`): each carries a hybrid-clock stamp and a
delete writes a tombstone. When Yjs lets a concurrent write with the *lower*
stamp win (it picks the higher client id), the peer that held the higher version
re-puts it, so every peer converges on the highest stamp: last writer wins by
time, not by client id.

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
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from .compaction import Compactor, plan_switch
from .peersync import PeerSync, SendFn, guarded
from .persist import Persister, Snapshot
from .settings import StateSettings
from .sizes import SizeAccount, StateStats, ValueTooLarge, check_size
from .store import (
    LOAD,
    LOCAL,
    MAP_NAMES,
    REPAIR,
    SWITCH,
    ChangeCallback,
    StateStore,
    StoreFactory,
    check_key,
    check_map,
    encode_value,
    new_client_id,
)
from .sync import GENESIS, Generation, SyncProtocolError, decode_state_vector
from .versioned import (
    HybridClock,
    Stamp,
    Version,
    decode_version,
    encode_packed_version,
    encode_tombstone,
    inspect_blob,
    read_stamp,
)

__all__ = ["ClusterState", "StateSettings", "StateStats", "ValueTooLarge", "WriteBatch"]

log = logging.getLogger(__name__)


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
        check_map(map_name)
        check_key(key)
        check_size(map_name, key, len(encode_value(value)), self._max_value_bytes)
        self.ops.append((map_name, key, value, False))

    def delete(self, map_name: str, key: str) -> None:
        """Queue the removal of `map_name[key]`."""
        check_map(map_name)
        self.ops.append((map_name, key, None, True))


def _always() -> bool:
    return True


class ClusterState:
    """The replicated cluster state of one node.

    `is_compactor()` says whether this node may start a new generation right now;
    the default (always) is safe, since concurrent compactions converge on one
    generation, but wastes work: the agent should pass e.g. "I am the Ready node
    with the lowest id". `relay_exclude(peer)` names the peers an update from `peer`
    need not be relayed to (see PeerSync). `wall_clock` (seconds since the epoch) feeds
    the hybrid clock and tombstone expiry; tests inject a fake one. `store_factory`
    makes the empty documents: the native agent passes `pycrdt_store.PycrdtStore`, the
    browser its `YjsStore`; nothing in this package imports a CRDT library.
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
        self._data_dir = data_dir
        self._hlc = HybridClock(wall_clock, int(self.settings.max_clock_skew * 1000))
        self._client_id = 0
        self._generation = GENESIS
        self._store: StateStore | None = None
        self._store_unsubscribe: list[Callable[[], None]] = []
        self._persister: Persister | None = None
        self._change_cbs: list[ChangeCallback] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stats = StateStats()
        self._doc_size: int | None = None
        self._closed = False
        self._repairs: dict[tuple[str, str], bytes] = {}
        """Versions to re-put after the current transaction (conflict repair)."""
        self._compactor = Compactor(
            self.settings,
            self._hlc,
            is_compactor=is_compactor or _always,
            ignore_future=self._ignore_future_version,
        )
        self._sizes = SizeAccount(self._compactor.ttl_ms())
        """The live-size estimate, kept by `_on_entry`."""
        self._sync = PeerSync(
            self.settings,
            self._stats,
            self._hlc,
            document=self._require,
            generation=lambda: self._generation,
            new_document=lambda: self._store_factory(self._client_id),
            switch=self._switch,
            applied=self._apply_repairs,
            relay_exclude=relay_exclude,
        )

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
                    guarded(store.apply_update, update, LOAD)
                except SyncProtocolError:
                    log.exception("skipping an undecodable logged update")
        self._store_unsubscribe.append(store.on_update(self._on_update))
        self._store = store
        # A crash can lose a repair that was not yet durable; the replay above
        # detected it again (the log holds each update as its own record).
        self._apply_repairs()
        self._warn_future_versions(store)
        self._tasks = [
            asyncio.create_task(self._sync.anti_entropy_loop(), name="state-anti-entropy"),
            asyncio.create_task(
                self._compactor.loop(self.maybe_compact, self._running), name="state-compaction"
            ),
        ]

    async def close(self) -> None:
        """Stop the background tasks, flush and close persistence, forget peers."""
        if self._closed:
            return
        self._closed = True
        self._sync.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
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

    def _running(self) -> bool:
        return self._store is not None and not self._closed

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
        hidden. Keys are matched before values are read and decoded: decoding is what a scan
        costs (the 10 Node objects among 1,000 pods: 0.6 ms instead of 13.5 ms), then reading
        (among 3,000 entries: 0.9 ms instead of 4.3 ms; every scheduling pass reads them)."""
        out: list[tuple[str, Any]] = []
        for key, blob in self._require().raw_items(map_name, prefix):
            version = self._decode(map_name, key, blob)
            if version is not None and not version.tombstone:
                out.append((key, version.value))
        return out

    def write_times(self, map_name: str, prefix: str = "") -> dict[str, float]:
        """When each live key of a map (starting with ``prefix``) was last written: the wall
        time of its version's stamp, in seconds, read from the stamp header alone (no value
        decoded: pruning thousands of events by age costs ~1 ms, not a second)."""
        out: dict[str, float] = {}
        for key, blob in self._require().raw_items(map_name, prefix):
            header = read_stamp(blob)
            if header is not None and not header[1]:
                out[key] = header[0].wall / 1000
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
        check_map(map_name)
        check_key(key)
        stamp = self._stamp_for(store, map_name, key)
        packed_value = encode_value(value)
        check_size(map_name, key, len(packed_value), self.settings.max_object_bytes)
        store.put_raw(map_name, key, encode_packed_version(stamp, packed_value))
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
        packed: list[tuple[str, str, bytes | None]] = []
        for map_name, key, value, is_delete in ops:
            check_map(map_name)
            check_key(key)
            if is_delete:
                packed.append((map_name, key, None))
            else:
                blob = encode_value(value)
                check_size(map_name, key, len(blob), self.settings.max_object_bytes)
                packed.append((map_name, key, blob))
        with store.transaction(LOCAL):
            for map_name, key, packed_value in packed:
                if packed_value is None:
                    self._delete(store, map_name, key)
                else:
                    stamp = self._stamp_for(store, map_name, key)
                    store.put_raw(map_name, key, encode_packed_version(stamp, packed_value))

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
        check_map(map_name)
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
        self._sizes.add(map_name, key, old, old_header, -1)
        self._sizes.add(map_name, key, new, new_header, +1)
        if origin is LOCAL or origin is REPAIR or origin is SWITCH:
            return  # our own writes are newer than what they replace by construction
        if new_header is not None:
            self._hlc.observe(new_header[0].wall, new_header[0].counter)
        if old_header is not None and (new_header is None or new_header[0] < old_header[0]):
            queued = read_stamp(self._repairs.get((map_name, key)))
            if queued is None or queued[0] < old_header[0]:
                assert old is not None
                self._repairs[(map_name, key)] = old

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

    def _live_estimate(self) -> int:
        """Bytes of the document a compaction would build now (O(minutes of deletes))."""
        return self._sizes.live_estimate(self._compactor.horizon_ms())

    # -- peers (peersync.py) -------------------------------------------------
    def attach_peer(self, peer_id: str, send: SendFn) -> None:
        """Start syncing with a neighbour: remember its `send`, send our step 1.

        Ignored once closed (a link can come up while the agent shuts down)."""
        self._sync.attach_peer(peer_id, send)

    def detach_peer(self, peer_id: str) -> None:
        """Stop syncing with a neighbour (its late messages are ignored)."""
        self._sync.detach_peer(peer_id)

    @property
    def peers(self) -> list[str]:
        """Ids of the attached peers."""
        return self._sync.peers

    def receive(self, peer_id: str, message: bytes) -> None:
        """Handle one state message from `peer_id`.

        Raises SyncProtocolError on a malformed message, an impossible generation, or
        an update the CRDT cannot decode; the state is unchanged then and the caller
        should drop and log the peer. Messages arriving after `close()` (the transport
        closes after us) are ignored.
        """
        self._sync.receive(peer_id, message)

    def _on_update(self, update: bytes, origin: object) -> None:
        """Persist and relay every transaction (except replays from disk)."""
        if origin is LOAD:
            return
        self._doc_size = None
        if self._persister is not None:
            self._persister.append(update)
        self._sync.relay(update, origin)

    # -- generations (compaction.py) ---------------------------------------------
    def _snapshot(self) -> Snapshot:
        """What the persister writes: the current document with its generation and
        clock (taken on the loop, so consistent with every update appended so far)."""
        return Snapshot(self._generation, self._hlc.state, self._require().encode_state())

    def _build_generation(self) -> StateStore:
        return self._compactor.build(self._require(), self._store_factory, self._client_id)

    def encode_compacted_state(self) -> bytes:
        """The document a compaction would build now, encoded (O(n); benchmarks/tests)."""
        fresh = self._build_generation()
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
        if not self._running() or self._sync.fetching:
            return False  # closed, or a newer generation is on its way: compacting is moot
        doc_size = self._doc_size_now()
        if not self._compactor.due(doc_size, self._live_estimate):
            return False
        base = self._build_generation()
        if not self._compactor.confirmed(doc_size, base):
            base.close()  # the estimate was off; the next check re-estimates
            return False
        self._start_generation(base)
        return True

    async def compact(self) -> Generation:
        """Start a new generation now regardless of thresholds; returns once it is
        durable (tests, operators)."""
        generation = self._start_generation(self._build_generation())
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

        Synchronous, so no write or message interleaves with it. Carried versions keep
        their stamps (concurrent carries of one version agree) and are relayed as
        ordinary updates of the new generation; conflicts between carries of
        different versions are resolved by the usual repair.
        """
        old = self._require()
        plan = plan_switch(
            old, new, self._hlc, self._compactor.ttl_ms(), self._ignore_future_version
        )
        for unsubscribe in self._store_unsubscribe:
            unsubscribe()
        self._repairs.clear()
        self._store = new
        self._generation = generation
        self._sync.switched()
        self._doc_size = None
        self._sizes.recount(new)
        self._store_unsubscribe = [
            new.on_entry_change(self._on_entry),
            new.on_change(self._dispatch_change),
            new.on_update(self._on_update),
        ]
        if self._persister is not None:
            self._persister.switch_generation()
        if plan.carries:
            with new.transaction(SWITCH):
                for map_name, key, blob in plan.carries:
                    new.put_raw(map_name, key, blob)
        old.close()
        self._stats.generation_switches += 1
        log.info(
            "switched to state generation %s (%d versions carried over)",
            generation,
            len(plan.carries),
        )
        for map_name, keys in plan.changed.items():
            if keys:
                self._notify(map_name, keys, SWITCH)
        # Advertise: peers on the old generation fetch this one, peers on this one
        # send what we miss.
        self._sync.advertise()

    # -- stats -------------------------------------------------------------
    @property
    def synced_with_a_peer(self) -> bool:
        """Whether a peer's answer to our state vector was applied at least once (cheap)."""
        return self._sync.caught_up

    @property
    def stats(self) -> StateStats:
        """A copy of the counters, with the doc size (cached until the next change)."""
        store = self._require()
        out = replace(
            self._stats,
            peers=len(self._sync.peers),
            doc_size=self._doc_size_now(),
            live_size=self._live_estimate(),
            generation=self._generation.number,
            generation_creator=self._generation.creator,
            tombstones=self._sizes.tombstones,
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
