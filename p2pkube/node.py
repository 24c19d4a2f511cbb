"""One p2pkube node, native or in a browser tab: the parts every node shares, wired together.

A node is the replicated state, membership, rpc, blobs, the kubelet, the scheduler and the
events, over a transport (a :class:`~p2pkube.net.mesh.Mesh` of links) and a pod runtime. What
differs between a native node and a browser tab is injected: the mesh's links and signaling
(aiortc and aiohttp natively, the page's RTCPeerConnection and WebSocket in a tab), the state
document's backend (pycrdt or yjs), the pod runtime (wasmtime threads or Web Workers), the
capacity it offers. This module imports none of those, so it runs in Pyodide as well
(``p2pkube.agent`` is the native node, ``p2pkube.browser`` the tab).

A node owns every long-lived task it starts and stops them in reverse order: it first tells
its neighbours it is leaving (so they mark it NotReady at once instead of after a timeout),
flushes the state, then closes its links.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pkube import __version__
from p2pkube.blobs.fetcher import FAR, Holder, hop_counts
from p2pkube.blobs.manifest import is_digest, referenced_digests
from p2pkube.blobs.service import BlobService
from p2pkube.dashboard.meshview import MeshView
from p2pkube.membership.liveness import NodeLiveness, detection_bound
from p2pkube.membership.swim_host import ROUTED_KIND as SWIM_ROUTED_KIND
from p2pkube.membership.swim_host import SwimMembership
from p2pkube.model.objects import KIND_LABEL, ObjectService, Validator
from p2pkube.model.quantity import parse_quantity
from p2pkube.model.resources import Resources
from p2pkube.model.secrets import Sealer
from p2pkube.model.timestamps import utc_now
from p2pkube.model.watch import DEFAULT_WATCH_SECONDS, WATCH_QUEUE_SIZE, Watch
from p2pkube.net.frames import Frame, FrameType, deflate, inflate
from p2pkube.net.jointoken import cluster_id
from p2pkube.net.mesh import Mesh
from p2pkube.net.rpc import Rpc
from p2pkube.observe import NO_OBSERVER, Observer
from p2pkube.runtime.hostpaths import HostPathPolicy
from p2pkube.runtime.interface import PodRuntime
from p2pkube.runtime.kubelet import Kubelet
from p2pkube.runtime.podlogs import LogReply, LogRequest, LogsUnavailable, PodLogs
from p2pkube.runtime.usage import ProcessUsage, UsageMeter, UsageReport, UsageUnavailable
from p2pkube.sched.events import EventRecorder
from p2pkube.sched.manager import NodeState, Scheduler
from p2pkube.sched.view import involved
from p2pkube.services.endpoints import ENDPOINTS_KIND, computed_endpoints
from p2pkube.services.router import ServiceRouter
from p2pkube.services.types import RequestHandler
from p2pkube.settings import AgentSettings
from p2pkube.state import ClusterState, StoreFactory, object_key
from p2pkube.state.store import OBJECTS, STATUS
from p2pkube.state.sync import SyncProtocolError

log = logging.getLogger("p2pkube.node")

AGENT_LABELS_ANNOTATION = "p2pkube.io/agent-labels"
"""On a Node: the keys of the labels its agent set (``--label``, the kind), so that a label
dropped from ``join --label`` goes at the next start while labels users wrote stay."""


@dataclass
class NodeConfig:
    """What a node is, as its starter decides (``p2pkube join``, or the browser page)."""

    name: str
    kind: str
    """``native`` or ``browser`` (the ``p2pkube.io/kind`` label)."""
    token: str
    data_dir: Path
    settings: AgentSettings
    capacity: dict[str, str]
    """What it offers: ``{"cpu": "2", "memory": "8Gi"}``."""
    labels: dict[str, str] = field(default_factory=dict)
    node_info: dict[str, str] = field(default_factory=dict)
    """Extra ``status.nodeInfo`` fields (e.g. the browser's user agent)."""
    host_paths: HostPathPolicy = field(default_factory=HostPathPolicy)
    """Host directories pods may mount here: the operator's grant (none by default, and
    always none in a browser), published in the Node status for placement."""
    addresses: list[dict[str, str]] = field(default_factory=list)
    """``status.addresses`` as in Kubernetes (``[{"type": "InternalIP", "address": ...}]``):
    where this node's NodePorts are reached (``p2pkube join --node-ip``); none in a tab."""
    process_usage: ProcessUsage | None = None
    """The CPU time and memory of the node's process, measured (natively through psutil);
    None in a tab, whose usage is then its pods' (``runtime/usage.py``)."""


class Node:
    """A running node, native or browser; also the backend of the local API (natively)."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        mesh: Mesh,
        runtime_factory: Callable[[], PodRuntime],
        store_factory: StoreFactory,
        validate: Validator | None = None,
        sealer: Sealer | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        """``validate`` checks the objects users write (the native agent passes the pydantic
        models' ``validate_object``); a node without one takes no object writes. ``sealer``
        seals and opens Secret values (:mod:`p2pkube.model.secrets`); a node without one
        cannot read them. ``observer`` is told of the events metrics time (scheduling
        passes, pod starts, container runs, Service requests); the default does nothing."""
        self.config = config
        self.observer = observer
        self.node_name = config.name
        self.data_dir = config.data_dir
        self.node_id = mesh.node_id
        self.cluster = cluster_id(config.token)
        self.started_wall = utc_now()
        self.started = time.monotonic()
        self.settings = config.settings
        self.mesh = mesh
        self._deflated: tuple[bytes, bytes] = (b"", b"")
        """The last state message deflated, and its deflated bytes (``_sync_frame``)."""
        self._runtime_factory = runtime_factory
        self.state = ClusterState(
            config.data_dir,
            self.settings.state,
            is_compactor=self._is_compactor,
            relay_exclude=lambda peer: self.membership.relay_exclude(peer),
            store_factory=store_factory,
        )
        self.membership = SwimMembership(
            self.mesh.signatures,
            config.name,
            self.mesh,
            self.settings.membership,
            self.settings.swim,
            on_change=self._on_liveness,
            on_violation=self.mesh.drop_neighbour,
        )
        self.rpc = Rpc(self.mesh, self.settings.rpc)
        self.blobs = BlobService(
            config.data_dir / "blobs",
            self.settings.blobs,
            node_name=config.name,
            state=self.state,
            rpc=self.rpc,
            holders=self._blob_holders,
            references=self._blob_references,
            is_collector=self._is_compactor,
            on_local_change=self._publish_node_status,
        )
        """The pod runtime calls ``agent.blobs.ensure(digest)`` (a verified local Path)."""
        self.events = EventRecorder(
            self.state, config.name, self.settings.events, is_collector=self._is_compactor
        )
        self.scheduler = Scheduler(
            self.node_id,
            config.name,
            self.state,
            nodes=self._node_states,
            is_collector=self._is_compactor,
            events=self.events,
            settings=self.settings.scheduler,
            observer=observer,
        )
        self.objects = ObjectService(
            self.state,
            node_ready=self.node_ready,
            validate=validate,
            node_ports=self.settings.services.node_ports(),
            creation_writes=self.scheduler.creation_writes,
            sealer=sealer,
        )
        self.services = ServiceRouter(
            config.name,
            self.objects,
            self.rpc,
            self.settings.services,
            node_ready=self.node_ready,
            node_id_of=self.node_id_of,
            reachable=self.node_reachable,
            handler_for=self._handler_for,
            on_change=self.state.on_change,
            observer=observer,
        )
        """Routes HTTP requests for Services and pods (the front doors' ``open``) and serves
        other nodes' requests for the handler pods here (the request rpc)."""
        self.meshview = MeshView(
            self.node_id,
            config.name,
            membership=self.membership,
            neighbours=self.mesh.neighbours,
            rpc=self.rpc,
            settings=self.settings.dashboard,
            kind_of=self._node_kind,
            leases=self.scheduler.leases,
            service_requests=lambda: dict(self.services.stats.per_service),
        )
        """The dashboard's poll answer: the mesh with RTTs, leases, request counters."""
        self.runtime: PodRuntime | None = None
        """Created in start(): the runtime needs the running loop."""
        self.kubelet: Kubelet | None = None
        self.logs: PodLogs | None = None
        self.usage: UsageMeter | None = None
        """This node's measured usage, and other nodes' asked over the mesh (``top``)."""
        self._not_ready_since: dict[str, float] = {}
        """Node id -> when this agent saw it become NotReady (monotonic)."""
        self.mesh.on_link_up = self._on_link_up
        self.mesh.on_link_down = self._on_link_down
        self.mesh.on_frame = self._on_frame
        self.mesh.on_routed = self._on_routed
        self.mesh.route_hint = self.membership.route_hint
        self.mesh.reachable = self.membership.is_reachable
        self.mesh.public_key_of = self.membership.public_key
        self.watches = self.objects.watch_hub(self._render)
        """Every open watch (the local API's): fed from the state's change callback and from
        liveness transitions (a Node's Ready lives in the failure detector, not the document)."""
        self._jobs: set[asyncio.Task[Any]] = set()
        self.loaded_objects = 0
        """Objects the state held when it was opened, before any peer synced: what this node
        kept from its last run (on disk natively, in IndexedDB in a tab)."""

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the state, join the mesh, then run pods and schedule (raises
        SignalingRejected on a bad token)."""
        await self.state.open()
        self.loaded_objects = len(self.state.keys(OBJECTS))
        await self.blobs.start()  # before the Node status, which lists the blobs held here
        await self._publish_node()
        await self.mesh.start()  # raises SignalingRejected on a bad token
        await self.membership.start()
        await self.events.start()
        await self._await_first_sync()
        await self._reconcile_node_object()
        await self._start_kubelet()
        self.services.start()
        await self.scheduler.start()

    async def stop(self) -> None:
        """Leave: stop scheduling and pods, say goodbye, flush the state, close the links."""
        self.watches.close()
        if self.usage is not None:
            await self.usage.close()
        await self.scheduler.close()
        await self.services.close()
        if self.kubelet is not None:
            await self.kubelet.close()
        if self.runtime is not None:
            await self.runtime.close()
        await self.blobs.close()
        await self.events.close()
        await self.meshview.close()
        await self.rpc.close()
        await self.membership.close(leaving=True)
        await self.state.close()
        await self.mesh.close()

    async def _await_first_sync(self) -> None:
        """Catch up with a peer (one step 2 applied) before running pods; bounded by
        kubelet.initial_sync_timeout, and skipped when the signaling server knows no peer."""
        deadline = time.monotonic() + self.settings.kubelet.initial_sync_timeout
        signaling = self.mesh.signaling
        while time.monotonic() < deadline:
            if self.state.synced_with_a_peer:
                return
            if signaling is not None and signaling.connected and not signaling.peers:
                return  # alone in the cluster: nobody to catch up with
            await asyncio.sleep(0.05)
        log.info(
            "no peer synced within kubelet.initial_sync_timeout (%.1fs); starting pods anyway",
            self.settings.kubelet.initial_sync_timeout,
        )

    async def _start_kubelet(self) -> None:
        """The pod runtime and lifecycle; pods assigned to this node start running."""
        self.runtime = self._runtime_factory()
        runtime = self.runtime
        self.blobs.on_collected = lambda digest: self._spawn(runtime.forget(digest))
        self.kubelet = Kubelet(
            self.node_name,
            self.state,
            runtime,
            self.blobs,
            self.data_dir / "pods",
            allocatable=self._allocatable,
            settings=self.settings.kubelet,
            runtime_settings=self.settings.runtime,
            services=self.settings.services,
            host_paths=self.config.host_paths,
            on_host_path_refused=lambda: self._spawn(self._publish_node_status()),
            read_object=self.objects.get,
            secret_dir=self._secret_volume_dir(),
            record=lambda obj, reason, message, warning=False: self.events.record(
                involved(obj), reason, message, component="kubelet", warning=warning
            ),
            observer=self.observer,
        )
        self.logs = PodLogs(
            self.node_name, self.state, self.kubelet, self.rpc, node_id_of=self.node_id_of
        )
        await self.kubelet.start()
        self.usage = UsageMeter(
            self.rpc,
            runtime.usage,
            self.config.process_usage,
            interval=self.settings.kubelet.usage_interval,
            timeout=self.settings.kubelet.usage_timeout,
        )
        self.usage.start()

    def _spawn(self, coroutine: Any) -> None:
        """Run a small fire-and-forget job; kept referenced until it is done."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    def _node_states(self) -> list[NodeState]:
        """Every Node object with its status and how this agent sees its liveness."""
        now = time.monotonic()
        never_seen = max(0.0, now - self.started - self._unheard_timeout())
        states = []
        for key, obj in self.state.items(OBJECTS, "Node//"):
            if not isinstance(obj, dict):
                continue
            uid = obj.get("metadata", {}).get("uid", "")
            liveness = self.membership.get(uid)
            ready = uid == self.node_id or (liveness is not None and liveness.ready)
            unknown = False
            if ready:
                lost = 0.0
            elif uid in self._not_ready_since:
                lost = now - self._not_ready_since[uid]
            else:
                lost, unknown = never_seen, liveness is None and never_seen == 0.0
            status = self.state.get(STATUS, key)
            states.append(
                NodeState(obj, status if isinstance(status, dict) else {}, ready, lost, unknown)
            )
        return states

    def _unheard_timeout(self) -> float:
        """Seconds after this agent's start when a node it never heard from stops being
        Unknown (``Starting``) and is NotReady (``AgentNeverHeard``): the time SWIM takes to
        declare a member that stopped DEAD, at the cluster's size (`detection_bound`)."""
        members = max(len(self.membership.core.members()), len(self.mesh.neighbours()) + 1)
        return detection_bound(self.settings.swim, members)

    def _allocatable(self) -> Resources:
        capacity = self._node_status()["allocatable"]
        return Resources.of(parse_quantity(capacity["cpu"]), parse_quantity(capacity["memory"]))

    def node_ready(self, name: str) -> bool:
        """Whether node ``name`` is Ready as this agent sees it (itself always is)."""
        if name == self.node_name:
            return True
        node_id = self.node_id_of(name)
        liveness = self.membership.get(node_id) if node_id else None
        return liveness is not None and liveness.ready

    def node_reachable(self, node_id: str) -> bool:
        """Whether this node has a path to ``node_id`` now: a link to it, or to the next hop
        of a route toward it (from the members' signed neighbour lists: what ``send_routed``
        needs). False as soon as a link goes that no route replaces, before SWIM declares the
        node DEAD."""
        if self.mesh.link(node_id) is not None:
            return True
        hop = self.membership.route_hint(node_id)
        return hop is not None and self.mesh.link(hop) is not None

    def _handler_for(self, namespace: str, pod: str, port: int) -> RequestHandler | None:
        """The kubelet's handler for a pod's containerPort here (None before it runs)."""
        return self.kubelet.handler_for(namespace, pod, port) if self.kubelet else None

    def block_nodes(self, names: list[str]) -> list[str]:
        ids = []
        for name in names:
            node_id = self.node_id_of(name)
            if node_id is None or name == self.node_name:
                raise LookupError(f"no other node named {name!r}")
            ids.append(node_id)
        self.mesh.block(ids)
        log.warning("fault injection: links to %s blocked", ", ".join(names) or "nobody")
        return sorted(names)

    def stall_loop(self, seconds: float) -> float:
        """Fault injection: block this agent's event loop for ``seconds`` with a synchronous
        sleep, on purpose, as a long blocking call or a starved process would; the seconds it
        took. What the tests of "slow is not dead" (Lifeguard) need from a real agent: nothing
        runs meanwhile, not membership, not the links' timers."""
        log.warning("fault injection: blocking the event loop for %.1f s", seconds)
        started = time.monotonic()
        time.sleep(seconds)
        return time.monotonic() - started

    def _node_kind(self, name: str) -> str | None:
        """A node's kind (``native``, ``browser``) from its Node object's kind label."""
        node = self.state.get(OBJECTS, object_key("Node", "", name))
        labels = node.get("metadata", {}).get("labels") if isinstance(node, dict) else None
        kind = labels.get(KIND_LABEL) if isinstance(labels, dict) else None
        return kind if isinstance(kind, str) else None

    async def dashboard(self) -> dict[str, Any]:
        """The dashboard's poll answer: :meth:`MeshView.snapshot` and every Service's
        endpoints as this node computes them (a computed kind, which no watch carries)."""
        return {**await self.meshview.snapshot(), "endpoints": self._endpoints(None)}

    def node_id_of(self, name: str) -> str | None:
        """The id of the node called ``name`` (from its Node object), None if unknown."""
        if name == self.node_name:
            return self.node_id
        node = self.state.get(OBJECTS, object_key("Node", "", name))
        uid = node.get("metadata", {}).get("uid") if isinstance(node, dict) else None
        return uid if isinstance(uid, str) else None

    def _is_compactor(self) -> bool:
        """Only the Ready node with the smallest id compacts the document (others could, and
        would converge, but the work would be done N times when all cross the threshold)."""
        return all(
            self.node_id <= n.node for n in self.membership.nodes() if n.ready and self._is_node(n)
        )

    def _is_node(self, liveness: NodeLiveness) -> bool:
        """Whether a member is a node of the cluster: its Node object names its id. Anyone
        with the token can make a key and keep a member of it alive (it signs its own
        records and answers probes), but only an agent publishes a Node: a made-up member
        with a small id must not take a duty (compaction, collection) and then neglect it."""
        node = self.state.get(OBJECTS, object_key("Node", "", liveness.name))
        return isinstance(node, dict) and node.get("metadata", {}).get("uid") == liveness.node

    # -- wiring --------------------------------------------------------------------------------
    def _on_link_up(self, node: str) -> None:
        # Liveness first: on the ordered channel the neighbour then learns who is Ready
        # before the state diff arrives, so no scheduler acts on a stale NotReady.
        self.membership.link_up(node)

        def send(data: bytes) -> None:
            self.mesh.send(node, *self._sync_frame(data))

        self.state.attach_peer(node, send)

    def _sync_frame(self, data: bytes) -> tuple[FrameType, bytes]:
        """How a state message travels: deflated from ``transport.sync_deflate_bytes`` on
        (when that makes it smaller). A transaction goes to every neighbour in a row, the
        same bytes each time, so it is deflated once."""
        threshold = self.settings.transport.sync_deflate_bytes
        if not threshold or len(data) < threshold:
            return FrameType.SYNC, data
        if self._deflated[0] is not data:
            self._deflated = (data, deflate(data))
        packed = self._deflated[1]
        return (
            (FrameType.SYNC_DEFLATE, packed) if len(packed) < len(data) else (FrameType.SYNC, data)
        )

    def _on_link_down(self, node: str) -> None:
        self.membership.link_down(node)
        self.state.detach_peer(node)

    def _on_routed(self, src: str, data: dict[str, Any]) -> None:
        """A routed message for this node: membership's (SWIM) or an rpc."""
        if data.get("kind") == SWIM_ROUTED_KIND:
            self.membership.handle_routed(src, data)
        else:
            self.rpc.receive(src, data)

    def _on_frame(self, node: str, frame: Frame) -> None:
        if frame.type in (FrameType.SYNC, FrameType.SYNC_DEFLATE):
            body = frame.body
            if frame.type is FrameType.SYNC_DEFLATE:  # FrameError: the link drops the peer
                body = inflate(body, self.settings.transport.max_frame_bytes)
            try:
                self.state.receive(node, body)
            except SyncProtocolError as exc:
                log.warning("dropping peer %s: bad sync message: %s", node, exc)
                link = self.mesh.link(node)
                if link is not None:
                    link.violation = True
                    link.close_soon(f"protocol violation: {exc}", notify=False)
        elif frame.type is FrameType.SWIM:
            self.membership.handle_frame(node, frame.body)
        else:
            log.warning("unexpected %s frame from %s ignored", frame.type.name, node)

    def _on_liveness(self, liveness: NodeLiveness) -> None:
        if liveness.ready:
            self.mesh.add_candidate(liveness.node)
            self._not_ready_since.pop(liveness.node, None)
        else:
            self._not_ready_since.setdefault(liveness.node, time.monotonic())
        self.scheduler.wake()
        # Node watches: Ready lives here, not in the document.
        self.watches.publish([object_key("Node", "", liveness.name)])

    def _secret_volume_dir(self) -> Path:
        """This agent's directory for secret volumes, under ``kubelet.secret_volume_dir``
        (memory); named by node id, so agents sharing a machine keep apart, and an agent
        restarted on its data dir finds (and cleans) its own."""
        root = Path(self.settings.kubelet.secret_volume_dir)
        if root.is_dir():
            return root / f"p2pkube-{self.node_id[:16]}"
        fallback = self.data_dir / "secret-volumes"
        log.warning(
            "kubelet.secret_volume_dir %s is not a directory: secret volumes go to %s, on disk",
            root,
            fallback,
        )
        return fallback

    # -- this node's Node object ---------------------------------------------------------------
    async def _publish_node(self) -> None:
        """Write this node's status, and its Node object if it has none of its own yet.

        The object is not rewritten at every start: its spec is the users' (``p2pkube
        cordon``, ``taint``), written through any node's API, maybe while this one was
        down, and a value is replaced whole (last writer wins). A node back from a restart
        rewrites it only after its first sync, and only if its own part (identity, the
        labels it was started with) changed (``_reconcile_node_object``)."""
        key = object_key("Node", "", self.node_name)
        previous = self.state.get(OBJECTS, key)
        if not self._is_own(previous):
            await self.state.put(OBJECTS, key, self._own_node_object(previous))
        await self._publish_node_status()

    async def _reconcile_node_object(self) -> None:
        """After the first sync: this node's identity and labels in its Node object, the
        spec and the labels users wrote kept; no write when nothing of its own changed (so
        a cordon made elsewhere meanwhile is not overwritten by a restart)."""
        key = object_key("Node", "", self.node_name)
        current = self.state.get(OBJECTS, key)
        wanted = self._own_node_object(current)
        if wanted != current:
            await self.state.put(OBJECTS, key, wanted)

    def _is_own(self, obj: Any) -> bool:
        return isinstance(obj, dict) and obj.get("metadata", {}).get("uid") == self.node_id

    def _own_node_object(self, current: Any) -> dict[str, Any]:
        """The Node object this node wants, from the one there is (or None): its identity,
        its creation time (kept across restarts), the labels it was started with over the
        labels users wrote (those its agent set before and no longer sets are dropped), and
        the spec as users wrote it."""
        current = current if isinstance(current, dict) else {}
        meta = current.get("metadata") if isinstance(current.get("metadata"), dict) else {}
        created = meta.get("creationTimestamp") if self._is_own(current) else None
        own = {**self.config.labels, KIND_LABEL: self.config.kind}
        annotations = dict(meta.get("annotations") or {})
        before = set(str(annotations.get(AGENT_LABELS_ANNOTATION, "")).split(","))
        labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in before}
        annotations[AGENT_LABELS_ANNOTATION] = ",".join(sorted(own))
        spec = current.get("spec")
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "uid": self.node_id,
                "labels": {**labels, **own},
                "annotations": annotations,
                "creationTimestamp": created or self.started_wall,
            },
            "spec": spec if isinstance(spec, dict) else {},
        }

    def _node_status(self) -> dict[str, Any]:
        """This node's status as only this node writes it: capacity, node info, the blobs it
        holds completely (``images``, which other nodes fetch from), and the host paths its
        pods may mount (``allowedHostPaths``, ``protectedHostPaths``, and
        ``refusedHostPaths``, the paths its kubelet refused that the grants seemed to allow:
        what placement filters on; a status, not an annotation, because it is this node's
        report of itself, like its allocatable, and no user writes it)."""
        capacity = self.config.capacity
        pods = str(self.settings.kubelet.max_pods)
        return {
            "capacity": {**capacity, "pods": pods},
            "allocatable": {**capacity, "pods": pods},
            "nodeInfo": {
                "kind": self.config.kind,
                "agentVersion": __version__,
                "nodeID": self.node_id,
                "pythonVersion": sys.version.split()[0],
                **self.config.node_info,
            },
            "images": self.blobs.images(),
            **({"addresses": list(self.config.addresses)} if self.config.addresses else {}),
            **self.config.host_paths.with_refused(
                self.kubelet.refused_host_paths if self.kubelet else ()
            ).to_status(),
        }

    async def _publish_node_status(self) -> None:
        """(Re)write the Node status, e.g. when the set of local blobs changed. Built and
        applied in one step, so the last call always writes the newest status."""
        await self.state.put(STATUS, object_key("Node", "", self.node_name), self._node_status())

    # -- blobs ---------------------------------------------------------------------------------
    def _blob_holders(self) -> dict[str, list[Holder]]:
        """Digest -> the Ready nodes (not us) whose own Node status lists it in ``images``,
        with their distance in links (from the neighbour lists in the members' signed records)."""
        known = self.membership.nodes()
        peers = {n.node: n.peers for n in known}
        hops = hop_counts(self.node_id, self.mesh.neighbours(), lambda n: peers.get(n, ()))
        holders: dict[str, list[Holder]] = defaultdict(list)
        for liveness in known:
            if not liveness.ready:
                continue
            status = self.state.get(STATUS, object_key("Node", "", liveness.name))
            if not isinstance(status, dict):
                continue
            if (status.get("nodeInfo") or {}).get("nodeID") != liveness.node:
                continue  # written by another node of that name: not this node's word
            holder = Holder(liveness.node, liveness.name, hops.get(liveness.node, FAR))
            for image in status.get("images") or []:
                names = image.get("names") if isinstance(image, dict) else None
                for name in names if isinstance(names, list) else []:
                    if is_digest(name):
                        holders[name].append(holder)
        return holders

    def _blob_references(self) -> set[str]:
        """What keeps a blob from collection: an ``image`` naming it in any object's spec."""
        return referenced_digests(obj for _, obj in self.state.items(OBJECTS))

    # -- API backend ---------------------------------------------------------------------------
    def _condition(self, node_id: str) -> tuple[dict[str, Any], int]:
        if node_id == self.node_id:
            return (
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AgentReady",
                    "lastHeartbeatTime": utc_now(),
                    "lastTransitionTime": self.started_wall,
                },
                len(self.mesh.neighbours()),
            )
        liveness = self.membership.get(node_id)
        if liveness is None:
            waited = time.monotonic() - self.started > self._unheard_timeout()
            return (
                {
                    "type": "Ready",
                    "status": "False" if waited else "Unknown",
                    "reason": "AgentNeverHeard" if waited else "Starting",
                    "lastHeartbeatTime": None,
                    "lastTransitionTime": self.started_wall,
                },
                0,
            )
        return (
            {
                "type": "Ready",
                "status": "True" if liveness.ready else "False",
                "reason": liveness.reason,
                "lastHeartbeatTime": liveness.last_heard,
                "lastTransitionTime": liveness.last_transition,
            },
            len(liveness.peers),
        )

    def list_nodes(self) -> list[dict[str, Any]]:
        nodes = []
        for key, obj in self.state.items(OBJECTS, "Node//"):
            if isinstance(obj, dict):
                nodes.append(self._with_node_status(key, obj))
        return sorted(nodes, key=lambda n: n["metadata"]["name"])

    def _with_node_status(self, key: str, obj: dict[str, Any]) -> dict[str, Any]:
        """A Node object with its status and the Ready condition as this node sees it."""
        status = dict(self.state.get(STATUS, key) or {})
        condition, peers = self._condition(obj.get("metadata", {}).get("uid", ""))
        status["conditions"] = [condition]
        status["peers"] = peers
        return {**obj, "status": status}

    def list_objects(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        if kind == ENDPOINTS_KIND:  # computed from Services and pods, never stored
            return self._endpoints(namespace)
        return self.objects.list(kind, namespace)

    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == ENDPOINTS_KIND:
            return next(iter(self._endpoints(namespace, name)), None)
        return self.objects.get(kind, namespace, name)

    def _endpoints(self, namespace: str | None, name: str | None = None) -> list[dict[str, Any]]:
        """The read-only Endpoints kind: each Service's endpoints as this node sees them."""
        return computed_endpoints(
            self.objects, namespace, name, node_ready=self.node_ready, node_id_of=self.node_id_of
        )

    async def put_object(
        self,
        obj: dict[str, Any],
        warn: Callable[[str], None] | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Validate and store a user object; returns once it is on disk (acknowledged)."""
        return await self.objects.put(obj, warn, dry_run=dry_run)

    async def put_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        return await self.objects.put_status(kind, namespace, name, status, dry_run=dry_run)

    async def delete_object(
        self, kind: str, namespace: str, name: str, *, force: bool = False
    ) -> bool:
        return await self.objects.delete(kind, namespace, name, force=force)

    async def read_logs(self, request: LogRequest) -> LogReply:
        """A container's log lines, from whichever node runs (or ran) the pod."""
        return await self._pod_logs().read(request)

    def follow_logs(self, request: LogRequest, seconds: float) -> Any:
        """``read_logs`` and then new lines as they are written (``logs -f``)."""
        return self._pod_logs().follow(request, seconds)

    async def read_usage(self, names: list[str]) -> dict[str, UsageReport | UsageUnavailable]:
        """The measured usage of the nodes called ``names``, this one's and the others' asked
        over the mesh at once (``kubectl top``); a node that cannot answer has its reason."""
        if self.usage is None:
            starting = UsageUnavailable("the agent is still starting")
            return dict.fromkeys(names, starting)
        return await self.usage.read({n: self.node_id_of(n) for n in names}, self.node_name)

    def _pod_logs(self) -> PodLogs:
        if self.logs is None:
            raise LogsUnavailable("the agent is still starting", 503)
        return self.logs

    def watch(
        self,
        kind: str | tuple[str, ...],
        namespace: str | None,
        *,
        match: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = DEFAULT_WATCH_SECONDS,
        max_queue: int = WATCH_QUEUE_SIZE,
        since: int | None = None,
        gone: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> Watch:
        """Watch ``kind`` in ``namespace`` (None: all, "": cluster-scoped); a started Watch.

        Use it as ``async with agent.watch(...) as w: async for event in w``. It is driven by
        the document's change callback (local writes and peer updates alike) and, for Nodes,
        by liveness transitions, never by polling (see :attr:`watches`).
        """
        return self.watches.subscribe(
            kind,
            namespace,
            match=match,
            timeout=timeout,
            max_queue=max_queue,
            since=since,
            gone=gone,
        )

    def revision(self, key: str | None = None) -> int:
        """This node's resourceVersions (see :class:`~p2pkube.model.watch.WatchHub`)."""
        return self.watches.revision if key is None else self.watches.revision_of(key)

    def _render(self, key: str) -> dict[str, Any] | None:
        """The object under a document key as a watch shows it (as list/get show it)."""
        if not key.startswith("Node/"):
            return self.objects.render(key)
        # One node shaped as list_nodes() shapes it (Ready from the failure detector),
        # without decoding every object in the document for each event.
        obj = self.state.get(OBJECTS, key)
        if not isinstance(obj, dict):
            return None
        return self._with_node_status(key, obj)

    def status(self) -> dict[str, Any]:
        """This node's own view: identity, mesh, rpc, blobs, scheduler, pods, state."""
        return {
            "node": self.node_name,
            "nodeID": self.node_id,
            "cluster": self.cluster,
            "kind": self.config.kind,
            "agentVersion": __version__,
            "uptimeSeconds": round(time.monotonic() - self.started, 3),
            "mesh": self.mesh.stats(),
            "rpc": self.rpc.stats_dict(),
            "services": self.services.stats_dict(),
            "blobs": self.blobs.stats_dict(),
            "scheduler": self.scheduler.stats(),
            "events": {"written": self.events.written, "dropped": self.events.dropped},
            "pods": {
                **(self.kubelet.stats() if self.kubelet else {}),
                "runtime": self.runtime.stats() if self.runtime else {},
            },
            "state": {**self.state.stats_dict(), "loadedObjects": self.loaded_objects},
            "membership": {
                "stalledSeconds": round(self.membership.stalled_seconds, 3),
                **self.membership.stats_dict(),
                "nodes": [
                    {
                        "node": n.node,
                        "name": n.name,
                        "ready": n.ready,
                        "reason": n.reason,
                        "via": n.via,
                        "transitions": n.transitions,
                        "incarnation": n.incarnation,
                    }
                    for n in self.membership.nodes()
                ],
            },
        }
