"""New links are negotiated through open links when the signaling server is gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.membership.settings import MembershipSettings, SwimSettings
from p2pkube.membership.swim_host import ROUTED_KIND, SwimMembership
from p2pkube.net import ice
from p2pkube.net.aiohttp_websocket import aiohttp_connect
from p2pkube.net.frames import Frame, FrameType
from p2pkube.net.identity import NodeIdentity, verify_signature
from p2pkube.net.jointoken import cluster_id, generate_token
from p2pkube.net.link import peer_link_factory
from p2pkube.net.mesh import Mesh
from p2pkube.net.settings import TransportSettings
from p2pkube.net.signaling_client import PeerInfo


async def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``predicate`` on the loop; TimeoutError naming ``what`` after ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while not predicate():  # noqa: ASYNC110 - polls state owned by this loop
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise TimeoutError(f"timed out waiting for {what}") from None


async def test_offer_and_answer_travel_through_the_mesh(cluster: LocalCluster) -> None:
    cluster.start_signaling()
    for name in ["n1", "n2"]:
        cluster.start_agent(name)
    for name in ["n1", "n2"]:
        await asyncio.to_thread(cluster.wait_api, name)
    ids = {}
    for name in ["n1", "n2"]:
        ids[name] = (await asyncio.to_thread(cluster.api, name, "GET", "/v1/status"))["nodeID"]

    # A real mesh node in this process that holds one link at most (it refuses more offers).
    ice.use_host_addresses(["127.0.0.1"])
    settings = TransportSettings(
        max_peers=1, max_peers_jitter=0, inbound_slack=0, maintain_interval=3600
    )
    mesh = Mesh(
        identity=NodeIdentity.generate(),
        name="relay-test",
        kind="native",
        cluster=cluster_id(cluster.token),
        token=cluster.token,
        signaling_url=f"{cluster.url}/ws",
        settings=settings,
        link_factory=peer_link_factory(settings),
        connect=aiohttp_connect,
        check_signature=verify_signature,
    )
    # With SWIM membership: its signed member record carries its key to the nodes it is not
    # linked to, which check the signature of the offer it routes to them.
    membership = SwimMembership(
        mesh.signatures, "relay-test", mesh, MembershipSettings(), SwimSettings()
    )
    mesh.on_link_up = membership.link_up
    mesh.on_link_down = membership.link_down
    mesh.route_hint = membership.route_hint
    mesh.reachable = membership.is_reachable
    mesh.public_key_of = membership.public_key

    def on_frame(node: str, frame: Frame) -> None:
        if frame.type is FrameType.SWIM:
            membership.handle_frame(node, frame.body)

    def on_routed(src: str, data: dict[str, Any]) -> None:
        if data.get("kind") == ROUTED_KIND:
            membership.handle_routed(src, data)

    mesh.on_frame = on_frame
    mesh.on_routed = on_routed
    await mesh.start()
    await membership.start()
    try:
        await wait_for(
            lambda: mesh.signaling is not None and ids["n1"] in mesh.signaling.peers,
            10,
            "n1 on signaling",
        )
        if not mesh.neighbours():
            mesh._dial(ids["n1"])
        await wait_for(lambda: len(mesh.neighbours()) == 1, 10, "one link")
        first = mesh.neighbours()[0]
        first_name, other_name = ("n1", "n2") if first == ids["n1"] else ("n2", "n1")

        def linked(viewer: str, node: str) -> bool:
            status = cluster.api(viewer, "GET", "/v1/status")
            return any(n["node"] == node for n in status["mesh"]["neighbours"])

        await asyncio.to_thread(
            wait_until, lambda: linked("n1", ids["n2"]), 15, what="n1 and n2 to link"
        )
        await asyncio.to_thread(cluster.stop_signaling)
        await wait_for(
            lambda: mesh.signaling is not None and not mesh.signaling.connected,
            10,
            "signaling to be gone",
        )
        # The other node checks the routed offer's signature with the key in our member
        # record, which reaches it by gossip through the first neighbour: an offer that
        # arrives before the record is dropped (tests/test_hostile_peer.py checks that).
        await asyncio.to_thread(
            wait_until,
            lambda: any(
                n["node"] == mesh.node_id
                for n in cluster.api(other_name, "GET", "/v1/status")["membership"]["nodes"]
            ),
            10,
            what=f"{other_name} to hear of us (our signed member record)",
        )
        # Offer -> ROUTE via the first neighbour -> the other; answer -> ROUTE back.
        mesh._dial(ids[other_name])
        await wait_for(lambda: ids[other_name] in mesh.neighbours(), 15, "a link via the mesh")
        assert mesh.stats()["negotiatedViaMesh"] >= 1
        assert first in mesh.neighbours()
        await asyncio.to_thread(
            wait_until,
            lambda: linked(other_name, mesh.node_id),
            10,
            what=f"{other_name} to list the new link (negotiated through {first_name})",
        )
    finally:
        await membership.close()
        await mesh.close()


async def test_a_dial_is_given_up_only_when_the_node_joined_signaling_after_it() -> None:
    """A peer-joined event reaches the mesh a little after the peer list has the peer: a dial
    made in between went to the node's current session and must survive the event, while a
    dial made before it went to an old session and is given up (the node would never answer
    it, and it would refuse the node's own offers as glare)."""
    ice.use_host_addresses(["127.0.0.1"])
    settings = TransportSettings(maintain_interval=3600)
    token = generate_token()
    mesh = Mesh(
        identity=NodeIdentity.generate(),
        name="give-up-test",
        kind="native",
        cluster=cluster_id(token),
        token=token,
        signaling_url="ws://127.0.0.1:9/ws",
        settings=settings,
        link_factory=peer_link_factory(settings),
        connect=aiohttp_connect,
        check_signature=verify_signature,
    )
    node = "a" * 32
    try:
        before = time.monotonic()
        # A dial whose offer went out and waits for its answer (no signaling here to send it).
        dial = mesh._pending[node] = mesh._new_link(node, "0" * 16, initiator=True)
        mesh._on_signaling_peer(PeerInfo(node, "n", "native", seen=before))
        await asyncio.sleep(0.2)
        assert mesh._pending.get(node) is dial, dial.close_reason
        mesh._on_signaling_peer(PeerInfo(node, "n", "native", seen=time.monotonic()))
        await wait_for(lambda: node not in mesh._pending, 5, "the stale dial to be given up")
        assert "joined signaling again" in dial.close_reason
    finally:
        await mesh.close()
