"""Blobs between real agents (separate processes, real aiortc, real pycrdt) on loopback.

Most tests share one chain cluster, ``a - b - c``: a and c keep at most one link each
(``transport.max_peers=1``, no jitter, no inbound slack) and are started after b, so each
links to b only and everything between a and c is relayed by b, rpc answers included. Each
test uses blobs of its own; the chain tests come first in the file, the last one freezes c.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from p2pkube.api.client import ApiClient
from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.net.link import LinkState
from tests.clusters import all_ready, chain_cluster, neighbours
from tests.test_hostile_peer import join_as_member

WASM_HEADER = b"\0asm\1\0\0\0"
CHUNK = 256 * 1024  # BlobSettings.chunk_size, the default


def module(path: Path, size: int) -> bytes:
    """A file that passes the WebAssembly magic check, the rest random."""
    data = WASM_HEADER + os.urandom(size - len(WASM_HEADER))
    path.write_bytes(data)
    return data


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def holders(cluster: LocalCluster, viewer: str, digest: str) -> list[str]:
    return list(cluster.api(viewer, "GET", f"/v1/blobs/{digest}")["status"]["holders"])


def blob_file(cluster: LocalCluster, name: str, digest: str) -> Path:
    return cluster.root / name / "blobs" / "sha256" / digest.removeprefix("sha256:")


def publish(cluster: LocalCluster, name: str, path: Path) -> str:
    out = cluster.cli(name, "publish", str(path)).stdout.split()
    assert out[0].startswith("blob/sha256:") and out[1] == "published", out
    return out[0].removeprefix("blob/")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator:
    with chain_cluster(
        tmp_path_factory.mktemp("chain"), request, ["--set", "blobs.holder_wait=1"]
    ) as cluster:
        yield cluster


def test_a_module_published_on_a_is_pulled_on_c_through_b(
    chain: LocalCluster, tmp_path: Path
) -> None:
    # The premise: a and c have no direct link, b is their only path.
    assert neighbours(chain, "a") == {"b"} and neighbours(chain, "c") == {"b"}
    data = module(tmp_path / "hello.wasm", 5 * CHUNK + 1234)
    digest = publish(chain, "a", tmp_path / "hello.wasm")
    assert digest == sha256(data)
    again = chain.cli("a", "publish", str(tmp_path / "hello.wasm")).stdout
    assert again.split()[:2] == [f"blob/{digest}", "unchanged"]  # idempotent

    short = digest[: len("sha256:") + 12]  # what `get blobs` shows
    wait_until(lambda: holders(chain, "c", digest) == ["a"], 10, what="c to know the holder")
    pulled = chain.cli("c", "pull", short)
    last = pulled.stdout.strip().splitlines()[-1]
    assert last.startswith(f"blob/{digest} pulled (") and "from a (6)" in last, pulled.stdout
    assert blob_file(chain, "c", digest).read_bytes() == data

    # Any node lists both holders.
    for viewer in "abc":
        wait_until(
            lambda v=viewer: holders(chain, v, digest) == ["a", "c"],
            10,
            what=f"holders on {viewer}",
        )
    table = chain.cli("b", "get", "blobs").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "CHUNKS", "HOLDERS", "SOURCE", "AGE"]
    row = next(line.split() for line in table[1:] if line.startswith(short))
    assert row[1:5] == ["1.31MB", "6", "2", "hello.wasm"], row
    wide = chain.cli("b", "get", "blobs", short, "-o", "wide").stdout.splitlines()
    assert wide[1].split()[0] == digest and "a,c" in wide[1].split()
    listing = json.loads(chain.cli("a", "get", "blobs", "-o", "json").stdout)
    blob = next(i for i in listing["items"] if i["metadata"]["name"] == digest)
    assert blob["kind"] == "Blob" and blob["apiVersion"] == "p2pkube.io/v1"
    assert blob["spec"]["size"] == len(data) and len(blob["spec"]["chunks"]) == 6
    assert blob["metadata"]["annotations"] == {"p2pkube.io/source": "hello.wasm"}

    # The calls went c -> b -> a and the answers a -> b -> c.
    assert chain.api("c", "GET", "/v1/status")["rpc"]["calls"] >= 6
    assert chain.api("b", "GET", "/v1/status")["mesh"]["routedRelayed"] >= 12
    assert chain.api("a", "GET", "/v1/status")["blobs"]["chunksServed"] >= 6
    node = chain.api("c", "GET", "/v1/nodes/c")
    assert {"names": [digest], "sizeBytes": len(data)} in node["status"]["images"]

    # Pulling what is here already is instant and says so.
    assert chain.cli("c", "pull", digest).stdout.strip().endswith("is already here (1.31 MB)")


def test_a_corrupt_copy_is_detected_and_its_chunk_fetched_elsewhere(
    chain: LocalCluster, tmp_path: Path
) -> None:
    data = module(tmp_path / "shaky.wasm", 8 * CHUNK)
    digest = publish(chain, "a", tmp_path / "shaky.wasm")
    wait_until(lambda: holders(chain, "b", digest) == ["a"], 10, what="b to know the holder")
    chain.cli("b", "pull", digest)
    # b's copy goes bad on disk: bytes flipped inside chunk 0.
    with blob_file(chain, "b", digest).open("r+b") as fh:
        fh.seek(1000)
        original = fh.read(16)
        fh.seek(1000)
        fh.write(bytes(x ^ 0xFF for x in original))
    wait_until(lambda: holders(chain, "c", digest) == ["a", "b"], 10, what="c to see 2 holders")
    before = chain.api("c", "GET", "/v1/status")["blobs"]["corruptChunks"]

    # c asks its neighbour b first (fewest hops) for chunk 0, gets garbage, drops b and
    # fetches the rest from a (through b, which still relays).
    pulled = chain.cli("c", "pull", digest).stdout
    assert "not asked again: b: sent a corrupt chunk (0)" in pulled, pulled
    assert blob_file(chain, "c", digest).read_bytes() == data
    status = chain.api("c", "GET", "/v1/status")["blobs"]
    assert status["corruptChunks"] - before >= 1, status
    log = chain.log_tail("c", 200)
    assert f"corrupt chunk 0 of {digest} from holder b" in log, log


def test_a_hostile_member_gets_error_answers_and_the_agent_keeps_serving(
    chain: LocalCluster, tmp_path: Path
) -> None:
    data = module(tmp_path / "served.wasm", 2 * CHUNK)
    digest = publish(chain, "b", tmp_path / "served.wasm")
    ids = {n: chain.api(n, "GET", "/v1/status")["nodeID"] for n in "abc"}
    answers = asyncio.run(_hostile_session(chain, ids, digest))
    assert answers["unknown digest"] == (False, "not-found")
    assert answers["index out of range"] == (False, "bad-request")
    assert answers["negative index"] == (False, "bad-request")
    assert answers["absurd chunk size"] == (False, "bad-request")
    assert answers["not a map"] == (False, "bad-request")
    assert answers["unknown method"] == (False, "unknown-method")
    assert answers["a fair request"] == (True, CHUNK)
    # Garbage relayed through b to a: a drops that message, b is not blamed.
    wait_until(lambda: "invalid routed message" in chain.log_tail("a", 200), 10)
    assert neighbours(chain, "a") == {"b"}
    # Garbage from the neighbour itself: b drops and bans it, like any protocol violation.
    assert "dropping peer" in chain.log_tail("b", 300)
    # b keeps serving the others.
    wait_until(lambda: holders(chain, "c", digest) == ["b"], 10, what="c to know the holder")
    chain.cli("c", "pull", digest)
    assert blob_file(chain, "c", digest).read_bytes() == data
    assert all(agent.running for agent in chain.agents.values())


async def _hostile_session(
    chain: LocalCluster, ids: dict[str, str], digest: str
) -> dict[str, tuple[bool, Any]]:
    """Link to b as a member and send it rpc requests, fair and foul; b's answers by case."""
    member = await join_as_member(chain, ids["b"])
    answers, link = member.answers, member.link
    await member.announce()  # its signed ALIVE record: a, behind b, learns its key from it
    await asyncio.to_thread(
        wait_until,
        lambda: any(
            n["node"] == member.id
            for n in chain.api("a", "GET", "/v1/status")["membership"]["nodes"]
        ),
        10,
        what="a to hear of the member (its signed record)",
    )
    route = member.route

    def chunk(index: Any, size: Any, of: str = digest) -> bytes:
        return msgpack.packb({"digest": of, "index": index, "chunkSize": size})

    cases = {
        "unknown digest": ("blob.chunk", chunk(0, CHUNK, "sha256:" + "7" * 64)),
        "index out of range": ("blob.chunk", chunk(2, CHUNK)),
        "negative index": ("blob.chunk", chunk(-1, CHUNK)),
        "absurd chunk size": ("blob.chunk", chunk(0, 1 << 40)),
        "not a map": ("blob.chunk", msgpack.packb([digest, 0])),
        "unknown method": ("blob.everything", msgpack.packb(None)),
        "a fair request": ("blob.chunk", chunk(1, CHUNK)),
    }
    results: dict[str, tuple[bool, Any]] = {}
    try:
        for call_id, (name, (method, body)) in enumerate(cases.items(), start=1):
            await route(
                ids["b"], {"kind": "rpc-req", "id": call_id, "method": method, "body": body}
            )
            answer = await asyncio.wait_for(answers.get(), 10)
            assert answer["id"] == call_id
            if answer["ok"]:
                results[name] = (True, len(msgpack.unpackb(answer["body"])["data"]))
            else:
                results[name] = (False, answer["code"])
        await route(
            ids["a"], {"kind": "rpc-req", "id": 99, "method": "blob.chunk", "body": "not bin"}
        )
        await route(
            ids["b"], {"kind": "rpc-req", "id": 100, "method": "blob.chunk", "body": "not bin"}
        )
        async with asyncio.timeout(10):
            while link.state is not LinkState.CLOSED:  # noqa: ASYNC110 - state of this loop
                await asyncio.sleep(0.05)
    finally:
        await member.close()
    return results


def test_pull_and_publish_fail_clearly(chain: LocalCluster, tmp_path: Path) -> None:
    """Runs last on the chain: it freezes c."""
    elf = tmp_path / "prog"
    elf.write_bytes(b"\x7fELF" + b"\0" * 100)
    bad = chain.cli("a", "publish", str(elf), check=False)
    assert bad.returncode == 1 and "not a WebAssembly module" in bad.stderr, bad.stderr
    # The agent checks too (for API users that skip the CLI).
    raw = subprocess.run(
        [sys.executable, "-c", _RAW_UPLOAD, str(chain.root / "a"), str(elf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(raw.stdout) == [422, "Invalid"], raw.stderr
    missing = chain.cli("a", "pull", "sha256:" + "ab" * 32, check=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith("Error from server (NotFound): "), missing.stderr
    # A manifest whose only holder is not Ready.
    module(tmp_path / "lonely.wasm", 1000)
    digest = publish(chain, "c", tmp_path / "lonely.wasm")
    wait_until(lambda: holders(chain, "a", digest) == ["c"], 10, what="a to know the holder")
    chain.kill("c", signal.SIGSTOP)
    try:
        wait_until(lambda: chain.nodes("a").get("c") == "False", 10, what="c NotReady on a")
        lonely = chain.cli("a", "pull", digest, check=False)
    finally:
        chain.kill("c", signal.SIGCONT)
    assert lonely.returncode == 1
    assert "Error from server (ServiceUnavailable): no Ready node holds" in lonely.stderr


def test_a_holder_killed_mid_transfer_is_replaced_by_the_other(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """Two holders, 8 MB in small chunks with a small window (so the transfer lasts), and one
    holder killed with SIGKILL while c pulls: c completes from the other, fetching no chunk
    twice."""
    names = ["a", "b", "c"]
    cluster.start_signaling()
    for name in names:
        cluster.start_agent(name, "--set", "blobs.chunk_size=32768", "--set", "blobs.window=2")
    for name in names:
        cluster.wait_api(name)
    for name in names:
        wait_until(lambda n=name: all_ready(cluster, n, names), 30, what=f"{name} view")
    data = module(tmp_path / "big.wasm", 8 * 1024 * 1024)
    digest = publish(cluster, "a", tmp_path / "big.wasm")
    wait_until(lambda: holders(cluster, "b", digest) == ["a"], 10, what="b to know the holder")
    cluster.cli("b", "pull", digest)
    wait_until(lambda: holders(cluster, "c", digest) == ["a", "b"], 10, what="two holders")

    client = ApiClient.from_data_dir(cluster.root / "c")
    events: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            events.extend(client.pull_blob(digest))
        except BaseException as exc:
            errors.append(exc)

    puller = threading.Thread(target=pull)
    puller.start()
    total = 256  # 8 MiB / 32 KiB

    def fetched() -> int:
        return int(client.status()["blobs"]["chunksFetched"])

    wait_until(lambda: fetched() >= 20, 30, interval=0.02, what="the transfer to start")
    cluster.kill("a")  # SIGKILL
    at_kill = fetched()
    assert at_kill < total, "the transfer ended before the kill: make it slower"
    puller.join(60)
    assert not puller.is_alive() and not errors, errors
    final = events[-1]
    assert final["type"] == "COMPLETE", final
    progress = final["progress"]
    assert set(progress["sources"]) == {"a", "b"} and "a" in progress["dropped"], progress
    assert blob_file(cluster, "c", digest).read_bytes() == data
    stats = client.status()["blobs"]
    assert stats["chunksFetched"] == total, stats  # resumed, not restarted
    assert stats["holdersDropped"] >= 1 and stats["retries"] >= 1, stats


def test_an_unreferenced_blob_is_collected_everywhere_after_the_grace(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    names = ["a", "b"]
    grace = ("--set", "blobs.gc_grace=3", "--set", "blobs.gc_interval=0.3")
    cluster.start_signaling()
    for name in names:
        cluster.start_agent(name, *grace)
    for name in names:
        cluster.wait_api(name)
    for name in names:
        wait_until(lambda n=name: all_ready(cluster, n, names), 30, what=f"{name} view")
    module(tmp_path / "brief.wasm", 100_000)
    digest = publish(cluster, "a", tmp_path / "brief.wasm")
    published = time.monotonic()
    wait_until(lambda: holders(cluster, "b", digest) == ["a"], 10, what="b to know the holder")
    cluster.cli("b", "pull", digest)
    # Only an object's spec keeps a blob: a ConfigMap's data naming it does not.
    cluster.cli("a", "create", "configmap", "mentions", "--from-literal", f"image={digest}")
    for name in names:
        wait_until(
            lambda n=name: not blob_file(cluster, n, digest).exists(), 15, what=f"gc on {name}"
        )
    assert time.monotonic() - published >= 3  # not before the grace
    for viewer in names:
        wait_until(
            lambda v=viewer: (
                cluster.cli(v, "get", "blobs", check=False).stderr.strip() == "No resources found."
            ),
            10,
            what=f"the Blob object gone on {viewer}",
        )
        images = [
            n["status"].get("images") for n in cluster.api(viewer, "GET", "/v1/nodes")["items"]
        ]
        assert images == [[], []], images
    assert sum(cluster.api(n, "GET", "/v1/status")["blobs"]["collected"] for n in names) == 2
    failed = cluster.cli("b", "pull", digest, check=False)
    assert failed.returncode == 1 and "not found" in failed.stderr, failed.stderr


_RAW_UPLOAD = """
import json, sys
from pathlib import Path
from p2pkube.api.client import ApiClient, ApiError
try:
    ApiClient.from_data_dir(Path(sys.argv[1])).publish_blob(Path(sys.argv[2]))
    print(json.dumps([200, "OK"]))
except ApiError as exc:
    print(json.dumps([exc.code, exc.reason]))
"""
