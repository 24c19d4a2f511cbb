"""NodePort listeners (api/nodeport.py) following Services in a real in-memory ClusterState:
a port opens when its Service appears and closes when it goes, a port taken on this host is a
Warning event and is retried, a port two Services claim is served for its owner only."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from p2pkube.api.nodeport import NodePorts, node_addresses
from p2pkube.devcluster import free_port
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import ServiceTarget
from p2pkube.state import ClusterState, object_key
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.settings import StateSettings
from p2pkube.state.store import OBJECTS
from tests.test_frontdoor import StubRouter

SETTINGS = ServiceSettings(node_port_resync=0.2)


def service(name: str, node_port: int, *, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
        "spec": {
            "type": "NodePort",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": node_port}],
        },
    }


class Node:
    def __init__(self, state: ClusterState, router: StubRouter, ports: NodePorts) -> None:
        self.state, self.router, self.ports = state, router, ports
        self.events: list[tuple[str, str, str]] = []

    async def put(self, obj: dict[str, Any]) -> None:
        await self.state.put(
            OBJECTS, object_key("Service", "default", obj["metadata"]["name"]), obj
        )

    async def delete(self, name: str) -> None:
        await self.state.delete(OBJECTS, object_key("Service", "default", name))


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    state = ClusterState(None, StateSettings(), store_factory=PycrdtStore)
    await state.open()
    router = StubRouter()
    events: list[tuple[str, str, str]] = []
    ports = NodePorts(
        state,
        router,
        "127.0.0.1",
        SETTINGS,
        record=lambda obj, reason, msg: events.append((obj["metadata"]["name"], reason, msg)),
    )
    await ports.start()
    here = Node(state, router, ports)
    here.events = events
    try:
        yield here
    finally:
        await ports.close()
        await state.close()


async def get(port: int) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/hi?x=1") as resp,
    ):
        return resp.status, await resp.text()


async def eventually(check: Any, what: str) -> None:
    """Poll ``check`` for up to 5 s."""
    for _ in range(100):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def refused(port: int) -> bool:
    try:
        await get(port)
    except aiohttp.ClientConnectionError:
        return True
    return False


async def test_a_service_port_opens_and_closes_with_its_service(node: Node) -> None:
    port = free_port()
    await node.put(service("web", port))
    await eventually(lambda: _serving(port), "the NodePort to open")
    status, text = await get(port)
    assert status == 200
    assert text.startswith("GET /hi ?x=1 ")
    assert f"server=127.0.0.1:{port}" in text
    assert node.router.requests[-1].target == ServiceTarget("default", "web", "http")
    await node.delete("web")
    await eventually(lambda: refused(port), "the NodePort to close")
    assert node.ports.listeners == {}


async def _serving(port: int) -> bool:
    try:
        return (await get(port))[0] == 200
    except aiohttp.ClientConnectionError:
        return False


async def test_a_port_taken_on_this_host_is_a_warning_and_retried(node: Node) -> None:
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    await node.put(service("web", port))
    await asyncio.sleep(1.0)  # five resync passes
    assert port not in node.ports.listeners
    assert len(node.events) == 1  # one event, not one per retry
    name, reason, message = node.events[0]
    assert (name, reason) == ("web", "FailedBindNodePort")
    assert f"cannot listen on NodePort 127.0.0.1:{port}" in message
    blocker.close()
    await eventually(lambda: _serving(port), "the retried NodePort to open")


async def test_a_port_two_services_claim_is_served_for_its_owner(node: Node) -> None:
    port = free_port()
    await node.put(service("newer", port, created="2026-02-01T00:00:00Z"))
    await eventually(lambda: _serving(port), "the NodePort to open")
    assert node.router.requests[-1].target.name == "newer"
    await node.put(service("older", port, created="2026-01-01T00:00:00Z"))
    await asyncio.sleep(0.3)
    await get(port)
    assert node.router.requests[-1].target.name == "older"  # same listener, new owner
    await node.delete("older")
    await asyncio.sleep(0.3)
    await get(port)
    assert node.router.requests[-1].target.name == "newer"


def test_node_addresses() -> None:
    assert node_addresses("127.0.0.3", "n1") == [
        {"type": "InternalIP", "address": "127.0.0.3"},
        {"type": "Hostname", "address": "n1"},
    ]
    all_interfaces = node_addresses("0.0.0.0", "n1")[0]["address"]
    assert all_interfaces != "0.0.0.0"
    socket.inet_aton(all_interfaces)  # some IPv4 address of this host
