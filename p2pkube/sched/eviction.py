"""Eviction rate limits: how fast a scheduler starts evicting the pods of lost nodes.

Kubernetes' node lifecycle controller, adapted to a cluster without a control plane. A node
that has been NotReady for ``scheduler.pod_eviction_grace`` is *lost*; before a scheduler
deletes its pods (and its controllers create replacements), the node must be *admitted* for
eviction by a token bucket over nodes, not pods (``node_eviction_rate`` nodes/s, with
``node_eviction_burst`` so that a single lost node goes at once). An admitted node stays
admitted while it is lost, so its remaining pods (of every workload this scheduler leads)
follow without new tokens; a node that comes back is forgotten, and needs a token again the
next time it is lost.

How many nodes look lost sets the rate (Kubernetes' zone states; the whole cluster is one
zone here):

* ``Normal``: ``node_eviction_rate``.
* ``PartialDisruption``: at least ``unhealthy_zone_threshold`` of the nodes and at least
  ``partial_disruption_min_nodes`` look lost: ``secondary_node_eviction_rate``. Overload (the
  starved loops of issue 13) or a network fault is then likelier than that many deaths.
* ``FullDisruption``: more than half look lost. This node is likelier the one cut off or
  starved itself; it evicts nothing and drops its admissions (Kubernetes stops evicting when
  every node is NotReady).

Every node keeps a limiter, updated at each scheduling pass (one that leads nothing too), and
admits lost nodes in one order: the order it saw them lost, then by name. It spends a token on
every lost node that holds pods a controller would evict, whether it leads those pods or not.
So in a connected cluster the schedulers admit the same nodes at about the same moments and
the cluster as a whole evicts about as fast as one scheduler does (docs/guarantees.md says how
far that holds).

The limiter is the manager's; controllers read a frozen :class:`EvictionGate` from the view
and note what they deferred in the plan, so they stay functions from a view to a plan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from p2pkube.sched.settings import SchedulerSettings

log = logging.getLogger(__name__)

NORMAL = "Normal"
PARTIAL_DISRUPTION = "PartialDisruption"
FULL_DISRUPTION = "FullDisruption"
EVICTED_OWNER_KINDS = ("ReplicaSet", "Job")
"""Controllers that evict their pods from lost nodes (DaemonSet pods and bare pods stay)."""
DEFERRED_REASON = "EvictionDeferred"
_WHOLE = 1.0 - 1e-9
"""A token, less what summing refills of a fraction each (10 x 0.1) loses to rounding."""


def disruption_state(lost: int, total: int, settings: SchedulerSettings) -> str:
    """Which rate applies when ``lost`` of ``total`` nodes look lost.

    More than half: none (a 2 + 2 split still evicts on both sides, a node alone against
    three does not).
    """
    if lost * 2 > total:
        return FULL_DISRUPTION
    if (
        lost >= settings.partial_disruption_min_nodes
        and lost >= settings.unhealthy_zone_threshold * total
    ):
        return PARTIAL_DISRUPTION
    return NORMAL


def evictable_on(obj: dict[str, Any], status: dict[str, Any] | None) -> str | None:
    """The node of a pod a controller would evict if that node were lost (bound there, not
    being deleted, not ended, controlled by a ReplicaSet or a Job); None for any other."""
    spec, meta = obj.get("spec"), obj.get("metadata")
    if not isinstance(spec, dict) or not isinstance(meta, dict):  # a peer's garbage
        return None
    node = spec.get("nodeName")
    if not isinstance(node, str) or not node or meta.get("deletionTimestamp"):
        return None
    if not _evicting_owner(meta):
        return None
    if isinstance(status, dict) and status.get("podUID") == meta.get("uid"):
        if status.get("phase") in ("Succeeded", "Failed"):
            return None
    return node


def holds_evictable_pods(
    pods: Iterable[tuple[dict[str, Any], dict[str, Any] | None]], nodes: set[str]
) -> set[str]:
    """Those of ``nodes`` that hold a pod a controller would evict (``evictable_on``);
    ``pods``: (object, status)."""
    return {node for obj, status in pods if (node := evictable_on(obj, status)) in nodes}


def _evicting_owner(meta: dict[str, Any]) -> bool:
    refs = meta.get("ownerReferences")
    return isinstance(refs, list) and any(
        isinstance(ref, dict) and ref.get("controller") and ref.get("kind") in EVICTED_OWNER_KINDS
        for ref in refs
    )


@dataclass(frozen=True)
class EvictionGate:
    """What one pass may evict: the limiter's decisions at the start of the pass.

    The default admits every lost node (a view built without a limiter: tests that are not
    about rate limits, the in-process benchmark).
    """

    admit_all: bool = True
    state: str = NORMAL
    admitted: frozenset[str] = frozenset()
    lost: int = 0
    """Nodes that look lost, of ``total``."""
    total: int = 0
    rate: float = 0.0
    """Nodes per second admitted in this state."""
    reported: frozenset[tuple[str, str]] = frozenset()
    """(node, workload uid) whose deferral has an event already, in this state."""

    def allows(self, node: str, known: bool = True) -> bool:
        """Whether the pods on lost ``node`` may be deleted now. A node without a Node object
        (deleted) is not rate limited, as Kubernetes' pod GC deletes such pods at once."""
        if self.admit_all:
            return True
        if self.state == FULL_DISRUPTION:
            return False
        return not known or node in self.admitted

    def deferral(self, node: str) -> str:
        """The message of the event saying why ``node``'s pods stay for now."""
        lost = f"{self.lost} of {self.total} nodes look lost"
        if self.state == FULL_DISRUPTION:
            return (
                f"Not evicting pods from lost node {node}: {lost}, more than half "
                f"({FULL_DISRUPTION}); this node may be the one cut off or starved"
            )
        return (
            f"Evicting pods from lost node {node} is deferred: {lost} ({self.state}), "
            f"nodes are admitted for eviction at {self.rate:g} per second"
        )


class EvictionLimiter:
    """One scheduler's token bucket over lost nodes, and what it has admitted."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.state = NORMAL
        self.tokens = float(settings.node_eviction_burst)
        self._stamp: float | None = None
        self._since: dict[str, float] = {}
        """Each lost node: when it went NotReady (the caller's clock), for the order."""
        self.admitted: set[str] = set()
        self.waiting: list[str] = []
        """Lost nodes holding evictable pods that are not admitted (in admission order)."""
        self._counted: set[str] = set()
        self._reported: set[tuple[str, str]] = set()
        self._lost = 0
        self._total = 0
        self.admitted_total = 0
        """Nodes admitted for eviction since start."""
        self.deferred_total = 0
        """Losses of a node holding evictable pods that had to wait (once per loss)."""

    def rate(self) -> float:
        """Nodes per second admitted in the current state."""
        if self.state == NORMAL:
            return self.settings.node_eviction_rate
        if self.state == PARTIAL_DISRUPTION:
            return self.settings.secondary_node_eviction_rate
        return 0.0

    def update(
        self,
        lost: dict[str, float],
        total: int,
        now: float,
        holding: Callable[[set[str]], set[str]],
    ) -> EvictionGate:
        """The gate of a pass, from the nodes that look lost now (name: seconds NotReady) of
        ``total``, at ``now`` (seconds, monotonic); ``holding(names)`` says which of them
        hold evictable pods (``holds_evictable_pods``)."""
        self._track(lost, now)
        self._refill(now)  # at the rate of the state the time passed in
        state = disruption_state(len(lost), total, self.settings)
        if state != self.state:
            log.info(
                "evictions: %d of %d nodes look lost, now in state %s", len(lost), total, state
            )
            self._reported.clear()  # say it again, in the new state's words
            self.state = state
        if state == FULL_DISRUPTION:
            self.admitted.clear()
        self._lost, self._total = len(lost), total
        self._admit(lost, holding)
        return self.gate()

    def gate(self) -> EvictionGate:
        return EvictionGate(
            admit_all=False,
            state=self.state,
            admitted=frozenset(self.admitted),
            lost=self._lost,
            total=self._total,
            rate=self.rate(),
            reported=frozenset(self._reported),
        )

    def reported(self, deferred: Iterable[tuple[str, str]]) -> None:
        """The (node, workload uid) pairs a pass recorded an EvictionDeferred event for."""
        self._reported.update(deferred)

    def next_token_in(self) -> float | None:
        """Seconds until a waiting node can be admitted (None: none waits, or rate 0)."""
        rate = self.rate()
        if not self.waiting or rate <= 0:
            return None
        return max(0.0, (_WHOLE - self.tokens) / rate)

    def stats(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "admitted": sorted(self.admitted),
            "waiting": list(self.waiting),
            "admittedTotal": self.admitted_total,
            "deferredTotal": self.deferred_total,
        }

    def _track(self, lost: dict[str, float], now: float) -> None:
        """Forget the nodes that came back; note when each lost node was lost. A node seen
        lost again since a later moment was back in between (unseen by a pass): a new loss."""
        for name in [n for n in self._since if n not in lost]:
            self._forget(name)
        for name, seconds in lost.items():
            since = now - seconds
            old = self._since.get(name)
            if old is not None and since > old + self.settings.pod_eviction_grace / 2:
                self._forget(name)
                old = None
            if old is None:
                self._since[name] = since

    def _forget(self, name: str) -> None:
        self._since.pop(name, None)
        self.admitted.discard(name)
        self._counted.discard(name)
        self._reported = {pair for pair in self._reported if pair[0] != name}

    def _refill(self, now: float) -> None:
        if self._stamp is not None and now > self._stamp:
            burst = float(self.settings.node_eviction_burst)
            self.tokens = min(burst, self.tokens + (now - self._stamp) * self.rate())
        self._stamp = now if self._stamp is None else max(self._stamp, now)

    def _admit(self, lost: dict[str, float], holding: Callable[[set[str]], set[str]]) -> None:
        candidates = [n for n in lost if n not in self.admitted]
        self.waiting = []
        if not candidates:
            return
        evictable = holding(set(candidates))
        for name in sorted(candidates, key=lambda n: (self._since[n], n)):
            if name not in evictable:
                continue  # nothing to evict there: no token spent
            if self.state != FULL_DISRUPTION and self.tokens >= _WHOLE:
                self.tokens -= 1.0
                self.admitted.add(name)
                self.admitted_total += 1
                log.info("evictions: admitted lost node %s (%s)", name, self.state)
                continue
            self.waiting.append(name)
            if name not in self._counted:
                self._counted.add(name)
                self.deferred_total += 1
