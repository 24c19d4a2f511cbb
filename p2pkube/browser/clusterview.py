"""The Cluster tab of a browser node's page: the dashboard's data source inside the tab.

The native agent's dashboard reads its agent over HTTP (watches, ``/v1/dashboard``, pod logs);
a tab has no HTTP server, but it runs the same :class:`~p2pkube.node.Node`, so the page's
``source-bridge.js`` asks this module for the same three things, from the tab's own node:

* ``watch(kinds, callback)``: one watch on several kinds (``Node.watch``); each burst of
  events goes to ``callback(json_text, ended)`` as a JSON list, ``ended`` once the watch ends
  (its timeout, or the node stopping; the page then opens a new one, which lists again);
* ``poll()``: ``Node.dashboard()`` as JSON (mesh, RTTs, leases, request counters, endpoints);
* ``logs(namespace, pod, callback)``: the pod's log followed (``Node.follow_logs``), each
  line to ``callback(text, ended)``.

Every feed is a task owned here, with an id the page closes it by; all are cancelled when the
node stops. A feed's events wait in the watch's own bounded queue: a page that stops reading
loses its watch (an ERROR ends it), it never makes the node buffer without bound. At most
``MAX_FEEDS`` feeds are open at once (a page opens two or three).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from p2pkube.model.watch import DEFAULT_WATCH_SECONDS
from p2pkube.node import Node
from p2pkube.runtime.podlogs import LogRequest

log = logging.getLogger(__name__)

__all__ = ["MAX_FEEDS", "ClusterFeeds"]

MAX_FEEDS = 16
"""Feeds (watches and followed logs) one page may hold open at once."""
LOG_TAIL_LINES = 200
"""Lines of a pod's log sent before following it (as the native page asks)."""

Callback = Callable[[str | None, bool], Any]
"""A JavaScript function the page passed: ``(json_or_text, ended)``."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_jsonable)


class ClusterFeeds:
    """The feeds of one page's Cluster tab (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._feeds: dict[int, asyncio.Task[None]] = {}
        self._next = 0

    def _open(self, job: Callable[[], Any]) -> int:
        if len(self._feeds) >= MAX_FEEDS:
            raise RuntimeError(f"{MAX_FEEDS} dashboard feeds are open already")
        self._next += 1
        feed = self._next
        task = asyncio.get_running_loop().create_task(job())
        self._feeds[feed] = task
        task.add_done_callback(lambda _t: self._feeds.pop(feed, None))
        return feed

    def watch(self, kinds: str, callback: Callback) -> int:
        """Open a watch on the comma-separated ``kinds``; its feed id."""
        wanted = tuple(k for k in str(kinds).split(",") if k)
        if not wanted:
            raise ValueError("no kind to watch")

        async def pump() -> None:
            watch = self.node.watch(wanted, None, timeout=DEFAULT_WATCH_SECONDS)
            try:
                while True:
                    first = await watch.get()
                    events = [first, *watch.ready_events()]
                    ended = None in events
                    callback(dumps([e for e in events if e is not None]), ended)
                    if ended:
                        return
            except Exception:
                log.exception("dashboard watch on %s failed", kinds)
                callback(None, True)
            finally:
                watch.close()

        return self._open(pump)

    def logs(self, namespace: str, pod: str, callback: Callback) -> int:
        """Follow a pod's log; its feed id. A log that cannot be read ends the feed with the
        reason as its text."""

        async def pump() -> None:
            request = LogRequest(str(namespace), str(pod), tail=LOG_TAIL_LINES)
            lines = self.node.follow_logs(request, DEFAULT_WATCH_SECONDS)
            try:
                async for line in lines:
                    callback(line.text + "\n", False)
                callback(None, True)
            except LookupError as exc:
                callback(str(exc).strip("'\""), True)
            finally:
                await lines.aclose()

        return self._open(pump)

    async def poll(self) -> str:
        """The dashboard's poll answer as JSON."""
        return dumps(await self.node.dashboard())

    def close(self, feed: int) -> None:
        """End one feed (the page left the tab or the pod); unknown ids are ignored."""
        task = self._feeds.pop(int(feed), None)
        if task is not None:
            task.cancel()

    async def close_all(self) -> None:
        tasks = list(self._feeds.values())
        self._feeds.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
