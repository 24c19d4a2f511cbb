"""HTTP handler pods on one node (issue 12): a container with ``ports`` is Running once its
module is ready, Ready once its readiness probe passes, and serves requests through
``Kubelet.handler_for`` until the pod is deleted. Real ClusterState, real wasmtime.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from p2pkube.model.resources import Resources
from p2pkube.model.timestamps import utc_now
from p2pkube.runtime.cgi import CgiRequest
from p2pkube.runtime.hostpaths import HostPathPolicy
from p2pkube.runtime.kubelet import Kubelet
from p2pkube.runtime.native import NativeRuntime
from p2pkube.runtime.settings import RuntimeSettings
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import HttpError, StreamBroken
from p2pkube.state.cluster import ClusterState
from p2pkube.state.pycrdt_store import PycrdtStore
from tests.handlers import build
from tests.test_kubelet import FAST, LocalImages, container, create, images, pod, wait_status

__all__ = ["images"]  # the module-scoped fixture of test_kubelet, used here too


@dataclass
class HandlerNode:
    state: ClusterState
    kubelet: Kubelet
    runtime: NativeRuntime
    events: list[tuple[str, str, str]]
    """(pod, reason, message) of every event the kubelet recorded."""


async def start_node(tmp_path: Path, images: dict[str, Path]) -> HandlerNode:
    """A kubelet on node n1 with its state and runtime under tmp_path/data."""
    digest, path = build("modes")
    state = ClusterState(tmp_path / "data", store_factory=PycrdtStore)
    await state.open()
    runtime = NativeRuntime(tmp_path / "data", RuntimeSettings())
    events: list[tuple[str, str, str]] = []
    kubelet = Kubelet(
        "n1",
        state,
        runtime,
        LocalImages({**images, digest: path}, set()),
        tmp_path / "data" / "pods",
        allocatable=lambda: Resources(2000, 1 << 30),
        settings=FAST,
        runtime_settings=runtime.settings,
        host_paths=HostPathPolicy.for_node([str(tmp_path / "shared")], tmp_path / "data"),
        record=lambda obj, reason, message, warning=False: events.append(
            (obj["metadata"]["name"], reason, message)
        ),
        services=replace(ServiceSettings(), request_deadline=5.0),
    )
    await kubelet.start()
    return HandlerNode(state, kubelet, runtime, events)


async def stop_node(node: HandlerNode) -> None:
    await node.kubelet.close()
    await node.runtime.close()
    await node.state.close()


@pytest.fixture
async def node(tmp_path: Path, images: dict[str, Path]) -> AsyncIterator[HandlerNode]:
    started = await start_node(tmp_path, images)
    yield started
    await stop_node(started)


def handler_pod(images: dict[str, Path], name: str, **spec: Any) -> dict[str, Any]:
    """A pod of tests/handlers/modes.c answering on containerPort 8080 ("http")."""
    digest, path = build("modes")
    ports = [{"containerPort": 8080, "name": "http"}]
    return pod({**images, digest: path}, name, "modes", ports=ports, **spec)


def ready(status: dict[str, Any]) -> bool:
    return status["conditions"][0]["status"] == "True"


async def get(node: HandlerNode, pod_name: str, path: str, query: str = "") -> tuple[int, bytes]:
    handler = node.kubelet.handler_for("default", pod_name, 8080)
    assert handler is not None
    response = await handler.handle(CgiRequest("GET", path, query), b"")
    body = b""
    while chunk := await response.read():
        body += chunk
    return response.head.status, body


async def test_a_handler_pod_runs_serves_and_stops_with_its_pod(
    node: HandlerNode, images: dict[str, Path]
) -> None:
    obj = handler_pod(images, "web")
    obj["metadata"]["annotations"] = {"p2pkube.io/container-concurrency": "3"}
    key = await create(node, obj)
    status = await wait_status(node, key, lambda s: s["phase"] == "Running" and ready(s))
    assert "startedAt" in container(status)["state"]["running"]
    assert container(status)["ready"] and container(status)["restartCount"] == 0
    assert node.runtime.stats()["running"] == 0  # nothing runs between requests

    code, body = await get(node, "web", "/hello", "a=1")
    assert code == 200
    assert b"pod: web\n" in body and b"node: n1\n" in body and b"port: 80\n" in body
    assert node.kubelet.handler_for("default", "web", 9090) is None  # not a declared port
    assert node.kubelet.handler_for("default", "nosuch", 8080) is None
    handler_stats = node.kubelet.stats()["handlers"]["default/web/main"]
    assert handler_stats["requests"] == 1 and handler_stats["concurrency"] == 3

    # A failed request leaves the pod as it was (as a failed CGI script), and shows in its log.
    for path in ("/trap", "/garbage"):
        with pytest.raises(HttpError) as caught:
            await get(node, "web", path)
        assert caught.value.status == 502
    failed = "Request to container main failed: malformed response header line 'this is not a"
    assert any(e[1] == "RequestFailed" and e[2].startswith(failed) for e in node.events)
    assert (await get(node, "web", "/stderr", "seen"))[0] == 200
    lines = await node.kubelet.logs("default", "web")
    assert [line.text for line in lines] == ["handler error seen", "done seen"]
    assert node.kubelet.running("default", "web", None)  # logs -f keeps following
    await asyncio.sleep(0.3)
    status = await wait_status(node, key, lambda s: True)
    assert status["phase"] == "Running" and ready(status)

    # Deleting the pod stops the requests in flight, then removes it.
    handler = node.kubelet.handler_for("default", "web", 8080)
    assert handler is not None
    slow = await handler.handle(CgiRequest("GET", "/slow", "n=100&ms=100"), b"")
    obj = node.state.get("objects", key)
    assert isinstance(obj, dict)
    obj["metadata"]["deletionTimestamp"] = utc_now()
    await node.state.put("objects", key, obj)
    with pytest.raises(StreamBroken, match="the pod is stopping"):
        async with asyncio.timeout(5):
            while await slow.read():
                pass
    deadline = time.monotonic() + 5
    while node.state.get("objects", key) is not None:
        assert time.monotonic() < deadline, "the kubelet did not finish the delete"
        await asyncio.sleep(0.05)
    assert node.kubelet.handler_for("default", "web", 8080) is None
    assert node.runtime.stats()["running"] == 0


async def test_the_readiness_probe_gates_ready_and_reports_failures(
    node: HandlerNode, images: dict[str, Path], tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    probe = {
        "httpGet": {"path": "/ready", "port": "http"},
        "periodSeconds": 1,
        "failureThreshold": 2,
    }
    obj = handler_pod(images, "gated", readinessProbe=probe)
    obj["spec"]["volumes"] = [{"name": "flags", "hostPath": {"path": str(shared)}}]
    obj["spec"]["containers"][0]["volumeMounts"] = [{"name": "flags", "mountPath": "/data"}]
    key = await create(node, obj)

    # Running once the module is ready, but not Ready while /ready answers 503.
    status = await wait_status(node, key, lambda s: s["phase"] == "Running")
    failed = (
        "gated",
        "Unhealthy",
        "Readiness probe failed: HTTP probe failed with statuscode: 503",
    )
    deadline = time.monotonic() + 5
    while failed not in node.events:
        assert time.monotonic() < deadline, node.events
        await asyncio.sleep(0.05)
    status = await wait_status(node, key, lambda s: True)
    assert not ready(status) and not container(status)["ready"]
    assert node.kubelet.handler_for("default", "gated", 8080) is not None  # it still serves

    (shared / "ready").write_text("")
    await wait_status(node, key, ready, seconds=5)

    # failureThreshold 2: one failure keeps it Ready, the second flips it.
    (shared / "ready").unlink()
    unready_at = time.monotonic()
    status = await wait_status(node, key, lambda s: not ready(s), seconds=6)
    assert time.monotonic() - unready_at > 0.9, "unready after one failure"
    assert status["phase"] == "Running"


async def test_a_restarted_agent_serves_its_handler_pods_again_at_once(
    tmp_path: Path, images: dict[str, Path]
) -> None:
    first = await start_node(tmp_path / "a", images)
    key = await create(first, handler_pod(images, "web"))
    await wait_status(first, key, ready)
    assert (await get(first, "web", "/status", "code=200"))[0] == 200
    await stop_node(first)  # its status still says running and Ready

    again = await start_node(tmp_path / "a", images)
    try:
        restarted = time.monotonic()
        status = await wait_status(again, key, lambda s: container(s)["restartCount"] == 1)
        status = await wait_status(again, key, ready)
        assert time.monotonic() - restarted < FAST.backoff_initial, "it backed off"
        assert container(status)["lastState"]["terminated"]["reason"] == "AgentRestarted"
        assert (await get(again, "web", "/status", "code=200"))[0] == 200
    finally:
        await stop_node(again)
