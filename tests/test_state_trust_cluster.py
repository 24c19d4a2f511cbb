"""Issue 10 against real agents: one member's damage to the replicated state is bounded, and
corruption is not silence.

The attacker is a member (it holds the token): a test peer with a real link that writes into
the Yjs document directly, as a buggy or compromised agent could, bypassing every check an
honest agent's API makes (tests/test_hostile_peer.py shows the link)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.net.frames import Frame, FrameType
from p2pkube.net.link import PeerLink
from p2pkube.state.persist import LOG_NAME
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.sync import (
    EMPTY_STATE_VECTOR,
    Generation,
    SyncMessageKind,
    decode_state_message,
    encode_state_message,
    encode_sync_step1,
    encode_update,
)
from p2pkube.state.versioned import MAX_STAMP_INT, Stamp, encode_version
from tests.test_hostile_peer import link_to
from tests.test_state_persist import log_records

FOREVER = (MAX_STAMP_INT, MAX_STAMP_INT)
"""The issue's stamp: (2**53 - 1, 2**53 - 1), after which no write could ever be ordered."""


def configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": data,
    }


class Writer:
    """The hostile member's side of the state sync: a Yjs document of its own, fed from its
    link, from which it sends whatever updates it likes."""

    def __init__(self, cluster: LocalCluster, link: PeerLink, target: str) -> None:
        self.cluster = cluster
        self.link = link
        self.target = target
        self.doc = PycrdtStore()
        self.frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1024)
        link._on_frame = self._on_frame  # the link hands us every frame from now on

    def _on_frame(self, _: PeerLink, frame: Frame) -> None:
        if frame.type is FrameType.SYNC and not self.frames.full():
            self.frames.put_nowait(frame.body)

    def generation(self) -> Generation:
        state = self.cluster.api(self.target, "GET", "/v1/status")["state"]
        return Generation(state["generation"], state["generationCreator"])

    async def sync(self) -> None:
        """Fetch the target's whole document (our step 1 with an empty state vector)."""
        generation = await asyncio.to_thread(self.generation)
        assert self.link.send(
            FrameType.SYNC, encode_state_message(generation, encode_sync_step1(EMPTY_STATE_VECTOR))
        )
        async with asyncio.timeout(10):
            while True:
                frame = decode_state_message(await self.frames.get())
                if frame.kind is SyncMessageKind.STEP2:
                    self.doc.apply_update(frame.payload, "target")
                    return

    def write(self, key: str, blob: bytes) -> bytes:
        """Put a raw blob into our document; the Yjs update that carries it."""
        updates: list[bytes] = []
        unsubscribe = self.doc.on_update(lambda update, origin: updates.append(update))
        self.doc.put_raw("objects", key, blob)
        unsubscribe()
        (update,) = updates
        return update

    async def send(self, update: bytes) -> None:
        generation = await asyncio.to_thread(self.generation)
        assert self.link.send(
            FrameType.SYNC, encode_state_message(generation, encode_update(update))
        )


async def start(cluster: LocalCluster, *args: str) -> dict[str, str]:
    """Signaling, then n1 and n2 with ``args``, linked; their node ids."""
    cluster.start_signaling()
    for name in ("n1", "n2"):
        cluster.start_agent(name, *args)
    ids = {}
    for name in ("n1", "n2"):
        await asyncio.to_thread(cluster.wait_api, name)
        ids[name] = (await asyncio.to_thread(cluster.api, name, "GET", "/v1/status"))["nodeID"]
    await asyncio.to_thread(
        wait_until,
        lambda: (
            all(v == "True" for v in cluster.nodes("n1").values()) and len(cluster.nodes("n1")) == 2
        ),
        30,
        what="n1 to see n2 Ready",
    )
    return ids


def get_cm(cluster: LocalCluster, node: str, name: str) -> dict[str, Any] | None:
    items = cluster.api(node, "GET", "/v1/objects/ConfigMap?namespace=default")["items"]
    return next((o for o in items if o["metadata"]["name"] == name), None)


def names_on(cluster: LocalCluster, node: str, prefix: str) -> set[str]:
    items = cluster.api(node, "GET", "/v1/objects/ConfigMap?namespace=default")["items"]
    return {o["metadata"]["name"] for o in items if o["metadata"]["name"].startswith(prefix)}


def hostile_id(cluster: LocalCluster, node: str) -> str:
    """The node id of the test peer, as ``node`` knows its link."""
    neighbours = cluster.api(node, "GET", "/v1/status")["mesh"]["neighbours"]
    (hostile,) = [n["node"] for n in neighbours if n["name"] == "hostile"]
    return str(hostile)


def state_stats(cluster: LocalCluster, node: str) -> dict[str, Any]:
    state: dict[str, Any] = cluster.api(node, "GET", "/v1/status")["state"]
    return state


async def wait_for(what: str, check: Any, within: float = 15) -> None:
    await asyncio.to_thread(wait_until, check, within, what=what)


async def test_a_member_cannot_write_values_nobody_can_replace_or_that_are_too_large(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """A value stamped (2**53 - 1, 2**53 - 1) used to make its object impossible to update or
    delete on every node, and nothing bounded an object's size. Now: the API refuses an object
    over 1 MiB with a clear message, honest agents refuse both kinds of value from a member
    (counted and logged with its link), and the object stays writable everywhere."""
    ids = await start(cluster, "--set", "state.refusal_log_interval=0")
    await asyncio.to_thread(
        cluster.api, "n1", "PUT", "/v1/objects", configmap("target", {"v": "honest"})
    )
    await wait_for("n2 to get target", lambda: get_cm(cluster, "n2", "target") is not None)

    # The API: apply and create of an object over state.max_object_bytes (1 MiB).
    manifest = tmp_path / "big.yaml"
    manifest.write_text(yaml.safe_dump(configmap("big", {"blob": "x" * 1_200_000})))
    applied = await asyncio.to_thread(cluster.cli, "n1", "apply", "-f", str(manifest), check=False)
    literals = [arg for i in range(11) for arg in ("--from-literal", f"k{i}={'y' * 100_000}")]
    created = await asyncio.to_thread(
        cluster.cli, "n1", "create", "configmap", "big2", *literals, check=False
    )
    # The agent refuses what apply sends; create refuses before it sends (it knows the size).
    assert applied.returncode != 0
    assert "Too long" in applied.stderr and "must have at most 1,048,576 bytes" in applied.stderr
    assert created.returncode != 0
    assert "over the 1,048,576 bytes (1 MiB) an object may hold" in created.stderr

    # A member writes directly into the document: the forever-stamp over the existing
    # ConfigMap (a real overwrite: its document was synced first), and a 1.2 MB value.
    link, client = await link_to(cluster, ids["n1"])
    try:
        writer = Writer(cluster, link, "n1")
        hostile = await asyncio.to_thread(hostile_id, cluster, "n1")
        await writer.sync()
        stamp = Stamp(*FOREVER, writer.doc.client_id)
        poisoned = configmap("target", {"v": "poisoned"})
        await writer.send(writer.write("ConfigMap/default/target", encode_version(stamp, poisoned)))
        now = int(time.time() * 1000)
        huge = configmap("huge", {"blob": "z" * 1_200_000})
        await writer.send(
            writer.write("ConfigMap/default/huge", encode_version(Stamp(now, 0, 1), huge))
        )
        await wait_for(
            "n1 to refuse both, naming the link",
            lambda: (
                f"refused an update from peer {hostile}: value" in cluster.log_tail("n1", 300)
                and state_stats(cluster, "n1")["refusedFutureStamps"] >= 1
                and state_stats(cluster, "n1")["refusedOversize"] >= 1
            ),
        )
        log = cluster.log_tail("n1", 300)
        assert "ahead of our clock (state.max_clock_skew is 60 s)" in log
        assert "over the 1,048,576-byte limit (state.max_object_bytes)" in log
        assert state_stats(cluster, "n1")["refusalsByPeer"][hostile] >= 2
        await asyncio.sleep(1)  # anything relayed would have reached n2 by now
        for node in ("n1", "n2"):
            assert (await asyncio.to_thread(get_cm, cluster, node, "target"))["data"] == {
                "v": "honest"
            }
            for name in ("huge", "big", "big2"):
                assert await asyncio.to_thread(get_cm, cluster, node, name) is None

        # Honest writes to the object keep working, everywhere.
        await asyncio.to_thread(
            cluster.api, "n2", "PUT", "/v1/objects", configmap("target", {"v": "updated"})
        )
        await wait_for(
            "the update on both",
            lambda: all(
                (get_cm(cluster, n, "target") or {}).get("data") == {"v": "updated"}
                for n in ("n1", "n2")
            ),
        )
        await asyncio.to_thread(cluster.cli, "n1", "delete", "configmap", "target")
        await wait_for(
            "the delete on both",
            lambda: all(get_cm(cluster, n, "target") is None for n in ("n1", "n2")),
        )
    finally:
        await link.close("test over", notify=False)
        await client.close()


@pytest.mark.serial  # times throttling against others' sync
async def test_a_member_flooding_updates_is_throttled_while_others_keep_syncing(
    cluster: LocalCluster,
) -> None:
    """Four 25 MB ConfigMaps were accepted in 2.3 s and the document reached 100 MB. A
    member now gets a byte budget per link (state.link_update_bytes_per_second): beyond it
    its updates are dropped (logged and counted with the link), so they are neither applied,
    stored nor relayed, and another link keeps syncing meanwhile."""
    rate, burst, size, count = 100_000, 300_000, 100_000, 40
    ids = await start(
        cluster,
        "--set",
        f"state.link_update_bytes_per_second={rate}",
        "--set",
        f"state.link_update_burst_bytes={burst}",
    )
    link, client = await link_to(cluster, ids["n1"])
    try:
        writer = Writer(cluster, link, "n1")
        hostile = await asyncio.to_thread(hostile_id, cluster, "n1")
        now = int(time.time() * 1000)
        started = time.monotonic()
        for i in range(count):  # 4 MB, as fast as the link takes it
            blob = encode_version(Stamp(now, i, 1), configmap(f"flood-{i}", {"d": "f" * size}))
            await writer.send(writer.write(f"ConfigMap/default/flood-{i}", blob))
        await asyncio.to_thread(
            cluster.api, "n2", "PUT", "/v1/objects", configmap("during", {"v": "1"})
        )
        await wait_for("n1 to get n2's write", lambda: get_cm(cluster, "n1", "during") is not None)
        await wait_for(
            "n1 to drop the flood, naming the link",
            lambda: (
                f"bytes from peer {hostile}: over the link's budget" in cluster.log_tail("n1", 300)
            ),
        )
        # The refusal is logged at the first drop; on a loaded machine later updates are still
        # in flight then. Once n1 has read them all, each one was either taken or dropped.
        await wait_for(
            "n1 to take or drop every flooded update",
            lambda: (
                len(names_on(cluster, "n1", "flood-")) + state_stats(cluster, "n1")["budgetDrops"]
                >= count
            ),
        )
        await asyncio.sleep(1)  # what n1 took has reached n2 by now
        elapsed = time.monotonic() - started
        allowed = (burst + rate * elapsed) // size + 1  # what the budget lets through so far
        taken = {
            node: await asyncio.to_thread(names_on, cluster, node, "flood-")
            for node in ("n1", "n2")
        }
        assert 1 <= len(taken["n1"]) <= allowed, (taken, elapsed)
        assert taken["n2"] <= taken["n1"]  # n1 relayed only what it took
        stats = await asyncio.to_thread(state_stats, cluster, "n1")
        assert stats["budgetDrops"] >= count - allowed
        assert stats["refusalsByPeer"][hostile] == stats["budgetDrops"]
        assert (await asyncio.to_thread(cluster.nodes, "n1"))["n2"] == "True"
    finally:
        await link.close("test over", notify=False)
        await client.close()


async def test_a_flipped_byte_in_the_update_log_is_loud_and_loses_nothing_replicated(
    cluster: LocalCluster,
) -> None:
    """One byte flipped in the middle of updates.log used to make the agent log a WARNING,
    truncate the file there and serve a state missing everything after it. Now it logs an
    ERROR with the file and the offset, keeps every record after the damaged one, and gets
    what that record held back from its peer."""
    await start(cluster)
    for i in range(20):
        await asyncio.to_thread(
            cluster.api,
            "n1" if i < 10 else "n2",
            "PUT",
            "/v1/objects",
            configmap(f"cm-{i}", {"i": str(i)}),
        )
    everything = {f"cm-{i}" for i in range(20)}
    for node in ("n1", "n2"):
        await wait_for(
            f"{node} to hold all", lambda n=node: names_on(cluster, n, "cm-") == everything
        )
    for node in ("n2", "n1"):
        cluster.kill(node, signal.SIGTERM)
    log_path = cluster.root / "n1" / "state" / LOG_NAME
    offset, payload = next(
        (o, p) for o, p in log_records(log_path) if b"ConfigMap/default/cm-3" in p
    )
    data = bytearray(log_path.read_bytes())
    assert offset > len(data) // 10 and len(data) - offset > len(data) // 10  # in the middle
    data[offset + 8 + len(payload) // 2] ^= 0x20
    log_path.write_bytes(bytes(data))

    cluster.start_agent("n1")  # alone: what it serves is what it kept
    await asyncio.to_thread(cluster.wait_api, "n1")
    lines = [ln for ln in cluster.log_tail("n1", 200).splitlines() if str(log_path) in ln]
    assert any("ERROR" in ln and f"at offset {offset} are corrupt" in ln for ln in lines), lines
    kept = await asyncio.to_thread(names_on, cluster, "n1", "cm-")
    assert kept == everything - {"cm-3"}
    assert (await asyncio.to_thread(state_stats, cluster, "n1"))["corruptLogBytes"] == 8 + len(
        payload
    )

    cluster.start_agent("n2")
    await wait_for("n1 to catch up from n2", lambda: names_on(cluster, "n1", "cm-") == everything)
    assert (await asyncio.to_thread(get_cm, cluster, "n1", "cm-3"))["data"] == {"i": "3"}
