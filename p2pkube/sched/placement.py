"""Placement: which node a pod goes to, as a chain of small filters and scores.

Like kube-scheduler's framework: every filter looks at one (pod, node) pair and either lets it
through or names why not; the nodes left are scored by every score function (0-100 each,
weighted) and the best wins, ties broken by node name so every node would decide alike. A pod
that fits nowhere gets a diagnosis in kubectl's words: ``0/5 nodes are available: 3
Insufficient memory, 2 node(s) didn't match Pod's node selector.``

Pure functions over a snapshot (:class:`NodeInfo`); the workload's elected scheduler builds the
snapshot from the document and the failure detector, and accounts for the pods it places
within one pass (:meth:`NodeInfo.assume`), so one pass does not overcommit a node either.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

from p2pkube.model.resources import Resources, pod_requests
from p2pkube.model.taints import (
    NO_EXECUTE,
    NO_SCHEDULE,
    PREFER_NO_SCHEDULE,
    count_untolerated,
    first_untolerated,
    pod_tolerations,
    taint_brace,
    tolerating,
    unschedulable_taint,
)
from p2pkube.runtime.hostpaths import (
    HostPathPolicy,
    HostPathRequest,
    normalise,
    requested_host_paths,
)


@dataclass
class NodeInfo:
    """What placement knows of one node."""

    name: str
    node_id: str
    labels: Mapping[str, str]
    ready: bool
    allocatable: Resources
    requested: Resources = field(default_factory=Resources)
    """Sum of the requests of the active pods assigned to it."""
    pods: int = 0
    max_pods: int = 110
    workload_pods: Counter[str] = field(default_factory=Counter)
    """Active pods per owner uid (for spreading a workload's replicas)."""
    host_paths: HostPathPolicy = field(default_factory=HostPathPolicy)
    """The host directories its pods may mount, as its Node status publishes them."""
    unschedulable: bool = False
    """Cordoned (``spec.unschedulable``): no new pod goes there unless it tolerates the
    ``node.kubernetes.io/unschedulable:NoSchedule`` taint (DaemonSet pods do)."""
    taints: tuple[dict[str, Any], ...] = ()
    """Its ``spec.taints``."""

    def assume(self, pod: PodToPlace) -> None:
        """Account for a pod placed here in this pass."""
        self.requested = self.requested + pod.requests
        self.pods += 1
        if pod.owner:
            self.workload_pods[pod.owner] += 1


@dataclass(frozen=True)
class PodToPlace:
    spec: Mapping[str, Any]
    owner: str | None = None
    """uid of the workload it belongs to (spread), None for a standalone pod."""
    known_requests: InitVar[Resources | None] = None
    """Its requests when the caller has them parsed already."""
    requests: Resources = field(init=False)
    """Its requests, parsed once (every filter and score of every node needs them)."""
    host_paths: tuple[HostPathRequest, ...] = field(init=False)
    """Its ``hostPath`` volumes, parsed once."""
    tolerations: tuple[dict[str, Any], ...] = field(init=False)
    """Its ``tolerations``, parsed once."""

    def __post_init__(self, known_requests: Resources | None) -> None:
        requests = pod_requests(self.spec) if known_requests is None else known_requests
        object.__setattr__(self, "requests", requests)
        object.__setattr__(self, "host_paths", requested_host_paths(self.spec))
        object.__setattr__(self, "tolerations", tuple(pod_tolerations(self.spec)))


Filter = Callable[[PodToPlace, NodeInfo], str | None]
"""None: the node passes; else the reason, in kubectl's wording."""
Score = Callable[[PodToPlace, NodeInfo], float]
"""0 (worst) .. 100 (best)."""


def node_ready(_pod: PodToPlace, node: NodeInfo) -> str | None:
    return None if node.ready else "node(s) were not ready"


_UNSCHEDULABLE = unschedulable_taint()


def node_unschedulable(pod: PodToPlace, node: NodeInfo) -> str | None:
    """A cordoned node takes only pods that tolerate its unschedulable taint
    (kube-scheduler's NodeUnschedulable)."""
    if not node.unschedulable or tolerating(pod.tolerations, _UNSCHEDULABLE) is not None:
        return None
    return "node(s) were unschedulable"


def taint_toleration(pod: PodToPlace, node: NodeInfo) -> str | None:
    """Every NoSchedule and NoExecute taint of the node must be tolerated by the pod
    (kube-scheduler's TaintToleration filter)."""
    taint = first_untolerated(node.taints, pod.tolerations, (NO_SCHEDULE, NO_EXECUTE))
    return None if taint is None else f"node(s) had untolerated taint {taint_brace(taint)}"


def node_selector(pod: PodToPlace, node: NodeInfo) -> str | None:
    """``nodeSelector`` labels, ``p2pkube.io/kind: native|browser`` among them."""
    wanted = pod.spec.get("nodeSelector") or {}
    if all(node.labels.get(k) == v for k, v in wanted.items()):
        return None
    return "node(s) didn't match Pod's node selector"


def host_paths(pod: PodToPlace, node: NodeInfo) -> str | None:
    """Every ``hostPath`` must be under a prefix the node's operator granted (read-write
    ones under a ``:rw`` one) and away from its data dir, as the node's kubelet will check
    (it also resolves symlinks, which only the node can)."""
    for request in pod.host_paths:
        path = normalise(request.path)
        if node.host_paths.refusal(path, request.writable) is not None:
            return f"node(s) didn't allow hostPath {path}" + (
                " read-write" if request.writable else ""
            )
    return None


def fits_pods(_pod: PodToPlace, node: NodeInfo) -> str | None:
    return None if node.pods < node.max_pods else "Too many pods"


def fits_resources(pod: PodToPlace, node: NodeInfo) -> str | None:
    """Requests against allocatable minus what the node's pods already request."""
    wanted = pod.requests
    free = node.allocatable - node.requested
    if wanted.milli_cpu > free.milli_cpu:
        return "Insufficient cpu"
    if wanted.memory > free.memory:
        return "Insufficient memory"
    return None


def least_allocated(pod: PodToPlace, node: NodeInfo) -> float:
    """Prefer the node with the most room left after the pod (kube-scheduler's default)."""
    after = node.requested + pod.requests
    shares = []
    if node.allocatable.milli_cpu > 0:
        shares.append(1 - after.milli_cpu / node.allocatable.milli_cpu)
    if node.allocatable.memory > 0:
        shares.append(1 - after.memory / node.allocatable.memory)
    return 100 * max(0.0, sum(shares) / len(shares)) if shares else 0.0


def prefer_no_schedule(pod: PodToPlace, node: NodeInfo) -> float:
    """Prefer nodes with fewer PreferNoSchedule taints the pod does not tolerate
    (kube-scheduler's TaintToleration score; it normalises over the nodes, this is per
    node: 100 with none, 50 with one, ...)."""
    return 100.0 / (1 + count_untolerated(node.taints, pod.tolerations, PREFER_NO_SCHEDULE))


def spread(pod: PodToPlace, node: NodeInfo) -> float:
    """Prefer nodes with fewer replicas of the same workload (replicas on distinct nodes)."""
    if pod.owner is None:
        return 100.0
    return 100.0 / (1 + node.workload_pods[pod.owner])


FILTERS: tuple[Filter, ...] = (
    node_ready,
    node_unschedulable,
    taint_toleration,
    node_selector,
    host_paths,
    fits_pods,
    fits_resources,
)
"""kube-scheduler's order: NodeUnschedulable, TaintToleration, then the node's labels and
what it can hold (the first filter that refuses a node names the reason)."""
SCORES: tuple[tuple[Score, float], ...] = (
    (prefer_no_schedule, 3.0),
    (spread, 2.0),
    (least_allocated, 1.0),
)
"""kube-scheduler's weights: an untolerated PreferNoSchedule taint (3) outweighs spreading
(2), which outweighs an emptier node (1): a replica on a node of its own is worth more than
an emptier node, and a node asking to be avoided is avoided unless nothing else fits."""


@dataclass(frozen=True)
class Placement:
    node: NodeInfo | None
    diagnosis: str
    """Why no node fits (empty when one does)."""


def place(
    pod: PodToPlace,
    nodes: Iterable[NodeInfo],
    filters: tuple[Filter, ...] = FILTERS,
    scores: tuple[tuple[Score, float], ...] = SCORES,
) -> Placement:
    """The best node for ``pod``, or None with kubectl's diagnosis."""
    candidates = sorted(nodes, key=lambda n: n.name)
    feasible: list[NodeInfo] = []
    reasons: Counter[str] = Counter()
    for node in candidates:
        reason = next((r for f in filters if (r := f(pod, node)) is not None), None)
        if reason is None:
            feasible.append(node)
        else:
            reasons[reason] += 1
    if not feasible:
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return Placement(None, f"0/{len(candidates)} nodes are available: {detail}.")
    best = max(
        feasible,
        key=lambda n: (sum(weight * score(pod, n) for score, weight in scores), _tiebreak(n)),
    )
    return Placement(best, "")


def _tiebreak(node: NodeInfo) -> tuple[int, ...]:
    """Equal scores: a deterministic order of names, so agents deciding alike pick alike.

    ``max()`` picks the largest key and the key negates each code point, so at the first
    character where two names differ the smaller code point wins (``n1`` beats ``n2``,
    ``B`` beats ``a``), but a name that is a prefix of another loses to the longer one
    (``n10`` beats ``n1``: the longer tuple is the larger). Not plain lexical order; changing
    it would change placements, so it stays as is.
    """
    return tuple(-ord(c) for c in node.name)
