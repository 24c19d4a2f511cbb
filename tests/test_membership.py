"""The failure detector's rules on one agent, fed signed heartbeats by hand (no network).

Keys, signatures and checks are the real ones (``cryptography``); only the transport is a
recorder. The same attacks against real agents are in tests/test_hostile_peer.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack

from p2pkube.membership import heartbeat
from p2pkube.membership.detector import Membership
from p2pkube.membership.settings import MembershipSettings
from p2pkube.net.frames import FrameType
from p2pkube.net.identity import NodeIdentity, verify_signature
from p2pkube.net.signed import Signatures

FAST = MembershipSettings(heartbeat_interval=0.05, node_timeout=0.3, check_interval=0.02)
CLUSTER = "c" * 16


class Recorder:
    """A transport that only records what the detector sends."""

    def __init__(self, neighbours: tuple[str, ...] = ("b" * 32,)) -> None:
        self.sent: list[dict[str, Any]] = []
        self.linked = list(neighbours)

    def neighbours(self) -> list[str]:
        return self.linked

    def broadcast(self, frame_type: FrameType, body: Any, exclude: Any = ()) -> int:
        self.sent.append(body)
        return 1

    def send(self, node: str, frame_type: FrameType, body: Any) -> bool:
        return True


class Node:
    """A key pair with what it needs to sign heartbeats, and counts of checks made."""

    def __init__(self) -> None:
        self.identity = NodeIdentity.generate()
        self.checks = 0

        async def counted(public_key: bytes, signature: bytes, message: bytes) -> bool:
            self.checks += 1
            return await verify_signature(public_key, signature, message)

        self.signatures = Signatures(self.identity, CLUSTER, counted)

    @property
    def id(self) -> str:
        return self.identity.node_id

    async def beat(
        self, seq: int, *, inc: int = 1000, ago: float = 0.0, ttl: int = 1, **extra: Any
    ) -> dict:
        """A heartbeat of this node, signed by it (``ago``: signed that many seconds ago)."""
        fields = heartbeat.payload(
            self.id,
            self.identity.public_key,
            "b",
            inc,
            seq,
            int((time.time() - ago) * 1000),
            [],
        )
        return await heartbeat.seal(self.signatures, {**fields, **extra}, ttl=ttl)


def receiver(
    settings: MembershipSettings = FAST, transport: Recorder | None = None, **kwargs: Any
) -> tuple[Membership, Node]:
    me = Node()
    membership = Membership(me.signatures, "a", transport or Recorder(), settings, **kwargs)  # type: ignore[arg-type]
    return membership, me


async def deliver(membership: Membership, neighbour: str, body: dict[str, Any]) -> None:
    """Hand a heartbeat over and let its signature check run."""
    membership.handle_heartbeat(neighbour, body)
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_node_asking_for_grace_stays_ready_that_much_longer() -> None:
    membership, _ = receiver()
    b = Node()
    await membership.start()
    try:
        await deliver(membership, b.id, await b.beat(1))
        await asyncio.sleep(0.6)  # 0.3 s timeout
        assert not membership.get(b.id).ready  # type: ignore[union-attr]
        await deliver(membership, b.id, await b.beat(2, grace=1.0))
        await asyncio.sleep(0.6)  # 1.3 s now
        assert membership.get(b.id).ready  # type: ignore[union-attr]
        await asyncio.sleep(1.0)
        assert not membership.get(b.id).ready  # type: ignore[union-attr]
        assert membership.get(b.id).reason == "HeartbeatTimeout"  # type: ignore[union-attr]
    finally:
        await membership.close(leaving=False)


async def test_grace_is_capped_and_garbage_is_ignored() -> None:
    settings = MembershipSettings(
        heartbeat_interval=0.05, node_timeout=0.3, check_interval=0.02, max_grace=0.2
    )
    membership, _ = receiver(settings)
    b = Node()
    await membership.start()
    try:
        await deliver(membership, b.id, await b.beat(1, grace=1e9))
        assert membership.get(b.id).grace == 0.2  # type: ignore[union-attr]
        await asyncio.sleep(0.8)  # capped: 0.5 s
        assert not membership.get(b.id).ready  # type: ignore[union-attr]
        for seq, garbage in enumerate(["10", True, float("nan"), -5, None], start=2):
            await deliver(membership, b.id, await b.beat(seq, grace=garbage))
            assert membership.get(b.id).seq == seq  # type: ignore[union-attr]
            assert membership.get(b.id).grace == 0.0  # type: ignore[union-attr]
    finally:
        await membership.close(leaving=False)


async def test_own_grace_travels_in_every_signed_heartbeat() -> None:
    transport = Recorder()
    me = Node()
    membership = Membership(me.signatures, "tab", transport, FAST)  # type: ignore[arg-type]
    await membership.start()
    try:
        await asyncio.sleep(0.12)
        payloads = [msgpack.unpackb(body["hb"]) for body in transport.sent]
        assert payloads and all("grace" not in p for p in payloads)
        membership.grace = 10.0
        await asyncio.sleep(0.12)
        last = transport.sent[-1]
        assert msgpack.unpackb(last["hb"])["grace"] == 10.0
        # What a receiver checks: signed by this node's key, over the domain and cluster.
        assert await verify_signature(
            me.identity.public_key, last["sig"], heartbeat.signed_bytes(CLUSTER, last)
        )
    finally:
        await membership.close(leaving=False)


async def test_a_forged_farewell_for_another_node_changes_nothing() -> None:
    """The attack of issue 10: ``{node: victim, inc: 2^62, leaving: true}`` from a member."""
    violations: list[tuple[str, str]] = []
    membership, _ = receiver(on_violation=lambda n, r: violations.append((n, r)))
    victim, mallory = Node(), Node()
    await membership.start()
    try:
        await deliver(membership, victim.id, await victim.beat(1))
        now = int(time.time() * 1000)
        for inc in [2**62, now]:
            # Mallory signs a farewell for the victim with her own key, keeping the victim's
            # public key and id in it. 2^62 is beyond any clock; a plausible incarnation gets
            # as far as the signature check.
            forged = heartbeat.payload(victim.id, victim.identity.public_key, "b", inc, 1, now, [])
            body = await heartbeat.seal(mallory.signatures, {**forged, "leaving": True}, ttl=4)
            await deliver(membership, mallory.id, body)
        liveness = membership.get(victim.id)
        assert liveness is not None and liveness.ready and liveness.incarnation == 1000
        assert membership.stats.heartbeats_implausible == 1
        assert membership.stats.heartbeats_forged == 1
        # A relay that passed a bad signature on is not blamed (Ed25519 libraries disagree
        # on a few crafted signatures). From the victim's own link it is the victim's word
        # (the handshake proved who is on the link), but before it is passed on its signature
        # is checked: a bad one is that neighbour's fault.
        assert violations == []
        await deliver(membership, victim.id, body)
        assert [n for n, _ in violations] == [victim.id]
    finally:
        await membership.close(leaving=False)


async def test_incarnations_and_signing_times_are_bounded_by_the_clock_skew() -> None:
    membership, _ = receiver()
    b = Node()
    await membership.start()
    try:
        far = int((time.time() + 2 * FAST.max_clock_skew) * 1000)
        # The node's own signature, but an incarnation it could never lower again: dropped.
        await deliver(membership, b.id, await b.beat(1, inc=far))
        await deliver(membership, b.id, await b.beat(1, ago=2 * FAST.max_clock_skew))  # replay
        await deliver(membership, b.id, await b.beat(1, ago=-2 * FAST.max_clock_skew))
        assert membership.get(b.id) is None
        assert membership.stats.heartbeats_implausible == 3
        assert b.signatures.checked == 0  # rejected before any signature check
        await deliver(membership, b.id, await b.beat(1))
        assert membership.get(b.id).ready  # type: ignore[union-attr]
    finally:
        await membership.close(leaving=False)


async def test_a_restart_with_a_clock_behind_is_taken_once_the_old_run_is_gone() -> None:
    membership, _ = receiver()
    b = Node()
    await membership.start()
    try:
        now = int(time.time() * 1000)
        await deliver(membership, b.id, await b.beat(7, inc=now))
        # b restarts with its clock 10 s behind: a lower incarnation.
        await deliver(membership, b.id, await b.beat(1, inc=now - 10_000))
        assert membership.get(b.id).incarnation == now  # type: ignore[union-attr]
        await asyncio.sleep(0.5)  # the old run times out
        assert not membership.get(b.id).ready  # type: ignore[union-attr]
        await deliver(membership, b.id, await b.beat(2, inc=now - 10_000))
        liveness = membership.get(b.id)
        assert liveness is not None and liveness.ready and liveness.incarnation == now - 10_000
    finally:
        await membership.close(leaving=False)


async def test_each_new_heartbeat_is_checked_once_and_duplicates_cost_nothing() -> None:
    membership, me = receiver()
    b = Node()
    body = await b.beat(1)
    await membership.start()
    try:
        for neighbour in ["x" * 32, "y" * 32, "z" * 32]:  # three relays, at once
            membership.handle_heartbeat(neighbour, body)
        await deliver(membership, "w" * 32, body)  # and one later
        assert me.checks == 1
        assert membership.get(b.id).via == "x" * 32  # type: ignore[union-attr]
    finally:
        await membership.close(leaving=False)


async def test_a_neighbours_own_heartbeat_is_checked_only_to_pass_it_on() -> None:
    """The link's handshake proved who the neighbour is; what travels further is signed."""
    b, c = Node(), Node()
    transport = Recorder(neighbours=(b.id,))
    membership, me = receiver(transport=transport)
    await membership.start()
    try:
        await deliver(membership, b.id, await b.beat(1, ttl=4))  # b is our only neighbour
        assert membership.get(b.id).ready and me.checks == 0  # type: ignore[union-attr]
        assert all(msgpack.unpackb(x["hb"])["node"] != b.id for x in transport.sent)
        transport.linked.append(c.id)  # now c may lack it: checked, then passed on
        await deliver(membership, b.id, await b.beat(2, ttl=4))
        assert me.checks == 1
        assert msgpack.unpackb(transport.sent[-1]["hb"])["seq"] == 2
    finally:
        await membership.close(leaving=False)


async def test_the_farewell_is_signed_ahead_and_beats_after_it_count_again() -> None:
    transport = Recorder()
    tab = Node()
    sender = Membership(tab.signatures, "tab", transport, FAST)  # type: ignore[arg-type]
    membership, _ = receiver()
    await sender.start()
    await membership.start()
    try:
        await asyncio.sleep(0.1)
        for body in transport.sent:
            await deliver(membership, tab.id, body)
        assert membership.get(tab.id).ready  # type: ignore[union-attr]
        signed = tab.signatures.signed
        sender.say_leaving()  # synchronous: what a closing tab's pagehide handler calls
        assert tab.signatures.signed == signed
        await deliver(membership, tab.id, transport.sent[-1])
        assert membership.get(tab.id).reason == "AgentLeft"  # type: ignore[union-attr]
        # Restored from the back-forward cache: the tab beats on, and counts again.
        sent = len(transport.sent)
        await asyncio.sleep(0.12)
        for body in transport.sent[sent:]:
            await deliver(membership, tab.id, body)
        assert membership.get(tab.id).ready  # type: ignore[union-attr]
    finally:
        await sender.close(leaving=False)
        await membership.close(leaving=False)


async def test_the_table_of_nodes_is_bounded() -> None:
    settings = MembershipSettings(max_nodes=3)
    membership, _ = receiver(settings)
    await membership.start()
    try:
        for node in [Node() for _ in range(5)]:
            await deliver(membership, node.id, await node.beat(1))
        assert len(membership.nodes()) == 3
        assert membership.stats.heartbeats_over_limit == 2
    finally:
        await membership.close(leaving=False)


async def test_a_timeout_is_noticed_when_it_falls_due_not_at_the_next_lag_probe() -> None:
    """``check_interval`` paces the event-loop lag probe; timeouts are checked when due."""
    settings = MembershipSettings(node_timeout=0.3, check_interval=5.0)
    membership, _ = receiver(settings)
    b = Node()
    await membership.start()
    try:
        await asyncio.sleep(0.05)  # the detector sleeps toward its 5 s probe, no node known
        await deliver(membership, b.id, await b.beat(1))
        heard = time.monotonic()
        async with asyncio.timeout(2):
            while membership.get(b.id).ready:  # type: ignore[union-attr]  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert 0.3 <= time.monotonic() - heard < 0.5
    finally:
        await membership.close(leaving=False)
