"""What the page calls: ``await start(token, ws_url)`` once, then ``snapshot()`` to draw.

``start`` builds the shared :class:`~p2pkube.node.Node` with the tab's backends and starts
it: the same agent as ``p2pkube join``, of kind ``browser``. ``snapshot()`` returns, as JSON,
what the page shows (its identity, peers, pods with their last log lines, recent events);
it is synchronous and cheap, since a background task keeps it current.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import js  # type: ignore[import-not-found]  # Pyodide's JS globals, only in a tab
import p2pjs  # type: ignore[import-not-found]  # bridge.js, registered by the page
from pyodide.ffi import create_proxy  # type: ignore[import-not-found]  # Pyodide only

from p2pkube.browser import platform
from p2pkube.browser.clusterview import ClusterFeeds
from p2pkube.browser.identity import BrowserIdentity, check_signature
from p2pkube.browser.link import browser_link_factory
from p2pkube.browser.proxy import TabProxy
from p2pkube.browser.runtime import WorkerRuntime
from p2pkube.browser.sealer import BridgeSealer
from p2pkube.browser.signaling import browser_connect
from p2pkube.browser.yjs_store import YjsStore
from p2pkube.model.objects import KIND_LABEL
from p2pkube.model.quantity import format_bytes
from p2pkube.net.jointoken import check_token, cluster_id, secrets_key
from p2pkube.net.mesh import Mesh
from p2pkube.node import Node, NodeConfig
from p2pkube.settings import AgentSettings
from p2pkube.state.store import EVENTS, OBJECTS, STATUS

log = logging.getLogger("p2pkube.browser")

DATA_DIR = "/p2pkube"
"""The node's data directory in the tab (IDBFS: memory, copied to IndexedDB)."""
LOG_LINES = 20
EVENTS_SHOWN = 30
WASM32_MEMORY = 4 << 30


def browser_settings() -> AgentSettings:
    """The agent's defaults, with what a tab holds in memory kept small."""
    settings = AgentSettings()
    settings.runtime.log_max_bytes = 1 << 20  # logs live in the tab's memory
    settings.runtime.log_max_files = 2
    return settings


def capacity(settings: AgentSettings) -> dict[str, str]:
    """What the tab offers to pods (``browser.cpu``/``browser.memory``, else the device's)."""
    navigator = js.navigator
    cores = int(getattr(navigator, "hardwareConcurrency", 0) or 2)
    device_gb = float(getattr(navigator, "deviceMemory", 0) or 4)
    memory = min(WASM32_MEMORY, int(device_gb * (1 << 30) / 2))
    return {
        "cpu": settings.browser.cpu or str(max(1, cores - 1)),
        "memory": settings.browser.memory or format_bytes(memory),
    }


class BrowserNode:
    """The shared node plus what only a tab does: persistence, visibility, the page's view."""

    def __init__(self, node: Node, sync: platform.DataDirSync) -> None:
        self.node = node
        self.sync = sync
        self.status = "starting"
        self.error = ""
        self.started = time.monotonic()
        self.ready_ms: float | None = None
        self._logs: dict[str, list[str]] = {}
        self._view: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        settings = node.settings
        self.proxy = TabProxy(
            getattr(node, "services", None),  # the node's ServiceRouter
            settings.services,
            node.node_name,
            settings.browser.proxy_streams,
        )
        self.feeds = ClusterFeeds(node)
        """The Cluster tab's watches, polls and followed logs (``clusterview``)."""
        self._visibility = create_proxy(self._on_visibility)
        self._pagehide = create_proxy(self._on_pagehide)

    @classmethod
    async def create(cls, token: str, ws_url: str) -> BrowserNode:
        platform.install()
        await platform.mount_data_dir(DATA_DIR)
        identity = await BrowserIdentity.load_or_create()
        settings = browser_settings()
        settings.check()
        name = f"tab-{identity.node_id[:8]}"
        config = NodeConfig(
            name=name,
            kind="browser",
            token=token,
            data_dir=Path(DATA_DIR),
            settings=settings,
            capacity=capacity(settings),
            node_info={"userAgent": str(js.navigator.userAgent)},
        )
        mesh = Mesh(
            identity=identity,
            name=name,
            kind="browser",
            cluster=cluster_id(token),
            token=token,
            signaling_url=ws_url,
            settings=settings.transport,
            link_factory=browser_link_factory(settings.transport),
            connect=browser_connect,
            check_signature=check_signature,
        )
        node = Node(
            config,
            mesh=mesh,
            runtime_factory=lambda: WorkerRuntime(
                settings.runtime,
                worker_pool=(
                    settings.browser.worker_pool,
                    settings.browser.worker_pool_refill_delay,
                ),
            ),
            store_factory=YjsStore,
            sealer=BridgeSealer(secrets_key(token)),
        )
        return cls(node, platform.DataDirSync(settings.browser.sync_interval))

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._refresh())
        try:
            await self.node.start()
        except Exception as exc:
            self.status, self.error = "error", f"{type(exc).__name__}: {exc}"
            raise
        self.sync.start()
        js.document.addEventListener("visibilitychange", self._visibility)
        js.window.addEventListener("pagehide", self._pagehide)
        self._on_visibility()
        # The Service Worker's requests, from now on; bodies over the cap refused in JS.
        p2pjs.serveServiceRequests(self.proxy, self.node.settings.services.max_request_body_bytes)
        self.status = "running"
        self.ready_ms = round((time.monotonic() - self.started) * 1000, 1)
        await self.sync.flush()  # the identity's Node object and first state, durable now

    def _on_visibility(self, *_: Any) -> None:
        hidden = str(js.document.visibilityState) == "hidden"
        self.node.membership.grace = self.node.settings.browser.hidden_grace if hidden else 0.0

    def _on_pagehide(self, event: Any = None) -> None:
        """The tab closes or reloads: no await will run any more, but a data channel send is
        synchronous, so the neighbours still hear that this node leaves (NotReady at once,
        instead of after SWIM's suspicion timeout)."""
        if not getattr(event, "persisted", False):
            self.node.membership.say_leaving()

    async def stop(self) -> None:
        p2pjs.serveServiceRequests(None)
        await self.feeds.close_all()
        await self.proxy.close_all()
        js.document.removeEventListener("visibilitychange", self._visibility)
        js.window.removeEventListener("pagehide", self._pagehide)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.node.stop()
        await self.sync.close()
        self.status = "stopped"

    # -- the page's view -------------------------------------------------------------------------
    async def _refresh(self) -> None:
        """Owned task: rebuild the view every ``browser.snapshot_interval``. Log lines are
        read again only when a pod wrote output or the set of pods changed (a log is read
        whole, and a busy pod's may be a megabyte)."""
        interval = self.node.settings.browser.snapshot_interval
        with contextlib.ExitStack() as stack:
            output: asyncio.Event | None = None
            read_for: object = None
            while True:
                try:
                    runtime = self.node.runtime
                    if output is None and runtime is not None:
                        output = stack.enter_context(runtime.output_waiter())
                        output.set()
                    pods = self._my_pods()
                    seen = [
                        (key, (self.node.state.get(STATUS, key) or {}).get("phase"))
                        for key, _ in pods
                    ]
                    if output is not None and (output.is_set() or seen != read_for):
                        output.clear()
                        read_for = seen
                        await self._read_logs(pods)
                    self._view = self._build_view(pods)
                except Exception:  # the page must keep drawing whatever one pass hit
                    log.exception("snapshot failed")
                await asyncio.sleep(interval)

    def _my_pods(self) -> list[tuple[str, dict[str, Any]]]:
        state = self.node.state
        pods = []
        for key, obj in state.items(OBJECTS, "Pod/"):
            if isinstance(obj, dict):
                if (obj.get("spec") or {}).get("nodeName") == self.node.node_name:
                    pods.append((key, obj))
        return sorted(pods)

    async def _read_logs(self, pods: list[tuple[str, dict[str, Any]]]) -> None:
        kubelet = self.node.kubelet
        if kubelet is None:
            return
        fresh = {}
        for key, _ in pods:
            _, namespace, name = key.split("/", 2)
            try:
                lines = await kubelet.logs(namespace, name, tail=LOG_LINES)
            except LookupError:
                continue
            fresh[key] = [line.text for line in lines]
        self._logs = fresh

    def _kind_of(self, name: str) -> str:
        """``native`` or ``browser``, from the node's Node object (the page names the native
        ones: a tab is no API server, kubectl reaches the cluster through those)."""
        obj = self.node.state.get(OBJECTS, f"Node//{name}")
        labels = (obj.get("metadata") or {}).get("labels") or {} if isinstance(obj, dict) else {}
        return str(labels.get(KIND_LABEL, ""))

    def _build_view(self, my_pods: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        node = self.node
        linked = set(node.mesh.neighbours())
        peers = [
            {
                "name": liveness.name,
                "id": liveness.node,
                "kind": self._kind_of(liveness.name),
                "state": ("Ready" if liveness.ready else "NotReady")
                + (" · linked" if liveness.node in linked else ""),
            }
            for liveness in sorted(node.membership.nodes(), key=lambda n: n.name)
        ]
        pods = []
        for key, obj in my_pods:
            status = node.state.get(STATUS, key) or {}
            containers = status.get("containerStatuses") or [{}]
            state = containers[0].get("state") or {}
            detail: dict[str, Any] = next(iter(state.values()), {}) if state else {}
            pods.append(
                {
                    "namespace": obj["metadata"].get("namespace", ""),
                    "name": obj["metadata"]["name"],
                    "phase": status.get("phase", "Pending"),
                    "reason": detail.get("reason") or status.get("reason") or "",
                    "restarts": sum(int(c.get("restartCount", 0)) for c in containers),
                    "logs": self._logs.get(key, []),
                }
            )
        events = []
        for _, event in node.state.items(EVENTS):
            if not isinstance(event, dict):
                continue
            involved = event.get("involvedObject") or {}
            events.append(
                {
                    "time": event.get("lastTimestamp", ""),
                    "type": event.get("type", ""),
                    "reason": event.get("reason", ""),
                    "object": f"{involved.get('kind', '')}/{involved.get('name', '')}".lower(),
                    "message": event.get("message", ""),
                }
            )
        events.sort(key=lambda e: e["time"])
        return {
            "peers": peers,
            "pods": pods,
            "events": events[-EVENTS_SHOWN:],
            "stats": {
                "readyMs": self.ready_ms,
                "links": len(linked),
                "syncs": self.sync.syncs,
                "loadedObjects": node.loaded_objects,
                "syncBytesReceived": node.state.stats.sync_step2_bytes_received,
                "docSize": node.state.stats.doc_size,
                "runtime": node.runtime.stats() if node.runtime is not None else {},
                "serviceWorker": {**p2pjs.serviceWorkerInfo().to_py(), **self.proxy.stats()},
            },
        }

    def snapshot(self) -> dict[str, Any]:
        """The page's view; the node's identity from the start, the rest once the first
        refresh ran (a caller reading it right after start() gets the name either way)."""
        identity = {"name": self.node.node_name, "id": self.node.node_id, "kind": "browser"}
        return {"status": self.status, "error": self.error, "node": identity, **self._view}


_node: BrowserNode | None = None
_error = ""


async def start(token: str, ws_url: str) -> None:
    """Start this tab's node (once per page); raises when it cannot (e.g. a wrong token, or
    one too short to be safe: the message says how to make one)."""
    global _node, _error
    if _node is not None:
        raise RuntimeError("the node is already started")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        check_token(str(token))
        if not await p2pjs.acquireNodeLock():
            raise RuntimeError(
                "another tab of this site already runs this browser's node (they would share "
                "one identity); close it or use another browser profile"
            )
        _node = await BrowserNode.create(str(token), str(ws_url))
        await _node.start()
    except Exception as exc:
        _error = f"{type(exc).__name__}: {exc}"
        raise


def snapshot() -> str:
    """The page's view as JSON (``{"status": "starting"}`` until the node exists)."""
    if _node is None:
        return json.dumps({"status": "error" if _error else "starting", "error": _error})
    return json.dumps(_node.snapshot(), default=_jsonable)


def _feeds() -> ClusterFeeds:
    if _node is None or _node.status != "running":
        raise RuntimeError("the node is not running")
    return _node.feeds


def dashboard_watch(kinds: str, callback: Any) -> int:
    """The Cluster tab: a watch on ``kinds`` (``clusterview.ClusterFeeds.watch``)."""
    return _feeds().watch(kinds, callback)


def dashboard_logs(namespace: str, pod: str, callback: Any) -> int:
    """The Cluster tab: a pod's log, followed (``clusterview.ClusterFeeds.logs``)."""
    return _feeds().logs(namespace, pod, callback)


async def dashboard_poll() -> str:
    """The Cluster tab: the dashboard's poll answer as JSON."""
    return await _feeds().poll()


def dashboard_close(feed: int) -> None:
    """The Cluster tab: end a watch or a followed log."""
    if _node is not None:
        _node.feeds.close(feed)


def node() -> BrowserNode | None:
    """The running node (tests and the console)."""
    return _node


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
