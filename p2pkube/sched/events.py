"""Events: what happened to an object (Scheduled, Started, BackOff, OOMKilled, ...), bounded.

Kubernetes' Event objects, kept in the document's ``events`` map. Each node writes only the
events it is the source of, under keys that include its name, so writers never collide.
Repeats aggregate: the same (object, reason, message, source) bumps ``count`` and
``lastTimestamp`` of one entry instead of adding another; beyond ``max_similar`` events of one
object and reason with different messages, the rest go into one combined event, as
Kubernetes' EventCorrelator does. Writes are buffered and flushed together every
``flush_interval`` (one transaction for a burst), and bounded twice: each node deletes its own
events older than ``ttl`` and keeps at most ``max_per_node`` of them (the oldest go first).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from p2pkube.model.timestamps import utc_now
from p2pkube.sched.settings import EventSettings
from p2pkube.state import ClusterState
from p2pkube.state.store import EVENTS

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024
COMBINED = "(combined from similar events): "
"""Prefix of an aggregated event's message (as Kubernetes writes it)."""
MAX_SIMILAR_KEYS = 4096
"""Groups of similar events remembered (the oldest is forgotten first)."""


def event_key(involved: dict[str, Any], reason: str, message: str, source: str) -> str:
    """``Event/<namespace>/<object>.<hash>``: one key per (object, reason, message, source
    node), as Kubernetes aggregates: the same event again only bumps its count."""
    digest = hashlib.sha256(
        f"{involved.get('kind')}/{involved.get('uid')}/{reason}/{message}/{source}".encode()
    ).hexdigest()[:12]
    return f"Event/{involved.get('namespace') or ''}/{involved.get('name')}.{digest}"


class EventRecorder:
    """Buffers this node's events and writes them, aggregated, to the document."""

    def __init__(
        self,
        state: ClusterState,
        node_name: str,
        settings: EventSettings,
        is_collector: Callable[[], bool] = lambda: False,
    ) -> None:
        self.state = state
        self.node_name = node_name
        self.settings = settings
        self.is_collector = is_collector
        """The collector also prunes other nodes' events past their ttl (a node that left
        the cluster for good never prunes its own)."""
        self._pending: dict[str, dict[str, Any]] = {}
        self._similar: OrderedDict[tuple[Any, ...], tuple[float, set[str]]] = OrderedDict()
        """(object, reason, type) -> when its window began and the messages seen in it."""
        self._mine: set[str] = set()
        """Keys of the events this node wrote (still in the document, as far as it knows):
        pruning tells its own events from the others' without decoding every event."""
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0
        self.written = 0

    async def start(self) -> None:
        self._mine = {  # once: those written before a restart
            key
            for key, event in self.state.items(EVENTS)
            if isinstance(event, dict) and (event.get("source") or {}).get("host") == self.node_name
        }
        self._tasks = [
            asyncio.create_task(self._flusher(), name="events flush"),
            asyncio.create_task(self._collector(), name="events gc"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.flush()

    def record(
        self,
        involved: dict[str, Any],
        reason: str,
        message: str,
        *,
        component: str,
        warning: bool = False,
    ) -> None:
        """Note an event (never blocks; written within ``flush_interval``)."""
        message = message[:MAX_MESSAGE]
        key = event_key(involved, reason, message, self.node_name)
        if self._too_many_similar(involved, reason, warning, message):
            key = event_key(involved, reason, COMBINED, self.node_name)
            message = (COMBINED + message)[:MAX_MESSAGE]
        now = utc_now()
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self.settings.max_pending:
                if self.dropped % 1000 == 0:
                    log.warning("event buffer full: dropping events (%d so far)", self.dropped + 1)
                self.dropped += 1
                return
            pending = self._pending[key] = {
                "involved": dict(involved),
                "reason": reason,
                "type": "Warning" if warning else "Normal",
                "component": component,
                "count": 0,
                "first": now,
            }
        pending["count"] += 1
        pending["message"] = message
        pending["last"] = now
        self._wake.set()

    def _too_many_similar(
        self, involved: dict[str, Any], reason: str, warning: bool, message: str
    ) -> bool:
        """Whether this event joins its object's combined event: ``max_similar`` others of
        the same reason and type, with other messages, came within ``similar_window``."""
        group = (involved.get("kind"), involved.get("uid"), involved.get("name"), reason, warning)
        now = time.monotonic()
        began, messages = self._similar.pop(group, (now, set()))
        if now - began > self.settings.similar_window:
            began, messages = now, set()
        self._similar[group] = (began, messages)
        while len(self._similar) > MAX_SIMILAR_KEYS:
            self._similar.popitem(last=False)
        if message in messages:
            return False
        if len(messages) >= self.settings.max_similar:
            return True
        messages.add(message)
        return False

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        async with self.state.batch() as batch:
            for key, item in pending.items():
                old = self.state.get(EVENTS, key)
                count = item["count"] + (int(old.get("count", 0)) if isinstance(old, dict) else 0)
                first = old.get("firstTimestamp") if isinstance(old, dict) else None
                involved = item["involved"]
                batch.put(
                    EVENTS,
                    key,
                    {
                        "apiVersion": "v1",
                        "kind": "Event",
                        "metadata": {
                            "name": key.split("/", 2)[2],
                            "namespace": involved.get("namespace") or "",
                            "creationTimestamp": first or item["first"],
                        },
                        "involvedObject": involved,
                        "reason": item["reason"],
                        "message": item["message"],
                        "type": item["type"],
                        "count": count,
                        "firstTimestamp": first or item["first"],
                        "lastTimestamp": item["last"],
                        "source": {"component": item["component"], "host": self.node_name},
                    },
                )
        self._mine.update(pending)
        self.written += len(pending)

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.settings.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # the disk: retry with the next event
                log.warning("writing events failed: %s", exc)

    async def _collector(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gc_interval)
            try:
                await self.prune()
            except Exception as exc:
                log.warning("pruning events failed: %s", exc)

    async def prune(self, now: float | None = None) -> int:
        """Delete this node's events past ``ttl`` and beyond ``max_per_node`` (and, on the
        collector, anyone's past ``ttl``); how many. An event's age is that of its last
        write (its ``lastTimestamp``, within ``flush_interval``), read from the version
        stamps: decoding every event made this a second-long stall on every node at once."""
        now = time.time() if now is None else now
        written = self.state.write_times(EVENTS)
        self._mine.intersection_update(written)  # (the collector may have pruned some)
        mine = sorted(((written[key], key) for key in self._mine), reverse=True)
        expired = []
        if self.is_collector():
            ttl = self.settings.ttl
            expired = [k for k, when in written.items() if k not in self._mine and now - when > ttl]
        old = [key for when, key in mine if now - when > self.settings.ttl]
        doomed = list(
            dict.fromkeys(expired + old + [k for _, k in mine[self.settings.max_per_node :]])
        )
        if doomed:
            async with self.state.batch() as batch:
                for key in doomed:
                    batch.delete(EVENTS, key)
            self._mine.difference_update(doomed)
        return len(doomed)
