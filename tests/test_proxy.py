"""The local API's proxy routes (api/proxyroutes.py) and the forwarder behind ``p2pkube proxy``
and ``p2pkube port-forward`` (api/forward.py), with a real ApiServer and a router stub that
follows the ServiceOpener Protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from p2pkube.api.forward import Forwarder
from p2pkube.api.server import ApiServer
from p2pkube.cli.forward import proxy_path_map, target_path_map
from p2pkube.services.types import ServiceTarget
from tests.memorybackend import MemoryBackend
from tests.test_frontdoor import StubRouter

PROXY = "/api/v1/namespaces/default/services/web:http/proxy"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[ApiServer, StubRouter]]:
    backend = MemoryBackend("n1")
    await backend.open([])
    router = StubRouter()
    server = ApiServer(backend, tmp_path / "data", services=router)
    await server.start()
    try:
        yield server, router
    finally:
        await server.stop()
        await backend.close()


async def fetch(
    url: str, *, token: str | None = None, method: str = "GET", data: bytes | None = None
) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers, data=data) as resp,
    ):
        return resp.status, await resp.text()


async def test_proxy_routes_reach_services_and_pods(api: tuple[ApiServer, StubRouter]) -> None:
    server, router = api
    status, text = await fetch(f"{server.url}{PROXY}/a%20b/c?q=1", token=server.token)
    assert status == 200
    assert text.startswith("GET /a b/c ?q=1 from=127.0.0.1 ")
    assert router.requests[-1].target == ServiceTarget("default", "web", "http")
    status, text = await fetch(
        f"{server.url}/api/v1/namespaces/ns1/pods/p1/proxy", token=server.token
    )
    assert (status, text.split()[:2]) == (200, ["GET", "/"])
    assert router.requests[-1].target == ServiceTarget("ns1", "p1", "", pod=True)
    await fetch(
        f"{server.url}/api/v1/namespaces/ns1/services/http:web:80/proxy/", token=server.token
    )
    assert router.requests[-1].target == ServiceTarget("ns1", "web", "80")


async def test_proxy_routes_want_the_token_and_a_target(
    api: tuple[ApiServer, StubRouter],
) -> None:
    server, router = api
    assert (await fetch(f"{server.url}{PROXY}/"))[0] == 401
    status, text = await fetch(
        f"{server.url}/api/v1/namespaces/default/deployments/web/proxy/", token=server.token
    )
    assert status == 404 and "only services and pods" in text
    status, text = await fetch(
        f"{server.url}/api/v1/namespaces/default/services/https:web:443/proxy/", token=server.token
    )
    assert status == 400 and "plain http" in text
    assert router.requests == []


async def test_proxy_forwards_without_a_token(
    api: tuple[ApiServer, StubRouter], tmp_path: Path
) -> None:
    server, router = api
    forwarder = Forwarder(tmp_path / "data", proxy_path_map)
    await forwarder.start()
    try:
        local = f"http://{forwarder.address}"
        status, text = await fetch(f"{local}{PROXY}/x?y=%26")
        assert (status, text.split()[:3]) == (200, ["GET", "/x", "?y=%26"])
        status, text = await fetch(f"{local}{PROXY}/up", method="POST", data=b"b" * 100_000)
        assert status == 200 and text.endswith("len=100000 body=100000")
        async with (  # aiohttp's client sends no body before the 100 Continue
            aiohttp.ClientSession() as session,
            asyncio.timeout(5),
            session.post(f"{local}{PROXY}/up", data=b"c" * 5000, expect100=True) as resp,
        ):
            assert (await resp.text()).endswith("len=5000 body=5000")
        status, text = await fetch(f"{local}/v1/nodes")  # the rest of the API stays private
        assert status == 404 and "serves /api/v1/namespaces/NS/services" in text
        # The agent restarts: a new port and token, found again in its data dir.
        await server.stop()
        await server.start()
        assert (await fetch(f"{local}{PROXY}/again"))[0] == 200
        assert router.requests[-1].cgi.path == "/again"
        assert "Authorization" not in dict(router.requests[-1].cgi.headers)
    finally:
        await forwarder.stop()


async def test_port_forward_sends_every_path_to_one_target(
    api: tuple[ApiServer, StubRouter], tmp_path: Path
) -> None:
    _, router = api
    forwarder = Forwarder(tmp_path / "data", target_path_map("default", "services", "web", "80"))
    await forwarder.start()
    try:
        status, text = await fetch(f"http://{forwarder.address}/hello?x=1")
    finally:
        await forwarder.stop()
    assert (status, text.split()[:3]) == (200, ["GET", "/hello", "?x=1"])
    assert router.requests[-1].target == ServiceTarget("default", "web", "80")


async def test_forwarder_without_an_agent_says_so(tmp_path: Path) -> None:
    from p2pkube.api.client import ApiClientError

    with pytest.raises(ApiClientError):
        await Forwarder(tmp_path / "nothing-here", proxy_path_map).start()
