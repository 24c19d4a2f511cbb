"""A member that misbehaves on its data channel is dropped and logged; the agent keeps serving."""

from __future__ import annotations

import asyncio
import secrets

import msgpack
import pytest

from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.net import ice
from p2pkube.net.frames import FrameType, encode_frame
from p2pkube.net.handshake import Handshake
from p2pkube.net.identity import NodeIdentity, verify_signature
from p2pkube.net.link import LinkState, PeerLink
from p2pkube.net.settings import TransportSettings
from p2pkube.net.signaling_client import SignalingClient
from signaling.protocol import cluster_id

HOSTILE_MESSAGES = {
    "garbage": b"\xc1\xc1\xc1 this is not msgpack",
    "oversize": encode_frame(FrameType.FRAGMENT, [0, 1 << 40, b"x" * 10]),
    "unknown-type": msgpack.packb([1, 99, {"hello": "there"}]),
    "text": "a text message on the binary channel",
}


async def link_to(
    cluster: LocalCluster, target_id: str, *, link_secret: str | bytes | None = None
) -> tuple[PeerLink, SignalingClient]:
    """Join the cluster as a legitimate member and open a real link to ``target_id``.

    ``link_secret`` replaces the token in the link handshake (a token, or a key used as the
    link key): what an attacker who is not a member would have to offer."""
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
    )
    await client.start()
    established = asyncio.Event()
    link = PeerLink(
        expected_node=target_id,
        session=secrets.token_hex(8),
        initiator=True,
        handshake=Handshake(
            identity,
            "hostile",
            "native",
            cluster_id(cluster.token),
            cluster.token if link_secret is None else link_secret,
            check_signature=verify_signature,
        ),
        settings=TransportSettings(),
        on_established=lambda link: established.set(),
        on_frame=lambda link, frame: None,
        on_closed=lambda link: None,
    )
    offer = await link.create_offer()
    await client.send_signal(target_id, {"kind": "offer", "sdp": offer, "session": link.session})
    async with asyncio.timeout(10):
        answer = await answers.get()
        while answer.get("session") != link.session:  # e.g. the target dialing us: ignored
            answer = await answers.get()
    assert answer["kind"] == "answer", answer
    await link.accept_answer(str(answer["sdp"]))
    await asyncio.wait_for(established.wait(), 10)
    return link, client


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
