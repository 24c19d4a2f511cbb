"""The native StateStore: the cluster document as a pycrdt Doc (see store.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pycrdt import Doc, Map, MapEvent, TransactionEvent

from .store import (
    LOCAL,
    MAP_NAMES,
    ChangeCallback,
    EntryCallback,
    UpdateCallback,
    _check_map,
    _discard,
    decode_value,
    encode_value,
    new_client_id,
)

log = logging.getLogger(__name__)


class PycrdtStore:
    """`StateStore` backed by a native pycrdt (Yrs) document."""

    def __init__(self, client_id: int | None = None) -> None:
        self._doc: Doc = Doc(client_id=client_id if client_id is not None else new_client_id())
        self._maps: dict[str, Map[Any]] = {}
        self._subscriptions: list[tuple[Any, Any]] = []
        # Root maps are created in one transaction so that the store never emits a
        # spurious update later when a map is first touched.
        with self._doc.transaction():
            for name in sorted(MAP_NAMES):
                self._maps[name] = self._doc.get(name, type=Map)
        self._update_cbs: list[UpdateCallback] = []
        self._change_cbs: list[ChangeCallback] = []
        self._entry_cbs: list[EntryCallback] = []
        self._depth = 0
        self._origin: object = None
        self._pending_updates: list[bytes] = []
        self._pending_changes: list[tuple[str, list[tuple[str, bytes | None, bytes | None]]]] = []
        self._subscriptions.append((self._doc, self._doc.observe(self._on_txn)))
        for name, ymap in self._maps.items():
            self._subscriptions.append((ymap, ymap.observe(self._make_map_observer(name))))

    # -- observation -------------------------------------------------------
    def _on_txn(self, event: TransactionEvent) -> None:
        """Runs inside the Yrs commit: only record, dispatch after the commit."""
        self._pending_updates.append(bytes(event.update))

    def _make_map_observer(self, name: str) -> Callable[[MapEvent], None]:
        def observer(event: MapEvent) -> None:
            changes: dict[str, dict[str, Any]] = event.keys  # type: ignore[attr-defined]
            if changes:
                self._pending_changes.append(
                    (
                        name,
                        [
                            (key, _blob(change.get("oldValue")), _blob(change.get("newValue")))
                            for key, change in changes.items()
                        ],
                    )
                )

        return observer

    @property
    def client_id(self) -> int:
        """This document's Yjs client id."""
        return self._doc.client_id

    @contextmanager
    def transaction(self, origin: object = LOCAL) -> Iterator[None]:
        """Batch writes into one Yjs transaction; nested calls join the outer one.

        Yjs has no rollback: writes made before an exception inside the block
        stay committed (and are dispatched like any other).
        """
        if self._depth:
            if origin is not self._origin and origin != self._origin:
                raise RuntimeError("nested transaction with a different origin")
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._depth = 1
        self._origin = origin
        try:
            with self._doc.transaction():
                yield
        finally:
            self._depth = 0
            self._origin = None
            self._dispatch(origin)

    def _dispatch(self, origin: object) -> None:
        updates, self._pending_updates = self._pending_updates, []
        changes, self._pending_changes = self._pending_changes, []
        for update in updates:
            for cb in list(self._update_cbs):
                try:
                    cb(update, origin)
                except Exception:
                    log.exception("state update callback failed")
        for name, entries in changes:
            for ecb in list(self._entry_cbs):
                for key, old, new in entries:
                    try:
                        ecb(name, key, old, new, origin)
                    except Exception:
                        log.exception("state entry callback failed")
            keys = {key for key, _, _ in entries}
            for ccb in list(self._change_cbs):
                try:
                    ccb(name, keys, origin)
                except Exception:
                    log.exception("state change callback failed")

    # -- reads -------------------------------------------------------------
    def _map(self, map_name: str) -> Map[Any]:
        _check_map(map_name)
        return self._maps[map_name]

    def get_raw(self, map_name: str, key: str) -> bytes | None:
        """Return the stored blob at `key` (None if absent or not a blob)."""
        ymap = self._map(map_name)
        blob = ymap.get(key)
        if isinstance(blob, bytes | bytearray):
            return bytes(blob)
        if blob is not None:
            log.warning("non-blob value at %s/%s ignored", map_name, key)
        return None

    def get(self, map_name: str, key: str) -> Any | None:
        """Return the decoded value at `key`, or None."""
        blob = self.get_raw(map_name, key)
        if blob is None:
            return None
        return self._decode(map_name, key, blob)

    @staticmethod
    def _decode(map_name: str, key: str, blob: bytes | bytearray) -> Any | None:
        try:
            return decode_value(blob)
        except Exception:
            log.warning("undecodable value at %s/%s ignored", map_name, key)
            return None

    def items(self, map_name: str) -> list[tuple[str, Any]]:
        """Return all decodable (key, value) pairs of a map."""
        ymap = self._map(map_name)
        out: list[tuple[str, Any]] = []
        with self._doc.transaction():
            for key, blob in ymap.items():
                if not isinstance(blob, bytes | bytearray):
                    continue
                value = self._decode(map_name, key, blob)
                if value is not None:
                    out.append((key, value))
        return out

    def raw_items(self, map_name: str) -> list[tuple[str, bytes]]:
        """Return all (key, blob) pairs of a map without decoding (compaction, copies)."""
        ymap = self._map(map_name)
        with self._doc.transaction() as txn:
            try:
                # pycrdt's public Map.items() costs two extra transactions and a
                # membership check per key; the Yrs binding underneath is ~4x faster,
                # which matters for whole-map scans (compaction, generation switch).
                inner = txn._txn
                integrated = ymap.integrated
                values = ((key, integrated.get(inner, key)) for key in integrated.keys(inner))
                return [(k, bytes(v)) for k, v in values if isinstance(v, bytes | bytearray)]
            except AttributeError:  # pragma: no cover - another pycrdt version
                return [(k, bytes(v)) for k, v in ymap.items() if isinstance(v, bytes | bytearray)]

    @classmethod
    def from_entries(
        cls, entries: Iterable[tuple[str, str, bytes]], client_id: int | None = None
    ) -> PycrdtStore:
        """A fresh document holding `(map, key, blob)` entries, written in one transaction.

        This is how a compaction builds the base of a new generation: no history,
        only the entries given.
        """
        fresh = cls(client_id)
        with fresh._doc.transaction():
            for name, key, blob in entries:
                fresh._map(name)[key] = blob
        fresh._pending_updates.clear()
        fresh._pending_changes.clear()
        return fresh

    def encode_live_state(self) -> bytes:
        """Encode a fresh document (new client id) holding only the current entries.

        Its size is the floor a compaction could reach for these blobs; the ratio of
        `encode_state()` to it measures the growth Yjs keeps for deleted items.
        """
        fresh = PycrdtStore.from_entries(
            (name, key, blob) for name in sorted(MAP_NAMES) for key, blob in self.raw_items(name)
        )
        state = fresh.encode_state()
        fresh.close()
        return state

    def keys(self, map_name: str) -> list[str]:
        """Return all keys of a map."""
        ymap = self._map(map_name)
        with self._doc.transaction():
            return list(ymap.keys())

    # -- writes ------------------------------------------------------------
    def put(self, map_name: str, key: str, value: Any) -> None:
        """Set `key` to the msgpack blob of `value`."""
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty str")
        blob = encode_value(value)
        ymap = self._map(map_name)
        with self.transaction(self._origin if self._depth else LOCAL):
            ymap[key] = blob

    def put_raw(self, map_name: str, key: str, blob: bytes) -> None:
        """Set `key` to an already encoded blob."""
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty str")
        if not isinstance(blob, bytes):
            raise TypeError("blob must be bytes")
        ymap = self._map(map_name)
        with self.transaction(self._origin if self._depth else LOCAL):
            ymap[key] = blob

    def delete(self, map_name: str, key: str) -> bool:
        """Remove `key`; return whether it was present."""
        ymap = self._map(map_name)
        with self.transaction(self._origin if self._depth else LOCAL):
            if key not in ymap:
                return False
            del ymap[key]
            return True

    # -- sync --------------------------------------------------------------
    def state_vector(self) -> bytes:
        """Encoded Yjs state vector."""
        return self._doc.get_state()

    def encode_diff(self, state_vector: bytes) -> bytes:
        """Encode what a peer with `state_vector` is missing (ValueError on a bad vector)."""
        return self._doc.get_update(state_vector)

    def encode_state(self) -> bytes:
        """Encode the whole document as one update."""
        return self._doc.get_update()

    def apply_update(self, update: bytes, origin: object) -> None:
        """Apply a Yjs update; ValueError if it cannot be decoded.

        Structs whose dependencies are missing are kept pending by Yjs and
        integrated when the dependencies arrive (anti-entropy brings them).
        """
        if update == b"\x00\x00":
            return  # the empty update: nothing to integrate
        with self.transaction(origin):
            self._doc.apply_update(update)

    def on_update(self, callback: UpdateCallback) -> Callable[[], None]:
        """Subscribe to every committed transaction's update."""
        self._update_cbs.append(callback)
        return lambda: _discard(self._update_cbs, callback)

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Subscribe to per-map changed keys."""
        self._change_cbs.append(callback)
        return lambda: _discard(self._change_cbs, callback)

    def on_entry_change(self, callback: EntryCallback) -> Callable[[], None]:
        """Subscribe to every changed entry with its old and new blob."""
        self._entry_cbs.append(callback)
        return lambda: _discard(self._entry_cbs, callback)

    def close(self) -> None:
        """Drop every subscription."""
        self._update_cbs.clear()
        self._change_cbs.clear()
        self._entry_cbs.clear()
        for owner, sub in self._subscriptions:
            try:
                owner.unobserve(sub)
            except ValueError:
                pass
        self._subscriptions.clear()


def _blob(value: object) -> bytes | None:
    """A map value from a change event as bytes (None when absent or not a blob)."""
    return bytes(value) if isinstance(value, bytes | bytearray) else None
