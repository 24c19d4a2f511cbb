"""Settings of membership: heartbeats and the failure detector (the ``membership.*`` section
of `p2pkube join --set`).

Only a dataclass, so that `p2pkube.settings` can list every setting without loading the
detector.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MembershipSettings"]


@dataclass
class MembershipSettings:
    """Heartbeat timing and the failure detector's bounds (mutable, so that
    `p2pkube join --set membership.FIELD=VALUE` can override any of them)."""

    heartbeat_interval: float = 1.0
    """Seconds between two heartbeats of this agent (each crosses every link). Each data-channel
    message costs aiortc ~0.5 ms of CPU (DTLS and SCTP in Python, plus a SACK); at 1 s an idle
    agent with 4 links stays under 1 % of a core, at 0.5 s it used 1.5 % (bench/bench_idle.py).
    With ``node_timeout`` 2.5 s a live node may still lose one beat and be late with the next.
    Each beat is signed once (~0.06 ms natively) and each receiver checks each new one once
    (~0.16 ms)."""
    node_timeout: float = 2.5
    """A node whose heartbeats stopped for this long is NotReady (target: under 3 s on a LAN)."""
    heartbeat_ttl: int = 16
    """Hops a heartbeat may be relayed; larger than any path in a partial mesh of this size."""
    check_interval: float = 0.25
    """How often the local event-loop lag is measured (Lifeguard: a check that wakes up late
    by more than ``stall_threshold`` does not count that time against anyone). A timeout is
    evaluated when it falls due, not on this period, so NotReady comes ``node_timeout`` after
    the last heartbeat whatever this is; an idle agent wakes for it 4 times a second (at
    0.1 s it woke 10 times, ~0.05 % of a core more, which heartbeat signing now uses)."""
    stall_threshold: float = 0.05
    """Event-loop stalls longer than this are not counted against other nodes (Lifeguard)."""
    max_grace: float = 30.0
    """Most extra seconds a node may ask for in its heartbeats (``grace``): a hidden browser
    tab asks for ``browser.hidden_grace``; nothing makes a node wait longer for anyone."""
    max_clock_skew: float = 60.0
    """Seconds a heartbeat's clock may be off from ours. One whose incarnation (its sender's
    start time) is further ahead of our clock, or that was signed further from our now either
    way, is dropped and logged (``heartbeatsImplausible`` in status): nobody can push a node's
    incarnation so high that its own next start looks older (a jump to 2^62 used to make a
    node NotReady for good), and a recorded heartbeat cannot be replayed once this has
    passed. The same bound as ``state.max_clock_skew``: nodes' clocks must agree within it."""
    max_nodes: int = 4096
    """Most nodes this agent keeps liveness for; heartbeats of further nodes are dropped and
    logged. Node ids are cheap to make, so a member that floods heartbeats of made-up nodes
    must not grow the table (and the signature checks) without bound."""
    drop_log_interval: float = 10.0
    """At most one warning per this many seconds per kind of dropped heartbeat (forged,
    implausible, over the table's bound, queue full); the next one says how many were left
    out, so a peer sending thousands of bad heartbeats cannot flood the log."""
