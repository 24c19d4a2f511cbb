"""Heartbeats and the failure detector.

Liveness is never written into the replicated document (it would grow forever): every agent
floods a small HEARTBEAT frame every ``heartbeat_interval``; each receiver keeps the freshest
``(incarnation, sequence)`` per node, forwards only news (dedup), and remembers through which
neighbour the news came first — the next hop toward that node for routed messages.

A node is NotReady after ``node_timeout`` without news, Ready again on the next heartbeat.
Like memberlist's Lifeguard, a detector that is itself slow must not blame others: the check
loop measures its own event-loop stalls and does not count stalled time against anyone, so an
agent that was frozen or starved does not declare the whole cluster dead when it wakes up.

A node that knows it will be slow says so: its heartbeats carry ``grace``, seconds the others
add to ``node_timeout`` for it (at most ``max_grace``). A browser tab sets it while hidden, when
the browser runs its timers at most once a second (docs/guarantees.md, "Browser nodes").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from p2pkube.net.frames import FrameType
from p2pkube.net.transport import Transport
from p2pkube.ticker import Ticker

log = logging.getLogger(__name__)


@dataclass
class MembershipSettings:
    heartbeat_interval: float = 1.0
    """Seconds between two heartbeats of this agent (each crosses every link). Each data-channel
    message costs aiortc ~0.5 ms of CPU (DTLS and SCTP in Python, plus a SACK); at 1 s an idle
    agent with 4 links stays under 1 % of a core, at 0.5 s it used 1.5 % (bench/bench_idle.py).
    With ``node_timeout`` 2.5 s a live node may still lose one beat and be late with the next."""
    node_timeout: float = 2.5
    """A node whose heartbeats stopped for this long is NotReady (target: under 3 s on a LAN)."""
    heartbeat_ttl: int = 16
    """Hops a heartbeat may be relayed; larger than any path in a partial mesh of this size."""
    check_interval: float = 0.1
    """How often timeouts are evaluated and the local event-loop lag is measured."""
    stall_threshold: float = 0.05
    """Event-loop stalls longer than this are not counted against other nodes (Lifeguard)."""
    max_grace: float = 30.0
    """Most extra seconds a node may ask for in its heartbeats (``grace``): a hidden browser
    tab asks for ``browser.hidden_grace``; nothing makes a node wait longer for anyone."""


def utc_now() -> str:
    """An RFC 3339 timestamp like Kubernetes prints (second precision, Z)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 ``...Z`` timestamp (None if absent/invalid)."""
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


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
    """The last heartbeat received (passed on to a new neighbour, see ``link_up``)."""
    grace: float = 0.0
    """Seconds the node asked to be allowed beyond ``node_timeout`` (its heartbeat's grace)."""


class Membership:
    """Sends this node's heartbeats, relays others', and decides who is Ready."""

    def __init__(
        self,
        node_id: str,
        name: str,
        transport: Transport,
        settings: MembershipSettings | None = None,
        on_change: Callable[[NodeLiveness], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.name = name
        self.settings = settings or MembershipSettings()
        self.incarnation = time.time_ns() // 1_000_000
        self.started = time.monotonic()
        self._ticker = Ticker(self.settings.check_interval, self.settings.stall_threshold)
        self._transport = transport
        self._seq = 0
        self._nodes: dict[str, NodeLiveness] = {}
        self._on_change = on_change or (lambda liveness: None)
        self._tasks: list[asyncio.Task[None]] = []
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
        at once. A closing browser tab can still do this, though it can await nothing."""
        self._send_heartbeat(leaving=True)

    # -- sending -------------------------------------------------------------------------------
    def _send_heartbeat(self, leaving: bool = False) -> None:
        self._seq += 1
        body: dict[str, Any] = {
            "node": self.node_id,
            "name": self.name,
            "inc": self.incarnation,
            "seq": self._seq,
            "ttl": self.settings.heartbeat_ttl,
            "peers": self._transport.neighbours(),
        }
        if leaving:
            body["leaving"] = True
        if self.grace > 0:
            body["grace"] = float(self.grace)
        self._transport.broadcast(FrameType.HEARTBEAT, body)

    async def _beat(self) -> None:
        while True:
            self._send_heartbeat()
            await asyncio.sleep(self.settings.heartbeat_interval)

    def link_up(self, neighbour: str) -> None:
        """A new link: beat at once (our neighbour list changed) and hand the neighbour the
        last heartbeat of every node we see Ready. Otherwise, after a partition heals, each
        side would see the other NotReady for up to a heartbeat interval after the states
        merged, and its schedulers would act on that (retake leases, evict pods)."""
        self._send_heartbeat()
        for liveness in self._nodes.values():
            body = liveness.body
            if liveness.ready and body is not None and liveness.node != neighbour:
                self._transport.send(
                    neighbour, FrameType.HEARTBEAT, {**body, "ttl": max(1, body["ttl"] - 1)}
                )

    # -- receiving -----------------------------------------------------------------------------
    def handle_heartbeat(self, neighbour: str, body: dict[str, Any]) -> None:
        """Record and relay a heartbeat that arrived from ``neighbour``; drop stale copies."""
        node = body["node"]
        if node == self.node_id:
            return
        known = self._nodes.get(node)
        version = (body["inc"], body["seq"])
        if known is not None and version <= (known.incarnation, known.seq):
            return
        peers = [p for p in body["peers"] if isinstance(p, str)][:1024]
        if known is None:
            known = NodeLiveness(
                node=node,
                name=body["name"],
                incarnation=body["inc"],
                seq=body["seq"],
                last_seen=time.monotonic(),
                last_heartbeat=utc_now(),
                via=neighbour,
                peers=peers,
                last_transition=utc_now(),
            )
            self._nodes[node] = known
            self._on_change(known)
        known.name, known.incarnation, known.seq = body["name"], body["inc"], body["seq"]
        known.last_seen, known.last_heartbeat, known.via, known.peers = (
            time.monotonic(),
            utc_now(),
            neighbour,
            peers,
        )
        known.body = body
        grace = body.get("grace", 0.0)
        valid = isinstance(grace, int | float) and not isinstance(grace, bool) and grace > 0
        known.grace = min(float(grace), self.settings.max_grace) if valid else 0.0
        if body.get("leaving") is True:
            self._set_ready(known, False, "AgentLeft")
        else:
            self._set_ready(known, True, "AgentReady")
        if body["ttl"] > 1:
            self._transport.broadcast(
                FrameType.HEARTBEAT, {**body, "ttl": body["ttl"] - 1}, self.relay_exclude(neighbour)
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

    def nodes(self) -> list[NodeLiveness]:
        return list(self._nodes.values())
