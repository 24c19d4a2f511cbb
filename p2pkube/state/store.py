"""The cluster-state document: a narrow store interface and what its backends share.

The whole cluster state is one Yjs document holding a few top-level maps. Every
value is an opaque msgpack blob, because Yjs number semantics differ between
implementations (pycrdt returns every int as a float, JS has no 64-bit ints);
a blob round-trips identically in pycrdt and in the browser's `yjs`.

The store knows nothing about what the blobs mean: `ClusterState` writes
versioned blobs (`versioned.py`) through `put_raw` and resolves conflicts from
the per-entry change events (old blob, new blob) the store reports.

`StateStore` (a typing.Protocol) is the only thing the rest of p2pkube may depend
on, and a `StoreFactory` is how a backend is injected (`ClusterState(store_factory=)`),
so that the browser node (yjs through Pyodide) can plug in its own. Both backends
subclass `DocumentStore`, which holds everything but the document itself
(transactions and their origins, callbacks after commit, encoding): `PycrdtStore`
(`pycrdt_store.py`), which the native agent passes, and `YjsStore`
(`p2pkube.browser.yjs_store`) in a tab. Nothing else in p2pkube.state imports
pycrdt_store, so that the browser, which has no pycrdt, can import all the rest.

Callbacks (`on_update`, `on_change`, `on_entry_change`) run *after* the outermost transaction has
committed, outside of it: they may read the document, start new transactions
or hand bytes to a transport without re-entering a live Yjs transaction.
"""

from __future__ import annotations

import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final, Protocol, runtime_checkable

import msgpack

__all__ = [
    "EVENTS",
    "LEASES",
    "LOAD",
    "LOCAL",
    "MAP_NAMES",
    "OBJECTS",
    "REPAIR",
    "STATUS",
    "SWITCH",
    "ChangeCallback",
    "DocumentStore",
    "EntryCallback",
    "StateStore",
    "StoreFactory",
    "UnknownMapError",
    "UpdateCallback",
    "check_key",
    "check_map",
    "decode_value",
    "encode_value",
    "new_client_id",
    "object_key",
]

log = logging.getLogger(__name__)

OBJECTS: Final = "objects"
"""`kind/namespace/name` -> {apiVersion, kind, metadata, spec}; written by users/controllers."""
STATUS: Final = "status"
"""Same key as `objects` -> status dict; written by the node that runs the object.

Spec and status live under separate map entries so that their writers never
overwrite each other: a Yjs map entry is last-writer-wins as a whole."""
LEASES: Final = "leases"
"""Lease name -> lease record (holder, renew time); used for node liveness/leader choice."""
EVENTS: Final = "events"
"""Event key -> Kubernetes-style event record."""

MAP_NAMES: Final[frozenset[str]] = frozenset({OBJECTS, STATUS, LEASES, EVENTS})
"""The fixed set of top-level maps. Fixed because a Yjs root type is created by
name on first use: a typo would silently create a new map on every peer."""

_MAX_CLIENT_ID: Final = 2**53
"""Yjs client ids must stay exact in a JS number (the browser node)."""


class _Origin:
    """A named sentinel origin: cannot collide with a peer id (a `str`)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<origin {self.name}>"


LOCAL: Final = _Origin("local")
"""Origin of writes made by this process through the public API."""
LOAD: Final = _Origin("load")
"""Origin of updates replayed from disk at open: neither persisted again nor relayed."""
REPAIR: Final = _Origin("repair")
"""Origin of a re-put of the newer version after Yjs let an older one win a concurrent
write (last-writer-wins by timestamp, docs/state.md)."""
SWITCH: Final = _Origin("switch")
"""Origin of changes caused by a generation switch (compaction, docs/state.md)."""

StoreFactory = Callable[[int | None], "StateStore"]
"""Makes an empty document with the given Yjs client id (None: a fresh random one)."""

UpdateCallback = Callable[[bytes, object], None]
"""`cb(update, origin)`: one Yjs update per committed transaction."""
ChangeCallback = Callable[[str, set[str], object], None]
"""`cb(map_name, changed_keys, origin)`: which entries of a map changed in a transaction."""
EntryCallback = Callable[[str, str, bytes | None, bytes | None, object], None]
"""`cb(map_name, key, old_blob, new_blob, origin)`: one entry's visible blob before and
after a transaction (None = absent). Conflict repair needs the old blob: when Yjs lets a
concurrent write win, the value it replaced is no longer readable anywhere else."""


class UnknownMapError(KeyError):
    """A map name outside `MAP_NAMES` was used."""


def new_client_id() -> int:
    """Draw a fresh random Yjs client id.

    Never reuse a client id after a restart: a crash can lose an update that was
    already relayed under that id, and writing a different update under the same
    (client, clock) would make peers silently keep diverging content.
    """
    return secrets.randbelow(_MAX_CLIENT_ID - 1) + 1


def encode_value(value: Any) -> bytes:
    """Encode a value as the msgpack blob stored in the document."""
    return msgpack.packb(value, use_bin_type=True)


def decode_value(blob: bytes | bytearray) -> Any:
    """Decode a stored msgpack blob (raises `ValueError` family on garbage)."""
    return msgpack.unpackb(bytes(blob), raw=False, strict_map_key=False)


def object_key(kind: str, namespace: str, name: str) -> str:
    """Build the `kind/namespace/name` key; `namespace` is "" for cluster-scoped kinds."""
    for part in (kind, name):
        if not part:
            raise ValueError("kind and name must not be empty")
    for part in (kind, namespace, name):
        if "/" in part:
            raise ValueError(f"'/' is not allowed in key parts: {part!r}")
    return f"{kind}/{namespace}/{name}"


@runtime_checkable
class StateStore(Protocol):
    """The narrow interface over one Yjs document of cluster state.

    Values are any msgpack-able Python data; the backend stores the blob from
    `encode_value`. Reads return decoded values; an entry that cannot be decoded
    (a buggy or hostile peer) reads as absent and is logged, rather than
    crashing every watcher in the cluster.
    """

    @property
    def client_id(self) -> int:
        """This document's Yjs client id (fresh per process start)."""
        ...

    def get(self, map_name: str, key: str) -> Any | None:
        """Return the decoded value at `key`, or None."""
        ...

    def get_raw(self, map_name: str, key: str) -> bytes | None:
        """Return the stored blob at `key`, or None (cheap equality checks, copies)."""
        ...

    def raw_items(self, map_name: str, prefix: str = "") -> list[tuple[str, bytes]]:
        """Return the (key, blob) pairs of a map whose key starts with ``prefix``, without
        decoding; keys are matched before blobs are read (the ten Nodes among 3,000 pods)."""
        ...

    def put_raw(self, map_name: str, key: str, blob: bytes) -> None:
        """Set `key` to an already encoded blob (in the current transaction if one is open)."""
        ...

    def items(self, map_name: str) -> list[tuple[str, Any]]:
        """Return all decodable (key, value) pairs of a map."""
        ...

    def keys(self, map_name: str) -> list[str]:
        """Return all keys of a map."""
        ...

    def put(self, map_name: str, key: str, value: Any) -> None:
        """Set `key` to `value` (in the current transaction if one is open)."""
        ...

    def delete(self, map_name: str, key: str) -> bool:
        """Remove `key`; return whether it was present."""
        ...

    def transaction(self, origin: object = LOCAL) -> AbstractContextManager[None]:
        """Context manager batching writes into one Yjs transaction (one update)."""
        ...

    def state_vector(self) -> bytes:
        """Encoded Yjs state vector (what this document has seen, per client)."""
        ...

    def encode_diff(self, state_vector: bytes) -> bytes:
        """Encode the update a peer with `state_vector` is missing (raises ValueError)."""
        ...

    def encode_state(self) -> bytes:
        """Encode the whole document as one update (snapshots, doc size)."""
        ...

    def apply_update(self, update: bytes, origin: object) -> None:
        """Apply a Yjs update (raises ValueError when it cannot be decoded)."""
        ...

    def on_update(self, callback: UpdateCallback) -> Callable[[], None]:
        """Subscribe to every committed transaction's update; returns an unsubscriber."""
        ...

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Subscribe to per-map changed keys; returns an unsubscriber."""
        ...

    def on_entry_change(self, callback: EntryCallback) -> Callable[[], None]:
        """Subscribe to every changed entry with its old and new blob; returns an unsubscriber."""
        ...

    def close(self) -> None:
        """Drop subscriptions; the store must not be used afterwards."""
        ...


def check_map(map_name: str) -> None:
    """UnknownMapError unless `map_name` is one of `MAP_NAMES`."""
    if map_name not in MAP_NAMES:
        raise UnknownMapError(map_name)


def check_key(key: object) -> None:
    """ValueError unless `key` is a non-empty str."""
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty str")


def _discard(callbacks: list[Any], callback: Any) -> None:
    """Remove `callback` if still subscribed (unsubscribing twice is harmless)."""
    try:
        callbacks.remove(callback)
    except ValueError:
        pass


EntryChange = tuple[str, bytes | None, bytes | None]
"""``(key, old blob, new blob)`` of one entry in a committed transaction."""


class DocumentStore(ABC):
    """What both backends share: transactions with an origin (nested ones join the outer
    one), callbacks dispatched after the outermost commit, msgpack values over blobs.

    A backend implements the document primitives (the ``_``-prefixed abstract methods and
    the raw reads) and, from its own observers, appends each committed update to
    ``_pending_updates`` and each map's changed entries to ``_pending_changes``.
    """

    def __init__(self) -> None:
        self._update_cbs: list[UpdateCallback] = []
        self._change_cbs: list[ChangeCallback] = []
        self._entry_cbs: list[EntryCallback] = []
        self._depth = 0
        self._origin: object = None
        self._pending_updates: list[bytes] = []
        self._pending_changes: list[tuple[str, list[EntryChange]]] = []

    # -- the backend's document ------------------------------------------------------------------
    @property
    @abstractmethod
    def client_id(self) -> int:
        """This document's Yjs client id."""

    @abstractmethod
    def _doc_transaction(self) -> AbstractContextManager[Any]:
        """The document's own outermost transaction; its observers run when it commits."""

    @abstractmethod
    def _set(self, map_name: str, key: str, blob: bytes) -> None: ...

    @abstractmethod
    def _remove(self, map_name: str, key: str) -> bool:
        """Delete ``key``; whether it was there."""

    @abstractmethod
    def _apply(self, update: bytes) -> None:
        """Integrate a Yjs update; ValueError when it cannot be decoded."""

    @abstractmethod
    def _unobserve(self) -> None:
        """Drop the backend's own observers."""

    @abstractmethod
    def get_raw(self, map_name: str, key: str) -> bytes | None: ...

    @abstractmethod
    def raw_items(self, map_name: str, prefix: str = "") -> list[tuple[str, bytes]]: ...

    @abstractmethod
    def keys(self, map_name: str) -> list[str]: ...

    @abstractmethod
    def state_vector(self) -> bytes: ...

    @abstractmethod
    def encode_diff(self, state_vector: bytes) -> bytes: ...

    @abstractmethod
    def encode_state(self) -> bytes: ...

    # -- transactions ----------------------------------------------------------------------------
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
            with self._doc_transaction():
                yield
        finally:
            self._depth = 0
            self._origin = None
            self._dispatch(origin)

    def _current(self) -> AbstractContextManager[None]:
        """The open transaction, or a new local one."""
        return self.transaction(self._origin if self._depth else LOCAL)

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

    # -- reads -----------------------------------------------------------------------------------
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
        out: list[tuple[str, Any]] = []
        for key, blob in self.raw_items(map_name):
            value = self._decode(map_name, key, blob)
            if value is not None:
                out.append((key, value))
        return out

    # -- writes ----------------------------------------------------------------------------------
    def put(self, map_name: str, key: str, value: Any) -> None:
        """Set `key` to the msgpack blob of `value`."""
        self.put_raw(map_name, key, encode_value(value))

    def put_raw(self, map_name: str, key: str, blob: bytes) -> None:
        """Set `key` to an already encoded blob."""
        check_key(key)
        if not isinstance(blob, bytes):
            raise TypeError("blob must be bytes")
        check_map(map_name)
        with self._current():
            self._set(map_name, key, blob)

    def delete(self, map_name: str, key: str) -> bool:
        """Remove `key`; return whether it was present."""
        check_map(map_name)
        with self._current():
            return self._remove(map_name, key)

    def apply_update(self, update: bytes, origin: object) -> None:
        """Apply a Yjs update; ValueError if it cannot be decoded.

        Structs whose dependencies are missing are kept pending by Yjs and
        integrated when the dependencies arrive (anti-entropy brings them).
        """
        if update == b"\x00\x00":
            return  # the empty update: nothing to integrate
        with self.transaction(origin):
            self._apply(update)

    # -- subscriptions ---------------------------------------------------------------------------
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
        self._unobserve()
