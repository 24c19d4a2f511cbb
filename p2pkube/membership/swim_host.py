"""Membership by SWIM + Lifeguard: the agent's host of the sans-IO core (`swim.SwimNode`).

The core decides who is ALIVE, SUSPECT, DEAD or LEFT; this module gives it time, carries its
messages and decides what it may believe:

* **Carrying.** A message to a neighbour is a SWIM frame on the link; to any other member a
  routed message (``{"kind": "swim", "m": ...}``), which the mesh signs end to end and sends
  along the routes that `Topology` computes from the members' neighbour lists.
* **Time.** One task sleeps until the core's next deadline (or until a message armed an
  earlier one) and ticks it; a tick that comes late is a stall of this agent's loop, which
  the core counts against no one and answers by slowing its own accusations (Lifeguard).
* **Trust.** Only a member says ALIVE or LEFT of itself: each such update carries a record
  that the member signed (`swim_wire`), checked here once per (member, incarnation) before
  the core sees it. An accusation (SUSPECT, DEAD) is believed only at an incarnation the
  member itself signed, so no one can accuse a member at an incarnation it cannot refute.
  Records also carry the member's public key (which checks its routed messages), its name
  and its neighbours (the routes).
* **Own records.** The core asks for the proof of this node's own ALIVE at a new incarnation
  synchronously, when it refutes; signing is asynchronous (WebCrypto in a tab), so the next
  incarnations are signed ahead. A change of neighbours is announced as a new incarnation
  (at most every ``announce_delay``), so the routes follow the links.

The rest of the agent sees a `NodeLiveness` per member (p2pkube/membership/liveness.py), Ready
while ALIVE or SUSPECT (a suspicion is not a failure: nothing is replaced for it), NotReady
once DEAD or LEFT.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from p2pkube.membership.liveness import NodeLiveness
from p2pkube.membership.settings import MembershipSettings, SwimSettings
from p2pkube.membership.swim import SwimNode
from p2pkube.membership.swim_messages import Gossip, Message, PushPull, Send, Status, Update
from p2pkube.membership.swim_wire import (
    DOMAIN,
    MemberRecord,
    decode,
    encode,
    parse_proof,
    proof_of,
    record_bytes,
    signed_transcript,
)
from p2pkube.membership.topology import Topology, short_id
from p2pkube.model.timestamps import utc_now
from p2pkube.net.frames import FrameError, FrameType
from p2pkube.net.signed import LogThrottle, Signatures
from p2pkube.net.transport import Transport
from p2pkube.ticker import nearest_beat

log = logging.getLogger(__name__)

ROUTED_KIND = "swim"
"""``kind`` of a routed message that carries a SWIM message (``m``)."""
_MAX_DEFERRED = 64
"""Updates held per member while its record's signature is checked."""
_SIGN_AHEAD = 2
"""Own ALIVE incarnations signed ahead, beyond the current one."""
_SIGNER_IDLE = 30.0
"""Seconds the signer sleeps when nothing asks for a record (a safety net: every change
that needs one wakes it)."""

_JOINING = "Joining"
"""The reason of a member whose record is known but not yet its status (never shown: it is
set and left in the same call)."""
_REASONS = {
    Status.ALIVE: (True, "AgentReady"),
    Status.SUSPECT: (True, "AgentSuspected"),
    Status.DEAD: (False, "AgentDead"),
    Status.LEFT: (False, "AgentLeft"),
}


@dataclasses.dataclass
class HostStats:
    """Counters of what the host let through to the core (``p2pkube status``)."""

    records_checked: int = 0
    records_forged: int = 0
    updates_unproven: int = 0
    """ALIVE or LEFT updates without a valid record, dropped."""
    accusations_unproven: int = 0
    """SUSPECT or DEAD updates above every incarnation the member signed, dropped."""
    checks_refused: int = 0
    """Records dropped because the signature queue was full."""
    no_path: int = 0
    """Messages the core sent to a member no route leads to."""
    starved_spells: int = 0
    """Times this node became starved (``swim.starved_stall``, ``swim.starved_backlog``)."""
    malformed: int = 0


class SwimMembership:
    """This node's membership: runs a `SwimNode`, signs and checks member records, keeps the
    routes, and reports liveness to the agent."""

    def __init__(
        self,
        signatures: Signatures,
        name: str,
        transport: Transport,
        settings: MembershipSettings,
        swim: SwimSettings,
        on_change: Callable[[NodeLiveness], None] | None = None,
        *,
        on_violation: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """``on_violation(neighbour, reason)`` drops a neighbour that sent what no honest
        node sends; ``clock`` (wall seconds) gives the first incarnation, so a restarted node
        starts above its previous run (which it refutes anyway if not)."""
        self.node_id = signatures.node_id
        self.name = name
        self.settings = settings
        self.swim = swim
        self.stats = HostStats()
        self.started = time.monotonic()
        self._signatures = signatures
        self._transport = transport
        self._on_change = on_change or (lambda liveness: None)
        self._on_violation = on_violation or (lambda neighbour, reason: None)
        self._warn = LogThrottle(log, settings.drop_log_interval)
        self.topology = Topology(self.node_id)
        self._records: dict[str, MemberRecord] = {}
        """The newest checked record of each member (this node's own too)."""
        self._nodes: dict[str, NodeLiveness] = {}
        self._checking: dict[tuple[str, int, bool, bytes], list[tuple[str, Update]]] = {}
        """Records being checked -> the updates (with their sender) that wait for them."""
        self._proofs: dict[tuple[int, float, bool], bytes] = {}
        """Own proofs signed ahead: (incarnation, grace, left) -> proof, all with ``_peers``."""
        self._peers: tuple[str, ...] = ()
        """The neighbours this node's signed records list."""
        self._proven = -1
        """The own incarnation whose ALIVE the core holds a proof for."""
        self.core = SwimNode(
            self.node_id,
            settings=swim,
            rng=rng or random.Random(),
            now=time.monotonic(),
            incarnation=int(clock()) % 2**31,
            prove=self._prove,
            watches=self._watches,
            neighbours=self._transport.neighbours,
            align=lambda due, period: nearest_beat(period, due),
        )
        self._grace = 0.0
        """What the embedder asks for (a hidden browser tab)."""
        self._starved_until = float("-inf")
        """While now is before this, this node is starved and asks for ``starved_grace``."""
        self._wake = asyncio.Event()
        self._resign = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._next_reap = 0.0
        """When `_forget_gone` runs next (every ``swim.reconnect_interval``, as the core's
        own reaping)."""

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self._sign_ahead()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._signer())]

    async def close(self, leaving: bool = True) -> None:
        """Stop; with ``leaving``, tell the others first (LEFT, not DEAD: nothing of this
        node is replaced as if it had failed)."""
        if leaving:
            self.say_leaving()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def say_leaving(self) -> None:
        """Say LEFT now, synchronously (a closing browser tab can await nothing): the record
        was signed ahead. It goes to every neighbour and to the members the core picks."""
        sends = self.core.leave(time.monotonic())
        left = [u for s in sends for u in s.message.updates if u.name == self.node_id]
        self._dispatch(sends)
        if left:
            body = encode(Gossip((left[0],)))
            self._transport.broadcast(FrameType.SWIM, body)

    @property
    def grace(self) -> float:
        return self._grace

    @grace.setter
    def grace(self, seconds: float) -> None:
        """Seconds this node asks the others to add to its suspicion timeout (a hidden tab);
        while it is starved it asks for at least ``starved_grace``."""
        self._grace = seconds
        self._ask_grace(time.monotonic())

    @property
    def starved(self) -> bool:
        return time.monotonic() < self._starved_until

    def _ask_grace(self, now: float) -> None:
        """Announce the grace this node needs now, if it changed: the embedder's, or while
        starved at least ``starved_grace`` (signed with the next incarnation)."""
        starved = self.swim.starved_grace if now < self._starved_until else 0.0
        seconds = max(self._grace, starved)
        if seconds != self.core_grace:
            self.core.set_grace(now, seconds)
            self._resign.set()
            self._wake.set()

    def _note_load(self, late: float, now: float) -> None:
        """This node's membership clock woke ``late`` seconds after it was due: a stall of
        ``starved_stall`` or more, or ``starved_backlog`` bytes queued on its links, starts
        (or prolongs) its starved spell; the spell ends ``starved_calm`` after the last.
        While starved, it asks the others for grace and declares no one DEAD itself
        (`SwimNode.hold_verdicts`): both sides of a missed ack are suspect then."""
        backlog = self._transport.queued_bytes()
        if late >= self.swim.starved_stall or backlog >= self.swim.starved_backlog:
            if now >= self._starved_until:
                self.stats.starved_spells += 1
                log.warning(
                    "starved (event loop %.1fs late, %d KiB queued on the links): asking the "
                    "others for %.0fs more before they declare this node dead",
                    max(0.0, late),
                    backlog // 1024,
                    self.swim.starved_grace,
                )
            self._starved_until = now + self.swim.starved_calm
            self.core.hold_verdicts(self._starved_until)
            self._ask_grace(now)
        elif self._starved_until != float("-inf") and now >= self._starved_until:
            self._starved_until = float("-inf")
            log.info("event loop calm again: grace withdrawn")
            self._ask_grace(now)

    # -- own records ---------------------------------------------------------------------------
    def _prove(self, incarnation: int, grace: float, left: bool) -> bytes | None:
        """The core's hook: the proof of our own ALIVE or LEFT, if signed already (else the
        signer makes it and hands it over with `SwimNode.set_proof`)."""
        proof = self._proofs.get((incarnation, grace, left))
        if proof is None:
            self._resign.set()
        elif not left:
            self._proven = incarnation
        return proof

    async def _sign(self, incarnation: int, grace: float, left: bool) -> bytes:
        record = record_bytes(
            self.node_id,
            self._signatures.public_key,
            self.name,
            incarnation,
            grace,
            left,
            [short_id(peer) for peer in self._peers],
        )
        signature = await self._signatures.sign(DOMAIN, record)
        proof = proof_of(record, signature)
        self._proofs[(incarnation, grace, left)] = proof
        self._remember(parse_proof(proof))
        return proof

    async def _sign_ahead(self) -> None:
        """Sign what the core may ask for next: the current incarnation (ALIVE and LEFT) and
        the next ``_SIGN_AHEAD``; hand the core the current one if it lacked it."""
        core, grace = self.core, self.core_grace
        current = core.own_incarnation
        self._proofs = {
            key: proof
            for key, proof in self._proofs.items()
            if key[0] >= current and key[1] == grace
        }
        for incarnation in range(current, current + _SIGN_AHEAD + 1):
            for left in (False, True):
                if (incarnation, grace, left) not in self._proofs:
                    await self._sign(incarnation, grace, left)
        if core.own_incarnation == current and self._proven != current:
            self._proven = current
            core.set_proof(time.monotonic(), current, self._proofs[(current, grace, False)])

    @property
    def core_grace(self) -> float:
        return self.core.own_grace

    async def _signer(self) -> None:
        """Keep own proofs signed ahead, and announce a new incarnation when the neighbours
        changed (at most every ``swim.announce_delay``, so a burst of link changes is one)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_SIGNER_IDLE):
                    await self._resign.wait()
            self._resign.clear()
            try:
                peers = tuple(sorted(self._transport.neighbours()))
                if peers != self._peers:
                    self._peers = peers
                    self._proofs.clear()
                    await self._sign(self.core.own_incarnation + 1, self.core_grace, False)
                    self.core.announce(time.monotonic())
                    self._wake.set()
                await self._sign_ahead()
            except Exception:  # a failed WebCrypto call: try again on the next round
                log.exception("signing this node's member record failed")
            await asyncio.sleep(self.swim.announce_delay)

    def _forget_gone(self) -> None:
        """Drop the record, liveness and routes of members the core forgot (DEAD or LEFT for
        longer than ``swim.reconnect_timeout``), so that churn does not fill memory."""
        known = self.core.members()
        for node in [n for n in self._records if n not in known and n != self.node_id]:
            del self._records[node]
            self._nodes.pop(node, None)
            self.topology.remove(node)

    # -- the core's clock ----------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            due = started + min(
                max(0.0, self.core.next_deadline() - started), self.swim.probe_interval
            )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due):
                    await self._wake.wait()
            now = time.monotonic()
            self._note_load(now - due, now)
            if now >= self.core.next_deadline():
                self._dispatch(self.core.tick(now))
            if now >= self._next_reap:
                self._next_reap = now + self.swim.reconnect_interval
                self._forget_gone()

    def _watches(self, member: str) -> bool:
        """Whether this node probes ``member``: a neighbour, or a member it has no route to.
        A member it reaches through others has a neighbour on this side (the last hop of
        the route) who probes it over one link; a probe from here would be a signed message
        relayed hop by hop. One without a route (the other side of a partition; a crashed
        member whose last neighbours closed their links; a newcomer not in the routes yet)
        is probed by everyone, as in SWIM: the probe finds no path and fails at once."""
        return member in self._transport.neighbours() or self.topology.next_hop(member) is None

    # -- carrying messages ---------------------------------------------------------------------
    def _dispatch(self, sends: list[Send]) -> None:
        links = set(self._transport.neighbours())
        for send in sends:
            body = encode(send.message)
            if send.to in links:
                self._transport.send(send.to, FrameType.SWIM, body)
            elif not self._transport.send_routed(send.to, {"kind": ROUTED_KIND, "m": body}):
                self.stats.no_path += 1
        self._publish_events()
        self._wake.set()

    def link_up(self, neighbour: str) -> None:
        """A new link: exchange whole tables with the neighbour at once (so it learns every
        member, and we do), and announce our new neighbour list soon."""
        self.topology.set_own_links(self._transport.neighbours())
        self._dispatch(self.core.join(time.monotonic(), [neighbour]))
        self._resign.set()

    def link_down(self, neighbour: str) -> None:
        self.topology.set_own_links(self._transport.neighbours())
        self._resign.set()

    def handle_frame(self, neighbour: str, body: Any) -> None:
        """A SWIM frame from a neighbour (FrameError drops the neighbour: no relay is
        involved, it sent that itself)."""
        self._receive(neighbour, self._decode(body))

    def handle_routed(self, src: str, data: dict[str, Any]) -> None:
        """A routed SWIM message (its source's signature already checked by the mesh)."""
        self._receive(src, self._decode(data.get("m")))

    def _decode(self, body: Any) -> Message:
        try:
            return decode(
                body,
                max_updates=self.swim.max_updates_per_message,
                max_states=self.swim.max_members,
            )
        except FrameError:
            self.stats.malformed += 1
            raise

    def _receive(self, sender: str, message: Message) -> None:
        """Let through what may be believed now; hold what waits for a record's check."""
        liveness = self._nodes.get(sender)
        if liveness is not None:
            liveness.last_seen, liveness.last_heard = time.monotonic(), utc_now()
        updates = tuple(u for u in message.updates if self._admit(sender, u))
        if isinstance(message, PushPull):
            states = tuple(s for s in message.states if self._admit(sender, s, state=True))
            message = dataclasses.replace(message, states=states, updates=updates)
        else:
            message = dataclasses.replace(message, updates=updates)
        self._dispatch(self.core.receive(time.monotonic(), sender, message))

    def _admit(self, sender: str, update: Update, *, state: bool = False) -> bool:
        """Whether ``update`` goes to the core now; one waiting for a record's check is held
        (a push/pull state's accusation as the sender's suspicion, as the core merges it)."""
        if update.status in (Status.ALIVE, Status.LEFT):
            return self._admit_record(sender, update)
        if state:
            update = Update(update.name, Status.SUSPECT, update.incarnation, sender)
        known = self._records.get(update.name)
        if known is not None and update.incarnation <= known.incarnation:
            return True
        for key, waiting in self._checking.items():
            if key[0] == update.name and key[1] >= update.incarnation:
                if len(waiting) < _MAX_DEFERRED:
                    waiting.append((sender, update))
                return False
        self.stats.accusations_unproven += 1
        return False

    def _admit_record(self, sender: str, update: Update) -> bool:
        left = update.status is Status.LEFT
        known = self._records.get(update.name)
        if known is not None and (update.incarnation, left) < (known.incarnation, known.left):
            return True  # older than what we hold: the core drops it as stale
        try:
            if update.proof is None:
                raise FrameError("no member record")
            record = parse_proof(update.proof)
            if (record.node, record.incarnation, record.left) != (
                update.name,
                update.incarnation,
                left,
            ) or record.grace != update.grace:
                raise FrameError("the record says something else than the update")
        except FrameError as exc:
            self.stats.updates_unproven += 1
            if update.proof is None:
                return False  # a member known only from a neighbour's link, not yet signed
            self._warn.warning(
                "unproven",
                "%s update of %s from %s dropped: %s",
                update.status.value,
                update.name,
                sender,
                exc,
            )
            return False
        if known is not None and known.signature == record.signature:
            return True
        self._check(sender, update, record)
        return False

    def _check(self, sender: str, update: Update, record: MemberRecord) -> None:
        key = (record.node, record.incarnation, record.left, record.signature)
        waiting = self._checking.get(key)
        if waiting is not None:
            return  # the same record is being checked: its update goes then
        message = signed_transcript(self._signatures.cluster, record.signed)
        done = functools.partial(self._checked, key, record)
        if not self._signatures.check(sender, record.pub, record.signature, message, done):
            self.stats.checks_refused += 1
            return
        self._checking[key] = [(sender, update)]

    def _checked(
        self, key: tuple[str, int, bool, bytes], record: MemberRecord, valid: bool
    ) -> None:
        waiting = self._checking.pop(key, [])
        self.stats.records_checked += 1
        if not valid:
            self.stats.records_forged += 1
            self._warn.warning(
                "forged",
                "record of %s (incarnation %d) has a bad signature: dropped",
                record.node,
                record.incarnation,
            )
            return
        self._remember(record)
        now = time.monotonic()
        by_sender: dict[str, list[Update]] = {}
        for sender, update in waiting:
            if (
                update.status in (Status.ALIVE, Status.LEFT)
                or update.incarnation <= record.incarnation
            ):
                by_sender.setdefault(sender, []).append(update)
        for sender, updates in by_sender.items():
            self._dispatch(self.core.receive(now, sender, Gossip(tuple(updates))))
        self._sync_liveness(record.node)

    def _remember(self, record: MemberRecord) -> None:
        """A checked record: the newest of a member is its key, name and neighbours."""
        known = self._records.get(record.node)
        if known is not None and (record.incarnation, record.left) <= (
            known.incarnation,
            known.left,
        ):
            return
        self._records[record.node] = record
        if record.node != self.node_id:
            self.topology.set_links(record.node, record.peers)
        liveness = self._nodes.get(record.node)
        if liveness is not None:
            liveness.name, liveness.pub = record.name, record.pub
            liveness.grace = min(record.grace, self.swim.max_grace)

    # -- liveness for the agent ----------------------------------------------------------------
    def _publish_events(self) -> None:
        for event in self.core.drain_events():
            self._sync_liveness(event.name)

    def _sync_liveness(self, node: str) -> None:
        """Bring ``node``'s liveness in line with the core's view of it (once its record is
        known: a member the core took on a neighbour's word alone has no name or key yet)."""
        record = self._records.get(node)
        member = self.core.members().get(node) if record is not None else None
        if node == self.node_id or record is None or member is None:
            return
        ready, reason = _REASONS[member.status]
        if not ready:
            self.topology.remove(node)
        elif member.status is Status.ALIVE:
            self.topology.set_links(node, record.peers)
        liveness = self._nodes.get(node)
        if liveness is None:
            liveness = self._new_liveness(record)
        liveness.incarnation = member.incarnation
        self._set(liveness, ready, reason)

    def _new_liveness(self, record: MemberRecord) -> NodeLiveness:
        stamp = utc_now()
        liveness = NodeLiveness(
            node=record.node,
            name=record.name,
            incarnation=record.incarnation,
            last_seen=time.monotonic(),
            last_heard=stamp,
            via=None,
            last_transition=stamp,
            pub=record.pub,
            grace=min(record.grace, self.swim.max_grace),
            ready=False,
            reason=_JOINING,
        )
        self._nodes[record.node] = liveness
        return liveness

    def _set(self, liveness: NodeLiveness, ready: bool, reason: str) -> None:
        """Set a member's Ready and reason; a change of Ready is logged, told to the agent and
        counted in ``transitions``, except the first sighting of a member (``Joining`` to
        Ready): that is no flip, so a member that never failed shows 0."""
        if liveness.ready == ready and liveness.reason == reason:
            return
        changed = liveness.ready != ready
        first = liveness.reason == _JOINING
        liveness.ready, liveness.reason = ready, reason
        log.info(
            "node %s (%s) is %s: %s",
            liveness.name,
            liveness.node,
            "Ready" if ready else "NotReady",
            reason,
        )
        if changed:
            if not first:
                liveness.transitions += 1
            liveness.last_transition = utc_now()
            self._on_change(liveness)

    @property
    def stalled_seconds(self) -> float:
        return self.core.stats.stalled_seconds

    # -- queries -------------------------------------------------------------------------------
    def relay_exclude(self, came_from: str) -> set[str]:
        """Neighbours that need not get a flooded message that arrived from ``came_from``:
        those linked to it (its record and theirs agree), who get it from it."""
        return self.topology.neighbours_of(came_from) | {came_from}

    def route_hint(self, node: str) -> str | None:
        """The neighbour on a shortest path toward a live ``node`` (None: none known)."""
        return self.topology.next_hop(node) if self.is_live(node) else None

    def is_live(self, node: str) -> bool:
        liveness = self._nodes.get(node)
        return liveness is not None and liveness.ready

    def is_reachable(self, node: str) -> bool:
        return self.route_hint(node) is not None

    def get(self, node: str) -> NodeLiveness | None:
        """``node``'s liveness (its ``via`` and ``peers`` as of the last `nodes`: this is the
        hot path, asked per pod and per request)."""
        return self._nodes.get(node)

    def public_key(self, node: str) -> bytes | None:
        record = self._records.get(node)
        return record.pub if record is not None else None

    def nodes(self) -> list[NodeLiveness]:
        """Every member's liveness, with its next hop and neighbours brought up to date."""
        for node, liveness in self._nodes.items():
            liveness.via = self.topology.next_hop(node)
            liveness.peers = sorted(self.topology.neighbours_of(node))
        return list(self._nodes.values())

    def link_rtts(self) -> dict[str, float]:
        """Neighbour -> the smoothed round trip (seconds) of its acks to this node's direct
        SWIM probes, which travel over the link itself (`SwimNode.member_rtt`): a measure
        that costs nothing extra, as every neighbour is probed anyway. Neighbours not yet
        probed are absent."""
        rtts = {}
        for neighbour in self._transport.neighbours():
            rtt = self.core.member_rtt(neighbour)
            if rtt is not None:
                rtts[neighbour] = rtt
        return rtts

    def stats_dict(self) -> dict[str, Any]:
        core = self.core.stats
        return {
            "protocol": "swim",
            "incarnation": self.core.own_incarnation,
            "localHealth": self.core.local_health,
            "roundTripTimeout": round(self.core.round_trip_timeout, 4),
            "starved": self.starved,
            "grace": self.core_grace,
            "messagesSent": sum(core.sent.values()),
            "messagesReceived": sum(core.received.values()),
            "sent": dict(core.sent),
            "received": dict(core.received),
            "probes": core.probes,
            "probesFailed": core.probes_failed,
            "indirectProbes": core.indirect_probes,
            "suspicions": core.suspicions,
            "refutations": core.refutations,
            "deaths": core.deaths,
            "stalls": core.stalls,
            "verdictsHeld": core.verdicts_held,
            "dropped": dict(core.dropped),
            **{_camel(f.name): getattr(self.stats, f.name) for f in dataclasses.fields(self.stats)},
            "checking": len(self._checking),
            "topology": self.topology.stats(),
        }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
