"""Watches: one hub that fans each change out to every open watch, and one watch's stream.

A node has one :class:`WatchHub`. Whoever knows that something changed (the node, from the
replicated state's change callback and the failure detector's liveness transitions) calls
:meth:`WatchHub.publish` with the keys that changed; whoever streams events (the local API
server) calls :meth:`WatchHub.subscribe` and drains the returned :class:`Watch`. Keeping the
event logic here, apart from both, lets it be exercised without a network, and the same hub
serves the in-memory test backend.

Keys are document keys, ``Kind/namespace/name`` (namespace empty for cluster-scoped kinds).
Every queue is bounded (a watch that falls behind ends with an ERROR event) and every watch
ends by itself after its timeout. No platform library and nothing else from p2pkube is
imported, so the browser node loads this module as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, NamedTuple

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WATCH_SECONDS",
    "HISTORY_SIZE",
    "WATCH_QUEUE_SIZE",
    "ResourceVersionTooOld",
    "Watch",
    "WatchEvent",
    "WatchHub",
]

WatchEvent = dict[str, Any]
"""``{"type": "ADDED"|"MODIFIED"|"DELETED"|"ERROR", "object": {...}}``, as Kubernetes sends."""
EventType = Literal["ADDED", "MODIFIED", "DELETED", "ERROR"]
Render = Callable[[str], dict[str, Any] | None]
"""The object under a document key as a client sees it (status merged), None if absent."""

WATCH_QUEUE_SIZE = 8192
"""Events one watcher may have waiting. A client that falls this far behind gets an ERROR event
and the watch ends (it re-lists, like after a Kubernetes 410 Gone): memory stays bounded. One
transaction can queue an event per object it touched (a controller creating a Job's pods), so
this is sized above the bursts of a few thousand pods that the scheduler writes at once."""
DEFAULT_WATCH_SECONDS = 1800.0
"""How long a watch lives unless the client asks otherwise (Kubernetes' minimum request
timeout): every stream ends eventually, so a forgotten client cannot pin resources forever."""


HISTORY_SIZE = 10_000
"""Changes a hub remembers (revision and keys, not objects) so that a watch can resume from a
resourceVersion: a client that was away for fewer changes than this catches up without a new
list; an older resourceVersion is answered ``410 Gone`` and the client lists again, as with
Kubernetes' watch cache. About 100 bytes each."""


class ResourceVersionTooOld(LookupError):
    """A watch asked to resume from a resourceVersion the hub no longer remembers."""


class Watch:
    """One watcher's view: first the current objects as ADDED, then each change as it happens.

    The producer (the :class:`WatchHub`) calls :meth:`changed` with the keys a transaction
    touched, from a synchronous state callback; it never blocks and never awaits. The consumer
    (the API server, or any task) drains events with :meth:`get` or ``async for``.

    Event types are derived per key by comparing what the watcher last delivered with the
    object as it is now, so a transaction that touches both ``objects`` and ``status`` of a key
    yields one MODIFIED, not two; an object that stops matching the selector yields DELETED,
    as in Kubernetes.
    """

    def __init__(
        self,
        render: Render,
        selects: Callable[[str], bool],
        *,
        match: Callable[[dict[str, Any]], bool] | None = None,
        max_queue: int = WATCH_QUEUE_SIZE,
        timeout: float = DEFAULT_WATCH_SECONDS,
        gone: Render | None = None,
    ) -> None:
        """``render(key)`` is the object as a client sees it (None: absent); ``selects(key)``
        says whether a document key is in scope (kind, namespace); ``match(obj)`` is the label
        selector. ``timeout`` is the watch's lifetime in seconds. ``gone(key)`` is what a
        DELETED event shows of an object whose last state is unknown (resumed watches)."""
        if max_queue < 2:
            raise ValueError("max_queue must leave room for an ERROR event and the end marker")
        self._render = render
        self._selects = selects
        self._match = match or (lambda obj: True)
        self._gone = gone
        self._queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue(max_queue)
        self._initial: deque[WatchEvent] = deque()
        self._known: dict[str, dict[str, Any]] = {}
        self._cleanups: list[Callable[[], None]] = []
        self._deadline = asyncio.get_running_loop().time() + timeout
        self.closed = False
        """True once no more events will be produced (drained events may still be pending)."""
        self.error: dict[str, Any] | None = None
        """The Status the watch failed with (queue overflow), if it did."""

    # -- producer side (the hub) ---------------------------------------------------------------
    def start(self, keys: Iterable[str]) -> None:
        """Queue the current objects among ``keys`` as ADDED (the initial listing).

        Call it right after subscribing and before the next await, so no change can fall in
        between. These events are held apart from the bounded queue: their number is the size
        of the current state, which is in memory anyway.
        """
        for key in sorted(keys):
            if self._selects(key):
                obj = self._visible(key)
                if obj is not None:
                    self._known[key] = obj
                    self._initial.append({"type": "ADDED", "object": obj})

    def resume(self, present: Iterable[str], changed: Iterable[str], created: set[str]) -> None:
        """Start from a resourceVersion instead of a listing: the client already has the
        objects as they were then, so only ``changed`` keys (changed since; ``created`` are
        those that did not exist then) yield events; ``present`` are the keys in the
        document now, whose objects the client is taken to have, so their later deletion is
        reported. A deleted object is reported with only its identity, since its last state
        is no longer known."""
        changed = set(changed)
        for key in present:
            if key not in changed and self._selects(key):
                obj = self._visible(key)
                if obj is not None:
                    self._known[key] = obj
        for key in sorted(changed):
            if not self._selects(key):
                continue
            obj = self._visible(key)
            if obj is not None:
                self._known[key] = obj
                kind = "ADDED" if key in created else "MODIFIED"
                self._initial.append({"type": kind, "object": obj})
            elif self._gone is not None and key not in created:
                self._initial.append({"type": "DELETED", "object": self._gone(key)})

    def add_cleanup(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` (an unsubscribe) exactly once when the watch closes."""
        if self.closed:
            cleanup()
        else:
            self._cleanups.append(cleanup)

    def changed(self, keys: Iterable[str]) -> None:
        """Turn changed document keys into events. Synchronous and cheap: called from the
        state's change callback right after a transaction."""
        if self.closed:
            return
        for key in sorted(keys):
            if not self._selects(key):
                continue
            obj = self._visible(key)
            previous = self._known.get(key)
            event_type: EventType
            if obj is None:
                if previous is None:
                    continue
                del self._known[key]
                event_type, obj = "DELETED", previous
            elif previous is None:
                self._known[key] = obj
                event_type = "ADDED"
            elif obj == previous:
                continue
            else:
                self._known[key] = obj
                event_type = "MODIFIED"
            if not self._emit({"type": event_type, "object": obj}):
                return

    def _visible(self, key: str) -> dict[str, Any] | None:
        obj = self._render(key)
        return obj if obj is not None and self._match(obj) else None

    def _emit(self, event: WatchEvent) -> bool:
        try:
            self._queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            log.warning("watch queue full (%d events): ending a slow watch", self._queue.maxsize)
            self.fail(
                "watch fell too far behind (client too slow); list and watch again",
                reason="Expired",
                code=410,
            )
            return False

    # -- ending ----------------------------------------------------------------------------------
    def fail(self, message: str, *, reason: str, code: int) -> None:
        """End the watch with an ERROR event carrying a Kubernetes ``Status``.

        Undelivered events are dropped: after an error the client must re-list anyway, and
        dropping them is what keeps a slow client from growing our memory.
        """
        if self.closed:
            return
        self.error = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        self._initial.clear()
        self._drain()
        self._queue.put_nowait({"type": "ERROR", "object": self.error})
        self._finish()

    def close(self) -> None:
        """End the watch cleanly (client gone, agent stopping); idempotent."""
        if self.closed:
            return
        if self._queue.full():
            self._drain()  # nobody will read them: the consumer is going away too
        self._finish()

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    def _finish(self) -> None:
        self.closed = True
        self._queue.put_nowait(None)  # the end marker; room was made above if needed
        cleanups, self._cleanups = self._cleanups, []
        for cleanup in cleanups:
            try:
                cleanup()
            except Exception:
                log.exception("watch cleanup failed")

    # -- consumer side ---------------------------------------------------------------------------
    def remaining(self) -> float:
        """Seconds left before the watch's own timeout ends it."""
        return self._deadline - asyncio.get_running_loop().time()

    def ready_events(self) -> list[WatchEvent | None]:
        """Every event available without waiting (``None`` marks the end), for batched
        writes: a burst of changes then costs one socket write, not one per event."""
        events: list[WatchEvent | None] = list(self._initial)
        self._initial.clear()
        while not self._queue.empty():
            events.append(self._queue.get_nowait())
        if events and events[-1] is None:
            self._queue.put_nowait(None)  # keep the end visible to later calls
        return events

    async def get(self) -> WatchEvent | None:
        """The next event, or None once the watch has ended.

        Waits at most until the watch's own timeout (which ends it); a caller that wants to
        do something between events wraps the call in ``asyncio.timeout`` (no event is lost
        when that cancels the wait).
        """
        if self._initial:
            return self._initial.popleft()
        try:
            async with asyncio.timeout(max(0.0, self.remaining())):
                event = await self._queue.get()
        except TimeoutError:
            self.close()  # our own lifetime is over; the end marker is now queued
            event = self._queue.get_nowait()
        if event is None:
            self._queue.put_nowait(None)  # keep the end visible to later calls
        return event

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        """Events until the watch ends: closed, failed (after its ERROR event) or timed out."""
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class _Change(NamedTuple):
    """One published change in a hub's history."""

    revision: int
    keys: tuple[str, ...]
    created: frozenset[str]
    """Those of ``keys`` that did not exist before this change."""


class WatchHub:
    """Every open watch of one node, fed from one place.

    ``render(key)`` is the object under a key as clients see it, ``keys(kind)`` the document
    keys that may hold objects of ``kind`` now (the initial listing). Both are called
    synchronously, from :meth:`subscribe` and :meth:`publish`.

    The hub also numbers changes: its *revision* grows by one at every :meth:`publish` (one
    transaction, or one liveness transition), and each key remembers the revision it last
    changed at. These are the node's resourceVersions (docs/kubectl.md): ordered on this
    node, stable while an object does not change, never reused across the node's restarts
    (the first revision of a run is the wall clock in microseconds), and not comparable
    between nodes, which apply the same changes in different orders.
    """

    def __init__(
        self,
        render: Render,
        keys: Callable[[str], Iterable[str]],
        *,
        exists: Callable[[str], bool] | None = None,
        history_size: int = HISTORY_SIZE,
    ) -> None:
        """``exists(key)``, when given, lets the hub forget the revisions of deleted keys
        once they leave the history (memory stays bounded under churn)."""
        self._render = render
        self._keys = keys
        self._exists = exists
        self._watches: list[Watch] = []
        self.started_revision = time.time_ns() // 1000
        """Every object unchanged since this run began has this revision."""
        self.revision = self.started_revision
        self._history: deque[_Change] = deque(maxlen=history_size)
        self._live: set[str] = set()
        """Keys that exist, as far as changes told (with ``exists``): tells a creation from an
        update, so a resumed watch reports ADDED for what was created after its version."""
        self._key_revisions: dict[str, int] = {}

    def revision_of(self, key: str) -> int:
        """The revision ``key`` last changed at, as this node saw it."""
        return self._key_revisions.get(key, self.started_revision)

    def changed_since(self, revision: int) -> tuple[list[str], set[str]]:
        """Keys changed after ``revision``, oldest change first, and those of them created
        since; ResourceVersionTooOld when the history no longer reaches back that far (or the
        revision is not of this run)."""
        first_kept = self._history[0][0] if self._history else self.revision + 1
        if not self.started_revision <= revision <= self.revision or revision < first_kept - 1:
            raise ResourceVersionTooOld(
                f"too old resource version: {revision} ({max(first_kept - 1, self.revision)})"
            )
        later = [change for change in self._history if change.revision > revision]
        return (
            [key for change in later for key in change.keys],
            {key for change in later for key in change.created},
        )

    def subscribe(
        self,
        kind: str | tuple[str, ...],
        namespace: str | None,
        *,
        match: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = DEFAULT_WATCH_SECONDS,
        max_queue: int = WATCH_QUEUE_SIZE,
        since: int | None = None,
        gone: Render | None = None,
    ) -> Watch:
        """A started :class:`Watch` on ``kind`` in ``namespace`` (None: all namespaces, "":
        cluster-scoped); ``match`` is the label selector (it decides event types: an object
        that stops matching is reported DELETED). Closing the watch unsubscribes it.

        Without ``since`` the watch first lists the current objects (as ADDED); with a
        revision it resumes from there (:meth:`Watch.resume`), or raises
        ResourceVersionTooOld. Either is taken in the same tick as the subscription, so no
        change can fall in between. ``kind`` may be several kinds: one stream for all (the
        dashboard's, so that a browser's few connections per host are not all watches).
        """
        changes = None if since is None else self.changed_since(since)
        kinds = (kind,) if isinstance(kind, str) else kind
        prefixes = tuple(f"{k}/" if namespace is None else f"{k}/{namespace}/" for k in kinds)
        watch = Watch(
            self._render,
            lambda key: key.startswith(prefixes),
            match=match,
            timeout=timeout,
            max_queue=max_queue,
            gone=gone,
        )
        self._watches.append(watch)
        watch.add_cleanup(lambda: self._forget(watch))
        keys = self._keys(kinds[0]) if len(kinds) == 1 else self._keys_of(kinds)
        if changes is None:
            watch.start(keys)
        else:
            watch.resume(keys, *changes)
        return watch

    def _keys_of(self, kinds: tuple[str, ...]) -> list[str]:
        """The document keys of several kinds (kinds in the same map list it once)."""
        return list(dict.fromkeys(key for kind in kinds for key in self._keys(kind)))

    def unsubscribe(self, watch: Watch) -> None:
        """End ``watch`` (the same as ``watch.close()``); idempotent."""
        watch.close()

    def publish(self, keys: Iterable[str], *, loaded: bool = False) -> None:
        """Tell every open watch that the objects under ``keys`` may have changed. Synchronous
        and cheap (never awaits): called from the state's change callback. ``loaded``: the
        keys come from loading the state from disk (they exist; the state cannot be asked
        yet)."""
        changed = tuple(keys)
        self.revision += 1
        if len(self._history) == self._history.maxlen:
            self._forget_revisions(self._history[0])
        created = frozenset(k for k in changed if k not in self._live)
        if loaded:
            self._live.update(changed)
        elif self._exists is not None:
            created = frozenset(k for k in created if self._exists(k))
            gone = [k for k in changed if k not in created and not self._exists(k)]
            self._live.update(created)
            self._live.difference_update(gone)
        else:
            created = frozenset()
        self._history.append(_Change(self.revision, changed, created))
        for key in changed:
            self._key_revisions[key] = self.revision
        if not self._watches:
            return
        for watch in list(self._watches):
            watch.changed(changed)

    def close(self) -> None:
        """End every open watch (the node is stopping)."""
        for watch in list(self._watches):
            watch.close()

    def __len__(self) -> int:
        """Open watches."""
        return len(self._watches)

    def __iter__(self) -> Iterator[Watch]:
        """The open watches, as they are now."""
        return iter(tuple(self._watches))

    def _forget_revisions(self, change: _Change) -> None:
        """A change leaves the history: deleted keys it was the last change of are dropped
        (a live key keeps its revision for as long as it lives)."""
        for key in change.keys:
            if self._key_revisions.get(key) == change.revision and key not in self._live:
                del self._key_revisions[key]

    def _forget(self, watch: Watch) -> None:
        if watch in self._watches:
            self._watches.remove(watch)
