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
delete set). A table goes to stdout, then the same figures as one JSON object
on the last line (collected into docs/benchmarks.md).

Run: ``.venv/bin/python bench/bench_doc_growth.py [--cycles 10000]``.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from p2pkube.state.store import PycrdtStore, encode_value

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
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
    print(json.dumps({"bench": "doc_growth", "cycles": n, "results": [asdict(r) for r in results]}))


if __name__ == "__main__":
    main()
