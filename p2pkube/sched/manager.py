"""The scheduler of one node: elects itself for some workloads and runs their controllers.

Every node runs one. A pass (on every state change, every liveness change, a pending eviction's
deadline, and every ``resync_interval``) decides for each workload who leads it
(``election.decide``) and takes the leases it must; when it leads something (or collects), it
builds a :class:`~p2pkube.sched.view.ClusterView`, runs the controllers of the workloads it
leads, and applies what they planned as one transaction.
Passes are debounced (``min_pass_interval``): a burst of changes costs one pass.

Workloads: Deployments, Jobs, CronJobs, DaemonSets, ReplicaSets without an owner, and
standalone Pods that have no node yet. The node that is the collector (the Ready node with the
smallest id, as for compaction) also deletes what deleted owners left behind and leases of
deleted workloads, finishes deleting namespaces, and evicts the pods no controller owns from
nodes with a NoExecute taint they do not tolerate (a workload's pods are evicted by its own
scheduler, which replaces them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2pkube.model.timestamps import utc_now
from p2pkube.observe import NO_OBSERVER, Observer
from p2pkube.sched import controllers as ctl
from p2pkube.sched.cronjob import reconcile_cronjob
from p2pkube.sched.election import Lease, decide
from p2pkube.sched.events import EventRecorder
from p2pkube.sched.eviction import EvictionGate, EvictionLimiter, evictable_on
from p2pkube.sched.settings import SchedulerSettings
from p2pkube.sched.view import ClusterView, Plan, PodView, controller_of, node_infos
from p2pkube.state import ClusterState
from p2pkube.state.store import LEASES, OBJECTS, STATUS
from p2pkube.ticker import next_beat

log = logging.getLogger(__name__)

WORKLOAD_KINDS = ("Deployment", "Job", "CronJob", "DaemonSet", "ReplicaSet")
DEFAULT_MAX_PODS = 110
"""Pods placed on a node that does not publish ``allocatable.pods`` (kubelet's maxPods)."""


@dataclass
class NodeState:
    """How the scheduler sees one node: its object, its status and whether it is Ready."""

    obj: dict[str, Any]
    status: dict[str, Any]
    ready: bool
    not_ready_for: float
    """Seconds it has been NotReady as this agent saw it (0 when Ready or unknown)."""
    unknown: bool = False
    """Not heard from yet, and this agent started less than a node timeout ago: it may well
    be alive. It is not placed onto and cannot take leases, but keeps the ones it holds."""


class Mirror:
    """Decoded copies of the objects and statuses a pass reads, kept current key by key, and
    decoded only when read.

    Decoding every value of the document for every pass cost ~11 ms at 300 pods and ~100 ms
    at 1,000 (msgpack, version stamps, quantities), on every node, at every change; the
    change callback names the keys a transaction touched, so only those are decoded again.
    And only when a reader needs them: the change callback just notes the keys. Every pass
    reads the workloads (``workload_keys``: the objects map), but only a node that leads
    something or collects builds a view (``snapshot``: statuses, requests, the eviction
    index). A 1,000-pod Job's status changes (each pod's, three or four times) are decoded by
    its leader, not by all ten nodes (the largest share of a non-leader's CPU before).
    """

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.objects: dict[str, dict[str, Any]] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self._dirty: dict[str, set[str]] = {OBJECTS: set(), STATUS: set()}
        """Per map: keys changed since they were last decoded."""
        self._workloads: dict[str, str] = {}
        """Key: uid, of every workload a scheduler may lead (see ``workload_keys``), kept as
        the objects are decoded: a pass does not look at every pod to find the few."""
        self._reindex: set[str] = set()
        """Pod keys whose view and eviction index are due (object or status changed)."""
        self._views: dict[str, PodView] = {}
        """Pod key: its view, rebuilt only when its object or status changed."""
        self._evictable_at: dict[str, str] = {}
        """Pod key: its node, for the pods a controller would evict from a lost node."""
        self._evictable: Counter[str] = Counter()
        """Node: how many such pods it holds (kept key by key, as the rest)."""

    def load(self) -> None:
        self.objects.clear()
        self.status.clear()
        self._workloads.clear()
        self._reindex.clear()
        self._views.clear()
        self._evictable_at.clear()
        self._evictable.clear()
        self.changed(OBJECTS, set(self.state.keys(OBJECTS)))
        self.changed(STATUS, set(self.state.keys(STATUS)))

    def changed(self, map_name: str, keys: set[str]) -> None:
        """Note ``keys`` of ``map_name`` as changed (decoded when next read)."""
        dirty = self._dirty.get(map_name)
        if dirty is None:
            return
        for key in keys:
            kind = key.split("/", 1)[0]
            if kind == "Pod" or kind in WORKLOAD_KINDS:
                dirty.add(key)

    def _decode(self, map_name: str) -> None:
        """Decode the changed keys of one map (and, for objects, index the workloads)."""
        dirty = self._dirty[map_name]
        if not dirty:
            return
        objects = map_name == OBJECTS
        target = self.objects if objects else self.status
        for key in dirty:
            value = self.state.get(map_name, key)
            if isinstance(value, dict):
                target[key] = value
            else:
                target.pop(key, None)
                value = None
            if objects:
                uid = _workload_uid(key, value)
                if uid is None:
                    self._workloads.pop(key, None)
                else:
                    self._workloads[key] = uid
            if key.startswith("Pod/"):
                self._reindex.add(key)
        dirty.clear()

    def _refresh(self) -> None:
        """Decode everything changed, then the views and eviction index of changed pods."""
        self._decode(OBJECTS)
        self._decode(STATUS)
        for key in self._reindex:
            obj = self.objects.get(key)
            if obj is None:
                self._views.pop(key, None)
            else:
                status = self.status.get(key)
                if not isinstance(status, dict) or status.get("podUID") != obj["metadata"].get(
                    "uid"
                ):
                    status = {}  # (a previous pod's of the same name, or none yet)
                old = self._views.get(key)
                # Most changes are the status's: the object, and the requests the view
                # computed from it (if any pass asked), stay; else the view computes them.
                requests = old.cached_requests if old is not None and old.obj is obj else None
                self._views[key] = PodView(key, obj, status, requests)
            self._index_evictable(key)
        self._reindex.clear()

    def _index_evictable(self, key: str) -> None:
        old = self._evictable_at.pop(key, None)
        if old is not None:
            self._evictable[old] -= 1
            if self._evictable[old] <= 0:
                del self._evictable[old]
        obj = self.objects.get(key)
        node = evictable_on(obj, self.status.get(key)) if obj is not None else None
        if node is not None:
            self._evictable_at[key] = node
            self._evictable[node] += 1

    def evictable_nodes(self, names: set[str]) -> set[str]:
        """Those of ``names`` that hold a pod a controller would evict (the eviction
        limiter spends tokens on those only)."""
        self._refresh()
        return {name for name in names if self._evictable.get(name)}

    def workload_keys(self) -> list[tuple[str, str]]:
        """(key, uid) of every workload a scheduler may lead: Deployments, Jobs, CronJobs,
        DaemonSets, ReplicaSets without an owner and Pods without a node or an owner (not being
        deleted), found without building a view."""
        self._decode(OBJECTS)
        return list(self._workloads.items())

    def snapshot(
        self,
    ) -> tuple[list[PodView], dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
        """The view's pods and objects by kind, and by key each workload as the view holds it
        (with its status merged; a pod's object)."""
        self._refresh()
        objects: dict[str, list[dict[str, Any]]] = {kind: [] for kind in WORKLOAD_KINDS}
        by_key: dict[str, dict[str, Any]] = {}
        for key, obj in self.objects.items():
            kind = key.split("/", 1)[0]
            if kind == "Pod":
                continue
            status = self.status.get(key)
            merged = {**obj, "status": status} if status is not None else obj
            objects[kind].append(merged)
            by_key[key] = merged
        for key in self._workloads:
            if key.startswith("Pod/"):
                by_key[key] = self.objects[key]
        return list(self._views.values()), objects, by_key


def _workload_uid(key: str, obj: dict[str, Any] | None) -> str | None:
    """The uid a workload is elected by, when ``obj`` (under ``key``) is one a scheduler may
    lead (see ``Mirror.workload_keys``); None for any other object."""
    if obj is None:
        return None
    kind = key.split("/", 1)[0]
    meta = obj.get("metadata") or {}
    if kind == "Pod":
        spec = obj.get("spec") or {}
        if spec.get("nodeName") or controller_of(obj) or meta.get("deletionTimestamp"):
            return None
    elif kind == "ReplicaSet" and controller_of(obj):
        return None  # run by its Deployment's scheduler
    elif kind not in WORKLOAD_KINDS:
        return None
    return str(meta.get("uid", key))


class Scheduler:
    """Runs the controllers of the workloads this node is elected for."""

    def __init__(
        self,
        node_id: str,
        node_name: str,
        state: ClusterState,
        *,
        nodes: Callable[[], list[NodeState]],
        is_collector: Callable[[], bool],
        events: EventRecorder,
        settings: SchedulerSettings,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self.node_id = node_id
        self.observer = observer
        """Told how long each pass took (metrics)."""
        self.node_name = node_name
        self.state = state
        self.nodes = nodes
        self.is_collector = is_collector
        self.events = events
        self.settings = settings
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._next_deadline: float | None = None
        self._mirror = Mirror(state)
        self.evictions = EvictionLimiter(settings)
        """Which lost nodes this node's controllers may evict the pods of (rate limits)."""
        self.passes = 0
        self.skipped_passes = 0
        """Passes that found nothing this node leads and built no view."""
        self.writes = 0
        self.leading: dict[str, int] = {}
        """The workloads this node led at its last pass, with the epoch of its lease."""
        self._claimed: set[str] = set()
        """Workloads whose lease this node stored with them at their creation
        (``creation_writes``): their LeaderElection event is due at the next pass."""
        self.last_pass_seconds = 0.0

    async def start(self) -> None:
        self._unsubscribe = self.state.on_change(self._on_change)
        self._mirror.load()
        self._task = asyncio.create_task(self._loop(), name="scheduler")
        self.wake()

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        """Ask for a pass soon (a liveness change, a state change)."""
        self._wake.set()

    def _on_change(self, map_name: str, keys: set[str], _origin: object) -> None:
        if map_name in (OBJECTS, STATUS, LEASES):
            self._mirror.changed(map_name, keys)
            self._wake.set()

    async def _loop(self) -> None:
        settings = self.settings
        while True:
            loop = asyncio.get_running_loop()
            deadline = next_beat(settings.resync_interval, loop.time())
            if self._next_deadline is not None:
                deadline = min(deadline, loop.time() + self._next_deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._wake.wait()
            self._wake.clear()
            started = time.monotonic()
            try:
                await self.run_pass()
            except Exception:
                log.exception("scheduling pass failed")
            self.last_pass_seconds = time.monotonic() - started
            self.observer.scheduling_pass(self.last_pass_seconds)
            rest = settings.pass_rest * self.last_pass_seconds
            await asyncio.sleep(max(settings.min_pass_interval, rest))

    def creation_writes(self, key: str, obj: dict[str, Any]) -> dict[tuple[str, str], Any]:
        """What to store with a workload created through this node's API, in its transaction:
        this node's lease on it (epoch 1), when it is one a scheduler leads and has no lease.

        Why: the node a user applies to places the workload's pods itself, with no election
        and no hop. Elected by rendezvous, a 1,000-pod Job was placed at 417-546 pods/s as
        seen from the node it was applied to (its leader nine times in ten another node: the
        pods reach the watcher over the mesh while ten agents share two cores), against
        1,270-2,270 pods/s when that node led it. The lease is then an ordinary one: kept while
        its holder is alive, taken over by rendezvous when it is not (``election.decide``)."""
        if _workload_uid(key, obj) is None or self.state.get(LEASES, key) is not None:
            return {}
        lease = Lease(self.node_id, self.node_name, 1, utc_now())
        self._claimed.add(key)
        return {(LEASES, key): lease.to_value()}

    # -- one pass ----------------------------------------------------------------------------
    def _view(
        self, states: list[NodeState], gate: EvictionGate
    ) -> tuple[ClusterView, dict[str, dict[str, Any]]]:
        """The pass's view, and its objects by key (see ``Mirror.snapshot``)."""
        pods, objects, by_key = self._mirror.snapshot()
        infos = node_infos(((n.obj, n.status, n.ready) for n in states), pods, DEFAULT_MAX_PODS)
        not_ready = {n.obj["metadata"]["name"]: n.not_ready_for for n in states if not n.ready}
        view = ClusterView(infos, not_ready, pods, objects, utc_now(), time.time())
        view.evictions = gate
        return view, by_key

    def _eviction_gate(self, states: list[NodeState]) -> EvictionGate:
        """Update the eviction limiter (at every pass, one that leads nothing too, so that
        every node's limiter admits the same nodes at about the same moments) and wake the
        loop when a waiting node's token is due."""
        grace = self.settings.pod_eviction_grace
        lost = {
            n.obj["metadata"]["name"]: n.not_ready_for
            for n in states
            if not n.ready and n.not_ready_for >= grace
        }
        gate = self.evictions.update(
            lost, len(states), time.monotonic(), self._mirror.evictable_nodes
        )
        due = self.evictions.next_token_in()
        if due is not None:
            self._wake_in(due)
        return gate

    async def run_pass(self) -> Plan:
        """One scheduling pass; returns what it wrote (for tests and benchmarks).

        Who leads what is decided first, from the workloads' keys and leases alone: a node
        that leads nothing (most nodes, most of the time) and is not the collector skips the
        view of every pod and node, which a burst of pod status changes would otherwise make
        every node build at every change (10 nodes, a 300-pod Job: most of the CPU they spent).
        """
        self.passes += 1
        self._next_deadline = None
        states = self.nodes()
        gate = self._eviction_gate(states)
        grace = self.settings.pod_eviction_grace
        ready = {_node_uid(n) for n in states if n.ready} | {self.node_id}
        alive = {_node_uid(n) for n in states if n.ready or n.unknown or n.not_ready_for < grace}
        plan = Plan()
        now = utc_now()
        led: list[tuple[str, Lease]] = []
        workload_keys = self._mirror.workload_keys()
        if self._claimed:  # forget those deleted since (a loop over the few, not every object)
            self._claimed = {key for key in self._claimed if key in self._mirror.objects}
        for key, uid in workload_keys:
            lease = Lease.from_value(self.state.get(LEASES, key))
            decision = decide(self.node_id, uid, lease, ready, alive)
            if decision.leader != self.node_id:
                continue
            if decision.take or lease is None:  # (a lease for us to take, or a broken one)
                lease = Lease(self.node_id, self.node_name, decision.epoch, now)
                plan.put(LEASES, key, lease.to_value())
            led.append((key, lease))
        self.leading = {key: lease.epoch for key, lease in led}
        collector = self.is_collector()
        if not led and not collector:
            self.skipped_passes += 1
            self._wake_when_grace_ends(states)
            return plan
        # A pass at 1,000 pods is long (a leader's first: ~0.3 s alone, over a second on a
        # loaded machine): between its steps, let what arrived meanwhile (probes above all)
        # through, instead of holding the loop for the whole pass.
        await asyncio.sleep(0)
        view, by_key = self._view(states, gate)
        for key, lease in led:
            workload = by_key.get(key)
            if workload is None:
                continue  # deleted while this pass let others run
            await asyncio.sleep(0)
            if (LEASES, key) in plan.puts or key in self._claimed:
                self._claimed.discard(key)
                plan.event(
                    ctl.involved(workload),
                    "LeaderElection",
                    f"{self.node_name} schedules {workload['kind'].lower()} "
                    f"{workload['metadata']['name']} (lease epoch {lease.epoch})",
                )
            ctx = ctl.Context(
                view,
                plan,
                lease.tag,
                grace,
                _new_uid,
                self.settings.failed_pod_backoff,
            )
            self._reconcile(ctx, workload)
        if collector:
            await asyncio.sleep(0)
            ctx = ctl.Context(view, plan, "", grace, _new_uid)
            ctl.collect_orphans(ctx)
            ctl.finalize_namespaces(ctx, self._terminating_namespaces())
            ctl.evict_tainted_unowned(ctx)
            self._collect_leases({key for key, _ in workload_keys}, plan)
        self._wake_when_grace_ends(states)
        if plan.wake is not None:
            self._wake_in(plan.wake)
        self.evictions.reported(plan.deferred)
        await self._apply(plan)
        return plan

    def _terminating_namespaces(self) -> list[str]:
        """Namespaces being deleted (a few objects: read from the state, not mirrored)."""
        return [
            str(obj["metadata"]["name"])
            for _key, obj in self.state.items(OBJECTS, "Namespace//")
            if isinstance(obj, dict) and obj.get("metadata", {}).get("deletionTimestamp")
        ]

    def _reconcile(self, ctx: ctl.Context, workload: dict[str, Any]) -> None:
        kind = workload["kind"]
        if workload["metadata"].get("deletionTimestamp"):
            return
        if kind == "Deployment":
            ctl.reconcile_deployment(ctx, workload)
        elif kind == "ReplicaSet":
            ctl.reconcile_replicaset(ctx, workload)
        elif kind == "Job":
            ctl.reconcile_job(ctx, workload)
        elif kind == "DaemonSet":
            ctl.reconcile_daemonset(ctx, workload)
        elif kind == "CronJob":
            reconcile_cronjob(ctx, workload)
        elif kind == "Pod":
            pod = next(p for p in ctx.view.pods if p.uid == workload["metadata"].get("uid"))
            ctl.bind_pending(ctx, pod)

    def _collect_leases(self, live: set[str], plan: Plan) -> None:
        """Delete the leases of workloads that no longer exist (``live``: those that do)."""
        for key in self.state.keys(LEASES):
            if key not in live:
                plan.delete(LEASES, key)

    def _wake_when_grace_ends(self, states: list[NodeState]) -> None:
        """Wake up when a NotReady node's eviction grace is over: its pods are then due for
        eviction and the leases it holds up for election (maybe by this node)."""
        grace = self.settings.pod_eviction_grace
        due = [grace - n.not_ready_for for n in states if not n.ready and n.not_ready_for < grace]
        if due:
            self._wake_in(min(due))

    def _wake_in(self, seconds: float) -> None:
        """Run a pass ``seconds`` from now at the latest (10 ms late: past the moment)."""
        wake = time.monotonic() + max(0.0, seconds) + 0.01
        self._next_deadline = (
            wake if self._next_deadline is None else min(self._next_deadline, wake)
        )

    async def _apply(self, plan: Plan) -> None:
        for event in plan.events:
            self.events.record(
                event.involved,
                event.reason,
                event.message,
                component="scheduler",
                warning=event.type == "Warning",
            )
        if not plan.puts and not plan.deletes:
            return
        async with self.state.batch() as batch:
            for (map_name, key), value in plan.puts.items():
                batch.put(map_name, key, value)
            for map_name, key in plan.deletes:
                batch.delete(map_name, key)
        self.writes += len(plan.puts) + len(plan.deletes)

    def leases(self) -> list[dict[str, Any]]:
        """Every workload's lease as the document holds it: ``workload`` (its object key,
        ``Kind/namespace/name``), the holder's id and name, the epoch and when it was taken;
        malformed values are left out (as ``election.Lease.from_value`` refuses them). Who
        schedules what, for the dashboard, read rather than re-derived."""
        out = []
        for key in sorted(self.state.keys(LEASES)):
            lease = Lease.from_value(self.state.get(LEASES, key))
            if lease is not None:
                out.append({"workload": key, **lease.to_value()})
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "leading": sorted(self.leading),
            "leaseEpochs": dict(sorted(self.leading.items())),
            "passes": self.passes,
            "skippedPasses": self.skipped_passes,
            "writes": self.writes,
            "lastPassMs": round(self.last_pass_seconds * 1000, 2),
            "evictions": self.evictions.stats(),
        }


def _node_uid(node: NodeState) -> str:
    return str(node.obj["metadata"].get("uid", ""))


def _new_uid() -> str:
    return secrets.token_hex(16)
