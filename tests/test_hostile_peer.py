"""A member that misbehaves on its data channel is dropped and logged; the agent keeps serving."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import yaml

from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.membership import heartbeat
from p2pkube.net import ice
from p2pkube.net.aiohttp_websocket import aiohttp_connect
from p2pkube.net.frames import PROTOCOL_VERSION, Frame, FrameType, encode_frame
from p2pkube.net.handshake import Handshake
from p2pkube.net.identity import NodeIdentity, verify_signature
from p2pkube.net.jointoken import cluster_id
from p2pkube.net.link import LinkState, PeerLink
from p2pkube.net.route import seal_route
from p2pkube.net.settings import RpcSettings, TransportSettings
from p2pkube.net.signaling_client import SignalingClient
from p2pkube.net.signed import Signatures
from tests.clusters import all_ready

BUILD = Path(__file__).resolve().parent.parent / "examples" / "build"
PER_SOURCE = RpcSettings().max_requests_per_source
FAR_FUTURE = "2999-01-01T00:00:00Z"
TICKER_POD = {
    "apiVersion": "p2pkube.io/v1",
    "kind": "Pod",
    "metadata": {"name": "svc"},
    "spec": {
        "nodeName": "n1",
        "containers": [{"name": "main", "image": "ticker.wasm", "args": ["30"]}],
    },
}

HOSTILE_MESSAGES = {
    "garbage": b"\xc1\xc1\xc1 this is not msgpack",
    "oversize": encode_frame(FrameType.FRAGMENT, [0, 1 << 40, b"x" * 10]),
    "unknown-type": msgpack.packb([PROTOCOL_VERSION, 99, {"hello": "there"}]),
    # An agent from before signed heartbeats and routes speaks frames of version 1.
    "old-version": msgpack.packb([1, int(FrameType.PING), {}]),
    "text": "a text message on the binary channel",
}


@dataclass
class Member:
    """The hostile test peer: a member of the cluster (it holds the token and a node key of
    its own) with one real link, speaking the wire protocol from this process. It records the
    heartbeats and rpc answers that reach it, and sends what a member can: heartbeats and
    routed messages signed with its own key, truthful or not."""

    identity: NodeIdentity
    link: PeerLink
    client: SignalingClient
    signatures: Signatures
    inc: int = field(default_factory=lambda: int(time.time() * 1000))
    seq: int = 0
    heard: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Node id -> the payload of the last heartbeat of that node heard on the link."""
    answers: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=4096)
    )
    """The ``data`` of the rpc answers routed to us."""

    @property
    def id(self) -> str:
        return self.identity.node_id

    def on_frame(self, _: PeerLink, frame: Frame) -> None:
        if frame.type is FrameType.HEARTBEAT:
            payload = msgpack.unpackb(frame.body["hb"])
            self.heard[payload["node"]] = payload
        elif frame.type is FrameType.ROUTE and frame.body["dst"] == self.id:
            data = msgpack.unpackb(frame.body["data"])
            if data.get("kind") == "rpc-res" and not self.answers.full():
                self.answers.put_nowait(data)

    async def heartbeat(
        self,
        node: str | None = None,
        pub: bytes | None = None,
        *,
        inc: int | None = None,
        bad_signature: bool = False,
        **extra: Any,
    ) -> None:
        """A heartbeat signed with our key: ours, or (``node``, ``pub``) one for another."""
        self.seq += 1
        fields = heartbeat.payload(
            node or self.id,
            pub or self.identity.public_key,
            "hostile",
            self.inc if inc is None else inc,
            self.seq,
            int(time.time() * 1000),
            [self.link.remote_id or ""],
        )
        body = await heartbeat.seal(self.signatures, {**fields, **extra}, ttl=4)
        if bad_signature:
            body["sig"] = secrets.token_bytes(64)
        assert self.link.send(FrameType.HEARTBEAT, body)

    async def route(self, dst: str, data: dict[str, Any], *, src: str | None = None) -> None:
        """A routed message signed with our key, claiming to come from ``src`` if given
        (then the signature is ours, not ``src``'s: it verifies for nobody)."""
        route = await seal_route(self.signatures, dst, data, ttl=4)
        if src is not None:
            route["src"] = src
        assert self.link.send(FrameType.ROUTE, route)

    async def close(self) -> None:
        await self.link.close("test over", notify=False)
        await self.client.close()


async def join_as_member(
    cluster: LocalCluster, target_id: str, *, link_secret: str | bytes | None = None
) -> Member:
    """Join the cluster as a legitimate member and open a real link to ``target_id``.

    ``link_secret`` replaces the token in the link handshake (a token, or a key used as the
    link key): what an attacker who is not a member would have to offer. With one, the member
    is returned as soon as its link is established or closed (check ``member.link.state``);
    without, a link that does not come up is an error."""
    ice.use_host_addresses(["127.0.0.1"])
    identity = NodeIdentity.generate()
    while identity.node_id > target_id:
        # The target dials newcomers too; when both dial at once the smaller id's dial wins
        # (the mesh's glare rule), so be the smaller one and have ours answered.
        identity = NodeIdentity.generate()
    answers: asyncio.Queue[dict[str, object]] = asyncio.Queue(maxsize=64)
    client = SignalingClient(
        f"{cluster.url}/ws",
        cluster.token,
        identity,
        "hostile",
        "native",
        on_signal=lambda sender, data: answers.put_nowait(data),
        on_peer_joined=lambda peer: None,
        on_peer_left=lambda peer: None,
        connect=aiohttp_connect,
    )
    await client.start()
    established, closed = asyncio.Event(), asyncio.Event()
    cluster_name = cluster_id(cluster.token)
    link = PeerLink(
        expected_node=target_id,
        session=secrets.token_hex(8),
        initiator=True,
        handshake=Handshake(
            identity,
            "hostile",
            "native",
            cluster_name,
            cluster.token if link_secret is None else link_secret,
            check_signature=verify_signature,
        ),
        settings=TransportSettings(),
        on_established=lambda link: established.set(),
        on_frame=lambda link, frame: None,
        on_closed=lambda link: closed.set(),
    )
    member = Member(identity, link, client, Signatures(identity, cluster_name, verify_signature))
    link._on_frame = member.on_frame  # before the link opens: it records what it hears
    offer = await link.create_offer()
    await client.send_signal(target_id, {"kind": "offer", "sdp": offer, "session": link.session})
    async with asyncio.timeout(10):
        answer = await answers.get()
        while answer.get("session") != link.session:  # e.g. the target dialing us: ignored
            answer = await answers.get()
    assert answer["kind"] == "answer", answer
    await link.accept_answer(str(answer["sdp"]))
    outcomes = [asyncio.create_task(event.wait()) for event in (established, closed)]
    await asyncio.wait(outcomes, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    for task in outcomes:
        task.cancel()
    if link_secret is None and not established.is_set():
        await member.close()
        raise AssertionError(f"the link to {target_id} did not come up ({link.state})")
    return member


async def link_to(
    cluster: LocalCluster, target_id: str, *, link_secret: str | bytes | None = None
) -> tuple[PeerLink, SignalingClient]:
    """:func:`join_as_member`, for tests that need only the link and the signaling client."""
    member = await join_as_member(cluster, target_id, link_secret=link_secret)
    return member.link, member.client


@pytest.mark.parametrize("kind", list(HOSTILE_MESSAGES))
async def test_hostile_frames_drop_the_sender_not_the_agent(
    cluster: LocalCluster, kind: str
) -> None:
    cluster.start_signaling()
    for name in ["n1", "n2"]:
        cluster.start_agent(name)
    for name in ["n1", "n2"]:
        await asyncio.to_thread(cluster.wait_api, name)
    n1 = (await asyncio.to_thread(cluster.api, "n1", "GET", "/v1/status"))["nodeID"]

    link, client = await link_to(cluster, n1)
    try:
        link._channel.send(HOSTILE_MESSAGES[kind])  # what a broken or malicious peer would do

        def dropped() -> bool:
            return "dropping peer" in cluster.log_tail("n1", 200)

        await asyncio.to_thread(wait_until, dropped, 10, what="n1 to drop the hostile peer")
        await asyncio.to_thread(
            wait_until, lambda: link.state is LinkState.CLOSED, 10, what="the link to close"
        )
        # n1 keeps serving the others: a write on n2 still reaches it.
        await asyncio.to_thread(
            cluster.api,
            "n2",
            "PUT",
            "/v1/objects",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after"}, "data": {}},
        )
        await asyncio.to_thread(
            wait_until,
            lambda: cluster.api("n1", "GET", "/v1/objects/ConfigMap/default/after"),
            10,
            what="n1 to keep syncing",
        )
        assert cluster.agents["n1"].running
    finally:
        await link.close("test over", notify=False)
        await client.close()


def membership_entry(cluster: LocalCluster, viewer: str, node_id: str) -> dict[str, Any] | None:
    """How ``viewer``'s failure detector sees ``node_id`` (None: not at all)."""
    nodes = cluster.api(viewer, "GET", "/v1/status")["membership"]["nodes"]
    return next((n for n in nodes if n["node"] == node_id), None)


async def test_forged_heartbeats_cannot_declare_a_node_gone(cluster: LocalCluster) -> None:
    """Issue 10: one member's ``{node: victim, inc: 2^62, leaving: true}`` marked the victim
    NotReady everywhere, for good, even after it restarted. Heartbeats are signed by their
    node now, and incarnations bounded by the receiver's clock."""
    names = ["n1", "n2", "n3"]
    cluster.start_signaling()
    for name in names:
        cluster.start_agent(name)
    for name in names:
        await asyncio.to_thread(cluster.wait_api, name)
    for name in names:
        await asyncio.to_thread(
            wait_until, lambda n=name: all_ready(cluster, n, names), 30, what=f"{name}'s view"
        )
    ids = {
        n: (await asyncio.to_thread(cluster.api, n, "GET", "/v1/status"))["nodeID"] for n in names
    }
    victim = ids["n3"]
    members = [await join_as_member(cluster, ids[name]) for name in ("n1", "n2")]
    try:
        # The attacker learns the victim's public key from the gossip, like any member.
        async with asyncio.timeout(10):
            while victim not in members[0].heard:  # noqa: ASYNC110 - filled by this loop
                await asyncio.sleep(0.05)
        victim_key = members[0].heard[victim]["pub"]
        before = {v: membership_entry(cluster, v, victim) for v in ("n1", "n2")}
        now = int(time.time() * 1000)
        for member in members:
            await member.heartbeat(victim, victim_key, inc=2**62, leaving=True)  # the issue's
            await member.heartbeat(victim, victim_key, inc=now, leaving=True)  # a plausible one
            await member.heartbeat(inc=2**62)  # its own, validly signed, beyond any clock
            await member.heartbeat()  # and a true one
        for viewer in ("n1", "n2"):
            await asyncio.to_thread(
                wait_until,
                lambda v=viewer: (
                    "bad signature: dropped" in cluster.log_tail(v, 300)
                    and "ahead of our clock" in cluster.log_tail(v, 300)
                ),
                10,
                what=f"{viewer} to log the forgeries",
            )
        await asyncio.sleep(2.5)  # more than a heartbeat interval
        for viewer in names:
            assert (await asyncio.to_thread(cluster.nodes, viewer))["n3"] == "True"
        for viewer in ("n1", "n2"):
            seen = await asyncio.to_thread(membership_entry, cluster, viewer, victim)
            assert seen is not None and seen["ready"], seen
            assert seen["incarnation"] == before[viewer]["incarnation"]  # type: ignore[index]
            # Never declared gone, not even for a moment (what the forgery did before).
            assert f"({victim}) is NotReady: AgentLeft" not in cluster.log_tail(viewer, 1000)
            status = await asyncio.to_thread(cluster.api, viewer, "GET", "/v1/status")
            assert status["membership"]["heartbeatsForged"] >= 1
            assert status["membership"]["heartbeatsImplausible"] >= 2
            hostile = await asyncio.to_thread(membership_entry, cluster, viewer, members[0].id)
            assert hostile is not None and hostile["incarnation"] == members[0].inc

        # The victim restarts: Ready everywhere again, under its new incarnation.
        await asyncio.to_thread(cluster.kill, "n3")
        cluster.start_agent("n3")
        for viewer in ("n1", "n2"):
            await asyncio.to_thread(
                wait_until,
                lambda v=viewer: (
                    (e := membership_entry(cluster, v, victim)) is not None
                    and e["ready"]
                    and e["incarnation"] > before[v]["incarnation"]
                ),  # type: ignore[index]
                30,
                what=f"{viewer} to see n3 Ready again after its restart",
            )

        # A member's own heartbeat with a bad signature: that neighbour is dropped.
        await members[0].heartbeat(bad_signature=True)
        await asyncio.to_thread(
            wait_until,
            lambda: (
                f"dropping peer {members[0].id}: its heartbeat has a bad signature"
                in cluster.log_tail("n1", 300)
            ),
            10,
            what="n1 to drop the member",
        )
        assert all(cluster.agents[name].running for name in names)
    finally:
        for member in members:
            await member.close()


def rpc_request(call_id: int, method: str, body: Any) -> dict[str, Any]:
    return {"kind": "rpc-req", "id": call_id, "method": method, "body": msgpack.packb(body)}


async def test_routed_requests_from_made_up_sources_are_refused(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """Issue 10: 200 rpc requests under made-up sources filled all 128 rpc slots of a node,
    and an honest node's request was answered ``busy``. Routed messages are signed by their
    source now: made-up sources are dropped, and the per-source limit holds for the member's
    real id."""
    cluster.start_signaling()
    for name in ["n1", "n2"]:
        cluster.start_agent(name)
    for name in ["n1", "n2"]:
        await asyncio.to_thread(cluster.wait_api, name)
    ids = {
        n: (await asyncio.to_thread(cluster.api, n, "GET", "/v1/status"))["nodeID"]
        for n in ["n1", "n2"]
    }
    # A pod on n1 whose logs n2 reads over rpc (it prints "tick 1", then waits 30 s).
    shutil.copy(BUILD / "ticker.wasm", tmp_path / "ticker.wasm")
    manifest = tmp_path / "svc.yaml"
    manifest.write_text(yaml.safe_dump(TICKER_POD))
    await asyncio.to_thread(cluster.cli, "n1", "apply", "-f", str(manifest))

    def logs_from_n2() -> str:
        return cluster.cli("n2", "logs", "svc").stdout

    await asyncio.to_thread(
        wait_until, lambda: "tick 1" in logs_from_n2(), 30, what="n2 to read the pod's logs"
    )
    member = await join_as_member(cluster, ids["n1"])
    try:
        await member.heartbeat()  # a member beats like any node
        # Long polls: each would hold one of n1's handler slots for 30 s.
        poll = {"namespace": "default", "name": "svc", "since": FAR_FUTURE, "wait": 30}
        for call_id in range(1, 201):
            made_up = ids["n2"] if call_id % 2 else secrets.token_hex(16)
            await member.route(ids["n1"], rpc_request(call_id, "pods.logs", poll), src=made_up)

        def mesh() -> dict[str, Any]:
            return cluster.api("n1", "GET", "/v1/status")["mesh"]

        await asyncio.to_thread(
            wait_until,
            lambda: mesh()["routedForged"] == 100 and mesh()["routedUnknownSource"] == 100,
            10,
            what="n1 to refuse all 200",
        )
        log = await asyncio.to_thread(cluster.log_tail, "n1", 300)
        assert "routed message from unknown node" in log
        assert f"claiming to be from {ids['n2']} (via {member.id}) has a bad signature" in log
        rpc = (await asyncio.to_thread(cluster.api, "n1", "GET", "/v1/status"))["rpc"]
        assert rpc["activeRequests"] == 0 and rpc["busyRefused"] == 0
        assert "tick 1" in await asyncio.to_thread(logs_from_n2)

        # Under its own id the member gets its share of slots, and not one more.
        for call_id in range(1001, 1201):
            await member.route(ids["n1"], rpc_request(call_id, "pods.logs", poll))
        busy = []
        async with asyncio.timeout(15):
            while len(busy) < 200 - PER_SOURCE:
                answer = await member.answers.get()
                assert not answer["ok"] and answer["code"] == "busy", answer
                busy.append(answer["id"])
        rpc = (await asyncio.to_thread(cluster.api, "n1", "GET", "/v1/status"))["rpc"]
        assert rpc["activeRequests"] == PER_SOURCE
        assert "tick 1" in await asyncio.to_thread(logs_from_n2)  # the honest node still is
        assert member.link.state is LinkState.ESTABLISHED  # nothing it sent broke the protocol
    finally:
        await member.close()
