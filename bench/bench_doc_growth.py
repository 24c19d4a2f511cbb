"""How much the state document grows under churn, versus the size of its live content.

Yjs never drops a deleted item: its content is garbage-collected but an id,
its key (for the first item of a key) and a delete-set range remain. This
benchmark measures that residue for the churn patterns p2pkube will see:

* ``unique-keys``: pods named ``web-<random5>`` created and deleted (Deployments,
  Jobs): every cycle leaves a tombstone that carries its own key string;
* ``reused-keys``: the same churn over a fixed pool of names (StatefulSets);
* ``unique-keys-3-writers``: the unique churn with the create, the status write
  and the delete made by three different nodes (more clients, fragmented
  delete set, the realistic case);
* ``lease-renewals``: one key overwritten again and again by one node;
* ``lease+status-interleaved``: two keys overwritten alternately by one node (a
  lease renewal plus a status heartbeat).

For each it prints the encoded document size, the live size (a fresh document
holding only the live entries), their ratio, residue bytes per cycle and the
size of the step 2 an up-to-date peer receives (it always carries the whole
delete set). That first table is raw Yjs (plain msgpack blobs, `PycrdtStore`).

The second table runs the same scenarios through `ClusterState` (versioned
values, deletes as tombstones, 1 or 3 in-process peers) with generation
compaction off and on, on a fake clock advancing ``--seconds-per-cycle`` per
cycle; a compaction check runs on every peer every ``--check-every`` cycles
(the agent checks every ``compact_check_interval`` seconds). It prints the
document size sampled over time (max and final) against the live size at the
end (the document a compaction would build: values + unexpired tombstones) and
the number of generations. "small" uses thresholds low enough to act within a
short run; "defaults" uses the shipped `StateSettings`.

A table goes to stdout, then the same figures as one JSON object on the last line
(collected into docs/benchmarks.md): ``results`` (raw Yjs) and ``cluster_state``.

Run: ``.venv/bin/python -m bench.bench_doc_growth [--cycles 10000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import string
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.benchlib import markdown_table
from p2pkube.state import ClusterState, StateSettings
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.store import encode_value

TITLE = "Document size under churn"
"""The heading of this benchmark's section in docs/benchmarks.md."""
LIVE_PODS = 100
"""Pods alive at any time: each cycle creates one and deletes the oldest."""


def pod(name: str) -> dict[str, object]:
    """A pod-like object whose msgpack encoding is ~500 bytes."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": "".join(random.choices(string.hexdigits.lower(), k=32)),
            "labels": {"app": "web", "tier": "frontend", "pod-template-hash": "7d4b9c8f6d"},
            "creationTimestamp": "2026-05-09T07:35:25Z",
        },
        "spec": {
            "nodeName": "node-3",
            "restartPolicy": "Always",
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example.org/team/web-frontend:1.24.3",
                    "args": ["--port=8080", "--log-level=info", "--workers=4"],
                    "env": [{"name": f"VAR_{i}", "value": "x" * 12} for i in range(4)],
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
                }
            ],
        },
    }


def status(i: int) -> dict[str, object]:
    """A pod status as the running node writes it."""
    return {"phase": "Running", "podIP": f"10.0.{i % 250}.{i % 200}", "restarts": i % 3}


@dataclass
class Result:
    """One scenario's figures."""

    scenario: str
    cycles: int
    live_entries: int
    doc_bytes: int
    live_bytes: int
    ratio: float
    residue_bytes_per_cycle: float
    uptodate_step2_bytes: int
    seconds: float


def measure(
    scenario: str, cycles: int, stores: list[PycrdtStore], run: Callable[[], None]
) -> Result:
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    main = stores[0]
    doc = len(main.encode_state())
    live = len(main.encode_live_state())
    entries = sum(len(main.keys(m)) for m in ("objects", "status", "leases", "events"))
    step2 = len(main.encode_diff(main.state_vector()))
    return Result(
        scenario=scenario,
        cycles=cycles,
        live_entries=entries,
        doc_bytes=doc,
        live_bytes=live,
        ratio=round(doc / live, 2),
        residue_bytes_per_cycle=round((doc - live) / cycles, 1),
        uptodate_step2_bytes=step2,
        seconds=round(seconds, 2),
    )


def churn(stores: list[PycrdtStore], cycles: int, unique: bool) -> Callable[[], None]:
    """Create a pod (spec), report its status, delete the oldest pod; writers rotate."""

    def write(writer: int, fn: Callable[[PycrdtStore], None]) -> None:
        store = stores[writer % len(stores)]
        updates: list[bytes] = []
        unsubscribe = store.on_update(lambda u, o: updates.append(u))
        fn(store)
        unsubscribe()
        for other in stores:
            if other is not store:
                for u in updates:
                    other.apply_update(u, "peer")

    def run() -> None:
        live: deque[str] = deque()
        for i in range(cycles):
            suffix = (
                "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                if unique
                else str(i % (LIVE_PODS * 2))
            )
            key = f"Pod/default/web-{suffix}"
            write(i, lambda s, key=key: s.put("objects", key, pod(key.rsplit("/", 1)[1])))
            write(i + 1, lambda s, key=key, i=i: s.put("status", key, status(i)))
            live.append(key)
            if len(live) > LIVE_PODS:
                old = live.popleft()

                def delete(s: PycrdtStore, old: str = old) -> None:
                    with s.transaction():
                        s.delete("objects", old)
                        s.delete("status", old)

                write(i + 2, delete)

    return run


def overwrites(store: PycrdtStore, cycles: int, interleaved: bool) -> Callable[[], None]:
    """Renew one lease `cycles` times; `interleaved` also rewrites a status in between."""

    def run() -> None:
        for i in range(cycles):
            store.put("leases", "node/node-3", {"holder": "node-3", "renewTime": 1_700_000_000 + i})
            if interleaved:
                store.put("status", "Node//node-3", {"heartbeat": 1_700_000_000 + i})

    return run


@dataclass
class CompactionResult:
    """One scenario through ClusterState, compaction off or on."""

    scenario: str
    config: str
    cycles: int
    peers: int
    max_doc_bytes: int
    final_doc_bytes: int
    live_bytes: int
    """What a compaction would build at the end: newest versions + unexpired tombstones."""
    final_ratio: float
    max_ratio_to_final_live: float
    generations: int
    compactions: int
    seconds: float


class FakeClock:
    """Wall clock of the simulated run (seconds since the epoch)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Wire:
    """Delivers frames between in-process ClusterStates, in order, when drained."""

    def __init__(self) -> None:
        self.queue: deque[tuple[ClusterState, str, bytes]] = deque()

    def link(self, a: ClusterState, a_id: str, b: ClusterState, b_id: str) -> None:
        a.attach_peer(b_id, lambda frame: self.queue.append((b, a_id, frame)))
        b.attach_peer(a_id, lambda frame: self.queue.append((a, b_id, frame)))

    def drain(self) -> None:
        while self.queue:
            dst, src, frame = self.queue.popleft()
            dst.receive(src, frame)


ClusterOp = Callable[[list[ClusterState], int], Awaitable[None]]


def cluster_churn(unique: bool) -> ClusterOp:
    """The churn scenario through ClusterState: create, status, delete the oldest."""
    live: deque[str] = deque()

    async def cycle(states: list[ClusterState], i: int) -> None:
        suffix = (
            "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            if unique
            else str(i % (LIVE_PODS * 2))
        )
        key = f"Pod/default/web-{suffix}"
        n = len(states)
        await states[i % n].put("objects", key, pod(key.rsplit("/", 1)[1]))
        await states[(i + 1) % n].put("status", key, status(i))
        live.append(key)
        if len(live) > LIVE_PODS:
            old = live.popleft()
            async with states[(i + 2) % n].batch() as batch:
                batch.delete("objects", old)
                batch.delete("status", old)

    return cycle


def cluster_overwrites(interleaved: bool) -> ClusterOp:
    """The lease scenario through ClusterState."""

    async def cycle(states: list[ClusterState], i: int) -> None:
        await states[0].put(
            "leases", "node/node-3", {"holder": "node-3", "renewTime": 1_700_000_000 + i}
        )
        if interleaved:
            await states[0].put("status", "Node//node-3", {"heartbeat": 1_700_000_000 + i})

    return cycle


async def run_cluster(
    scenario: str,
    config: str,
    settings: StateSettings | None,
    peers: int,
    cycles: int,
    op: ClusterOp,
    seconds_per_cycle: float,
    check_every: int,
) -> CompactionResult:
    """Run `op` for `cycles` on `peers` linked states; compaction checks if `settings`."""
    clock = FakeClock()
    base = settings or StateSettings()
    base.anti_entropy_interval = 10**9
    base.compact_check_interval = 10**9  # checks are driven below, deterministically
    states = [
        ClusterState(None, base, wall_clock=clock, store_factory=PycrdtStore) for _ in range(peers)
    ]
    for state in states:
        await state.open()
    wire = Wire()
    for i in range(peers - 1):
        wire.link(states[i], f"n{i}", states[i + 1], f"n{i + 1}")
    max_doc = 0
    start = time.perf_counter()
    for i in range(cycles):
        await op(states, i)
        wire.drain()
        clock.now += seconds_per_cycle
        if i % check_every == check_every - 1 or i == cycles - 1:
            for state in states:
                if settings is not None:
                    state.maybe_compact()
                    wire.drain()
            max_doc = max(max_doc, *(s.stats.doc_size for s in states))
    seconds = time.perf_counter() - start
    main_state = states[0]
    doc, live = main_state.measure_growth()
    result = CompactionResult(
        scenario=scenario,
        config=config,
        cycles=cycles,
        peers=peers,
        max_doc_bytes=max_doc,
        final_doc_bytes=doc,
        live_bytes=live,
        final_ratio=round(doc / live, 2),
        max_ratio_to_final_live=round(max_doc / live, 2),
        generations=main_state.generation.number,
        compactions=sum(s.stats.compactions for s in states),
        seconds=round(seconds, 2),
    )
    for state in states:
        await state.close()
    return result


def cluster_configs(ttl: float) -> list[tuple[str, StateSettings | None]]:
    """(name, settings or None = compaction off)."""
    small = StateSettings(compact_min_bytes=64 * 1024, compact_ratio=2.0, tombstone_ttl=ttl)
    return [("off", None), ("defaults", StateSettings()), ("small", small)]


async def cluster_results(args: argparse.Namespace) -> list[CompactionResult]:
    n = args.cycles
    scenarios: list[tuple[str, int, Callable[[], ClusterOp]]] = [
        ("unique-keys", 1, lambda: cluster_churn(unique=True)),
        ("reused-keys", 1, lambda: cluster_churn(unique=False)),
        ("unique-keys-3-writers", 3, lambda: cluster_churn(unique=True)),
        ("lease-renewals", 1, lambda: cluster_overwrites(interleaved=False)),
        ("lease+status-interleaved", 1, lambda: cluster_overwrites(interleaved=True)),
    ]
    out = []
    for scenario, peers, make_op in scenarios:
        for config, settings in cluster_configs(args.small_ttl):
            random.seed(args.seed)
            out.append(
                await run_cluster(
                    scenario,
                    config,
                    settings,
                    peers,
                    n,
                    make_op(),
                    args.seconds_per_cycle,
                    args.check_every,
                )
            )
    return out


# --- docs/benchmarks.md ---------------------------------------------------------------------------


def render(r: dict[str, Any]) -> list[str]:
    """The residue per scenario and what it costs every node and joiner."""
    rows = [
        [
            x["scenario"],
            x["doc_bytes"],
            x["live_bytes"],
            x["ratio"],
            x["residue_bytes_per_cycle"],
            x["uptodate_step2_bytes"],
            x["seconds"],
        ]
        for x in r["results"]
    ]
    unique = next((x for x in r["results"] if x["scenario"] == "unique-keys"), None)
    lines = [
        f"The Yjs document after {r['cycles']:,} create/delete cycles of a pod-like object "
        "(~540-byte msgpack spec plus a status write; 100 pods live at the end) versus *live*: "
        "a fresh document holding only the live entries. *step2* is what an up-to-date peer "
        "receives on every anti-entropy round (the delete set). Scenarios are described in "
        "`bench/bench_doc_growth.py` and docs/state.md.",
        "",
        markdown_table(
            ["scenario", "doc bytes", "live bytes", "ratio", "residue B/cycle", "step2 B", "s"],
            rows,
        ),
        "",
        "**Target**: none set (the live state is the floor; the residue per cycle is the "
        "figure to watch).",
        "",
    ]
    if unique:
        per_million = unique["residue_bytes_per_cycle"]
        lines.append(
            "**What limits it**: Yjs keeps an id, the key string and a delete-set range for "
            f"every deleted entry: ~{per_million:g} bytes per pod lifetime with unique names, "
            f"i.e. ~{per_million:g} MB per million short-lived pods, loaded by every node and "
            "sent to every joiner. Only starting a new document generation drops it "
            "(docs/state.md)."
        )
    return lines


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    """This benchmark's rows of the summary table."""
    unique = next((x for x in result["results"] if x["scenario"] == "unique-keys"), None)
    if not unique:
        return []
    return [
        [
            "document residue per pod lifetime",
            f"{unique['residue_bytes_per_cycle']:g} B "
            f"(x{unique['ratio']:g} the live size after {unique['cycles']:,} cycles)",
            "-",
            "-",
        ]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--seconds-per-cycle", type=float, default=1.0, help="fake time between cycles"
    )
    parser.add_argument(
        "--check-every", type=int, default=10, help="cycles between compaction checks"
    )
    parser.add_argument(
        "--small-ttl", type=float, default=600.0, help="tombstone_ttl of the 'small' config"
    )
    args = parser.parse_args()
    random.seed(args.seed)
    n = args.cycles
    print(
        f"pod blob: {len(encode_value(pod('web-abcde')))} bytes, status blob: "
        f"{len(encode_value(status(1)))} bytes; {LIVE_PODS} pods live at the end"
    )
    results = []
    one = [PycrdtStore()]
    results.append(measure("unique-keys", n, one, churn(one, n, unique=True)))
    one = [PycrdtStore()]
    results.append(measure("reused-keys", n, one, churn(one, n, unique=False)))
    three = [PycrdtStore() for _ in range(3)]
    results.append(measure("unique-keys-3-writers", n, three, churn(three, n, unique=True)))
    one = [PycrdtStore()]
    results.append(measure("lease-renewals", n, one, overwrites(one[0], n, interleaved=False)))
    one = [PycrdtStore()]
    results.append(
        measure("lease+status-interleaved", n, one, overwrites(one[0], n, interleaved=True))
    )

    header = f"{'scenario':<24}{'doc':>12}{'live':>10}{'ratio':>8}{'B/cycle':>9}{'step2':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.scenario:<24}{r.doc_bytes:>12,}{r.live_bytes:>10,}{r.ratio:>8}"
            f"{r.residue_bytes_per_cycle:>9}{r.uptodate_step2_bytes:>8,}"
        )

    compaction = asyncio.run(cluster_results(args))
    print()
    print(
        f"ClusterState (versioned values, tombstones), {args.seconds_per_cycle:g} s/cycle, "
        f"check every {args.check_every} cycles; small = 64 KiB floor, 2x, "
        f"ttl {args.small_ttl:g} s; defaults = 1 MiB, 4x, ttl 24 h"
    )
    header = (
        f"{'scenario':<24}{'compaction':>11}{'max doc':>11}{'final doc':>11}{'live':>10}"
        f"{'final/live':>11}{'max/live':>9}{'gens':>6}"
    )
    print(header)
    print("-" * len(header))
    for c in compaction:
        print(
            f"{c.scenario:<24}{c.config:>11}{c.max_doc_bytes:>11,}{c.final_doc_bytes:>11,}"
            f"{c.live_bytes:>10,}{c.final_ratio:>11}{c.max_ratio_to_final_live:>9}"
            f"{c.generations:>6}"
        )
    print(
        json.dumps(
            {
                "bench": "doc_growth",
                "cycles": n,
                "results": [asdict(r) for r in results],
                "cluster_state": [asdict(c) for c in compaction],
            }
        )
    )


if __name__ == "__main__":
    main()
