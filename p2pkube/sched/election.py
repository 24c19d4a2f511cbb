"""Who schedules each workload: rendezvous hashing over the Ready nodes, and a lease with an epoch.

There is no control plane: every node decides from what it sees. For a workload, the holder
of its lease keeps the job as long as it is alive (see ``decide``; stickiness: a node that
joins does not take workloads away from healthy holders). When it is not, or there is no lease, the
Ready node ranked first by rendezvous hashing (highest ``sha256(workload uid, node id)``) takes
the lease with ``epoch + 1``. Everyone computes the same ranking from the same Ready set, so in a
connected cluster exactly one node takes over; rendezvous hashing also spreads workloads over
nodes and moves only the failed node's share when a node goes.

During a partition each side may have its own holder (the side without the old holder elects
one, with a higher epoch). Both schedule; after the heal the lease key converges (last writer
wins by hybrid-clock stamp, docs/state.md) to one holder, the other sees it and stops, and the
winner removes the surplus pods, those created under another lease first: every pod records
the lease it was created under (``p2pkube.io/lease``). docs/guarantees.md has the details.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

LEASE_ANNOTATION = "p2pkube.io/lease"
"""On every pod (and ReplicaSet) a scheduler creates: the lease it held, ``<epoch>/<node id>``."""


@dataclass(frozen=True)
class Lease:
    """The ``leases`` map value of one workload."""

    holder: str
    """Node id."""
    holder_name: str
    epoch: int
    acquired: str
    """When it was taken (RFC 3339)."""

    @property
    def tag(self) -> str:
        return f"{self.epoch}/{self.holder}"

    def to_value(self) -> dict[str, Any]:
        return {
            "holder": self.holder,
            "holderName": self.holder_name,
            "epoch": self.epoch,
            "acquired": self.acquired,
        }

    @classmethod
    def from_value(cls, value: Any) -> Lease | None:
        """The lease in a ``leases`` value; None if absent or malformed (a hostile writer)."""
        if not isinstance(value, dict):
            return None
        holder, name, epoch = value.get("holder"), value.get("holderName"), value.get("epoch")
        if not isinstance(holder, str) or not isinstance(name, str):
            return None
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            return None
        return cls(holder, name, epoch, str(value.get("acquired", "")))


def rendezvous_rank(workload_uid: str, node_ids: Iterable[str]) -> list[str]:
    """Node ids, best first, for ``workload_uid`` (highest random weight hashing)."""
    return sorted(
        node_ids,
        key=lambda node: hashlib.sha256(f"{workload_uid}/{node}".encode()).digest(),
        reverse=True,
    )


@dataclass(frozen=True)
class Decision:
    """What this node should do about one workload."""

    leader: str | None
    """Node id that schedules the workload now (None: no Ready node at all)."""
    take: bool
    """True when this node must take the lease (it is the leader and does not hold it)."""
    epoch: int
    """The epoch this node acts under if it is the leader."""


def decide(
    me: str,
    workload_uid: str,
    lease: Lease | None,
    ready: set[str],
    alive: set[str] | None = None,
) -> Decision:
    """Leader of one workload as this node sees it (``ready`` includes ``me``).

    ``alive`` (a superset of ``ready``) are the nodes a holder may be and keep its lease:
    also those not heard from yet since this node started, and those NotReady for less than
    the eviction grace. Only a holder that is not alive loses its lease; only a Ready node
    may take it. Without that, a restarted node that has not heard anyone yet would take
    every lease, and a node that flaps would bounce leases back and forth.
    """
    alive = ready if alive is None else alive | ready
    if lease is not None and lease.holder in alive:
        return Decision(lease.holder, False, lease.epoch)
    ranked = rendezvous_rank(workload_uid, ready)
    if not ranked:
        return Decision(None, False, 0)
    leader = ranked[0]
    epoch = (lease.epoch if lease is not None else 0) + 1
    return Decision(leader, leader == me, epoch)
