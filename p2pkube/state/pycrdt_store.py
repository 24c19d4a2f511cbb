"""The native StateStore: the cluster document as a pycrdt Doc (see store.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from pycrdt import Doc, Map, MapEvent, TransactionEvent

from .store import MAP_NAMES, DocumentStore, check_map, new_client_id

log = logging.getLogger(__name__)


class PycrdtStore(DocumentStore):
    """`StateStore` backed by a native pycrdt (Yrs) document."""

    def __init__(self, client_id: int | None = None) -> None:
        super().__init__()
        self._doc: Doc = Doc(client_id=client_id if client_id is not None else new_client_id())
        self._maps: dict[str, Map[Any]] = {}
        self._subscriptions: list[tuple[Any, Any]] = []
        # Root maps are created in one transaction so that the store never emits a
        # spurious update later when a map is first touched.
        with self._doc.transaction():
            for name in sorted(MAP_NAMES):
                self._maps[name] = self._doc.get(name, type=Map)
        self._subscriptions.append((self._doc, self._doc.observe(self._on_txn)))
        for name, ymap in self._maps.items():
            self._subscriptions.append((ymap, ymap.observe(self._make_map_observer(name))))

    # -- observation -------------------------------------------------------
    def _on_txn(self, event: TransactionEvent) -> None:
        """Runs inside the Yrs commit: only record, dispatch after the commit."""
        self._pending_updates.append(bytes(event.update))

    def _make_map_observer(self, name: str) -> Callable[[MapEvent], None]:
        def observer(event: MapEvent) -> None:
            changes: dict[str, dict[str, Any]]
            changes = event.keys  # type: ignore[attr-defined]  # pycrdt: in __slots__, untyped
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

    def _unobserve(self) -> None:
        for owner, sub in self._subscriptions:
            try:
                owner.unobserve(sub)
            except ValueError:
                pass
        self._subscriptions.clear()

    @property
    def client_id(self) -> int:
        """This document's Yjs client id."""
        return self._doc.client_id

    def _doc_transaction(self) -> AbstractContextManager[Any]:
        return self._doc.transaction()

    # -- reads -------------------------------------------------------------
    def _map(self, map_name: str) -> Map[Any]:
        check_map(map_name)
        return self._maps[map_name]

    def get_raw(self, map_name: str, key: str) -> bytes | None:
        """Return the stored blob at `key` (None if absent or not a blob)."""
        ymap = self._map(map_name)
        with self._doc.transaction() as txn:
            try:
                # As in raw_items: pycrdt's Map.get costs three transactions and a key check
                # (~9 µs); the binding underneath, in one, ~4 µs. Every watch event, every
                # scheduler decode and every status merge reads through here.
                inner, integrated = txn._txn, ymap.integrated
                blob = integrated.get(inner, key) if integrated.has(inner, key) else None
            except AttributeError:  # pragma: no cover - another pycrdt version
                blob = ymap.get(key)
        if isinstance(blob, bytes | bytearray):
            return bytes(blob)
        if blob is not None:
            log.warning("non-blob value at %s/%s ignored", map_name, key)
        return None

    def raw_items(self, map_name: str, prefix: str = "") -> list[tuple[str, bytes]]:
        """Return the (key, blob) pairs of a map whose key starts with ``prefix``, without
        decoding (compaction, copies, the Nodes among every pod)."""
        ymap = self._map(map_name)
        with self._doc.transaction() as txn:
            try:
                # pycrdt's public Map.items() costs two extra transactions and a
                # membership check per key; the Yrs binding underneath is ~4x faster,
                # which matters for whole-map scans (compaction, generation switch).
                inner = txn._txn
                integrated = ymap.integrated
                values = (
                    (key, integrated.get(inner, key))
                    for key in integrated.keys(inner)
                    if key.startswith(prefix)
                )
                return [(k, bytes(v)) for k, v in values if isinstance(v, bytes | bytearray)]
            except AttributeError:  # pragma: no cover - another pycrdt version
                return [
                    (k, bytes(v))
                    for k, v in ymap.items()
                    if k.startswith(prefix) and isinstance(v, bytes | bytearray)
                ]

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
    def _set(self, map_name: str, key: str, blob: bytes) -> None:
        self._maps[map_name][key] = blob

    def _remove(self, map_name: str, key: str) -> bool:
        ymap = self._maps[map_name]
        if key not in ymap:
            return False
        del ymap[key]
        return True

    def _apply(self, update: bytes) -> None:
        self._doc.apply_update(update)

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


def _blob(value: object) -> bytes | None:
    """A map value from a change event as bytes (None when absent or not a blob)."""
    return bytes(value) if isinstance(value, bytes | bytearray) else None
