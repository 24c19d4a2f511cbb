"""Settings of the scheduler and of Events (the ``scheduler.*`` and ``events.*`` sections of
`p2pkube join --set`).

Only dataclasses, so that `p2pkube.settings` can list every setting without loading the
scheduler, its controllers or the event recorder.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EventSettings", "SchedulerSettings"]


@dataclass
class SchedulerSettings:
    """How often the scheduler passes run, and how long it waits before it acts on a lost
    node or a failed pod (mutable, so that `p2pkube join --set scheduler.FIELD=VALUE` can
    override any of them)."""

    pod_eviction_grace: float = 0.25
    """Seconds a node must have been NotReady (declared DEAD by SWIM) before the
    scheduler of a workload deletes that node's pods and places replacements elsewhere.
    Kubernetes waits 40 s + 300 s by default; p2pkube's failure detector already tolerates a
    slow peer (Lifeguard), so this is only a margin against a node that flaps."""
    min_pass_interval: float = 0.02
    """Passes are at least this far apart: a burst of changes is handled by one pass."""
    pass_rest: float = 1.0
    """After a pass that took T seconds the scheduler waits at least ``pass_rest`` x T before
    the next, so that passes take at most 1 / (1 + ``pass_rest``) of the agent's loop (half)
    and the rest goes to membership, links and the API. A pass is one synchronous step: at
    1,000 pods the leader's first one takes ~0.4 s, and under a burst every status change
    asks for another; back to back they starved the loop until peers declared it dead."""
    resync_interval: float = 5.0
    """A pass runs at least this often even when nothing changed (a safety net)."""
    failed_pod_backoff: float = 5.0
    """A ReplicaSet's or DaemonSet's pod that ended (failed, or refused by its node's
    kubelet) is replaced only once it is this old, so a node or a module that fails every pod
    costs one attempt per interval and replica instead of one per scheduling pass."""
    node_eviction_rate: float = 0.5
    """Lost nodes per second whose pods a scheduler starts to evict, once its burst is spent
    (a token bucket over nodes, not pods: an admitted node's pods all go). Kubernetes'
    ``--node-eviction-rate`` is 0.1, a node every 10 s, where pods wait 5 min for eviction
    anyway; here a lost node's pods are replaced within ~3 s (docs/guarantees.md), and two
    nodes that die independently a few seconds apart must both be: at 0.1 the second of two
    kills 8 s apart waited 4-5 s for its token (bench_sched's failover reps). At 0.5 several
    false alarms at once still go one every 2 s, and ``secondary_node_eviction_rate`` takes
    over when many nodes look lost at once."""
    node_eviction_burst: int = 1
    """Lost nodes a scheduler may admit for eviction at once (Kubernetes: 1): a single lost
    node's pods are replaced at once, within the ~3 s failover of docs/guarantees.md."""
    secondary_node_eviction_rate: float = 0.01
    """The rate, in lost nodes per second, while at least ``unhealthy_zone_threshold`` of
    the nodes (and ``partial_disruption_min_nodes``) look lost: then overload or a network
    fault is likelier than that many deaths. Kubernetes' ``--secondary-node-eviction-rate``
    (0.01: one node per 100 s)."""
    unhealthy_zone_threshold: float = 0.4
    """Share of the nodes that must look lost for ``secondary_node_eviction_rate``
    (Kubernetes' PartialDisruption). Kubernetes uses 0.55 with a full stop only when every
    node is NotReady; here no node evicts at all while more than half look lost to it (it is
    likelier the one cut off), so 0.55 would never apply (at most 0.5 is accepted): 0.4 gives the
    slow band between (4 or 5 lost of 10)."""
    partial_disruption_min_nodes: int = 3
    """Lost nodes needed, besides the share, for the secondary rate (Kubernetes: more than
    2): two lost nodes of four (a 2 + 2 partition) still evict at the normal rate."""

    def check(self) -> None:
        """ValueError for values that cannot work together."""
        if self.node_eviction_rate <= 0 or self.secondary_node_eviction_rate < 0:
            raise ValueError(
                "scheduler.node_eviction_rate must be above 0 and "
                "scheduler.secondary_node_eviction_rate 0 or more"
            )
        if self.node_eviction_burst < 1:
            raise ValueError("scheduler.node_eviction_burst must be at least 1")
        if not 0 < self.unhealthy_zone_threshold <= 0.5:
            raise ValueError(
                "scheduler.unhealthy_zone_threshold must be above 0 and at most 0.5: with "
                "more than half of the nodes lost nothing is evicted at all"
            )
        if self.partial_disruption_min_nodes < 1:
            raise ValueError("scheduler.partial_disruption_min_nodes must be at least 1")


@dataclass
class EventSettings:
    """How events are buffered and how long and how many of them are kept (the ``events.*``
    section of `p2pkube join --set`)."""

    flush_interval: float = 0.2
    """Events wait at most this long before they are written (a burst becomes one write)."""
    max_similar: int = 10
    """Events of one object with the same reason and type but different messages (``Created
    pod: x`` on a Job, once per pod) are written one by one up to this many within
    ``similar_window``; the rest become one event, ``(combined from similar events): <the
    latest message>``, whose count grows (Kubernetes' EventCorrelator: 10 in 10 minutes).
    A 1,000-pod Job wrote 1,000 such events, every one replicated to every node."""
    similar_window: float = 600.0
    """Seconds over which ``max_similar`` counts."""
    ttl: float = 3600.0
    """Events older than this are deleted by the node that wrote them (Kubernetes: 1 h)."""
    max_per_node: int = 1000
    """Each node keeps at most this many of its own events; the oldest are deleted first."""
    gc_interval: float = 30.0
    """How often a node prunes its own events."""
    max_pending: int = 10_000
    """Events buffered before a flush at most; beyond it new ones are dropped (counted in
    ``p2pkube status``, and logged)."""
