"""The watch endpoint: event semantics, the HTTP stream, and real agents on loopback.

Three layers, cheapest first: the watch hub over the in-memory backend (event types, bounded
queue, cleanup), the real ``ApiServer`` streaming that backend (framing, auth, a client that
goes away), and a real two-agent ``LocalCluster`` (a write on one agent arrives on the other's
watch; a killed agent's Node turns NotReady on the survivor's watch).
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2pkube.api.client import ApiClient, ApiClientError
from p2pkube.api.server import ApiServer
from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.membership.liveness import detection_bound
from p2pkube.membership.settings import SwimSettings
from p2pkube.model.watch import Watch
from tests.memorybackend import MemoryBackend

DETECTION = detection_bound(SwimSettings(), 2)
"""SWIM's bound on a killed member of a pair declared DEAD by the other (the default settings)."""


def configmap(
    name: str, data: dict[str, str], *, namespace: str = "default", **labels: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": data,
    }


@pytest.fixture
async def backend() -> AsyncIterator[MemoryBackend]:
    """The in-memory agent backend (the real object service and watch hub), opened."""
    memory = await MemoryBackend().open()
    try:
        yield memory
    finally:
        await memory.close()


# --- Watch on its own ---------------------------------------------------------------------


def _key(key: str) -> tuple[str, str, str]:
    kind, namespace, name = key.split("/", 2)
    return kind, namespace, name


async def put(backend: MemoryBackend, key: str, obj: dict[str, Any] | None) -> None:
    """Write (or, with None, remove) the object under ``key``, as a peer would."""
    if obj is None:
        await backend.remove(*_key(key))
    else:
        assert key == f"{obj['kind']}/{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        await backend.set(obj)


async def drain(watch: Watch, count: int) -> list[tuple[str, str]]:
    """The next ``count`` events as (type, name)."""
    out: list[tuple[str, str]] = []
    async with asyncio.timeout(2):
        for _ in range(count):
            event = await watch.get()
            assert event is not None, out
            out.append((event["type"], event["object"]["metadata"]["name"]))
    return out


async def test_watch_lists_first_then_reports_each_change_once(backend: MemoryBackend) -> None:
    await put(backend, "ConfigMap/default/a", configmap("a", {"v": "1"}))
    await put(backend, "ConfigMap/other/b", configmap("b", {"v": "1"}, namespace="other"))
    watch = backend.watch("ConfigMap", "default", match=lambda o: "skip" not in o["data"])
    await put(backend, "ConfigMap/default/c", configmap("c", {"v": "1"}))
    await put(backend, "ConfigMap/default/a", configmap("a", {"v": "2"}))
    await put(backend, "ConfigMap/default/a", configmap("a", {"v": "2"}))  # no change: no event
    await put(backend, "ConfigMap/other/b", configmap("b", {"v": "2"}, namespace="other"))
    await put(backend, "ConfigMap/default/c", configmap("c", {"skip": "1"}))  # leaves the selector
    await put(backend, "ConfigMap/default/a", None)
    assert await drain(watch, 4) == [
        ("ADDED", "a"),
        ("ADDED", "c"),
        ("MODIFIED", "a"),
        ("DELETED", "c"),
    ]
    event = await watch.get()
    assert event is not None and event["type"] == "DELETED"
    assert event["object"]["data"] == {"v": "2"}  # the last state the watcher saw
    async with asyncio.timeout(1):
        watch.close()
        assert await watch.get() is None
        assert await watch.get() is None  # stays ended
    assert len(backend.watches) == 0  # unsubscribed


async def test_a_slow_watcher_gets_an_error_and_is_dropped(backend: MemoryBackend) -> None:
    watch = backend.watch("ConfigMap", None, max_queue=4)
    for i in range(10):
        await put(backend, f"ConfigMap/default/m{i}", configmap(f"m{i}", {}))
    assert watch.closed and len(backend.watches) == 0
    events = [event async for event in watch]
    assert [e["type"] for e in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"


async def test_a_watch_ends_by_itself_after_its_timeout(backend: MemoryBackend) -> None:
    await put(backend, "ConfigMap/default/a", configmap("a", {}))
    watch = backend.watch("ConfigMap", None, timeout=0.2)
    started = time.monotonic()
    async with asyncio.timeout(2):
        events = [event async for event in watch]
    assert [e["type"] for e in events] == ["ADDED"]
    assert 0.15 < time.monotonic() - started < 1.5
    assert len(backend.watches) == 0


# --- over HTTP, in process ----------------------------------------------------------------


async def test_http_watch_streams_ndjson_and_unsubscribes_when_the_client_leaves(
    tmp_path: Path, backend: MemoryBackend
) -> None:
    await put(backend, "ConfigMap/default/a", configmap("a", {"v": "1"}, app="web"))
    await put(backend, "ConfigMap/default/b", configmap("b", {"v": "1"}, app="db"))
    server = ApiServer(backend, tmp_path, watch_poll_interval=0.05)
    await server.start()
    headers = {"Authorization": f"Bearer {server.token}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            url = f"{server.url}/v1/watch/ConfigMap"
            async with session.get(url, params={"timeoutSeconds": "0"}) as bad:
                assert bad.status == 400
                assert (await bad.json())["reason"] == "BadRequest"
            async with session.get(url, headers={"Authorization": "Bearer nope"}) as denied:
                assert denied.status == 401

            response = await session.get(url, params={"labelSelector": "app=web"})
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/json")
            async with asyncio.timeout(5):
                first = json.loads(await response.content.readline())
                await put(backend, "ConfigMap/default/a", configmap("a", {"v": "2"}, app="web"))
                await put(backend, "ConfigMap/default/b", configmap("b", {"v": "2"}, app="db"))
                second = json.loads(await response.content.readline())
            assert (first["type"], first["object"]["data"]) == ("ADDED", {"v": "1"})
            assert (second["type"], second["object"]["data"]) == ("MODIFIED", {"v": "2"})
            assert len(backend.watches) == 1
            unsubscribed = asyncio.Event()
            next(iter(backend.watches)).add_cleanup(unsubscribed.set)
            response.close()  # the client goes away without a word
            async with asyncio.timeout(5):
                await unsubscribed.wait()
            assert len(backend.watches) == 0

            # The agent stopping ends open streams cleanly instead of hanging them.
            response = await session.get(url)
            async with asyncio.timeout(5):
                assert json.loads(await response.content.readline())["type"] == "ADDED"
                await server.stop()
                rest = await response.content.read()
            assert len(rest.splitlines()) == 1  # the second ADDED, then the end of the stream
            assert len(backend.watches) == 0
    finally:
        await server.stop()


# --- real agents ----------------------------------------------------------------------------


class EventCollector:
    """Reads ``ApiClient.watch`` in a thread (the client is synchronous) into a queue."""

    def __init__(self, client: ApiClient, kind: str, **kwargs: Any) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=10_000)
        self.seen: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._run, args=(client, kind, kwargs), daemon=True)
        self._thread.start()

    def _run(self, client: ApiClient, kind: str, kwargs: dict[str, Any]) -> None:
        try:
            for event in client.watch(kind, timeout_seconds=120, **kwargs):
                self.events.put(event, timeout=10)
        except ApiClientError as exc:  # the cluster was torn down under us
            self.events.put({"type": "CLOSED", "object": {"error": str(exc)}}, timeout=10)

    def expect(
        self, what: str, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=max(0.01, remaining))
            except queue.Empty:
                summary = [
                    (e["type"], e["object"].get("metadata", {}).get("name")) for e in self.seen
                ]
                raise AssertionError(f"no {what} within {timeout}s; saw {summary}") from None
            self.seen.append(event)
            if predicate(event):
                return event


def is_event(kind: str, name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == kind and e["object"].get("metadata", {}).get("name") == name


def ready_status(node: dict[str, Any]) -> str:
    return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")


def start_pair(cluster: LocalCluster) -> None:
    cluster.start_signaling()
    for name in ("n1", "n2"):
        cluster.start_agent(name)
    for name in ("n1", "n2"):
        cluster.wait_api(name)
    for name in ("n1", "n2"):
        wait_until(
            lambda name=name: cluster.nodes(name) == {"n1": "True", "n2": "True"},
            30,
            what=f"both nodes Ready on {name}",
        )


def test_configmap_written_on_one_agent_is_watched_on_the_other(cluster: LocalCluster) -> None:
    start_pair(cluster)
    n1 = ApiClient.from_data_dir(cluster.root / "n1")
    n2 = ApiClient.from_data_dir(cluster.root / "n2")
    n2.put_object(configmap("before", {"v": "0"}))
    wait_until(lambda: n1.list_objects("ConfigMap"), 10, what="the first write on n1")

    watch = EventCollector(n1, "ConfigMap", namespace="default")
    watch.expect("the initial ADDED", is_event("ADDED", "before"), 10)
    n2.put_object(configmap("shared", {"answer": "42"}))
    added = watch.expect("ADDED from n2", is_event("ADDED", "shared"), 10)
    assert added["object"]["data"] == {"answer": "42"}
    assert added["object"]["metadata"]["uid"]
    n2.put_object(configmap("shared", {"answer": "43"}))
    modified = watch.expect("MODIFIED from n2", is_event("MODIFIED", "shared"), 10)
    assert modified["object"]["data"] == {"answer": "43"}
    n2.delete_object("ConfigMap", "default", "shared")
    deleted = watch.expect("DELETED from n2", is_event("DELETED", "shared"), 10)
    assert deleted["object"]["metadata"]["name"] == "shared"
    assert not [e for e in watch.seen if e["type"] == "ERROR"]


@pytest.mark.serial  # times detection
def test_node_watch_reports_a_killed_agent_notready(cluster: LocalCluster) -> None:
    start_pair(cluster)
    n1 = ApiClient.from_data_dir(cluster.root / "n1")
    watch = EventCollector(n1, "Node")
    initial = watch.expect("n2 listed", is_event("ADDED", "n2"), 10)
    assert ready_status(initial["object"]) == "True"

    cluster.kill("n2")
    # Pushed when SWIM declares n2 DEAD, within DETECTION of the kill (no document change is
    # involved: Ready is not stored in the document).
    event = watch.expect(
        "n2 NotReady",
        lambda e: is_event("MODIFIED", "n2")(e) and ready_status(e["object"]) == "False",
        DETECTION + 4,
    )
    assert event["object"]["status"]["conditions"][0]["reason"] == "AgentDead"


def test_watch_of_an_empty_namespace_waits_for_its_first_object(cluster: LocalCluster) -> None:
    """A watch on a namespace with nothing in it delivers nothing until something appears."""
    cluster.start_signaling()
    cluster.start_agent("n1")
    cluster.wait_api("n1")
    n1 = ApiClient.from_data_dir(cluster.root / "n1")
    watch = EventCollector(n1, "ConfigMap", namespace="empty")
    time.sleep(0.3)
    assert watch.events.empty()
    n1.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "empty"}})
    n1.put_object({**configmap("late", {}), "metadata": {"name": "late", "namespace": "empty"}})
    watch.expect("ADDED in namespace empty", is_event("ADDED", "late"), 10)


async def test_one_watch_streams_several_kinds(tmp_path: Path, backend: MemoryBackend) -> None:
    """``/v1/watch/A,B``: one stream for several kinds (the dashboard's), listed then live;
    a malformed list is refused before streaming."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "default"},
        "spec": {"ports": [{"port": 80}]},
    }
    await put(backend, "ConfigMap/default/a", configmap("a", {"v": "1"}))
    await put(backend, "Service/default/s", service)
    server = ApiServer(backend, tmp_path, watch_poll_interval=0.05)
    await server.start()
    try:
        headers = {"Authorization": f"Bearer {server.token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(f"{server.url}/v1/watch/ConfigMap,,Service") as bad:
                assert bad.status == 400
            response = await session.get(f"{server.url}/v1/watch/ConfigMap,Service")
            assert response.status == 200
            async with asyncio.timeout(5):
                listed = [json.loads(await response.content.readline()) for _ in range(2)]
                await put(backend, "ConfigMap/default/b", configmap("b", {"v": "1"}))
                added = json.loads(await response.content.readline())
            assert sorted((e["type"], e["object"]["kind"]) for e in listed) == [
                ("ADDED", "ConfigMap"),
                ("ADDED", "Service"),
            ]
            assert (added["type"], added["object"]["metadata"]["name"]) == ("ADDED", "b")
            response.close()
    finally:
        await server.stop()
