"""Versioned values, last-writer-wins repair and generation compaction (real pycrdt)."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pycrdt import Doc, Map

from p2pkube.state import (
    GENESIS,
    LOCAL,
    SWITCH,
    ClusterState,
    Generation,
    HybridClock,
    Stamp,
    StateSettings,
    SyncProtocolError,
    Version,
)
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.sync import (
    EMPTY_STATE_VECTOR,
    decode_state_message,
    encode_state_message,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)
from p2pkube.state.versioned import (
    MAX_STAMP_INT,
    decode_version,
    encode_tombstone,
    encode_version,
    inspect_blob,
    read_stamp,
)

from .statenet import Mesh, contents, sv

T0 = 1_700_000_000.0


class FakeClock:
    """A settable wall clock (seconds since the epoch), shared by in-process nodes."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def quiet(**overrides: Any) -> StateSettings:
    """No anti-entropy, no background compaction unless asked for."""
    s = StateSettings(anti_entropy_interval=3600.0, compact_check_interval=3600.0)
    for name, value in overrides.items():
        setattr(s, name, value)
    return s


async def open_state(
    data_dir: Path | None = None,
    settings: StateSettings | None = None,
    clock: FakeClock | None = None,
) -> ClusterState:
    state = ClusterState(
        data_dir,
        settings or quiet(),
        wall_clock=clock or FakeClock(),
        store_factory=PycrdtStore,
    )
    await state.open()
    return state


@pytest.fixture
def client_ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Force the client ids of the next opened states (in order)."""
    ids: list[int] = []
    monkeypatch.setattr("p2pkube.state.cluster.new_client_id", lambda: ids.pop(0))
    yield ids


def pod(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "web:1.24.3", "args": ["-p", "80"]}]},
    }


# -- value format and clock -----------------------------------------------------------------
def test_value_format_is_plain_msgpack() -> None:
    stamp = Stamp(1_700_000_000_123, 2, 77)
    blob = encode_version(stamp, {"a": 1})
    # fixarray(4), uint64 wall, positive fixint counter, positive fixint writer, fixmap.
    assert blob == (
        b"\x94" + b"\xcf" + (1_700_000_000_123).to_bytes(8, "big") + b"\x02" + b"\x4d"
    ) + msgpack.packb({"a": 1})
    tomb = encode_tombstone(stamp)
    assert tomb[0] == 0x93 and tomb == msgpack.packb([1_700_000_000_123, 2, 77])
    assert decode_version(blob) == Version(stamp, False, {"a": 1})
    assert decode_version(tomb) == Version(stamp, True)
    assert decode_version(encode_version(stamp, None)) == Version(stamp, False, None)
    big = Stamp(MAX_STAMP_INT, MAX_STAMP_INT, MAX_STAMP_INT)
    assert decode_version(encode_version(big, 2**60)).value == 2**60
    for bad in [
        msgpack.packb([1, 2]),
        msgpack.packb([1, 2, 3, 4, 5]),
        msgpack.packb({"wall": 1}),
        msgpack.packb([True, 0, 1, "x"]),  # bool is not a stamp field
        msgpack.packb([1.5, 0, 1, "x"]),
        msgpack.packb([-1, 0, 1, "x"]),
        msgpack.packb([2**53, 0, 1, "x"]),  # not exact in a JS number
        msgpack.packb(["1", 0, 1]),
        b"\xc1",
        b"",
    ]:
        assert inspect_blob(bad) is None, bad
        with pytest.raises(ValueError):
            decode_version(bad)
    with pytest.raises(ValueError):
        encode_version(Stamp(2**53, 0, 1), "x")
    # Any unsigned width is accepted (another encoder may not pick the smallest).
    wide = b"\x94\xcf" + (5).to_bytes(8, "big") + b"\xcd\x00\x02" + b"\xcc\x07" + b"\xc0"
    assert decode_version(wide) == Version(Stamp(5, 2, 7), False, None)
    assert read_stamp(wide) == (Stamp(5, 2, 7), False)
    assert read_stamp(tomb + b"\x00") is None  # trailing bytes after a tombstone
    assert read_stamp(blob[:-4]) is None  # a value without its value
    assert read_stamp(blob[:-1]) == (stamp, False)  # value cut: still a version...
    assert inspect_blob(blob[:-1]) is None  # ...that reads as absent
    # The order is (wall, counter, writer): total.
    assert Stamp(1, 0, 9) < Stamp(1, 1, 0) < Stamp(2, 0, 0)
    assert Stamp(5, 5, 1).successor(2) == Stamp(5, 6, 2) > Stamp(5, 5, 1)
    assert Stamp(5, MAX_STAMP_INT, 1).successor(2) == Stamp(6, 0, 2)


def test_hybrid_clock_is_monotonic_and_bounds_skew() -> None:
    clock = FakeClock(1000.0)
    hlc = HybridClock(clock, max_skew_ms=60_000)
    assert hlc.now() == (1_000_000, 0)
    assert hlc.now() == (1_000_000, 1)
    clock.now = 999.0  # the wall clock steps back: stamps do not
    assert hlc.now() == (1_000_000, 2)
    hlc.observe(1_000_500, 7)
    assert hlc.now() == (1_000_500, 8)
    clock.now = 1001.0
    assert hlc.now() == (1_001_000, 0)
    hlc.observe(9_000_000, 3)  # a peer two hours ahead: followed to now + 30 s (skew / 2)
    assert hlc.clamped == 1 and hlc.state == (1_031_000, 0)
    assert hlc.beyond_bound(1_061_001) and not hlc.beyond_bound(1_061_000)
    restored = HybridClock(FakeClock(1_020.0), max_skew_ms=60_000)
    restored.restore(*hlc.state)  # our own past: the clock stepped back 11 s, stamps do not
    assert restored.now() == (1_031_000, 1) and restored.lowered == 0
    ahead = HybridClock(FakeClock(10.0), max_skew_ms=60_000)
    ahead.restore(*hlc.state)  # restored from a run whose clock was 17 minutes ahead:
    assert ahead.now() == (40_000, 1)  # never issues a stamp no peer would take
    assert ahead.lowered == 1 and ahead.now() == (40_000, 2)


def test_store_reports_old_and_new_blob_per_entry() -> None:
    store = PycrdtStore()
    seen: list[tuple[str, str, bytes | None, bytes | None, object]] = []
    store.on_entry_change(lambda m, k, old, new, origin: seen.append((m, k, old, new, origin)))
    store.put_raw("objects", "k", b"one")
    store.put_raw("objects", "k", b"two")
    store.delete("objects", "k")
    assert seen == [
        ("objects", "k", None, b"one", LOCAL),
        ("objects", "k", b"one", b"two", LOCAL),
        ("objects", "k", b"two", None, LOCAL),
    ]
    # A concurrent write that loses in Yjs changes nothing visible: no event.
    low, high = PycrdtStore(client_id=1), PycrdtStore(client_id=2)
    high.put_raw("objects", "k", b"high")
    low.put_raw("objects", "k", b"low")
    seen.clear()
    high.on_entry_change(lambda m, k, old, new, origin: seen.append((m, k, old, new, origin)))
    high.apply_update(low.encode_state(), "peer")
    assert seen == [] and high.get_raw("objects", "k") == b"high"
    low.on_entry_change(lambda m, k, old, new, origin: seen.append((m, k, old, new, origin)))
    low.apply_update(high.encode_state(), "peer")
    assert seen == [("objects", "k", b"low", b"high", "peer")]
    with pytest.raises(TypeError):
        store.put_raw("objects", "k", bytearray(b"x"))  # type: ignore[arg-type]


# -- last writer wins by timestamp ---------------------------------------------------------------
def test_yjs_alone_lets_the_higher_client_id_win() -> None:
    """The problem being repaired: a later write loses to a concurrent one of a higher id."""
    low, high = Doc(client_id=1), Doc(client_id=2)
    for doc in (low, high):
        doc["objects"] = Map()
    high["objects"]["k"] = b"earlier"
    low["objects"]["k"] = b"later"
    low.apply_update(high.get_update(low.get_state()))
    high.apply_update(low.get_update(high.get_state()))
    assert low["objects"]["k"] == high["objects"]["k"] == b"earlier"


async def test_concurrent_write_with_later_stamp_wins(mesh: Mesh, client_ids: list[int]) -> None:
    clock = FakeClock()
    client_ids.extend([1, 2, 3])
    a, b, c = [await open_state(clock=clock) for _ in range(3)]
    assert (a.client_id, b.client_id, c.client_id) == (1, 2, 3)
    await c.put("objects", "k", "c-first")
    clock.advance(1)
    await b.put("objects", "k", "b-second")
    await b.put("status", "gone", {"x": 1})
    clock.advance(1)
    await a.put("objects", "k", "a-last")  # lowest client id, latest stamp
    await a.put("status", "gone", {"x": 2})
    clock.advance(1)
    await b.delete("status", "gone")  # higher client id, latest stamp: the delete wins
    mesh.link(a, "A", b, "B")
    mesh.link(b, "B", c, "C")
    await mesh.settle()
    for s in (a, b, c):
        assert s.get("objects", "k") == "a-last"
        assert s.get("status", "gone") is None
        version = s.version("status", "gone")
        assert version is not None and version.tombstone
    assert contents(a) == contents(b) == contents(c)
    assert sv(a) == sv(b) == sv(c)
    assert sum(s.stats.lww_repairs for s in (a, b, c)) >= 1
    for s in (a, b, c):
        await s.close()


async def test_write_overwrites_a_value_from_a_clock_ahead(
    mesh: Mesh, client_ids: list[int]
) -> None:
    client_ids.extend([5, 4])
    fast = await open_state(clock=FakeClock(T0 + 50))  # 50 s ahead: within max_clock_skew
    normal = await open_state(clock=FakeClock())
    mesh.link(fast, "F", normal, "N")
    await fast.put("objects", "k", "from-the-future")
    await mesh.settle()
    assert normal.get("objects", "k") == "from-the-future"
    assert normal.stats.clock_skew_clamps == 1  # followed only to now + 30 s
    await normal.put("objects", "k", "overwrite")  # made after seeing it: must win
    await normal.put("objects", "other", 1)
    await mesh.settle()
    assert fast.get("objects", "k") == normal.get("objects", "k") == "overwrite"
    # Our clock was not dragged 50 s ahead: only the overwritten key's stamp was.
    other = normal.version("objects", "other")
    assert other is not None and other.stamp.wall == (T0 + 30) * 1000
    assert await normal.delete("objects", "k")
    await mesh.settle()
    assert fast.get("objects", "k") is None
    for s in (fast, normal):
        await s.close()


async def test_a_value_from_a_clock_a_day_ahead_is_refused(mesh: Mesh) -> None:
    """More than max_clock_skew ahead: refused, and the key stays writable (test_state_admission
    has the hostile variants)."""
    fast = await open_state(clock=FakeClock(T0 + 86_400))
    normal = await open_state(clock=FakeClock())
    await normal.put("objects", "k", "before")
    mesh.link(fast, "F", normal, "N")
    await mesh.settle()
    await fast.put("objects", "k", "from-the-future")
    await mesh.settle()
    assert normal.get("objects", "k") == "before"
    assert normal.stats.refused_future_stamps == 1 and normal.stats.refusals_by_peer == {"F": 1}
    await normal.put("objects", "k", "overwrite")
    assert normal.get("objects", "k") == "overwrite"
    assert normal.stats.clock_skew_clamps == 0  # nothing dragged our clock
    for s in (fast, normal):
        await s.close()


async def test_delete_is_a_tombstone_that_stops_resurrection(mesh: Mesh) -> None:
    clock = FakeClock()
    a, b = await open_state(clock=clock), await open_state(clock=clock)
    mesh.link(a, "A", b, "B")
    await a.put("objects", "k", "v1")
    await mesh.settle()
    b.detach_peer("A")
    a.detach_peer("B")
    clock.advance(1)
    assert await a.delete("objects", "k") is True
    assert await a.delete("objects", "k") is False  # already deleted: nothing written
    assert a.get("objects", "k") is None and a.keys("objects") == []
    assert a.stats.tombstones == 1
    # b still holds v1 and even re-writes it with an *older* stamp (its clock lags).
    lagging = Version(Stamp(int(T0 * 1000) - 5000, 0, b.client_id), False, "stale")
    b.store.put_raw("objects", "k", encode_version(lagging.stamp, "stale"))
    mesh2 = Mesh()
    mesh2.link(a, "A", b, "B")
    await mesh2.settle()
    assert a.get("objects", "k") is None and b.get("objects", "k") is None
    await mesh2.close()
    for s in (a, b):
        await s.close()


# -- generations -----------------------------------------------------------------------------------
async def churn(state: ClusterState, n: int, prefix: str = "p") -> None:
    for i in range(n):
        await state.put("objects", f"Pod/default/{prefix}{i}", pod(f"{prefix}{i}"))
        await state.delete("objects", f"Pod/default/{prefix}{i}")


async def test_compaction_switches_every_peer(mesh: Mesh) -> None:
    clock = FakeClock()
    settings = quiet(tombstone_ttl=10.0)
    a, b, c = [await open_state(settings=settings, clock=clock) for _ in range(3)]
    mesh.link(a, "A", b, "B")
    mesh.link(b, "B", c, "C")
    seen: list[tuple[str, set[str], object]] = []
    c.on_change(lambda m, keys, origin: seen.append((m, keys, origin)))
    await churn(a, 300)
    await a.put("objects", "keep", {"v": 1})
    await b.put("status", "keep", {"phase": "Running"})
    await mesh.settle()
    before = a.stats.doc_size
    clock.advance(11)  # every tombstone expired
    generation = await a.compact()
    assert generation == Generation(1, a.client_id) == a.generation
    await mesh.settle()
    for s in (a, b, c):
        assert s.generation == generation
        assert s.stats.doc_size < before / 10
        assert s.stats.tombstones == 0
    assert contents(a) == contents(b) == contents(c)
    assert a.get("objects", "keep") == {"v": 1} and c.get("status", "keep") == {"phase": "Running"}
    assert a.stats.compactions == 1 and c.stats.compactions == 0
    assert c.stats.generation_switches == 1
    assert not [s for s in seen if s[2] is SWITCH]  # nothing visible changed for c
    # Life goes on in the new generation.
    await c.put("objects", "after", 1)
    await mesh.settle()
    assert a.get("objects", "after") == 1
    d = c.stats_dict()
    assert d["generation"] == 1 and d["generationId"] == str(generation)
    for key in ("docSize", "liveSize", "compactions", "generationSwitches", "tombstones"):
        assert key in d, key
    assert "syncStep2BytesReceived" in d and "stateVector" in d
    for s in (a, b, c):
        await s.close()


async def test_maybe_compact_respects_thresholds_and_the_compactor_choice() -> None:
    clock = FakeClock()
    allowed = [False]
    settings = quiet(compact_min_bytes=20_000, compact_ratio=2.0, tombstone_ttl=5.0)
    s = ClusterState(
        None,
        settings,
        is_compactor=lambda: allowed[0],
        wall_clock=clock,
        store_factory=PycrdtStore,
    )
    await s.open()
    for i in range(20):
        await s.put("objects", f"k{i}", "x" * 500)
    assert not s.maybe_compact()  # under the floor
    await churn(s, 300)
    doc, live = s.measure_growth()
    assert doc > 20_000 and doc < 2 * live  # young tombstones count as live
    assert not s.maybe_compact()
    clock.advance(6)
    assert not s.maybe_compact()  # not the compactor
    allowed[0] = True
    assert s.maybe_compact()
    assert s.generation.number == 1 and s.stats.compactions == 1
    assert not s.maybe_compact()  # just compacted: the ratio is ~1
    assert len(s.keys("objects")) == 20
    await s.close()


@pytest.mark.slow  # ~10 s of churn: left out of make test-fast
async def test_churn_stays_bounded_and_peers_converge(mesh: Mesh) -> None:
    """10,000 create/status/delete cycles on a 3-peer chain, every node eligible to
    compact (so concurrent compactions happen too), compaction in the background."""
    clock = FakeClock()
    floor = 32 * 1024
    settings = StateSettings(
        anti_entropy_interval=3600.0,
        compact_check_interval=0.002,
        compact_min_bytes=floor,
        compact_ratio=2.0,
        tombstone_ttl=100.0,  # 100 cycles of fake time; peers settle every 50
    )
    states = [
        ClusterState(None, settings, wall_clock=clock, store_factory=PycrdtStore) for _ in range(3)
    ]
    for s in states:
        await s.open()
    a, b, c = states
    mesh.link(a, "A", b, "B")
    mesh.link(b, "B", c, "C")
    live: deque[str] = deque()
    worst = 0.0
    max_doc = 0
    for i in range(10_000):
        key = f"Pod/default/web-{i:05d}"
        await states[i % 3].put("objects", key, pod(key))
        await states[(i + 1) % 3].put("status", key, {"phase": "Running", "podIP": f"10.0.0.{i}"})
        live.append(key)
        if len(live) > 100:
            old = live.popleft()
            async with states[(i + 2) % 3].batch() as batch:
                batch.delete("objects", old)
                batch.delete("status", old)
        clock.advance(1.0)
        if i % 50 == 49:
            await mesh.settle()
            for s in states:
                doc, live_bytes = s.measure_growth()
                max_doc = max(max_doc, doc)
                worst = max(worst, (doc - floor) / live_bytes)
                assert doc < 3 * live_bytes + floor, (i, doc, live_bytes)
    await mesh.settle()
    assert a.generation == b.generation == c.generation
    assert a.generation.number >= 5
    assert contents(a) == contents(b) == contents(c)
    assert sorted(a.keys("objects")) == sorted(live) == sorted(a.keys("status"))
    assert a.get("objects", live[-1]) == pod(live[-1])
    print(
        f"churn: generation {a.generation}, compactions "
        f"{[s.stats.compactions for s in states]}, max doc {max_doc}, final "
        f"{a.measure_growth()}, worst (doc - floor) / live {worst:.2f}"
    )
    for s in states:
        await s.close()


@pytest.mark.parametrize("seed", range(6))
async def test_writes_during_a_switch_converge_to_the_newest_version(mesh: Mesh, seed: int) -> None:
    """A compacts (and B too, for odd seeds) while B and C write, overwrite and delete
    keys the new generation holds; frames are delivered in between every few ops."""
    rng = random.Random(seed)
    clock = FakeClock()
    a, b, c = [await open_state(clock=clock) for _ in range(3)]
    mesh.link(a, "A", b, "B")
    mesh.link(b, "B", c, "C")
    if seed % 3 == 0:
        mesh.link(a, "A", c, "C")
    acked: dict[tuple[str, str], list[Version]] = {}

    def record(state: ClusterState, map_name: str, key: str) -> None:
        version = state.version(map_name, key)
        assert version is not None
        acked.setdefault((map_name, key), []).append(version)

    for i in range(60):
        await a.put("objects", f"k{i}", {"base": i})
        record(a, "objects", f"k{i}")
    await mesh.settle()

    async def writer(state: ClusterState, name: str) -> None:
        for n in range(150):
            key = f"k{rng.randrange(90)}"
            map_name = rng.choice(["objects", "objects", "status"])
            if rng.random() < 0.3:
                if await state.delete(map_name, key):
                    record(state, map_name, key)
            else:
                await state.put(map_name, key, {"by": name, "n": n})
                record(state, map_name, key)
            if rng.random() < 0.1:
                clock.advance(rng.choice([0.0, 0.001, 0.5]))
            if rng.random() < 0.3:
                await asyncio.sleep(0)  # let some frames through mid-switch

    async def compactor() -> None:
        for _ in range(rng.randrange(2, 6)):
            await asyncio.sleep(0)
        await a.compact()
        if seed % 2:
            for _ in range(rng.randrange(0, 20)):
                await asyncio.sleep(0)
            await b.compact()

    await asyncio.gather(writer(b, "b"), writer(c, "c"), compactor())
    await mesh.settle()
    assert a.generation == b.generation == c.generation != GENESIS
    assert contents(a) == contents(b) == contents(c)
    for (map_name, key), versions in acked.items():
        newest = max(versions, key=lambda v: v.stamp)
        for s in (a, b, c):
            # No acknowledged write lost, no deleted key resurrected: the newest wins.
            assert s.version(map_name, key) == newest, (map_name, key)
    for s in (a, b, c):
        await s.close()


async def test_two_compactors_converge_on_the_max_generation(mesh: Mesh) -> None:
    a, b, c = [await open_state() for _ in range(3)]
    mesh.link(a, "A", b, "B")
    mesh.link(b, "B", c, "C")
    await churn(a, 50)
    await mesh.settle()
    ga = await a.compact()  # no frame is delivered in between: truly concurrent
    gb = await b.compact()
    assert ga.number == gb.number == 1 and ga != gb
    await a.put("objects", "written-in-a-gen", 1)
    await b.put("objects", "written-in-b-gen", 2)
    await mesh.settle()
    winner = max(ga, gb)
    for s in (a, b, c):
        assert s.generation == winner
        assert s.get("objects", "written-in-a-gen") == 1
        assert s.get("objects", "written-in-b-gen") == 2
    assert contents(a) == contents(b) == contents(c)
    for s in (a, b, c):
        await s.close()


async def test_offline_peer_reopens_old_generation_and_carries_its_writes(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    a, b, c = [await open_state(tmp_path / n, clock=clock) for n in "abc"]
    mesh = Mesh()
    mesh.link(a, "A", b, "B")
    mesh.link(b, "B", c, "C")
    for i in range(10):
        await a.put("objects", f"shared-{i}", {"v": i})
    await churn(a, 100)
    await mesh.settle()
    await c.flush()
    # c loses its link, writes while alone (never synced), then shuts down.
    for s, peer in ((b, "C"), (c, "B")):
        s.detach_peer(peer)
    clock.advance(1)
    await c.put("objects", "c-offline", "only-on-c")
    await c.put("objects", "shared-1", "c-overwrite")
    assert await c.delete("objects", "shared-2")
    await c.close()
    # Meanwhile the others compact and keep writing.
    clock.advance(1)
    generation = await a.compact()
    await b.delete("objects", "shared-3")  # c still holds its old value
    await b.put("objects", "shared-4", "b-newer")
    await mesh.settle()
    await mesh.close()
    assert b.generation == generation
    c2 = await open_state(tmp_path / "c", clock=clock)
    assert c2.generation == GENESIS  # reopened from disk on the old generation
    assert c2.get("objects", "c-offline") == "only-on-c" and c2.get("objects", "shared-3")
    mesh2 = Mesh()
    mesh2.link(b, "B", c2, "C")
    mesh2.link(a, "A", b, "B")
    await mesh2.settle()
    for s in (a, b, c2):
        assert s.generation == generation
        assert s.get("objects", "c-offline") == "only-on-c"
        assert s.get("objects", "shared-1") == "c-overwrite"
        assert s.get("objects", "shared-2") is None
        assert s.get("objects", "shared-3") is None  # not resurrected by c's old value
        assert s.get("objects", "shared-4") == "b-newer"
    assert contents(a) == contents(b) == contents(c2)
    await c2.flush()
    await mesh2.close()
    await c2.close()
    c3 = await open_state(tmp_path / "c", clock=clock)
    assert c3.generation == generation and c3.get("objects", "c-offline") == "only-on-c"
    for s in (a, b, c3):
        await s.close()


async def test_peer_offline_longer_than_the_tombstone_ttl_resurrects(tmp_path: Path) -> None:
    """The documented limit (like Cassandra's gc_grace_seconds), shown rather than hidden:
    a tombstone younger than the ttl stops an offline peer's old value, an older one
    has been compacted away and cannot."""
    clock = FakeClock()
    settings = quiet(tombstone_ttl=3600.0)
    a = await open_state(tmp_path / "a", settings, clock)
    c = await open_state(tmp_path / "c", settings, clock)
    mesh = Mesh()
    mesh.link(a, "A", c, "C")
    await a.put("objects", "short", 1)
    await a.put("objects", "long", 1)
    await mesh.settle()
    await mesh.close()
    a.detach_peer("C")
    await c.close()
    clock.advance(1)
    await a.delete("objects", "long")
    clock.advance(1800)
    await a.delete("objects", "short")
    clock.advance(2000)  # "long" was deleted 3800 s ago, "short" 2000 s ago
    await a.compact()
    assert a.version("objects", "long") is None  # tombstone dropped
    short = a.version("objects", "short")
    assert short is not None and short.tombstone  # tombstone kept
    c2 = await open_state(tmp_path / "c", settings, clock)
    mesh = Mesh()
    mesh.link(a, "A", c2, "C")
    await mesh.settle()
    for s in (a, c2):
        assert s.get("objects", "short") is None
        assert s.get("objects", "long") == 1  # resurrected: c was away longer than the ttl
    await mesh.close()
    for s in (a, c2):
        await s.close()


async def test_watchers_see_keys_a_switch_changed(mesh: Mesh) -> None:
    clock = FakeClock()
    a, b = await open_state(clock=clock), await open_state(clock=clock)
    mesh.link(a, "A", b, "B")
    await a.put("objects", "k", "v1")
    await a.put("objects", "same", "s")
    await mesh.settle()
    a.detach_peer("B")
    b.detach_peer("A")
    clock.advance(1)
    await a.put("objects", "k", "v2")
    await a.compact()
    seen: list[tuple[str, set[str], object]] = []
    b.on_change(lambda m, keys, origin: seen.append((m, keys, origin)))
    mesh2 = Mesh()
    mesh2.link(a, "A", b, "B")
    await mesh2.settle()
    assert b.get("objects", "k") == "v2" and b.generation == a.generation
    assert ("objects", {"k"}, SWITCH) in seen
    assert all("same" not in keys for _, keys, _ in seen)
    await mesh2.close()
    for s in (a, b):
        await s.close()


# -- hostile input -------------------------------------------------------------------------------
async def test_newer_generation_frames_are_fetched_not_trusted() -> None:
    a = await open_state()
    await a.put("objects", "k", "v")
    sent: list[bytes] = []
    a.attach_peer("X", sent.append)
    a.attach_peer("Y", lambda frame: None)
    sent.clear()
    before = a.store.encode_state()
    newer = Generation(3, 12345)
    # An unsolicited step 2 of a newer generation is not applied: we ask for the document.
    other = PycrdtStore()
    other.put_raw("objects", "evil", encode_version(Stamp(1, 0, 1), "x"))
    a.receive("X", encode_state_message(newer, encode_sync_step2(other.encode_state())))
    assert a.generation == GENESIS and a.get("objects", "evil") is None
    (ask,) = sent
    frame = decode_state_message(ask)
    assert frame.generation == newer and frame.payload == EMPTY_STATE_VECTOR
    # Only one outstanding request: more frames of that generation ask nothing more.
    a.receive("X", encode_state_message(newer, encode_update(b"\x00\x00")))
    assert len(sent) == 1 and a.stats.generation_fetches == 1
    # The answer must come from the peer asked.
    a.receive("Y", encode_state_message(newer, encode_sync_step2(other.encode_state())))
    assert a.generation == GENESIS
    # A garbage answer raises and leaves the state as it was; the request is dropped.
    with pytest.raises(SyncProtocolError):
        a.receive("X", encode_state_message(newer, encode_sync_step2(b"\x01\xff\xff\xff")))
    assert a.generation == GENESIS and a.store.encode_state() == before
    a.receive("X", encode_state_message(newer, encode_sync_step1(b"\x00")))
    assert len(sent) == 2  # asked again
    # A frame of an older generation is answered with our step 1 (rate-limited).
    a.receive("X", encode_state_message(newer, encode_sync_step2(other.encode_state())))
    assert a.generation == newer and a.get("objects", "k") == "v"  # carried over
    sent.clear()
    for _ in range(3):
        a.receive("X", encode_state_message(GENESIS, encode_update(b"\x00\x00")))
    assert len(sent) == 1 and decode_state_message(sent[0]).generation == newer
    assert a.stats.stale_frames == 3
    await a.close()


# -- persistence --------------------------------------------------------------------------------
async def test_generation_and_clock_survive_reopen(tmp_path: Path) -> None:
    clock = FakeClock()
    a = await open_state(tmp_path, clock=clock)
    await churn(a, 20)
    await a.put("objects", "k", "v")
    generation = await a.compact()
    await a.put("objects", "after", 1)
    last = a.version("objects", "after")
    assert last is not None
    await a.close()
    clock.advance(-20)  # the wall clock stepped back 20 s across the restart
    b = await open_state(tmp_path, clock=clock)
    assert b.generation == generation
    assert b.get("objects", "k") == "v" and b.get("objects", "after") == 1
    await b.put("objects", "next", 2)
    nxt = b.version("objects", "next")
    assert nxt is not None and nxt.stamp > last.stamp  # stamps did not go backwards
    await b.close()
    # Stepped back an hour: stamps resume at wall clock + max_clock_skew / 2 (a stamp an
    # hour ahead would be refused by every peer); the versions written "in the future" are
    # still overwritten and deleted by new writes.
    clock.advance(-3600)
    c = await open_state(tmp_path, clock=clock)
    await c.put("objects", "k", "v2")
    assert await c.delete("objects", "after")
    await c.put("objects", "next2", 3)
    for key in ("k", "after", "next2"):
        version = c.version("objects", key)
        assert version is not None and version.stamp.wall <= (clock.now + 30) * 1000
    assert c.get("objects", "k") == "v2" and c.get("objects", "after") is None
    assert c.stats.clock_lowered == 1 and c.stats.future_versions_ignored == 2
    await c.close()


async def test_crash_between_switch_snapshot_and_log_reset(tmp_path: Path) -> None:
    """A new generation's snapshot next to the previous generation's log: the log
    must be discarded, not replayed into the new document."""
    compacted = await open_state(tmp_path / "new")
    await compacted.put("objects", "in-new", 1)
    generation = await compacted.compact()
    await compacted.close()
    old = await open_state(tmp_path / "old")
    await old.put("objects", "only-in-old-log", 1)
    await old.close()
    state_dir = tmp_path / "old" / "state"
    assert (state_dir / "updates.log").stat().st_size > 100
    (state_dir / "snapshot.bin").write_bytes((tmp_path / "new/state/snapshot.bin").read_bytes())
    s = await open_state(tmp_path / "old")
    assert s.generation == generation
    assert s.get("objects", "in-new") == 1 and s.get("objects", "only-in-old-log") is None
    await s.put("objects", "later", 2)
    await s.close()
    s = await open_state(tmp_path / "old")
    assert s.get("objects", "later") == 2 and s.generation == generation
    await s.close()


async def test_unversioned_data_dir_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "snapshot.bin").write_bytes(b"P2PKSNP1" + b"\x00" * 12)
    from p2pkube.state import PersistenceError

    with pytest.raises(PersistenceError, match="format 1"):
        await open_state(tmp_path)
    (state_dir / "snapshot.bin").unlink()
    s = await open_state(tmp_path)  # the log was created with a header: reopenable
    await s.put("objects", "k", 1)
    await s.close()
    s = await open_state(tmp_path)
    assert s.get("objects", "k") == 1
    await s.close()


async def test_repair_lost_in_a_crash_is_redone_at_load(
    tmp_path: Path, client_ids: list[int]
) -> None:
    """Yjs let an older version win and the repair was not yet durable: the log holds
    each update as its own record, so the replay sees the same drop and repairs again."""
    clock = FakeClock()
    client_ids.extend([1, 2, 3, 4])
    a = await open_state(tmp_path, clock=clock)
    b = await open_state(clock=FakeClock(T0 - 10))  # a lagging clock and a higher id
    await a.put("objects", "k", "newest")
    sent: list[bytes] = []
    b.attach_peer("A", sent.append)
    await b.put("objects", "k", "older")
    a.attach_peer("B", lambda frame: None)
    a.receive("B", sent[-1])
    assert a.get("objects", "k") == "newest" and a.stats.lww_repairs == 1
    await a.close()
    await b.close()
    log_path = tmp_path / "state" / "updates.log"
    data = log_path.read_bytes()
    records = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "little")
        records.append(data[pos : pos + 8 + length])
        pos += 8 + length
    updates = [i for i, r in enumerate(records) if b"P2PKCLK2" not in r and b"P2PKLOG2" not in r]
    assert len(updates) == 3  # a's write, b's write, the repair (+ header, clock records)
    del records[updates[-1]]  # the repair never reached the disk
    log_path.write_bytes(b"".join(records))
    a2 = await open_state(tmp_path, clock=clock)
    assert a2.get("objects", "k") == "newest" and a2.stats.lww_repairs == 1
    await a2.close()
    a3 = await open_state(tmp_path, clock=clock)  # and the redone repair was persisted
    assert a3.get("objects", "k") == "newest" and a3.stats.lww_repairs == 0
    await a3.close()
