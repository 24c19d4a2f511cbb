"""Hostile members against a real cluster: a member that misbehaves on its data channel is
dropped and logged while the agent keeps serving; it cannot declare another node gone or
alive with SWIM updates it cannot prove (issue 13: the signed member record); a true
accusation is only a suspicion, refuted; routed messages under made-up sources are refused.

The hostile `Member` is this test process with the join token, a node key of its own and one
real WebRTC link, speaking the wire protocol with the real encoders (`swim_wire`). Beside its
lies it is an honest SWIM member: it announces a signed ALIVE record (the agents learn its
key), acks the pings meant for it (direct or routed) and refutes suspicions of itself."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import yaml

from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.membership.swim_host import ROUTED_KIND
from p2pkube.membership.swim_messages import (
    MAX_PROOF,
    MAX_SEQ,
    Ack,
    Gossip,
    Message,
    Ping,
    PushPull,
    Status,
    Update,
)
from p2pkube.membership.swim_wire import DOMAIN, decode, encode, parse_proof, proof_of, record_bytes
from p2pkube.membership.topology import short_id
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
from tests.clusters import module_cluster, wait_all_ready
from tests.test_pods_cluster import write_manifest
from tests.test_workloads_cluster import deployment, items, running

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

HOSTILE_MESSAGES: dict[str, bytes | str] = {
    "garbage": b"\xc1\xc1\xc1 this is not msgpack",
    "oversize": encode_frame(FrameType.FRAGMENT, [0, 1 << 40, b"x" * 10]),
    "unknown-type": msgpack.packb([PROTOCOL_VERSION, 99, {"hello": "there"}]),
    # An agent from before signed heartbeats and routes speaks frames of version 1.
    "old-version": msgpack.packb([1, int(FrameType.PING), {}]),
    "text": "a text message on the binary channel",
}


SWIM_HOSTILE: dict[str, Any] = {
    "swim-not-an-array": {"kind": 5, "updates": []},
    "swim-unknown-kind": [42, []],
    "swim-wrong-types": [1, "one", "n1", []],  # a ping whose seq is a string
    "swim-bad-update": [5, [["x", 9, 1, "x", None, 0.0]]],  # status 9
    "swim-proof-over-max": [5, [["x", 0, 1, "x", b"x" * (MAX_PROOF + 1), 0.0]]],
    "swim-10000-updates": [5, [["x", 2, 1, "y", None, 0.0]] * 10_000],
}
"""SWIM frame bodies no honest member sends (sent as SWIM frames): each drops the sender."""


POLL = 0.05
"""Seconds between two looks at every agent's ``get nodes`` while a forgery is tried."""


@dataclass
class Member:
    """The hostile test peer (see the module's docstring). It records the members' signed
    ALIVE records and the rpc answers that reach it, acks the pings meant for it, and sends
    what a member can: SWIM and routed messages signed with its own key, truthful or not."""

    identity: NodeIdentity
    link: PeerLink
    client: SignalingClient
    signatures: Signatures
    inc: int = field(default_factory=lambda: int(time.time()) % 2**31)
    records: dict[str, Update] = field(default_factory=dict)
    """Node id -> the newest ALIVE (with its signed record) heard of that node."""
    answers: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=4096)
    )
    """The ``data`` of the rpc answers routed to us."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def id(self) -> str:
        return self.identity.node_id

    def on_frame(self, _: object, frame: Frame) -> None:
        if frame.type is FrameType.SWIM:
            self._on_swim(frame.body, routed_from=None)
        elif frame.type is FrameType.ROUTE and frame.body["dst"] == self.id:
            data = msgpack.unpackb(frame.body["data"])
            if data.get("kind") == ROUTED_KIND:
                self._on_swim(data["m"], routed_from=frame.body["src"])
            elif data.get("kind") == "rpc-res" and not self.answers.full():
                self.answers.put_nowait(data)

    def _on_swim(self, body: Any, routed_from: str | None) -> None:
        message = decode(body, max_updates=1 << 20, max_states=1 << 20)
        states = message.states if isinstance(message, PushPull) else ()
        for update in (*message.updates, *states):
            known = self.records.get(update.name)
            if update.status is Status.ALIVE and update.proof is not None:
                if known is None or update.incarnation > known.incarnation:
                    self.records[update.name] = update
            elif update.name == self.id and update.incarnation >= self.inc:
                self._spawn(self.refute(update.incarnation + 1))  # a suspicion of us
        if isinstance(message, Ping) and message.target == self.id:
            ack = Ack(message.seq, ())
            if routed_from is None:
                self.send(ack)
            else:
                self._spawn(self.route(routed_from, {"kind": ROUTED_KIND, "m": encode(ack)}))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def send(self, message: Message | list[Any]) -> None:
        """A SWIM frame to our neighbour: a message, or a body made by hand."""
        body = message if isinstance(message, list) else encode(message)
        assert self.link.send(FrameType.SWIM, body)

    async def proof(
        self,
        node: str,
        pub: bytes,
        incarnation: int,
        *,
        left: bool = False,
        signer: Signatures | None = None,
        peers: Sequence[str] = (),
    ) -> bytes:
        """A member record of ``node`` (with ``pub``) signed by ``signer`` (default: us), so
        valid only when ``signer`` holds ``pub``'s key."""
        record = record_bytes(
            node, pub, "hostile", incarnation, 0.0, left, [short_id(p) for p in peers]
        )
        return proof_of(record, await (signer or self.signatures).sign(DOMAIN, record))

    async def alive(self, inc: int | None = None) -> Update:
        """Our own ALIVE, with a record we signed (listing our one neighbour)."""
        inc = self.inc if inc is None else inc
        pub, peers = self.identity.public_key, [self.link.remote_id or ""]
        return Update(
            self.id, Status.ALIVE, inc, self.id, await self.proof(self.id, pub, inc, peers=peers)
        )

    async def announce(self) -> None:
        """Tell our neighbour who we are, as every member does when it joins."""
        self.send(Gossip((await self.alive(),)))

    async def refute(self, incarnation: int) -> None:
        if incarnation > self.inc:
            self.inc = incarnation
            await self.announce()

    async def route(self, dst: str, data: dict[str, Any], *, src: str | None = None) -> None:
        """A routed message signed with our key, claiming to come from ``src`` if given
        (then the signature is ours, not ``src``'s: it verifies for nobody)."""
        route = await seal_route(self.signatures, dst, data, ttl=4)
        if src is not None:
            route["src"] = src
        assert self.link.send(FrameType.ROUTE, route)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
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
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=64)
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
    if established.is_set():
        await member.announce()  # as every member does: the agents learn our key
    return member


async def link_to(
    cluster: LocalCluster, target_id: str, *, link_secret: str | bytes | None = None
) -> tuple[PeerLink, SignalingClient]:
    """:func:`join_as_member`, for tests that need only the link and the signaling client."""
    member = await join_as_member(cluster, target_id, link_secret=link_secret)
    return member.link, member.client


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LocalCluster]:
    """n1 and n2, shared by the hostile-frame cases: each case joins as a member of its own
    (a new identity), so the cases do not see each other's drops (each reads n1's log from
    where it stood when the case began)."""
    root = tmp_path_factory.mktemp("hostile-frames") / "cluster"
    with module_cluster(root, request) as cluster:
        cluster.start_signaling()
        for name in ["n1", "n2"]:
            cluster.start_agent(name)
        for name in ["n1", "n2"]:
            cluster.wait_api(name)
        yield cluster


@pytest.mark.parametrize("kind", [*HOSTILE_MESSAGES, *SWIM_HOSTILE])
async def test_hostile_frames_drop_the_sender_not_the_agent(pair: LocalCluster, kind: str) -> None:
    cluster = pair
    n1 = (await asyncio.to_thread(cluster.api, "n1", "GET", "/v1/status"))["nodeID"]
    link, client = await link_to(cluster, n1)
    mark = cluster.log_size("n1")
    try:
        # what a broken or malicious peer would do
        if kind in HOSTILE_MESSAGES:
            link._channel.send(HOSTILE_MESSAGES[kind])
        else:
            assert link.send(FrameType.SWIM, SWIM_HOSTILE[kind])

        def dropped() -> bool:
            return "dropping peer" in cluster.log_since("n1", mark)

        await asyncio.to_thread(wait_until, dropped, 10, what="n1 to drop the hostile peer")
        await asyncio.to_thread(
            wait_until, lambda: link.state is LinkState.CLOSED, 10, what="the link to close"
        )
        # n1 keeps serving the others: a write on n2 still reaches it.
        after = f"after-{kind}"
        await asyncio.to_thread(
            cluster.api,
            "n2",
            "PUT",
            "/v1/objects",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": after}, "data": {}},
        )
        await asyncio.to_thread(
            wait_until,
            lambda: cluster.api("n1", "GET", f"/v1/objects/ConfigMap/default/{after}"),
            10,
            what="n1 to keep syncing",
        )
        assert cluster.agents["n1"].running
    finally:
        await link.close("test over", notify=False)
        await client.close()


NAMES = ["n1", "n2", "n3"]
COUNTERS = ("recordsForged", "updatesUnproven", "accusationsUnproven")


async def start_agents(cluster: LocalCluster, *extra: str) -> dict[str, str]:
    """n1, n2 and n3 running SWIM, each listing all three Ready; name -> node id."""
    cluster.start_signaling()
    cluster.extra_agent_args = list(extra)
    for name in NAMES:
        cluster.start_agent(name)
    await asyncio.to_thread(wait_all_ready, cluster, NAMES, 60)
    return {n: (await asyncio.to_thread(status, cluster, n))["nodeID"] for n in NAMES}


def status(cluster: LocalCluster, viewer: str) -> dict[str, Any]:
    return dict(cluster.api(viewer, "GET", "/v1/status"))


def membership(cluster: LocalCluster, viewer: str) -> dict[str, Any]:
    """``viewer``'s SWIM status: counters, own incarnation, and its view of every member."""
    return dict(status(cluster, viewer)["membership"])


def entry(view: dict[str, Any], node_id: str) -> dict[str, Any] | None:
    """How a membership status sees ``node_id`` (None: not at all)."""
    return next((n for n in view["nodes"] if n["node"] == node_id), None)


def conditions(cluster: LocalCluster, viewer: str) -> dict[str, tuple[str, str]]:
    """Node name -> (status, reason) of its Ready condition, as ``viewer`` lists the nodes."""
    seen = {}
    for node in cluster.api(viewer, "GET", "/v1/nodes")["items"]:
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        seen[node["metadata"]["name"]] = (ready["status"], ready["reason"])
    return seen


@dataclass
class Sightings:
    """What every viewer's ``get nodes`` showed, polled every ``POLL`` s: each sighting of
    ``name`` not Ready (time, viewer, reason), and every node name ever listed."""

    name: str
    not_ready: list[tuple[float, str, str]] = field(default_factory=list)
    listed: set[str] = field(default_factory=set)

    def poll(self, cluster: LocalCluster, seconds: float) -> Sightings:
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            for viewer in NAMES:
                nodes = conditions(cluster, viewer)
                self.listed |= set(nodes)
                if nodes[self.name][0] != "True":
                    self.not_ready.append((now, viewer, nodes[self.name][1]))
            time.sleep(POLL)
        return self


async def hear_record(members: Sequence[Member], node: str) -> None:
    """Wait until every member has heard ``node``'s signed ALIVE (the gossip brings it)."""
    async with asyncio.timeout(10):
        while not all(node in m.records for m in members):  # noqa: ASYNC110 - filled by frames
            await asyncio.sleep(0.05)


async def forge(member: Member, victim: str, inc: int) -> None:
    """Everything a member could try to declare ``victim`` gone (or alive at an incarnation
    of the member's choosing) without the victim's key: as gossip and as push/pull state."""
    pub = parse_proof(member.records[victim].proof or b"").pub  # as the gossip brought it
    # (a) a LEFT whose record is signed with the member's own key (and names that key)
    own_key = await member.proof(victim, member.identity.public_key, inc, left=True)
    # (b) a LEFT, and an ALIVE ahead, whose records name the victim's key: bad signatures
    wrong_signer = await member.proof(victim, pub, inc, left=True)
    ahead = await member.proof(victim, pub, inc + 1)
    left_own_key = Update(victim, Status.LEFT, inc, victim, own_key)
    left_forged = Update(victim, Status.LEFT, inc, victim, wrong_signer)
    alive_forged = Update(victim, Status.ALIVE, inc + 1, victim, ahead)
    # (c) accusations above every incarnation the victim signed: nobody could refute them
    dead_far = Update(victim, Status.DEAD, MAX_SEQ, member.id)
    suspect_far = Update(victim, Status.SUSPECT, MAX_SEQ - 1, member.id)
    for update in (left_own_key, left_forged, alive_forged, dead_far, suspect_far):
        member.send(Gossip((update,)))
    member.send(PushPull((left_forged, dead_far), False, ()))


@pytest.mark.serial  # times liveness against SWIM's bound
async def test_forged_records_cannot_declare_a_node_gone_or_alive(cluster: LocalCluster) -> None:
    """Issue 10: one member's forged heartbeat marked a victim NotReady everywhere, for good.
    With SWIM, ALIVE and LEFT are believed only with a record the member signed itself, and
    an accusation only at an incarnation it signed (so it can refute it). Two members try
    every forgery on n1 and n2 about n3: n3 is never listed NotReady anywhere (every agent's
    ``get nodes`` polled every 50 ms), the forgeries are counted and logged, nobody is
    dropped for them (a relay may pass on a forgery in good faith) and all keep running."""
    ids = await start_agents(cluster)
    victim = ids["n3"]
    members = [await join_as_member(cluster, ids[name]) for name in ("n1", "n2")]
    try:
        await hear_record(members, victim)
        before = {v: await asyncio.to_thread(membership, cluster, v) for v in ("n1", "n2")}
        watch = asyncio.create_task(asyncio.to_thread(Sightings("n3").poll, cluster, 4.0))
        for member in members:
            await forge(member, victim, members[0].records[victim].incarnation)
        sightings = await watch
        assert sightings.not_ready == [], sightings.not_ready
        signed = (await asyncio.to_thread(membership, cluster, "n3"))["incarnation"]
        for viewer in ("n1", "n2"):
            after = await asyncio.to_thread(membership, cluster, viewer)
            grew = {k: after[k] - before[viewer][k] for k in COUNTERS}
            assert grew["recordsForged"] >= 2, grew  # (b): the LEFT and the ALIVE ahead
            assert grew["updatesUnproven"] >= 1, grew  # (a): the record's key is not n3's
            assert grew["accusationsUnproven"] >= 2, grew  # (c), in gossip and push/pull
            seen = entry(after, victim)
            assert seen is not None and seen["reason"] == "AgentReady", seen
            assert seen["incarnation"] <= signed, (seen, signed)  # none n3 did not sign
            for member in members:  # the liars themselves: members like any, ALIVE
                liar = entry(after, member.id)
                assert liar is not None and liar["reason"] == "AgentReady", liar
                assert liar["incarnation"] == member.inc, liar
            log = await asyncio.to_thread(cluster.log_tail, viewer, 400)
            assert "has a bad signature: dropped" in log
            assert "does not match its public key" in log
        assert all(m.link.state is LinkState.ESTABLISHED for m in members)
        assert all(cluster.agents[name].running for name in NAMES)
    finally:
        for member in members:
            await member.close()


@pytest.mark.serial  # times liveness against SWIM's bound
async def test_a_made_up_node_is_a_member_nobody_answers_for_not_a_node(
    cluster: LocalCluster,
) -> None:
    """(d) A record proves only that its key's holder said it. A member can make up a key
    and sign a valid ALIVE for it: to the others that is a node that exists, as any new
    node does, so it is believed, gossiped and probed. Nobody answers its pings, so it is
    suspected and DEAD within the detection bound. It never shows in ``get nodes``: a Node
    is an object a node writes about itself, and the made-up node writes none."""
    ids = await start_agents(cluster)
    member = await join_as_member(cluster, ids["n1"])
    phantom = NodeIdentity.generate()
    signer = Signatures(phantom, member.signatures.cluster, verify_signature)
    try:
        proof = await member.proof(
            phantom.node_id, phantom.public_key, 1, signer=signer, peers=[member.id]
        )
        watch = asyncio.create_task(asyncio.to_thread(Sightings("n3").poll, cluster, 3.0))
        member.send(Gossip((Update(phantom.node_id, Status.ALIVE, 1, phantom.node_id, proof),)))
        sent = time.monotonic()

        def reason(viewer: str) -> str | None:
            seen = entry(membership(cluster, viewer), phantom.node_id)
            return None if seen is None else str(seen["reason"])

        for viewer in NAMES:  # believed by n1, and by the others through the gossip
            await asyncio.to_thread(
                wait_until, lambda v=viewer: reason(v) is not None, 5, what=f"{viewer} to hear it"
            )
        for viewer in NAMES:
            await asyncio.to_thread(
                wait_until,
                lambda v=viewer: reason(v) == "AgentDead",
                15,
                interval=0.1,
                what=f"{viewer} to declare the made-up node DEAD",
            )
        dead_after = time.monotonic() - sent
        sightings = await watch
        assert sightings.listed == set(NAMES), sightings.listed  # never a Node
        assert sightings.not_ready == [], sightings.not_ready  # nothing else disturbed
        print(f"made-up node DEAD everywhere {dead_after:.2f}s after its ALIVE")
        assert member.link.state is LinkState.ESTABLISHED
    finally:
        await signer.close()
        await member.close()


async def refuted(member: Member, victim: str, inc: int) -> int:
    """The incarnation ``victim`` refuted ``inc`` with, once the member hears it (the
    refutation goes to the accusers too), or ``inc`` after a second without it."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            while member.records[victim].incarnation <= inc:  # noqa: ASYNC110 - frames fill it
                await asyncio.sleep(0.01)
    return member.records[victim].incarnation


def grown(cluster: LocalCluster, viewer: str, key: str, before: dict[str, Any]) -> int:
    return int(membership(cluster, viewer)[key]) - int(before[key])


@pytest.mark.serial  # a refutation must beat the suspicion timeout
@pytest.mark.parametrize("accusations", [1, 30])
async def test_a_true_accusation_is_refuted_never_notready_nor_an_eviction(
    cluster: LocalCluster, tmp_path: Path, accusations: int
) -> None:
    """(e) A DEAD of n3 at an incarnation n3 signed (its last, and the next in case a
    refutation is on its way) from one member alone is taken by n1 as one more suspicion
    (``swim.believe_dead_after``: a DEAD is taken only once n1 has suspected n3 that long
    itself). n3 refutes it with a higher incarnation and is never listed NotReady anywhere,
    and no pod of it is evicted (one replica of a Deployment on each node keeps its uid);
    also when the member repeats the accusation at each incarnation n3 refutes with (30
    times, ~0.1 s apart), which before that setting kept n3 NotReady on n1 for seconds and
    got its pod evicted (3 runs of 3)."""
    ids = await start_agents(cluster, "--memory", "1Gi")
    victim = ids["n3"]
    manifest = write_manifest(tmp_path, deployment("steady", 3, "600"))
    await asyncio.to_thread(cluster.cli, "n1", "apply", "-f", str(manifest))

    def spread() -> list[dict[str, Any]] | None:
        pods = running(cluster, "n1", "steady")
        return pods if sorted(p["spec"]["nodeName"] for p in pods) == NAMES else None

    pods = await asyncio.to_thread(wait_until, spread, 60, what="one replica on each node")
    uids = {p["metadata"]["uid"] for p in pods}
    member = await join_as_member(cluster, ids["n1"])
    try:
        await hear_record([member], victim)
        before = {"n3": await asyncio.to_thread(membership, cluster, "n3")}
        watch = asyncio.create_task(
            asyncio.to_thread(Sightings("n3").poll, cluster, 4.0 + 0.2 * accusations)
        )
        inc = 0
        for _ in range(3):  # under load n3 refutes suspicions of its own: inc moves on
            view = entry(await asyncio.to_thread(membership, cluster, "n1"), victim) or {}
            inc = max(inc, member.records[victim].incarnation, view.get("incarnation", 0))
            member.send(
                Gossip(tuple(Update(victim, Status.DEAD, i, member.id) for i in (inc, inc + 1)))
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.to_thread(
                    wait_until, lambda: grown(cluster, "n3", "refutations", before["n3"]), 2
                )
                break
        first = inc
        for _ in range(accusations - 1):
            inc = await refuted(member, victim, inc)
            member.send(Gossip((Update(victim, Status.DEAD, inc, member.id),)))
        sightings = await watch
        assert sightings.not_ready == [], sightings.not_ready
        assert await asyncio.to_thread(grown, cluster, "n3", "refutations", before["n3"]) >= 1
        suspected = f"({victim}) is Ready: AgentSuspected"  # what n1 made of the DEAD
        assert suspected in await asyncio.to_thread(cluster.log_tail, "n1", 400)
        assert (await asyncio.to_thread(membership, cluster, "n3"))["incarnation"] > first
        await asyncio.sleep(2.0)  # well past scheduler.pod_eviction_grace
        now = await asyncio.to_thread(items, cluster, "n1", "Pod", "app=steady")
        assert {p["metadata"]["uid"] for p in now} == uids, now  # none evicted or added
        for viewer in ("n1", "n2"):
            seen = entry(await asyncio.to_thread(membership, cluster, viewer), victim)
            assert seen is not None and seen["ready"] and seen["incarnation"] > first, seen
        assert all(cluster.agents[name].running for name in NAMES)
    finally:
        await member.close()


async def test_well_shaped_but_wrong_swim_values_are_counted_not_punished(
    cluster: LocalCluster,
) -> None:
    """Values of the right types but wrong (a name too long, a seq beyond 32 bits) could be
    an honest newer peer's; the core drops the message and counts it, the link stays."""
    cluster.start_signaling()
    cluster.start_agent("n1")
    await asyncio.to_thread(cluster.wait_api, "n1")
    n1 = (await asyncio.to_thread(status, cluster, "n1"))["nodeID"]
    member = await join_as_member(cluster, n1)
    try:
        before = (await asyncio.to_thread(membership, cluster, "n1"))["dropped"]
        member.send(Ping(1, "x" * 300, ()))  # a target name over MAX_NAME
        member.send([1, 2**40, n1, []])  # a seq beyond 32 bits

        def malformed() -> int:
            dropped = membership(cluster, "n1")["dropped"]
            return int(dropped.get("malformed", 0)) - int(before.get("malformed", 0))

        await asyncio.to_thread(wait_until, lambda: malformed() >= 2, 10, what="counted")
        assert "dropping peer" not in await asyncio.to_thread(cluster.log_tail, "n1", 300)
        assert member.link.state is LinkState.ESTABLISHED
        await member.announce()  # and the member is still heard
        assert cluster.agents["n1"].running
    finally:
        await member.close()


def rpc_request(call_id: int, method: str, body: Any) -> dict[str, Any]:
    return {"kind": "rpc-req", "id": call_id, "method": method, "body": msgpack.packb(body)}


async def test_routed_requests_from_made_up_sources_are_refused(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """Issue 10: 200 rpc requests under made-up sources filled all 128 rpc slots of a node,
    and an honest node's request was answered ``busy``. Routed messages are signed by their
    source now: made-up sources are dropped, and the per-source limit holds for the member's
    real id (the agents know its key from the signed ALIVE it announced when it joined)."""
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
        busy: list[int] = []
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
