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

Run: ``.venv/bin/python -m bench.bench_chaos [--seconds 60] [--seed 6] [--loss 0.05]
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

from bench.benchlib import emit, markdown_table, yes
from harness.chaos import (
    CONVERGE_SECONDS,
    NAMES,
    REPLICAS_SECONDS,
    ChaosConfig,
    ChaosRun,
    print_figures,
)
from harness.netlab import NetLab, available

TITLE = "Chaos: kills, freezes, partitions and loss"
"""The heading of this benchmark's section in docs/benchmarks.md."""


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


# --- docs/benchmarks.md ---------------------------------------------------------------------------


def render(r: dict[str, Any]) -> list[str]:
    """The fault schedule, the figures, the promise of docs/guarantees.md, and the heal's cost."""
    if r.get("skipped"):
        return [f"**Skipped**: {r['skipped']} (the run needs root and Linux network namespaces)."]
    w = r["writes"]
    in_time = _healed_in_time(r)
    base = r.get("baseline") or {}
    lines = [
        f"{r['agents']} agents on {r['agents']} network hosts (Linux network namespaces on one "
        "bridge, harness/netlab.py) and a signaling host. After a warm-up (a DaemonSet on every "
        f"node, a Deployment, a Job), {r['faultSeconds']:g} s of faults drawn from seed "
        f"{r['seed']}, "
        + ("overlapping (a new one every 1-2.5 s)" if r.get("overlap") else "one at a time")
        + ", 2-5 s each: `kill -9` of an agent and its restart from "
        "its data dir, SIGSTOP/SIGCONT of an agent, one or two hosts cut off from the others "
        f"(nftables DROP both ways, silent), all over {r['loss']:.0%} random packet loss on "
        "every host. Meanwhile a ConfigMap is PUT every 0.3 s through a random live agent "
        "(acknowledged = the PUT returned: fsynced there) and a Deployment of ticker.wasm, a "
        "Job of hello.wasm or a scaling is applied with `p2pkube apply -f` every 3 s. Then "
        "everything is healed at once; *converged*: every node Ready everywhere, every "
        "acknowledged ConfigMap on every node, equal state vectors and identical objects; "
        "*exact replicas*: every Deployment with exactly its last acknowledged replicas "
        "Running and Ready, the DaemonSet on every node, every Job complete, the same pods on "
        "every node. Baseline, same cluster before the faults: one clean 5 s partition of two "
        "hosts, no loss, healed (the floor of any heal).",
        "",
        table(r),
        "",
        f"**Target** no acknowledged write lost: {yes(w['lost'] == 0)} ({w['lost']} of "
        f"{w['acknowledged']}). Converged within {CONVERGE_SECONDS:g} s and exact replicas "
        f"within {REPLICAS_SECONDS:g} s of the heal (docs/guarantees.md, asserted by "
        f"tests/test_chaos.py on a 25 s run): {yes(in_time)}.",
        "",
        "**What limits it**: after the heal every link that the faults closed is dialed "
        "again (aiortc has no ICE restart: each is a new RTCPeerConnection, negotiated "
        "through the signaling server), liveness crosses each new link before the state, "
        "and the documents merge by state vector; a restarted agent first waits for one "
        "sync. The pods of nodes that looked lost were replaced during the faults; at the "
        "heal the schedulers see the surplus and delete it, and the kubelets start what "
        "is missing"
        + (
            f". The clean heal took {_seconds(base.get('convergedSeconds'))} to converge, "
            "so most of the difference is the faults' leftovers: links in reconnect back-off, "
            "agents that were restarted late in the run, pods waiting out a restart back-off."
            if base
            else "."
        ),
    ]
    if r.get("problems"):
        lines += ["", "**What did not hold**: " + "; ".join(r["problems"])]
    return lines


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    """This benchmark's rows of the summary table (none when it was skipped)."""
    r = result
    if r.get("skipped"):
        return []
    w = r["writes"]
    faults = sum(r["faults"].values())
    converged, exact = r["convergedSeconds"], r["exactReplicasSeconds"]
    return [
        [
            f"chaos: acknowledged writes lost ({faults} faults in {r['faultSeconds']:g} s, "
            f"{r['loss']:.0%} loss)",
            f"{w['lost']} of {w['acknowledged']}",
            "0",
            yes(w["lost"] == 0),
        ],
        [
            "chaos: heal to converged / to exact replicas",
            f"{_seconds(converged)} / {_seconds(exact)}",
            f"< {CONVERGE_SECONDS:g} s / < {REPLICAS_SECONDS:g} s",
            yes(_healed_in_time(r)),
        ],
    ]


def _healed_in_time(r: dict[str, Any]) -> bool:
    """Converged and exact replicas within what docs/guarantees.md promises."""
    converged, exact = r["convergedSeconds"], r["exactReplicasSeconds"]
    return (
        converged is not None
        and exact is not None
        and converged < CONVERGE_SECONDS
        and exact < REPLICAS_SECONDS
    )


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
