"""Blob quotas on real agents: the size cap and the free-disk reserve (issue 10, part 3).

One cluster of four agents (separate processes, real aiortc, pycrdt and wasmtime):

* ``a``: its size cap set low (``blobs.max_blob_bytes=16384``), below ticker.wasm's 40 KB;
* ``b``: defaults; the tests apply and publish through it;
* ``c``: a free-disk reserve above what any disk here has free (``blobs.min_free_bytes``);
* ``evil``: a member that holds, under a made-up digest, a sparse file of zeros 8 GiB long.

a, b and c carry the label ``pool=honest`` and the DaemonSets select it, so no pod runs on evil.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pkube.blobs.manifest import Manifest, blob_key, blob_object
from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.model.timestamps import utc_now
from p2pkube.net.frames import Frame, FrameType
from p2pkube.net.link import PeerLink
from p2pkube.state.cluster import ClusterState
from p2pkube.state.pycrdt_store import PycrdtStore
from tests.clusters import module_cluster, wait_all_ready
from tests.test_hostile_peer import link_to
from tests.test_pods_cluster import write_manifest
from tests.test_workloads_cluster import items, remove, template

HONEST = ["a", "b", "c"]
NAMES = [*HONEST, "evil"]
LOW_CAP = 16 * 1024
HUGE = 8 << 30
"""What the forged manifest declares: 8 GiB, in 2048 chunks of 4 MiB (blobs.max_chunk_size)."""
FOUR_MIB = 4 << 20
BACKOFF = 0.2
"""kubelet.backoff_initial here: a pull that is retried shows ImagePullBackOff within a second."""


@pytest.fixture(scope="module")
def quota(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator:
    honest = ("--label", "pool=honest")
    with module_cluster(tmp_path_factory.mktemp("quota") / "cluster", request) as local:
        local.start_signaling()
        local.extra_agent_args = ["--set", f"kubelet.backoff_initial={BACKOFF}"]
        local.start_agent("a", *honest, "--set", f"blobs.max_blob_bytes={LOW_CAP}")
        local.start_agent("b", *honest)
        local.start_agent("c", *honest, "--set", f"blobs.min_free_bytes={1 << 62}")
        forged = _zeros_held_by(local.root / "evil")
        local.start_agent("evil")
        wait_all_ready(local, NAMES)
        local.forged = forged  # type: ignore[attr-defined]
        yield local


def _zeros_held_by(data_dir: Path) -> Manifest:
    """Make ``evil`` hold 8 GiB of zeros (a sparse file: no disk used) under a made-up digest,
    and return the manifest a hostile member writes for it. Every chunk of it matches that
    manifest, so before the cap a node would have fetched and written all 8 GiB, verifying each
    chunk, and failed only at the end, on the whole digest."""
    zeros = hashlib.sha256(bytes(FOUR_MIB)).hexdigest()
    digest = "sha256:" + secrets.token_hex(32)
    held = data_dir / "blobs" / "sha256" / digest.removeprefix("sha256:")
    held.parent.mkdir(parents=True)
    with held.open("wb") as fh:
        fh.truncate(HUGE)
    return Manifest(digest, HUGE, FOUR_MIB, (zeros,) * (HUGE // FOUR_MIB))


async def _write_as_a_member(cluster: LocalCluster, target: str, key: str, obj: Any) -> None:
    """Write ``objects[key] = obj`` into the cluster state the way any member can: join with
    the token, link to ``target`` and sync a state holding it (the real ClusterState code,
    with no checks of what a Blob says)."""
    target_id = (await asyncio.to_thread(cluster.api, target, "GET", "/v1/status"))["nodeID"]
    link, client = await link_to(cluster, target_id)
    state = ClusterState(None, store_factory=PycrdtStore)
    await state.open()

    def on_frame(_: PeerLink, frame: Frame) -> None:
        if frame.type is FrameType.SYNC:
            state.receive(target_id, frame.body)

    link._on_frame = on_frame  # test hook: the link helper discards frames by default
    try:
        state.attach_peer(target_id, lambda data: link.send(FrameType.SYNC, data))
        await state.put("objects", key, obj)
        await asyncio.to_thread(
            wait_until,
            lambda: cluster.api(target, "GET", f"/v1/blobs/{obj['metadata']['name']}"),
            15,
            what=f"{target} to have the forged manifest",
        )
    finally:
        await state.close()
        await link.close("test over", notify=False)
        await client.close()


def daemonset(name: str, image: str) -> dict[str, Any]:
    spec = template("ticker", "1", app=name, nodeSelector={"pool": "honest"})
    spec["spec"]["containers"][0]["image"] = image
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": spec},
    }


def pods_by_node(cluster: LocalCluster, app: str) -> dict[str, dict[str, Any]]:
    """The pods of ``app`` by node, as b sees them."""
    return {p["spec"].get("nodeName"): p for p in items(cluster, "b", "Pod", f"app={app}")}


def state_of(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0].get("state") or {}


def waiting_on(cluster: LocalCluster, app: str, node: str, reason: str) -> dict[str, Any] | None:
    """The pod of ``app`` on ``node`` once its container waits with ``reason``."""
    pod = pods_by_node(cluster, app).get(node)
    if pod is not None and (state_of(pod).get("waiting") or {}).get("reason") == reason:
        return pod
    return None


def blob_stats(cluster: LocalCluster, name: str) -> dict[str, Any]:
    return dict(cluster.api(name, "GET", "/v1/status")["blobs"])


def partial_files(cluster: LocalCluster, name: str) -> list[str]:
    partial = cluster.root / name / "blobs" / "partial"
    return sorted(p.name for p in partial.iterdir()) if partial.exists() else []


def test_a_member_declaring_an_8_gib_module_gets_nothing_fetched_anywhere(
    quota: LocalCluster, tmp_path: Path
) -> None:
    forged: Manifest = quota.forged  # type: ignore[attr-defined]
    blob = blob_object(forged, "huge.wasm", utc_now())
    asyncio.run(_write_as_a_member(quota, "b", blob_key(forged.digest), blob))
    wait_until(
        lambda: (
            quota.api("a", "GET", f"/v1/blobs/{forged.digest}")["status"]["holders"] == ["evil"]
        ),
        15,
        what="a to see evil as the holder",
    )
    quota.cli("b", "apply", "-f", str(write_manifest(tmp_path, daemonset("huge", forged.digest))))

    caps = {"a": "16 KiB", "b": "256 MiB", "c": "256 MiB"}
    for node, cap in caps.items():
        pod = wait_until(
            lambda n=node: waiting_on(quota, "huge", n, "ErrImagePull"),
            30,
            what=f"the pod on {node} to wait with ErrImagePull",
        )
        message = state_of(pod)["waiting"]["message"]
        assert message == (
            f"failed to fetch {forged.digest}: the module is 8 GiB, over this node's "
            f"blobs.max_blob_bytes ({cap})"
        ), message
        assert pod["status"]["phase"] == "Pending"

    # `describe pod` tells the user: the container's reason and message, a Warning event.
    def describe() -> str | None:
        # Looked up each time: for a moment a pod of two racing schedulers may be there too.
        pod = waiting_on(quota, "huge", "b", "ErrImagePull")
        out = quota.cli("b", "describe", "pod", pod["metadata"]["name"]).stdout if pod else ""
        return out if "blobs.max_blob_bytes (256 MiB)" in out.split("Events:")[-1] else None

    described = wait_until(describe, 15, what="the Warning event in describe")
    container, events = described.split("Events:")
    assert "ErrImagePull" in container and "blobs.max_blob_bytes (256 MiB)" in container
    assert "Warning" in events and "Failed" in events, events

    # Not retried: ten back-off periods later each node still shows ErrImagePull (not
    # ImagePullBackOff), has refused no more often and fetched nothing; nobody was asked.
    before = {node: blob_stats(quota, node)["refusedTooLarge"] for node in HONEST}
    time.sleep(10 * BACKOFF)
    for node in HONEST:
        assert waiting_on(quota, "huge", node, "ErrImagePull") is not None, node
        stats = blob_stats(quota, node)
        assert stats["refusedTooLarge"] == before[node] >= 1, (node, before, stats)
        assert (stats["fetches"], stats["chunksFetched"]) == (0, 0), (node, stats)
        assert partial_files(quota, node) == [], node
        assert not (quota.root / node / "blobs" / "sha256" / forged.digest[7:]).exists()
    assert blob_stats(quota, "evil")["chunksServed"] == 0
    pulled = quota.cli("a", "pull", forged.digest, check=False)  # what `p2pkube pull` says
    assert pulled.returncode == 1
    assert pulled.stderr.strip() == (
        "Error from server (RequestEntityTooLarge): the module is 8 GiB, over this node's "
        "blobs.max_blob_bytes (16 KiB)"
    )

    # The cluster carries on: the DaemonSet goes, its pods with it.
    remove(quota, "b", daemonset("huge", forged.digest))
    wait_until(lambda: not pods_by_node(quota, "huge"), 20, what="the pods to go")


def test_a_module_over_one_nodes_cap_runs_on_the_others(
    quota: LocalCluster, tmp_path: Path
) -> None:
    ticker_size = os.path.getsize(Path(__file__).parent.parent / "examples/build/ticker.wasm")
    assert ticker_size > LOW_CAP
    manifest = write_manifest(tmp_path, daemonset("ticks", "ticker.wasm"))

    # Publishing it through a is refused at `apply`, and nothing is applied.
    refused = quota.cli("a", "apply", "-f", str(manifest), check=False)
    assert refused.returncode == 1
    assert (
        "Error from server (RequestEntityTooLarge): ticker.wasm is 40.1 KiB, over this node's "
        "blobs.max_blob_bytes (16 KiB)"
    ) in refused.stderr, refused.stderr
    assert "ticks" not in {d["metadata"]["name"] for d in items(quota, "a", "DaemonSet")}

    quota.cli("b", "apply", "-f", str(manifest))  # b publishes it
    wait_until(
        lambda: state_of(pods_by_node(quota, "ticks").get("b") or {}).get("running"),
        30,
        what="the pod on b to run",
    )
    pod_a = wait_until(
        lambda: waiting_on(quota, "ticks", "a", "ErrImagePull"), 30, what="a to refuse it"
    )
    assert state_of(pod_a)["waiting"]["message"].endswith(
        ": the module is 40.1 KiB, over this node's blobs.max_blob_bytes (16 KiB)"
    )

    # c has not the free space its reserve asks for: retried with back-off, never written.
    pod_c = wait_until(
        lambda: waiting_on(quota, "ticks", "c", "ImagePullBackOff"), 30, what="c to back off"
    )
    message = state_of(pod_c)["waiting"]["message"]
    assert "pulling the module needs 40.1 KiB more; " in message, message
    assert message.endswith("which would leave less than this node's blobs.min_free_bytes (4 EiB)")
    assert blob_stats(quota, "c")["refusedNoSpace"] >= 2  # retried
    assert blob_stats(quota, "c")["chunksFetched"] == 0 and partial_files(quota, "c") == []
    assert blob_stats(quota, "a")["chunksFetched"] == 0 and partial_files(quota, "a") == []
    digest = pods_by_node(quota, "ticks")["c"]["spec"]["containers"][0]["image"]
    pulled = quota.cli("c", "pull", digest, check=False)
    assert pulled.returncode == 1
    assert pulled.stderr.startswith("Error from server (ServiceUnavailable): pulling the module")
    remove(quota, "b", daemonset("ticks", "ticker.wasm"))
