"""SWIM with Lifeguard, sans-IO: one `SwimNode` per member, driven by its host.

The host passes time in (``now``, monotonic seconds) and carries the `Send`s it gets back;
randomness comes from the ``random.Random`` it gives, so a simulator replays a run from a seed.
Standard library only: the same code runs in the browser (Pyodide), in the simulator
(harness/swimsim.py) and in the agent behind swim_host.py, which carries the messages.

What it does (memberlist's design, docs/architecture.md has the module row):

* **Probes.** Every protocol period one member, round-robin over a shuffled list (new members
  at random places), gets a `Ping`. No `Ack` within the probe timeout: ``indirect_checks``
  others get a `PingReq`, ping it for us, forward its ack, or send a `Nack` when they got none.
  No ack by the end of the period: the target is SUSPECT.
* **Suspicion.** A suspect that hears of it refutes with a higher incarnation (only a member
  ever says ALIVE or LEFT of itself), sent straight to its accusers too; otherwise it is
  DEAD when its suspicion times out, between a floor and a ceiling that grow with log N,
  sooner as independent confirmations arrive (Lifeguard).
* **Local health** (Lifeguard's LHM): failed probes the helpers did not nack, refutations and
  stalls of the host's loop raise it, successful probes lower it; the probe period and timeout
  scale by it + 1, so a starved node accuses slowly. A stall's time counts against no one:
  pending timeouts move by it.
* **Dissemination.** Updates ride on every message (at most ``retransmit_mult`` x
  ceil(log10(N + 1)) times each, least-sent first, the recipient's own first), on gossip
  rounds while there is news, and in periodic push/pull exchanges of the whole table with
  one member (and one DEAD member, so that a healed partition merges again).

* **DEAD.** Another member's DEAD is taken once this node has itself suspected the member
  for ``believe_dead_after`` of the floor; sooner it is one more suspicion (one member alone
  cannot make a live member DEAD).

Trust is the host's (swim_host.py checks each member's signed ALIVE and LEFT, ``Update.proof``,
and drops accusations above what the member signed). The host makes this node's own proofs:
``prove(incarnation, grace, left)`` returns one at once or None; one signed later (WebCrypto
is async) comes back through `SwimNode.set_proof`. Each update stands alone: the host may
filter a message's updates before `SwimNode.receive`.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Collection, Iterable

from .settings import SwimSettings
from .swim_gossip import (
    LIVE,
    Accusers,
    BroadcastQueue,
    MemberState,
    Probe,
    ProbeRing,
    Relay,
    Suspicion,
    Timers,
    TokenBucket,
    dead_is_due,
    forget,
    is_alive,
    is_live,
    push_pull_scale,
    push_pull_table,
    retransmit_limit,
    suspicion_bounds,
)
from .swim_messages import (
    MAX_SEQ,
    Ack,
    Gossip,
    Member,
    MemberEvent,
    Message,
    Nack,
    Ping,
    PingReq,
    Prove,
    PushPull,
    Send,
    Status,
    SwimStats,
    Update,
    checked_proof,
    message_size,
    name_problem,
    no_proof,
    problem,
    update_size,
)

__all__ = [
    "Member",
    "MemberEvent",
    "Message",
    "Send",
    "Status",
    "SwimNode",
    "SwimStats",
    "Update",
    "message_size",
]


_PINGS_KEPT = 8
"""Probes whose late acks still count as round-trip samples."""


class SwimNode:
    """One member's SWIM + Lifeguard state machine. Every entry point returns the messages to
    send; after each call the host asks `next_deadline` again and calls `tick` then (a tick
    later than that by more than ``stall_threshold`` counts as a stall of the host)."""

    def __init__(
        self,
        name: str,
        *,
        settings: SwimSettings,
        rng: random.Random,
        now: float,
        incarnation: int = 0,
        prove: Prove | None = None,
        watches: Callable[[str], bool] | None = None,
        neighbours: Callable[[], Collection[str]] | None = None,
        align: Callable[[float, float], float] | None = None,
    ) -> None:
        self.name = name
        self._align = align
        """Moves the start of the next probe (given: one period from now, and the period) by
        less than half a period (None: as given). The agent puts probes on its process's
        beat, so that with a period that is a multiple of its chores' they share wake-ups."""
        self._watches = watches
        """Whether this node probes a given live member (None: all, as in SWIM). A host on a
        partial mesh leaves a member linked to others to them (see `_next_target`)."""
        self._neighbours = neighbours
        """The members this node reaches over a direct link (None: every member, as over
        UDP): gossip and indirect probes go to them first (`_nearby_members`)."""
        self._prove: Prove = prove or no_proof
        self.settings = settings
        self.stats = SwimStats()
        self._rng = rng
        self._members: dict[str, MemberState] = {
            name: MemberState(name, Status.ALIVE, min(max(0, incarnation), MAX_SEQ), now)
        }
        self._live = 1
        """Members ALIVE or SUSPECT, this node included: the N of every formula."""
        self._gone: dict[str, None] = {}
        """DEAD and LEFT members, in order (a dict, so that choices replay from the seed)."""
        self._ring = ProbeRing(rng)
        self._queue = BroadcastQueue()
        self._suspicions: dict[str, Suspicion] = {}
        self._verdicts_held_until = float("-inf")
        self._probe: Probe | None = None
        self._relays: dict[int, Relay] = {}
        self._events: deque[MemberEvent] = deque()
        self._timeouts = Timers()
        """Probe periods, ack and nack windows, suspicions: what counts time against
        someone, so what a stall of the host moves."""
        self._chores = Timers()
        """Gossip rounds, push/pull, reconnects: this node's own schedule, not moved."""
        self._seq = 0
        self._health = 0
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._pings: dict[int, tuple[str, float]] = {}
        """The last few probes' seq -> (target, when the Ping went): an Ack from the target,
        even one too late for its period, is a round-trip sample (`_sample_rtt`)."""
        self._member_rtt: dict[str, float] = {}
        """Member -> smoothed round trip of its direct acks (seconds; `member_rtt`)."""
        self._left = False
        self._outdated = False
        """Set while a message is handled when it accused this node of an old incarnation."""
        self._refuted = False
        """Set while a message is handled when this node refuted an accusation in it."""
        self._accusers = Accusers(settings.suspicion_confirmations + 1)
        self._replies = TokenBucket(settings.push_pull_replies_per_second, now)
        interval = settings.probe_interval
        self._timeouts.set(now + rng.random() * interval, "probe")
        self._chores.set(now + rng.random() * settings.push_pull_interval, "push_pull")
        self._chores.set(now + (0.5 + rng.random()) * settings.reconnect_interval, "reconnect")

    # ---- the host's interface

    @property
    def own_incarnation(self) -> int:
        """This node's incarnation: what its current ALIVE (or LEFT) says, and its proof signs."""
        return self._members[self.name].incarnation

    @property
    def own_grace(self) -> float:
        """The grace this node's current ALIVE asks the others for (`set_grace`)."""
        return self._members[self.name].grace

    def is_live(self, name: str) -> bool:
        """Whether ``name`` is ALIVE or SUSPECT here (this node: until it leaves)."""
        state = self._members.get(name)
        return state is not None and state.status in LIVE

    @property
    def local_health(self) -> int:
        """Lifeguard's local health multiplier: 0 is healthy; timeouts scale by it + 1."""
        return self._health

    def members(self) -> dict[str, Member]:
        """Everyone known, this node included, DEAD and LEFT ones too."""
        return {
            name: Member(name, state.status, state.incarnation, state.since, state.grace)
            for name, state in self._members.items()
        }

    def drain_events(self) -> list[MemberEvent]:
        events = list(self._events)
        self._events.clear()
        return events

    def next_deadline(self) -> float:
        """When `tick` has work next (math.inf after `leave`)."""
        return min(self._timeouts.next(), self._chores.next())

    def join(self, now: float, members: Iterable[str]) -> list[Send]:
        """Take ``members`` as ALIVE at incarnation 0 (those not known yet), announce this node
        (its ALIVE is piggybacked from now on) and exchange state with ``join_contacts`` of
        them."""
        if self._left:
            return []
        seeds = [name for name in dict.fromkeys(members) if isinstance(name, str) and name]
        for name in seeds:
            if name != self.name and name not in self._members:
                self._add(Update(name, Status.ALIVE, 0, name), now)
        if self._members[self.name].proof is None:  # a host may join again, at each new link
            self._reprove()
        self._queue.add(self._own_alive())
        others = [name for name in seeds if name != self.name]
        contacts = self._rng.sample(others, min(self.settings.join_contacts, len(others)))
        self._arm_gossip(now)
        sends = [self._push_pull_to(name, now, reply=True) for name in contacts]
        return self.stats.count_sent(sends)

    def tick(self, now: float) -> list[Send]:
        """Run every timer due at ``now``."""
        if self._left:
            return []
        late = now - self._timeouts.next()
        if late > self.settings.stall_threshold:
            self.note_stall(late)
        out: list[Send] = []
        while (due := self._timeouts.pop_due(now) or self._chores.pop_due(now)) is not None:
            self._fire(due[0], due[1], now, out)
        self._arm_gossip(now)
        return self.stats.count_sent(out)

    def receive(self, now: float, sender: str, message: Message) -> list[Send]:
        """Handle one message from ``sender``. A malformed one (wrong field types, an unknown
        kind) is dropped and counted in ``stats.dropped``; nothing a peer sends raises."""
        if self._left:
            return self._drop("after-leave")
        settings = self.settings
        reason = problem(
            message,
            max_updates=settings.max_updates_per_message,
            max_states=settings.max_members,
        )
        reason = reason or name_problem(sender, "sender")
        if reason is not None:
            self.stats.last_drop = reason
            return self._drop("unknown-kind" if reason.startswith("unknown kind") else "malformed")
        if sender == self.name:
            return self._drop("from-self")
        self.stats.count_received(message)
        self._outdated = self._refuted = False
        for update in message.updates:
            self._on_update(update, now)
        out: list[Send] = []
        self._handle(message, sender, now, out)
        self._answer_doubts(sender, out)
        self._arm_gossip(now)
        return self.stats.count_sent(out)

    def leave(self, now: float) -> list[Send]:
        """Leave for good: LEFT (not DEAD: nothing of it is replaced as if it had failed) goes
        at once to as many members as an update is retransmitted to; then nothing more."""
        if self._left:
            return []
        me = self._members[self.name]
        self._set(me, Status.LEFT, me.incarnation, now)
        self._left = True
        self._reprove()
        update = Update(self.name, Status.LEFT, me.incarnation, self.name, me.proof)
        count = retransmit_limit(self.settings.retransmit_mult, self._live)
        targets = self._random_members(count, is_live, ())
        self._timeouts.clear()
        self._chores.clear()
        return self.stats.count_sent([Send(name, Gossip((update,))) for name in targets])

    def set_grace(self, now: float, seconds: float) -> None:
        """Ask the others to wait ``seconds`` longer before they declare this node DEAD
        (capped at ``max_grace``): a browser tab while it is hidden. Announced as a new
        incarnation of its ALIVE, so that it overrides what they hold, suspicions included."""
        if self._left or not math.isfinite(seconds):
            return
        me = self._members[self.name]
        grace = min(max(0.0, seconds), self.settings.max_grace)
        if grace == me.grace:
            return
        me.grace = grace
        self.announce(now)

    def announce(self, now: float) -> None:
        """The host's record of this node changed (its neighbours, say): a new incarnation
        (capped at 2^32 - 1) with a proof from ``prove``, spread like a refutation."""
        if self._left:
            return
        me = self._members[self.name]
        me.incarnation = min(me.incarnation + 1, MAX_SEQ)
        self._reprove()
        self._queue.add(self._own_alive())
        self._arm_gossip(now)

    def set_proof(self, now: float, incarnation: int, proof: bytes) -> None:
        """The proof ``prove`` had no answer for, signed since: taken if this node is still at
        ``incarnation`` (and has not left), and its ALIVE spread afresh with it (the members
        that dropped the unproven one learn it now); for an older incarnation, ignored."""
        me = self._members[self.name]
        if self._left or incarnation != me.incarnation or proof == me.proof:
            return
        me.proof = checked_proof(proof)
        self._queue.add(self._own_alive())
        self._arm_gossip(now)

    def note_stall(self, seconds: float) -> None:
        """The host's loop was late by ``seconds`` (Lifeguard): pending timeouts move by it, so
        no probe period, suspicion or helper's ack window loses that time (what waited in the
        host's queue still counts), and the local health multiplier rises by one per probe
        interval of it. Gossip rounds are not moved: a refutation goes out at once. At most
        ``stall_threshold`` is noise and ignored. Call it before the late tick (which
        would otherwise detect the stall and count it again)."""
        if not math.isfinite(seconds) or seconds <= self.settings.stall_threshold:
            return
        self.stats.stalls += 1
        self.stats.stalled_seconds += seconds
        self._pings.clear()  # their round trips include this node's own stall
        self._timeouts.shift(seconds)
        for suspicion in self._suspicions.values():
            suspicion.start += seconds
        self._adjust_health(max(1, math.ceil(seconds / self.settings.probe_interval)))

    # ---- timers

    def _fire(self, kind: str, key: object, now: float, out: list[Send]) -> None:
        if kind == "probe":
            self._end_probe(now)
            self._start_probe(now, out)
        elif kind == "indirect" and isinstance(key, int):
            self._probe_indirectly(key, out)
        elif kind == "relay" and isinstance(key, int):
            self._relay_expired(key, out)
        elif kind == "suspicion" and isinstance(key, str):
            self._suspicion_expired(key, now)
        elif kind == "gossip":
            self._gossip(now, out)
        elif kind == "push_pull":
            self._periodic_push_pull(now, out)
        elif kind == "reconnect":
            self._reconnect(now, out)

    def _scaled(self, seconds: float) -> float:
        return seconds * (self._health + 1)

    def _start_probe(self, now: float, out: list[Send]) -> None:
        settings = self.settings
        rto = self.round_trip_timeout
        period = max(self._scaled(settings.probe_interval), 2 * rto)
        due = now + period if self._align is None else self._align(now + period, period)
        self._timeouts.set(due, "probe")
        target = self._next_target(now)
        if target is None:
            return
        seq = self._next_seq()
        self._probe = Probe(target, seq)
        self.stats.probes += 1
        self._pings[seq] = (target, now)
        if len(self._pings) > _PINGS_KEPT:
            del self._pings[next(iter(self._pings))]
        out.append(Send(target, Ping(seq, target, self._piggyback(target))))
        self._timeouts.set(now + max(self._scaled(settings.probe_timeout), rto), "indirect", seq)

    @property
    def round_trip_timeout(self) -> float:
        """How long an ack may take here (RFC 6298's SRTT + 4 RTTVAR over direct probes,
        at most ``rtt_timeout_max``): the probe waits at least this before it asks helpers,
        and its period lasts at least twice this. On a LAN it is a few ms and the settings
        decide; when every agent of a machine is short of CPU the round trip grows past the
        probe period, and fixed timeouts then make false suspicions, whose refutations and
        gossip cost more CPU still (40 agents on 2 cores never recovered from it)."""
        if self._srtt is None:
            return 0.0
        return min(self.settings.rtt_timeout_max, self._srtt + 4 * self._rttvar)

    def _sample_rtt(self, seconds: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = seconds, seconds / 2
            return
        self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - seconds)
        self._srtt = 0.875 * self._srtt + 0.125 * seconds

    def _sample_member_rtt(self, member: str, seconds: float) -> None:
        """Smooth one member's round trips as RFC 6298 smooths SRTT (gain 1/8)."""
        if member not in self._members:
            return
        previous = self._member_rtt.get(member)
        self._member_rtt[member] = (
            seconds if previous is None else 0.875 * previous + 0.125 * seconds
        )

    def member_rtt(self, member: str) -> float | None:
        """The smoothed round trip of ``member``'s acks to this node's direct probes (ping
        to ack, seconds; None before the first). Over a link to a neighbour it is that
        link's round trip plus both event loops' turns: what the dashboard shows per link.
        A member probed through a route has it too, for the whole path."""
        return self._member_rtt.get(member)

    def _probe_indirectly(self, seq: int, out: list[Send]) -> None:
        probe = self._probe
        if probe is None or probe.seq != seq or probe.acked:
            return
        target = probe.target
        probe.helpers = self._nearby_members(self.settings.indirect_checks, is_alive, (target,))
        for helper in probe.helpers:
            self.stats.indirect_probes += 1
            out.append(Send(helper, PingReq(seq, target, self._piggyback(helper))))

    def _end_probe(self, now: float) -> None:
        probe, self._probe = self._probe, None
        if probe is None or probe.acked:
            return
        self._timeouts.cancel("indirect", probe.seq)
        self.stats.probes_failed += 1
        # Lifeguard: helpers that did not nack say the fault may be ours; with no helpers at
        # all a failed probe is the only clue
        missed = len(probe.helpers) - len(probe.nacks) if probe.helpers else 1
        self._adjust_health(missed)
        state = self._members.get(probe.target)
        if state is not None and state.status in LIVE:
            if state.status is Status.ALIVE:
                self.stats.suspicions += 1
            suspect = Update(probe.target, Status.SUSPECT, state.incarnation, self.name)
            self._on_update(suspect, now)

    def _relay_expired(self, seq: int, out: list[Send]) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self.stats.nacks_sent += 1
            out.append(Send(relay.origin, Nack(relay.seq, self._piggyback(relay.origin))))

    def hold_verdicts(self, until: float) -> None:
        """Declare no one DEAD before ``until`` (monotonic seconds): the host knows this node
        is starved (its loop late, its links backed up), so its missed acks say more about
        itself than about the members it suspects (Lifeguard: an unhealthy node accuses
        slowly). Suspicions still start and spread, others confirm or refute them, and a
        member that others declare DEAD is DEAD here too; this node's own timers that expire
        meanwhile fire at ``until``."""
        self._verdicts_held_until = until

    def _suspicion_expired(self, name: str, now: float) -> None:
        suspicion = self._suspicions.get(name)
        state = self._members.get(name)
        if (
            suspicion is None
            or state is None
            or state.status is not Status.SUSPECT
            or state.incarnation != suspicion.incarnation
        ):
            self._suspicions.pop(name, None)
            return
        if now < self._verdicts_held_until:
            self.stats.verdicts_held += 1
            self._timeouts.set(self._verdicts_held_until, "suspicion", name)
            return
        del self._suspicions[name]
        self.stats.deaths += 1
        self._on_update(Update(name, Status.DEAD, state.incarnation, self.name), now)

    def _gossip(self, now: float, out: list[Send]) -> None:
        horizon = now - self.settings.gossip_to_the_dead_time

        def eligible(state: MemberState) -> bool:
            return state.status in LIVE or (state.status is Status.DEAD and state.since >= horizon)

        for name in self._nearby_members(self.settings.gossip_nodes, eligible, ()):
            updates = self._piggyback(name)
            if not updates:
                break
            out.append(Send(name, Gossip(updates)))

    def _periodic_push_pull(self, now: float, out: list[Send]) -> None:
        interval = push_pull_scale(self.settings.push_pull_interval, self._live)
        self._chores.set(now + interval, "push_pull")
        for name in self._random_members(1, is_alive, ()):
            out.append(self._push_pull_to(name, now, reply=True))

    def _reconnect(self, now: float, out: list[Send]) -> None:
        settings = self.settings
        self._chores.set(now + settings.reconnect_interval, "reconnect")
        forget(self._members, self._gone, self._ring, now - settings.reconnect_timeout)
        for name in [n for n in self._member_rtt if n not in self._members]:
            del self._member_rtt[name]  # forgotten members' round trips go with them
        candidates = [name for name in self._gone if self._members[name].status is Status.DEAD]
        # Serf's rule: try with probability DEAD / alive, so a few crashed members among many
        # cost almost nothing, and a partition in halves tries every round
        if candidates and self._rng.random() <= len(candidates) / self._live:
            out.append(self._push_pull_to(self._rng.choice(candidates), now, reply=True))

    # ---- messages

    def _handle(self, message: Message, sender: str, now: float, out: list[Send]) -> None:
        if isinstance(message, Ping):
            if message.target != self.name:
                self._drop("misdirected")
                return
            out.append(Send(sender, Ack(message.seq, self._piggyback(sender))))
        elif isinstance(message, Ack):
            self._on_ack(message.seq, sender, now, out)
        elif isinstance(message, PingReq):
            self._on_ping_req(message, sender, now, out)
        elif isinstance(message, Nack):
            probe = self._probe
            if probe is None or probe.seq != message.seq or sender not in probe.helpers:
                self._drop("unexpected-nack")
                return
            self.stats.nacks_received += 1
            probe.nacks.add(sender)
        elif isinstance(message, PushPull):
            for state in message.states:
                self._merge(state, sender, now)
            if not message.reply:
                return
            # a whole table for a small request is amplification a peer could abuse: beyond
            # the rate the request is merged unanswered (memberlist caps push/pulls too)
            if self._replies.take(now):
                out.append(self._push_pull_to(sender, now, reply=False))
            else:
                self._drop("push-pull-busy")

    def _answer_doubts(self, sender: str, out: list[Send]) -> None:
        """Whoever holds a stale view of the other gets told at once, since retransmit-limited
        gossip may have missed it for good and the round-robin probe between the two may be
        minutes away in a large cluster: a member that accused this node (refuted now, or an
        incarnation already refuted) gets its current ALIVE, and so do the accusations'
        origins (`Accusers`: one hop from the news when their timers fire); a member this node
        holds SUSPECT or DEAD that messages it gets that news (to refute or correct us)."""
        if self._outdated or self._refuted:
            self.stats.corrections += self._outdated and not self._refuted
            alive = self._own_alive()
            for name in self._accusers.take(alive.incarnation, sender):
                if not any(send.to == name and alive in send.message.updates for send in out):
                    self.stats.accusers_told += name != sender
                    out.append(Send(name, Gossip((alive,))))
            return
        self._accusers.clear()
        state = self._members.get(sender)
        doubted = state is not None and state.status in (Status.SUSPECT, Status.DEAD)
        if doubted and not any(send.to == sender for send in out):
            out.append(Send(sender, Gossip(self._piggyback(sender))))

    def _on_ack(self, seq: int, sender: str, now: float, out: list[Send]) -> None:
        ping = self._pings.get(seq)
        if ping is not None and ping[0] == sender:
            del self._pings[seq]
            self._sample_rtt(now - ping[1])
            self._sample_member_rtt(sender, now - ping[1])
        probe = self._probe
        if probe is not None and probe.seq == seq:
            if sender == probe.target or sender in probe.helpers:
                if not probe.acked:
                    probe.acked = True
                    self._timeouts.cancel("indirect", seq)
                    self._adjust_health(-1)
                return
        relay = self._relays.get(seq)
        if relay is not None and relay.target == sender:
            del self._relays[seq]
            self._timeouts.cancel("relay", seq)
            out.append(Send(relay.origin, Ack(relay.seq, self._piggyback(relay.origin))))
            return
        self._drop("unexpected-ack")

    def _on_ping_req(self, message: PingReq, sender: str, now: float, out: list[Send]) -> None:
        target = message.target
        if target in (self.name, sender):
            self._drop("misdirected")
            return
        if len(self._relays) >= self.settings.max_pending_relays:
            self._drop("relays-full")
            return
        seq = self._next_seq()
        self._relays[seq] = Relay(sender, message.seq, target)
        self.stats.relayed += 1
        out.append(Send(target, Ping(seq, target, self._piggyback(target))))
        self._timeouts.set(
            now + max(self.settings.nack_timeout, self.round_trip_timeout), "relay", seq
        )

    def _push_pull_to(self, name: str, now: float, *, reply: bool) -> Send:
        horizon = now - self.settings.gossip_to_the_dead_time
        table = push_pull_table(self._members.values(), self.name, horizon)
        return Send(name, PushPull(table, reply, self._piggyback(name)))

    def _merge(self, state: Update, sender: str, now: float) -> None:
        """One entry of a peer's table (memberlist's mergeState): a peer's DEAD is only a
        suspicion here (it may be the peer that was cut off), from that peer."""
        if state.status in (Status.SUSPECT, Status.DEAD):
            state = Update(state.name, Status.SUSPECT, state.incarnation, sender)
        self._on_update(state, now)

    # ---- updates

    def _on_update(self, update: Update, now: float) -> None:
        if update.name == self.name:
            self._about_me(update, now)
            return
        state = self._members.get(update.name)
        if state is None:
            if update.status is Status.ALIVE and self._add(update, now):
                self._queue.add(update)
            return
        if update.incarnation < state.incarnation:
            self.stats.dropped["stale"] += 1
            return
        if update.status is Status.ALIVE:
            if update.incarnation > state.incarnation:
                state.proof = update.proof
                state.grace = min(update.grace, self.settings.max_grace)
                self._set(state, Status.ALIVE, update.incarnation, now)
                self._queue.add(update)
            elif state.status is Status.ALIVE and state.proof is None and update.proof:
                state.proof = update.proof  # signed after it went out (SwimNode.set_proof)
                self._queue.add(update)
        elif update.status is Status.SUSPECT:
            self._suspect(state, update, now)
        elif update.status is Status.DEAD and not self._believes_dead(state, update, now):
            suspicion = Update(state.name, Status.SUSPECT, update.incarnation, update.origin)
            self._suspect(state, suspicion, now)
        elif state.status not in (Status.DEAD, Status.LEFT) or (
            update.status is Status.LEFT and state.status is Status.DEAD
        ):
            if update.status is Status.LEFT:
                state.proof = update.proof
            self._set(state, update.status, update.incarnation, now)
            self._queue.add(update)

    def _believes_dead(self, state: MemberState, update: Update, now: float) -> bool:
        """A DEAD is taken as it is when it is ours, or after `swim_gossip.dead_is_due`."""
        if update.origin == self.name or state.status in (Status.DEAD, Status.LEFT):
            return True
        suspicion = self._suspicions.get(state.name)
        return dead_is_due(suspicion, update.incarnation, now, self.settings.believe_dead_after)

    def _suspect(self, state: MemberState, update: Update, now: float) -> None:
        suspicion = self._suspicions.get(state.name)
        if suspicion is not None and suspicion.incarnation == update.incarnation:
            if suspicion.confirm(update.origin):
                self.stats.confirmations += 1
                self._timeouts.set(suspicion.deadline(), "suspicion", state.name)
                self._queue.add(update)
            return
        newer = state.status is Status.SUSPECT and update.incarnation > state.incarnation
        if state.status is not Status.ALIVE and not newer:
            return
        self._set(state, Status.SUSPECT, update.incarnation, now)
        settings = self.settings
        bounds = suspicion_bounds(settings, self._live)
        floor, ceiling = (bound + state.grace for bound in bounds)
        expected = min(settings.suspicion_confirmations, self._live - 2)
        suspicion = Suspicion(update.incarnation, now, update.origin, expected, (floor, ceiling))
        self._suspicions[state.name] = suspicion
        self._timeouts.set(suspicion.deadline(), "suspicion", state.name)
        self._queue.add(update)

    def _about_me(self, update: Update, now: float) -> None:
        """Refute whatever says this node is not ALIVE at its incarnation or later, and an ALIVE
        of a newer incarnation than its own (a previous run of it): only it speaks for itself."""
        me = self._members[self.name]
        if self._left:
            return
        if update.status is Status.ALIVE:
            if update.incarnation > me.incarnation:
                self._refute(update.incarnation)
            return
        if update.origin != self.name and update.origin in self._members:
            self._accusers.heard(update.origin)
        if update.incarnation >= me.incarnation:
            self._refute(update.incarnation)
            self._refuted = True
        else:
            self._outdated = True

    def _refute(self, accused: int) -> None:
        me = self._members[self.name]
        me.incarnation = min(max(me.incarnation, accused) + 1, MAX_SEQ)
        self.stats.refutations += 1
        self._adjust_health(1)
        self._reprove()
        self._queue.add(self._own_alive())

    def _reprove(self) -> None:
        """Ask the host for the proof of this node's record as it is now (None: not yet)."""
        me = self._members[self.name]
        proof = self._prove(me.incarnation, me.grace, me.status is Status.LEFT)
        me.proof = None if proof is None else checked_proof(proof)

    def _own_alive(self) -> Update:
        me = self._members[self.name]
        return Update(self.name, Status.ALIVE, me.incarnation, self.name, me.proof, me.grace)

    # ---- the table

    def _add(self, update: Update, now: float) -> bool:
        if len(self._members) >= self.settings.max_members:
            self.stats.dropped["table-full"] += 1
            return False
        grace = min(update.grace, self.settings.max_grace)
        state = MemberState(update.name, Status.ALIVE, update.incarnation, now, update.proof, grace)
        self._members[update.name] = state
        self._live += 1
        self._ring.insert(update.name)
        self._event(state, now)
        return True

    def _set(self, state: MemberState, status: Status, incarnation: int, now: float) -> None:
        """The one place a member's status changes: N, the DEAD list, the probe ring, its
        suspicion and the events follow."""
        was = state.status
        state.incarnation = incarnation
        if status is was:
            return
        state.status = status
        state.since = now
        self._live += (status in LIVE) - (was in LIVE)
        if status in LIVE:
            self._gone.pop(state.name, None)
        else:
            self._gone[state.name] = None
        if was is Status.SUSPECT:
            self._suspicions.pop(state.name, None)
            self._timeouts.cancel("suspicion", state.name)
        if status in LIVE and state.name != self.name and state.name not in self._ring:
            self._ring.insert(state.name)
        self._event(state, now)

    def _event(self, state: MemberState, now: float) -> None:
        if len(self._events) >= self.settings.max_events:
            self._events.popleft()
            self.stats.events_dropped += 1
        self._events.append(MemberEvent(state.name, state.status, state.incarnation, now))

    def _next_target(self, now: float) -> str | None:
        """The next live member of the ring this node watches. On a partial mesh the host
        makes each node probe its own neighbours and the members it has no route to: every
        member is still probed about once per period (by its neighbours, each of which
        probes it every few periods), but over one link instead of a routed path through
        relays, each hop of which costs a message and a signature check."""
        horizon = now - self.settings.gossip_to_the_dead_time
        members = self._members
        watches = self._watches
        return self._ring.next(
            lambda name: members[name].status in LIVE and (watches is None or watches(name)),
            keep=lambda name: members[name].status in LIVE or members[name].since >= horizon,
        )

    def _random_members(
        self, count: int, eligible: Callable[[MemberState], bool], exclude: Iterable[str]
    ) -> list[str]:
        members = self._members
        return self._ring.sample(count, lambda name: eligible(members[name]), exclude)

    def _nearby_members(
        self, count: int, eligible: Callable[[MemberState], bool], exclude: Iterable[str]
    ) -> list[str]:
        """Up to ``count`` eligible members at random, neighbours first: on a partial mesh
        a message to a neighbour is one frame, to anyone else a signed message relayed hop
        by hop. Gossip still spreads epidemically (the neighbours' neighbours are random
        too), and an indirect probe's helpers still reach the target by other paths."""
        if self._neighbours is None:
            return self._random_members(count, eligible, exclude)
        excluded = set(exclude)
        members = self._members
        near = [
            name
            for name in sorted(self._neighbours())
            if name not in excluded and name in members and eligible(members[name])
        ]
        picked = self._rng.sample(near, min(count, len(near)))
        if len(picked) < count:
            picked += self._random_members(count - len(picked), eligible, (*excluded, *picked))
        return picked

    # ---- helpers

    def _piggyback(self, to: str) -> tuple[Update, ...]:
        """Updates for a message to ``to``; a member we hold SUSPECT or DEAD is told so (if no
        queued update says it already), so that it refutes at once if it is alive."""
        settings = self.settings
        limit = retransmit_limit(settings.retransmit_mult, self._live)
        state = self._members.get(to)
        if (
            state is not None
            and state.status in (Status.SUSPECT, Status.DEAD)
            and self._queue.about(to) is None
        ):
            notice = Update(to, state.status, state.incarnation, self.name)
            budget = settings.max_piggyback_bytes - update_size(notice)
            return (notice, *self._queue.pick(settings.max_piggyback - 1, limit, None, budget))
        return tuple(
            self._queue.pick(settings.max_piggyback, limit, to, settings.max_piggyback_bytes)
        )

    def _arm_gossip(self, now: float) -> None:
        """Gossip rounds run while there is news and stop when there is none (an idle node
        sends its probes and nothing else). Like probes, they slow down with the local
        health multiplier: a node whose probes fail unnacked or whose loop stalls is likely
        short of CPU, and on a machine saturated by its agents gossip was most of what they
        sent (21 of 27 messages per second each, with 40 agents on 2 cores), each message a
        further cost that kept them saturated."""
        if len(self._queue) and not self._chores.has("gossip"):
            self._chores.set(now + self._scaled(self.settings.gossip_interval), "gossip")

    def _drop(self, reason: str) -> list[Send]:
        self.stats.dropped[reason] += 1
        return []

    def _next_seq(self) -> int:
        self._seq = self._seq % MAX_SEQ + 1
        return self._seq

    def _adjust_health(self, delta: int) -> None:
        ceiling = max(0, self.settings.awareness_max_multiplier - 1)
        self._health = min(ceiling, max(0, self._health + delta))
