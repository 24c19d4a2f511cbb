"""Store, wire messages and peer sync of the cluster state (real pycrdt, in-process peers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from pycrdt import (
    Doc,
    create_sync_message,
    create_update_message,
    handle_sync_message,
)

from p2pkube.state import (
    GENESIS,
    LOCAL,
    ClusterState,
    StateSettings,
    StateStore,
    SyncMessageKind,
    SyncProtocolError,
    UnknownMapError,
    Version,
    object_key,
)
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.sync import (
    decode_state_message,
    decode_state_vector,
    decode_sync_message,
    encode_generation,
    encode_state_message,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
    write_var_uint,
)
from p2pkube.state.versioned import (
    Stamp,
    decode_version,
    encode_packed_version,
    encode_version,
)

from .statenet import QUIET, Mesh, contents, sv

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "c", "image": "web:1", "args": ["--port", "8080"]}]},
}


# -- store ------------------------------------------------------------------------------------
def test_store_roundtrip_msgpack_values() -> None:
    store = PycrdtStore()
    assert isinstance(store, StateStore)
    values: dict[str, Any] = {
        "big": 2**60,
        "neg": -(2**62),
        "nested": {"a": {"b": [1, 2.5, "x", None, True, b"\x00\xff"]}},
        "pod": POD,
        "unicode": "héllo ✓",
    }
    with store.transaction():
        for key, value in values.items():
            store.put("objects", key, value)
    for key, value in values.items():
        assert store.get("objects", key) == value
    assert store.get("objects", "big") == 2**60
    assert type(store.get("objects", "big")) is int
    assert dict(store.items("objects")) == values
    assert sorted(store.keys("objects")) == sorted(values)
    assert store.get("objects", "missing") is None
    assert store.delete("objects", "big") is True
    assert store.delete("objects", "big") is False
    assert store.get("objects", "big") is None
    # A fresh document gets everything from one encoded state.
    copy = PycrdtStore()
    copy.apply_update(store.encode_state(), "test")
    assert dict(copy.items("objects")) == {k: v for k, v in values.items() if k != "big"}


def test_store_rejects_unknown_map_and_bad_keys() -> None:
    store = PycrdtStore()
    with pytest.raises(UnknownMapError):
        store.put("pods", "k", 1)
    with pytest.raises(UnknownMapError):
        store.get("pods", "k")
    with pytest.raises(ValueError):
        store.put("objects", "", 1)
    assert object_key("Pod", "default", "web") == "Pod/default/web"
    assert object_key("Node", "", "n1") == "Node//n1"
    with pytest.raises(ValueError):
        object_key("Pod", "a/b", "web")


def test_store_fresh_client_id_each_time() -> None:
    ids = {PycrdtStore().client_id for _ in range(20)}
    assert len(ids) == 20
    assert all(0 < i < 2**53 for i in ids)


def test_undecodable_values_read_as_absent() -> None:
    doc = Doc()
    from pycrdt import Map

    doc["objects"] = ymap = Map()
    ymap["bad"] = b"\xc1"  # never-used msgpack byte
    ymap["text"] = "not a blob"
    store = PycrdtStore()
    store.apply_update(doc.get_update(), "peer")
    store.put("objects", "good", 1)
    assert store.get("objects", "bad") is None
    assert store.get("objects", "text") is None
    assert store.items("objects") == [("good", 1)]


def test_callbacks_run_after_commit_with_origin() -> None:
    store = PycrdtStore()
    updates: list[tuple[int, object]] = []
    changes: list[tuple[str, set[str], object]] = []
    store.on_update(lambda u, o: updates.append((len(u), o)))
    unsubscribe = store.on_change(lambda m, k, o: changes.append((m, k, o)))

    def write_back(map_name: str, keys: set[str], origin: object) -> None:
        # Writing from a callback must work: it runs outside the committed transaction.
        if map_name == "objects" and "trigger" in keys and origin is LOCAL:
            store.put("events", "seen", sorted(keys))

    store.on_change(write_back)
    with store.transaction():
        store.put("objects", "trigger", 1)
        store.put("status", "trigger", {"phase": "Running"})
    assert len(updates) == 2  # the batch, then the callback's own write
    assert updates[0][1] is LOCAL
    assert ("objects", {"trigger"}, LOCAL) in changes
    assert ("status", {"trigger"}, LOCAL) in changes
    assert store.get("events", "seen") == ["trigger"]
    other = PycrdtStore()
    other.on_update(lambda u, o: updates.append((len(u), o)))
    other.apply_update(store.encode_state(), "peer-1")
    assert updates[-1][1] == "peer-1"
    unsubscribe()
    n = len(changes)
    store.put("objects", "x", 1)
    assert len(changes) == n


def test_spec_and_status_written_concurrently_both_survive() -> None:
    user, node = PycrdtStore(), PycrdtStore()
    key = object_key("Pod", "default", "web")
    user.put("objects", key, POD)
    node.apply_update(user.encode_state(), "user")
    # Concurrently: the user edits the spec, the node reports status.
    edited = {**POD, "spec": {**POD["spec"], "replicas": 2}}
    user.put("objects", key, edited)
    node.put("status", key, {"phase": "Running", "podIP": "10.0.0.7"})
    user.apply_update(node.encode_diff(user.state_vector()), "node")
    node.apply_update(user.encode_diff(node.state_vector()), "user")
    for store in (user, node):
        assert store.get("objects", key) == edited
        assert store.get("status", key) == {"phase": "Running", "podIP": "10.0.0.7"}
    assert decode_state_vector(user.state_vector()) == decode_state_vector(node.state_vector())


# -- wire messages ----------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 70_000])
def test_sync_messages_match_pycrdt(size: int) -> None:
    doc = Doc()
    from pycrdt import Map

    doc["objects"] = ymap = Map()
    if size:
        ymap["k"] = b"x" * size
    sv = doc.get_state()
    update = doc.get_update()
    assert encode_sync_step1(sv) == create_sync_message(doc)
    assert encode_update(update) == create_update_message(update)
    # pycrdt answers our step 1 with the same bytes we produce for step 2.
    empty_sv = Doc().get_state()
    reply = handle_sync_message(encode_sync_step1(empty_sv)[1:], doc)
    assert reply == encode_sync_step2(doc.get_update(empty_sv))
    for encoded, kind, payload in [
        (encode_sync_step1(sv), SyncMessageKind.STEP1, sv),
        (encode_sync_step2(update), SyncMessageKind.STEP2, update),
        (encode_update(update), SyncMessageKind.UPDATE, update),
    ]:
        assert decode_sync_message(encoded) == (kind, payload)
        frame = decode_state_message(encode_state_message(GENESIS, encoded))
        assert (frame.generation, frame.kind, frame.payload) == (GENESIS, kind, payload)
        assert frame.encode() == encode_state_message(GENESIS, encoded)
        assert frame.encode() == b"\x00\x00" + encoded  # genesis = varUint(0) varUint(0)
    # A pycrdt doc can consume our messages directly.
    other = Doc()
    handle_sync_message(encode_sync_step2(update)[1:], other)
    assert other.get_state() == sv


GEN0 = encode_generation(GENESIS)
HUGE_LENGTH = write_var_uint(2**50)
BAD_MESSAGES = [
    b"",
    b"\x00",
    b"\x00\x00",
    b"\x01\x00\x00",  # awareness, not sync
    b"\x00\x03\x00",  # unknown sync kind
    b"\x00\x00\x05abc",  # truncated payload
    b"\x00\x02" + HUGE_LENGTH + b"xx",  # hostile length
    b"\x00\x02\x01ab",  # trailing bytes
    b"\x00\x02" + b"\xff" * 20,  # endless varUint
    b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f",  # varUint beyond 2**53
]


HOSTILE_GENERATION_FRAMES = [
    b"\x07",  # generation without its creator
    b"\x07\x00" + encode_update(b"\x00\x00"),  # number without a creator: no node makes it
    b"\x00\x05" + encode_update(b"\x00\x00"),  # genesis with a creator
    b"\x01" + b"\xff" * 9 + encode_update(b"\x00\x00"),  # endless creator varUint
    b"\x01\xff\xff\xff\xff\xff\xff\xff\x7f" + encode_update(b"\x00\x00"),  # creator > 2**53
    # A plausible-looking but absurd generation number: would exhaust the number space.
    write_var_uint(2**52) + b"\x05" + encode_update(b"\x00\x00"),
    write_var_uint(2**52) + b"\x05" + encode_sync_step1(b"\x00"),
]


@pytest.mark.parametrize("data", BAD_MESSAGES)
def test_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(SyncProtocolError):
        decode_sync_message(data)
    with pytest.raises(SyncProtocolError):
        decode_state_message(GEN0 + data)


def test_decode_enforces_limits() -> None:
    msg = encode_update(b"x" * 1000)
    with pytest.raises(SyncProtocolError):
        decode_sync_message(msg, max_payload=999)
    assert decode_sync_message(msg, max_payload=1000)[1] == b"x" * 1000
    assert decode_state_vector(b"\x00") == {}
    assert decode_state_vector(b"\x01\x05\x03") == {5: 3}
    for bad in [b"", b"\x02\x05\x03", b"\x01\x05\x03\x00", write_var_uint(10**6) + b"\x01"]:
        with pytest.raises(SyncProtocolError):
            decode_state_vector(bad)
    with pytest.raises(SyncProtocolError):
        decode_state_vector(b"\x02\x01\x01\x02\x02", max_entries=1)


# -- ClusterState sync ------------------------------------------------------------------------
@pytest.fixture
async def mesh() -> Any:
    m = Mesh()
    yield m
    await m.close()


async def open_states(n: int, settings: StateSettings = QUIET) -> list[ClusterState]:
    states = [ClusterState(None, settings, store_factory=PycrdtStore) for _ in range(n)]
    for s in states:
        await s.open()
    return states


async def test_two_states_converge(mesh: Mesh) -> None:
    a, b = await open_states(2)
    await a.put("objects", "Pod/default/a", POD)
    mesh.link(a, "A", b, "B")
    await mesh.settle()
    assert b.get("objects", "Pod/default/a") == POD
    await b.put("status", "Pod/default/a", {"phase": "Running"})
    await b.delete("objects", "Pod/default/a")
    await mesh.settle()
    assert a.get("status", "Pod/default/a") == {"phase": "Running"}
    assert a.get("objects", "Pod/default/a") is None
    assert contents(a) == contents(b)
    assert sv(a) == sv(b)
    stats = a.stats
    assert b.stats.updates_sent == 2 and stats.updates_received == 2 and stats.updates_sent == 0
    assert stats.sync_step1_sent == 1 and stats.sync_step1_received == 1
    assert stats.sync_step2_bytes_received > 0 and stats.doc_size > 0
    assert stats.peers == 1 and set(stats.state_vector) == {a.client_id, b.client_id}
    d = a.stats_dict()
    assert d["docSize"] == stats.doc_size and "syncStep2BytesReceived" in d
    assert mesh.errors == []
    for s in (a, b):
        await s.close()


async def test_three_state_chain_relays(mesh: Mesh) -> None:
    a, b, c = await open_states(3)
    await a.put("objects", "before", 1)
    mesh.link(a, "A", b, "B")
    mesh.link(b, "B", c, "C")  # A and C are not attached to each other
    await mesh.settle()
    assert c.get("objects", "before") == 1
    await a.put("objects", "from-a", {"x": 1})
    await c.put("status", "from-c", {"y": 2})
    async with b.batch() as batch:
        batch.put("leases", "l1", {"holder": "B"})
        batch.put("events", "e1", {"reason": "Started"})
    await mesh.settle()
    for s in (a, b, c):
        assert s.get("objects", "from-a") == {"x": 1}
        assert s.get("status", "from-c") == {"y": 2}
        assert s.get("leases", "l1") == {"holder": "B"}
        assert s.get("events", "e1") == {"reason": "Started"}
    assert contents(a) == contents(b) == contents(c)
    assert sv(a) == sv(b) == sv(c)
    assert "A" in b.peers and "C" in b.peers and "C" not in a.peers
    for s in (a, b, c):
        await s.close()


async def test_concurrent_writes_converge(mesh: Mesh) -> None:
    a, b, c = await open_states(3)
    written: dict[str, list[Version]] = {}

    def record(state: ClusterState, key: str) -> None:
        version = state.version("objects", key)
        assert version is not None
        written.setdefault(key, []).append(version)

    # Everyone writes the same keys and its own keys while disconnected.
    for i, s in enumerate((a, b, c)):
        async with s.batch() as batch:
            for k in range(50):
                batch.put("objects", f"shared-{k}", {"writer": i, "k": k})
                batch.put("status", f"own-{i}-{k}", {"v": k})
            batch.delete("objects", "shared-0")
        for k in range(50):
            record(s, f"shared-{k}")
    mesh.link(a, "A", b, "B")
    mesh.link(b, "B", c, "C")

    # ...and keep writing while the sync is in flight.
    async def put(state: ClusterState, key: str, value: object) -> None:
        await state.put("objects", key, value)
        record(state, key)  # no persistence: put did not yield, this is our version

    async def delete(state: ClusterState, key: str) -> None:
        await state.delete("objects", key)
        record(state, key)

    await asyncio.gather(put(a, "shared-1", "a-late"), put(c, "shared-1", "c-late"))
    await delete(b, "shared-2")
    await mesh.settle()
    assert sv(a) == sv(b) == sv(c)
    assert contents(a) == contents(b) == contents(c)
    assert len(a.keys("status")) == 150
    # Concurrent writes: the version with the highest stamp wins everywhere (not the
    # higher Yjs client id), deletes included.
    for key, versions in written.items():
        newest = max(versions, key=lambda v: v.stamp)
        for s in (a, b, c):
            assert s.version("objects", key) == newest, key
    assert a.get("objects", "shared-0") is None
    # A write or delete made after seeing every value wins everywhere.
    await c.put("objects", "shared-1", "final")
    await a.delete("objects", "shared-3")
    await mesh.settle()
    for s in (a, b, c):
        assert s.get("objects", "shared-1") == "final"
        assert s.get("objects", "shared-3") is None
    assert contents(a) == contents(b) == contents(c)
    for s in (a, b, c):
        await s.close()


async def test_hostile_frames_raise_and_leave_state_intact(mesh: Mesh) -> None:
    a, b = await open_states(2)
    mesh.link(a, "A", b, "B")
    await a.put("objects", "k", {"v": 1})
    await mesh.settle()
    before = a.store.encode_state()
    bad_frames = [
        *(GEN0 + m for m in BAD_MESSAGES),
        encode_state_message(GENESIS, encode_update(b"\x01\xff\xff\xff")),  # undecodable update
        encode_state_message(GENESIS, encode_sync_step2(b"\x05\x01\x02")),
        encode_state_message(GENESIS, encode_sync_step1(b"\x02\x01")),  # truncated state vector
        encode_state_message(GENESIS, encode_sync_step1(write_var_uint(10**9) + b"\x01\x01")),
        b"\xff" * 9,  # endless generation varUint
        *HOSTILE_GENERATION_FRAMES,
    ]
    for frame in bad_frames:
        with pytest.raises(SyncProtocolError):
            a.receive("B", frame)
    assert a.store.encode_state() == before
    assert a.get("objects", "k") == {"v": 1}
    assert a.stats.protocol_errors == len(bad_frames)
    # Still fully functional afterwards.
    await b.put("objects", "after", 2)
    await mesh.settle()
    assert a.get("objects", "after") == 2
    # Frames from a peer that is not (or no longer) attached are ignored.
    a.receive("stranger", b"garbage")
    for s in (a, b):
        await s.close()


async def test_anti_entropy_repairs_dropped_updates(mesh: Mesh) -> None:
    settings = StateSettings(anti_entropy_interval=0.05)
    a, b = await open_states(2, settings)

    def drop_updates(frame: bytes) -> bool:
        return decode_state_message(frame).kind is SyncMessageKind.UPDATE

    mesh.link(a, "A", b, "B", drop=drop_updates)
    await mesh.settle()
    await a.put("objects", "lost-in-transit", 42)
    await mesh.settle()
    assert b.get("objects", "lost-in-transit") is None  # the update frame was dropped

    repaired = asyncio.Event()
    b.on_change(lambda m, keys, origin: repaired.set() if "lost-in-transit" in keys else None)
    await asyncio.wait_for(repaired.wait(), 5)
    assert b.get("objects", "lost-in-transit") == 42
    for s in (a, b):
        await s.close()


async def test_anti_entropy_rounds_reach_a_few_peers_each_in_turn() -> None:
    """A round sends step 1 to ``anti_entropy_fanout`` peers, round-robin: the cost per
    round does not grow with the node's degree, and every peer is still reached."""
    settings = StateSettings(anti_entropy_interval=0.05, anti_entropy_fanout=2)
    (node,) = await open_states(1, settings)
    step1s: dict[str, list[float]] = {p: [] for p in "ABCDE"}

    def recorder(peer: str) -> Callable[[bytes], None]:
        def send(frame: bytes) -> None:
            if decode_state_message(frame).kind is SyncMessageKind.STEP1:
                step1s[peer].append(asyncio.get_running_loop().time())

        return send

    for peer in step1s:
        node.attach_peer(peer, recorder(peer))
    for times in step1s.values():
        times.clear()  # the step 1 every attach sends
    await asyncio.sleep(0.05 * 10 + 0.02)  # ten rounds: twenty step 1s
    counts = sorted(len(times) for times in step1s.values())
    assert sum(counts) in (18, 20, 22)  # two per round, give or take a round of timing
    assert counts[0] >= 3 and counts[-1] <= 5  # in turn: each peer about every 2.5 rounds
    await node.close()


async def test_anti_entropy_waits_while_a_burst_arrives_not_for_small_updates() -> None:
    """While large updates keep arriving, rounds are postponed (a step 1 sent then is
    answered with what is still in flight), but at most ``anti_entropy_max_postponed`` in a
    row; small updates (statuses, leases) flowing all the time postpone nothing."""
    settings = StateSettings(
        anti_entropy_interval=0.05,
        anti_entropy_quiet=0.2,
        anti_entropy_max_postponed=3,
        anti_entropy_burst_bytes=1000,
        anti_entropy_fanout=0,
    )
    (writer,) = await open_states(1, QUIET)
    (node,) = await open_states(1, settings)
    updates: list[bytes] = []
    writer.attach_peer("N", updates.append)
    node.attach_peer("W", lambda frame: None)
    step1s: list[float] = []

    def observer(frame: bytes) -> None:
        if decode_state_message(frame).kind is SyncMessageKind.STEP1:
            step1s.append(asyncio.get_running_loop().time())

    node.attach_peer("O", observer)
    loop = asyncio.get_running_loop()

    async def feed(seconds: float, size: int) -> int:
        """Updates of ``size`` bytes every 10 ms for ``seconds``; the step 1s meanwhile."""
        step1s.clear()
        until, i = loop.time() + seconds, 0
        while loop.time() < until:
            await writer.put("objects", f"k{size}-{i}", "x" * size)
            for frame in updates:
                node.receive("W", frame)
            updates.clear()
            i += 1
            await asyncio.sleep(0.01)
        assert node.get("objects", f"k{size}-{i - 1}") == "x" * size
        return len(step1s)

    updates.clear()
    assert 3 <= await feed(1.0, 2000) <= 7  # twenty intervals: a round every fourth
    assert node.stats.anti_entropy_postponed >= 9
    await asyncio.sleep(0.25)  # the burst is over
    assert await feed(1.0, 10) >= 15  # small updates: a round at every interval
    for s in (writer, node):
        await s.close()


async def test_out_of_order_update_is_kept_pending_not_lost() -> None:
    a, b, c = await open_states(3)
    sent: list[bytes] = []
    relayed: list[bytes] = []
    a.attach_peer("B", sent.append)
    b.attach_peer("A", lambda frame: None)
    b.attach_peer("C", relayed.append)
    sent.clear()
    relayed.clear()
    await a.put("objects", "k", 1)
    await a.put("objects", "k", 2)  # depends on the first write (same key)
    first, second = sent
    b.receive("A", second)  # arrives before its dependency: pending, nothing relayed
    assert b.get("objects", "k") is None and relayed == []
    b.receive("A", first)
    assert b.get("objects", "k") == 2
    assert sv(a) == sv(b)
    # The integrating transaction carried the pending update along to C.
    c.attach_peer("B", lambda frame: None)
    for frame in relayed:
        c.receive("B", frame)
    assert c.get("objects", "k") == 2
    for s in (a, b, c):
        await s.close()


async def test_watchers_see_local_and_remote_changes(mesh: Mesh) -> None:
    a, b = await open_states(2)
    seen: list[tuple[str, set[str], object]] = []
    unsubscribe = b.on_change(lambda m, keys, origin: seen.append((m, keys, origin)))
    mesh.link(a, "A", b, "B")
    await a.put("objects", "w", 1)
    await b.put("status", "w", 2)
    await mesh.settle()
    assert ("objects", {"w"}, "A") in seen
    assert ("status", {"w"}, LOCAL) in seen
    unsubscribe()
    await a.put("objects", "w2", 1)
    await mesh.settle()
    assert all("w2" not in keys for _, keys, _ in seen)
    for s in (a, b):
        await s.close()


async def test_batch_is_one_update_and_validates_first() -> None:
    (a,) = await open_states(1)
    updates: list[bytes] = []
    a.attach_peer("X", updates.append)
    updates.clear()
    await a.put_many("objects", {f"k{i}": i for i in range(10)})
    assert len(updates) == 1
    with pytest.raises(TypeError):
        async with a.batch() as batch:
            batch.put("objects", "ok", 1)
            batch.put("objects", "bad", object())
    assert a.get("objects", "ok") is None
    with pytest.raises(UnknownMapError):
        async with a.batch() as batch:
            batch.put("nope", "k", 1)
    await a.close()
    with pytest.raises(RuntimeError):
        a.get("objects", "k0")


async def test_growth_measure_and_late_frames_after_close() -> None:
    (a,) = await open_states(1)
    (gone,) = await open_states(1, StateSettings(anti_entropy_interval=3600.0, tombstone_ttl=0.0))
    for s in (a, gone):
        for i in range(50):
            await s.put("objects", f"Pod/default/p{i}", POD)
            await s.delete("objects", f"Pod/default/p{i}")
        await s.put("objects", "live", POD)
    doc_bytes, live_bytes = a.measure_growth()
    assert doc_bytes > live_bytes > 0
    fresh = PycrdtStore()
    fresh.apply_update(a.encode_compacted_state(), "copy")
    # Young tombstones are kept by compaction: a peer holding an old value of a
    # deleted key must not be able to resurrect it.
    assert {k for k, _ in fresh.raw_items("objects")} == {
        "live",
        *(f"Pod/default/p{i}" for i in range(50)),
    }
    gone_doc, gone_live = gone.measure_growth()
    assert gone_live < live_bytes < doc_bytes and gone_live < gone_doc
    only_live = PycrdtStore()
    only_live.apply_update(gone.encode_compacted_state(), "copy")
    assert [k for k, _ in only_live.raw_items("objects")] == ["live"]  # expired: dropped
    assert gone.items("objects") == [("live", POD)]
    await gone.close()
    await a.close()
    # The transport may still deliver or link up while the agent shuts down.
    a.receive("B", b"anything")
    a.attach_peer("B", lambda frame: None)


def test_a_value_packed_once_encodes_to_the_same_version_bytes() -> None:
    """The commit path packs a value once (for its size check) and prefixes the stamp; the
    bytes must be exactly what encoding the whole version at once gives, for every size of
    stamp field (msgpack picks the shortest int encoding) and any value."""
    values = [None, 0, "x" * 300, {"spec": {"nodeName": "n1"}, "n": [1, 2.5, True]}, b"\x00" * 70]
    stamps = [Stamp(0, 0, 0), Stamp(127, 128, 255), Stamp(2**32, 65_535, 2**53 - 1)]
    for stamp in stamps:
        for value in values:
            packed = encode_packed_version(stamp, msgpack.packb(value, use_bin_type=True))
            assert packed == encode_version(stamp, value)
            assert packed == msgpack.packb(
                [stamp.wall, stamp.counter, stamp.writer, value], use_bin_type=True
            )
            assert decode_version(packed) == Version(stamp, False, value)
