"""The router and the request rpc between in-process nodes (issue 12).

Real parts: the router, the request rpc's client and server, the rpc layer (over the fake
routed transport of tests/test_rpc.py, which msgpack-encodes every message as the wire does),
the endpoints computation over a real ObjectService and state (tests/memorybackend.py). The
handler is a small RequestHandler of the test's own, so each test can make an endpoint slow,
busy or broken; tests/test_services_cluster.py runs echo.wasm through real agents.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from p2pkube.net.rpc import Rpc, RpcRemoteError
from p2pkube.runtime.cgi import CgiRequest
from p2pkube.runtime.native import NativeRuntime
from p2pkube.services import wire
from p2pkube.services.router import ServiceRouter
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import (
    HttpError,
    RequestHandler,
    ResponseHead,
    ResponseStream,
    ServiceRequest,
    ServiceTarget,
    StreamBroken,
)
from tests.memorybackend import MemoryBackend
from tests.test_echo_handler import echo_module
from tests.test_handler import pool_of
from tests.test_rpc import FakeNetwork

__all__ = ["echo_module"]  # test_echo_handler's module-scoped fixture, used here too

NS = "default"


# -- a handler of the test's own ------------------------------------------------------------------
class FakeResponse:
    def __init__(self, endpoint: str, chunks: list[bytes], gate: asyncio.Event | None) -> None:
        self.head = ResponseHead(200, "OK", (("Content-Type", "text/plain"),))
        self.endpoint = endpoint
        self.chunks = list(chunks)
        self.gate = gate
        self.closed = False

    async def read(self) -> bytes:
        if not self.chunks:
            return b""
        if self.gate is not None and len(self.chunks) == 1:
            await self.gate.wait()  # the last chunk waits for the test
        return self.chunks.pop(0)

    async def aclose(self) -> None:
        self.closed = True

    def whole_body(self) -> bytes | None:
        return None  # read chunk by chunk, as the tests expect


@dataclass
class FakeHandler:
    """Answers with the request's method, path and body; or fails, or blocks, as told."""

    name: str
    fail: HttpError | None = None
    block: asyncio.Event | None = None
    gate: asyncio.Event | None = None
    chunks: list[bytes] | None = None
    seen: list[tuple[CgiRequest, bytes]] = field(default_factory=list)
    responses: list[FakeResponse] = field(default_factory=list)

    async def handle(self, request: CgiRequest, body: bytes) -> ResponseStream:
        self.seen.append((request, body))
        if self.block is not None:
            await self.block.wait()
        if self.fail is not None:
            raise self.fail
        chunks = self.chunks or [f"{request.method} {request.path} ".encode(), body]
        response = FakeResponse(self.name, chunks, self.gate)
        self.responses.append(response)
        return response


# -- an in-process cluster of routers -------------------------------------------------------------
def pod(name: str, node: str, ready: bool = True, port: int = 8080) -> dict[str, Any]:
    uid = f"uid-{name}"
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": uid, "labels": {"app": "web"}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "main", "image": "sha256:" + "a" * 64, "ports": [{"containerPort": port}]}
            ],
        },
        "status": {
            "podUID": uid,
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": NS},
    "spec": {
        "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
    },
}


class Cluster:
    """Routers n1..nN over one fake network, reading one shared state."""

    def __init__(self, backend: MemoryBackend, settings: ServiceSettings, nodes: int) -> None:
        self.network = FakeNetwork()
        self.ready: dict[str, bool] = {}
        self.handlers: dict[tuple[str, str], RequestHandler] = {}
        self.routers: dict[str, ServiceRouter] = {}
        self.rpcs: dict[str, Rpc] = {}
        for i in range(1, nodes + 1):
            name = f"n{i}"
            self.ready[name] = True
            transport = self.network.node(name)
            rpc = Rpc(transport)
            transport.on_routed = rpc.receive
            self.rpcs[name] = rpc
            self.routers[name] = ServiceRouter(
                name,
                backend.objects,
                rpc,
                settings,
                node_ready=self.ready.__getitem__,
                node_id_of=lambda node: node,  # node ids are the names here
                reachable=lambda node_id: node_id not in self.network.cut,
                handler_for=lambda ns, pod, port, node=name: self.handlers.get((node, pod)),
                on_change=backend.state.on_change,
                rng=random.Random(7),
            )
            self.routers[name].start()

    def serve(self, pod_name: str, node: str, **kwargs: Any) -> FakeHandler:
        handler = FakeHandler(f"{node}/{pod_name}", **kwargs)
        self.handlers[(node, pod_name)] = handler
        return handler

    async def close(self) -> None:
        for router in self.routers.values():
            await router.close()
        for rpc in self.rpcs.values():
            await rpc.close()


@pytest.fixture
async def make_cluster() -> AsyncIterator[Any]:
    opened: list[tuple[Cluster, MemoryBackend]] = []

    async def make(
        pods: list[dict[str, Any]], nodes: int = 3, **settings: Any
    ) -> tuple[Cluster, MemoryBackend]:
        backend = await MemoryBackend().open([SERVICE, *pods])
        cluster = Cluster(backend, ServiceSettings(**settings), nodes)
        opened.append((cluster, backend))
        return cluster, backend

    yield make
    for cluster, backend in opened:
        await cluster.close()
        await backend.close()


def request(
    method: str = "GET", body: bytes = b"", name: str = "web", **target: Any
) -> ServiceRequest:
    cgi = CgiRequest(
        method,
        "/hello",
        query="a=1",
        headers=(("X-Echo", "yes"),),
        content_length=len(body) if body else None,
    )
    return ServiceRequest(ServiceTarget(NS, name, **target), cgi, body)


async def fetch(router: ServiceRouter, req: ServiceRequest) -> tuple[str, bytes]:
    stream = await router.open(req)
    body = b""
    while chunk := await stream.read():
        body += chunk
    await stream.aclose()
    return stream.endpoint, body


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``condition()`` holds (AssertionError after ``within`` seconds)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- wire ------------------------------------------------------------------------------------------
LIMITS = ServiceSettings()


def open_body(**changes: Any) -> dict[str, Any]:
    cgi = CgiRequest("POST", "/p", "q=1", (("X-A", "1"),), "10.0.0.1", "n1", 30080, "HTTP/1.1", 3)
    body = wire.open_message("s1", NS, "web-a", 8080, cgi, b"abc", more=False, deadline=5.0)
    body.update(changes)
    return msgpack.unpackb(msgpack.packb(body, use_bin_type=True), raw=False)


def test_an_open_message_reads_back_as_it_was_built() -> None:
    message = wire.read_open(open_body(), LIMITS)
    assert (message.stream, message.namespace, message.pod, message.port) == (
        "s1",
        NS,
        "web-a",
        8080,
    )
    assert message.request == CgiRequest(
        "POST", "/p", "q=1", (("X-A", "1"),), "10.0.0.1", "n1", 30080, "HTTP/1.1", 3
    )
    assert (message.chunk, message.more, message.deadline) == (b"abc", False, 5.0)
    assert wire.read_open(open_body(deadline=999), LIMITS).deadline == LIMITS.request_deadline


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"stream": "../x"}, "stream"),
        ({"stream": 5}, "stream"),
        ({"port": 0}, "port"),
        ({"port": True}, "port"),
        ({"ns": ""}, "ns"),
        ({"pod": "p" * 300}, "pod"),
        ({"body": "text"}, "body"),
        ({"body": b"x" * (LIMITS.stream_chunk_bytes + 1)}, "body"),
        ({"more": 1}, "more"),
        ({"deadline": float("nan")}, "deadline"),
        ({"deadline": -1}, "deadline"),
        ({"req": []}, "req"),
        ({"req": {"method": "GET POST"}}, "req.method"),
    ],
)
def test_a_malformed_open_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(wire.WireError) as refused:
        wire.read_open(open_body(**changes), LIMITS)
    assert str(refused.value).startswith(field)


@pytest.mark.parametrize(
    "req_changes",
    [
        {"headers": [["X", 1]]},
        {"headers": [["X"]]},
        {"headers": [["X", "y"]] * (LIMITS.max_request_headers + 1)},
        {"path": "/" * (LIMITS.max_request_header_bytes + 1)},
        {"serverPort": 70000},
        {"contentLength": -1},
        {"contentLength": LIMITS.max_request_body_bytes + 1},
    ],
)
def test_a_malformed_request_inside_an_open_is_refused(req_changes: dict[str, Any]) -> None:
    req = {**open_body()["req"], **req_changes}
    with pytest.raises(wire.WireError, match=r"^req\."):
        wire.read_open(open_body(req=req), LIMITS)


def test_answers_and_http_error_codes_read_back() -> None:
    head = ResponseHead(201, "Created", (("Location", "/x"),))
    answer = msgpack.unpackb(msgpack.packb(wire.head_answer(head, b"hi", True)), raw=False)
    assert wire.read_head_answer(answer, LIMITS) == (head, b"hi", True)
    assert wire.read_chunk_answer(wire.chunk_answer(b"x", False), LIMITS) == (b"x", False)
    for bad, what in [
        ({"status": 99}, "status"),
        ({"reason": "OK\r\nSet-Cookie: x=1"}, "reason"),
        ({"headers": [["X-A", "1\r\nSet-Cookie: x=1"]]}, "headers"),
        ({"headers": [["Bad Name", "1"]]}, "headers"),
    ]:
        with pytest.raises(wire.WireError, match=f"^{what}"):
            wire.read_head_answer({**answer, **bad}, LIMITS)
    error = HttpError(503, "full", retry_after=2)
    assert wire.error_code(error) == "http-503;retry-after=2"
    back = wire.http_error(wire.error_code(error), "full")
    assert back is not None and (back.status, back.retry_after, back.reached_handler) == (
        503,
        2,
        False,
    )
    reached = wire.http_error(wire.error_code(HttpError(504, "late", reached_handler=True)), "")
    assert reached is not None and reached.reached_handler and reached.retry_after is None
    assert wire.http_error("busy", "") is None and wire.http_error("http-999", "") is None


# -- routing ---------------------------------------------------------------------------------------
async def test_a_request_crosses_the_mesh_with_its_body_streamed_both_ways(
    make_cluster: Any,
) -> None:
    cluster, _ = await make_cluster([pod("web-a", "n2")], retry_attempts=0)
    body = bytes(range(256)) * 400  # 100 KiB: the open's chunk plus svc.body chunks
    big = [b"x" * 70_000, b"y" * 70_000, b"z"]
    handler = cluster.serve("web-a", "n2", chunks=big)
    endpoint, answer = await fetch(cluster.routers["n1"], request("POST", body))
    assert endpoint == "n2/web-a" and answer == b"".join(big)
    seen_request, seen_body = handler.seen[0]
    assert seen_body == body and seen_request.path == "/hello" and seen_request.query == "a=1"
    assert ("X-Echo", "yes") in seen_request.headers
    served = cluster.routers["n2"].server
    assert served.stats.completed == 1 and served.stats_dict()["open"] == 0
    assert handler.responses[0].closed
    stats = cluster.routers["n1"].stats_dict()
    assert stats["requests"] == 1 and stats["remote"] == 1 and stats["outstanding"] == {}


async def test_big_headers_travel_with_the_body_after_them_or_get_431(make_cluster: Any) -> None:
    cluster, _ = await make_cluster([pod("web-a", "n2"), pod("web-b", "n3")])
    handler = cluster.serve("web-a", "n2")
    cluster.serve("web-b", "n3")
    router = cluster.routers["n1"]
    cluster.ready["n3"] = False
    headers = tuple((f"X-Big-{i}", "v" * 9000) for i in range(5))  # 45 kB of headers
    big = ServiceRequest(
        ServiceTarget(NS, "web"), CgiRequest("POST", "/", headers=headers), b"b" * 30_000
    )
    endpoint, body = await fetch(router, big)
    assert endpoint == "n2/web-a" and body.endswith(b"b" * 30_000)
    assert handler.seen[-1][0].headers == headers
    huge = replace(big, cgi=CgiRequest("GET", "/", headers=headers * 2))  # 90 kB
    with pytest.raises(HttpError) as refused:
        await router.open(huge)
    assert refused.value.status == 431 and router.stats.retries == 0
    await cluster.routers["n2"].close()  # a closing node refuses unseen: another one answers
    cluster.ready["n3"] = True
    for _ in range(4):
        assert (await fetch(router, request("POST", b"x")))[0] == "n3/web-b"
    assert router.stats.retries >= 1  # n2 was tried at least once and said closing


async def test_a_local_endpoint_is_preferred_unless_told_otherwise(make_cluster: Any) -> None:
    pods = [pod("web-a", "n1"), pod("web-b", "n2")]
    cluster, _ = await make_cluster(pods)
    cluster.serve("web-a", "n1")
    cluster.serve("web-b", "n2")
    hits = Counter([(await fetch(cluster.routers["n1"], request()))[0] for _ in range(10)])
    assert hits == {"n1/web-a": 10}
    assert (await fetch(cluster.routers["n3"], request()))[0] in ("n1/web-a", "n2/web-b")

    spread, _ = await make_cluster(pods, prefer_local=False)
    spread.serve("web-a", "n1")
    spread.serve("web-b", "n2")
    held = [await spread.routers["n1"].open(request()) for _ in range(10)]
    assert Counter(s.endpoint for s in held) == {"n1/web-a": 5, "n2/web-b": 5}
    for stream in held:
        await stream.aclose()


async def test_power_of_two_choices_spreads_outstanding_requests(make_cluster: Any) -> None:
    pods = [pod(f"web-{n}", n) for n in ("n2", "n3", "n4")]
    cluster, _ = await make_cluster(pods, nodes=4)
    for n in ("n2", "n3", "n4"):
        cluster.serve(f"web-{n}", n)
    router = cluster.routers["n1"]
    held = [await router.open(request()) for _ in range(12)]
    load = Counter(s.endpoint for s in held)
    assert sorted(load) == ["n2/web-n2", "n3/web-n3", "n4/web-n4"]
    assert max(load.values()) - min(load.values()) <= 2, load
    assert router.stats_dict()["outstanding"] == dict(load)
    for stream in held:
        await stream.aclose()
    assert router.stats_dict()["outstanding"] == {}


async def test_endpoints_of_not_ready_or_unreachable_nodes_are_never_picked(
    make_cluster: Any,
) -> None:
    pods = [pod("web-a", "n2"), pod("web-b", "n3"), pod("web-c", "n4"), pod("web-d", "n2", False)]
    cluster, _ = await make_cluster(pods, nodes=4)
    for name, node in (("web-a", "n2"), ("web-b", "n3"), ("web-c", "n4"), ("web-d", "n2")):
        cluster.serve(name, node)
    cluster.ready["n3"] = False
    cluster.network.cut.add("n4")
    hits = Counter([(await fetch(cluster.routers["n1"], request()))[0] for _ in range(10)])
    assert hits == {"n2/web-a": 10}


async def test_a_lost_node_fails_over_for_a_get_but_not_for_a_post(make_cluster: Any) -> None:
    cluster, _ = await make_cluster([pod("web-a", "n2"), pod("web-b", "n3")])
    cluster.serve("web-a", "n2")
    stuck = cluster.serve("web-b", "n3", block=asyncio.Event())
    router = cluster.routers["n1"]

    async def through_n3(method: str) -> tuple[str, bytes]:
        cluster.ready["n3"] = False
        hold = await router.open(request())  # n2 now has one outstanding: P2C picks n3
        assert hold.endpoint == "n2/web-a"
        cluster.ready["n3"] = True
        task = asyncio.create_task(fetch(router, request(method, b"data")))
        await until(lambda: len(stuck.seen) == (1 if method == "GET" else 2))
        cluster.ready["n3"] = False  # its node is lost while the handler runs
        try:
            return await task
        finally:
            await hold.aclose()

    started = time.monotonic()
    assert await through_n3("GET") == ("n2/web-a", b"GET /hello data")
    assert time.monotonic() - started < 2
    assert router.stats.retries == 1
    with pytest.raises(HttpError) as failed:
        await through_n3("POST")
    assert failed.value.status == 502 and "n3" in failed.value.message
    assert router.stats.retries == 1 and router.stats_dict()["failures"] == {"502": 1}


async def test_a_silent_node_is_pinged_ejected_and_a_get_fails_over_before_it_is_declared(
    make_cluster: Any,
) -> None:
    """A node killed with SIGKILL stays Ready and linked for about two seconds: a GET waiting
    on it fails over once it misses a ping, and new requests avoid it; a POST keeps waiting."""
    cluster, _ = await make_cluster(
        [pod("web-a", "n2"), pod("web-b", "n3")], ping_after=0.2, ping_timeout=0.3
    )
    cluster.serve("web-a", "n2")
    stuck = cluster.serve("web-b", "n3", block=asyncio.Event())
    router = cluster.routers["n1"]
    cluster.ready["n3"] = False
    hold = await router.open(request())  # n2 has one outstanding now: P2C picks n3 next
    cluster.ready["n3"] = True
    task = asyncio.create_task(fetch(router, request()))
    await until(lambda: len(stuck.seen) == 1)
    cluster.network.silent.add("n3")  # killed; the failure detector has not noticed yet
    started = time.monotonic()
    assert await task == ("n2/web-a", b"GET /hello ")
    assert time.monotonic() - started < 1.0
    liveness = router.stats_dict()["liveness"]
    assert liveness == {"probes": 1, "ejections": 1, "ejected": 1, "lateTimers": 0}
    for _ in range(5):  # n3 is ejected: no request waits on it any more
        began = time.monotonic()
        assert (await fetch(router, request()))[0] == "n2/web-a"
        assert time.monotonic() - began < 0.2
    await hold.aclose()


async def test_a_post_waits_on_a_silent_node_until_it_is_declared_lost(make_cluster: Any) -> None:
    """A POST is never sent twice: a missed ping does not fail it, the failure detector does."""
    cluster, _ = await make_cluster(
        [pod("web-a", "n2"), pod("web-b", "n3")], ping_after=0.2, ping_timeout=0.3
    )
    stuck = cluster.serve("web-b", "n3", block=asyncio.Event())
    router = cluster.routers["n1"]
    cluster.ready["n2"] = False
    post = asyncio.create_task(fetch(router, request("POST", b"x")))
    await until(lambda: len(stuck.seen) == 1)
    cluster.network.silent.add("n3")
    await asyncio.sleep(1.0)
    assert not post.done()
    assert router.stats_dict()["liveness"]["ejections"] == 1  # new requests avoid n3 meanwhile
    cluster.ready["n3"] = False  # now the failure detector declares it
    with pytest.raises(HttpError) as failed:
        await post
    assert failed.value.status == 502 and "n3" in failed.value.message


async def test_a_get_to_the_only_endpoint_outlasts_a_missed_ping(make_cluster: Any) -> None:
    """A node that misses its ping may only be starved (a loaded machine): with nowhere else to
    send the GET, the router keeps waiting for the answer instead of failing it with 502 "lost";
    the node is still ejected, so new requests would go elsewhere if there were an elsewhere."""
    cluster, _ = await make_cluster([pod("web-b", "n3")], ping_after=0.2, ping_timeout=0.3)
    release = asyncio.Event()
    cluster.serve("web-b", "n3", block=release)
    router = cluster.routers["n1"]
    task = asyncio.create_task(fetch(router, request()))
    await until(lambda: len(cluster.handlers[("n3", "web-b")].seen) == 1)
    cluster.network.silent.add("n3")  # its ping goes unanswered
    await until(lambda: router.stats_dict()["liveness"]["ejections"] == 1)
    await asyncio.sleep(0.3)
    assert not task.done()
    cluster.network.silent.discard("n3")  # it was only starved: its handler answers
    release.set()
    assert await asyncio.wait_for(task, 5) == ("n3/web-b", b"GET /hello ")
    assert router.stats_dict()["failures"] == {}


async def test_a_request_no_handler_saw_is_retried_whatever_its_method(make_cluster: Any) -> None:
    cluster, _ = await make_cluster([pod("web-a", "n2"), pod("web-b", "n3")])
    cluster.serve("web-a", "n2", fail=HttpError(503, "queue full", retry_after=1))
    ok = cluster.serve("web-b", "n3")
    for _ in range(4):
        assert (await fetch(cluster.routers["n1"], request("POST", b"x")))[0] == "n3/web-b"
    assert len(ok.seen) == 4
    # a handler's own verdict is the answer: no retry, even for a GET
    cluster.handlers[("n3", "web-b")] = replace(
        ok, fail=HttpError(502, "trap", reached_handler=True)
    )
    cluster.handlers[("n2", "web-a")] = replace(
        ok, fail=HttpError(502, "trap", reached_handler=True)
    )
    with pytest.raises(HttpError) as failed:
        await fetch(cluster.routers["n1"], request())
    assert failed.value.status == 502 and failed.value.message == "trap"


async def test_no_ready_endpoint_is_503_with_retry_after_and_unknown_targets_404(
    make_cluster: Any,
) -> None:
    cluster, backend = await make_cluster([pod("web-a", "n2", ready=False)], retry_after=3)
    router = cluster.routers["n1"]
    with pytest.raises(HttpError) as none:
        await router.open(request())
    assert (none.value.status, none.value.retry_after) == (503, 3)
    assert 'no ready endpoints for service "web" in namespace default' in none.value.message
    for target, message in [
        (request(name="nope"), 'service "nope" not found in namespace default'),
        (request(port="grpc"), "has no port 'grpc'"),
        (request(name="ghost", pod=True), 'pod "ghost" not found in namespace default'),
        (request(name="web-a", pod=True, port="9"), "has no port '9'"),
    ]:
        with pytest.raises(HttpError) as missing:
            await router.open(target)
        assert missing.value.status == 404 and message in missing.value.message
    await backend.set(pod("web-a", "n2"))
    cluster.serve("web-a", "n2")
    assert (await fetch(router, request(name="web-a", pod=True)))[0] == "n2/web-a"
    assert (await fetch(router, request(port="80")))[0] == "n2/web-a"
    await backend.set(pod("web-a", "n2", ready=False))  # its readiness probe failed
    with pytest.raises(HttpError) as unready:
        await router.open(request())
    assert unready.value.status == 503
    assert router.stats_dict()["failures"] == {"404": 4, "503": 2}


async def test_the_deadline_bounds_a_request_and_leaves_nothing_outstanding(
    make_cluster: Any,
) -> None:
    cluster, _ = await make_cluster([pod("web-a", "n1"), pod("web-b", "n2")], request_deadline=0.3)
    cluster.serve("web-a", "n1", block=asyncio.Event())
    cluster.serve("web-b", "n2", block=asyncio.Event())
    for via in ("n1", "n3"):  # the handler here, then one hop away
        router = cluster.routers[via]
        started = time.monotonic()
        with pytest.raises(HttpError) as late:
            await router.open(request())
        assert late.value.status == 504 and time.monotonic() - started < 1
        assert router.stats_dict()["outstanding"] == {}


# -- the serving side ------------------------------------------------------------------------------
async def test_malformed_messages_are_refused_and_the_server_keeps_serving(
    make_cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cluster, _ = await make_cluster([pod("web-a", "n2")])
    cluster.serve("web-a", "n2")
    rpc = cluster.rpcs["n1"]
    for method, body in [
        (wire.OPEN, "garbage"),
        (wire.OPEN, {**open_body(), "port": "80"}),
        (wire.BODY, {"stream": "s", "seq": 0, "chunk": b"", "end": True}),
        (wire.READ, {"stream": ""}),
        (wire.CANCEL, []),
    ]:
        with pytest.raises(RpcRemoteError) as refused:
            await rpc.call("n2", method, body)
        assert refused.value.code == wire.BAD_REQUEST
    with pytest.raises(RpcRemoteError) as gone:
        await rpc.call("n2", wire.READ, wire.stream_message("unknown"))
    assert gone.value.code == wire.GONE
    assert cluster.routers["n2"].server.stats.malformed == 5
    assert "malformed request rpc message from n1" in caplog.text
    assert (await fetch(cluster.routers["n1"], request()))[0] == "n2/web-a"


async def test_open_streams_are_bounded_and_an_idle_one_expires(make_cluster: Any) -> None:
    cluster, _ = await make_cluster(
        [pod("web-a", "n2")], max_open_streams_per_node=1, stream_idle_timeout=0.3
    )
    handler = cluster.serve("web-a", "n2", chunks=[b"a", b"b"], gate=asyncio.Event())
    router = cluster.routers["n1"]
    held = await router.open(request())  # its body is not finished: the stream stays open
    with pytest.raises(HttpError) as full:
        await router.open(request())
    assert full.value.status == 503 and full.value.retry_after == 1
    assert cluster.routers["n2"].server.stats.refused_full == 1
    await asyncio.sleep(0.8)  # the router never reads: the server gives up on it
    server = cluster.routers["n2"].server
    assert server.stats.expired == 1 and server.stats_dict()["open"] == 0
    assert handler.responses[0].closed
    with pytest.raises(StreamBroken):
        while await held.read():
            pass
    assert handler.gate is not None
    handler.gate.set()
    assert await fetch(router, request()) == ("n2/web-a", b"ab")


async def test_uploads_buffered_for_others_are_bounded(make_cluster: Any) -> None:
    cluster, _ = await make_cluster([pod("web-a", "n2")], max_upload_bytes=50_000)
    handler = cluster.serve("web-a", "n2")
    router = cluster.routers["n1"]
    with pytest.raises(HttpError) as refused:
        await router.open(request("POST", b"x" * 60_000))
    assert refused.value.status == 503 and refused.value.retry_after == 1
    assert handler.seen == [] and cluster.routers["n2"].server.stats_dict()["open"] == 0
    assert (await fetch(router, request("POST", b"x" * 40_000)))[1].endswith(b"x" * 40_000)


async def test_a_node_lost_mid_body_breaks_the_stream_and_aclose_cancels(make_cluster: Any) -> None:
    cluster, _ = await make_cluster([pod("web-a", "n2")], first_chunk_wait=0.0)
    handler = cluster.serve("web-a", "n2", chunks=[b"first", b"last"], gate=asyncio.Event())
    router = cluster.routers["n1"]
    stream = await router.open(request())
    assert await stream.read() == b"first"
    cluster.network.cut.add("n2")
    started = time.monotonic()
    with pytest.raises(StreamBroken, match="n2/web-a"):
        await stream.read()
    assert time.monotonic() - started < 1
    assert router.stats.broken == 1 and router.stats_dict()["outstanding"] == {}
    cluster.network.cut.clear()

    second = await router.open(request())
    await second.aclose()  # the handler is released on the serving node
    await until(lambda: len(handler.responses) == 2 and handler.responses[1].closed)
    server = cluster.routers["n2"].server
    # a cancel ends a read waiting on the stream at once, not at the end of its long poll
    third = await router.open(request())
    assert await third.read() == b"first"
    waiting = asyncio.create_task(third.read())
    await asyncio.sleep(0.1)
    [(_, stream_id)] = [key for key in server._streams if key[0] == "n1"]
    started = time.monotonic()
    await cluster.rpcs["n1"].call("n2", wire.CANCEL, wire.stream_message(stream_id))
    with pytest.raises(StreamBroken, match="cancelled"):
        await waiting
    assert time.monotonic() - started < 1
    # all three were cancelled: the broken one too, once n2 could be reached again
    assert server.stats.cancelled == 3 and server.stats_dict()["open"] == 0


# -- a real handler: echo.wasm in wasmtime, one hop away -------------------------------------------


async def test_echo_wasm_answers_one_hop_away(
    make_cluster: Any, runtime: NativeRuntime, tmp_path: Path, echo_module: tuple[str, Path]
) -> None:
    cluster, _ = await make_cluster([pod("web-a", "n2")])
    pool = await pool_of(runtime, tmp_path, echo_module, pod="web-a", node="n2")
    cluster.handlers[("n2", "web-a")] = pool
    router = cluster.routers["n1"]
    endpoint, body = await fetch(router, request("POST", b"x" * 100_000))
    text = body.decode()
    assert endpoint == "n2/web-a"
    for line in ("method: POST", "path: /hello", "query: a=1", "x-echo: yes", "body: 100000 bytes"):
        assert line in text, text
    assert "web-a" in text and "n2" in text

    for via in ("n2", "n1"):  # the endpoint's own node, then one hop away
        took = []
        for _ in range(100):
            started = time.perf_counter()
            await fetch(cluster.routers[via], request())
            took.append(time.perf_counter() - started)
        took.sort()
        print(f"via {via}: p50 {took[50] * 1e3:.2f} ms, p99 {took[98] * 1e3:.2f} ms")
    assert pool.requests == 201 and router.stats.failures == {}
    await pool.close()
