"""The SWIM host (`p2pkube.membership.swim_host`) with real keys, real signatures and the
real core, several members in one process over an in-memory fabric instead of WebRTC: who
becomes Ready, how a crash becomes DEAD, what is believed from whom, and routes through a
partial mesh. The same protocol between real agents is in tests/test_swim_cluster.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import pytest

from p2pkube.membership.settings import MembershipSettings, SwimSettings
from p2pkube.membership.swim_host import ROUTED_KIND, SwimMembership
from p2pkube.membership.swim_messages import Gossip, Status, Update
from p2pkube.membership.swim_wire import encode, proof_of, record_bytes
from p2pkube.membership.topology import short_id
from p2pkube.net.frames import FrameType
from p2pkube.net.identity import NodeIdentity, verify_signature
from p2pkube.net.signed import Signatures

CLUSTER = "c" * 16
SWIM = SwimSettings()


class Fabric:
    """Links between members (undirected), delivered on the loop like a data channel."""

    def __init__(self) -> None:
        self.members: dict[str, SwimMembership] = {}
        self.links: set[frozenset[str]] = set()
        self.down: set[str] = set()
        """Crashed members: nothing reaches them or leaves them."""

    def link(self, a: str, b: str) -> None:
        self.links.add(frozenset((a, b)))

    def neighbours(self, node: str) -> list[str]:
        return [next(iter(pair - {node})) for pair in self.links if node in pair]

    def deliver(self, src: str, dst: str, call: Callable[[], None]) -> bool:
        if src in self.down or dst in self.down or dst not in self.members:
            return src not in self.down
        asyncio.get_running_loop().call_soon(call)
        return True


class FabricTransport:
    """One member's side of the fabric: direct frames to neighbours; routed messages follow
    the member's own routes hop by hop, like the mesh's."""

    def __init__(self, fabric: Fabric, node: str) -> None:
        self.fabric, self.node_id = fabric, node
        self.routed = 0
        self.queued = 0
        """What ``queued_bytes`` says: a burst of state being sent (a test sets it)."""

    def neighbours(self) -> list[str]:
        return self.fabric.neighbours(self.node_id)

    def queued_bytes(self) -> int:
        return self.queued

    def send(self, node: str, frame_type: FrameType, body: Any) -> bool:
        assert frame_type is FrameType.SWIM
        if node not in self.neighbours():
            return False
        dst = self.fabric.members.get(node)
        return self.fabric.deliver(
            self.node_id, node, lambda: dst.handle_frame(self.node_id, body) if dst else None
        )

    def broadcast(self, frame_type: FrameType, body: Any, exclude: Collection[str] = ()) -> int:
        return sum(self.send(n, frame_type, body) for n in self.neighbours() if n not in exclude)

    def send_routed(self, node: str, data: dict[str, Any]) -> bool:
        return self._forward(self.node_id, node, data, ttl=16)

    def _forward(self, src: str, dst: str, data: dict[str, Any], ttl: int) -> bool:
        here = self.fabric.members[self.node_id]
        hop = here.topology.next_hop(dst)
        if hop is None or ttl == 0:
            return False
        self.routed += 1
        target = self.fabric.members.get(hop)
        if hop == dst:
            return self.fabric.deliver(
                self.node_id, dst, lambda: target.handle_routed(src, data) if target else None
            )
        relay: FabricTransport = target._transport if target else None  # type: ignore[assignment]
        return self.fabric.deliver(
            self.node_id, hop, lambda: relay._forward(src, dst, data, ttl - 1) if relay else None
        )


def member(fabric: Fabric, name: str, swim: SwimSettings = SWIM) -> SwimMembership:
    identity = NodeIdentity.generate()
    signatures = Signatures(identity, CLUSTER, verify_signature)
    host = SwimMembership(
        signatures,
        name,
        FabricTransport(fabric, identity.node_id),  # type: ignore[arg-type]
        MembershipSettings(),
        swim,
    )
    host.identity = identity  # type: ignore[attr-defined]
    fabric.members[identity.node_id] = host
    return host


async def cluster(
    size: int, *, edges: list[tuple[int, int]] | None = None
) -> tuple[Fabric, list[SwimMembership]]:
    """``size`` started members, fully linked unless ``edges`` (index pairs) say otherwise."""
    fabric = Fabric()
    hosts = [member(fabric, f"n{i}") for i in range(size)]
    pairs = edges or [(i, j) for i in range(size) for j in range(i + 1, size)]
    for host in hosts:
        await host.start()
    for i, j in pairs:
        fabric.link(hosts[i].node_id, hosts[j].node_id)
        hosts[i].link_up(hosts[j].node_id)
        hosts[j].link_up(hosts[i].node_id)
    return fabric, hosts


@contextlib.asynccontextmanager
async def ready_cluster(
    size: int, *, edges: list[tuple[int, int]] | None = None, within: float = 3.0
) -> AsyncIterator[tuple[Fabric, list[SwimMembership]]]:
    """A started cluster (see `cluster`) once every member is Ready everywhere; every member
    is closed afterwards (closing one twice is harmless)."""
    fabric, hosts = await cluster(size, edges=edges)
    try:
        await all_ready(hosts, within=within)
        yield fabric, hosts
    finally:
        await close(hosts)


async def until(condition: Callable[[], bool], within: float, what: str) -> float:
    """Seconds until ``condition`` holds (polled every 20 ms); fails after ``within``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def all_ready(hosts: list[SwimMembership], within: float = 3.0) -> None:
    await until(
        lambda: all(sees(a, b, "AgentReady") for a in hosts for b in hosts if a is not b),
        within,
        "every member Ready everywhere",
    )


def sees(host: SwimMembership, other: SwimMembership, reason: str) -> bool:
    liveness = host.get(other.node_id)
    return liveness is not None and liveness.reason == reason


async def close(hosts: list[SwimMembership]) -> None:
    for host in hosts:
        await host.close(leaving=False)
        await host._signatures.close()


@pytest.mark.asyncio
async def test_members_become_ready_with_their_names_and_keys() -> None:
    async with ready_cluster(5) as (_fabric, hosts):
        first = hosts[0].get(hosts[3].node_id)
        assert first is not None and first.name == "n3" and first.ready
        assert hosts[0].public_key(hosts[3].node_id) == hosts[3].identity.public_key  # type: ignore[attr-defined]
        assert hosts[0].stats.records_forged == 0


@pytest.mark.asyncio
async def test_a_crashed_member_is_suspected_then_dead_everywhere_within_3_s() -> None:
    async with ready_cluster(6) as (fabric, hosts):
        victim, others = hosts[-1], hosts[:-1]
        fabric.down.add(victim.node_id)
        await victim.close(leaving=False)
        took = await until(
            lambda: all(sees(o, victim, "AgentDead") for o in others), 5.0, "victim DEAD"
        )
        assert took < 3.0, f"DEAD everywhere {took:.2f}s after the crash"
        assert all(not o.is_reachable(victim.node_id) for o in others)
        assert sum(o.core.stats.suspicions for o in others) >= 1


@pytest.mark.asyncio
async def test_routes_follow_the_neighbour_lists_of_a_line() -> None:
    # n0 - n1 - n2 - n3: n0 reaches n3 only through n1, and probes it through the routes
    async with ready_cluster(4, edges=[(0, 1), (1, 2), (2, 3)], within=4.0) as (_fabric, hosts):
        first, last = hosts[0], hosts[3]
        await until(lambda: first.route_hint(last.node_id) == hosts[1].node_id, 2.0, "route")
        linked_to_n1 = {hosts[0].node_id, hosts[1].node_id, hosts[2].node_id}
        assert first.relay_exclude(hosts[1].node_id) == linked_to_n1
        await asyncio.sleep(1.0)
        assert first._transport.routed > 0  # type: ignore[attr-defined]
        assert all(sees(a, b, "AgentReady") for a in hosts for b in hosts if a is not b)


@pytest.mark.asyncio
async def test_forged_records_and_unproven_accusations_are_dropped() -> None:
    async with ready_cluster(3) as (_fabric, hosts):
        honest, liar, victim = hosts
        inc = victim.core.own_incarnation
        # an accusation above every incarnation the victim signed: nobody could refute it
        far = Update(victim.node_id, Status.DEAD, inc + 1000, liar.node_id)
        honest.handle_frame(liar.node_id, encode(Gossip((far,))))
        assert honest.stats.accusations_unproven == 1
        # an ALIVE of the victim that the liar signed: the record names the victim's key
        key = victim.identity.public_key  # type: ignore[attr-defined]
        record = record_bytes(victim.node_id, key, "n2", inc + 5, 0.0, False, [])
        forged = proof_of(record, await liar._signatures.sign("p2pkube-member-v1", record))
        alive = Update(victim.node_id, Status.ALIVE, inc + 5, victim.node_id, forged)
        honest.handle_frame(liar.node_id, encode(Gossip((alive,))))
        await until(lambda: honest.stats.records_forged == 1, 2.0, "forgery found")
        assert honest.core.members()[victim.node_id].incarnation < inc + 5
        await asyncio.sleep(0.5)
        assert sees(honest, victim, "AgentReady")


@pytest.mark.asyncio
async def test_an_accused_member_refutes_with_a_signed_higher_incarnation() -> None:
    async with ready_cluster(3) as (_fabric, hosts):
        accuser, victim, third = hosts
        inc = victim.core.own_incarnation
        accusation = Update(victim.node_id, Status.SUSPECT, inc, accuser.node_id)
        victim.handle_frame(accuser.node_id, encode(Gossip((accusation,))))
        assert victim.core.own_incarnation == inc + 1
        await until(
            lambda: third.core.members()[victim.node_id].incarnation == inc + 1,
            2.0,
            "the refutation reaches the others",
        )
        record = third._records[victim.node_id]
        assert record.incarnation == inc + 1 and not record.left
        assert sees(third, victim, "AgentReady") and victim.core.stats.refutations == 1


@pytest.mark.asyncio
async def test_a_leaving_member_is_left_at_once_not_dead() -> None:
    async with ready_cluster(4) as (_fabric, hosts):
        leaver, others = hosts[0], hosts[1:]
        await leaver.close(leaving=True)
        took = await until(lambda: all(sees(o, leaver, "AgentLeft") for o in others), 2.0, "LEFT")
        assert took < 0.5
        assert others[0]._records[leaver.node_id].left  # the signed LEFT record


def test_short_ids_are_eight_bytes() -> None:
    assert len(short_id("x")) == 8 and ROUTED_KIND == "swim"


@pytest.mark.asyncio
async def test_members_dead_past_the_reconnect_timeout_are_forgotten_with_their_records() -> None:
    quick = dataclasses.replace(
        SWIM, reconnect_interval=0.2, reconnect_timeout=0.6, gossip_to_the_dead_time=0.3
    )
    fabric = Fabric()
    hosts = await linked(fabric, [member(fabric, f"n{i}", quick) for i in range(4)])
    try:
        await all_ready(hosts)
        victim, others = hosts[-1], hosts[:-1]
        await victim.close(leaving=True)
        fabric.down.add(victim.node_id)
        await until(lambda: all(sees(o, victim, "AgentLeft") for o in others), 2.0, "LEFT")
        await until(
            lambda: all(o.get(victim.node_id) is None for o in others),
            quick.reconnect_timeout + 2 * quick.reconnect_interval + 2.0,
            "the victim forgotten",
        )
        assert all(victim.node_id not in o._records for o in others)
        assert all(o.public_key(victim.node_id) is None for o in others)
    finally:
        await close(others)


# -- what the heartbeat detector's unit tests covered, for SWIM (issue 13) ---------------------


async def linked(fabric: Fabric, hosts: list[SwimMembership]) -> list[SwimMembership]:
    """Start ``hosts`` (made with `member` on ``fabric``) and link every pair."""
    for host in hosts:
        await host.start()
    for i, a in enumerate(hosts):
        for b in hosts[i + 1 :]:
            fabric.link(a.node_id, b.node_id)
            a.link_up(b.node_id)
            b.link_up(a.node_id)
    return hosts


@pytest.mark.asyncio
async def test_a_members_grace_reaches_the_others_signed_and_capped_at_their_bound() -> None:
    """A hidden browser tab asks for grace: it travels on its signed ALIVE, and each receiver
    caps it at its own ``swim.max_grace`` (nothing makes a node wait longer for anyone)."""
    fabric = Fabric()
    generous = SwimSettings(max_grace=100.0)
    tab = member(fabric, "tab", generous)
    hosts = await linked(fabric, [tab, member(fabric, "n1"), member(fabric, "n2")])
    others = hosts[1:]
    try:
        await all_ready(hosts)
        tab.grace = 50.0
        await until(
            lambda: all(o._records[tab.node_id].grace == 50.0 for o in others),
            3.0,
            "the signed record with the grace",
        )
        for other in others:
            seen = other.get(tab.node_id)
            assert seen is not None and seen.grace == SWIM.max_grace == 30.0
            assert other.core.members()[tab.node_id].grace == SWIM.max_grace
        tab.grace = 0.0  # visible again
        await until(
            lambda: all(o.get(tab.node_id).grace == 0.0 for o in others),  # type: ignore[union-attr]
            3.0,
            "the grace withdrawn",
        )
        assert all(sees(o, tab, "AgentReady") for o in others)
    finally:
        await close(hosts)


@pytest.mark.asyncio
async def test_a_member_sending_a_burst_is_starved_asks_for_grace_and_blames_no_one() -> None:
    """A member with ``swim.starved_backlog`` bytes queued on its links (a scheduler writing
    a big Job) asks the others for ``swim.starved_grace`` at once, declares no one DEAD while
    it is starved (a member that crashes meanwhile stays SUSPECT in its view), and withdraws
    the grace ``swim.starved_calm`` after the backlog is gone."""
    swim = SwimSettings(starved_calm=1.0)
    async with ready_cluster(4) as (fabric, hosts):
        busy, crashed = hosts[0], hosts[3]
        transport = busy._transport
        transport.queued = swim.starved_backlog  # type: ignore[attr-defined]
        busy.swim = swim
        await until(
            lambda: all(o.get(busy.node_id).grace == swim.starved_grace for o in hosts[1:3]),  # type: ignore[union-attr]
            2.0,
            "the grace on its signed ALIVE",
        )
        assert busy.starved and busy.stats.starved_spells == 1
        fabric.down.add(crashed.node_id)
        await crashed.close(leaving=False)
        await until(lambda: all(sees(o, crashed, "AgentDead") for o in hosts[1:3]), 5.0, "DEAD")
        assert busy.core.stats.deaths == 0  # its own timer held (the others' verdict may come)
        transport.queued = 0  # type: ignore[attr-defined]
        await until(lambda: not busy.starved, 3.0, "calm again")
        await until(
            lambda: all(o.get(busy.node_id).grace == 0.0 for o in hosts[1:3]),  # type: ignore[union-attr]
            2.0,
            "the grace withdrawn",
        )
        assert busy.stats.starved_spells == 1


@pytest.mark.asyncio
async def test_the_member_table_is_bounded_against_made_up_members() -> None:
    """Node ids are cheap: a member gossiping validly signed ALIVEs of made-up members cannot
    grow another's table beyond ``swim.max_members``; the excess is dropped and counted."""
    fabric = Fabric()
    small = SwimSettings(max_members=4)
    hosts = await linked(fabric, [member(fabric, f"n{i}", small) for i in range(3)])
    honest, liar = hosts[0], hosts[1]
    try:
        await all_ready(hosts)
        made_up = []
        for i in range(10):
            key = Signatures(NodeIdentity.generate(), CLUSTER, verify_signature)
            record = record_bytes(key.node_id, key.public_key, f"fake{i}", 1, 0.0, False, [])
            proof = proof_of(record, await key.sign("p2pkube-member-v1", record))
            made_up.append(Update(key.node_id, Status.ALIVE, 1, key.node_id, proof))
            await key.close()
        honest.handle_frame(liar.node_id, encode(Gossip(tuple(made_up))))
        await until(lambda: honest.core.stats.dropped["table-full"] >= 9, 3.0, "the table full")
        assert len(honest.core.members()) == small.max_members
        assert len(honest.nodes()) <= small.max_members - 1
        assert all(sees(honest, h, "AgentReady") for h in hosts[1:])
    finally:
        await close(hosts)


@pytest.mark.asyncio
async def test_dropped_updates_are_counted_each_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A peer sending thousands of bad updates cannot flood the log: each is counted, one
    warning per ``membership.drop_log_interval``, and the next says how many were left out."""
    _fabric, hosts = await cluster(3)
    honest, liar, victim = hosts
    try:
        await all_ready(hosts)
        inc = victim.core.own_incarnation
        bad = Update(victim.node_id, Status.ALIVE, inc + 1, victim.node_id, b"not a record")
        before = honest.stats.updates_unproven
        caplog.set_level("WARNING", logger="p2pkube.membership.swim_host")
        for _ in range(30):
            honest.handle_frame(liar.node_id, encode(Gossip((bad,))))
        assert honest.stats.updates_unproven - before == 30
        dropped = [r for r in caplog.records if "update of" in r.getMessage()]
        assert len(dropped) == 1, [r.getMessage() for r in dropped]
        honest._warn.interval = 0.0  # the interval is over
        honest.handle_frame(liar.node_id, encode(Gossip((bad,))))
        assert "(and 29 more like it in the last" in caplog.records[-1].getMessage()
        assert sees(honest, victim, "AgentReady")
    finally:
        await close(hosts)


@pytest.mark.asyncio
async def test_a_first_sighting_is_not_a_flip_and_a_departure_is_one() -> None:
    """``transitions`` counts Ready flips (what `p2pkube status` shows and bench_sched sums):
    a member seen Ready from the start has 0; one that leaves has 1."""
    async with ready_cluster(3) as (_fabric, hosts):
        assert [n.transitions for h in hosts for n in h.nodes()] == [0] * 6
        leaver, others = hosts[0], hosts[1:]
        await leaver.close(leaving=True)
        await until(lambda: all(sees(o, leaver, "AgentLeft") for o in others), 2.0, "LEFT")
        assert [o.get(leaver.node_id).transitions for o in others] == [1, 1]  # type: ignore[union-attr]
