"""Rpc edge cases between in-process nodes joined by a fake routed transport.

The transport is the only fake: messages go through a msgpack round trip like on the wire and
are delivered on a later loop iteration, as the mesh would deliver them. The end-to-end path
through real agents and a relay is in tests/test_blobs_cluster.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from p2pkube.net.frames import FrameError
from p2pkube.net.rpc import (
    Rpc,
    RpcBodyTooLarge,
    RpcBusy,
    RpcError,
    RpcOverloaded,
    RpcRemoteError,
    RpcTimeout,
    RpcUnknownMethod,
    RpcUnreachable,
)
from p2pkube.net.settings import RpcSettings


class FakeNetwork:
    """Nodes that can all reach each other unless a link is cut."""

    def __init__(self) -> None:
        self.nodes: dict[str, FakeTransport] = {}
        self.cut: set[str] = set()
        self.silent: set[str] = set()
        """Nodes that look linked but take every message and answer none (killed, not
        noticed yet)."""
        self.violations: list[tuple[str, str]] = []

    def node(self, node_id: str) -> FakeTransport:
        transport = FakeTransport(node_id, self)
        self.nodes[node_id] = transport
        return transport


class FakeTransport:
    def __init__(self, node_id: str, network: FakeNetwork) -> None:
        self.node_id = node_id
        self.network = network
        self.on_routed: Callable[[str, dict[str, Any]], None] = lambda src, data: None
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.waited = 0

    def send_routed(self, node_id: str, data: dict[str, Any]) -> bool:
        target = self.network.nodes.get(node_id)
        if target is None or node_id in self.network.cut or self.node_id in self.network.cut:
            return False
        self.sent.append((node_id, data))
        if node_id in self.network.silent or self.node_id in self.network.silent:
            return True
        wire = msgpack.packb(data, use_bin_type=True)
        asyncio.get_running_loop().call_soon(target.deliver, self.node_id, wire)
        return True

    def deliver(self, src: str, wire: bytes) -> None:
        try:
            self.on_routed(src, msgpack.unpackb(wire, raw=False))
        except FrameError as exc:
            self.network.violations.append((src, str(exc)))

    async def wait_writable(self, node_id: str, limit: int) -> bool:
        self.waited += 1
        await self.writable.wait()
        return True


def pair(
    settings: RpcSettings | None = None, names: tuple[str, str] = ("a", "b")
) -> tuple[FakeNetwork, Rpc, Rpc]:
    network = FakeNetwork()
    a, b = network.node(names[0]), network.node(names[1])
    rpc_a, rpc_b = Rpc(a, settings), Rpc(b, settings)
    a.on_routed, b.on_routed = rpc_a.receive, rpc_b.receive
    return network, rpc_a, rpc_b


async def echo(src: str, body: Any) -> Any:
    return {"from": src, "echo": body}


async def test_a_call_gets_the_handlers_answer() -> None:
    _, a, b = pair()
    b.register("echo", echo)
    assert await a.call("b", "echo", {"x": [1, 2, b"\x00"]}) == {
        "from": "a",
        "echo": {"x": [1, 2, b"\x00"]},
    }
    assert b.stats.requests_served == 1 and a.stats.calls == 1
    await asyncio.gather(a.close(), b.close())


async def test_unknown_method_and_handler_errors_come_back_with_their_message() -> None:
    _, a, b = pair()

    async def refuse(src: str, body: Any) -> Any:
        raise RpcRemoteError("not-found", f"nothing called {body!r}")

    async def crash(src: str, body: Any) -> Any:
        raise ValueError("boom")

    b.register("refuse", refuse)
    b.register("crash", crash)
    with pytest.raises(RpcUnknownMethod) as unknown:
        await a.call("b", "nope")
    assert unknown.value.code == "unknown-method" and unknown.value.node == "b"
    with pytest.raises(RpcRemoteError) as refused:
        await a.call("b", "refuse", "thing")
    assert refused.value.code == "not-found" and "'thing'" in refused.value.message
    with pytest.raises(RpcRemoteError) as crashed:
        await a.call("b", "crash")
    assert crashed.value.code == "internal" and "ValueError: boom" in crashed.value.message
    await asyncio.gather(a.close(), b.close())


async def test_no_path_fails_at_once_and_a_lost_answer_times_out() -> None:
    network, a, b = pair()
    started = asyncio.get_running_loop().time()
    with pytest.raises(RpcUnreachable):
        await a.call("nowhere", "echo", timeout=5)
    assert asyncio.get_running_loop().time() - started < 0.5

    release = asyncio.Event()

    async def slow(src: str, body: Any) -> Any:
        await release.wait()
        return "late"

    b.register("slow", slow)
    with pytest.raises(RpcTimeout):
        await a.call("b", "slow", timeout=0.2)
    release.set()
    await asyncio.sleep(0.05)  # the late answer arrives and is dropped quietly
    assert a.stats.late_answers == 1 and not network.violations
    assert a.stats_dict()["pendingCalls"] == 0
    await asyncio.gather(a.close(), b.close())


async def test_too_many_requests_from_one_source_are_answered_busy() -> None:
    _, a, b = pair(RpcSettings(max_requests_per_source=2))
    release = asyncio.Event()

    async def hold(src: str, body: Any) -> Any:
        await release.wait()
        return body

    b.register("hold", hold)
    calls = [asyncio.create_task(a.call("b", "hold", i, timeout=5)) for i in range(3)]
    done, _ = await asyncio.wait(calls, timeout=2, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1
    with pytest.raises(RpcBusy):
        await done.pop()
    release.set()
    results = await asyncio.gather(*(c for c in calls if not c.done()))
    assert sorted(results) == [0, 1]
    assert b.stats.busy_refused == 1
    await asyncio.gather(a.close(), b.close())


async def test_pending_calls_and_body_sizes_are_bounded() -> None:
    _, a, b = pair(RpcSettings(max_pending_calls=1, max_request_bytes=100))
    release = asyncio.Event()

    async def hold(src: str, body: Any) -> Any:
        await release.wait()
        return b"y" * 200

    b.register("hold", hold)
    first = asyncio.create_task(a.call("b", "hold", timeout=5))
    await asyncio.sleep(0)
    with pytest.raises(RpcOverloaded):
        await a.call("b", "hold")
    release.set()
    assert await first == b"y" * 200
    with pytest.raises(RpcBodyTooLarge):
        await a.call("b", "hold", b"x" * 200)

    _, c, d = pair(RpcSettings(max_response_bytes=100), ("c", "d"))

    async def big(src: str, body: Any) -> Any:
        return b"z" * 200

    d.register("big", big)
    with pytest.raises(RpcRemoteError) as too_large:
        await c.call("d", "big")
    assert too_large.value.code == "too-large"
    await asyncio.gather(a.close(), b.close(), c.close(), d.close())


async def test_sending_waits_for_the_path_to_drain() -> None:
    network, a, b = pair(RpcSettings(send_wait_timeout=5))
    b.register("echo", echo)
    network.nodes["a"].writable.clear()
    call = asyncio.create_task(a.call("b", "echo", 1, timeout=5))
    await asyncio.sleep(0.1)
    assert not call.done() and not network.nodes["a"].sent  # held back, not queued
    network.nodes["a"].writable.set()
    assert (await call)["echo"] == 1
    assert network.nodes["b"].waited == 1  # the answer was paced too
    await asyncio.gather(a.close(), b.close())


@pytest.mark.parametrize(
    "message",
    [
        {"kind": "rpc-req", "id": "1", "method": "echo", "body": b"\xc0"},
        {"kind": "rpc-req", "id": 0, "method": "echo", "body": b"\xc0"},
        {"kind": "rpc-req", "id": True, "method": "echo", "body": b"\xc0"},
        {"kind": "rpc-req", "id": 1, "method": 7, "body": b"\xc0"},
        {"kind": "rpc-req", "id": 1, "method": "x" * 200, "body": b"\xc0"},
        {"kind": "rpc-req", "id": 1, "method": "echo", "body": "text"},
        {"kind": "rpc-req", "id": 1, "method": "echo", "body": b"\xc1\xc1"},
        {"kind": "rpc-res", "id": 1, "ok": "yes", "body": b"\xc0"},
        {"kind": "rpc-res", "id": 1, "ok": True, "body": [1]},
        {"kind": "rpc-res", "id": 1, "ok": False, "code": 3, "message": "m"},
    ],
)
async def test_malformed_messages_are_protocol_errors(message: dict[str, Any]) -> None:
    _, a, b = pair()
    b.register("echo", echo)
    with pytest.raises(FrameError):
        b.receive("a", message)
    assert b.stats.malformed == 1
    # b keeps serving.
    assert (await a.call("b", "echo", 5))["echo"] == 5
    await asyncio.gather(a.close(), b.close())


async def test_unknown_kinds_and_stray_answers_are_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    network, a, b = pair()
    b.register("echo", echo)
    with caplog.at_level(logging.DEBUG, logger="p2pkube.net.rpc"):
        b.receive("a", {"kind": "rpc-v2-stream", "id": 1})
        b.receive("a", {"kind": "rpc-res", "id": 12345, "ok": True, "body": b"\xc0"})
    assert b.stats.malformed == 0 and b.stats.late_answers == 1

    # An answer from a node we did not call is not taken for the call's answer.
    release = asyncio.Event()

    async def hold(src: str, body: Any) -> Any:
        await release.wait()
        return "from b"

    b.register("hold", hold)
    mallory = network.node("m")
    call = asyncio.create_task(a.call("b", "hold", timeout=5))
    await asyncio.sleep(0.01)
    request = next(data for dst, data in network.nodes["a"].sent if dst == "b")
    mallory.send_routed("a", {"kind": "rpc-res", "id": request["id"], "ok": True, "body": b"\xa1x"})
    await asyncio.sleep(0.01)
    assert not call.done()
    release.set()
    assert await call == "from b"
    await asyncio.gather(a.close(), b.close())


async def test_close_cancels_handlers_and_fails_waiting_calls() -> None:
    _, a, b = pair()
    cancelled = asyncio.Event()

    async def forever(src: str, body: Any) -> Any:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    b.register("forever", forever)
    call = asyncio.create_task(a.call("b", "forever", timeout=60))
    await asyncio.sleep(0.05)
    assert b.stats_dict()["activeRequests"] == 1
    await b.close()
    assert cancelled.is_set() and b.stats_dict()["activeRequests"] == 0
    await a.close()
    with pytest.raises(RpcError):
        await call
    with pytest.raises(RpcError):
        await a.call("b", "forever")
    # A closed node answers requests with "closing" instead of running handlers.
    _, c, d = pair(names=("c", "d"))
    d.register("echo", echo)
    await d.close()
    with pytest.raises(RpcRemoteError) as closing:
        await c.call("d", "echo")
    assert closing.value.code == "closing"
    await c.close()
