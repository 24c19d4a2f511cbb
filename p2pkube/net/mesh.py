"""The mesh: which neighbours a node links to, how links are negotiated, and relaying.

A node keeps about ``max_peers`` (+ jitter) direct links. New links are negotiated with an
offer/answer exchange carried either by the signaling server (when both ends are present there)
or, when it is not, as ROUTE frames through links already open: so the cluster keeps linking up
while the signaling server is down. Glare (both ends dialing each other at once) is settled by
node id: the dial from the smaller id wins. A node that is known (from signaling or
membership) but not reachable through the mesh is dialed even at full degree, which heals split
meshes.

ROUTE frames also carry messages for other layers (rpc): ``send_routed`` hands one to the
neighbour on the path toward any node (the node itself when linked, else the next hop of a
shortest path over the neighbour lists in the members' signed records: membership's
``route_hint``) and never floods; with no path it fails at once. Routed messages
addressed to this node that are not signals go to ``on_routed``.

Every ROUTE is signed end to end by its source (``src``) with its node key
(:mod:`p2pkube.net.route`: the envelope and what its signature covers). Relays forward
without checking; the destination checks before anything else looks at the message, with
the source's key from the link handshake (a neighbour) or from its verified member record
(``public_key_of``), and drops messages from sources it has no key for.
So a member cannot speak for another node, nor make up sources to get around the per-source
limits of rpc. Duplicates are recognised by id *and* signature, so a forged copy that arrives
first cannot get the real message dropped as a duplicate.

The mesh is the ``Transport`` of both nodes: what carries a link (aiortc natively, the page's
RTCPeerConnection in a browser tab) comes from ``link_factory``, how the signaling WebSocket
opens from ``connect``, and how a neighbour's signature is checked from ``check_signature``.
Each node passes its platform's (``p2pkube.agent``, ``p2pkube.browser.main``); this module
imports none, so it loads in Pyodide.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any

from p2pkube.backoff import Backoff
from p2pkube.net.frames import Frame, FrameError, FrameType, unpack
from p2pkube.net.handshake import Handshake
from p2pkube.net.jointoken import link_key
from p2pkube.net.keys import NodeKey, SignatureCheck
from p2pkube.net.linkbase import LinkBase, LinkFactory, LinkState
from p2pkube.net.route import route_transcript, seal_route
from p2pkube.net.settings import TransportSettings
from p2pkube.net.signaling_client import PeerInfo, SignalingClient
from p2pkube.net.signed import LogThrottle, Signatures
from p2pkube.net.transport import SIGNAL_KINDS
from p2pkube.net.websocket import Connect
from p2pkube.ticker import sleep_to_beat

log = logging.getLogger(__name__)

_SEEN_ROUTES = 4096
"""How many ROUTE messages (id and signature) are remembered to drop duplicates of flooded
messages."""


@dataclass
class _Redial:
    """When a node may be dialed again, and the back-off that grows while dialing it fails."""

    backoff: Backoff
    next_try: float


class Mesh:
    """The transport: direct links to a bounded set of neighbours, and relaying."""

    def __init__(
        self,
        *,
        identity: NodeKey,
        name: str,
        kind: str,
        cluster: str,
        token: str,
        signaling_url: str | None,
        settings: TransportSettings | None = None,
        link_factory: LinkFactory,
        connect: Connect,
        check_signature: SignatureCheck,
    ) -> None:
        """The last three are the platform's: what carries a link, how the signaling
        WebSocket opens, how an Ed25519 signature is checked."""
        self.node_id = identity.node_id
        self.settings = settings or TransportSettings()
        self._link_factory = link_factory
        self._check_signature = check_signature
        self.signatures = Signatures(
            identity,
            cluster,
            check_signature,
            max_queued=self.settings.max_signature_checks,
            max_queued_per_neighbour=self.settings.max_signature_checks_per_neighbour,
        )
        """Signs this node's ROUTEs (and, shared with membership, its member records) and
        checks others', bounded."""
        self.target_degree = self.settings.max_peers + random.randint(
            0, max(0, self.settings.max_peers_jitter)
        )
        self._identity = identity
        self._name = name
        self._kind = kind
        self._cluster = cluster
        self._link_key = link_key(token)  # what links need of the token; the token is not kept
        self._links: dict[str, LinkBase] = {}
        self._pending: dict[str, LinkBase] = {}
        self._candidates: dict[str, float] = {}  # node id -> last time it was known to exist
        self._redials: dict[str, _Redial] = {}
        self._banned: dict[str, float] = {}
        self.blocked: frozenset[str] = frozenset()
        """Node ids this node refuses to link to (fault injection: a partition, see block())."""
        self._seen_routes: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._outbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(
            self.settings.max_queued_routes
        )
        """Routed messages waiting to be signed and sent (signing is async)."""
        self._sender: asyncio.Task[None] | None = None
        self._warn = LogThrottle(log, self.settings.drop_log_interval)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._maintainer: asyncio.Task[None] | None = None
        self._closed = False
        self.negotiated_via_mesh = 0
        """Offers/answers/byes this node sent as ROUTE frames (signaling was not usable)."""
        self.routed_sent = 0
        """Routed messages (not signals) this node originated and handed to a link."""
        self.routed_relayed = 0
        """Routed messages for other nodes passed on toward them."""
        self.routed_no_path = 0
        """Routed messages dropped here because no path to their destination was known."""
        self.routed_malformed = 0
        """Routed messages for us that ``on_routed`` rejected as invalid protocol."""
        self.routed_forged = 0
        """Routed messages for us whose signature did not verify (dropped)."""
        self.routed_unknown_source = 0
        """Routed messages for us from a node we have no verified key for (dropped)."""
        self.routed_unchecked = 0
        """Routed messages dropped unsent or unchecked: a queue was full."""
        self.on_link_up: Callable[[str], None] = lambda node: None
        self.on_link_down: Callable[[str], None] = lambda node: None
        self.on_frame: Callable[[str, Frame], None] = lambda node, frame: None
        self.on_routed: Callable[[str, dict[str, Any]], None] = lambda node, data: None
        self.route_hint: Callable[[str], str | None] = lambda node: None
        self.public_key_of: Callable[[str], bytes | None] = lambda node: None
        """Set by membership: a node's public key from its verified member record."""
        self.reachable: Callable[[str], bool] = lambda node: node in self._links
        """Set by membership: True when the node is live and a route toward it is known."""
        self.signaling: SignalingClient | None = None
        if signaling_url:
            self.signaling = SignalingClient(
                signaling_url,
                token,
                identity,
                name,
                kind,
                on_signal=self._on_signaling_signal,
                on_peer_joined=self._on_signaling_peer,
                on_peer_left=lambda peer: None,
                connect=connect,
            )

    # -- public interface ----------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to signaling (raises SignalingRejected on a bad token) and start dialing."""
        if self.signaling is not None:
            await self.signaling.start()
        self._maintainer = asyncio.get_running_loop().create_task(self._maintain())

    async def close(self) -> None:
        """Say goodbye to every neighbour, then stop everything this mesh started."""
        self._closed = True
        if self._maintainer is not None:
            self._maintainer.cancel()
        if self._sender is not None:
            self._sender.cancel()
        for task in list(self._tasks):
            task.cancel()
        links = list(self._links.values()) + list(self._pending.values())
        if links:
            await asyncio.gather(*(link.close("agent leaving") for link in links))
        if self.signaling is not None:
            await self.signaling.close()
        for owned in [self._maintainer, self._sender, *self._tasks]:
            if owned is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    async with asyncio.timeout(5):  # not wait_for: it can drop a cancel (3.11)
                        await owned
        await self.signatures.close()

    def neighbours(self) -> list[str]:
        return list(self._links)

    def queued_bytes(self) -> int:
        return sum(link.buffered_amount for link in self._links.values())

    def block(self, node_ids: Collection[str]) -> None:
        """Cut this node off from ``node_ids``: close the links to them, refuse theirs, dial
        none. Done on both sides of a set of nodes, it is a partition (tests, chaos runs, a
        user rehearsing one); ``block(())`` heals it and links re-form on their own."""
        released = self.blocked - frozenset(node_ids)
        self.blocked = frozenset(node_ids)
        for node in released:
            self._redials.pop(node, None)  # healed: dial them again at once
        for node in self.blocked:
            for links in (self._links, self._pending):
                link = links.get(node)
                if link is not None:
                    link.close_soon("blocked (partition)", notify=False)

    def link(self, node_id: str) -> LinkBase | None:
        return self._links.get(node_id)

    def send(self, node_id: str, frame_type: FrameType, body: Any) -> bool:
        link = self._links.get(node_id)
        return link.send(frame_type, body) if link else False

    def broadcast(self, frame_type: FrameType, body: Any, exclude: Collection[str] = ()) -> int:
        """Send to every neighbour not in ``exclude``; returns how many links took it."""
        return sum(
            link.send(frame_type, body)
            for node, link in list(self._links.items())
            if node not in exclude
        )

    def send_routed(self, node_id: str, data: dict[str, Any]) -> bool:
        """Send a routed message (see :class:`RoutedTransport`); False when there is no path
        (or ``transport.max_queued_routes`` wait to be signed). It is signed, then sent, by a
        task of the mesh, in the order of the calls."""
        if self._closed or node_id == self.node_id:
            return False
        if self._next_hop(node_id, came_from=None) is None:
            self.routed_no_path += 1
            return False
        if self._outbox.full():
            self.routed_unchecked += 1
            self._warn.warning("outbox", "routed message for %s dropped: too many to sign", node_id)
            return False
        self._outbox.put_nowait((node_id, data))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_outbox())
        return True

    async def _send_outbox(self) -> None:
        while True:
            dst, data = await self._outbox.get()
            try:
                sent = await self._originate(dst, data, flood=False)
            except Exception:  # unencodable data (a bug above), a failed WebCrypto call
                log.exception("signing a routed message for %s failed", dst)
                continue
            if sent:
                self.routed_sent += 1
            else:
                self.routed_no_path += 1

    async def _originate(self, dst: str, data: dict[str, Any], *, flood: bool) -> bool:
        """Seal ``data`` into a ROUTE from this node to ``dst``, remember it (its echoes are
        duplicates) and hand it to the next hop (or, ``flood``, every neighbour when no hop
        is known); False when no link took it."""
        route = await seal_route(
            self.signatures, dst, data, ttl=self.settings.route_ttl, flood=flood
        )
        self._remember_route((route["id"], route["sig"]))
        return self._forward_route(route, came_from=None, flood=flood)

    async def wait_writable(self, node_id: str, limit: int) -> bool:
        link = self._next_hop(node_id, came_from=None)
        return False if link is None else await link.wait_buffered(limit)

    def add_candidate(self, node_id: str) -> None:
        """Note a node that exists (a member, or seen on signaling): a dial target."""
        if node_id != self.node_id:
            self._candidates[node_id] = time.monotonic()

    def forget_candidate(self, node_id: str) -> None:
        self._candidates.pop(node_id, None)

    # -- dialing -------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _can_dial(self, node_id: str, now: float) -> bool:
        if node_id in self._links or node_id in self._pending or node_id == self.node_id:
            return False
        if node_id in self.blocked:
            return False
        if self._banned.get(node_id, 0) > now:
            return False
        redial = self._redials.get(node_id)
        return redial is None or redial.next_try <= now

    def _path_exists(self, node_id: str) -> bool:
        """Whether an offer can reach ``node_id``: it is on signaling, or membership knows a
        route toward it through some neighbour (then ROUTE frames can follow it there and
        back)."""
        signaling = self.signaling
        if signaling is not None and signaling.connected and node_id in signaling.peers:
            return True
        return self.route_hint(node_id) is not None

    async def _maintain(self) -> None:
        settings = self.settings
        while not self._closed:
            await sleep_to_beat(settings.maintain_interval)
            try:
                self._dial_some(time.monotonic())
            except Exception:
                log.exception("mesh maintenance failed")

    def _dial_some(self, now: float) -> None:
        if self.signaling is not None:
            for peer in self.signaling.peers:
                self.add_candidate(peer)
        candidates = [
            n for n in self._candidates if self._can_dial(n, now) and self._path_exists(n)
        ]
        random.shuffle(candidates)
        hard_limit = self.target_degree + self.settings.inbound_slack
        degree = len(self._links) + len(self._pending)
        # Nodes we know of but cannot hear through the mesh come first: a link to one of them
        # joins two parts of a split mesh, so it is worth one link beyond the target.
        unreachable = [n for n in candidates if not self.reachable(n)]
        for node in unreachable[: max(0, min(1, hard_limit - degree))]:
            self._dial(node)
            degree += 1
        for node in candidates:
            if degree >= self.target_degree:
                break
            if node in self._pending:
                continue
            self._dial(node)
            degree += 1

    def _new_link(self, expected: str, session: str, initiator: bool) -> LinkBase:
        handshake = Handshake(
            self._identity,
            self._name,
            self._kind,
            self._cluster,
            self._link_key,
            check_signature=self._check_signature,
        )
        return self._link_factory(
            expected_node=expected,
            session=session,
            initiator=initiator,
            handshake=handshake,
            settings=self.settings,
            on_established=self._on_established,
            on_frame=self._on_link_frame,
            on_closed=self._on_link_closed,
        )

    def _dial(self, node_id: str) -> None:
        link = self._new_link(node_id, secrets.token_hex(8), initiator=True)
        self._pending[node_id] = link
        self._spawn(self._offer(node_id, link))

    async def _offer(self, node_id: str, link: LinkBase) -> None:
        try:
            sdp = await link.create_offer()
            data = {"kind": "offer", "sdp": sdp, "session": link.session}
            if not await self._send_signal(node_id, data):
                await link.close("no path to send the offer", notify=False)
        except Exception as exc:
            log.warning("offer to %s failed: %s", node_id, exc)
            await link.close(f"offer failed: {exc}", notify=False)

    async def _send_signal(self, node_id: str, data: dict[str, Any]) -> bool:
        """Send an offer/answer/bye by signaling when possible, else as ROUTE through the mesh."""
        signaling = self.signaling
        if signaling is not None and signaling.connected and node_id in signaling.peers:
            if await signaling.send_signal(node_id, data):
                return True
        if not self._links or not await self._originate(node_id, data, flood=True):
            return False
        self.negotiated_via_mesh += 1
        return True

    def _next_hop(self, dst: str, came_from: str | None) -> LinkBase | None:
        """The link toward ``dst``: to it directly, else to the next hop membership's routes
        give (never back to where the message came from)."""
        link = self._links.get(dst)
        if link is not None:
            return link
        hop = self.route_hint(dst)
        if hop is not None and hop != came_from:
            return self._links.get(hop)
        return None

    def _forward_route(self, route: dict[str, Any], came_from: str | None, flood: bool) -> bool:
        link = self._next_hop(route["dst"], came_from)
        if link is not None:
            return link.send(FrameType.ROUTE, route)
        if not flood:
            return False
        return self.broadcast(FrameType.ROUTE, route, exclude=(came_from,) if came_from else ()) > 0

    def _remember_route(self, key: tuple[str, bytes]) -> bool:
        """Record a ROUTE's (id, signature); False when it was seen before (a duplicate). A
        copy with the same id and another signature is another message: a forgery cannot
        get the real one dropped as its duplicate."""
        if key in self._seen_routes:
            return False
        self._seen_routes[key] = None
        if len(self._seen_routes) > _SEEN_ROUTES:
            self._seen_routes.popitem(last=False)
        return True

    # -- incoming signals ----------------------------------------------------------------------
    def _on_signaling_peer(self, peer: PeerInfo) -> None:
        """A node (re)joined signaling. A dial of ours begun before we learned of this
        session sent its offer to the node's old session, or to none: it will never be
        answered, and while it waits it refuses the node's own offers (glare). Give it up and
        dial again at the next maintenance round, so a node woken from a long freeze is
        linked again at once. A dial begun after (the event reaches us a little after the
        peer list has it) went to this session and is kept."""
        stale = self._pending.get(peer.peer)
        if stale is not None and stale.initiator and stale.opened < peer.seen:
            self._spawn(self._give_up_dial(peer.peer, stale))
        self.add_candidate(peer.peer)

    async def _give_up_dial(self, node: str, link: LinkBase) -> None:
        if self._pending.get(node) is not link:
            return  # answered or closed meanwhile
        reason = "the node joined signaling again: our offer went to its old session"
        await link.close(reason, notify=False)
        self._redials.pop(node, None)

    def _on_signaling_signal(self, sender: str, data: dict[str, Any]) -> None:
        self._handle_signal(sender, data)

    def _handle_signal(self, sender: str, data: dict[str, Any]) -> None:
        if self._closed or sender == self.node_id:
            return
        kind, session = data.get("kind"), data.get("session")
        if not isinstance(session, str):
            log.warning("signal from %s without a session id dropped", sender)
            return
        if kind == "offer" and isinstance(data.get("sdp"), str):
            self._spawn(self._answer(sender, session, data["sdp"]))
        elif kind == "answer" and isinstance(data.get("sdp"), str):
            link = self._pending.get(sender)
            if link is not None and link.session == session and link.initiator:
                self._spawn(self._apply_answer(link, data["sdp"]))
        elif kind == "bye":
            link = self._pending.get(sender)
            if link is not None and link.session == session:
                link.close_soon(f"refused: {data.get('reason', '')}", notify=False)
        else:
            log.warning("malformed signal from %s dropped: kind=%r", sender, kind)

    async def _apply_answer(self, link: LinkBase, sdp: str) -> None:
        try:
            await link.accept_answer(sdp)
        except Exception as exc:
            await link.close(f"bad answer: {exc}", notify=False)

    def _refusal(self, sender: str, now: float) -> str | None:
        if self._banned.get(sender, 0) > now:
            return "banned"
        if sender in self.blocked:
            return "blocked"
        pending = self._pending.get(sender)
        if pending is not None and pending.initiator and self.node_id < sender:
            return "glare"  # our own dial to them wins; they will answer it
        degree = len(self._links) + len(self._pending)
        if sender not in self._links and degree >= self.target_degree + self.settings.inbound_slack:
            return "busy"
        return None

    async def _answer(self, sender: str, session: str, sdp: str) -> None:
        reason = self._refusal(sender, time.monotonic())
        if reason is not None:
            await self._send_signal(sender, {"kind": "bye", "session": session, "reason": reason})
            return
        pending = self._pending.pop(sender, None)
        if pending is not None:
            await pending.close("superseded by the neighbour's dial", notify=False)
        link = self._new_link(sender, session, initiator=False)
        self._pending[sender] = link
        try:
            answer = await link.accept_offer(sdp)
            if not await self._send_signal(
                sender, {"kind": "answer", "sdp": answer, "session": session}
            ):
                await link.close("no path to send the answer", notify=False)
        except Exception as exc:
            log.warning("answering %s failed: %s", sender, exc)
            await link.close(f"answer failed: {exc}", notify=False)

    # -- link events ---------------------------------------------------------------------------
    def _on_established(self, link: LinkBase) -> None:
        node = link.remote_id
        assert node is not None
        if node in self.blocked:
            link.close_soon("blocked (partition)", notify=False)
            return
        if self._pending.get(node) is link:
            del self._pending[node]
        old = self._links.get(node)
        self._links[node] = link
        self._redials.pop(node, None)
        self.add_candidate(node)
        if old is not None and old is not link:
            # The neighbour dialed again (it restarted, or thinks our old link is dead).
            old.close_soon("replaced by a new link", notify=False)
        log.info(
            "linked to %s (%s), %d neighbours",
            link.remote.name if link.remote else node,
            node,
            len(self._links),
        )
        self.on_link_up(node)

    def _on_link_closed(self, link: LinkBase) -> None:
        node = link.remote_id
        if node is None:
            return
        now = time.monotonic()
        if self._pending.get(node) is link:
            del self._pending[node]
            redial = self._redials.get(node) or self._new_redial(node)
            redial.next_try = now + redial.backoff.next()
        if link.violation:
            self._banned[node] = now + self.settings.ban_seconds
        if self._links.get(node) is link:
            del self._links[node]
            # A lost link: wait exactly the first delay, then back off afresh if redials fail.
            redial = self._new_redial(node)
            redial.next_try = now + redial.backoff.next(jitter=False)
            self.on_link_down(node)

    def _new_redial(self, node: str) -> _Redial:
        """A fresh back-off for dialing ``node`` (each wait within ±20 % of its delay)."""
        backoff = Backoff(
            self.settings.reconnect_initial_delay,
            self.settings.reconnect_max_delay,
            spread=(0.8, 1.2),
        )
        redial = self._redials[node] = _Redial(backoff, next_try=0.0)
        return redial

    def _on_link_frame(self, link: LinkBase, frame: Frame) -> None:
        node = link.remote_id
        assert node is not None
        if frame.type is FrameType.ROUTE:
            self._on_route(node, frame.body)
        else:
            self.on_frame(node, frame)

    def _on_route(self, came_from: str, route: dict[str, Any]) -> None:
        key = (route["id"], route["sig"])
        if key in self._seen_routes:
            return  # a duplicate: nothing to check
        if route["dst"] != self.node_id:
            self._remember_route(key)
            self._relay_route(came_from, route)
            return
        src = route["src"]
        public_key = self._public_key(src)
        if public_key is None:
            self.routed_unknown_source += 1
            self._warn.warning(
                "unknown-source",
                "routed message from unknown node %s (via %s) dropped: no verified key for it",
                src,
                came_from,
            )
            return
        message = route_transcript(self._cluster, route)
        done = functools.partial(self._on_route_checked, came_from, route, key)
        if not self.signatures.check(came_from, public_key, route["sig"], message, done):
            self.routed_unchecked += 1
            self._warn.warning(
                "unchecked", "routed message from %s dropped: too many to check", src
            )

    def _public_key(self, node: str) -> bytes | None:
        """A node's key: from the link handshake if it is a neighbour, else from its
        verified member record."""
        link = self._links.get(node)
        remote = link.remote if link is not None else None
        return remote.pub if remote is not None else self.public_key_of(node)

    def _relay_route(self, came_from: str, route: dict[str, Any]) -> None:
        """Pass on a ROUTE for another node (unchecked: its destination checks it)."""
        if route["ttl"] <= 1:
            return
        flood = route.get("flood") is True
        forwarded = self._forward_route({**route, "ttl": route["ttl"] - 1}, came_from, flood)
        if flood:
            return
        if forwarded:
            self.routed_relayed += 1
        else:
            self.routed_no_path += 1
            log.debug(
                "no path toward %s: routed message from %s dropped", route["dst"], route["src"]
            )

    def _on_route_checked(
        self, came_from: str, route: dict[str, Any], key: tuple[str, bytes], valid: bool
    ) -> None:
        """A ROUTE for us, its signature checked: deliver it (once)."""
        src = route["src"]
        if self._closed:
            return
        if not valid:
            self.routed_forged += 1
            if src == came_from:
                self.drop_neighbour(came_from, "its routed message has a bad signature")
                return
            self._warn.warning(
                "forged",
                "routed message claiming to be from %s (via %s) has a bad signature: dropped",
                src,
                came_from,
            )
            return
        if not self._remember_route(key):
            return  # another copy was delivered meanwhile
        try:
            data = unpack(route["data"], self.settings.max_frame_bytes)
            if not isinstance(data, dict):
                raise FrameError("routed data must be a map")
        except FrameError as exc:
            self._invalid_routed(came_from, src, exc)
            return
        if data.get("kind") in SIGNAL_KINDS:
            self._handle_signal(src, data)
        else:
            self._deliver_routed(came_from, src, data)

    def _deliver_routed(self, came_from: str, src: str, data: dict[str, Any]) -> None:
        try:
            self.on_routed(src, data)
        except FrameError as exc:
            self._invalid_routed(came_from, src, exc)
        except Exception:  # a bug in a layer above must not take the link down with it
            log.exception("handling a routed message from %s failed", src)

    def _invalid_routed(self, came_from: str, src: str, exc: FrameError) -> None:
        """A signed routed message for us that is not valid protocol."""
        self.routed_malformed += 1
        if src == came_from:
            # The neighbour itself broke the protocol: drop and ban it.
            self.drop_neighbour(came_from, f"invalid routed message: {exc}")
            return
        # A relay only passed it on; the originator is not ours to drop.
        self._warn.warning(
            "invalid", "invalid routed message from %s (via %s) dropped: %s", src, came_from, exc
        )

    def drop_neighbour(self, node: str, reason: str) -> None:
        """Close the link to a neighbour that broke the protocol in a way found only after
        its frame was handled (e.g. once a signature was checked) and ban it, like any
        violation its link finds itself."""
        link = self._links.get(node)
        if link is None:
            return
        log.warning("dropping peer %s: %s", node, reason)
        link.violation = True
        link.close_soon(f"protocol violation: {reason}", notify=False)

    def stats(self) -> dict[str, Any]:
        return {
            "targetDegree": self.target_degree,
            "blocked": sorted(self.blocked),
            "neighbours": [
                {
                    "node": node,
                    "name": link.remote.name if link.remote else "",
                    "kind": link.remote.kind if link.remote else "",
                    "bytesSent": link.bytes_sent,
                    "bytesReceived": link.bytes_received,
                    "framesSent": link.frames_sent,
                    "framesReceived": link.frames_received,
                    "byType": {
                        "bytesSent": dict(link.bytes_sent_by_type),
                        "framesSent": dict(link.frames_sent_by_type),
                        "framesReceived": dict(link.frames_received_by_type),
                    },
                    "initiator": link.initiator,
                    "candidatePair": link.selected_pair(),
                    "carrier": link.carrier_counters(),
                }
                for node, link in self._links.items()
                if link.state is LinkState.ESTABLISHED
            ],
            "pending": len(self._pending),
            "negotiatedViaMesh": self.negotiated_via_mesh,
            "routedSent": self.routed_sent,
            "routedRelayed": self.routed_relayed,
            "routedNoPath": self.routed_no_path,
            "routedMalformed": self.routed_malformed,
            "routedForged": self.routed_forged,
            "routedUnknownSource": self.routed_unknown_source,
            "routedUnchecked": self.routed_unchecked,
            "signatures": self.signatures.stats(),
            "signalingConnected": bool(self.signaling and self.signaling.connected),
        }
