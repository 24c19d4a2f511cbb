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
    """Seconds a node must have been NotReady (after ``membership.node_timeout``) before the
    scheduler of a workload deletes that node's pods and places replacements elsewhere.
    Kubernetes waits 40 s + 300 s by default; p2pkube's failure detector already tolerates a
    slow peer (Lifeguard), so this is only a margin against a node that flaps."""
    min_pass_interval: float = 0.02
    """Passes are at least this far apart: a burst of changes is handled by one pass."""
    resync_interval: float = 5.0
    """A pass runs at least this often even when nothing changed (a safety net)."""
    failed_pod_backoff: float = 5.0
    """A ReplicaSet's or DaemonSet's pod that ended (failed, or refused by its node's
    kubelet) is replaced only once it is this old, so a node or a module that fails every pod
    costs one attempt per interval and replica instead of one per scheduling pass."""


@dataclass
class EventSettings:
    """How events are buffered and how long and how many of them are kept (the ``events.*``
    section of `p2pkube join --set`)."""

    flush_interval: float = 0.2
    """Events wait at most this long before they are written (a burst becomes one write)."""
    ttl: float = 3600.0
    """Events older than this are deleted by the node that wrote them (Kubernetes: 1 h)."""
    max_per_node: int = 1000
    """Each node keeps at most this many of its own events; the oldest are deleted first."""
    gc_interval: float = 30.0
    """How often a node prunes its own events."""
    max_pending: int = 10_000
    """Events buffered before a flush at most; beyond it new ones are dropped (counted in
    ``p2pkube status``, and logged)."""
