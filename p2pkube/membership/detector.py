"""Heartbeats and the failure detector.

Liveness is never written into the replicated document (it would grow forever): every agent
floods a small HEARTBEAT frame every ``heartbeat_interval``; each receiver keeps the freshest
``(incarnation, sequence)`` per node, forwards only news (dedup), and remembers through which
neighbour the news came first — the next hop toward that node for routed messages.

Heartbeats are signed end to end by the node they speak for (``heartbeat.py``), so no member
can declare another dead, gone or alive: a receiver drops what is not news *before* it checks
a signature (a relayed duplicate costs nothing), checks each new heartbeat once, and relays
only what it checked. A heartbeat's incarnation (its sender's start time) may not be ahead of
the receiver's clock by more than ``max_clock_skew``, nor its signing time off by more, so
nobody can make an incarnation so large that the node's next start looks older, nor replay
an old heartbeat later. A node that restarts with a clock behind its previous start sends a
*lower* incarnation: it is taken once the previous one is NotReady (timed out or left).

A node is NotReady after ``node_timeout`` without news, Ready again on the next heartbeat.
Like memberlist's Lifeguard, a detector that is itself slow must not blame others: the check
loop measures its own event-loop stalls and does not count stalled time against anyone, so an
agent that was frozen or starved does not declare the whole cluster dead when it wakes up.

A node that knows it will be slow says so: its heartbeats carry ``grace``, seconds the others
add to ``node_timeout`` for it (at most ``max_grace``). A browser tab sets it while hidden, when
the browser runs its timers at most once a second (docs/guarantees.md, "Browser nodes").

A node that leaves says so (``leaving``) in a heartbeat signed ahead of time, so that a closing
browser tab, which can await nothing any more, can still send it (``say_leaving``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2pkube.membership import heartbeat
from p2pkube.membership.heartbeat import Heartbeat
from p2pkube.membership.settings import MembershipSettings
from p2pkube.model.timestamps import utc_now
from p2pkube.net.frames import FrameType
from p2pkube.net.rpc import counters
from p2pkube.net.signed import LogThrottle, Signatures
from p2pkube.net.transport import Transport
from p2pkube.ticker import Ticker

log = logging.getLogger(__name__)

_PAST_DUE = 0.001
"""A timeout check wakes this long after the timeout falls due (it is strictly "more than")."""
FAREWELL_SEQ_GAP = 1 << 20
"""The pre-signed farewell's ``seq`` is this far above the last beat's, so it is still newer
than every beat sent until it is signed again (at least every ``max_clock_skew / 4``)."""


@dataclass
class MembershipStats:
    """Counters shown in ``p2pkube status`` under ``membership``."""

    heartbeats_accepted: int = 0
    heartbeats_forged: int = 0
    """Heartbeats whose signature did not verify (dropped)."""
    heartbeats_implausible: int = 0
    """Heartbeats beyond ``max_clock_skew`` (dropped)."""
    heartbeats_unchecked: int = 0
    """New heartbeats dropped because the signature queue was full."""
    heartbeats_over_limit: int = 0
    """Heartbeats of a new node dropped because ``max_nodes`` are known."""


@dataclass
class NodeLiveness:
    """What this agent knows of one other node's liveness."""

    node: str
    name: str
    incarnation: int
    seq: int
    last_seen: float
    """Monotonic time of the last news, shifted forward by our own stalls."""
    last_heartbeat: str
    via: str | None
    peers: list[str] = field(default_factory=list)
    ready: bool = True
    reason: str = "AgentReady"
    last_transition: str = ""
    transitions: int = 0
    body: dict[str, Any] | None = None
    """The last heartbeat received, as signed (passed on to a new neighbour, see ``link_up``)."""
    grace: float = 0.0
    """Seconds the node asked to be allowed beyond ``node_timeout`` (its heartbeat's grace)."""
    pub: bytes = b""
    """The node's public key, from its verified heartbeats (checks its routed messages)."""


class Membership:
    """Sends this node's heartbeats, relays others', and decides who is Ready."""

    def __init__(
        self,
        signatures: Signatures,
        name: str,
        transport: Transport,
        settings: MembershipSettings | None = None,
        on_change: Callable[[NodeLiveness], None] | None = None,
        *,
        on_violation: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``signatures`` signs this node's heartbeats and checks others'; ``on_violation``
        (neighbour, reason) drops a neighbour that sent what no honest node sends, found only
        once its signature was checked; ``clock`` is the wall clock (seconds since the epoch)
        that incarnations and signing times come from and are checked against."""
        self.node_id = signatures.node_id
        self.name = name
        self.settings = settings or MembershipSettings()
        self.stats = MembershipStats()
        self._signatures = signatures
        self._clock = clock
        self.incarnation = int(clock() * 1000)
        self.started = time.monotonic()
        self._ticker = Ticker(self.settings.check_interval, self.settings.stall_threshold)
        self._transport = transport
        self._seq = 0
        self._nodes: dict[str, NodeLiveness] = {}
        self._checking: set[tuple[bytes, bytes]] = set()
        """(signature, payload) of the heartbeats waiting for their check: a second copy
        that arrives meanwhile is not checked again."""
        self._on_change = on_change or (lambda liveness: None)
        self._on_violation = on_violation or (lambda neighbour, reason: None)
        self._warn = LogThrottle(log, self.settings.drop_log_interval)
        self._tasks: list[asyncio.Task[None]] = []
        self._beat_now = asyncio.Event()
        self._own: dict[str, Any] | None = None
        """This node's latest heartbeat as sent (handed to a new neighbour at once)."""
        self._farewell: dict[str, Any] | None = None
        self._farewell_seq = 0
        self._farewell_signed = 0.0
        self.grace = 0.0
        """Seconds this node asks the others to wait beyond their ``node_timeout`` before
        they call it NotReady (sent with every heartbeat while non-zero)."""

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._beat()), loop.create_task(self._check())]

    async def close(self, leaving: bool = True) -> None:
        """Stop; with ``leaving``, tell everyone first so they mark us NotReady at once."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if leaving:
            self.say_leaving()

    def say_leaving(self) -> None:
        """Tell everyone now (synchronously) that this node is leaving: they mark it NotReady
        at once. A closing browser tab can still do this, though it can await nothing: the
        farewell was signed ahead of time. Beats sent afterwards (a tab restored from the
        back-forward cache) continue above its ``seq``, so they count again."""
        if self._farewell is None:
            return
        self._seq = max(self._seq, self._farewell_seq)
        self._transport.broadcast(FrameType.HEARTBEAT, self._farewell)

    # -- sending -------------------------------------------------------------------------------
    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _payload(self, seq: int, leaving: bool = False) -> dict[str, Any]:
        return heartbeat.payload(
            self.node_id,
            self._signatures.public_key,
            self.name,
            self.incarnation,
            seq,
            self._now_ms(),
            self._transport.neighbours(),
            leaving=leaving,
            grace=self.grace,
        )

    async def _send_heartbeat(self) -> None:
        self._seq += 1
        body = await heartbeat.seal(
            self._signatures, self._payload(self._seq), self.settings.heartbeat_ttl
        )
        self._own = body
        self._transport.broadcast(FrameType.HEARTBEAT, body)

    async def _sign_farewell(self) -> None:
        """Keep a signed ``leaving`` heartbeat at hand: signed again when its time would
        soon be too old for the receivers' ``max_clock_skew``, or when beats caught up with
        its ``seq`` (about one signature per 15 s on top of one per beat)."""
        age = time.monotonic() - self._farewell_signed
        if (
            self._farewell is not None
            and self._seq < self._farewell_seq
            and age < self.settings.max_clock_skew / 4
        ):
            return
        seq = self._seq + FAREWELL_SEQ_GAP
        self._farewell = await heartbeat.seal(
            self._signatures, self._payload(seq, leaving=True), self.settings.heartbeat_ttl
        )
        self._farewell_seq, self._farewell_signed = seq, time.monotonic()

    async def _beat(self) -> None:
        while True:
            try:
                await self._send_heartbeat()
                await self._sign_farewell()
            except Exception:  # a failed WebCrypto call: try again next beat
                log.exception("signing this node's heartbeat failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat_interval):
                    await self._beat_now.wait()
            self._beat_now.clear()

    def link_up(self, neighbour: str) -> None:
        """A new link: hand the neighbour our latest heartbeat and the last heartbeat of
        every node we see Ready, and beat at once (our neighbour list changed). Otherwise,
        after a partition heals, each side would see the other NotReady for up to a heartbeat
        interval after the states merged, and its schedulers would act on that (retake
        leases, evict pods)."""
        if self._own is not None:
            self._transport.send(neighbour, FrameType.HEARTBEAT, self._own)
        for liveness in self._nodes.values():
            body = liveness.body
            if liveness.ready and body is not None and liveness.node != neighbour:
                self._transport.send(neighbour, FrameType.HEARTBEAT, _hop(body))
        self._beat_now.set()

    def link_down(self, neighbour: str) -> None:
        """A link closed: nothing to do (the neighbour's heartbeats say who it links to)."""

    # -- receiving -----------------------------------------------------------------------------
    def handle_heartbeat(self, neighbour: str, body: dict[str, Any]) -> None:
        """A heartbeat that arrived from ``neighbour``: drop it unless it is news, check its
        signature (queued), then record and relay it. Raises FrameError for one that no
        honest node signs or relays (the link drops the neighbour).

        A neighbour's own heartbeat is taken without a check: the link's handshake proved who
        the neighbour is. It is checked only when it is to be passed on (in a full mesh it
        never is), so that what travels further is signed: an idle agent checks what it
        relays and what is relayed to it, nothing else."""
        beat = heartbeat.parse(body)
        if beat.node == self.node_id:
            return
        known = self._nodes.get(beat.node)
        if not self._is_news(beat, known):
            return  # a relayed duplicate: no signature check
        if not self._admissible(neighbour, beat, known):
            return
        if beat.node == neighbour:
            self._accept(neighbour, beat, known)
            if self._relay_targets(neighbour, beat):
                self._verify(neighbour, beat, self._relay)
            return
        self._verify(neighbour, beat, self._checked)

    def _admissible(self, neighbour: str, beat: Heartbeat, known: NodeLiveness | None) -> bool:
        """False (logged) for a heartbeat whose clock cannot be believed, or that would make
        the table hold more than ``max_nodes``."""
        problem = self._implausible(beat)
        if problem is not None:
            self.stats.heartbeats_implausible += 1
            self._warn.warning(
                "implausible",
                "heartbeat of %s (%s) via %s dropped: %s",
                beat.name,
                beat.node,
                neighbour,
                problem,
            )
            return False
        if known is None and len(self._nodes) >= self.settings.max_nodes:
            self.stats.heartbeats_over_limit += 1
            self._warn.warning(
                "over-limit",
                "heartbeat of a new node %s via %s dropped: membership.max_nodes (%d) known",
                beat.node,
                neighbour,
                self.settings.max_nodes,
            )
            return False
        return True

    def _verify(
        self, neighbour: str, beat: Heartbeat, then: Callable[[str, Heartbeat], None]
    ) -> None:
        """Queue the check of ``beat``'s signature; ``then(neighbour, beat)`` if it holds."""
        body = beat.body
        key = (body["sig"], body["hb"])
        if key in self._checking:
            return  # the same heartbeat is being checked already
        message = heartbeat.signed_bytes(self._signatures.cluster, body)
        done = functools.partial(self._checked_signature, key, neighbour, beat, then)
        if not self._signatures.check(neighbour, beat.pub, body["sig"], message, done):
            self.stats.heartbeats_unchecked += 1
            self._warn.warning(
                "unchecked",
                "heartbeat of %s via %s dropped: too many to check",
                beat.node,
                neighbour,
            )
            return
        self._checking.add(key)

    def _is_news(self, beat: Heartbeat, known: NodeLiveness | None) -> bool:
        if known is None or beat.version > (known.incarnation, known.seq):
            return True
        # A restart with a clock behind the previous start: a lower incarnation, taken once
        # the one we knew is gone. It is signed by the node and recent (``_implausible``),
        # so it is the node itself speaking now, not a replay of an older run.
        return beat.inc < known.incarnation and not known.ready

    def _implausible(self, beat: Heartbeat) -> str | None:
        """Why a heartbeat's clock cannot be believed (None: it can)."""
        now, skew = self._now_ms(), self.settings.max_clock_skew
        if beat.inc > now + skew * 1000:
            ahead = (beat.inc - now) / 1000
            return f"its incarnation is {ahead:.0f}s ahead of our clock (max_clock_skew {skew:g}s)"
        if abs(beat.time - now) > skew * 1000:
            off = (beat.time - now) / 1000
            return f"it was signed {off:+.0f}s from our clock (max_clock_skew {skew:g}s)"
        return None

    def _checked_signature(
        self,
        key: tuple[bytes, bytes],
        neighbour: str,
        beat: Heartbeat,
        then: Callable[[str, Heartbeat], None],
        valid: bool,
    ) -> None:
        self._checking.discard(key)
        if valid:
            then(neighbour, beat)
            return
        self.stats.heartbeats_forged += 1
        if beat.node == neighbour:
            self._on_violation(neighbour, "its heartbeat has a bad signature")
            return
        # Relays check before they forward, but Ed25519 libraries disagree on a few
        # crafted signatures: a neighbour that passed one on is not blamed for it.
        self._warn.warning(
            "forged",
            "heartbeat for %s (%s) from neighbour %s has a bad signature: dropped",
            beat.name,
            beat.node,
            neighbour,
        )

    def _checked(self, neighbour: str, beat: Heartbeat) -> None:
        """A relayed heartbeat whose signature holds: record it and pass it on."""
        known = self._nodes.get(beat.node)
        if not self._is_news(beat, known):
            return  # another copy was taken meanwhile
        if known is None and len(self._nodes) >= self.settings.max_nodes:
            return
        self._accept(neighbour, beat, known)
        self._relay(neighbour, beat)

    def _accept(self, neighbour: str, beat: Heartbeat, known: NodeLiveness | None) -> None:
        """Record a heartbeat (checked, or its sender's own over its link)."""
        now, stamp = time.monotonic(), utc_now()
        if known is None:
            known = NodeLiveness(
                node=beat.node,
                name=beat.name,
                incarnation=beat.inc,
                seq=beat.seq,
                last_seen=now,
                last_heartbeat=stamp,
                via=neighbour,
                peers=beat.peers,
                last_transition=stamp,
                pub=beat.pub,
            )
            self._nodes[beat.node] = known
            self._on_change(known)
        known.name, known.incarnation, known.seq = beat.name, beat.inc, beat.seq
        known.last_seen, known.last_heartbeat, known.via, known.peers = (
            now,
            stamp,
            neighbour,
            beat.peers,
        )
        known.body, known.pub = beat.body, beat.pub
        known.grace = min(beat.grace, self.settings.max_grace)
        self.stats.heartbeats_accepted += 1
        if beat.leaving:
            self._set_ready(known, False, "AgentLeft")
        else:
            self._set_ready(known, True, "AgentReady")

    def _relay(self, neighbour: str, beat: Heartbeat) -> None:
        """Pass a heartbeat on (its signature verified) to the neighbours that may lack it."""
        if beat.body["ttl"] > 1:
            self._transport.broadcast(
                FrameType.HEARTBEAT, _hop(beat.body), self.relay_exclude(neighbour)
            )

    def _relay_targets(self, neighbour: str, beat: Heartbeat) -> bool:
        """Whether a heartbeat that came from ``neighbour`` is to be passed on to anyone."""
        exclude = self.relay_exclude(neighbour)
        return beat.body["ttl"] > 1 and any(
            node not in exclude for node in self._transport.neighbours()
        )

    def _set_ready(self, liveness: NodeLiveness, ready: bool, reason: str) -> None:
        if liveness.ready == ready and liveness.reason == reason:
            return
        changed = liveness.ready != ready
        liveness.ready, liveness.reason = ready, reason
        if changed:
            liveness.transitions += 1
            liveness.last_transition = utc_now()
            log.info(
                "node %s (%s) is %s: %s",
                liveness.name,
                liveness.node,
                "Ready" if ready else "NotReady",
                reason,
            )
            self._on_change(liveness)

    # -- failure detection ---------------------------------------------------------------------
    async def _check(self) -> None:
        settings = self.settings
        while True:
            self._ticker.interval = self._until_next_check()
            stall = await self._ticker.tick()
            now = time.monotonic()
            if stall:
                # We could not observe anything during the stall: do not count it against others.
                for liveness in self._nodes.values():
                    liveness.last_seen = min(now, liveness.last_seen + stall)
                continue
            for liveness in self._nodes.values():
                timeout = settings.node_timeout + liveness.grace
                if liveness.ready and now - liveness.last_seen > timeout:
                    self._set_ready(liveness, False, "HeartbeatTimeout")

    def _until_next_check(self) -> float:
        """Seconds until the first Ready node's timeout falls due (just after it), at most
        ``check_interval``: the next wake-up both checks it and measures our own lag. Never
        more than half ``node_timeout`` either, so a node heard during the sleep (whose
        timeout falls due ``node_timeout`` later) is due after the wake-up, never before."""
        settings = self.settings
        now = time.monotonic()
        longest = min(settings.check_interval, settings.node_timeout / 2)
        due = min(
            (
                n.last_seen + settings.node_timeout + n.grace
                for n in self._nodes.values()
                if n.ready
            ),
            default=now + longest,
        )
        return min(longest, max(0.0, due - now) + _PAST_DUE)

    @property
    def stalled_seconds(self) -> float:
        """Total event-loop stall time this agent forgave others (visible in status)."""
        return self._ticker.stalled_seconds

    # -- queries -------------------------------------------------------------------------------
    def relay_exclude(self, came_from: str) -> set[str]:
        """Neighbours that need not get a flooded message that arrived from ``came_from``.

        ``came_from`` forwards what it floods to all of its own neighbours, so whoever it is
        linked to (per its latest heartbeat) gets the message from it; relaying to them too only
        doubles the traffic (in a full mesh, N² copies instead of N). By induction back to the
        originator, who sends to all its neighbours, every connected node still receives it; if
        the neighbour list was stale, anti-entropy (state) or the next heartbeat repairs it.
        """
        liveness = self._nodes.get(came_from)
        peers = set(liveness.peers) if liveness is not None else set()
        peers.add(came_from)
        return peers

    def route_hint(self, node: str) -> str | None:
        """The neighbour through which ``node``'s freshest heartbeat arrived."""
        liveness = self._nodes.get(node)
        return liveness.via if liveness is not None and liveness.ready else None

    def is_reachable(self, node: str) -> bool:
        liveness = self._nodes.get(node)
        return liveness is not None and liveness.ready

    def get(self, node: str) -> NodeLiveness | None:
        return self._nodes.get(node)

    def public_key(self, node: str) -> bytes | None:
        """``node``'s public key as its verified heartbeats carry it (None: none seen)."""
        liveness = self._nodes.get(node)
        return liveness.pub if liveness is not None and liveness.pub else None

    def stats_dict(self) -> dict[str, Any]:
        return {**counters(self.stats), "checking": len(self._checking)}

    def nodes(self) -> list[NodeLiveness]:
        return list(self._nodes.values())


def _hop(body: dict[str, Any]) -> dict[str, Any]:
    """A checked heartbeat as relayed: what was signed, one hop fewer (never below 1)."""
    return {"ttl": max(1, body["ttl"] - 1), "hb": body["hb"], "sig": body["sig"]}
