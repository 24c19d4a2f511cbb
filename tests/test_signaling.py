"""Tests of the signaling server and the agent's signaling client.

Everything runs against a real server bound to 127.0.0.1 (port 0) in this
process, through real WebSocket connections; timings are shrunk through the
settings so the whole file stays fast.  Peers join as the protocol says: they
answer the server's challenge with a mac keyed by the signaling key and a
signature by a real Ed25519 node key whose id is their peer id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2pkube.net.aiohttp_websocket import AiohttpWebSocket, aiohttp_connect
from p2pkube.net.identity import NodeIdentity
from p2pkube.net.jointoken import (
    Verifier,
    b64decode,
    cluster_id,
    generate_token,
    hkdf_sha256,
    link_key,
    signaling_key,
    token_problem,
)
from p2pkube.net.settings import SignalingClientSettings
from p2pkube.net.signaling_client import (
    PeerInfo,
    SignalingClient,
    SignalingRejected,
    websocket_url,
)
from p2pkube.net.signaling_wire import FlatValue, ProtocolError, parse_client_message
from p2pkube.net.websocket import Connect, WebSocket
from signaling.admission import JoinThrottle, throttle_key
from signaling.server import STATE_KEY, SignalingServer, create_app
from signaling.settings import SignalingSettings
from signaling.tokens import load_tokens, load_verifiers
from tests import rawsignal
from tests.rawsignal import challenge, expect_fatal, open_socket, recv, send

TOKEN = generate_token()
OTHER_TOKEN = generate_token()
ROOT = Path(__file__).resolve().parent.parent

#: Server timings for tests: joins time out fast, closes do not linger, and the
#: heartbeat stays long enough that idle raw test sockets are not dropped.
FAST = SignalingSettings(heartbeat=5.0, join_timeout=1.0, close_timeout=0.5)
#: Client timings for tests: reconnect quickly.
CLIENT_FAST = SignalingClientSettings(
    reconnect_initial_delay=0.05,
    reconnect_max_delay=0.3,
    connect_timeout=2.0,
    close_timeout=0.5,
)
OFFER: dict[str, FlatValue] = {
    "kind": "offer",
    "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n",
    "ice": True,
}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

_KEYS: dict[str, NodeIdentity] = {}


def key(label: str) -> NodeIdentity:
    """The node key of the test peer called ``label`` (one per label, for the whole file)."""
    if label not in _KEYS:
        _KEYS[label] = NodeIdentity.generate()
    return _KEYS[label]


def pid(label: str) -> str:
    """The peer id of the test peer called ``label``: its key's node id."""
    return key(label).node_id


def record(label: str, name: str | None = None, kind: str = "native") -> dict[str, str]:
    """The peer object the server shows for ``label``."""
    return {"peer": pid(label), "name": name or label, "kind": kind}


ServerFactory = Callable[..., Awaitable[SignalingServer]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    """Start servers on demand; stop them all at the end of the test."""
    servers: list[SignalingServer] = []

    async def factory(
        settings: SignalingSettings = FAST,
        tokens: list[str | Verifier] | None = None,
        port: int = 0,
    ) -> SignalingServer:
        server = SignalingServer(tokens or [TOKEN, OTHER_TOKEN], settings, port=port)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> SignalingServer:
    return await make_server()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def connect(
    http: aiohttp.ClientSession, server: SignalingServer, **kwargs: Any
) -> aiohttp.ClientWebSocketResponse:
    return await open_socket(http, server.url, **kwargs)


def signed_join(
    nonce: bytes,
    label: str,
    *,
    token: str = TOKEN,
    name: str | None = None,
    kind: str = "native",
    signer: NodeIdentity | None = None,
    peer: str | None = None,
) -> dict[str, Any]:
    """The ``join`` answering ``nonce`` for test peer ``label`` (see rawsignal.signed_join)."""
    return rawsignal.signed_join(
        nonce, key(label), token, name or label, kind=kind, signer=signer, peer=peer
    )


async def join(
    http: aiohttp.ClientSession,
    server: SignalingServer,
    label: str,
    *,
    token: str = TOKEN,
    name: str | None = None,
    kind: str = "native",
    **kwargs: Any,
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """Open a raw socket, answer the challenge, and return it with the welcome."""
    ws = await connect(http, server, **kwargs)
    nonce = await challenge(ws)
    await send(ws, signed_join(nonce, label, token=token, name=name, kind=kind))
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def expect_silence(ws: aiohttp.ClientWebSocketResponse, seconds: float = 0.3) -> None:
    with pytest.raises(asyncio.TimeoutError):
        msg = await ws.receive(timeout=seconds)
        pytest.fail(f"unexpected message {msg}")


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` (state owned by other tasks) until true or fail."""
    for _ in range(int(within / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    assert condition(), "condition not reached in time"


async def check_healthy(http: aiohttp.ClientSession, server: SignalingServer) -> None:
    """A fresh pair of peers can still join and relay: the server survived."""
    a, _ = await join(http, server, "healthy-a")
    b, welcome = await join(http, server, "healthy-b")
    assert record("healthy-a") in welcome["peers"]
    assert (await recv(a))["type"] == "peer-joined"
    await send(a, {"type": "signal", "to": pid("healthy-b"), "data": OFFER})
    assert await recv(b) == {"type": "signal", "from": pid("healthy-a"), "data": OFFER}
    await a.close()
    await b.close()


class Recorder:
    """Callbacks for a SignalingClient that record what they see."""

    def __init__(self) -> None:
        self.signals: list[tuple[str, dict[str, Any]]] = []
        self.joined: list[PeerInfo] = []
        self.left: list[str] = []

    def on_signal(self, sender: str, data: dict[str, Any]) -> None:
        self.signals.append((sender, data))

    async def on_peer_joined(self, info: PeerInfo) -> None:  # async on purpose
        self.joined.append(info)

    def on_peer_left(self, peer: str) -> None:
        self.left.append(peer)


def info(label: str) -> PeerInfo:
    return PeerInfo(pid(label), label, "native")


def make_client(
    url: str,
    label: str,
    recorder: Recorder,
    *,
    token: str = TOKEN,
    settings: SignalingClientSettings = CLIENT_FAST,
    connect: Connect = aiohttp_connect,
) -> SignalingClient:
    return SignalingClient(
        url,
        token,
        key(label),
        label,
        "native",
        on_signal=recorder.on_signal,
        on_peer_joined=recorder.on_peer_joined,
        on_peer_left=recorder.on_peer_left,
        settings=settings,
        connect=connect,
    )


def connect_from(address: str) -> Any:
    """A client ``Connect`` whose sockets come from local address ``address`` (any
    127.x.y.z is this machine's loopback): another client address, as the server sees it."""

    async def open_socket(
        url: str, heartbeat: float, max_receive_bytes: int, close_timeout: float
    ) -> WebSocket:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))
        try:
            ws = await session.ws_connect(url, heartbeat=heartbeat, max_msg_size=max_receive_bytes)
        except BaseException:
            await session.close()
            raise
        return AiohttpWebSocket(session, ws)

    return open_socket


# --------------------------------------------------------------------------
# protocol helpers
# --------------------------------------------------------------------------


def test_cluster_identity_and_derived_keys() -> None:
    token = generate_token()
    assert len(token) >= 32 and token != generate_token() and token_problem(token) is None
    assert len(cluster_id(token)) == 16 and int(cluster_id(token), 16) >= 0
    # Two independent 32-byte keys, neither the cluster id nor each other.
    sk, lk = signaling_key(token), link_key(token)
    assert len(sk) == len(lk) == 32 and sk != lk
    assert cluster_id(token) not in (sk.hex()[:16], lk.hex()[:16])
    assert signaling_key(OTHER_TOKEN) != sk
    verifier = Verifier.from_token(token)
    assert verifier == Verifier(cluster_id(token), sk)
    assert Verifier.parse(verifier.line()) == verifier
    assert token not in verifier.line() and lk.hex() not in repr(verifier)
    with pytest.raises(ValueError, match="verifier"):
        Verifier.parse(f"p2pkube-verifier-v1:{cluster_id(token)}:short")


def test_hkdf_matches_rfc_5869() -> None:
    """Test cases 1 and 3 of RFC 5869 (A.1, A.3): the stdlib HKDF is the real one."""
    case1 = hkdf_sha256(
        bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert case1.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    case3 = hkdf_sha256(bytes.fromhex("0b" * 22), salt=b"", info=b"", length=42)
    assert case3.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def test_short_tokens_are_refused_with_how_to_make_one() -> None:
    for weak in ("t", "x" * 21):
        problem = token_problem(weak)
        assert problem is not None and "at least 22 characters" in problem
        assert "p2pkube token" in problem and "token_urlsafe" in problem
    assert token_problem("x" * 22) is None
    assert "printable" in (token_problem("has a space in it, and it is long") or "")


def test_load_tokens_and_verifiers(tmp_path: Path) -> None:
    tokens, generated = load_tokens(None, None)
    assert generated and len(tokens) == 1 and token_problem(tokens[0]) is None
    assert load_tokens(TOKEN, None) == ([TOKEN], False)
    path = tmp_path / "tokens"
    first, second = generate_token(), generate_token()
    path.write_text(f"# cluster one\n{first}\n\n  {second}  \n# end\n")
    assert load_tokens(TOKEN, path) == ([TOKEN, first, second], False)
    path.write_text("# nothing here\n")
    with pytest.raises(ValueError, match="holds no tokens"):
        load_tokens(None, path)
    with pytest.raises(ValueError, match="cannot read"):
        load_tokens(None, tmp_path / "missing")
    path.write_text(f"{first}\nshort-token\n")
    with pytest.raises(ValueError, match=r"tokens:2: a join token must be at least 22"):
        load_tokens(None, path)
    with pytest.raises(ValueError, match=r"--token: .*p2pkube token"):
        load_tokens("abc", None)
    verifiers = tmp_path / "verifiers"
    verifiers.write_text(f"# two clusters\n{Verifier.from_token(first).line()}\n"
                         f"{Verifier.from_token(second).line()}\n")  # fmt: skip
    assert load_verifiers(verifiers) == [Verifier.from_token(first), Verifier.from_token(second)]
    verifiers.write_text(f"{first}\n")  # a token is not a verifier
    with pytest.raises(ValueError, match="verifiers:1: not a verifier line"):
        load_verifiers(verifiers)


_PUB = "A" * 43  # 32 bytes of base64url
_MAC = "A" * 43
_SIG = "A" * 86  # 64 bytes


def _join_text(**fields: Any) -> str:
    base = {"type": "join", "cluster": "0123456789abcdef", "peer": "a", "name": "a"}
    base |= {"kind": "native", "pub": _PUB, "mac": _MAC, "sig": _SIG}
    return json.dumps({k: v for k, v in (base | fields).items() if v is not None})


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"type": "join"}', "missing field 'cluster'"),
        ('{"type": "hello"}', "unknown message type 'hello'"),
        (
            '{"type":"join","token":"an-old-client-sends-its-token","peer":"a","name":"a",'
            '"kind":"native"}',
            "never takes a token",
        ),
        (_join_text(cluster="CLUSTER"), "field 'cluster' must be 16 lowercase hex"),
        (_join_text(peer="a b"), "field 'peer' must be 1-64 characters of [A-Za-z0-9_-]"),
        (_join_text(name="Node1"), "field 'name' must be a DNS label"),
        (_join_text(name="-a"), "field 'name' must be a DNS label"),
        (_join_text(kind="robot"), "field 'kind' must be 'native' or 'browser'"),
        (_join_text(pub="A" * 42), "field 'pub' must be 32 bytes"),
        (_join_text(pub="A" * 42 + "+"), "field 'pub' must be 32 bytes"),
        (_join_text(mac=None), "missing field 'mac'"),
        (_join_text(sig=_MAC), "field 'sig' must be 64 bytes"),
        ('{"type":"signal","to":"b","data":[]}', "field 'data' must be an object"),
        ('{"type":"signal","to":"b","data":{"kind":"evil"}}', "field 'data.kind' must be"),
        (
            '{"type":"signal","to":"b","data":{"kind":"offer","x":{"y":1}}}',
            "field 'data.x' must be a string, number, boolean or null",
        ),
        ('{"type":"signal","to":"b","data":{"kind":"offer","x":NaN}}', "not valid JSON"),
    ],
)
def test_parse_client_message_names_the_problem(message: str, expected: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(message)
    assert info.value.code == "malformed"
    assert expected in info.value.message
    assert "an-old-client-sends-its-token" not in info.value.message


def test_join_throttle_is_bounded_and_counts_an_ipv6_host_per_64() -> None:
    now = [0.0]
    settings = SignalingSettings(
        join_failures_per_second=1.0, join_failure_burst=2, join_failure_addresses=8
    )
    throttle = JoinThrottle(settings, clock=lambda: now[0])
    for i in range(100):  # a guesser with many addresses cannot grow the table
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 8
    assert throttle.allows("192.0.2.1")  # never failed: no entry, no cost
    for _ in range(2):
        assert throttle.allows("192.0.2.1")
        throttle.failed("192.0.2.1")
    assert not throttle.allows("192.0.2.1")  # the burst is spent
    now[0] += 1.0
    assert throttle.allows("192.0.2.1")  # one more per second
    # Every address of one /64 shares a bucket; an IPv4-mapped address is its IPv4 one.
    assert throttle_key("2001:db8::1") == throttle_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert throttle_key("2001:db8:0:1::1") != throttle_key("2001:db8::1")
    assert throttle_key("::ffff:192.0.2.1") == "192.0.2.1"
    for address in ("2001:db8::1", "2001:db8::2"):
        throttle.failed(address)
    assert not throttle.allows("2001:db8::99")


# --------------------------------------------------------------------------
# server over real sockets
# --------------------------------------------------------------------------


async def test_http_routes(http: aiohttp.ClientSession, server: SignalingServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    async with http.get(f"{base}/healthz") as resp:
        assert resp.status == 200 and await resp.text() == "ok"
    async with http.get(f"{base}/nope") as resp:
        assert resp.status == 404
    async with http.get(f"{base}/ws") as resp:  # plain GET, no upgrade
        assert resp.status == 426


async def test_app_is_extensible(http: aiohttp.ClientSession) -> None:
    from aiohttp import web

    app = create_app([TOKEN], FAST)

    async def bundle(request: web.Request) -> web.Response:
        return web.Response(text="bundle")

    app.router.add_get("/app.js", bundle)
    async with SignalingServer(app=app) as srv:
        async with http.get(f"http://127.0.0.1:{srv.port}/app.js") as resp:
            assert await resp.text() == "bundle"
        await check_healthy(http, srv)


async def test_admit_valid_token(http: aiohttp.ClientSession, server: SignalingServer) -> None:
    ws, welcome = await join(http, server, "node-a", name="alpha", kind="browser")
    assert welcome == {
        "type": "welcome",
        "cluster": cluster_id(TOKEN),
        "peer": pid("node-a"),
        "peers": [],
    }
    await ws.close()


async def test_a_server_given_only_verifiers_admits_the_token_holders(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    server = await make_server(tokens=[Verifier.from_token(TOKEN)])
    ws, welcome = await join(http, server, "a")
    assert welcome["cluster"] == cluster_id(TOKEN)
    other = await connect(http, server)
    await send(other, signed_join(await challenge(other), "b", token=OTHER_TOKEN))
    await expect_fatal(other, "bad-token", 4001)
    await ws.close()


async def test_bad_token(http: aiohttp.ClientSession, server: SignalingServer) -> None:
    ws = await connect(http, server)
    await send(ws, signed_join(await challenge(ws), "a", token=generate_token()))
    message = await expect_fatal(ws, "bad-token", 4001)
    assert "token" in message
    await check_healthy(http, server)


async def test_a_join_answers_this_connections_challenge_only(
    http: aiohttp.ClientSession, server: SignalingServer
) -> None:
    """A join recorded on one connection (by the server, or anyone watching ws://) does not
    admit on another: the nonce differs."""
    first = await connect(http, server)
    recorded = signed_join(await challenge(first), "a")
    second = await connect(http, server)
    await challenge(second)
    await send(second, recorded)
    await expect_fatal(second, "bad-token", 4001)
    await send(first, recorded)
    assert (await recv(first))["type"] == "welcome"
    await first.close()


async def test_bad_token_client_start_raises(server: SignalingServer) -> None:
    client = make_client(server.url, "a", Recorder(), token=generate_token())
    with pytest.raises(SignalingRejected) as info:
        await client.start()
    assert info.value.code == "bad-token"
    assert not client.connected
    await client.close()  # idempotent after the failed start


async def test_a_victims_peer_id_cannot_be_taken_without_its_key(
    http: aiohttp.ClientSession, server: SignalingServer
) -> None:
    """A member (it holds the token) claims another node's peer id: with its own key the id
    does not match, with the victim's public key its signature does not verify. Either way it
    is refused, and the victim stays in the room, untouched."""
    victim, _ = await join(http, server, "victim")
    watcher, _ = await join(http, server, "watcher")
    assert (await recv(victim))["type"] == "peer-joined"
    own_key = await connect(http, server)
    await send(own_key, signed_join(await challenge(own_key), "mallory", peer=pid("victim")))
    assert "not the id of the public key" in await expect_fatal(own_key, "bad-identity", 4008)
    stolen_id = await connect(http, server)
    forged = signed_join(await challenge(stolen_id), "victim", signer=key("mallory"))
    await send(stolen_id, forged)
    assert "signature" in await expect_fatal(stolen_id, "bad-identity", 4008)
    await expect_silence(victim)  # never replaced
    await expect_silence(watcher)  # nobody left or joined
    room = server.state.rooms[cluster_id(TOKEN)]
    assert set(room.sessions) == {pid("victim"), pid("watcher")}
    await send(watcher, {"type": "signal", "to": pid("victim"), "data": OFFER})
    assert await recv(victim) == {"type": "signal", "from": pid("watcher"), "data": OFFER}
    await victim.close()
    await watcher.close()


async def test_presence_notifications(http: aiohttp.ClientSession, server: SignalingServer) -> None:
    a, _ = await join(http, server, "a", name="node-a")
    b, welcome = await join(http, server, "b", name="node-b", kind="browser")
    assert welcome["peers"] == [record("a", "node-a")]
    assert await recv(a) == {"type": "peer-joined", "peer": record("b", "node-b", "browser")}
    c, welcome = await join(http, server, "c")
    assert sorted(p["peer"] for p in welcome["peers"]) == sorted([pid("a"), pid("b")])
    assert (await recv(a))["peer"]["peer"] == pid("c")
    assert (await recv(b))["peer"]["peer"] == pid("c")
    await b.close()
    assert await recv(a) == {"type": "peer-left", "peer": pid("b")}
    assert await recv(c) == {"type": "peer-left", "peer": pid("b")}
    await a.close()
    await c.close()


async def test_relay_offer(http: aiohttp.ClientSession, server: SignalingServer) -> None:
    a, _ = await join(http, server, "a")
    b, _ = await join(http, server, "b")
    await recv(a)  # peer-joined b
    await send(a, {"type": "signal", "to": pid("b"), "data": OFFER})
    assert await recv(b) == {"type": "signal", "from": pid("a"), "data": OFFER}
    answer = {"kind": "answer", "sdp": "v=0", "n": 1, "f": 0.5, "x": None}
    await send(b, {"type": "signal", "to": pid("a"), "data": answer})
    assert await recv(a) == {"type": "signal", "from": pid("b"), "data": answer}
    await a.close()
    await b.close()


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "evil", "sdp": "x"},
        {"sdp": "x"},
        {"kind": "offer", "nested": {"a": 1}},
        {"kind": "candidate", "list": [1, 2]},
        "offer",
    ],
)
async def test_bad_signal_rejected_not_relayed(
    http: aiohttp.ClientSession, server: SignalingServer, data: Any
) -> None:
    a, _ = await join(http, server, "a")
    b, _ = await join(http, server, "b")
    await recv(a)  # peer-joined b
    await send(a, {"type": "signal", "to": pid("b"), "data": data})
    await expect_fatal(a, "malformed", 4003)
    # b sees a leave, and never the signal.
    assert await recv(b) == {"type": "peer-left", "peer": pid("a")}
    await expect_silence(b)
    await b.close()


async def test_rooms_are_isolated(http: aiohttp.ClientSession, server: SignalingServer) -> None:
    a, _ = await join(http, server, "a")
    x, welcome = await join(http, server, "x", token=OTHER_TOKEN)
    assert welcome["cluster"] == cluster_id(OTHER_TOKEN) != cluster_id(TOKEN)
    assert welcome["peers"] == []
    await send(x, {"type": "signal", "to": pid("a"), "data": OFFER})
    error = await recv(x)
    assert error["type"] == "error" and error["code"] == "unknown-peer"
    assert error["to"] == pid("a")
    await expect_silence(a)  # neither the signal nor x's arrival
    # unknown-peer is not fatal: x still relays within its own room.
    y, _ = await join(http, server, "y", token=OTHER_TOKEN)
    await recv(x)  # peer-joined y
    await send(x, {"type": "signal", "to": pid("y"), "data": OFFER})
    assert await recv(y) == {"type": "signal", "from": pid("x"), "data": OFFER}
    for ws in (a, x, y):
        await ws.close()


async def test_too_large(http: aiohttp.ClientSession, make_server: ServerFactory) -> None:
    server = await make_server(SignalingSettings(max_message_bytes=1024, close_timeout=0.5))
    a, _ = await join(http, server, "a")
    big = {"kind": "offer", "sdp": "x" * 2000}
    await send(a, {"type": "signal", "to": pid("a"), "data": big})
    message = await expect_fatal(a, "too-large", 4004)
    assert "1024 bytes" in message
    # Far beyond the limit, the WebSocket layer cuts the frame off unread.
    b, _ = await join(http, server, "b")
    await b.send_str("x" * 10_000)
    msg = await b.receive(timeout=3.0)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009
    await check_healthy(http, server)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("not json", "not valid JSON"),
        ('{"type": "signal", "to": "a", "data": {"kind": "offer"}}', "first message must be"),
        (_join_text(name=None), "missing field 'name'"),
        (_join_text(name="UPPER"), "field 'name' must be a DNS label"),
        (b"\x00binary", "binary frames are not accepted"),
    ],
)
async def test_malformed(
    http: aiohttp.ClientSession, server: SignalingServer, frame: str | bytes, expected: str
) -> None:
    ws = await connect(http, server)
    await challenge(ws)
    if isinstance(frame, bytes):
        await ws.send_bytes(frame)
    else:
        await ws.send_str(frame)
    message = await expect_fatal(ws, "malformed", 4003)
    assert expected in message


async def test_malformed_after_join(http: aiohttp.ClientSession, server: SignalingServer) -> None:
    a, _ = await join(http, server, "a")
    await a.send_str("{oops")
    assert "not valid JSON" in await expect_fatal(a, "malformed", 4003)
    b, _ = await join(http, server, "b")
    await send(b, signed_join(bytes(32), "b"))
    assert "already joined" in await expect_fatal(b, "malformed", 4003)
    c, _ = await join(http, server, "c")
    await send(c, {"type": "bogus"})
    assert "unknown message type 'bogus'" in await expect_fatal(c, "malformed", 4003)
    await check_healthy(http, server)


async def test_room_full(http: aiohttp.ClientSession, make_server: ServerFactory) -> None:
    server = await make_server(
        SignalingSettings(max_peers_per_room=2, join_timeout=1.0, close_timeout=0.5)
    )
    a, _ = await join(http, server, "a")
    b, _ = await join(http, server, "b")
    c = await connect(http, server)
    await send(c, signed_join(await challenge(c), "c"))
    assert "limit 2" in await expect_fatal(c, "room-full", 4002)
    # Rejoining with a present id (and its key) replaces rather than counts; other rooms are
    # unaffected.
    a2, _ = await join(http, server, "a")
    x, _ = await join(http, server, "x", token=OTHER_TOKEN)
    for ws in (a, a2, b, x):
        await ws.close()


async def test_connection_limit(http: aiohttp.ClientSession, make_server: ServerFactory) -> None:
    server = await make_server(
        SignalingSettings(max_connections=2, join_timeout=1.0, close_timeout=0.5)
    )
    a, _ = await join(http, server, "a")
    b = await connect(http, server)  # not joined yet, but counts
    c = await connect(http, server)
    assert "connections" in await expect_fatal(c, "room-full", 4002)
    await b.close()
    await wait_until(lambda: len(server.state.sessions) == 1)
    d, _ = await join(http, server, "d")
    await a.close()
    await d.close()


async def test_rate_limit(http: aiohttp.ClientSession, make_server: ServerFactory) -> None:
    settings = SignalingSettings(
        messages_per_second=10,
        rate_burst=5,
        rate_limit_max_drops=20,
        rate_limit_warning_interval=5.0,
        close_timeout=0.5,
    )
    server = await make_server(settings)
    a, _ = await join(http, server, "a")
    b, _ = await join(http, server, "b")
    await recv(a)  # peer-joined b
    signal_msg = json.dumps({"type": "signal", "to": pid("b"), "data": OFFER})
    for _ in range(10):
        await a.send_str(signal_msg)
    # A burst over the limit: a warning, some messages dropped, still connected.
    warning = await recv(a)
    assert warning["type"] == "error" and warning["code"] == "rate-limited"
    delivered = 0
    with pytest.raises(asyncio.TimeoutError):
        while True:
            assert (await recv(b, within=0.3))["from"] == pid("a")
            delivered += 1
    assert 5 <= delivered < 10
    await asyncio.sleep(0.2)  # the bucket refills
    await a.send_str(signal_msg)
    assert (await recv(b))["from"] == pid("a")
    # Sustained abuse: fatal.
    for _ in range(40):
        await a.send_str(signal_msg)
    assert "sustained" in await expect_fatal(a, "rate-limited", 4005)
    await b.close()
    await check_healthy(http, server)


async def test_the_same_key_again_replaces(
    http: aiohttp.ClientSession, server: SignalingServer
) -> None:
    """A restarted node (same key) is not locked out by its own stale socket."""
    b, _ = await join(http, server, "b")
    a1, _ = await join(http, server, "a")
    assert (await recv(b))["type"] == "peer-joined"
    a2, welcome = await join(http, server, "a", name="a-reborn")
    assert welcome["peers"] == [record("b")]
    await expect_fatal(a1, "replaced", 4006)
    assert await recv(b) == {"type": "peer-left", "peer": pid("a")}
    assert await recv(b) == {"type": "peer-joined", "peer": record("a", "a-reborn")}
    await send(b, {"type": "signal", "to": pid("a"), "data": OFFER})
    assert await recv(a2) == {"type": "signal", "from": pid("b"), "data": OFFER}
    await expect_silence(b)  # the old socket's end is not announced twice
    await a2.close()
    await b.close()


async def test_join_timeout(http: aiohttp.ClientSession, make_server: ServerFactory) -> None:
    server = await make_server(SignalingSettings(join_timeout=0.3, close_timeout=0.5))
    ws = await connect(http, server)
    await challenge(ws)
    assert "0.3 seconds" in await expect_fatal(ws, "join-timeout", 4007)
    assert not server.state.sessions or all(s.closing for s in server.state.sessions)


async def test_dead_socket_dropped(http: aiohttp.ClientSession, make_server: ServerFactory) -> None:
    server = await make_server(SignalingSettings(heartbeat=1.0, close_timeout=0.5))
    a, _ = await join(http, server, "a")
    # "dead" never answers the server's pings (and never reads).
    dead, _ = await join(http, server, "dead", autoping=False)
    assert (await recv(a))["peer"]["peer"] == pid("dead")
    assert await recv(a, within=5.0) == {"type": "peer-left", "peer": pid("dead")}
    await wait_until(lambda: pid("dead") not in server.state.rooms[cluster_id(TOKEN)].sessions)
    await dead.close()
    # A socket whose TCP connection vanishes without a close frame goes too.
    gone, _ = await join(http, server, "gone")
    assert (await recv(a))["peer"]["peer"] == pid("gone")
    transport = gone._response.connection.transport  # type: ignore[union-attr]
    assert transport is not None
    transport.abort()
    assert await recv(a) == {"type": "peer-left", "peer": pid("gone")}
    await a.close()


def _walk(obj: object, seen: set[int]) -> Iterator[str | bytes]:
    """Yield every string/bytes reachable through the server's own objects."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, str | bytes):
        yield obj
    elif isinstance(obj, dict):
        for key_, value in obj.items():
            yield from _walk(key_, seen)
            yield from _walk(value, seen)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            yield from _walk(item, seen)
    elif type(obj).__module__.startswith("signaling"):
        attrs = getattr(obj, "__dict__", {})
        slots = [s for c in type(obj).__mro__ for s in getattr(c, "__slots__", ())]
        for name in [*attrs, *slots]:
            yield from _walk(getattr(obj, name, None), seen)


async def test_the_server_keeps_only_verifiers(
    http: aiohttp.ClientSession, server: SignalingServer
) -> None:
    """Given tokens, the server keeps their verifiers: not the tokens, not the link keys."""
    a, _ = await join(http, server, "a")
    state = server.app[STATE_KEY]
    assert state.verifiers == (Verifier.from_token(TOKEN), Verifier.from_token(OTHER_TOKEN))
    strings = list(_walk(state, set()))
    assert signaling_key(TOKEN) in strings  # the walk does reach the keys
    for token in (TOKEN, OTHER_TOKEN):
        secrets_ = [token.encode(), link_key(token)]
        for item in strings:
            data = item.encode() if isinstance(item, str) else item
            assert not any(secret in data for secret in secrets_)
    await a.close()


async def test_brute_force_gets_a_few_guesses_a_second_and_is_logged(
    http: aiohttp.ClientSession,
    make_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A guesser on 127.0.0.1 with 20 parallel connections for 2.5 s: its joins are checked
    at most burst + rate x time times (the defaults: 5 + 2/s), each failure is logged with its
    address, the rest are refused unchecked; meanwhile a client from 127.0.0.2 joins at once.
    Once the guesser stops, an honest client on 127.0.0.1 that was throttled gets in."""
    caplog.set_level(logging.INFO, logger="signaling.server")
    defaults = SignalingSettings()
    server = await make_server(SignalingSettings(join_refusal_delay=0.2))
    counts = {"bad-token": 0, "rate-limited": 0}
    stop = time.monotonic() + 2.5

    async def guesser() -> None:
        while time.monotonic() < stop:
            ws = await connect(http, server)
            first = await recv(ws)
            if first["type"] == "challenge":
                nonce = b64decode(first["nonce"])
                assert nonce is not None
                await send(ws, signed_join(nonce, "guesser", token=generate_token()))
                first = await recv(ws)
            counts[first["code"]] += 1
            await ws.close()

    began = time.monotonic()
    guessers = [asyncio.create_task(guesser()) for _ in range(20)]
    await asyncio.sleep(0.5)  # the guesser is throttled by now
    elsewhere = make_client(server.url, "elsewhere", Recorder(), connect=connect_from("127.0.0.2"))
    here = make_client(server.url, "here", Recorder())  # shares the guesser's address
    try:
        await elsewhere.start()
        assert elsewhere.connected  # another address: not held up at all
        await here.start()  # throttled: not an error, it keeps trying in the background
        await asyncio.gather(*guessers)
        elapsed = time.monotonic() - began
        allowed = defaults.join_failure_burst + defaults.join_failures_per_second * elapsed
        assert 0 < counts["bad-token"] <= allowed, (counts, elapsed)
        assert counts["rate-limited"] > counts["bad-token"], counts
        await wait_until(lambda: here.connected, within=10)
    finally:
        await elsewhere.close()
        await here.close()
    failures = [r.getMessage() for r in caplog.records if "failed join from" in r.getMessage()]
    assert len(failures) == counts["bad-token"]
    assert all("failed join from 127.0.0.1: bad-token" in line for line in failures)
    assert any("join(s) from 127.0.0.1 unchecked" in r.getMessage() for r in caplog.records)
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------
# the agent's client
# --------------------------------------------------------------------------


async def test_client_presence_and_relay(server: SignalingServer) -> None:
    ra, rb = Recorder(), Recorder()
    a = make_client(server.url, "a", ra)
    b = make_client(server.url, "b", rb)
    try:
        await a.start()
        assert a.connected and a.peers == {} and a.cluster == cluster_id(TOKEN)
        assert a.peer_id == pid("a")
        await b.start()
        assert b.peers == {pid("a"): info("a")}
        await wait_until(lambda: pid("b") in a.peers and bool(rb.joined))
        assert ra.joined == [info("b")]
        assert await a.send_signal(pid("b"), OFFER)
        await wait_until(lambda: bool(rb.signals))
        assert rb.signals == [(pid("a"), OFFER)]
        with pytest.raises(ValueError, match=r"data\.kind"):
            await a.send_signal(pid("b"), {"kind": "nope"})
        await b.close()
        await wait_until(lambda: ra.left == [pid("b")])
        assert a.peers == {}
        assert not await b.send_signal(pid("a"), OFFER)  # closed: not connected
    finally:
        await a.close()
        await b.close()


async def test_client_callback_errors_do_not_kill_it(server: SignalingServer) -> None:
    got: list[str] = []

    def broken(*args: Any) -> None:
        raise RuntimeError("callback bug")

    async def on_signal(sender: str, data: dict[str, Any]) -> None:
        got.append(sender)

    a = SignalingClient(
        server.url,
        TOKEN,
        key("a"),
        "a",
        "native",
        on_signal,
        broken,
        broken,
        settings=CLIENT_FAST,
        connect=aiohttp_connect,
    )
    rb = Recorder()
    b = make_client(server.url, "b", rb)
    try:
        await a.start()
        await b.start()
        await wait_until(lambda: pid("b") in a.peers)
        assert await b.send_signal(pid("a"), OFFER)
        await wait_until(lambda: got == [pid("b")])
        assert a.connected
    finally:
        await a.close()
        await b.close()


async def test_client_slow_callbacks_and_close_from_callback(server: SignalingServer) -> None:
    """A slow callback is cut off; events stay in order; close() works inside one."""
    order: list[str] = []
    holder: list[SignalingClient] = []

    async def slow_joined(peer: PeerInfo) -> None:
        order.append(f"joined-{peer.name}")
        await asyncio.sleep(10)  # cut off by callback_timeout

    async def on_signal(sender: str, data: dict[str, Any]) -> None:
        order.append(f"signal-{data['kind']}")
        if data["kind"] == "bye":
            await holder[0].close()

    a = SignalingClient(
        server.url,
        TOKEN,
        key("a"),
        "a",
        "native",
        on_signal,
        slow_joined,
        lambda peer: None,
        settings=SignalingClientSettings(callback_timeout=0.3, close_timeout=0.5),
        connect=aiohttp_connect,
    )
    holder.append(a)
    b = make_client(server.url, "b", Recorder())
    try:
        await a.start()
        await b.start()
        assert await b.send_signal(pid("a"), OFFER)
        assert await b.send_signal(pid("a"), {"kind": "bye"})
        # The socket is read (and pings answered) while callbacks are slow.
        await wait_until(lambda: len(a.peers) == 1 and a.connected)
        await wait_until(lambda: order == ["joined-b", "signal-offer", "signal-bye"])
        await wait_until(lambda: not a.connected)
        await wait_until(lambda: len(server.state.sessions) == 1)
    finally:
        await a.close()
        await b.close()


async def test_client_reconnects_after_server_restart(make_server: ServerFactory) -> None:
    server = await make_server()
    port = server.port
    ra, rb = Recorder(), Recorder()
    a = make_client(server.url, "a", ra)
    b = make_client(server.url, "b", rb)
    try:
        await a.start()
        await b.start()
        await wait_until(lambda: pid("b") in a.peers)
        await server.stop()
        await wait_until(lambda: not a.connected and not b.connected)
        await make_server(port=port)
        await wait_until(lambda: a.connected and b.connected, within=5.0)
        await wait_until(lambda: pid("b") in a.peers and pid("a") in b.peers)
        # Whoever came back first saw the other leave and come back.
        assert ra.joined.count(info("b")) + rb.joined.count(info("a")) >= 2
        assert await a.send_signal(pid("b"), OFFER)
        await wait_until(lambda: rb.signals == [(pid("a"), OFFER)])
    finally:
        await a.close()
        await b.close()


async def test_client_start_while_server_down(make_server: ServerFactory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    a = make_client(f"ws://127.0.0.1:{port}/ws", "a", Recorder())
    try:
        await a.start()  # unreachable: returns, retries in the background
        assert not a.connected
        await make_server(port=port)
        await wait_until(lambda: a.connected)
    finally:
        await a.close()


async def test_client_replaced_keeps_reconnecting_with_back_off(
    http: aiohttp.ClientSession, server: SignalingServer
) -> None:
    """Another socket that holds our key (a copy of our data dir) replaces us: we come back
    after a back-off instead of leaving the room to it for good."""
    a = make_client(server.url, "a", Recorder())
    try:
        await a.start()
        usurper, _ = await join(http, server, "a")
        await wait_until(lambda: a.replaced_count == 1)
        await wait_until(lambda: a.connected, within=5.0)  # back, after the back-off
        await expect_fatal(usurper, "replaced", 4006)
        room = server.state.rooms[cluster_id(TOKEN)]
        assert list(room.sessions) == [pid("a")]
    finally:
        await a.close()


def test_websocket_url() -> None:
    assert websocket_url("ws://127.0.0.1:8787") == "ws://127.0.0.1:8787/ws"
    assert websocket_url("ws://127.0.0.1:8787/") == "ws://127.0.0.1:8787/ws"
    assert websocket_url("http://h:1") == "ws://h:1/ws"
    assert websocket_url("https://h/signal/ws") == "wss://h/signal/ws"
    with pytest.raises(ValueError, match="not a signaling URL"):
        websocket_url("ftp://h")


async def test_client_accepts_server_address(server: SignalingServer) -> None:
    """Operators give ``ws://host:port``; the client finds ``/ws`` itself."""
    a = make_client(f"ws://127.0.0.1:{server.port}", "a", Recorder())
    try:
        await a.start()
        assert a.connected
    finally:
        await a.close()


def test_client_rejects_bad_settings_and_short_tokens() -> None:
    rec = Recorder()
    for token, name, kind, expected in [
        (TOKEN, "A", "native", "DNS label"),
        (TOKEN, "a", "x", "native"),
        ("short", "a", "native", "p2pkube token"),
    ]:
        with pytest.raises(ValueError, match=expected):
            SignalingClient(
                "ws://127.0.0.1:1/ws",
                token,
                key("a"),
                name,
                kind,
                rec.on_signal,
                rec.on_peer_joined,
                rec.on_peer_left,
                connect=aiohttp_connect,
            )


# --------------------------------------------------------------------------
# python -m signaling
# --------------------------------------------------------------------------


async def test_module_entry_point(http: aiohttp.ClientSession) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("P2PKUBE_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "signaling",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(10):
            token_line = (await proc.stdout.readline()).decode()
            await proc.stdout.readline()  # cluster id
            url_line = (await proc.stdout.readline()).decode()
        assert token_line.startswith("join token: ")
        token = token_line.split(": ", 1)[1].strip()
        assert token_problem(token) is None
        url = url_line.split(": ", 1)[1].strip()
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/ws")
        async with http.get(url.replace("ws://", "http://").replace("/ws", "/healthz")) as r:
            assert await r.text() == "ok"
        ws = await http.ws_connect(url)
        await send(ws, signed_join(await challenge(ws), "a", token=token))
        assert (await recv(ws))["cluster"] == cluster_id(token)
        proc.send_signal(signal.SIGTERM)
        # Shutdown closes sockets with 1001 (going away).
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_slow_reader_is_cut_off(
    http: aiohttp.ClientSession, make_server: ServerFactory
) -> None:
    """A peer that stops reading is dropped; its sender is not held up."""
    settings = SignalingSettings(
        send_queue_size=8, send_timeout=0.5, rate_burst=1000, close_timeout=0.5
    )
    server = await make_server(settings)
    a, _ = await join(http, server, "a")
    stuck, _ = await join(http, server, "stuck")
    assert (await recv(a))["type"] == "peer-joined"
    transport = stuck._response.connection.transport  # type: ignore[union-attr]
    assert transport is not None
    transport.pause_reading()  # like a process that stopped reading its socket
    big = json.dumps(
        {"type": "signal", "to": pid("stuck"), "data": {"kind": "offer", "sdp": "x" * 60_000}}
    )
    received: list[dict[str, Any]] = []

    async def read_a() -> None:
        while True:
            received.append(await recv(a, within=30.0))

    reader = asyncio.create_task(read_a())
    try:
        for _ in range(2000):
            if received:
                break
            await a.send_str(big)
            await asyncio.sleep(0)
        await wait_until(lambda: bool(received))
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    # As soon as stuck is being cut off, a is told: it left, or is unknown.
    assert received[0]["type"] == "peer-left" or received[0]["code"] == "unknown-peer"
    room = server.state.rooms[cluster_id(TOKEN)]
    await wait_until(lambda: pid("stuck") not in room.sessions)
    await stuck.close()
    await a.close()
    await check_healthy(http, server)


def test_every_server_setting_is_in_the_protocol_docs_with_its_default() -> None:
    """docs/protocol.md's limits table names each SignalingSettings field and its default."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    table = text[text.index("### Limits and timings") : text.index("### A session, end to end")]
    documented = {
        name: float(value)
        for name, value in re.findall(r"^\| `(\w+)` \| ([\d.]+)", table, flags=re.MULTILINE)
    }
    defaults = {f.name: float(f.default) for f in dataclasses.fields(SignalingSettings)}
    assert documented == defaults
