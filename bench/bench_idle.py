"""Idle cost of an agent: CPU (% of one core) and memory of each agent in a quiet cluster.

A LocalCluster of ``--agents`` agents starts, waits until every agent sees every node Ready,
settles for ``--settle`` s, then does nothing for ``--seconds`` s while psutil reads each
agent's CPU time and RSS/USS from outside (the PIDs come from ``/v1/status``; the API is not
called during the window, so the measurement does not load what it measures).

Baselines measured in the same window, side by side:

* ``python asyncio.sleep`` — ``python -c "import asyncio; asyncio.run(asyncio.sleep(...))"``:
  the floor of any idle asyncio process;
* ``python + agent imports`` — the same after importing everything an agent imports
  (aiortc, aioice, pycrdt, aiohttp, cryptography, msgpack, psutil, p2pkube.agent): the RSS an
  agent pays before doing anything;
* the signaling server of the cluster, idle as well.

Run: ``.venv/bin/python bench/bench_idle.py [--agents 5] [--seconds 30]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from benchlib import emit, machine_busy_seconds, markdown_table, start_cluster

from p2pkube.devcluster import LocalCluster

TARGET_CPU_PERCENT = 1.0
TARGET_RSS_MB = 100.0
MB = 1_000_000

IDLE_CODE = "import asyncio; asyncio.run(asyncio.sleep({lifetime}))"
IMPORTS_CODE = (
    "import asyncio, aiohttp, aioice, aiortc, cryptography, msgpack, psutil, pycrdt; "
    "import p2pkube.agent; asyncio.run(asyncio.sleep({lifetime}))"
)


def sample(pids: dict[str, int]) -> dict[str, tuple[float, float]]:
    """(wall clock, CPU seconds) per process, read from outside."""
    out = {}
    for label, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        out[label] = (time.monotonic(), times.user + times.system)
    return out


def memory(pid: int) -> tuple[int, int]:
    """(RSS, USS): USS excludes shared library pages, i.e. what this process alone costs."""
    info = psutil.Process(pid).memory_full_info()
    return info.rss, info.uss


def link_bytes(cluster: LocalCluster, name: str) -> int:
    """Bytes this agent has sent over all its links (heartbeats, pings, anti-entropy)."""
    mesh = cluster.api(name, "GET", "/v1/status")["mesh"]
    return sum(n["bytesSent"] for n in mesh["neighbours"])


def table(result: dict[str, Any]) -> str:
    """The per-process table of a result (also rendered by run_all.py)."""
    return markdown_table(
        ["process", "CPU % of a core", "RSS MB", "USS MB", "links", "link bytes/s sent"],
        [
            [
                r["process"],
                r["cpuPercent"],
                r["rssMB"],
                r["ussMB"],
                r.get("links", "-"),
                r.get("linkBytesPerSecond", "-"),
            ]
            for r in result["rows"]
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window")
    parser.add_argument("--settle", type=float, default=5.0, help="quiet time before it")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="agent setting override (p2pkube join --set), e.g. membership.heartbeat_interval=1",
    )
    args = parser.parse_args()

    lifetime = int(args.settle + args.seconds + 120)
    baselines = {
        "python asyncio.sleep": subprocess.Popen(
            [sys.executable, "-c", IDLE_CODE.format(lifetime=lifetime)]
        ),
        "python + agent imports": subprocess.Popen(
            [sys.executable, "-c", IMPORTS_CODE.format(lifetime=lifetime)]
        ),
    }
    root = Path(tempfile.mkdtemp(prefix="p2pkube-bench-idle-"))
    cluster = LocalCluster(
        root / "cluster", extra_agent_args=[arg for s in args.set for arg in ("--set", s)]
    )
    names = [f"n{i}" for i in range(1, args.agents + 1)]
    try:
        ready = start_cluster(cluster, names)
        print(f"{args.agents} agents Ready everywhere after {ready:.1f}s; settling...", flush=True)
        time.sleep(args.settle)
        pids = {name: cluster.api(name, "GET", "/v1/status")["process"]["pid"] for name in names}
        assert cluster.signaling is not None
        pids["signaling server"] = cluster.signaling.pid
        for label, process in baselines.items():
            if process.poll() is not None:
                raise RuntimeError(f"baseline {label!r} exited early")
            pids[label] = process.pid
        sent_before = {name: link_bytes(cluster, name) for name in names}
        print(f"measuring for {args.seconds:g}s...", flush=True)
        busy, own = machine_busy_seconds(), time.process_time()
        before = sample(pids)
        time.sleep(args.seconds)
        after = sample(pids)
        busy, own = machine_busy_seconds() - busy, time.process_time() - own
        sent_after = {name: link_bytes(cluster, name) for name in names}
        rows: list[dict[str, Any]] = []
        for label, pid in pids.items():
            wall = after[label][0] - before[label][0]
            cpu = after[label][1] - before[label][1]
            rss, uss = memory(pid)
            row: dict[str, Any] = {
                "process": label,
                "cpuPercent": round(100 * cpu / wall, 2),
                "rssMB": round(rss / MB, 1),
                "ussMB": round(uss / MB, 1),
            }
            if label in sent_before:
                row["linkBytesPerSecond"] = round((sent_after[label] - sent_before[label]) / wall)
                degree = len(cluster.api(label, "GET", "/v1/status")["mesh"]["neighbours"])
                row["links"] = degree
            rows.append(row)
    finally:
        cluster.close()
        for process in baselines.values():
            process.kill()
            process.wait(10)
        shutil.rmtree(root, ignore_errors=True)

    agents = [r for r in rows if r["process"] in names]
    ours = sum(r["cpuPercent"] for r in rows) / 100 * args.seconds + own
    other_cores = round(max(0.0, busy - ours) / args.seconds, 2)
    summary = {
        "cpuPercentMax": max(r["cpuPercent"] for r in agents),
        "cpuPercentMedian": round(statistics.median(r["cpuPercent"] for r in agents), 2),
        "rssMBMax": max(r["rssMB"] for r in agents),
        "ussMBMax": max(r["ussMB"] for r in agents),
    }
    summary["cpuTargetMet"] = summary["cpuPercentMax"] < TARGET_CPU_PERCENT
    summary["rssTargetMet"] = summary["rssMBMax"] < TARGET_RSS_MB
    result = {
        "bench": "idle",
        "agents": args.agents,
        "seconds": args.seconds,
        "settings": args.set,
        "targetCpuPercent": TARGET_CPU_PERCENT,
        "targetRssMB": TARGET_RSS_MB,
        "rows": rows,
        "summary": summary,
        "otherCores": other_cores,
    }
    print()
    print(table(result))
    print(
        f"\nagents: CPU max {summary['cpuPercentMax']}% (target < {TARGET_CPU_PERCENT:g}%: "
        f"{'met' if summary['cpuTargetMet'] else 'MISSED'}), RSS max {summary['rssMBMax']} MB "
        f"(target < {TARGET_RSS_MB:g} MB: {'met' if summary['rssTargetMet'] else 'MISSED'}); "
        f"other processes on the machine used {other_cores} cores meanwhile"
    )
    emit(result)


if __name__ == "__main__":
    main()
