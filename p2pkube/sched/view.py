"""A snapshot of the cluster for one scheduling pass, and the writes the pass decides on.

Controllers are pure functions from a :class:`ClusterView` to a :class:`Plan`: no I/O, no
clock reads, so the same snapshot always gives the same decisions (unit-testable, and every
node would decide alike). The manager builds the view from the document and the failure
detector, then applies the plan in one transaction (one fsync, one update to the peers).
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from p2pkube.model.apiversions import api_version_of
from p2pkube.model.resources import Resources, pod_requests
from p2pkube.model.taints import node_taints, noexecute_deadline, pod_tolerations
from p2pkube.model.timestamps import parse_time
from p2pkube.runtime.hostpaths import HostPathPolicy
from p2pkube.sched.election import LEASE_ANNOTATION
from p2pkube.sched.eviction import EvictionGate
from p2pkube.sched.placement import NodeInfo

TERMINAL = ("Succeeded", "Failed")
TEMPLATE_HASH_LABEL = "pod-template-hash"
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""kube's name generator alphabet: no vowels (no words), no 0/1/3 (no look-alikes)."""


def name_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(length))


def template_hash(template: dict[str, Any]) -> str:
    """A short stable hash of a pod template (names a Deployment's ReplicaSets)."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def controller_of(obj: dict[str, Any]) -> str | None:
    """uid of the object's controlling owner, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            uid = ref.get("uid")
            return uid if isinstance(uid, str) else None
    return None


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": api_version_of(owner["kind"]),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


@dataclass
class PodView:
    """One pod as a controller sees it: its object and (this uid's) status, digested.

    Read-only: what it derives is computed once (a leader's passes read every pod's node,
    owner and phase many times each, and the scheduler keeps a view until its pod changes).
    """

    key: str
    obj: dict[str, Any]
    status: dict[str, Any]
    cached_requests: Resources | None = None
    """Its resource requests, when the caller has them already (parsing costs)."""

    @property
    def requests(self) -> Resources:
        if self.cached_requests is None:
            self.cached_requests = pod_requests(self.obj.get("spec") or {})
        return self.cached_requests

    @cached_property
    def meta(self) -> dict[str, Any]:
        return self.obj["metadata"]

    @cached_property
    def name(self) -> str:
        return str(self.meta["name"])

    @cached_property
    def uid(self) -> str:
        return str(self.meta.get("uid", ""))

    @cached_property
    def node(self) -> str | None:
        node = self.obj.get("spec", {}).get("nodeName")
        return str(node) if node else None

    @cached_property
    def owner(self) -> str | None:
        return controller_of(self.obj)

    @cached_property
    def phase(self) -> str:
        return str(self.status.get("phase") or "Pending")

    @cached_property
    def ready(self) -> bool:
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in self.status.get("conditions") or []
        )

    @cached_property
    def terminating(self) -> bool:
        return bool(self.meta.get("deletionTimestamp"))

    @cached_property
    def active(self) -> bool:
        """Counts towards a workload's replicas: not being deleted, not ended."""
        return not self.terminating and self.phase not in TERMINAL

    @cached_property
    def lease(self) -> str | None:
        return (self.meta.get("annotations") or {}).get(LEASE_ANNOTATION)

    @cached_property
    def restarts(self) -> int:
        return sum(
            int(c.get("restartCount") or 0) for c in self.status.get("containerStatuses") or []
        )

    @cached_property
    def created(self) -> str:
        return str(self.meta.get("creationTimestamp", ""))

    @cached_property
    def tolerations(self) -> list[dict[str, Any]]:
        return pod_tolerations(self.obj.get("spec") or {})


@dataclass
class ClusterView:
    """Everything one pass decides from."""

    nodes: dict[str, NodeInfo]
    """By node name; Ready comes from this node's failure detector."""
    not_ready_for: dict[str, float]
    """Seconds each not-Ready node has been so (as this node measured it)."""
    pods: list[PodView]
    objects: dict[str, list[dict[str, Any]]]
    """Other objects by kind (Deployment, ReplicaSet, Job, DaemonSet), status merged."""
    now: str
    """RFC 3339 wall time of the snapshot (for timestamps and deadlines)."""
    now_seconds: float
    by_owner: dict[str, list[PodView]] = field(default_factory=dict)
    uids: set[str] = field(default_factory=set)
    evictions: EvictionGate = field(default_factory=EvictionGate)
    """Which lost nodes' pods may be evicted in this pass: set by the scheduler from its
    ``EvictionLimiter``; the default admits every lost node."""

    def __post_init__(self) -> None:
        grouped: dict[str, list[PodView]] = defaultdict(list)
        for pod in self.pods:
            if pod.owner:
                grouped[pod.owner].append(pod)
        self.by_owner = dict(grouped)
        self.uids = {p.uid for p in self.pods} | {
            o["metadata"].get("uid", "") for objs in self.objects.values() for o in objs
        }

    def owned(self, owner: dict[str, Any]) -> list[PodView]:
        return self.by_owner.get(owner["metadata"].get("uid", ""), [])

    def noexecute_due(self, pod: PodView) -> float | None:
        """Seconds until ``pod`` must leave its Ready node for that node's NoExecute taints
        (0: now), None when it may stay (no such taint, tolerated for good, or the node is
        not Ready: a lost node's pods go through ``node_lost`` and the eviction limits)."""
        node = self.nodes.get(pod.node or "")
        if node is None or not node.ready or not node.taints:
            return None
        deadline = noexecute_deadline(node.taints, pod.tolerations, parse_time(pod.created))
        return None if deadline is None else max(0.0, deadline - self.now_seconds)

    def node_lost(self, pod: PodView, grace: float) -> bool:
        """The pod's node has not been Ready for at least ``grace`` seconds (or is unknown)."""
        if pod.node is None:
            return False
        node = self.nodes.get(pod.node)
        if node is None:
            return True
        return not node.ready and self.not_ready_for.get(pod.node, 0.0) >= grace


def node_infos(
    nodes: Iterable[tuple[dict[str, Any], dict[str, Any], bool]],
    pods: Iterable[PodView],
    max_pods: int,
) -> dict[str, NodeInfo]:
    """NodeInfo per node from (Node object, its status, Ready) and the pods on it; a node
    that publishes no ``allocatable.pods`` takes ``max_pods``."""
    from p2pkube.model.quantity import parse_quantity

    infos: dict[str, NodeInfo] = {}
    for obj, status, ready in nodes:
        meta = obj.get("metadata", {})
        allocatable = status.get("allocatable") or {}
        try:
            resources = Resources.of(
                parse_quantity(allocatable.get("cpu", 0)),
                parse_quantity(allocatable.get("memory", 0)),
            )
        except ValueError:
            resources = Resources()
        try:
            pods_allowed = int(allocatable.get("pods", max_pods))
        except (TypeError, ValueError):
            pods_allowed = max_pods
        infos[meta["name"]] = NodeInfo(
            meta["name"],
            str(meta.get("uid", "")),
            dict(meta.get("labels") or {}),
            ready,
            resources,
            max_pods=pods_allowed,
            host_paths=HostPathPolicy.from_status(status),
            unschedulable=(obj.get("spec") or {}).get("unschedulable") is True,
            taints=tuple(node_taints(obj)),
        )
    for pod in pods:
        info = infos.get(pod.node or "")
        # A pod being deleted still holds its node until its kubelet has stopped it.
        if info is not None and pod.phase not in TERMINAL:
            info.requested = info.requested + pod.requests
            info.pods += 1
            if pod.owner:
                info.workload_pods[pod.owner] += 1
    return infos


@dataclass(frozen=True)
class EventSpec:
    """An event to record (aggregated by the recorder)."""

    involved: dict[str, Any]
    reason: str
    message: str
    type: str = "Normal"


@dataclass
class Plan:
    """The writes of one pass, applied together."""

    puts: dict[tuple[str, str], Any] = field(default_factory=dict)
    deletes: set[tuple[str, str]] = field(default_factory=set)
    events: list[EventSpec] = field(default_factory=list)
    wake: float | None = None
    """Seconds after which a controller wants another pass (a deadline, a back-off)."""
    deferred: set[tuple[str, str]] = field(default_factory=set)
    """(node, workload uid) whose evictions the gate deferred and that got an event in this
    pass (the limiter remembers them, so the event is not repeated at every pass)."""

    def wake_after(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.wake = seconds if self.wake is None else min(self.wake, seconds)

    def put(self, map_name: str, key: str, value: Any) -> None:
        self.deletes.discard((map_name, key))
        self.puts[(map_name, key)] = value

    def delete(self, map_name: str, key: str) -> None:
        self.puts.pop((map_name, key), None)
        self.deletes.add((map_name, key))

    def event(
        self, involved: dict[str, Any], reason: str, message: str, warning: bool = False
    ) -> None:
        self.events.append(EventSpec(involved, reason, message, "Warning" if warning else "Normal"))

    @property
    def empty(self) -> bool:
        return not self.puts and not self.deletes and not self.events


def involved(obj: dict[str, Any]) -> dict[str, Any]:
    """The ``involvedObject`` of an event about ``obj``."""
    meta = obj.get("metadata", {})
    return {
        "kind": obj.get("kind"),
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
    }


def clone(value: Any) -> Any:
    return copy.deepcopy(value)
