"""Settings of membership: heartbeats and the failure detector (the ``membership.*`` section
of `p2pkube join --set`), and SWIM + Lifeguard (`SwimSettings`, the ``swim.*`` section, read by
the core and by the agent's membership host, p2pkube/membership/swim_host.py).

Only a dataclass, so that `p2pkube.settings` can list every setting without loading the
detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MAX_GRACE", "MembershipSettings", "SwimSettings"]

MAX_GRACE = 86400.0
"""Largest grace a SWIM update may carry on the wire (a receiver caps it lower, at its
``swim.max_grace``)."""


@dataclass
class MembershipSettings:
    """Heartbeat timing and the failure detector's bounds (mutable, so that
    `p2pkube join --set membership.FIELD=VALUE` can override any of them)."""

    protocol: str = "heartbeat"
    """How members learn who is alive: ``swim`` (SWIM with Lifeguard, the ``swim.*``
    settings; a constant cost per node whatever the cluster's size) or ``heartbeat`` (every
    node floods a signed heartbeat every ``heartbeat_interval``; its cost per node grows with
    the cluster). All nodes of a cluster must use the same one."""
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


@dataclass
class SwimSettings:
    """Timings and bounds of SWIM with Lifeguard (`p2pkube.membership.swim`): memberlist's
    ``DefaultLANConfig`` where it fits, with a shorter probe period and a larger suspicion
    multiplier chosen for two figures of issue 13 that pull in opposite directions: a crash
    DEAD everywhere within ~3 s, and a node whose loop stalls for 2 s never DEAD. The
    ``swim.*`` section of `p2pkube join --set`: the agent's membership host
    (p2pkube/membership/swim_host.py, being written) reads them and gives them to its core.

    The arithmetic, for N <= 10 (memberlist floors log10 N at 1). Slow is not dead: the
    earliest a stalled member can be DEAD is one probe period (its first missed probe,
    ``probe_interval`` 0.3 s) plus the suspicion floor (``suspicion_mult`` x
    ``probe_interval`` = 2.1 s) after the stall began: 2.4 s, while it refutes as soon as it
    wakes (the pings queued for it carry the suspicion) and gossip spreads that in a few
    0.1 s rounds; a 2 s stall keeps ~0.3 s of margin. A crash: the wait for the first probe of
    it (each period each of the N - 1 others probes it with chance 1/(N - 1), so ~e/(e - 1)
    periods on average, SWIM's figure, with a geometric tail), that probe's period, the floor
    (confirmations from the others' probes bring the timeout down from the ceiling within
    about a second), then a gossip round: in tests/test_swim.py at N = 10, DEAD everywhere
    2.7 s after the crash (median), 3.2 s (p90), 3.3 s at most in 20 runs. The floor grows
    with log10 N, so at N = 40 it is 3.4 s and DEAD comes ~4 s after the crash: memberlist's
    trade, a detection time that grows with log N for a false-positive rate that does not."""

    probe_interval: float = 0.3
    """Seconds between two probes of this node (one member each, round-robin over a shuffled
    list), scaled by the local health multiplier + 1. memberlist's LAN value is 1 s; 0.3 s
    shortens the wait for the first probe of a crashed member (~1.6 periods) so that detection
    stays near 3 s. Idle cost, whatever N: 3.3 pings and 3.3 acks sent per second per node."""
    probe_timeout: float = 0.15
    """Seconds to wait for the direct ack before asking ``indirect_checks`` others to probe
    (scaled by the local health multiplier + 1). A LAN round trip over aiortc is a few ms;
    the direct ack still counts until the end of the period, so this only decides when the
    indirect probes start: half the period, as memberlist's 0.5 s of 1 s."""
    nack_timeout: float = 0.1
    """Seconds a member asked to probe for another (a PingReq) waits for the target's ack
    before it sends the asker a Nack (Lifeguard). Less than ``probe_interval`` -
    ``probe_timeout`` by a round trip, so that the Nack arrives while the asker still counts
    them: a helper that neither acks nor nacks tells the asker that it is the one in trouble."""
    indirect_checks: int = 3
    """Members asked to probe a target that missed its direct ack (SWIM's k, memberlist's
    value): a member behind one lossy or cut link stays ALIVE."""
    suspicion_mult: float = 7.0
    """Suspicion timeout floor: ``suspicion_mult`` x max(1, log10 N) x ``probe_interval``
    (memberlist's SuspicionMult, 4 there with a 1 s period): 2.1 s at N <= 10, so that with
    the probe period it exceeds a 2 s stall plus the refutation (see the class)."""
    suspicion_max_timeout_mult: float = 3.0
    """Suspicion timeout ceiling as a multiple of the floor: a lone accuser (perhaps the
    unhealthy one) waits this long; independent confirmations bring it down to the floor
    (Lifeguard). memberlist uses 6; 3 keeps a crash that few members confirm near 6 s."""
    suspicion_confirmations: int = 3
    """Independent confirmations (other members' own suspicions at the same incarnation) that
    bring the suspicion timeout down to its floor: Lifeguard's K (capped at N - 2, the members
    that could confirm). memberlist derives it as SuspicionMult - 2."""
    max_grace: float = 30.0
    """Most extra seconds a member may ask the others to add to its suspicion timeout
    (`SwimNode.set_grace`, carried on its ALIVE): a hidden browser tab asks for
    ``browser.hidden_grace``. The same bound as ``membership.max_grace``."""
    retransmit_mult: int = 4
    """Each update is piggybacked on at most ``retransmit_mult`` x ceil(log10(N + 1)) messages
    by each node (memberlist's value): enough for it to reach everyone with high probability,
    bounded so that the cost per change does not grow with time."""
    max_piggyback: int = 16
    """Most updates carried on one message (fewest-sent, then newest, first). memberlist fills a
    1400-byte UDP packet, about this many; a data channel message could take more."""
    gossip_interval: float = 0.1
    """Seconds between two gossip rounds while there is news (none when there is not):
    each round sends the pending updates to ``gossip_nodes`` random members. memberlist's LAN
    value is 0.2 s; 0.1 s spreads a change to 40 nodes in ~0.4 s."""
    gossip_nodes: int = 3
    """Members each gossip round goes to (memberlist's value)."""
    gossip_to_the_dead_time: float = 30.0
    """Seconds a DEAD member still gets gossip (memberlist's value), so that one that was only
    cut off hears it is dead and refutes once the path is back."""
    push_pull_interval: float = 30.0
    """Seconds between two full state exchanges with one random member (memberlist's value),
    scaled up with N beyond 32 members as memberlist does (x (ceil(log2 N - 5) + 1)), so the
    bytes per second stay bounded."""
    push_pull_replies_per_second: float = 8.0
    """Most push/pull requests answered per second (with a burst of as many): each answer is
    the whole table, so a member asking in a loop must not make this node send N entries per
    request. Every member asks about once per push/pull interval, and a forming cluster's
    joins spread over the seeds; requests beyond it are merged unanswered and counted."""
    reconnect_interval: float = 10.0
    """Seconds between two tries of a state exchange with a random DEAD member (as Serf's
    reconnect, and like it made with probability DEAD / alive members, so that one crashed
    node among thousands costs nearly nothing): how the halves of a partition healed after
    ``gossip_to_the_dead_time`` find each other."""
    reconnect_timeout: float = 3600.0
    """Seconds a DEAD member is still tried by ``reconnect_interval``, and a DEAD or LEFT one
    remembered at all (its tombstone keeps a stale ALIVE from bringing it back); then it is
    forgotten, so that churn does not fill the table (Serf keeps them 24 h; an agent's
    node id outlives its process, so an hour of reconnects is ample here)."""
    awareness_max_multiplier: int = 8
    """Lifeguard's local health multiplier ranges 0..this - 1 (memberlist's value): up on a failed
    probe that helpers did not nack, on a refutation, on a stall; down on a successful probe.
    Probe interval and timeout scale by it + 1, so a starved node accuses slowly."""
    stall_threshold: float = 0.1
    """A tick later than the earliest pending timeout by more than this is a stall of the
    host's loop (as is a `SwimNode.note_stall` of more): the time is not counted against
    anyone (pending timeouts move by it) and the local health multiplier rises by one per
    ``probe_interval`` of it (at least one). An asyncio loop under load is often 10-50 ms
    late; 0.1 s is a fifth of a probe period."""
    join_contacts: int = 1
    """Seeds a joining node exchanges its whole state with (push/pull); 0 leaves joining to
    the piggybacked ALIVE of the node itself."""
    max_members: int = 16384
    """Most members a node keeps (alive or not); updates about further ones are dropped and
    counted, so that made-up names cannot grow the table without bound."""
    max_pending_relays: int = 64
    """Most indirect probes this node runs for others at once; further PingReqs are dropped
    and counted (a peer cannot make it ping without bound)."""
    max_updates_per_message: int = 256
    """Most piggybacked updates accepted on one received message; more and it is dropped."""
    max_events: int = 10000
    """Most undrained member events kept; the oldest are dropped and counted beyond it."""
    announce_delay: float = 0.5
    """Shortest time between two announcements of this node's record (`SwimNode.announce`: a
    new incarnation, signed, with its current neighbours, from which the others compute
    routes). A burst of link changes (a cluster forming, a peer restarting) becomes one
    announcement, one signature and one update spread, instead of one per change; a route
    through a link that just closed is fixed after at most this plus a gossip round."""

    def check(self) -> None:
        """ValueError for values the core cannot work with (before the agent starts)."""
        for name in _PERIODS:
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"swim.{name} must be a number of seconds above 0")
        for name in ("reconnect_timeout", "stall_threshold", "suspicion_mult"):
            if not getattr(self, name) > 0:
                raise ValueError(f"swim.{name} must be above 0")
        for name, least in _MINIMUMS.items():
            if not getattr(self, name) >= least:  # NaN too
                raise ValueError(f"swim.{name} must be at least {least}")
        if not self.probe_timeout + self.nack_timeout < self.probe_interval:
            raise ValueError(
                "swim.probe_timeout + swim.nack_timeout must be below swim.probe_interval: a "
                "helper's Nack must reach the prober before its probe period ends"
            )
        if not 1 <= self.suspicion_max_timeout_mult < math.inf:
            raise ValueError("swim.suspicion_max_timeout_mult must be at least 1 (the floor)")
        if not 0 <= self.max_grace <= MAX_GRACE:
            raise ValueError(f"swim.max_grace must be 0..{MAX_GRACE:.0f} (the wire's bound)")
        if not 0 <= self.announce_delay < math.inf:
            raise ValueError("swim.announce_delay must be 0 or more seconds")
        if self.max_updates_per_message < self.max_piggyback:
            raise ValueError(
                "swim.max_updates_per_message must be at least swim.max_piggyback, or the "
                "others drop what this node sends"
            )


_PERIODS = (
    "probe_interval",
    "probe_timeout",
    "nack_timeout",
    "gossip_interval",
    "push_pull_interval",
    "reconnect_interval",
)
"""`SwimSettings` fields that are periods the core schedules: finite and above 0."""

_MINIMUMS = {
    "indirect_checks": 0,
    "suspicion_confirmations": 0,
    "retransmit_mult": 1,
    "max_piggyback": 1,
    "gossip_nodes": 0,
    "gossip_to_the_dead_time": 0,
    "push_pull_replies_per_second": 1,
    "awareness_max_multiplier": 1,
    "join_contacts": 0,
    "max_members": 2,
    "max_pending_relays": 0,
    "max_updates_per_message": 1,
    "max_events": 1,
}
"""The least value of each counted `SwimSettings` field (0: the feature is off)."""
