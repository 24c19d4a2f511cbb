"""The blob layer in one process: store, manifest, references, collection and fetch logic.

Real BlobStore on disk, real ClusterState (in memory), real Rpc; only the mesh is replaced by
the fake routed transport of tests/test_rpc.py. The same scenarios with real agents as
separate processes are in tests/test_blobs_cluster.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from p2pkube.blobs.errors import (
    BlobCorrupt,
    BlobNotFound,
    BlobTooLarge,
    InsufficientStorage,
    InvalidBlob,
    NoHolderError,
)
from p2pkube.blobs.fetcher import Holder, hop_counts
from p2pkube.blobs.gc import BlobCollector
from p2pkube.blobs.limits import disk_free, size_text
from p2pkube.blobs.manifest import (
    Manifest,
    blob_key,
    blob_object,
    image_references,
    manifest_of,
    referenced_digests,
)
from p2pkube.blobs.service import BlobService
from p2pkube.blobs.settings import BlobSettings
from p2pkube.blobs.store import BlobStore
from p2pkube.net.rpc import Rpc
from p2pkube.state.cluster import ClusterState
from p2pkube.state.pycrdt_store import PycrdtStore
from tests.test_rpc import FakeNetwork

CHUNK = 1024
WASM = b"\0asm\1\0\0\0"


def module(size: int, seed: int = 0) -> bytes:
    """A fake WebAssembly module of ``size`` bytes (valid magic, random-ish body)."""
    body = b"".join(hashlib.sha256(f"{seed}-{i}".encode()).digest() for i in range(size // 32 + 1))
    return (WASM + body)[:size]


async def pieces(data: bytes, size: int = 700) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# -- manifest and references ------------------------------------------------------------------


def test_image_references_find_digests_at_any_depth_of_the_spec_only() -> None:
    a, b, c = ("sha256:" + ch * 64 for ch in "abc")
    pod = {"kind": "Pod", "spec": {"containers": [{"name": "x", "image": a}]}}
    deployment = {
        "kind": "Deployment",
        "spec": {"template": {"spec": {"containers": [{"image": f"hello.wasm@{b}"}]}}},
    }
    not_spec = {"kind": "ConfigMap", "metadata": {"image": c}, "data": {"image": c}}
    not_digest = {"spec": {"image": "nginx:latest", "x": [{"image": 5}]}}
    assert image_references(pod) == {a}
    assert image_references(deployment) == {b}
    assert image_references(not_spec) == set() and image_references(not_digest) == set()
    deep: dict[str, Any] = {"image": c}
    for _ in range(5000):  # no recursion limit to hit
        deep = {"next": [deep]}
    assert image_references({"spec": deep}) == {c}
    assert referenced_digests([pod, deployment, not_spec, None, "junk"]) == {a, b}


def test_a_manifest_from_the_state_is_validated() -> None:
    good = Manifest("sha256:" + "0" * 64, 2500, 1000, ("a" * 64, "b" * 64, "c" * 64))
    obj = {"kind": "Blob", "metadata": {"name": good.digest}, "spec": good.to_spec()}
    assert manifest_of(obj, 4096) == good
    assert manifest_of(obj, 999) is None  # chunk size above what we accept
    for broken in (
        {**good.to_spec(), "chunks": ["a" * 64]},  # does not cover the size
        {**good.to_spec(), "size": -1},
        {**good.to_spec(), "size": True},
        {**good.to_spec(), "chunkSize": 0},
        {**good.to_spec(), "digest": "md5:abc"},
        {**good.to_spec(), "chunks": ["A" * 64] * 3},
    ):
        assert manifest_of({**obj, "spec": broken}, 4096) is None, broken
    assert manifest_of({**obj, "metadata": {"name": "sha256:" + "1" * 64}}, 4096) is None


def test_hop_counts_follow_the_neighbour_lists() -> None:
    peers = {"b": ["a", "c"], "c": ["b", "d"], "d": ["c"]}
    assert hop_counts("a", ["b"], lambda n: peers.get(n, [])) == {"a": 0, "b": 1, "c": 2, "d": 3}


# -- the store --------------------------------------------------------------------------------


async def test_store_adds_files_idempotently_and_serves_chunks(tmp_path: Path) -> None:
    data = module(5000)
    source = tmp_path / "m.wasm"
    source.write_bytes(data)
    store = BlobStore(tmp_path / "blobs")
    await store.open()
    stored = await store.add_file(source, CHUNK)
    assert stored.created and stored.manifest.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert stored.manifest.count == 5 and stored.manifest.length(4) == 904
    assert stored.manifest.chunks[1] == hashlib.sha256(data[1024:2048]).hexdigest()
    assert stored.path.read_bytes() == data
    again = await store.add_file(source, CHUNK)
    assert not again.created and store.sizes() == {stored.manifest.digest: 5000}
    assert await store.read_chunk(stored.manifest.digest, 4096, 1024) == data[4096:]
    assert not list(store.tmp_dir.iterdir())

    reopened = BlobStore(tmp_path / "blobs")
    await reopened.open()
    assert reopened.path(stored.manifest.digest) == stored.path
    assert await reopened.remove(stored.manifest.digest)
    assert reopened.path(stored.manifest.digest) is None and not stored.path.exists()


async def test_a_partial_blob_resumes_with_only_the_chunks_that_still_verify(
    tmp_path: Path,
) -> None:
    data = module(5000, seed=1)
    src = BlobStore(tmp_path / "src")
    await src.open()
    source = tmp_path / "m.wasm"
    source.write_bytes(data)
    manifest = (await src.add_file(source, CHUNK)).manifest

    store = BlobStore(tmp_path / "dst")
    await store.open()
    partial = await store.open_partial(manifest)
    assert partial.missing() == [0, 1, 2, 3, 4]
    assert not await partial.store_chunk(2, b"x" * 1024)  # corrupt: refused
    assert not await partial.store_chunk(4, data[4096:4100])  # wrong length: refused
    for index in (0, 1, 3):
        assert await partial.store_chunk(index, data[index * CHUNK : (index + 1) * CHUNK])
    await partial.close()

    # A crash tears the record's last append and damages chunk 1 on disk.
    name = manifest.digest.removeprefix("sha256:")
    with (store.partial_dir / f"{name}.chunks").open("ab") as fh:
        fh.write(b"\x02\x00")
    with (store.partial_dir / f"{name}.part").open("r+b") as fh:
        fh.seek(1500)
        fh.write(b"\xff\xff")

    restarted = BlobStore(tmp_path / "dst")
    await restarted.open()
    assert restarted.partials() == {manifest.digest}
    resumed = await restarted.open_partial(manifest)
    assert resumed.missing() == [1, 2, 4]
    for index in resumed.missing():
        assert await resumed.store_chunk(index, data[index * CHUNK : (index + 1) * CHUNK])
    path = await resumed.finish()
    await resumed.close()
    assert path.read_bytes() == data and restarted.partials() == set()
    assert not list(restarted.partial_dir.iterdir())


async def test_a_manifest_whose_chunks_do_not_make_its_digest_is_refused(tmp_path: Path) -> None:
    data = module(2048, seed=2)
    chunks = tuple(hashlib.sha256(data[i : i + CHUNK]).hexdigest() for i in (0, CHUNK))
    lying = Manifest("sha256:" + "e" * 64, len(data), CHUNK, chunks)
    store = BlobStore(tmp_path / "blobs")
    await store.open()
    partial = await store.open_partial(lying)
    for index in (0, 1):
        assert await partial.store_chunk(index, data[index * CHUNK : (index + 1) * CHUNK])
    with pytest.raises(BlobCorrupt):
        await partial.finish()
    await partial.close()
    assert store.sizes() == {} and not list(store.partial_dir.iterdir())


# -- collection -------------------------------------------------------------------------------


def test_collection_waits_for_the_grace_and_spares_referenced_and_busy_blobs() -> None:
    now = [1000.0]
    gc = BlobCollector(grace=60, clock=lambda: now[0])
    a, b, c, d = ("sha256:" + ch * 64 for ch in "abcd")

    def decide(referenced: set[str], collector: bool = True) -> tuple[list[str], list[str]]:
        decision = gc.decide(
            local={a, b, c},
            manifests={a, b, d},
            referenced=referenced,
            busy={c},
            collector=collector,
        )
        return decision.remove_local, decision.delete_manifests

    assert decide({b}) == ([], [])  # first seen unreferenced now
    now[0] += 59
    assert decide({b}) == ([], [])
    now[0] += 2
    assert decide({b}) == ([a], [a, d])  # b is referenced, c is being fetched
    assert decide({b}, collector=False) == ([a], [])  # only the collector deletes manifests
    assert decide({a, b}) == ([], [d])  # a is referenced again: its count restarts
    now[0] += 30
    gc.touch(d)  # pulled here just now
    assert decide({b}) == ([], [])
    now[0] += 61
    assert decide({b}) == ([a], [a, d])


# -- fetching between in-process nodes ----------------------------------------------------------


class Node:
    """A BlobService with its own state, store and rpc on the fake network."""

    def __init__(self, name: str, network: FakeNetwork, root: Path, settings: BlobSettings):
        self.name = name
        self.transport = network.node(name)
        self.rpc = Rpc(self.transport)
        self.transport.on_routed = self.rpc.receive
        self.state = ClusterState(None, store_factory=PycrdtStore)
        self.holders: dict[str, list[Holder]] = {}
        self.changes = 0

        async def changed() -> None:
            self.changes += 1

        self.service = BlobService(
            root / name,
            settings,
            node_name=name,
            state=self.state,
            rpc=self.rpc,
            holders=lambda: self.holders,
            references=set,
            is_collector=lambda: True,
            on_local_change=changed,
        )

    async def start(self) -> None:
        await self.state.open()
        await self.service.start()

    async def close(self) -> None:
        await self.service.close()
        await self.rpc.close()
        await self.state.close()


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[dict[str, Node]]:
    network = FakeNetwork()
    settings = BlobSettings(
        chunk_size=CHUNK, window=4, chunk_timeout=1, holder_wait=0.3, refresh_interval=0.05
    )
    made = {name: Node(name, network, tmp_path, settings) for name in ("a", "b", "c")}
    for node in made.values():
        await node.start()
    yield made
    for node in made.values():
        await node.close()


async def publish(nodes: dict[str, Node], on: list[str], data: bytes) -> str:
    """Publish ``data`` on each node of ``on`` and replicate its Blob object everywhere."""
    obj: dict[str, Any] = {}
    for name in on:
        obj, _ = await nodes[name].service.publish(pieces(data), "m.wasm")
    digest = obj["metadata"]["name"]
    stored = nodes[on[0]].state.get("objects", blob_key(digest))
    for node in nodes.values():
        await node.state.put("objects", blob_key(digest), stored)
    return str(digest)


async def test_publish_checks_the_magic_the_size_and_is_idempotent(
    nodes: dict[str, Node],
) -> None:
    service = nodes["a"].service
    with pytest.raises(InvalidBlob, match="7f 45 4c 46"):
        await service.publish(pieces(b"\x7fELF" + b"\0" * 100), "a.out")
    with pytest.raises(InvalidBlob):
        await service.publish(pieces(b"\0as"), "short.wasm")
    service.settings.max_blob_bytes, limit = 3000, service.settings.max_blob_bytes
    try:
        with pytest.raises(BlobTooLarge, match=r"big.wasm is at least 3.4 KiB, over this node's "):
            await service.publish(pieces(module(4000)), "big.wasm")
    finally:
        service.settings.max_blob_bytes = limit
    assert service.store.sizes() == {} and not list(service.store.tmp_dir.iterdir())

    first, new = await service.publish(pieces(module(3000)), "m.wasm")
    assert new and first["spec"]["chunkSize"] == CHUNK and len(first["spec"]["chunks"]) == 3
    assert first["metadata"]["annotations"] == {"p2pkube.io/source": "m.wasm"}
    assert first["status"] == {"holders": ["a"], "local": "Complete"}
    again, new = await service.publish(pieces(module(3000)), "other-name.wasm")
    assert not new and again["metadata"] == first["metadata"]
    assert service.images() == [{"names": [first["metadata"]["name"]], "sizeBytes": 3000}]
    assert nodes["a"].changes == 1
    assert service.resolve(first["metadata"]["name"][:13]) == first["metadata"]["name"]


async def test_a_corrupt_holder_is_dropped_and_its_chunks_come_from_another(
    nodes: dict[str, Node],
) -> None:
    data = module(10 * CHUNK, seed=3)
    digest = await publish(nodes, ["a", "b"], data)
    path = nodes["b"].service.store.path(digest)
    assert path is not None
    with path.open("r+b") as fh:  # b's copy goes bad on disk
        fh.seek(5)
        fh.write(b"\xff")
    nodes["c"].holders = {digest: [Holder("b", "b", 1), Holder("a", "a", 2)]}
    fetched = await nodes["c"].service.ensure(digest)
    assert fetched.read_bytes() == data
    stats = nodes["c"].service.fetcher.stats
    assert stats.corrupt_chunks == 1 and stats.holders_dropped == 1 and stats.chunks_fetched == 10
    assert nodes["c"].service.images() == [{"names": [digest], "sizeBytes": len(data)}]
    assert nodes["c"].changes == 1


async def test_a_holder_that_vanishes_mid_fetch_is_replaced_without_restarting(
    nodes: dict[str, Node],
) -> None:
    data = module(40 * CHUNK, seed=4)
    digest = await publish(nodes, ["a", "b"], data)
    nodes["c"].holders = {digest: [Holder("a", "a", 1), Holder("b", "b", 1)]}
    network = nodes["c"].transport.network
    served = {"a": 0}
    serve = nodes["a"].service._serve_chunk

    async def serve_then_vanish(src: str, body: Any) -> Any:
        served["a"] += 1
        if served["a"] == 5:
            network.cut.add("a")  # a disappears: requests to it now go unanswered
            nodes["c"].holders = {digest: [Holder("b", "b", 1)]}
        return await serve(src, body)

    nodes["a"].rpc._handlers["blob.chunk"] = serve_then_vanish
    fetched = await nodes["c"].service.ensure(digest)
    assert fetched.read_bytes() == data
    stats = nodes["c"].service.fetcher.stats
    assert stats.chunks_fetched == 40  # nothing fetched twice
    assert stats.holders_dropped == 1 and stats.retries >= 1


async def test_concurrent_ensures_share_one_fetch_and_errors_are_clear(
    nodes: dict[str, Node],
) -> None:
    data = module(8 * CHUNK, seed=5)
    digest = await publish(nodes, ["a"], data)
    nodes["c"].holders = {digest: [Holder("a", "a", 1)]}
    paths = await asyncio.gather(*(nodes["c"].service.ensure(digest) for _ in range(5)))
    assert len(set(paths)) == 1 and nodes["c"].service.fetcher.stats.fetches == 1
    assert await nodes["c"].service.ensure(digest) == paths[0]  # held: no fetch at all
    assert nodes["c"].service.fetcher.stats.fetches == 1

    with pytest.raises(BlobNotFound):
        await nodes["c"].service.ensure("sha256:" + "9" * 64)
    other = await publish(nodes, ["a"], module(3 * CHUNK, seed=6))
    with pytest.raises(NoHolderError, match="no Ready node holds"):
        await nodes["b"].service.ensure(other)  # nobody is listed as holder for b


async def test_hostile_chunk_requests_get_error_answers(nodes: dict[str, Node]) -> None:
    digest = await publish(nodes, ["a"], module(3 * CHUNK, seed=7))
    rpc = nodes["b"].rpc
    cases = {
        "not a map": ("bad-request", [1, 2]),
        "bad digest": ("bad-request", {"digest": "sha256:xyz", "index": 0, "chunkSize": CHUNK}),
        "unknown digest": (
            "not-found",
            {"digest": "sha256:" + "1" * 64, "index": 0, "chunkSize": CHUNK},
        ),
        "negative index": ("bad-request", {"digest": digest, "index": -1, "chunkSize": CHUNK}),
        "index out of range": ("bad-request", {"digest": digest, "index": 3, "chunkSize": CHUNK}),
        "huge chunks": ("bad-request", {"digest": digest, "index": 0, "chunkSize": 1 << 40}),
        "bool index": ("bad-request", {"digest": digest, "index": True, "chunkSize": CHUNK}),
    }
    for what, (code, body) in cases.items():
        with pytest.raises(Exception) as failure:
            await rpc.call("a", "blob.chunk", body, timeout=2)
        assert getattr(failure.value, "code", None) == code, what
    answer = await rpc.call("a", "blob.chunk", {"digest": digest, "index": 2, "chunkSize": CHUNK})
    assert len(answer["data"]) == CHUNK
    assert nodes["a"].service.serve_errors == len(cases)


async def test_collect_removes_unreferenced_copies_and_manifests(nodes: dict[str, Node]) -> None:
    node = nodes["a"]
    digest = await publish(nodes, ["a"], module(2 * CHUNK, seed=8))
    node.service.collector.grace = 0
    node.service._references = lambda: {digest}
    await node.service.collect()
    assert node.service.store.path(digest) is not None  # referenced: kept
    node.service._references = set
    decision = await node.service.collect()
    assert decision.remove_local == [digest] and decision.delete_manifests == [digest]
    assert node.service.store.path(digest) is None and node.service.images() == []
    assert node.state.get("objects", blob_key(digest)) is None
    assert not os.listdir(node.service.store.complete_dir)


async def test_a_busy_holder_is_asked_again_later_not_dropped(nodes: dict[str, Node]) -> None:
    data = module(12 * CHUNK, seed=9)
    digest = await publish(nodes, ["a"], data)
    nodes["a"].rpc.settings.max_requests_per_source = 1  # window 4 > 1: most asks are "busy"
    nodes["c"].holders = {digest: [Holder("a", "a", 1)]}
    fetched = await nodes["c"].service.ensure(digest)
    assert fetched.read_bytes() == data
    stats = nodes["c"].service.fetcher.stats
    assert nodes["a"].rpc.stats.busy_refused > 0 and stats.retries > 0
    assert stats.holders_dropped == 0 and stats.chunks_fetched == 12


# -- quotas: the size cap and the free-space reserve ------------------------------------------


def limit(node: Node, **changes: Any) -> BlobSettings:
    """Give ``node`` (only) other blob settings, e.g. a lower ``max_blob_bytes``."""
    settings = replace(node.service.settings, **changes)
    node.service.settings = node.service.fetcher.settings = settings
    return settings


def on_disk(node: Node) -> list[str]:
    """Every file of the node's blob store (complete, partial, temporary)."""
    root = node.service.store.root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_a_manifest_over_the_cap_is_refused_before_anything_is_fetched(
    nodes: dict[str, Node],
) -> None:
    """A member writes a manifest declaring 16 GiB of chunks that a file of zeros would
    match: each node refuses it from the manifest alone, and asks nobody for anything."""
    zeros = hashlib.sha256(bytes(4 * 1024 * 1024)).hexdigest()
    huge = Manifest("sha256:" + "5" * 64, 16 << 30, 4 * 1024 * 1024, (zeros,) * 4096)
    c = nodes["c"]
    await c.state.put("objects", blob_key(huge.digest), blob_object(huge, "x.wasm", "now"))
    c.holders = {huge.digest: [Holder("a", "a", 1)]}
    for _ in range(2):
        with pytest.raises(BlobTooLarge) as refused:
            await c.service.ensure(huge.digest)
        assert str(refused.value) == (
            "the module is 16 GiB, over this node's blobs.max_blob_bytes (256 MiB)"
        )
        assert not refused.value.retryable  # the kubelet does not loop on it
    stats = c.service.fetcher.stats
    assert (stats.refused_too_large, stats.fetches, stats.chunks_fetched) == (2, 0, 0)
    assert nodes["a"].rpc.stats.requests_served == 0 and on_disk(c) == []

    # A real module over a cap set low on c only: c refuses it, b pulls it.
    data = module(10 * CHUNK, seed=10)
    digest = await publish(nodes, ["a"], data)
    limit(c, max_blob_bytes=4 * CHUNK)
    c.holders = nodes["b"].holders = {digest: [Holder("a", "a", 1)]}
    with pytest.raises(
        BlobTooLarge, match=r"is 10 KiB, over this node's blobs.max_blob_bytes \(4 KiB\)"
    ):
        await c.service.ensure(digest)
    assert on_disk(c) == []
    assert (await nodes["b"].service.ensure(digest)).read_bytes() == data


async def test_a_pull_that_would_leave_too_little_free_is_refused_before_writing(
    nodes: dict[str, Node], tmp_path: Path
) -> None:
    data = module(6 * CHUNK, seed=11)
    digest = await publish(nodes, ["a"], data)
    c = nodes["c"]
    c.holders = {digest: [Holder("a", "a", 1)]}
    limit(c, min_free_bytes=1 << 62)  # more than any disk here has free
    with pytest.raises(InsufficientStorage) as refused:
        await c.service.ensure(digest)
    message = str(refused.value)
    assert message.startswith(f"pulling the module needs 6 KiB more; {c.service.store.root} has ")
    assert message.endswith("blobs.min_free_bytes (4 EiB)"), message
    assert refused.value.retryable  # space may free up: the kubelet backs off and retries
    assert c.service.fetcher.stats.refused_no_space == 1
    assert nodes["a"].service.chunks_served == 0 and on_disk(c) == []
    limit(c, min_free_bytes=1 << 20)  # a reserve the disk satisfies
    assert (await c.service.ensure(digest)).read_bytes() == data


async def test_a_pull_stops_when_the_disk_fills_meanwhile_and_resumes_later(
    nodes: dict[str, Node],
) -> None:
    """Something else fills the disk while chunks land: the pull stops at its next check and
    keeps its partial file; once there is room it resumes, fetching nothing twice. (The free
    space is what statvfs would say; it is scripted, as filling this machine's disk is not
    an option.)"""
    data = module(40 * CHUNK, seed=12)
    digest = await publish(nodes, ["a"], data)
    c = nodes["c"]
    c.holders = {digest: [Holder("a", "a", 1)]}
    limit(c, min_free_bytes=1 << 20, disk_check_interval=0.0)
    free, filled = [1 << 40], asyncio.Event()

    async def statvfs() -> int:
        return free[0]

    c.service.store.free_bytes = statvfs  # type: ignore[method-assign]
    serve = nodes["a"].service._serve_chunk

    async def serve_then_fill(src: str, body: Any) -> Any:
        if nodes["a"].service.chunks_served >= 5 and not filled.is_set():
            filled.set()
            free[0] = 1 << 20  # the disk is now all but full
        return await serve(src, body)

    nodes["a"].rpc._handlers["blob.chunk"] = serve_then_fill
    with pytest.raises(InsufficientStorage, match=r"blobs\.min_free_bytes"):
        await c.service.ensure(digest)
    # a had served 5 chunks when the disk filled; c may not have written the last of them
    # yet (they are in flight in its window) when its next check saw the full disk.
    first = c.service.fetcher.stats.chunks_fetched
    assert 0 < first <= nodes["a"].service.chunks_served < 40
    assert c.service.store.partials() == {digest}
    free[0] = 1 << 40
    assert (await c.service.ensure(digest)).read_bytes() == data
    assert c.service.fetcher.stats.chunks_fetched <= 40  # resumed, not restarted


async def test_the_reserve_counts_what_running_pulls_still_write(nodes: dict[str, Node]) -> None:
    first, second = module(20 * CHUNK, seed=13), module(10 * CHUNK, seed=14)
    digest_1 = await publish(nodes, ["a"], first)
    digest_2 = await publish(nodes, ["a"], second)
    c = nodes["c"]
    c.holders = {d: [Holder("a", "a", 1)] for d in (digest_1, digest_2)}
    reserve = 1 << 20
    limit(c, min_free_bytes=reserve)

    async def statvfs() -> int:  # room for either blob, not for both
        return reserve + 25 * CHUNK

    c.service.store.free_bytes = statvfs  # type: ignore[method-assign]
    serve = nodes["a"].service._serve_chunk

    started = asyncio.Event()

    async def slowly(src: str, body: Any) -> Any:
        started.set()
        await asyncio.sleep(0.02)
        return await serve(src, body)

    nodes["a"].rpc._handlers["blob.chunk"] = slowly
    running = asyncio.create_task(c.service.ensure(digest_1))
    await asyncio.wait_for(started.wait(), 5)
    with pytest.raises(InsufficientStorage, match="that running pulls still write"):
        await c.service.ensure(digest_2)
    assert (await running).read_bytes() == first


async def test_a_chunk_longer_than_declared_is_never_written(nodes: dict[str, Node]) -> None:
    data = module(5 * CHUNK, seed=15)
    digest = await publish(nodes, ["a", "b"], data)
    c = nodes["c"]
    serve = nodes["a"].service._serve_chunk

    async def padded(src: str, body: Any) -> Any:  # the right bytes, and more
        answer = await serve(src, body)
        return {"data": answer["data"] + b"\0" * CHUNK}

    nodes["a"].rpc._handlers["blob.chunk"] = padded
    c.holders = {digest: [Holder("a", "a", 1)]}  # only the padding holder
    with pytest.raises(NoHolderError, match="sent a corrupt chunk"):
        await c.service.ensure(digest)
    part = c.service.store.partial_dir / f"{digest.removeprefix('sha256:')}.part"
    assert part.stat().st_size == len(data) and not any(part.read_bytes())  # nothing written
    c.holders = {digest: [Holder("a", "a", 1), Holder("b", "b", 2)]}
    assert (await c.service.ensure(digest)).stat().st_size == len(data)


async def test_a_browser_node_checks_the_cap_but_not_the_disk(
    nodes: dict[str, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In Pyodide (sys.platform "emscripten") the store is memory and statvfs is made up."""
    data = module(3 * CHUNK, seed=16)
    digest = await publish(nodes, ["a"], data)
    c = nodes["c"]
    c.holders = {digest: [Holder("a", "a", 1)]}
    monkeypatch.setattr(sys, "platform", "emscripten")
    assert disk_free(c.service.store.root) is None
    limit(c, min_free_bytes=1 << 62, max_blob_bytes=2 * CHUNK)
    with pytest.raises(BlobTooLarge):
        await c.service.ensure(digest)
    limit(c, min_free_bytes=1 << 62, max_blob_bytes=3 * CHUNK)  # the reserve alone: no check
    assert (await c.service.ensure(digest)).read_bytes() == data


def test_sizes_are_shown_in_binary_units() -> None:
    shown = [size_text(n) for n in (0, 812, 1024, 25_900, 256 << 20, 1536 << 20, 16 << 30)]
    assert shown == ["0 B", "812 B", "1 KiB", "25.3 KiB", "256 MiB", "1.5 GiB", "16 GiB"]
