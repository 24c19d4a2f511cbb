"""Settings of membership: SWIM + Lifeguard (`SwimSettings`, the ``swim.*`` section of
`p2pkube join --set`, read by the core and by the agent's membership host,
p2pkube/membership/swim_host.py) and the host's own (`MembershipSettings`, ``membership.*``).

Only dataclasses, so that `p2pkube.settings` can list every setting without loading
membership.
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
    """What the agent's membership host does around SWIM (mutable, so that
    `p2pkube join --set membership.FIELD=VALUE` can override any of them). The protocol's own
    timings are the ``swim.*`` section (`SwimSettings`)."""

    drop_log_interval: float = 10.0
    """At most one warning per this many seconds per kind of dropped membership message
    (malformed, forged record, unproven accusation, ...); the next one says how many were left
    out, so a peer sending thousands of bad messages cannot flood the log."""


@dataclass
class SwimSettings:
    """Timings and bounds of SWIM with Lifeguard (`p2pkube.membership.swim`): memberlist's
    ``DefaultLANConfig`` where it fits, with a much shorter probe period and a larger
    suspicion multiplier, chosen for two figures of issue 13 that pull in opposite
    directions: a crash DEAD everywhere within 3 s on a LAN, and a node whose loop stalls for
    2 s never DEAD. The ``swim.*`` section of `p2pkube join --set`, read by the agent's
    membership host (p2pkube/membership/swim_host.py).

    The arithmetic, for N <= ``suspicion_flat_members`` (100). P = ``probe_interval``
    (0.15 s), floor = ``suspicion_mult`` x P (2.1 s).

    * Slow is not dead. A member whose loop stalls at t is suspected at the earliest at
      t + P (a probe sent just as the stall began, unanswered by the end of its period), and
      its suspicion is confirmed by the others' probes within the stall, so the earliest DEAD
      is at t + P + floor = t + 2.25 s. It refutes as soon as it wakes (the suspicion rides on
      the pings and gossip queued for it; else the first member that holds it SUSPECT and
      hears from it says so) and sends its new ALIVE straight to the accusers it heard of
      (`swim_gossip.Accusers`), so the refutation is one hop from the accuser whose timer
      fires first even when that accuser never wrote to it (in the simulator it made no
      measurable difference: stalls up to 2.24 s pass with it and without it, the accusers
      being mostly among the senders it corrects anyway). The bound is P + floor: the
      earlier defaults (P 0.3, floor 2.1) had 0.4 s of margin; a candidate with P 0.25 and
      floor 1.9 had 0.15 s and lost a 2.2 s-stalled member in 7 of 30 simulated runs.
    * A crash. DEAD everywhere = the wait for the first probe of it (each of the N - 1 others
      probes each member once per N - 1 periods, in its own shuffled order: the first of
      them comes 0.9 P after the crash on average, 3.6 P at the 99th percentile at N = 10)
      + that probe's period P + the floor (K = ``suspicion_confirmations`` others' probes
      confirm it within ~4 P, long before the floor ends, so the timeout is at the floor)
      + the spread of the DEAD (gossip rounds of 0.1 s; see ``retransmit_mult``). So the stall
      margin (P + floor - 2 s) and the probe period are all that sit above 2 s: p99 ~ 2 s +
      margin + 4.6 P + 0.15 s. P = 0.15 s keeps that under 3 s with a 0.25 s margin; P
      0.2 s gave p99 2.98-3.36 s.

    Measured in the simulator (harness/swimscenarios.py: real cores, virtual time, 0.5 ms
    LAN latency; 3 crashes per run, 100 seeds at N <= 10, 30 beyond: ``.venv/bin/python -m
    harness.swimscenarios crash --n 10 --seeds 100``, and ``stall --n 40 --seeds 60
    --seconds 2.2 --fraction 0.1``; ``--set field=value`` tries other values), crash -> DEAD
    everywhere, median / p99 / max:
    N = 6: 2.42 / 2.85 / 2.92 s; N = 10: 2.45 / 2.80 / 3.11 s; with the floor flat to 100
    members (``suspicion_flat_members``) N = 20: 2.51 / 3.16 s, N = 40: 2.56 / 3.09 s,
    N = 100: 2.59 / 2.98 s; beyond, the floor grows with log10 N (memberlist's trade: a
    detection time that grows with log N for a false-positive rate that does not). Stalls
    of 2.0 s and 2.2 s (one member, and 10% of members): no false DEAD in 60 runs each at
    N = 10 and 40, 30 at N = 100; 2.3 s ones are DEAD in 16 of 60 runs at N = 10 (beyond
    the 2.25 s bound). With the real membership host, real signatures and an
    in-memory fabric on a loaded machine (load 40), crash -> DEAD everywhere in 20 runs:
    N = 6 2.32-2.68 s (median 2.43), N = 10 2.34-2.88 s (2.45); N = 20 (8 runs, with
    memberlist's growth from 10 then) 3.0-4.9 s.
    Three real agents (tests/test_swim_cluster.py): kill -9 NotReady everywhere after 2.3 s.
    Idle cost: 1/P pings and 1/P acks sent per node per second (6.7 each, whatever N), as
    many received: ~27 messages a second, ~13 ms of CPU at ~0.5 ms per data-channel
    message, ~0.4 kB/s sent."""

    probe_interval: float = 0.15
    """Seconds between two probes of this node (one member each, round-robin over a shuffled
    list), scaled by the local health multiplier + 1. memberlist's LAN value is 1 s; 0.15 s
    shortens the wait for the first probe of a crashed member (~1 period on average, 3.6 at
    p99) so that, with the floor, detection stays under 3 s (see the class). Idle cost,
    whatever N: 6.7 pings and 6.7 acks sent per second per node."""
    probe_timeout: float = 0.075
    """Seconds to wait for the direct ack before asking ``indirect_checks`` others to probe
    (scaled by the local health multiplier + 1). A LAN round trip over aiortc is a few ms;
    the direct ack still counts until the end of the period, so this only decides when the
    indirect probes start: half the period, as memberlist's 0.5 s of 1 s."""
    rtt_timeout_max: float = 0.3
    """Most a measured round trip may stretch probe timing (``SwimNode.round_trip_timeout``,
    RFC 6298's SRTT + 4 RTTVAR of the direct acks): the wait before indirect probes, a
    helper's wait before its Nack, and half the probe period. On a LAN it stays at a few ms
    and the settings above decide; on a machine whose agents are short of CPU it keeps slow
    answers from being taken for failures (slow is not dead), with a probe period of at most
    0.6 s, so that a crash is still found within a few seconds while the machine is busy.
    0 turns it off."""
    nack_timeout: float = 0.05
    """Seconds a member asked to probe for another (a PingReq) waits for the target's ack
    before it sends the asker a Nack (Lifeguard). Less than ``probe_interval`` -
    ``probe_timeout`` by a round trip, so that the Nack arrives while the asker still counts
    them: a helper that neither acks nor nacks tells the asker that it is the one in trouble."""
    indirect_checks: int = 3
    """Members asked to probe a target that missed its direct ack (SWIM's k, memberlist's
    value): a member behind one lossy or cut link stays ALIVE."""
    suspicion_mult: float = 14.0
    """Suspicion timeout floor up to ``suspicion_flat_members``: ``suspicion_mult`` x
    ``probe_interval`` (2.1 s; memberlist's SuspicionMult, 4 there with a 1 s period), so
    that with the probe period it exceeds a 2 s stall plus the one hop its refutation takes
    to the accuser (see the class). Beyond, it grows with log10 N (``suspicion_log_growth``)."""
    suspicion_flat_members: int = 100
    """Up to this many members the suspicion floor is ``suspicion_mult`` x
    ``probe_interval`` (2.1 s); beyond, it grows with log10 N by ``suspicion_log_growth``.
    memberlist grows it from 10 members (max(1, log10 N)); here that put crash detection past
    3 s from 20 members on (simulator, crash to DEAD everywhere, median / p99 over 120
    crashes: 3.07 / 3.75 s at 20, 3.79 / 4.64 s at 40), and flat to 100 keeps it under 3 s
    on a LAN: 2.51 / 3.16 s at 20, 2.56 / 3.09 s at 40 and 2.59 / 2.98 s at 100, with 10% of
    the members stalled for 2 s at once never DEAD (20 runs each at 40 and 100). On real
    agents (bench_scale, 20 and 40 agents sharing this machine's 2 cores, same hour,
    2026-12-07 08:07-08:12), kill -9 to NotReady took 2.56 / 3.28 s flat and 2.97 / 8.17 s
    with memberlist's growth, with no Ready flip in either idle window. Set 10 (and
    ``suspicion_log_growth`` 1) for memberlist's exact floor."""
    suspicion_log_growth: float = 2.0
    """How fast the suspicion floor grows beyond ``suspicion_flat_members``: x (1 + this x
    log10(N / flat)). 2 from 100 members gives memberlist's own floor at 1,000 (6.3 s) and
    10.5 s at 10,000. At scale the refutations need the time: when 10% of 1,000 members
    stall for 2 s at once, 100 signed ALIVEs (~300 bytes, three to a gossip message) must
    each reach 1,000 members. Simulator, 2 runs each: a 2.5 s floor at 1,000 let 1,593
    DEADs through, 3.4 s 58, 4.2 s 3, and 6.3 s none."""
    suspicion_max_timeout_mult: float = 2.0
    """Suspicion timeout ceiling as a multiple of the floor: a lone accuser (perhaps the
    unhealthy one) waits this long; independent confirmations bring it down to the floor
    (Lifeguard). memberlist uses 6; 2 keeps a crash that few members confirm (a small
    cluster, a lossy network) near 4 s; at N >= 5 the others' probes confirm a crash long
    before the floor ends, so it does not set the usual detection time."""
    believe_dead_after: float = 0.5
    """Another member's DEAD of a member is taken only once this node has itself suspected it
    (at that incarnation) for this fraction of the suspicion floor; sooner, the DEAD counts as
    one more suspicion. A member that accuses a live one over and over (each refutation
    answered with a DEAD of the new incarnation) then never makes it DEAD: it is refuted
    within a round trip each time. A real failure is suspected everywhere within the gossip
    of the first suspicion (~0.1-0.5 s), well before its first DEAD (the floor, 2.1 s), so
    this costs detection nothing; 0 takes every DEAD at once (memberlist)."""
    suspicion_confirmations: int = 3
    """Independent confirmations (other members' own suspicions at the same incarnation) that
    bring the suspicion timeout down to its floor: Lifeguard's K (capped at N - 2, the members
    that could confirm). memberlist derives it as SuspicionMult - 2."""
    max_grace: float = 30.0
    """Most extra seconds a member may ask the others to add to its suspicion timeout
    (`SwimNode.set_grace`, carried on its ALIVE): a hidden browser tab asks for
    ``browser.hidden_grace``."""
    retransmit_mult: int = 6
    """Each update is piggybacked on at most ``retransmit_mult`` x ceil(log10(N + 1)) messages
    by each node (memberlist uses 4): enough for it to reach everyone with high probability,
    bounded so that the cost per change does not grow with time. Below 10 members the limit
    is ``retransmit_mult`` itself, and with 4 a member now and then missed every copy of a
    DEAD and waited for its own, later timer: in the simulator at N = 10 (with a 0.2 s
    period) crash -> DEAD everywhere had p99 3.36, 3.22 and 2.98 s with 4, 6 and 8."""
    max_piggyback: int = 16
    """Most updates carried on one message (fewest-sent, then newest, first), within
    ``max_piggyback_bytes``."""
    max_piggyback_bytes: int = 1000
    """Most bytes of updates one message carries (estimated; the first always goes).
    memberlist fills one 1,400-byte UDP packet. Here a data channel message longer than
    ~1,200 bytes is cut into several SCTP chunks, each its own packet, DTLS record and SACK:
    a signed ALIVE is ~300 bytes (its record lists the member's neighbours), and 16 of them
    made 2.7 KB gossip messages, three packets each, when 40 agents on 2 cores gossiped
    through a storm of suspicions."""
    gossip_interval: float = 0.1
    """Seconds between two gossip rounds while there is news (none when there is not):
    each round sends the pending updates to ``gossip_nodes`` random members. memberlist's LAN
    value is 0.2 s; 0.1 s spreads a change to 40 nodes in ~0.4 s. Scaled by the local health
    multiplier + 1, as the probe period (an unhealthy node gossips less)."""
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
    late; 0.1 s is two thirds of a probe period (a longer lag already costs its probes)."""
    starved_stall: float = 0.5
    """A stall of this node's own loop this long (its membership clock woke this much late)
    means it is starved: it asks the others for ``starved_grace`` more seconds before they
    declare it DEAD (Lifeguard: a node that knows it is slow asks for more time), announced
    as a new signed incarnation of its ALIVE like a hidden tab's grace."""
    starved_backlog: int = 1024 * 1024
    """Bytes queued on this node's links at or above which it is starved too: it is sending a
    burst (a scheduler writing a 1,000-pod Job queues ~1 MB per neighbour), and its answers
    may be late even though its loop runs. Each link is one reliable, congestion-controlled
    SCTP association: when a receiver that is busy applying the burst stalls for a second,
    the sender's retransmission timer fires and it restarts from a window of one packet, with
    the probe answers behind the retransmissions. So it asks for grace as the burst is
    queued, before anyone can suspect it."""
    starved_grace: float = 4.0
    """Seconds a starved node asks for (see ``starved_stall``): longer than the longest stall
    measured on this machine under a 1,000-pod Job on 10 agents (3.6 s before liveness went
    ahead of bulk on the links). A crash of a node that was starved within ``starved_calm``
    is detected this much later; a crash of a quiet node is not affected."""
    starved_calm: float = 3.0
    """Seconds without a stall of ``starved_stall`` (or a backlog of ``starved_backlog``)
    after which a starved node withdraws its grace (one more announcement) and declares
    others DEAD again; a loop that stalls again within it keeps the grace, so a busy node
    does not announce at every stall. Short, because a node that crashes while it holds a
    grace is detected that much later."""
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
        for name in ("reconnect_timeout", "stall_threshold", "suspicion_mult", "starved_stall"):
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
        if not 0 <= self.believe_dead_after <= 1:
            raise ValueError("swim.believe_dead_after must be between 0 and 1 (of the floor)")
        if not 1 <= self.suspicion_max_timeout_mult < math.inf:
            raise ValueError("swim.suspicion_max_timeout_mult must be at least 1 (the floor)")
        if not 0 <= self.max_grace <= MAX_GRACE:
            raise ValueError(f"swim.max_grace must be 0..{MAX_GRACE:.0f} (the wire's bound)")
        if not 0 <= self.rtt_timeout_max < math.inf:
            raise ValueError("swim.rtt_timeout_max must be 0 (off) or more seconds")
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
    "suspicion_flat_members": 1,
    "suspicion_log_growth": 0,
    "suspicion_confirmations": 0,
    "retransmit_mult": 1,
    "max_piggyback": 1,
    "max_piggyback_bytes": 1,
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


LIVENESS_PROFILES: dict[str, tuple[str, ...]] = {
    "fast": (),
    "frugal": (
        "swim.probe_interval=0.5",
        "swim.probe_timeout=0.25",
        "swim.nack_timeout=0.17",
        "swim.suspicion_mult=3.5",
    ),
}
LIVENESS_PROFILES_DOC = """Both profiles keep the 2 s stall rule of issue 13; they trade
detection time for idle CPU, as memberlist's LAN/WAN/local configurations trade their timings.

* `fast`, the defaults: a probe every 0.15 s, so that a crash is NotReady everywhere in
  ~2.5 s (p99 under 3 s up to 40 members, issue 13) while a 2 s stall is never taken for
  one. Its price is an idle agent's CPU: 6.7 probes and 6.7 answers sent and as many
  received a second, each a DTLS record through aiortc's pure-Python stack and a wake-up of
  the loop: ~2% of a core at 5 agents on this project's reference machine, a 2-core VM
  where one wake-up of an idle loop costs ~0.25 ms (docs/benchmarks.md, *Idle CPU*).
* `frugal`: a probe every 0.5 s, with the suspicion floor shortened (3.5 x 0.5 = 1.75 s) so
  that the probe period plus the floor, the earliest a stalled node can be declared dead, is
  the same 2.25 s: a 2 s stall is still never a death (simulator, 2 s stalls of 10% of the
  members, 60 runs each at N = 10 and 40: no false DEAD; 2.2 s stalls: 1 false DEAD in 60
  runs at N = 40, none at 10). A crash takes longer to be seen, since the wait for its first
  probe and that probe's period grow with the period: in the simulator, crash to DEAD
  everywhere median / p99 2.73 / 3.89 s at N = 6, 2.78 / 4.20 s at 10, 2.88 / 5.28 s at 40
  (the defaults: 2.45 / 2.80 s at 10, 2.55 / 3.13 s at 40); `kill -9` between 3 real agents,
  2.6-2.7 s (tests/test_swim_frugal.py). An idle agent sends and handles 3.3x fewer probe
  messages, and its probes share the wake-ups of its other chores (both on a 0.5 s beat):
  ~1% of a core at 5 agents instead of ~2%. What is left is the links' and the agent's other
  chores (each link's ICE consent check every ~5 s, anti-entropy, lone SACKs, the beat),
  each a UDP packet or a wake-up at ~0.25 ms here.
"""
"""Why each profile (docs/settings.md shows it, ``p2pkube.settings.render_markdown``)."""
