"""The browser's StateStore: the cluster document as a JS ``yjs`` Y.Doc, through Pyodide.

pycrdt has no wasm build, but ``yjs`` is wire-compatible with it (both speak the Yjs update
format), so a tab and a native node exchange the same updates. Everything but the document
is :class:`~p2pkube.state.store.DocumentStore`'s, shared with the native backend.

Yjs batches writes only inside ``doc.transact(fn)``, a JS callback, while our transactions
are Python ``with`` blocks. So the writes of a block are buffered (reads inside it see them)
and applied in one ``transact`` when the outermost block ends: one Yjs update per
transaction, as natively. Blobs cross as Uint8Array copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yjs  # type: ignore[import-not-found]  # registered by the page (app.js)
from pyodide.ffi import JsException, create_proxy, to_js  # type: ignore[import-not-found]  # Pyodide only

from p2pkube.state.store import MAP_NAMES, DocumentStore, check_map, new_client_id

_DELETED = None


class YjsStore(DocumentStore):
    """`StateStore` backed by a ``yjs`` document in the page."""

    def __init__(self, client_id: int | None = None) -> None:
        super().__init__()
        self._doc = yjs.Doc.new()
        # Set before the first write: the id every struct of this document is written under.
        self._doc.clientID = client_id if client_id is not None else new_client_id()
        self._maps = {name: self._doc.getMap(name) for name in sorted(MAP_NAMES)}
        self._buffer: dict[tuple[str, str], bytes | None] | None = None
        """Writes of the open transaction, applied when it ends (None: no transaction)."""
        self._proxies: list[Any] = []
        on_update = create_proxy(self._on_update)
        self._doc.on("update", on_update)
        self._proxies.append(on_update)
        self._observers: list[tuple[Any, Any]] = []
        for name, ymap in self._maps.items():
            observer = create_proxy(self._map_observer(name))
            ymap.observe(observer)
            self._observers.append((ymap, observer))

    # -- observation -----------------------------------------------------------------------------
    def _on_update(self, update: Any, *_: Any) -> None:
        self._pending_updates.append(update.to_bytes())

    def _map_observer(self, name: str) -> Any:
        def observer(event: Any, *_: Any) -> None:
            ymap = self._maps[name]
            entries = []
            for pair in event.changes.keys.entries():
                key, change = pair[0], pair[1]
                old = change.oldValue if change.action != "add" else None
                entries.append((key, _blob(old), _blob(ymap.get(key))))
            if entries:
                self._pending_changes.append((name, entries))

        return observer

    def _unobserve(self) -> None:
        for ymap, observer in self._observers:
            ymap.unobserve(observer)
        for proxy in self._proxies:
            self._doc.off("update", proxy)
        self._doc.destroy()
        for proxy in [*self._proxies, *(observer for _, observer in self._observers)]:
            proxy.destroy()
        self._proxies.clear()
        self._observers.clear()

    @property
    def client_id(self) -> int:
        return int(self._doc.clientID)

    @contextmanager
    def _doc_transaction(self) -> Iterator[None]:
        self._buffer = {}
        try:
            yield
        finally:
            buffer, self._buffer = self._buffer, None
            if buffer:
                self._commit(buffer)

    def _commit(self, buffer: dict[tuple[str, str], bytes | None]) -> None:
        """Apply buffered writes in one Yjs transaction (observers run as it ends)."""

        def write(*_: Any) -> None:
            for (name, key), blob in buffer.items():
                if blob is _DELETED:
                    self._maps[name].delete(key)
                else:
                    self._maps[name].set(key, to_js(blob))

        proxy = create_proxy(write)
        try:
            self._doc.transact(proxy)
        finally:
            proxy.destroy()

    # -- reads -----------------------------------------------------------------------------------
    def get_raw(self, map_name: str, key: str) -> bytes | None:
        check_map(map_name)
        if self._buffer is not None and (map_name, key) in self._buffer:
            return self._buffer[(map_name, key)]
        return _blob(self._maps[map_name].get(key))

    def raw_items(self, map_name: str, prefix: str = "") -> list[tuple[str, bytes]]:
        check_map(map_name)
        items: dict[str, bytes | None] = {}
        for pair in self._maps[map_name].entries():
            key = pair[0]
            if key.startswith(prefix):
                items[key] = _blob(pair[1])
        if self._buffer:
            for (name, key), blob in self._buffer.items():
                if name == map_name and key.startswith(prefix):
                    items[key] = blob
        return [(key, blob) for key, blob in items.items() if blob is not None]

    def keys(self, map_name: str) -> list[str]:
        return [key for key, _ in self.raw_items(map_name)]

    # -- writes ----------------------------------------------------------------------------------
    def _set(self, map_name: str, key: str, blob: bytes) -> None:
        assert self._buffer is not None
        self._buffer[(map_name, key)] = blob

    def _remove(self, map_name: str, key: str) -> bool:
        present = self.get_raw(map_name, key) is not None
        if present:
            assert self._buffer is not None
            self._buffer[(map_name, key)] = _DELETED
        return present

    def _apply(self, update: bytes) -> None:
        if self._buffer:  # writes of this transaction go first, as they were made first
            buffer, self._buffer = self._buffer, {}
            self._commit(buffer)
        try:
            yjs.applyUpdate(self._doc, to_js(update))
        except JsException as exc:
            raise ValueError(f"undecodable Yjs update: {exc}") from None

    # -- sync ------------------------------------------------------------------------------------
    def state_vector(self) -> bytes:
        return bytes(yjs.encodeStateVector(self._doc).to_bytes())

    def encode_diff(self, state_vector: bytes) -> bytes:
        try:
            return bytes(yjs.encodeStateAsUpdate(self._doc, to_js(state_vector)).to_bytes())
        except JsException as exc:
            raise ValueError(f"bad state vector: {exc}") from None

    def encode_state(self) -> bytes:
        return bytes(yjs.encodeStateAsUpdate(self._doc).to_bytes())


def _blob(value: Any) -> bytes | None:
    """A map value as bytes: a Uint8Array is a blob, anything else is not ours."""
    if value is None or not hasattr(value, "to_bytes"):
        return None
    try:
        return bytes(value.to_bytes())
    except Exception:
        return None
