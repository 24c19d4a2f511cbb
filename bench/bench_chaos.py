"""Chaos: random kills, freezes and partitions over packet loss, then a heal; what was lost and
how long the cluster took to come back.

Five agents on five network hosts (Linux network namespaces, harness/netlab.py; needs root and
``ip netns``, plus nftables), a sixth host for the signaling server. harness/chaos.py runs it:
a warm-up (a DaemonSet on every node, a Deployment, a Job), then ``--seconds`` of faults
drawn from ``--seed`` (2-5 s each, one at a time or with ``--overlap`` a new one every
1-2.5 s: kill -9 and restart, SIGSTOP/SIGCONT, one or two hosts cut off from the rest) over
``--loss`` packet loss on every host, while a writer PUTs a ConfigMap every 0.3 s through a
random live agent and Deployments of ticker.wasm, Jobs of hello.wasm and scalings are
applied with ``p2pkube apply`` every 3 s; then every fault is undone at once (the heal) and
the run times, from the heal:

* **converged**: every node Ready on every node, every acknowledged ConfigMap on every node,
  equal state vectors (``/v1/status``) and identical objects everywhere;
* **exact replicas**: every Deployment with exactly its last acknowledged replicas Running and
  Ready, the DaemonSet on every node and every Job complete, the same pods on every node.

Reported: faults by kind, packets the rules dropped, writes and applies acknowledged and not,
**lost writes** (acknowledged ConfigMaps missing anywhere: must be 0), the two times, NotReady
spells the agents logged, RSS before and after, agents that crashed. Baseline: the same two
times after a single clean heal of the same cluster without faults (``--baseline``, on by
default: a 5 s partition of two hosts, no loss), the floor of any heal.

The last stdout line is the JSON result; ``run_all.py`` renders it.

Run: ``.venv/bin/python bench/bench_chaos.py [--seconds 60] [--seed 6] [--loss 0.05]
[--overlap]`` (as root; ``run_all.py`` passes ``--overlap``).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import emit, markdown_table

from harness.chaos import NAMES, ChaosConfig, ChaosRun, print_figures
from harness.netlab import NetLab, available


def table(result: dict[str, Any]) -> str:
    """The run's figures as one table (the script and docs/benchmarks.md print the same)."""
    w, a = result["writes"], result["applies"]
    rows: list[list[Any]] = [
        ["faults injected", ", ".join(f"{n} {k}" for k, n in sorted(result["faults"].items()))],
        [
            "packets dropped",
            f"{result['packetsDropped']['loss']:,} by {result['loss']:.0%} loss, "
            f"{result['packetsDropped']['cut']:,} by cuts",
        ],
        ["acknowledged writes (ConfigMaps)", f"{w['acknowledged']} ({w['unacknowledged']} not)"],
        ["acknowledged applies", f"{a['acknowledged']} {a['byKind']} ({a['failed']} not)"],
        ["lost acknowledged writes", str(w["lost"])],
        ["heal to converged", _seconds(result["convergedSeconds"])],
        ["heal to exact replicas, Jobs complete", _seconds(result["exactReplicasSeconds"])],
        [
            "NotReady spells seen",
            f"{result['notReadySpells']} (longest {result['longestSpellSeconds']:.1f} s)",
        ],
        ["agents crashed", str(len(result["crashed"]))],
        [
            "RSS MB before -> after",
            ", ".join(f"{n} {b:g}->{e:g}" for n, (b, e) in result["rssMB"].items()),
        ],
    ]
    base = result.get("baseline")
    if base:
        rows.append(
            [
                "baseline: one clean 5 s partition, heal to converged / exact",
                f"{_seconds(base['convergedSeconds'])} / {_seconds(base['exactReplicasSeconds'])}",
            ]
        )
    return markdown_table(["what", "measured"], rows)


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f} s"


def baseline(chaos: ChaosRun) -> dict[str, Any]:
    """One clean heal: n1 and n2 cut off for 5 s, no loss, no writes; times from the heal."""
    lab = chaos.lab
    lab.partition(["n1", "n2"], [n for n in NAMES if n not in ("n1", "n2")])
    time.sleep(5)
    lab.heal()
    healed = time.monotonic()
    converged = exact = None
    while time.monotonic() - healed < 60 and (converged is None or exact is None):
        if converged is None and chaos.converged():
            converged = round(time.monotonic() - healed, 3)
        if exact is None and chaos.exact_replicas():
            exact = round(time.monotonic() - healed, 3)
        time.sleep(0.25)
    return {"convergedSeconds": converged, "exactReplicasSeconds": exact}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the fault phase")
    parser.add_argument("--seed", type=int, default=6, help="seed of the fault schedule")
    parser.add_argument("--loss", type=float, default=0.05, help="packet loss on every host")
    parser.add_argument(
        "--overlap", action="store_true", help="faults overlap (a new one every 1-2.5 s)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the clean heal")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    args = parser.parse_args()
    reason = available()
    if reason is not None:
        print(f"chaos benchmark skipped: {reason}")
        emit({"bench": "chaos", "skipped": reason})
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # tear down like an error
    root = Path(tempfile.mkdtemp(prefix="p2pkube-bench-chaos-"))
    config = ChaosConfig(
        seed=args.seed,
        fault_seconds=args.seconds,
        loss=args.loss,
        overlap=args.overlap,
        converge_timeout=120.0,
        replicas_timeout=180.0,
    )
    started = time.monotonic()
    with NetLab(root / "lab") as lab:
        chaos = ChaosRun(lab, root / "work", config)
        try:
            chaos.setup()
            base = None if args.no_baseline else baseline(chaos)
            result = chaos.run()
        except BaseException:
            print(lab.report(40), file=sys.stderr)
            raise
        result["baseline"] = base
        result["problems"] = chaos.problems()
        print_figures(result)
        print()
        print(table(result))
        if result["problems"]:
            print("\nwhat did not hold:\n  " + "\n  ".join(result["problems"]))
            print(chaos.report(), file=sys.stderr)
    result.update(bench="chaos", agents=len(NAMES), seconds=round(time.monotonic() - started, 1))
    if args.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    main()
