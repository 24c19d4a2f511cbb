"""``kubectl port-forward`` against the portforward subresource (api/kube/portforward.py), the
SPDY/3.1 session under it (api/kube/spdy.py) and the HTTP bridge to a pod (httpbridge.py).

The end-to-end tests run the real ``/usr/bin/kubectl`` against a small test-only aiohttp app
on 127.0.0.1 behind a bearer token: the static discovery kubectl resolves ``pod/NAME`` and
``svc/NAME`` with, one Running pod and one Service, and the :class:`PortForwarder` wired as
p2pkube wires it (``service_port_server`` over a router) to a fake router whose "pod" answers
``hello from <path>``, a streamed body, a 5 MB body and an echo. The app serves HTTPS with a
throwaway certificate: kubectl sends no token to a plain-http server (client-go's
``clientcmd`` reads a user's credentials only for a TLS transport). Each runs twice: through
the WebSocket tunnel (kubectl's default) and through plain SPDY
(``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``), and checks which one the server saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from p2pkube.api.kube import spdy
from p2pkube.api.kube.httpbridge import HttpBridge, router_check, service_port_server
from p2pkube.api.kube.portforward import (
    TUNNEL_PROTOCOL,
    BytePipe,
    ForwardedPort,
    PortForwarder,
    PortForwardSettings,
)
from p2pkube.services.types import Endpoint, HttpError, ResponseHead, ServiceRequest, ServiceTarget
from tests.kubectl import KUBECTL, https_api, requires_kubectl

TOKEN = "test-token-3c1f"
BIG = bytes(range(256)) * (5 * 1024 * 1024 // 256)  # 5 MiB, every byte value


# --- unit: frames and header blocks -----------------------------------------------------------


def decoder(**limits: int) -> spdy.FrameDecoder:
    return spdy.FrameDecoder(
        max_frame_bytes=limits.get("max_frame_bytes", 1 << 20),
        max_header_bytes=limits.get("max_header_bytes", 1 << 16),
    )


def test_the_header_dictionary_is_spdy3s() -> None:
    # Its size and Adler-32 (the DICTID of every SPDY/3 header block's zlib header).
    assert len(spdy.HEADER_DICTIONARY) == 1423
    assert zlib.adler32(spdy.HEADER_DICTIONARY) == 0xE3C6A7C2


ALL_FRAMES: list[spdy.Frame] = [
    spdy.DataFrame(1, b"payload", fin=True),
    spdy.DataFrame(3, b""),
    spdy.SynStreamFrame(1, (("port", "8080"), ("streamtype", "data"), ("requestid", "0"))),
    spdy.SynStreamFrame(5, (("a", "1"), ("a", "2")), associated_to=3, priority=7, fin=True),
    spdy.SynReplyFrame(1, ()),
    spdy.SynReplyFrame(7, (("status", "200 OK"),), fin=True),
    spdy.HeadersFrame(9, (("x", "y"),), fin=True),
    spdy.RstStreamFrame(1, spdy.RstStatus.CANCEL),
    spdy.SettingsFrame(((0, spdy.SettingId.INITIAL_WINDOW_SIZE, 1 << 20), (1, 4, 100))),
    spdy.PingFrame(1),
    spdy.GoAwayFrame(7, spdy.GoAwayStatus.PROTOCOL_ERROR),
    spdy.WindowUpdateFrame(0, 32768),
    spdy.WindowUpdateFrame(3, 1),
]


def test_every_frame_round_trips_fed_whole_or_byte_by_byte() -> None:
    encoder = spdy.FrameEncoder()
    wire = b"".join(encoder.encode(frame) for frame in ALL_FRAMES)
    assert decoder().feed(wire) == ALL_FRAMES
    # The decoder's zlib context spans frames: the same bytes, split anywhere, decode alike.
    whole, bytewise = spdy.FrameEncoder(), decoder()
    wire = b"".join(whole.encode(frame) for frame in ALL_FRAMES)
    got = [frame for i in range(len(wire)) for frame in bytewise.feed(wire[i : i + 1])]
    assert got == ALL_FRAMES


def test_control_frame_layout_and_header_compression_in_known_bytes() -> None:
    frame = spdy.FrameEncoder().encode(spdy.SynReplyFrame(1, ()))
    # C bit, version 3, type 2; flags 0, length; stream id 1; then a zlib stream (best
    # compression, FDICT set) naming the SPDY dictionary's Adler-32, ending in a sync flush.
    assert frame[:8] == bytes.fromhex("80030002") + (len(frame) - 8).to_bytes(4, "big")
    assert frame[8:12] == bytes.fromhex("00000001")
    assert frame[12:18] == bytes.fromhex("78f9e3c6a7c2")
    assert frame.endswith(b"\x00\x00\xff\xff")
    ping = spdy.FrameEncoder().encode(spdy.PingFrame(5))
    assert ping == bytes.fromhex("800300060000000400000005")
    data = spdy.FrameEncoder().encode(spdy.DataFrame(3, b"ab", fin=True))
    assert data == bytes.fromhex("0000000301000002") + b"ab"


KUBECTL_SESSION = bytes.fromhex(
    # What kubectl v1.32.4 sent on a plain-SPDY port-forward session to this server, for one
    # local connection carrying one request (as the server read them):
    # SYN_STREAM 1 (error), its FIN, SYN_STREAM 3 (data), the request, RST_STREAM 3, GOAWAY.
    # The two header blocks come from Go's compress/zlib with the SPDY dictionary, in one
    # zlib stream: the second one leans on the first's history.
    "800300010000003e0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614"
    "cb45e01c60616061c0c0c0c0590489c64c50f2663400000000ffff00000001010000008003000100000018"
    "00000003000000000000c2aa19540e2512d60b000000ffff000000030000002f474554202f782048545450"
    "2f312e310d0a486f73743a20680d0a436f6e6e656374696f6e3a20636c6f73650d0a0d0a80030003000000"
    "08000000030000000580030007000000080000000000000000"
)


def test_decodes_what_kubectl_sends() -> None:
    request = b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    assert decoder().feed(KUBECTL_SESSION) == [
        spdy.SynStreamFrame(1, (("streamtype", "error"), ("port", "8080"), ("requestid", "0"))),
        spdy.DataFrame(1, b"", fin=True),
        spdy.SynStreamFrame(3, (("streamtype", "data"), ("port", "8080"), ("requestid", "0"))),
        spdy.DataFrame(3, request),
        spdy.RstStreamFrame(3, spdy.RstStatus.CANCEL),
        spdy.GoAwayFrame(0, spdy.GoAwayStatus.OK),
    ]


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (bytes.fromhex("8002000600000004 00000001".replace(" ", "")), "version 2"),
        (bytes.fromhex("8003000500000000"), "unknown control frame type 5"),
        (bytes.fromhex("8003000600000003 000001".replace(" ", "")), "PING of 3 bytes"),
        (bytes.fromhex("8003000300000008 00000001 00000000".replace(" ", "")), "status 0"),
        (bytes.fromhex("8003000300000004 00000001".replace(" ", "")), "of 4 bytes, not 8"),
        (bytes.fromhex("8003000700000004 00000001".replace(" ", "")), "of 4 bytes, not 8"),
        (
            bytes.fromhex("8003000900000008 00000001 00000000".replace(" ", "")),
            "WINDOW_UPDATE of 0",
        ),
        (bytes.fromhex("8003000400000008 00000002 00000007".replace(" ", "")), "for 2 entries"),
        (bytes.fromhex("00000000 00000001 00".replace(" ", "")), "DATA frame on stream 0"),
        (bytes.fromhex("8003000200000008 00000001 deadbeef".replace(" ", "")), "decompress"),
        (bytes.fromhex("8003000200000002 0000".replace(" ", "")), "SYN_REPLY of 2 bytes"),
        (bytes.fromhex("00000001 00100001".replace(" ", "")), "over"),
    ],
)
def test_malformed_frames_raise_spdy_error(wire: bytes, why: str) -> None:
    with pytest.raises(spdy.SpdyError, match=why):
        decoder().feed(wire)


def compressed_block(raw: bytes) -> bytes:
    zipper = zlib.compressobj(zdict=spdy.HEADER_DICTIONARY)
    return zipper.compress(raw) + zipper.flush(zlib.Z_SYNC_FLUSH)


def syn_reply_with_block(raw: bytes) -> bytes:
    payload = struct.pack(">I", 1) + compressed_block(raw)
    return struct.pack(">HHI", 0x8003, 2, len(payload)) + payload


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (struct.pack(">I", 1), "ends early"),
        (struct.pack(">II", 1, 1) + b"A" + struct.pack(">I", 0), "upper-case"),
        (struct.pack(">II", 2, 1) + b"a" + struct.pack(">II", 0, 1) + b"a" + bytes(4), "repeated"),
        (struct.pack(">I", 0) + b"extra", "after its last pair"),
        (struct.pack(">II", 1, 1) + b"a" + struct.pack(">I", 1) + b"\xff", "UTF-8"),
    ],
)
def test_malformed_header_blocks_raise_spdy_error(raw: bytes, why: str) -> None:
    with pytest.raises(spdy.SpdyError, match=why):
        decoder().feed(syn_reply_with_block(raw))


def test_a_header_block_that_inflates_past_the_limit_is_refused() -> None:
    bomb = struct.pack(">II", 1, 1) + b"a" + struct.pack(">I", 500_000) + b"x" * 500_000
    frame = syn_reply_with_block(bomb)
    assert len(frame) < 2000
    with pytest.raises(spdy.SpdyError, match="over 65,536 bytes"):
        decoder().feed(frame)


# --- unit: sessions over an in-memory transport -----------------------------------------------


class MemoryTransport:
    """One end of an in-memory byte transport; ``pair()`` makes two connected ends."""

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes]) -> None:
        self.inbox, self.outbox = inbox, outbox
        self.closed = False
        self.sent = bytearray()

    @classmethod
    def pair(cls) -> tuple[MemoryTransport, MemoryTransport]:
        a: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        b: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        return cls(a, b), cls(b, a)

    async def read(self) -> bytes:
        if self.closed:
            return b""
        return await self.inbox.get()

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("closed")
        self.sent += data
        await self.outbox.put(data)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.inbox.put_nowait(b"") if not self.inbox.full() else None
            await self.outbox.put(b"")


@dataclass
class Sessions:
    client: spdy.SpdySession
    server: spdy.SpdySession
    accepted: list[spdy.SpdyStream] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@pytest.fixture
async def sessions() -> AsyncIterator[Sessions]:
    near, far = MemoryTransport.pair()
    accepted: list[spdy.SpdyStream] = []

    def accept(stream: spdy.SpdyStream) -> bool:
        accepted.append(stream)
        return stream.header("refuse") is None

    settings = spdy.SpdySettings(stream_buffer_bytes=1024, write_buffer_bytes=4096)
    client = spdy.SpdySession(near, client=True, settings=settings, name="client")
    server = spdy.SpdySession(far, accept=accept, settings=settings, name="server")
    pair = Sessions(client, server, accepted)
    pair.tasks = [asyncio.create_task(client.run()), asyncio.create_task(server.run())]
    yield pair
    for task in pair.tasks:
        task.cancel()
    await asyncio.gather(*pair.tasks, return_exceptions=True)


async def test_streams_carry_bytes_both_ways_with_fin_and_reset(sessions: Sessions) -> None:
    stream = await sessions.client.open_stream([("Port", "80")])
    (peer,) = sessions.accepted
    assert peer.header("port") == "80" and peer.id == stream.id == 1
    await stream.write(b"x" * 100_000)  # well over every buffer: backpressure, not loss
    received = bytearray()
    while len(received) < 100_000:
        received += await asyncio.wait_for(peer.read(), 5)
    assert received == b"x" * 100_000
    await stream.close()
    assert await asyncio.wait_for(peer.read(), 5) == b""
    await peer.write(b"answer")
    await peer.close()
    assert await asyncio.wait_for(stream.read(), 5) == b"answer"
    assert await asyncio.wait_for(stream.read(), 5) == b""
    assert sessions.client.streams == {} and sessions.server.streams == {}

    other = await sessions.client.open_stream([("port", "81")])
    sessions.accepted[1].reset()
    with pytest.raises(spdy.StreamReset):
        await asyncio.wait_for(other.read(), 5)


async def test_a_refused_stream_is_reset(sessions: Sessions) -> None:
    with pytest.raises(spdy.StreamReset, match="REFUSED_STREAM"):
        await sessions.client.open_stream([("refuse", "yes")])


async def test_pings_are_echoed_and_windows_updated(sessions: Sessions) -> None:
    client_transport = sessions.client.transport
    assert isinstance(client_transport, MemoryTransport)
    sessions.client.send_frame(spdy.PingFrame(7))
    stream = await sessions.client.open_stream([("port", "80")])
    await stream.write(b"y" * 3000)
    peer = sessions.accepted[0]
    total = 0
    while total < 3000:
        total += len(await asyncio.wait_for(peer.read(), 5))
    server_transport = sessions.server.transport
    assert isinstance(server_transport, MemoryTransport)
    async with asyncio.timeout(5):
        while True:  # the session's writer task sends what is queued
            frames = decoder().feed(bytes(server_transport.sent))
            updates = [f for f in frames if isinstance(f, spdy.WindowUpdateFrame)]
            if {u.stream_id for u in updates} == {0, 1}:
                break
            await asyncio.sleep(0.01)
    assert spdy.PingFrame(7) in frames
    assert sum(u.delta for u in updates if u.stream_id == 1) >= 2048


async def test_an_unread_stream_stalls_then_is_reset_alone() -> None:
    near, far = MemoryTransport.pair()
    accepted: list[spdy.SpdyStream] = []
    settings = spdy.SpdySettings(stream_buffer_bytes=1024, stall_timeout=0.3)
    client = spdy.SpdySession(near, client=True, settings=settings, name="client")
    server = spdy.SpdySession(far, accept=lambda s: accepted.append(s) or True, settings=settings)
    tasks = [asyncio.create_task(client.run()), asyncio.create_task(server.run())]
    try:
        lazy = await client.open_stream([("n", "lazy")])
        busy = await client.open_stream([("n", "busy")])
        await lazy.write(b"z" * 4096)  # nobody reads it: over its buffer, so the next frame
        await lazy.write(b"z" * 4096)  # of it makes the session wait
        await busy.write(b"ok")
        with pytest.raises(spdy.StreamReset, match="FLOW_CONTROL_ERROR"):
            await asyncio.wait_for(lazy.read(), 5)
        assert await asyncio.wait_for(accepted[1].read(), 5) == b"ok"  # the session went on
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_send_windows_are_honoured_when_asked() -> None:
    near, far = MemoryTransport.pair()
    settings = spdy.SpdySettings(enforce_send_window=True, write_timeout=0.3)
    client = spdy.SpdySession(near, client=True, settings=settings)
    task = asyncio.create_task(client.run())
    try:
        opening = asyncio.create_task(client.open_stream([("port", "1")]))
        frames = decoder().feed(await far.inbox.get())
        assert isinstance(frames[0], spdy.SynStreamFrame)
        peer_encoder = spdy.FrameEncoder()
        await far.outbox.put(peer_encoder.encode(spdy.SynReplyFrame(1, ())))
        stream = await opening
        with pytest.raises(TimeoutError):  # 64 KiB go, then no window is left
            await stream.write(b"w" * (spdy.DEFAULT_WINDOW + 1))
        assert stream.send_window.size == 0
        await far.outbox.put(peer_encoder.encode(spdy.WindowUpdateFrame(1, 10)))
        await far.outbox.put(peer_encoder.encode(spdy.WindowUpdateFrame(0, 10)))
        await stream.write(b"w")
        assert stream.send_window.size == 9
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(
    "garbage",
    [b"\x80\x03\x00\x63\x00\x00\x00\x00", b"\x00\x00\x00\x00\x00\x00\x00\x00", b"\xff" * 64],
)
async def test_garbage_ends_a_session_with_goaway_and_no_exception(garbage: bytes) -> None:
    near, far = MemoryTransport.pair()
    session = spdy.SpdySession(far, name="victim")
    task = asyncio.create_task(session.run())
    await near.outbox.put(garbage)
    await asyncio.wait_for(task, 5)  # returns: no exception
    frames = decoder().feed(bytes(far.sent))
    assert frames[-1] == spdy.GoAwayFrame(0, spdy.GoAwayStatus.PROTOCOL_ERROR)
    assert far.closed


async def test_an_even_stream_id_from_a_client_is_a_protocol_error() -> None:
    near, far = MemoryTransport.pair()
    session = spdy.SpdySession(far, accept=lambda s: True)
    task = asyncio.create_task(session.run())
    await near.outbox.put(spdy.FrameEncoder().encode(spdy.SynStreamFrame(2, ())))
    await asyncio.wait_for(task, 5)
    assert decoder().feed(bytes(far.sent))[-1] == spdy.GoAwayFrame(
        0, spdy.GoAwayStatus.PROTOCOL_ERROR
    )


async def test_a_silent_peer_ends_the_session() -> None:
    _near, far = MemoryTransport.pair()
    session = spdy.SpdySession(far, settings=spdy.SpdySettings(idle_timeout=0.2))
    await asyncio.wait_for(session.run(), 5)
    assert far.closed


# --- the HTTP bridge over an in-memory pipe ---------------------------------------------------


class MemoryPipe:
    """A BytePipe whose other end the test drives."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
        self.outgoing = bytearray()
        self.closed = asyncio.Event()
        self.was_reset = False

    async def read(self) -> bytes:
        return await self.incoming.get()

    async def write(self, data: bytes) -> None:
        self.outgoing += data

    async def close(self) -> None:
        self.closed.set()

    def reset(self) -> None:
        self.was_reset = True
        self.closed.set()


async def test_the_bridge_serves_pipelined_keep_alive_requests_then_closes() -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text=f"{request.method} {request.path} {request.host}")

    bridge = HttpBridge(lambda port: handler)
    pipe = MemoryPipe()
    port = ForwardedPort("ns", "pod", 8080, "0")
    serving = asyncio.create_task(bridge(port, pipe))
    await pipe.incoming.put(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: y\r\n\r\n")
    await pipe.incoming.put(b"GET /c HTTP/1.1\r\nHost: z\r\nConnection: close\r\n\r\n")
    await asyncio.wait_for(serving, 5)
    text = pipe.outgoing.decode()
    assert re.findall(r"GET /\w \w", text) == ["GET /a x", "GET /b y", "GET /c z"]
    assert text.count("HTTP/1.1 200 OK\r\n") == 3
    assert pipe.closed.is_set() and not pipe.was_reset


async def test_the_bridge_answers_malformed_http_with_400_and_closes() -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        raise AssertionError("never called")

    pipe = MemoryPipe()
    serving = asyncio.create_task(
        HttpBridge(lambda port: handler)(ForwardedPort("n", "p", 1, "0"), pipe)
    )
    await pipe.incoming.put(b"NOT HTTP AT ALL\r\n\r\n")
    await asyncio.wait_for(serving, 5)
    assert re.match(rb"HTTP/1\.[01] 400 Bad Request\r\n", pipe.outgoing)


# --- end to end: the real kubectl -------------------------------------------------------------


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "default", "uid": "0b5c", "labels": {"app": "web"}},
    "spec": {
        "nodeName": "n1",
        "containers": [
            {"name": "web", "image": "web:1", "ports": [{"name": "http", "containerPort": 8080}]}
        ],
    },
    "status": {"phase": "Running"},
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default", "uid": "5e1c"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
}
DISCOVERY: dict[str, Any] = {
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "pods",
                "singularName": "pod",
                "namespaced": True,
                "kind": "Pod",
                "verbs": ["get", "list"],
                "shortNames": ["po"],
            },
            {
                "name": "pods/portforward",
                "singularName": "",
                "namespaced": True,
                "kind": "PodPortForwardOptions",
                "verbs": ["create", "get"],
            },
            {
                "name": "services",
                "singularName": "service",
                "namespaced": True,
                "kind": "Service",
                "verbs": ["get", "list"],
                "shortNames": ["svc"],
            },
        ],
    },
}


class FakeStream:
    """A ResponseStream as the router returns one: head first, then the body chunk by chunk."""

    def __init__(self, status: int, chunks: list[bytes], gate: asyncio.Event | None = None):
        self.head = ResponseHead(status, "", (("Content-Type", "text/plain"),))
        self.endpoint = "n1/web-1"
        self._chunks = list(chunks)
        self._gate = gate
        self.closed = False

    async def read(self) -> bytes:
        if not self._chunks:
            return b""
        if self._gate is not None and len(self._chunks) == 1:
            await asyncio.wait_for(self._gate.wait(), 10)  # the last chunk waits for the test
        return self._chunks.pop(0)

    async def aclose(self) -> None:
        self.closed = True

    def whole_body(self) -> bytes | None:
        return None


class FakeRouter:
    """The router as the front doors see it (ServiceOpener): pod web-1's handler."""

    def __init__(self) -> None:
        self.requests: list[ServiceRequest] = []
        self.gate = asyncio.Event()

    async def open(self, request: ServiceRequest) -> FakeStream:
        self.requests.append(request)
        path = request.cgi.path
        if request.target.name != "web-1" or request.target.port != "8080":
            raise HttpError(404, f"no pod port {request.target}")
        if path == "/big":
            return FakeStream(200, [BIG[i : i + 100_000] for i in range(0, len(BIG), 100_000)])
        if path == "/stream":
            return FakeStream(200, [b"first\n", b"second\n"], gate=self.gate)
        if path == "/echo":
            return FakeStream(200, [hashlib.sha256(request.body).hexdigest().encode()])
        return FakeStream(200, [f"hello from {path}".encode()])

    def endpoints(self, target: ServiceTarget) -> list[Endpoint]:
        """As ``ServiceRouter.endpoints`` answers for a pod target."""
        if target.name != "web-1":
            raise HttpError(404, f'pod "{target.name}" not found in namespace default')
        if target.port != "8080":
            raise HttpError(404, f'pod "{target.name}" has no port {target.port!r}')
        return [Endpoint("default", "web-1", "n1", "id1", 8080)]


async def check_pod(namespace: str, pod: str) -> str | None:
    return None if (namespace, pod) == ("default", "web-1") else f'pods "{pod}" not found'


@dataclass
class Cluster:
    url: str
    kubeconfig: Path
    forwarder: PortForwarder
    router: FakeRouter
    upgrades: list[str]


def make_app(forwarder: PortForwarder, upgrades: list[str]) -> web.Application:
    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        if request.path.endswith("/portforward"):
            upgrades.append(request.headers.get("Upgrade", ""))
        response: web.StreamResponse = await handler(request)
        return response

    async def static(request: web.Request) -> web.StreamResponse:
        return web.json_response(DISCOVERY[request.path])

    async def pod(request: web.Request) -> web.StreamResponse:
        if request.match_info["name"] != "web-1":
            return web.json_response(
                {"kind": "Status", "code": 404, "reason": "NotFound"}, status=404
            )
        return web.json_response(POD)

    async def pods(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [POD]}
        )

    async def service(request: web.Request) -> web.StreamResponse:
        return web.json_response(SERVICE)

    app = web.Application(middlewares=[guard])
    for path in DISCOVERY:
        app.router.add_get(path, static)
    app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", pod)
    app.router.add_get("/api/v1/namespaces/{ns}/pods", pods)
    app.router.add_get("/api/v1/namespaces/{ns}/services/web", service)
    app.add_routes(forwarder.routes())
    app.on_shutdown.append(lambda _app: forwarder.close())
    return app


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    router = FakeRouter()
    forwarder = PortForwarder(
        service_port_server(router, check=router_check(router)),
        check_pod=check_pod,
        settings=PortForwardSettings(),
    )
    upgrades: list[str] = []
    async with https_api(make_app(forwarder, upgrades), tmp_path, TOKEN) as (url, kubeconfig):
        yield Cluster(url, kubeconfig, forwarder, router, upgrades)


class PortForward:
    """A running ``kubectl port-forward``: its local port and everything it printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.out: list[str] = []
        self.port = 0
        self._reader: asyncio.Task[None] | None = None

    async def started(self) -> int:
        assert self.process.stdout is not None
        async with asyncio.timeout(20):
            while True:
                line = (await self.process.stdout.readline()).decode()
                if not line:
                    err = await self.stderr()
                    raise AssertionError(f"kubectl ended: {self.out} {err}")
                self.out.append(line)
                if match := re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line):
                    self.port = int(match[1])
                    self._reader = asyncio.create_task(self._read_rest())
                    return self.port

    async def _read_rest(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.out.append(line.decode())

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode()

    async def stop(self, sig: int = signal.SIGINT) -> int:
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(15):
            code = await self.process.wait()
            if self._reader is not None:
                await self._reader
        return code

    def handled(self) -> int:
        return sum(line.startswith("Handling connection for") for line in self.out)


@pytest.fixture(params=["websocket", "spdy"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def port_forward(cluster: Cluster, transport: str, *args: str) -> PortForward:
    env = dict(os.environ, KUBECTL_PORT_FORWARD_WEBSOCKETS="true")
    if transport == "spdy":
        env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "false"
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--kubeconfig",
        str(cluster.kubeconfig),
        "port-forward",
        "--address",
        "127.0.0.1",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    return PortForward(process)


def expected_upgrade(transport: str) -> str:
    return "websocket" if transport == "websocket" else "SPDY/3.1"


async def wait_until_idle(forwarder: PortForwarder, baseline: set[asyncio.Task[Any]]) -> None:
    """Every session over and no task of ours left (those the test had before aside)."""

    def left() -> set[asyncio.Task[Any]]:
        return asyncio.all_tasks() - baseline - {asyncio.current_task()}  # type: ignore[operator]

    try:
        async with asyncio.timeout(10):
            while forwarder.sessions or left():  # noqa: ASYNC110 - no event tells a task's end
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{forwarder.sessions} sessions, tasks left: {left()}") from None


@requires_kubectl
async def test_kubectl_port_forward_to_a_pod(cluster: Cluster, transport: str) -> None:
    baseline = set(asyncio.all_tasks())
    forward = await port_forward(cluster, transport, "pod/web-1", ":8080")
    port = await forward.started()
    base = f"http://127.0.0.1:{port}"
    try:
        # Sequential requests on one kept-alive connection.
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as http:
            for i in range(5):
                async with http.get(f"{base}/hello/{i}?q=1") as response:
                    assert response.status == 200
                    assert await response.text() == f"hello from /hello/{i}"
                    assert response.headers["X-P2pkube-Endpoint"] == "n1/web-1"
            # A streamed body: the first chunk arrives before the last is written.
            async with http.get(f"{base}/stream") as response:
                assert await response.content.readline() == b"first\n"
                cluster.router.gate.set()
                assert await response.content.read() == b"second\n"
            # 5 MiB down and 3 MiB up, intact.
            async with http.get(f"{base}/big") as response:
                assert await response.read() == BIG
            upload = os.urandom(3 * 1024 * 1024)
            async with http.post(f"{base}/echo", data=upload) as response:
                assert await response.text() == hashlib.sha256(upload).hexdigest()
        assert forward.handled() == 1, forward.out

        # Several connections at once, each with its own requests.
        async def one_connection(n: int) -> list[str]:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
                texts = []
                for j in range(3):
                    async with http.get(f"{base}/c{n}/{j}") as response:
                        texts.append(await response.text())
                async with http.get(f"{base}/big") as response:
                    assert hashlib.sha256(await response.read()).digest() == (
                        hashlib.sha256(BIG).digest()
                    )
                return texts

        results = await asyncio.gather(*(one_connection(n) for n in range(4)))
        assert results == [[f"hello from /c{n}/{j}" for j in range(3)] for n in range(4)]
        async with asyncio.timeout(5):
            while forward.handled() < 5:  # noqa: ASYNC110 - kubectl's output, read by a task
                await asyncio.sleep(0.05)
        assert forward.handled() == 5

        request = cluster.router.requests[0]
        assert request.target.pod and request.target.name == "web-1"
        assert request.cgi.server_port == 8080 and request.cgi.query == "q=1"
        assert request.trace["door"] == "port-forward default/web-1:8080"
        assert cluster.upgrades[-1] == expected_upgrade(transport)
    finally:
        code = await forward.stop()
    assert code == 0, (forward.out, await forward.stderr())
    await wait_until_idle(cluster.forwarder, baseline)


@requires_kubectl
async def test_kubectl_port_forward_to_a_service_resolves_its_pod(
    cluster: Cluster, transport: str
) -> None:
    # svc/web port 80 -> targetPort "http" -> containerPort 8080 of web-1, resolved by kubectl.
    forward = await port_forward(cluster, transport, "svc/web", ":80")
    async with asyncio.timeout(20):
        assert forward.process.stdout is not None
        line = (await forward.process.stdout.readline()).decode()
    match = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line)
    assert match, (line, forward.process.returncode)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{match[1]}/via/service") as response:
                assert await response.text() == "hello from /via/service"
    finally:
        await forward.stop()


@requires_kubectl
async def test_a_port_the_pod_lacks_is_reported_by_kubectl(
    cluster: Cluster, transport: str
) -> None:
    baseline = set(asyncio.all_tasks())
    forward = await port_forward(cluster, transport, "pod/web-1", ":9999")
    assert forward.process.stdout is not None
    async with asyncio.timeout(20):
        line = (await forward.process.stdout.readline()).decode()
    port = int(re.findall(r":(\d+) ->", line)[0])
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{port}/") as response:
                await response.read()
    async with asyncio.timeout(15):  # kubectl ends the whole port-forward by itself
        code = await forward.process.wait()
    err = await forward.stderr()
    # klog prints the message quoted: the pod's name in it comes out as \"web-1\".
    message = "error forwarding port 9999 to pod default/web-1: pod \"web-1\" has no port '9999'"
    assert message.replace('"', '\\"') in err
    assert code == 1 and "lost connection to pod" in err
    await wait_until_idle(cluster.forwarder, baseline)


async def test_an_unknown_pod_is_404_before_any_upgrade(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            cluster.url + "/api/v1/namespaces/default/pods/nope/portforward",
            headers={"Authorization": f"Bearer {TOKEN}", "Upgrade": "SPDY/3.1"},
            ssl=False,
        )
        assert response.status == 404
        assert (await response.json())["message"] == 'pods "nope" not found'


async def test_an_upgrade_without_the_tunnel_subprotocol_is_refused(cluster: Cluster) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = cluster.url + "/api/v1/namespaces/default/pods/web-1/portforward"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, protocols=("v4.channel.k8s.io",), headers=headers, ssl=False)
        assert refused.value.status == 400
        response = await http.get(url, headers=headers, ssl=False)  # no upgrade at all
        assert response.status == 400
        async with http.ws_connect(
            url, protocols=(TUNNEL_PROTOCOL,), headers=headers, ssl=False
        ) as ws:
            assert ws.protocol == TUNNEL_PROTOCOL
            await ws.send_str("not SPDY")  # text in the tunnel ends the session: GOAWAY, close
            messages = [message async for message in ws]
        assert [m.data for m in messages] == [spdy.FrameEncoder().encode(spdy.GoAwayFrame(0))]


@requires_kubectl
async def test_a_killed_kubectl_leaves_nothing_behind(cluster: Cluster, transport: str) -> None:
    baseline = set(asyncio.all_tasks())
    forward = await port_forward(cluster, transport, "pod/web-1", ":8080")
    port = await forward.started()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")
    assert cluster.forwarder.sessions == 1
    await forward.stop(signal.SIGKILL)
    writer.close()
    await wait_until_idle(cluster.forwarder, baseline)


@requires_kubectl
async def test_any_byte_service_plugs_in_as_a_port_server(cluster: Cluster, transport: str) -> None:
    # Not HTTP: an echo of raw bytes, ended by the client's half-close (kubectl's FIN).
    seen: list[ForwardedPort] = []

    async def echo(port: ForwardedPort, pipe: BytePipe) -> None:
        seen.append(port)
        while data := await pipe.read():
            await pipe.write(data.upper())
        await pipe.close()

    cluster.forwarder.serve = echo
    forward = await port_forward(cluster, transport, "pod/web-1", ":8080")
    port = await forward.started()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = os.urandom(200_000).hex().encode()  # lower-case hex: upper() changes it
        writer.write(payload)
        writer.write_eof()
        async with asyncio.timeout(20):
            assert await reader.read() == payload.upper()  # to EOF: the server's FIN
        writer.close()
        assert seen == [ForwardedPort("default", "web-1", 8080, "0")]
    finally:
        await forward.stop()


@pytest.fixture(autouse=True)
def _no_proxy() -> Iterator[None]:
    # kubectl and aiohttp must reach 127.0.0.1 directly whatever the environment says.
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.lower().endswith("_proxy")}
    yield
    os.environ.update(saved)
