"""What a peer may put into our document (issue 10, "one member's damage is bounded"):
stamps beyond now + max_clock_skew, values over max_object_bytes, update bytes over a
link's budget. In-process states and hand-made hostile updates; the same attacks against
real agents are in test_state_trust_cluster.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from p2pkube.state import (
    GENESIS,
    ClusterState,
    StateSettings,
    SyncProtocolError,
    ValueTooLarge,
)
from p2pkube.state.admission import LinkBudget, TokenBucket, check_update
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.sync import encode_state_message, encode_sync_step2, encode_update
from p2pkube.state.versioned import MAX_STAMP_INT, Stamp, encode_version
from p2pkube.state.yupdate import MAX_ANY_DEPTH, UpdateFormatError, update_values

from .statenet import Mesh, contents
from .test_state_compaction import T0, FakeClock

FOREVER = Stamp(MAX_STAMP_INT, MAX_STAMP_INT, 4242)
"""The stamp of the issue: no write could ever order after it."""

YJS_UPDATE = bytes.fromhex(
    "010609002101076f626a65637473016101a309000293042801076f626a656374730173017703737472"
    "080103617272037701787d017601016175027d017d02040101740b68c3a96c6c6f20f09f8e89070101"
    "660301700109010001"
)
"""`Y.encodeStateAsUpdate` of a JS yjs document (yjs 13.6): a map value set twice (binary
content), a string map value, an array of any values, a text with a 4-byte emoji (its
length counts UTF-16 units) and an XML element (a named type). Produced with node."""


def settings(**overrides: Any) -> StateSettings:
    s = StateSettings(anti_entropy_interval=3600.0, compact_check_interval=3600.0)
    for name, value in overrides.items():
        setattr(s, name, value)
    return s


async def open_state(clock: FakeClock | None = None, **overrides: Any) -> ClusterState:
    state = ClusterState(
        None,
        settings(**overrides),
        wall_clock=clock or FakeClock(),
        store_factory=PycrdtStore,
    )
    await state.open()
    return state


def hostile_update(base: ClusterState | None, writes: dict[str, bytes]) -> bytes:
    """What a member that ignores every rule sends: a document synced from `base` (so that
    its writes overwrite what is there, as an honest overwrite would), then raw blobs."""
    store = PycrdtStore(client_id=4242)
    if base is not None:
        store.apply_update(base.store.encode_state(), "sync")
    updates: list[bytes] = []
    store.on_update(lambda update, origin: updates.append(update))
    with store.transaction():
        for key, blob in writes.items():
            store.put_raw("objects", key, blob)
    (update,) = updates
    return update


def refusal_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "p2pkube.state.cluster"
    ]


# -- reading updates ------------------------------------------------------------------------------
def test_update_values_reads_pycrdt_and_yjs_updates() -> None:
    store = PycrdtStore(client_id=7)
    store.put_raw("objects", "a", b"one")
    store.put_raw("objects", "a", b"two")  # an overwrite names only the item it follows
    store.delete("objects", "a")
    store.put_raw("status", "b", b"three")
    values = update_values(store.encode_state())
    assert [v.blob for v in values] == [b"three"]  # deleted content is not in a full state
    assert [(v.client, v.blob) for v in update_values(YJS_UPDATE)] == [(9, b"\x93\x04")]
    diff = PycrdtStore(client_id=8)
    diff.apply_update(store.encode_state(), "x")
    sv = diff.state_vector()
    diff.put_raw("objects", "a", b"four")
    (value,) = update_values(diff.encode_diff(sv))
    assert value.client == 8 and value.blob == b"four"


@pytest.mark.parametrize(
    "update",
    [
        b"",
        b"\x01\x01\x07\x00",  # a struct announced, none there
        b"\x00\x00\x00",  # a trailing byte after an empty update
        b"\x01\x01\x07\x00\x2b\x01\x07objects\x01k\x00",  # content type 11 does not exist
        b"\x01\x01\xff\xff\xff\xff\xff\xff\xff\xff\x7f",  # a client id beyond 2**53
        # A value nested deeper than any reader's stack should have to go:
        b"\x01\x01\x07\x00\x28\x01\x07objects\x01k\x01" + b"\x75\x01" * (MAX_ANY_DEPTH + 1),
    ],
)
def test_update_values_refuses_what_it_cannot_account_for(update: bytes) -> None:
    with pytest.raises(UpdateFormatError):
        update_values(update)


def test_check_update_finds_stamps_ahead_and_oversize_values() -> None:
    now = int(T0 * 1000)
    ok = encode_version(Stamp(now + 59_000, 0, 1), "v")
    ahead = encode_version(Stamp(now + 61_000, 0, 1), "v")
    big = encode_version(Stamp(now, 0, 1), "x" * 998)  # 1,001 bytes of msgpack
    limits = {"wall_ms": now, "max_skew_ms": 60_000, "max_value_bytes": 1000}
    fits = encode_version(Stamp(now, 0, 1), "x" * 997)
    assert check_update(hostile_update(None, {"k": ok, "f": fits, "g": b"junk"}), **limits) is None
    refusal = check_update(hostile_update(None, {"k": ok, "l": ahead}), **limits)
    assert refusal is not None and refusal.kind.value == "future-stamp"
    assert "61.0 s ahead" in str(refusal) and refusal.client == 4242
    refusal = check_update(hostile_update(None, {"k": big}), **limits)
    assert refusal is not None and refusal.kind.value == "oversize" and "1,000-byte" in str(refusal)


def test_token_bucket_and_link_budget() -> None:
    bucket = TokenBucket(rate=100, burst=1000)
    now = bucket.updated
    assert bucket.take(900, now) and not bucket.take(200, now)
    assert bucket.take(200, now + 1.0)  # refilled 100
    assert not bucket.take(1, now + 1.0)
    assert bucket.take(5000, now + 1.0, borrow=True)  # not in debt: may borrow
    assert not bucket.take(1, now + 10.0, borrow=True)  # in debt: nothing until repaid
    assert bucket.take(1, now + 60.0) and bucket.tokens <= 1000
    budget = LinkBudget(TokenBucket(rate=0, burst=10))
    assert not budget.admit(100, step2=True, now=0)  # a step 2 nobody asked for: tokens
    budget.asked()
    assert budget.admit(100, step2=True, now=0)  # the answer to our step 1: borrows
    budget.asked()
    assert not budget.admit(100, step2=True, now=0)  # ...but not while in debt
    for _ in range(10):
        budget.asked()
    assert budget.unanswered_step1 == 4  # no credit banked beyond a few


# -- stamps ---------------------------------------------------------------------------------------
async def test_a_value_stamped_forever_is_refused_and_the_key_stays_writable(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's attack: an overwrite stamped (2**53 - 1, 2**53 - 1). Refused, counted and
    logged with the link; not relayed; honest writes and deletes of the key still work."""
    node, relay = await open_state(), await open_state()
    mesh.link(node, "N", relay, "R")
    await node.put("objects", "ConfigMap/default/target", {"data": "honest"})
    await mesh.settle()
    node.attach_peer("H", lambda frame: None)
    poison = hostile_update(node, {"ConfigMap/default/target": encode_version(FOREVER, "evil")})
    node.receive("H", encode_state_message(GENESIS, encode_update(poison)))
    # ... and as the answer we asked
    node.receive("H", encode_state_message(GENESIS, encode_sync_step2(poison)))
    await mesh.settle()
    for state in (node, relay):
        assert state.get("objects", "ConfigMap/default/target") == {"data": "honest"}
    stats = node.stats
    assert stats.refused_future_stamps == 2 and stats.refusals_by_peer == {"H": 2}
    (line,) = refusal_logs(caplog)  # the second refusal is folded into the next report
    assert "from peer H" in line and "stamped" in line and "max_clock_skew" in line
    await relay.put("objects", "ConfigMap/default/target", {"data": "updated"})
    await mesh.settle()
    assert node.get("objects", "ConfigMap/default/target") == {"data": "updated"}
    assert await node.delete("objects", "ConfigMap/default/target")
    await mesh.settle()
    assert relay.get("objects", "ConfigMap/default/target") is None
    version = relay.version("objects", "ConfigMap/default/target")
    assert version is not None and version.stamp.wall < (T0 + 60) * 1000
    for state in (node, relay):
        await state.close()


async def test_a_value_refused_for_clocks_apart_is_taken_once_within_the_bound(
    mesh: Mesh,
) -> None:
    """70 s ahead: refused; 15 s later it is within max_clock_skew, and the sender's next
    anti-entropy answer brings it (a refusal is not a fork)."""
    clock = FakeClock()
    ahead = await open_state(FakeClock(T0 + 70), anti_entropy_interval=0.05)
    node = await open_state(clock, anti_entropy_interval=0.05)
    mesh.link(ahead, "A", node, "N")
    await ahead.put("objects", "k", "from a fast clock")
    await asyncio.sleep(0.3)
    assert node.get("objects", "k") is None and node.stats.refused_future_stamps >= 1
    clock.advance(15)
    async with asyncio.timeout(5):
        while node.get("objects", "k") is None:  # noqa: ASYNC110 - anti-entropy brings it
            await asyncio.sleep(0.02)
    assert node.get("objects", "k") == "from a fast clock"
    for state in (ahead, node):
        await state.close()


# -- sizes ----------------------------------------------------------------------------------------
async def test_values_over_the_size_cap_are_refused_locally_and_from_peers(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    loose = await open_state(max_object_bytes=4 * 1024 * 1024)  # a peer with another limit
    node = await open_state()
    mesh.link(loose, "L", node, "N")
    await mesh.settle()
    big = {"data": "x" * (1024 * 1024)}
    with pytest.raises(ValueTooLarge, match=r"1,048,58\d bytes, over the limit of 1,048,576"):
        await node.put("objects", "big", big)
    with pytest.raises(ValueTooLarge):
        async with node.batch() as batch:
            batch.put("objects", "small", 1)
            batch.put("objects", "big", big)
    assert node.get("objects", "small") is None  # the batch wrote nothing
    await loose.put("objects", "big", big)
    await loose.put("objects", "fine", {"data": "y" * 1000})
    await mesh.settle()
    assert node.get("objects", "big") is None and node.get("objects", "fine") is not None
    assert node.stats.refused_oversize == 1 and node.stats.refusals_by_peer == {"L": 1}
    assert any(
        "from peer L" in line and "max_object_bytes" in line for line in refusal_logs(caplog)
    )
    for state in (loose, node):
        await state.close()


# -- volume ---------------------------------------------------------------------------------------
async def test_a_flood_over_the_link_budget_is_dropped_and_fetched_at_its_pace(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    """A member writing 3 MB at once through one link: the receiver applies (and relays)
    what the link's budget allows and drops the rest, another link keeps syncing, and the
    dropped updates come later through anti-entropy, in step 2s the receiver asked for."""
    flooder = await open_state(anti_entropy_interval=0.2)
    node = await open_state(
        anti_entropy_interval=0.2,
        link_update_bytes_per_second=1_000_000,
        link_update_burst_bytes=200_000,
    )
    other = await open_state()
    mesh.link(flooder, "F", node, "N")
    mesh.link(other, "O", node, "N")
    await mesh.settle()
    for i in range(60):
        await flooder.put("objects", f"flood-{i}", {"data": f"{i}" * 50_000})
    await other.put("objects", "honest", 1)
    await mesh.settle()
    flooded = [k for k in node.keys("objects") if k.startswith("flood-")]
    assert node.get("objects", "honest") == 1  # the other link was not held up
    assert len(flooded) < 30, len(flooded)
    stats = node.stats
    assert stats.budget_drops >= 30 and stats.budget_dropped_bytes >= 1_500_000
    assert stats.refusals_by_peer.get("F", 0) == stats.budget_drops
    assert any(
        "from peer F" in line and "over the link's budget" in line for line in refusal_logs(caplog)
    )
    async with asyncio.timeout(10):
        while len([k for k in node.keys("objects") if k.startswith("flood-")]) < 60:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert contents(node)["objects"] == contents(flooder)["objects"] | {"honest": 1}
    for state in (flooder, node, other):
        await state.close()


async def test_the_catch_up_of_a_large_state_is_never_refused(mesh: Mesh) -> None:
    """A node joining a 2 MB state with a 100 kB burst: the step 2 it asked for is taken
    whole (and leaves the link in debt)."""
    old = await open_state()
    for i in range(40):
        await old.put("objects", f"k{i}", {"data": f"{i}" * 50_000})
    new = await open_state(link_update_bytes_per_second=50_000, link_update_burst_bytes=100_000)
    mesh.link(old, "O", new, "N")
    await mesh.settle()
    assert new.synced_with_a_peer and contents(new) == contents(old)
    assert new.stats.budget_drops == 0
    for state in (old, new):
        await state.close()


async def test_an_update_the_reader_cannot_account_for_drops_the_peer(mesh: Mesh) -> None:
    node = await open_state()
    await node.put("objects", "k", 1)
    node.attach_peer("H", lambda frame: None)
    before = node.store.encode_state()
    with pytest.raises(SyncProtocolError):
        node.receive("H", encode_state_message(GENESIS, encode_update(b"\x01\x01\x07\x00\x2b")))
    assert node.store.encode_state() == before and node.stats.protocol_errors == 1
    await node.close()
