"""Persistence of the cluster state: reopen, kill -9, torn tails, compaction, diff-only resync."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import struct
import sys
import zlib
from pathlib import Path

import pytest

from p2pkube.state import ClusterState, PersistenceError, StateSettings
from p2pkube.state.persist import LOG_NAME, SNAPSHOT_NAME, SNAPSHOT_TMP_NAME
from p2pkube.state.pycrdt_store import PycrdtStore

from .statenet import QUIET, Mesh, contents, sv


def settings(**overrides: object) -> StateSettings:
    s = StateSettings(anti_entropy_interval=3600.0)
    for name, value in overrides.items():
        setattr(s, name, value)
    return s


async def reopen(data_dir: Path, s: StateSettings = QUIET) -> ClusterState:
    state = ClusterState(data_dir, s, store_factory=PycrdtStore)
    await state.open()
    return state


async def test_write_close_reopen(tmp_path: Path) -> None:
    a = await reopen(tmp_path)
    first_id = a.client_id
    await a.put("objects", "Pod/default/web", {"spec": {"n": 2**60}})
    async with a.batch() as batch:
        for i in range(20):
            batch.put("status", f"s{i}", {"i": i})
        batch.put("leases", "lease", {"holder": "me"})
    await a.delete("status", "s0")
    before = contents(a)
    await a.close()
    b = await reopen(tmp_path)
    assert contents(b) == before
    assert b.get("objects", "Pod/default/web") == {"spec": {"n": 2**60}}
    assert b.client_id != first_id  # never reuse a client id after a restart
    await b.put("objects", "second-run", 1)
    await b.close()
    c = await reopen(tmp_path)
    assert c.get("objects", "second-run") == 1 and c.get("status", "s5") == {"i": 5}
    await c.close()


async def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    a = await reopen(tmp_path)
    await asyncio.gather(*(a.put("objects", f"k{i}", {"i": i}) for i in range(200)))
    stats = a.stats
    assert stats.disk_writes < 100, stats
    await a.close()
    b = await reopen(tmp_path)
    assert len(b.keys("objects")) == 200
    await b.close()


WRITER = r"""
import asyncio, sys
from pathlib import Path
from p2pkube.state import ClusterState, StateSettings
from p2pkube.state.pycrdt_store import PycrdtStore

async def main() -> None:
    run = sys.argv[2]
    s = StateSettings(anti_entropy_interval=3600.0, snapshot_log_records=40,
                      snapshot_log_bytes=48 * 1024)
    state = ClusterState(Path(sys.argv[1]), s, store_factory=PycrdtStore)
    await state.open()
    print("open", flush=True)

    async def writer(w: int) -> None:
        i = 0
        while True:
            key = f"{run}-{w}-{i}"
            await state.put("objects", key, {"i": i, "pad": "x" * 300})
            if i % 7 == 3:
                await state.delete("objects", f"{run}-{w}-{i - 1}")
                sys.stdout.write(f"-{run}-{w}-{i - 1}\n")
            sys.stdout.write(key + "\n")
            sys.stdout.flush()
            i += 1

    await asyncio.gather(*(writer(w) for w in range(4)))

asyncio.run(main())
"""


# The same writer with compaction switching generations all the time (a single node:
# every switch is a compaction; tombstones expire at once), so kills land mid-switch.
COMPACTING_WRITER = WRITER.replace(
    "snapshot_log_bytes=48 * 1024)",
    "snapshot_log_bytes=48 * 1024, compact_check_interval=0.003,"
    " compact_min_bytes=1, compact_ratio=1.0, tombstone_ttl=0.0)",
)


async def _run_and_kill(
    data_dir: Path, run: str, acks_before_kill: int, script: str = WRITER
) -> list[str]:
    """Run the writer, SIGKILL it after some acknowledgements, return every ack it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(data_dir), run, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    acked: list[str] = []
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line == b"open\n"
        while len(acked) < acks_before_kill:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line.endswith(b"\n"), "writer died"
            acked.append(line.decode().strip())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        rest = await asyncio.wait_for(proc.stdout.read(), 20)
        await asyncio.wait_for(proc.wait(), 20)
    # Whatever it printed before dying was acknowledged too (complete lines only).
    acked.extend(line for line in rest.decode().split("\n")[:-1] if line)
    return acked


@pytest.mark.parametrize("compacting", [False, True], ids=["log-snapshots", "generations"])
async def test_kill9_loses_nothing_acknowledged(tmp_path: Path, compacting: bool) -> None:
    expected: dict[str, bool] = {}
    script = COMPACTING_WRITER if compacting else WRITER
    generations = []
    for run, kill_after in [("r1", 90), ("r2", 170), ("r3", 37), ("r4", 1), ("r5", 123)]:
        last: dict[str, int] = {}
        for ack in await _run_and_kill(tmp_path, run, kill_after, script):
            if ack.startswith("-"):
                expected[ack[1:]] = False
            else:
                expected.setdefault(ack, True)
                _, writer, i = ack.split("-")
                last[writer] = max(last.get(writer, -1), int(i))
        # A writer killed right after its last ack may have made its next delete (of
        # that very key) durable without acknowledging it: either outcome is correct.
        in_flight = {f"{run}-{w}-{i}" for w, i in last.items() if (i + 1) % 7 == 3}
        state = await reopen(tmp_path)
        present = set(state.keys("objects"))
        for key in in_flight:
            if expected.get(key):
                expected[key] = key in present  # from now on it must stay that way
        missing = [k for k, live in expected.items() if live and k not in present]
        resurrected = [k for k, live in expected.items() if not live and k in present]
        assert not missing, f"{run}: lost acknowledged keys {missing[:5]}"
        assert not resurrected, f"{run}: acknowledged deletes undone {resurrected[:5]}"
        generations.append(state.generation)
        await state.close()
    assert len(expected) > 250
    if compacting:  # it did switch generations, several times per run
        print("generations after each kill:", [g.number for g in generations])
        assert generations == sorted(generations) and generations[-1].number >= 10, generations
    # The small thresholds made the writer compact several times mid-stream.
    assert (tmp_path / "state" / SNAPSHOT_NAME).exists()


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


async def test_torn_and_corrupt_tails_are_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = await reopen(tmp_path)
    for i in range(10):
        await a.put("objects", f"k{i}", i)
    await a.close()
    log_path = tmp_path / "state" / LOG_NAME
    good_size = log_path.stat().st_size
    tails = [
        struct.pack("<II", 1000, 0) + b"partial record",  # torn: shorter than it claims
        b"\x00" * 64,  # the file was extended but the data never written
        struct.pack("<II", 5, zlib.crc32(b"hello") ^ 1) + b"hello",  # crc mismatch
        b"\x07\x00",  # torn header
    ]
    for n, tail in enumerate(tails):
        _append(log_path, tail)
        assert log_path.stat().st_size == good_size + len(tail)
        b = await reopen(tmp_path)
        assert log_path.stat().st_size == good_size  # the tail was cut at load
        assert [b.get("objects", f"k{i}") for i in range(10)] == list(range(10))
        # Appending after the cut must be readable on the next load.
        await b.put("objects", f"after-{n}", n)
        await b.close()
        c = await reopen(tmp_path)
        assert c.get("objects", f"after-{n}") == n
        await c.close()
        good_size = log_path.stat().st_size
    # A torn tail is what a crash leaves: dropped quietly.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def log_records(path: Path) -> list[tuple[int, bytes]]:
    """(offset, payload) of every record of an intact update log."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        length, crc = struct.unpack_from("<II", data, pos)
        payload = data[pos + 8 : pos + 8 + length]
        assert zlib.crc32(payload) == crc
        out.append((pos, payload))
        pos += 8 + length
    return out


def flip(path: Path, offset: int, mask: int = 0x5A) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


async def logged_state(tmp_path: Path) -> tuple[ClusterState, ClusterState, Path]:
    """A and B linked; A's log holds A's writes a0..a9 then B's writes b0..b9, one per record.
    Returns A and B closed-over-open (A closed, B still open) and A's log path."""
    mesh = Mesh()
    a = await reopen(tmp_path / "a")
    b = await reopen(tmp_path / "b")
    mesh.link(a, "A", b, "B")
    for i in range(10):
        await a.put("objects", f"a{i}", i)
    for i in range(10):
        await b.put("objects", f"b{i}", i)
    await mesh.settle()
    await a.flush()
    await mesh.close()
    b.detach_peer("A")
    await a.close()
    return a, b, tmp_path / "a" / "state" / LOG_NAME


@pytest.mark.parametrize("where", ["payload", "length"])
async def test_corrupt_record_in_the_middle_keeps_what_follows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    """Corruption is not silence: a bad record with valid records after it is logged as an
    ERROR with the file and offset, every record after it is kept, and what it held comes
    back from a peer."""
    _, b, log_path = await logged_state(tmp_path)
    records = log_records(log_path)
    offset, payload = next((o, p) for o, p in records if b"a3" in p)
    size = log_path.stat().st_size
    # A byte in the middle of the update, or in its length field (the framing is lost then).
    flip(log_path, offset + 8 + len(payload) // 2 if where == "payload" else offset + 1)
    a = await reopen(tmp_path / "a")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(log_path) in errors[0] and f"offset {offset} " in errors[0]
    assert log_path.stat().st_size == size  # nothing truncated
    assert a.stats.corrupt_log_bytes == 8 + len(payload)
    # Kept: every record but the damaged one (a3), before and after it.
    assert [a.get("objects", f"a{i}") for i in range(10)] == [0, 1, 2, None, *range(4, 10)]
    assert [a.get("objects", f"b{i}") for i in range(10)] == list(range(10))
    mesh = Mesh()
    mesh.link(a, "A", b, "B")
    await mesh.settle()
    assert [a.get("objects", f"a{i}") for i in range(10)] == list(range(10))
    assert contents(a) == contents(b)
    await mesh.close()
    for s in (a, b):
        await s.close()
    # The records after the damage were logged again with the catch-up: nothing lost alone.
    again = await reopen(tmp_path / "a")
    assert [again.get("objects", f"a{i}") for i in range(10)] == list(range(10))
    await again.close()


async def test_damaged_log_header_discards_the_log_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without its header the log's generation is unknown: replaying it could put another
    document's items into this one. It is discarded, with an ERROR, and peers resend."""
    _, b, log_path = await logged_state(tmp_path)
    flip(log_path, 12)  # inside the header record's payload
    a = await reopen(tmp_path / "a")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("header is damaged" in e and str(log_path) in e for e in errors), errors
    assert a.keys("objects") == []
    mesh = Mesh()
    mesh.link(a, "A", b, "B")
    await mesh.settle()
    assert contents(a) == contents(b) and len(a.keys("objects")) == 20
    await mesh.close()
    for s in (a, b):
        await s.close()


async def test_corrupt_snapshot_refuses_to_start(tmp_path: Path) -> None:
    a = await reopen(tmp_path, settings(snapshot_log_records=3))
    for i in range(10):
        await a.put("objects", f"k{i}", i)
    await a.close()
    snap = tmp_path / "state" / SNAPSHOT_NAME
    data = bytearray(snap.read_bytes())
    data[-3] ^= 0x55
    snap.write_bytes(bytes(data))
    # The log only holds what came after the snapshot: starting would serve a partial state.
    with pytest.raises(PersistenceError, match="crc mismatch") as refused:
        await reopen(tmp_path)
    message = str(refused.value)
    assert str(snap) in message and f"move {tmp_path / 'state'} aside" in message


async def test_snapshot_compaction_keeps_everything(tmp_path: Path) -> None:
    s = settings(snapshot_log_records=10, snapshot_log_bytes=10**9)
    a = await reopen(tmp_path, s)
    for i in range(100):
        await a.put("objects", f"k{i}", {"i": i, "pad": "p" * 100})
        if i % 10 == 9:
            await a.delete("objects", f"k{i - 5}")
    stats = a.stats
    assert stats.snapshots_written >= 5, stats
    before = contents(a)
    await a.close()
    state_dir = tmp_path / "state"
    assert (state_dir / LOG_NAME).stat().st_size < 10 * 300
    # A compaction interrupted before its rename leaves a temp file: ignored and removed.
    (state_dir / SNAPSHOT_TMP_NAME).write_bytes(b"half-written")
    b = await reopen(tmp_path, s)
    assert contents(b) == before
    assert len(before["objects"]) == 90
    assert not (state_dir / SNAPSHOT_TMP_NAME).exists()
    await b.close()


async def test_snapshot_by_size_and_buffer_overflow(tmp_path: Path) -> None:
    s = settings(snapshot_log_bytes=20_000, persist_buffer_bytes=5_000)
    a = await reopen(tmp_path, s)
    await a.put_many("objects", {f"big{i}": "x" * 1000 for i in range(10)})  # > buffer bound
    for i in range(30):
        await a.put("status", f"s{i}", "y" * 1000)
    stats = a.stats
    assert stats.snapshots_written >= 2, stats
    assert a._persister is not None and a._persister.stats.buffer_overflows >= 1
    before = contents(a)
    await a.close()
    b = await reopen(tmp_path, s)
    assert contents(b) == before
    await b.close()


async def test_remote_updates_are_persisted(tmp_path: Path) -> None:
    mesh = Mesh()
    a = await reopen(tmp_path / "a")
    b = await reopen(tmp_path / "b")
    await a.put("objects", "from-a-before", 1)
    mesh.link(a, "A", b, "B")
    await a.put("objects", "from-a-after", 2)
    await mesh.settle()
    await b.flush()
    await mesh.close()
    await b.close()
    await a.close()
    b2 = await reopen(tmp_path / "b")
    assert b2.get("objects", "from-a-before") == 1 and b2.get("objects", "from-a-after") == 2
    await b2.close()


async def test_restarted_peer_syncs_only_the_diff(tmp_path: Path) -> None:
    mesh = Mesh()
    a = await reopen(tmp_path / "a")
    b = await reopen(tmp_path / "b")
    mesh.link(a, "A", b, "B")
    for i in range(100):  # 1 MB of values, written while connected
        await a.put("objects", f"ConfigMap/default/big-{i}", {"data": os.urandom(5_000).hex()})
    await mesh.settle()
    await b.flush()
    assert b.stats.doc_size > 1_000_000
    b.detach_peer("A")
    a.detach_peer("B")
    await mesh.close()
    await b.close()

    await a.put("objects", "ConfigMap/default/while-down", {"v": "1"})
    b2 = await reopen(tmp_path / "b")
    assert b2.stats.doc_size > 1_000_000  # loaded from its own disk
    mesh2 = Mesh()
    mesh2.link(a, "A", b2, "B")
    await mesh2.settle()
    assert b2.get("objects", "ConfigMap/default/while-down") == {"v": "1"}
    assert contents(b2) == contents(a)
    assert sv(b2)[a.client_id] == sv(a)[a.client_id]
    received = b2.stats.sync_step2_bytes_received
    print(f"resync: doc {b2.stats.doc_size} bytes, step2 received {received} bytes")
    assert 0 < received < 10_000, received
    assert a.stats.sync_step2_bytes_received < 10_000  # and B had nothing new for A
    await mesh2.close()
    await b2.close()
    await a.close()
