"""Tests of the signaling server and the agent's signaling client.

Everything runs against a real server bound to 127.0.0.1 (port 0) in this
process, through real WebSocket connections; timings are shrunk through the
settings so the whole file stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2pkube.net.signaling_client import (
    PeerInfo,
    SignalingClient,
    SignalingClientSettings,
    SignalingRejected,
    websocket_url,
)
from signaling.protocol import (
    FlatValue,
    ProtocolError,
    cluster_id,
    generate_token,
    load_tokens,
    parse_client_message,
    token_digest,
)
from signaling.server import STATE_KEY, SignalingServer, SignalingSettings, create_app

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

ServerFactory = Callable[..., Awaitable[SignalingServer]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    """Start servers on demand; stop them all at the end of the test."""
    servers: list[SignalingServer] = []

    async def factory(
        settings: SignalingSettings = FAST,
        tokens: list[str] | None = None,
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
    ws: aiohttp.ClientWebSocketResponse = await http.ws_connect(
        server.url, timeout=aiohttp.ClientWSTimeout(ws_close=1.0), **kwargs
    )
    return ws


async def recv(ws: aiohttp.ClientWebSocketResponse, within: float = 3.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=within)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def send(ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any]) -> None:
    await ws.send_str(json.dumps(message))


async def join(
    http: aiohttp.ClientSession,
    server: SignalingServer,
    peer: str,
    *,
    token: str = TOKEN,
    name: str | None = None,
    kind: str = "native",
    **kwargs: Any,
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """Open a raw socket, join, and return it with the welcome."""
    ws = await connect(http, server, **kwargs)
    await send(
        ws, {"type": "join", "token": token, "peer": peer, "name": name or peer, "kind": kind}
    )
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def expect_fatal(ws: aiohttp.ClientWebSocketResponse, code: str, close_code: int) -> str:
    """Expect error ``code`` then a close with ``close_code``; return the message."""
    error = await recv(ws)
    assert error["type"] == "error" and error["code"] == code, error
    assert "Traceback" not in error["message"]
    msg = await ws.receive(timeout=3.0)
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    assert msg.data == close_code
    message: str = error["message"]
    return message


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
    assert {"peer": "healthy-a", "name": "healthy-a", "kind": "native"} in welcome["peers"]
    assert (await recv(a))["type"] == "peer-joined"
    await send(a, {"type": "signal", "to": "healthy-b", "data": OFFER})
    assert await recv(b) == {"type": "signal", "from": "healthy-a", "data": OFFER}
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


def make_client(url: str, peer: str, recorder: Recorder, *, token: str = TOKEN) -> SignalingClient:
    return SignalingClient(
        url,
        token,
        peer,
        peer,
        "native",
        on_signal=recorder.on_signal,
        on_peer_joined=recorder.on_peer_joined,
        on_peer_left=recorder.on_peer_left,
        settings=CLIENT_FAST,
    )


# --------------------------------------------------------------------------
# protocol helpers
# --------------------------------------------------------------------------


def test_cluster_identity() -> None:
    token = generate_token()
    assert len(token) >= 32 and token != generate_token()
    assert len(cluster_id(token)) == 16 and int(cluster_id(token), 16) >= 0
    assert cluster_id(token) != token_digest(token).hex()[:16]
    assert len(token_digest(token)) == 32


def test_load_tokens(tmp_path: Path) -> None:
    tokens, generated = load_tokens(None, None)
    assert generated and len(tokens) == 1
    assert load_tokens("abc", None) == (["abc"], False)
    path = tmp_path / "tokens"
    path.write_text("# cluster one\nfirst-token\n\n  second-token  \n# end\n")
    assert load_tokens("abc", path) == (["abc", "first-token", "second-token"], False)
    path.write_text("# nothing here\n")
    with pytest.raises(ValueError, match="holds no tokens"):
        load_tokens(None, path)
    with pytest.raises(ValueError, match="cannot read"):
        load_tokens(None, tmp_path / "missing")
    with pytest.raises(ValueError, match="printable"):
        load_tokens("has space", None)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"type": "join"}', "missing field 'token'"),
        ('{"type": "hello"}', "unknown message type 'hello'"),
        (
            '{"type":"join","token":"t","peer":"a b","name":"a","kind":"native"}',
            "field 'peer' must be 1-64 characters of [A-Za-z0-9_-]",
        ),
        (
            '{"type":"join","token":"t","peer":"a","name":"Node1","kind":"native"}',
            "field 'name' must be a DNS label",
        ),
        (
            '{"type":"join","token":"t","peer":"a","name":"-a","kind":"native"}',
            "field 'name' must be a DNS label",
        ),
        (
            '{"type":"join","token":"t","peer":"a","name":"a","kind":"robot"}',
            "field 'kind' must be 'native' or 'browser'",
        ),
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
        "peer": "node-a",
        "peers": [],
    }
    await ws.close()


async def test_bad_token(http: aiohttp.ClientSession, server: SignalingServer) -> None:
    ws = await connect(http, server)
    await send(ws, {"type": "join", "token": "wrong", "peer": "a", "name": "a", "kind": "native"})
    message = await expect_fatal(ws, "bad-token", 4001)
    assert "token" in message
    await check_healthy(http, server)


async def test_bad_token_client_start_raises(server: SignalingServer) -> None:
    client = make_client(server.url, "a", Recorder(), token="not-the-token")
    with pytest.raises(SignalingRejected) as info:
        await client.start()
    assert info.value.code == "bad-token"
    assert not client.connected
    await client.close()  # idempotent after the failed start


async def test_presence_notifications(http: aiohttp.ClientSession, server: SignalingServer) -> None:
    a, _ = await join(http, server, "a", name="node-a")
    b, welcome = await join(http, server, "b", name="node-b", kind="browser")
    assert welcome["peers"] == [{"peer": "a", "name": "node-a", "kind": "native"}]
    assert await recv(a) == {
        "type": "peer-joined",
        "peer": {"peer": "b", "name": "node-b", "kind": "browser"},
    }
    c, welcome = await join(http, server, "c")
    assert sorted(p["peer"] for p in welcome["peers"]) == ["a", "b"]
    assert (await recv(a))["peer"]["peer"] == "c"
    assert (await recv(b))["peer"]["peer"] == "c"
    await b.close()
    assert await recv(a) == {"type": "peer-left", "peer": "b"}
    assert await recv(c) == {"type": "peer-left", "peer": "b"}
    await a.close()
    await c.close()


async def test_relay_offer(http: aiohttp.ClientSession, server: SignalingServer) -> None:
    a, _ = await join(http, server, "a")
    b, _ = await join(http, server, "b")
    await recv(a)  # peer-joined b
    await send(a, {"type": "signal", "to": "b", "data": OFFER})
    assert await recv(b) == {"type": "signal", "from": "a", "data": OFFER}
    answer = {"kind": "answer", "sdp": "v=0", "n": 1, "f": 0.5, "x": None}
    await send(b, {"type": "signal", "to": "a", "data": answer})
    assert await recv(a) == {"type": "signal", "from": "b", "data": answer}
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
    await send(a, {"type": "signal", "to": "b", "data": data})
    await expect_fatal(a, "malformed", 4003)
    # b sees a leave, and never the signal.
    assert await recv(b) == {"type": "peer-left", "peer": "a"}
    await expect_silence(b)
    await b.close()


async def test_rooms_are_isolated(http: aiohttp.ClientSession, server: SignalingServer) -> None:
    a, _ = await join(http, server, "a")
    x, welcome = await join(http, server, "x", token=OTHER_TOKEN)
    assert welcome["cluster"] == cluster_id(OTHER_TOKEN) != cluster_id(TOKEN)
    assert welcome["peers"] == []
    await send(x, {"type": "signal", "to": "a", "data": OFFER})
    error = await recv(x)
    assert error["type"] == "error" and error["code"] == "unknown-peer"
    assert error["to"] == "a"
    await expect_silence(a)  # neither the signal nor x's arrival
    # unknown-peer is not fatal: x still relays within its own room.
    y, _ = await join(http, server, "y", token=OTHER_TOKEN)
    await recv(x)  # peer-joined y
    await send(x, {"type": "signal", "to": "y", "data": OFFER})
    assert await recv(y) == {"type": "signal", "from": "x", "data": OFFER}
    for ws in (a, x, y):
        await ws.close()


async def test_too_large(http: aiohttp.ClientSession, make_server: ServerFactory) -> None:
    server = await make_server(SignalingSettings(max_message_bytes=1024, close_timeout=0.5))
    a, _ = await join(http, server, "a")
    await send(a, {"type": "signal", "to": "a", "data": {"kind": "offer", "sdp": "x" * 2000}})
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
        ('{"type": "join", "token": "t", "peer": "a", "kind": "native"}', "missing field 'name'"),
        (
            '{"type": "join", "token": "t", "peer": "a", "name": "UPPER", "kind": "native"}',
            "field 'name' must be a DNS label",
        ),
        (b"\x00binary", "binary frames are not accepted"),
    ],
)
async def test_malformed(
    http: aiohttp.ClientSession, server: SignalingServer, frame: str | bytes, expected: str
) -> None:
    ws = await connect(http, server)
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
    await send(b, {"type": "join", "token": TOKEN, "peer": "b", "name": "b", "kind": "native"})
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
    await send(c, {"type": "join", "token": TOKEN, "peer": "c", "name": "c", "kind": "native"})
    assert "limit 2" in await expect_fatal(c, "room-full", 4002)
    # Rejoining with a present id replaces rather than counts; other rooms are unaffected.
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
    signal_msg = json.dumps({"type": "signal", "to": "b", "data": OFFER})
    for _ in range(10):
        await a.send_str(signal_msg)
    # A burst over the limit: a warning, some messages dropped, still connected.
    warning = await recv(a)
    assert warning["type"] == "error" and warning["code"] == "rate-limited"
    delivered = 0
    with pytest.raises(asyncio.TimeoutError):
        while True:
            assert (await recv(b, within=0.3))["from"] == "a"
            delivered += 1
    assert 5 <= delivered < 10
    await asyncio.sleep(0.2)  # the bucket refills
    await a.send_str(signal_msg)
    assert (await recv(b))["from"] == "a"
    # Sustained abuse: fatal.
    for _ in range(40):
        await a.send_str(signal_msg)
    assert "sustained" in await expect_fatal(a, "rate-limited", 4005)
    await b.close()
    await check_healthy(http, server)


async def test_duplicate_peer_replaces(
    http: aiohttp.ClientSession, server: SignalingServer
) -> None:
    b, _ = await join(http, server, "b")
    a1, _ = await join(http, server, "a")
    assert (await recv(b))["type"] == "peer-joined"
    a2, welcome = await join(http, server, "a", name="a-reborn")
    assert welcome["peers"] == [{"peer": "b", "name": "b", "kind": "native"}]
    await expect_fatal(a1, "replaced", 4006)
    assert await recv(b) == {"type": "peer-left", "peer": "a"}
    assert await recv(b) == {
        "type": "peer-joined",
        "peer": {"peer": "a", "name": "a-reborn", "kind": "native"},
    }
    await send(b, {"type": "signal", "to": "a", "data": OFFER})
    assert await recv(a2) == {"type": "signal", "from": "b", "data": OFFER}
    await expect_silence(b)  # the old socket's end is not announced twice
    await a2.close()
    await b.close()


async def test_join_timeout(http: aiohttp.ClientSession, make_server: ServerFactory) -> None:
    server = await make_server(SignalingSettings(join_timeout=0.3, close_timeout=0.5))
    ws = await connect(http, server)
    assert "0.3 seconds" in await expect_fatal(ws, "join-timeout", 4007)
    assert not server.state.sessions or all(s.closing for s in server.state.sessions)


async def test_dead_socket_dropped(http: aiohttp.ClientSession, make_server: ServerFactory) -> None:
    server = await make_server(SignalingSettings(heartbeat=1.0, close_timeout=0.5))
    a, _ = await join(http, server, "a")
    # "dead" never answers the server's pings (and never reads).
    dead, _ = await join(http, server, "dead", autoping=False)
    assert (await recv(a))["peer"]["peer"] == "dead"
    assert await recv(a, within=5.0) == {"type": "peer-left", "peer": "dead"}
    await wait_until(lambda: "dead" not in server.state.rooms[cluster_id(TOKEN)].sessions)
    await dead.close()
    # A socket whose TCP connection vanishes without a close frame goes too.
    gone, _ = await join(http, server, "gone")
    assert (await recv(a))["peer"]["peer"] == "gone"
    transport = gone._response.connection.transport  # type: ignore[union-attr]
    assert transport is not None
    transport.abort()
    assert await recv(a) == {"type": "peer-left", "peer": "gone"}
    await a.close()


def _walk(obj: object, seen: set[int]) -> Iterator[str | bytes]:
    """Yield every string/bytes reachable through the server's own objects."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, str | bytes):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _walk(key, seen)
            yield from _walk(value, seen)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            yield from _walk(item, seen)
    elif type(obj).__module__.startswith("signaling"):
        attrs = getattr(obj, "__dict__", {})
        slots = [s for c in type(obj).__mro__ for s in getattr(c, "__slots__", ())]
        for name in [*attrs, *slots]:
            yield from _walk(getattr(obj, name, None), seen)


async def test_only_token_digests_are_stored(
    http: aiohttp.ClientSession, server: SignalingServer
) -> None:
    a, _ = await join(http, server, "a")
    state = server.app[STATE_KEY]
    assert state.digests == (token_digest(TOKEN), token_digest(OTHER_TOKEN))
    strings = list(_walk(state, set()))
    assert token_digest(TOKEN) in strings  # the walk does reach the digests
    for token in (TOKEN, OTHER_TOKEN):
        for item in strings:
            text = item.decode("latin-1") if isinstance(item, bytes) else item
            assert token not in text
    await a.close()


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
        await b.start()
        assert b.peers == {"a": PeerInfo("a", "a", "native")}
        await wait_until(lambda: "b" in a.peers and bool(rb.joined))
        assert ra.joined == [PeerInfo("b", "b", "native")]
        assert await a.send_signal("b", OFFER)
        await wait_until(lambda: bool(rb.signals))
        assert rb.signals == [("a", OFFER)]
        with pytest.raises(ValueError, match=r"data\.kind"):
            await a.send_signal("b", {"kind": "nope"})
        await b.close()
        await wait_until(lambda: ra.left == ["b"])
        assert a.peers == {}
        assert not await b.send_signal("a", OFFER)  # closed: not connected
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
        server.url, TOKEN, "a", "a", "native", on_signal, broken, broken, settings=CLIENT_FAST
    )
    rb = Recorder()
    b = make_client(server.url, "b", rb)
    try:
        await a.start()
        await b.start()
        await wait_until(lambda: "b" in a.peers)
        assert await b.send_signal("a", OFFER)
        await wait_until(lambda: got == ["b"])
        assert a.connected
    finally:
        await a.close()
        await b.close()


async def test_client_slow_callbacks_and_close_from_callback(server: SignalingServer) -> None:
    """A slow callback is cut off; events stay in order; close() works inside one."""
    order: list[str] = []
    holder: list[SignalingClient] = []

    async def slow_joined(info: PeerInfo) -> None:
        order.append(f"joined-{info.peer}")
        await asyncio.sleep(10)  # cut off by callback_timeout

    async def on_signal(sender: str, data: dict[str, Any]) -> None:
        order.append(f"signal-{data['kind']}")
        if data["kind"] == "bye":
            await holder[0].close()

    a = SignalingClient(
        server.url,
        TOKEN,
        "a",
        "a",
        "native",
        on_signal,
        slow_joined,
        lambda peer: None,
        settings=SignalingClientSettings(callback_timeout=0.3, close_timeout=0.5),
    )
    holder.append(a)
    b = make_client(server.url, "b", Recorder())
    try:
        await a.start()
        await b.start()
        assert await b.send_signal("a", OFFER)
        assert await b.send_signal("a", {"kind": "bye"})
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
        await wait_until(lambda: "b" in a.peers)
        await server.stop()
        await wait_until(lambda: not a.connected and not b.connected)
        await make_server(port=port)
        await wait_until(lambda: a.connected and b.connected, within=5.0)
        await wait_until(lambda: "b" in a.peers and "a" in b.peers)
        # Whoever came back first saw the other leave and come back.
        assert (
            ra.joined.count(PeerInfo("b", "b", "native"))
            + rb.joined.count(PeerInfo("a", "a", "native"))
            >= 2
        )
        assert await a.send_signal("b", OFFER)
        await wait_until(lambda: rb.signals == [("a", OFFER)])
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


async def test_client_replaced_stops_reconnecting(
    http: aiohttp.ClientSession, server: SignalingServer
) -> None:
    a = make_client(server.url, "a", Recorder())
    try:
        await a.start()
        usurper, _ = await join(http, server, "a")
        await wait_until(lambda: not a.connected)
        await asyncio.sleep(0.5)  # several backoff periods
        assert not a.connected
        room = server.state.rooms[cluster_id(TOKEN)]
        assert len(room.sessions) == 1
        await expect_silence(usurper, 0.1)  # not replaced back
        await usurper.close()
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


def test_client_rejects_bad_identity() -> None:
    rec = Recorder()
    for peer, name, kind in [("a b", "a", "native"), ("a", "A", "native"), ("a", "a", "x")]:
        with pytest.raises(ValueError):
            SignalingClient(
                "ws://127.0.0.1:1/ws",
                TOKEN,
                peer,
                name,
                kind,
                rec.on_signal,
                rec.on_peer_joined,
                rec.on_peer_left,
            )


# --------------------------------------------------------------------------
# python -m signaling
# --------------------------------------------------------------------------


async def test_module_entry_point(http: aiohttp.ClientSession) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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
        url = url_line.split(": ", 1)[1].strip()
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/ws")
        async with http.get(url.replace("ws://", "http://").replace("/ws", "/healthz")) as r:
            assert await r.text() == "ok"
        ws = await http.ws_connect(url)
        await send(ws, {"type": "join", "token": token, "peer": "a", "name": "a", "kind": "native"})
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
        {"type": "signal", "to": "stuck", "data": {"kind": "offer", "sdp": "x" * 60_000}}
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
    await wait_until(lambda: "stuck" not in room.sessions)
    await stuck.close()
    await a.close()
    await check_healthy(http, server)
