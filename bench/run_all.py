"""Run every benchmark, print each table, and rewrite docs/benchmarks.md with the figures.

``make bench`` runs this. Each benchmark is a separate script (runnable alone, with flags for
its size) that prints its tables and, as its last line, a JSON result; this runner starts them
one after the other as child processes (so a crash or a leaked process in one cannot skew the
next), streams their output, and renders the JSON into the document together with the machine,
the date and the exact command behind every table. A benchmark that fails is reported as failed
in the document instead of stopping the others.

Run: ``.venv/bin/python bench/run_all.py [--quick] [--only latency,idle] [--output PATH]``.
``--quick`` uses small sizes (a smoke test of the harness, figures not meaningful).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_blobs
import bench_browser
import bench_chaos
import bench_idle
import bench_latency
import bench_pods
import bench_sched
import bench_throughput
from benchlib import REPO, last_json_line, machine, machine_busy_seconds, markdown_table

from harness.chaos import CONVERGE_SECONDS, REPLICAS_SECONDS
from p2pkube.membership.detector import MembershipSettings

DOC = REPO / "docs" / "benchmarks.md"
CHAOS_CONVERGE, CHAOS_REPLICAS = CONVERGE_SECONDS, REPLICAS_SECONDS
"""The chaos targets: what docs/guarantees.md promises after a heal (harness/chaos.py)."""
BENCH_TIMEOUT = 900
"""Seconds one benchmark may run before it is killed and reported as failed."""
HEARTBEAT_DEFAULT = MembershipSettings().heartbeat_interval
HEARTBEAT_DOUBLED = [
    "--set",
    f"membership.heartbeat_interval={HEARTBEAT_DEFAULT / 2:g}",
]
"""The idle diagnostic: the same cluster beating twice as often, to show the heartbeats' share."""
UNSIGNED_COMMIT = "c7e244c"
"""The last commit before heartbeats and routed messages were signed (issue 10): the idle
benchmark measures its cluster too, in the same window as ours, to show what signing costs."""
SIGNING = ["--baseline-commit", UNSIGNED_COMMIT, "--microbench", "2000"]


@dataclass
class Bench:
    """One benchmark script with its full-size and quick arguments."""

    key: str
    script: str
    args: list[str]
    quick_args: list[str]
    command: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0
    other_cores: float = 0.0
    """Average cores busy with processes outside this benchmark while it ran."""


BENCHES = [
    Bench(
        "latency",
        "bench_latency.py",
        ["--sizes", "3,5,10", "--writes", "100", "--interval", "0.05"],
        ["--sizes", "3", "--writes", "20"],
    ),
    Bench(
        "throughput",
        "bench_throughput.py",
        ["--mib", "20", "--message-kib", "64", "--reps", "3", "--profile"],
        ["--mib", "2", "--reps", "1", "--loops", "asyncio", "--profile", "--profile-mib", "1"],
    ),
    Bench(
        "idle",
        "bench_idle.py",
        ["--agents", "5", "--seconds", "30", *SIGNING],
        ["--seconds", "5", "--baseline-commit", UNSIGNED_COMMIT, "--microbench", "200"],
    ),
    Bench(
        "idle-heartbeat-doubled",
        "bench_idle.py",
        ["--agents", "5", "--seconds", "30", *HEARTBEAT_DOUBLED],
        ["--seconds", "5", *HEARTBEAT_DOUBLED],
    ),
    Bench("doc_growth", "bench_doc_growth.py", ["--cycles", "10000"], ["--cycles", "1000"]),
    Bench(
        "blobs",
        "bench_blobs.py",
        ["--mib", "32", "--reps", "3"],
        ["--mib", "4", "--reps", "1", "--baselines", "peerlink"],
    ),
    Bench(
        "pods",
        "bench_pods.py",
        ["--warm", "200", "--cold", "5", "--primes", "5000000", "--reps", "3"],
        ["--warm", "20", "--cold", "1", "--primes", "500000", "--reps", "1"],
    ),
    Bench(
        "sched",
        "bench_sched.py",
        ["--reps", "20", "--failover-reps", "8", "--pods", "100,300"],
        ["--reps", "5", "--failover-reps", "2", "--pods", "50", "--throughput-agents", "5"],
    ),
    Bench(
        "browser",
        "bench_browser.py",
        ["--opens", "3", "--warm", "20", "--cold", "3", "--primes", "5000000", "--reps", "3"],
        ["--opens", "1", "--warm", "3", "--cold", "1", "--primes", "500000", "--reps", "1"],
    ),
    Bench(
        "chaos",
        "bench_chaos.py",
        ["--seconds", "60", "--overlap"],
        ["--seconds", "20", "--overlap", "--no-baseline"],
    ),
]


def display_command(argv: list[str]) -> str:
    """The command as a user would type it from the repository root."""
    python = argv[0]
    try:
        python = os.path.relpath(python, REPO) if Path(python).is_relative_to(REPO) else python
    except ValueError:
        pass
    rel = [python, *(os.path.relpath(a, REPO) if a.startswith(str(REPO)) else a for a in argv[1:])]
    return shlex.join(rel)


def run(bench: Bench, quick: bool) -> None:
    """Run one benchmark, echoing its output; keep its JSON result or its error."""
    argv = [sys.executable, str(REPO / "bench" / bench.script)]
    argv += bench.quick_args if quick else bench.args
    bench.command = argv
    print(f"\n=== {bench.key}: {display_command(argv)}", flush=True)
    started = time.monotonic()
    busy = machine_busy_seconds()
    children = _children_cpu()
    lines: list[str] = []
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        # The child's own timeouts bound each step; this bounds the whole run.
        deadline = started + BENCH_TIMEOUT
        for line in process.stdout:
            lines.append(line)
            print(line, end="", flush=True)
            if time.monotonic() > deadline:
                raise TimeoutError(f"still running after {BENCH_TIMEOUT}s")
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except (TimeoutError, subprocess.TimeoutExpired) as exc:
        process.kill()
        process.wait(10)
        bench.error = f"killed: {exc}"
    bench.seconds = time.monotonic() - started
    ours = _children_cpu() - children
    bench.other_cores = max(0.0, machine_busy_seconds() - busy - ours) / bench.seconds
    if bench.error is None and process.returncode != 0:
        bench.error = f"exited with status {process.returncode} (its stderr is above)"
    if bench.error is None:
        try:
            bench.result = last_json_line("".join(lines))
        except ValueError as exc:
            bench.error = str(exc)
    if bench.error:
        print(f"=== {bench.key} FAILED: {bench.error}", flush=True)


def _children_cpu() -> float:
    """CPU seconds of every finished descendant (each level waits for its own children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- rendering ----------------------------------------------------------------------------------


def yes(met: bool) -> str:
    return "**met**" if met else "**not met**"


def span(values: list[float]) -> str:
    """``3`` or ``3-6``: a range of ratios, without repeating equal ends."""
    low, high = f"{min(values):.0f}", f"{max(values):.0f}"
    return low if low == high else f"{low}-{high}"


def render_latency(bench: Bench) -> list[str]:
    r = bench.result
    assert r is not None
    worst = max(item["p2pkube"]["visible"]["p99"] for item in r["results"])
    ratios = [
        item["p2pkube"]["visible"]["p50"] / max(item["tcpBaseline"]["visible"]["p50"], 1e-9)
        for item in r["results"]
    ]
    details = "; ".join(
        f"{i['agents']} agents: Ready everywhere {i['p2pkube']['clusterReadySeconds']} s after "
        f"start, link degree {span(i['p2pkube']['degrees'])}, while writing the agents used "
        f"{i['p2pkube']['agentCpuCores']:g} of {os.cpu_count()} cores (other processes: "
        f"{i['p2pkube']['otherCores']:g}) and each write was received "
        f"{i['p2pkube']['updateCopiesPerWrite']:g} times in all ({i['agents'] - 1} at least)"
        for i in r["results"]
    )

    def load(item: dict[str, Any]) -> float:
        return float(item["p2pkube"]["agentCpuCores"] + item["p2pkube"]["otherCores"])

    busiest = max(r["results"], key=load)
    saturated = load(busiest) >= 0.8 * (os.cpu_count() or 1)
    visible_before_ack = all(
        i["p2pkube"]["visible"]["p50"] <= i["p2pkube"]["ack"]["p50"] for i in r["results"]
    )
    fsync = r["fsyncMs"]
    return [
        "Time from the start of a `PUT /v1/objects` (a new ConfigMap, through the API of a "
        "rotating writer agent) until the **last** agent's `GET /v1/watch/ConfigMap` stream "
        f"delivers its ADDED event; {r['writes']} writes {r['intervalSeconds'] * 1000:g} ms "
        "apart per cluster size, after warm-up writes (one through every writer, at least 5), "
        "all on the bench process's monotonic "
        "clock. *ack* is the PUT round trip alone: the writer answers once the update is "
        "fsynced on its own disk. *first ack* is the first write through each agent, during "
        "the warm-up: a native agent loads its validation models (pydantic) at its first "
        "write, not at start, which keeps an idle agent's memory ~6 MB lower.",
        "",
        "Baseline, same run and same harness (reader threads, blocking sockets): N relay "
        "processes speaking newline-framed plain asyncio TCP, fully meshed. The bench sends the "
        "message to the rotating writer relay, which hands it to its own watch connection, "
        "forwards it to the N-1 other relays and acknowledges; each relay hands it to its watch "
        "connection. Same fan-out, none of HTTP, CRDT, WebRTC or fsync.",
        "",
        bench_latency.table(r),
        "",
        f"Per cluster: {details}. Disk: a 200-byte append + fsync takes p50 {fsync['p50']} ms, "
        f"p99 {fsync['p99']} ms here.",
        "",
        f"**Target** p99 < {r['targetP99Ms']:g} ms on loopback: {yes(worst < r['targetP99Ms'])} "
        f"(worst p99 {worst:g} ms).",
        "",
        f"**What limits it**: p2pkube's median is {span(ratios)}x the TCP relay's. On the "
        "path: an HTTP request on a new connection, a Yjs transaction and msgpack encoding on "
        "the writer, one aiortc hop per link (DTLS and SCTP in pure Python, each message also "
        "SACKed), the same again on every relaying agent in a partial mesh, and JSON on each "
        "watch stream. "
        + (
            f"With {busiest['agents']} agents the machine is saturated: while writing, the "
            f"agents used {busiest['p2pkube']['agentCpuCores']:g} and other processes "
            f"{busiest['p2pkube']['otherCores']:g} of its {os.cpu_count()} cores, so each hop "
            "queues behind other work"
            + (
                f"; each write also crossed {busiest['p2pkube']['updateCopiesPerWrite']:g} "
                f"links instead of the {busiest['agents'] - 1} a spanning tree needs "
                "(relayed updates are deduplicated only on arrival). "
                if busiest["p2pkube"]["updateCopiesPerWrite"] > 1.5 * (busiest["agents"] - 1)
                else ". "
            )
            if saturated
            else f"The machine was not saturated while writing (agents plus other processes "
            f"below 80% of its {os.cpu_count()} cores), so this is mostly per-hop cost; it "
            "grows with the number of agents because every agent's share of relaying, "
            "heartbeats and watch delivery competes for the same cores. "
        )
        + (
            "Visibility does not wait for the fsync: the median write is visible everywhere "
            "before its writer acknowledged it."
            if visible_before_ack
            else "The fsync is on the ack path only, not on the visibility path."
        ),
    ]


def render_throughput(bench: Bench) -> list[str]:
    r = bench.result
    assert r is not None
    lines = [
        f"{r['bytes'] / 2**20:g} MiB in {r['messageBytes'] // 1024} KiB messages from one "
        "process to another on loopback, queued as fast as the stack accepts them; the sender "
        "times from its first send until the receiver's one-message reply that it has "
        f"everything (no shared clock). Median of {r['reps']} transfers, each between two "
        "fresh processes. MB = 10^6 bytes. CPU % is of one core, over the transfer.",
        "",
        "* `tcp`: plain asyncio TCP stream (write + drain), the baseline;",
        "* `aiortc`: a raw aiortc data channel with aiortc's defaults (1 MiB SCTP receive window);",
        "* `aiortc-128k`: the same with PeerLink's one SCTP change, a 128 KiB receive window;",
        "* `peerlink`: what agents use, `p2pkube.net.link.PeerLink` after its Ed25519 "
        "handshake, msgpack SYNC frames fragmented at 60 KiB;",
        "* `aiortc-1proc`: raw aiortc with both peers in one process (one core for both).",
        "",
        bench_throughput.table(r),
    ]
    profile = r.get("profile")
    if profile and "top" not in profile:
        lines += [
            "",
            "The cProfile run of one `aiortc` sender failed twice ("
            + "; ".join(profile["failedAttempts"])
            + "): no profile this time.",
        ]
        profile = None
    if profile:
        lines += [
            "",
            f"cProfile of one `aiortc` sender (asyncio; {profile['mbPerSecondUnderProfiler']} "
            "MB/s under the profiler), top functions by own time:",
            "",
            bench_throughput.profile_table(profile),
        ]

    def find(variant: str, loop: str = "asyncio") -> dict[str, Any] | None:
        return next(
            (x for x in r["results"] if x["variant"] == variant and x["loop"] == loop), None
        )

    ours, raw, tcp = find("peerlink"), find("aiortc"), find("tcp")
    top = profile["top"][0] if profile else None
    limit = [
        "",
        "**Target**: none set; this is the ceiling for state sync (a full step 2 of a large "
        "document travels at this rate).",
        "",
    ]
    if ours and raw and tcp:
        busy = max(ours["senderCpuPercent"], ours["receiverCpuPercent"])
        text = (
            f"**What limits it**: TCP moves {tcp['mbPerSecond'] / ours['mbPerSecond']:.0f}x "
            "more than PeerLink. aiortc implements SCTP (cutting messages into ~1.2 KB DATA "
            "chunks, SACKs, congestion control, retransmission queues) and DTLS record handling "
            "in pure Python, per packet. "
        )
        if busy >= 80:
            text += (
                f"In the median PeerLink run one side is CPU-bound (sender "
                f"{ours['senderCpuPercent']:g}%, receiver {ours['receiverCpuPercent']:g}% of a "
                "core): that per-packet Python work is the ceiling."
            )
        elif ours.get("otherCores", 0) >= 0.5:
            text += (
                f"In the median PeerLink run the sender got {ours['senderCpuPercent']:g}% and "
                f"the receiver {ours['receiverCpuPercent']:g}% of a core while other "
                f"processes kept {ours['otherCores']:g} cores busy: on this shared machine "
                "the pair was short of CPU, not idle."
            )
        else:
            text += (
                f"Yet in the median PeerLink run neither side is saturated (sender "
                f"{ours['senderCpuPercent']:g}%, receiver {ours['receiverCpuPercent']:g}% of a "
                "core): the transfer also waits on SCTP itself (slow start from a small "
                "congestion window, SACK round trips, retransmission timeouts)."
            )
        if top:
            text += (
                f" The profiled raw-aiortc sender spends the most own time in "
                f"`{top['function']}` ({top['share']:g}%)."
            )
        dropped = {
            f"{x['variant']}/{x['loop']}": x["udpDrops"] for x in r["results"] if x.get("udpDrops")
        }
        if dropped:
            text += (
                " The kernel dropped datagrams for a full UDP receive buffer during "
                + ", ".join(f"{k} ({v:,})" for k, v in dropped.items())
                + ": aiortc repairs such a loss only after a retransmission timeout (1 s "
                "minimum), the slow outliers. That is why PeerLink advertises a 128 KiB SCTP "
                "receive window instead of aiortc's 1 MiB (more than the kernel's default UDP "
                "buffer)."
            )
        text += (
            " uvloop speeds up only the event-loop part of the work; with both peers in one "
            "process (1proc) both stacks share one core."
        )
        limit.append(text)
    return lines + limit


def render_idle(bench: Bench, diagnostic: Bench | None) -> list[str]:
    r = bench.result
    assert r is not None
    s = r["summary"]

    imports = next((x for x in r["rows"] if x["process"] == "python + agent imports"), None)
    lines = [
        f"A {r['agents']}-agent cluster, every agent Ready everywhere, left alone; CPU time and "
        f"memory of each process read from outside with psutil over {r['seconds']:g} s "
        "(the API is not called in that window). USS = memory this process alone holds "
        "(RSS minus shared pages). Baselines in the same window: an idle "
        '`python -c "import asyncio; asyncio.run(asyncio.sleep(...))"`, the same after '
        "importing everything an agent imports (aiortc, aioice, pycrdt, aiohttp, cryptography, "
        "msgpack, psutil, p2pkube.agent), and the cluster's idle signaling server.",
        "",
        bench_idle.table(r),
        "",
        f"**Targets** < {r['targetCpuPercent']:g}% of a core: {yes(s['cpuTargetMet'])} "
        f"(max {s['cpuPercentMax']:g}%, median {s['cpuPercentMedian']:g}%); "
        f"< {r['targetRssMB']:g} MB RSS: {yes(s['rssTargetMet'])} (max {s['rssMBMax']:g} MB).",
        "",
    ]
    if diagnostic and diagnostic.result:
        d = diagnostic.result["summary"]
        lines += [
            f"Diagnostic run, same cluster with heartbeats every {HEARTBEAT_DEFAULT / 2:g} s "
            f"instead of {HEARTBEAT_DEFAULT:g} s "
            f"(`{display_command(diagnostic.command)}`):",
            "",
            bench_idle.table(diagnostic.result),
            "",
        ]
        heartbeat_note = (
            f" Doubling the heartbeat rate takes an agent from {s['cpuPercentMedian']:g}% to "
            f"{d['cpuPercentMedian']:g}%: that difference is what the heartbeats cost."
        )
    else:
        heartbeat_note = ""
    lines += render_signing(r)
    memory_note = (
        f" Memory is mostly the imports: an idle interpreter that only imported the agent's "
        f"modules already has {imports['rssMB']:g} MB RSS ({imports['ussMB']:g} MB USS)."
        if imports
        else ""
    )
    lines.append(
        f"**What limits it**: heartbeats. Each agent sends one every {HEARTBEAT_DEFAULT:g} s on "
        "every link and "
        "relays other nodes' heartbeats to neighbours that may not have them yet; every frame "
        "is a DTLS record plus an SCTP DATA chunk and its SACK through aiortc's pure-Python "
        "stack, and keeps the event loop waking up. The links' idle PINGs, the failure "
        f"detector's event-loop lag probe every {MembershipSettings().check_interval:g} s and "
        "anti-entropy every 5 s add a little." + heartbeat_note + memory_note
    )
    return lines


def render_signing(r: dict[str, Any]) -> list[str]:
    """Signed heartbeats (issue 10): the same cluster at the last unsigned commit, same run."""
    baseline, micro = r.get("baseline"), r.get("microbench")
    if not baseline:
        return []
    s = r["summary"]
    lines = [
        f"**Signed heartbeats** (issue 10). The same {r['agents']}-agent cluster at "
        f"{baseline['commit']}, the last commit before heartbeats and routed messages were "
        "signed, measured in the same window by that commit's own `bench_idle.py` from a "
        "temporary git worktree (its agents and signaling server import that tree), so both "
        "see the same load; the two clusters never link, and each counts the other's ~0.05 "
        "of a core among the other processes:",
        "",
        bench_idle.signing_table(r),
        "",
    ]
    if micro:
        agents = r["agents"]
        expected = micro["sealUs"] / 1e4 / HEARTBEAT_DEFAULT  # % of a core
        lines += [
            f"Per heartbeat, in one process, {micro['count']:,} of them "
            f"(`--microbench {micro['count']}`; {micro['heartbeatBytes']} bytes on the wire "
            f"signed, {micro['unsignedBytes']} before):",
            "",
            bench_idle.micro_table(micro),
            "",
            f"An agent signs one heartbeat per {HEARTBEAT_DEFAULT:g} s (and its pre-signed "
            "farewell every 15 s), about "
            f"{expected:.3f}% of a core. It checks only heartbeats relayed to it or by it: in "
            f"this full mesh of {agents} none (a neighbour's own heartbeat arrives over a link "
            f"whose handshake proved who sent it); in a partial mesh, up to {agents - 1} checks "
            f"per second would add {(agents - 1) * micro['checkUs'] / 1e4:.2f}%. The failure "
            "detector pays for it: it checks each timeout when it falls due and probes its own "
            f"event-loop lag every {MembershipSettings().check_interval:g} s (it polled "
            "every 0.1 s before). Idle CPU per agent: "
            f"{baseline['cpuPercentMedian']:g}% before, {s['cpuPercentMedian']:g}% "
            f"after (medians); the target of < {r['targetCpuPercent']:g}% is "
            f"{yes(s['cpuTargetMet'])} (busiest agent {s['cpuPercentMax']:g}%).",
            "",
        ]
    return lines


def render_doc_growth(bench: Bench) -> list[str]:
    r = bench.result
    assert r is not None
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


def render_blobs(bench: Bench) -> list[str]:
    r = bench.result
    assert r is not None
    lines = [
        f"A {r['bytes'] / 2**20:g} MiB blob of random bytes published on one agent and pulled "
        "on another through the local API (`POST /v1/blobs/{digest}/pull`), timed in the bench "
        "process from the request to the `COMPLETE` event: chunk requests over rpc, per-chunk "
        "sha256 against the manifest, writes, the whole-file check and the rename. A new blob "
        f"for each of the {r['reps']} pulls; {r['chunkSize'] // 1024} KiB chunks, a window of "
        f"{r['window']} requests in flight. *direct*: the two agents are linked; *relay*: a "
        "chain `a - b - c` pulled on `c`, every chunk crossing two links. Baseline, same run: "
        "`bench_throughput.py`'s two-process transfer of the same byte count in 64 KiB "
        "messages over PeerLink (what agents use) and over a raw aiortc channel. CPU % is of "
        "one core, per role, over the pull.",
        "",
        bench_blobs.table(r),
        "",
        "**Target**: none set; the ceiling is the raw channel (the blob pull adds a round trip "
        "per chunk, kept off the critical path by the window).",
        "",
    ]

    def find(topology: str) -> dict[str, Any] | None:
        return next((x for x in r["results"] if x["topology"] == topology), None)

    raw = next((b for b in r["baseline"] if b["variant"] == "peerlink"), None)
    direct, relay = find("direct"), find("relay")
    text = "**What limits it**: "
    if direct and raw:
        busiest = max(direct["cpuPercent"].values())
        text += (
            f"a direct pull moves {direct['mbPerSecond']:g} MB/s, "
            f"{direct['mbPerSecond'] / raw['mbPerSecond']:.0%} of what PeerLink does when "
            f"frames are simply queued ({raw['mbPerSecond']:g} MB/s): the same pure-Python "
            "SCTP/DTLS work per byte, plus a request per chunk, two msgpack copies of each "
            "chunk and its sha256 (in a worker thread). "
        )
        if busiest >= 80:
            text += f"One agent is CPU-bound ({busiest:g}% of a core). "
        elif direct["otherCores"] >= 0.5:
            text += (
                f"Neither agent had a core to itself (holder and puller together "
                f"{sum(direct['cpuPercent'].values()):g}% while other processes kept "
                f"{direct['otherCores']:g} of {os.cpu_count()} cores busy): on this shared "
                "machine the pull was short of CPU, like the baseline. "
            )
        else:
            text += (
                "Neither agent is CPU-bound: the transfer waits on SCTP (its 128 KiB receive "
                "window, SACK round trips, retransmission stalls after UDP drops). "
            )
    if relay and direct:
        text += (
            f"Through a relay the rate is {relay['mbPerSecond'] / direct['mbPerSecond']:.0%} "
            f"of direct: the relay receives, decodes, re-encodes and sends every chunk "
            f"({relay['cpuPercent'].get('relay', 0):g}% of a core) and both links share the "
            "same cores on loopback."
        )
    lines.append(text.rstrip())
    return lines


def render_pods(bench: Bench) -> list[str]:
    r = bench.result
    assert r is not None
    start, cpu = r["start"], r["cpu"]["seconds"]
    warm, tiered, cranelift = start["warm"], start["cold-tiered"], start["cold-cranelift"]
    python = start["python-subprocess"]
    lines = [
        f"**Start latency**: `sqlite.wasm` ({r['moduleBytes']:,} bytes, SQLite compiled to "
        "wasm32-wasi by `make examples`) running `select 1`, timed from the runtime's "
        "`start()` until the instance has exited (a worker thread, the store, WASI, the "
        "instantiation, the run, the log file). *warm*: the compiled module in memory; *disk "
        "cache*: a new engine on the same data dir, as after an agent restart; *cold*: nothing "
        "cached, per compiler. Baseline, same run: a fresh Python subprocess running the same "
        "query with `sqlite3`, the cost of a pod as a process.",
        "",
        bench_pods.start_table(r),
        "",
        f"**Targets** warm p99 < {r['targetWarmP99Ms']:g} ms: "
        f"{yes(warm['p99'] < r['targetWarmP99Ms'])} (p99 {warm['p99']:g} ms); cold under "
        f"{r['targetColdMs']:g} ms: {yes(tiered['p50'] < r['targetColdMs'])} with the default "
        f"tiered compiler (p50 {tiered['p50']:g} ms; Cranelift alone: p50 {cranelift['p50']:g} "
        "ms).",
        "",
        f"**CPU-bound speed**: counting primes below {r['cpu']['n']:,} "
        "(examples/pods/primes.c), median of a few runs; the wasm rows include starting the "
        "instance.",
        "",
        bench_pods.cpu_table(r),
        "",
        "**What limits it**: a warm start is a thread start plus an instantiation from the "
        "cached `InstancePre` and the run itself; "
        f"{python['p50'] / warm['p50']:.0f}x faster than a Python process, which pays the "
        "interpreter's start-up. A cold start is compilation: Cranelift optimises and takes "
        "about a second for a 1 MB module on this machine, Winch (a baseline compiler) a "
        "fraction of that, so the first start of a module uses Winch code while Cranelift "
        "compiles it on one niced background thread; every later start, also after a restart "
        "(disk cache), uses Cranelift's code. "
        + (
            f"Winch's code is {cpu['wasm-winch'] / cpu['wasm-cranelift']:.2f}x slower than "
            "Cranelift's on the CPU job; "
            if "wasm-winch" in cpu and "wasm-cranelift" in cpu
            else ""
        )
        + (
            f"Cranelift's is {cpu['wasm-cranelift'] / cpu['native']:.2f}x the native time "
            "(sandbox cost: bounds-checked memory behind guard pages, epoch checks on loop "
            "back-edges) and "
            f"{cpu['python'] / cpu['wasm-cranelift']:.0f}x faster than CPython."
            if "native" in cpu and "wasm-cranelift" in cpu
            else ""
        ),
    ]
    return lines


def render_sched(bench: Bench) -> list[str]:
    r = bench.result
    assert r is not None
    lines: list[str] = []
    apply, failover, burst = r.get("apply"), r.get("failover"), r.get("throughput")
    if apply:
        d, b = apply["deployment"], apply["direct"]
        p99 = d["running"]["p99"]
        load = apply["load"]
        lines += [
            f"**Apply to all pods Running**: {apply['agents']} agents, `ticker.wasm` already "
            "fetched and compiled on every node. Each rep PUTs a new Deployment of "
            f"{apply['replicas']} replicas through n1 and times, on a Pod watch opened on n2 "
            "beforehand, until every pod is *placed* (seen with `spec.nodeName`) and until every "
            "pod is Running with Ready=True; then deletes it and waits until its pods are gone. "
            f"Baseline, interleaved with it ({apply['reps']} reps each): the same number of "
            "Pods PUT directly (concurrently) with `spec.nodeName` set round-robin, no election, "
            "no controller, no placement.",
            "",
            bench_sched.apply_table(apply),
            "",
            f"**Target** p99 < {apply['targetP99Ms']:g} ms (the Kubernetes SLO is "
            f"{apply['kubernetesSloSeconds']:g} s): {yes(p99 < apply['targetP99Ms'])} "
            f"(p99 {p99:g} ms over {d['running']['n']} reps, so p99 is about the worst rep).",
            "",
            "**What limits it**: the Deployment's PUT is acknowledged after "
            f"{d['ack']['p50']:g} ms (p50; one fsynced transaction); its pods reach the "
            f"watching agent {d['placed']['p50'] - d['ack']['p50']:g} ms later: the write "
            "replicates to the node elected for the workload, whose next scheduling pass "
            "(passes are debounced by 20 ms) takes the lease and writes the ReplicaSet and all "
            "placed pods in one transaction, which replicates to the watcher. The baseline "
            f"needs {apply['replicas']} API writes (each validated, its own transaction and "
            f"replication), {b['ack']['p50']:g} ms p50 for all of them, and its pods are all "
            f"visible after {b['placed']['p50']:g} ms (the Deployment's: "
            f"{d['placed']['p50']:g} ms). "
            "From placed to Running (the kubelets instantiate a compiled module and write "
            "Running, replicated again) takes "
            f"{d['running']['p50'] - d['placed']['p50']:g} ms for the Deployment; the "
            "baseline's first pods start while its last PUTs are still in flight. "
            + (
                f"In all the Deployment was {b['running']['p50'] - d['running']['p50']:g} ms "
                "faster than the direct Pods at the median: one transaction written by the "
                "scheduler costs less than one API write per pod, which hides what the "
                "election, the controllers and placement add. "
                if d["running"]["p50"] < b["running"]["p50"]
                else "In all, scheduling without a control plane added "
                f"{d['running']['p50'] - b['running']['p50']:g} ms at the median. "
            )
            + "Every step competes for CPU: the agents used "
            f"{load['clusterCores']:g} and other processes "
            + f"{load['otherCores']:g} of {os.cpu_count()} cores while this ran"
            + (
                ", and an agent's event loop stalled up to "
                f"{apply['health']['maxStalledSeconds']:g} s in all."
                if apply.get("health", {}).get("maxStalledSeconds", 0) >= 0.5
                else "."
            ),
            "",
        ]
    if failover:
        f, cfg = failover, failover["settings"]
        detect, placed, running = f["notReady"], f["placed"], f["running"]
        lines += [
            f"**Node failure to replacement Running**: a Deployment of {f['replicas']} replicas "
            f"on {f['agents']} agents; each rep `kill -9`s an agent running one of its pods "
            "(never n1, which watches), and times until n1's Pod watch shows "
            f"{f['replicas']} Running+Ready pods, none on the killed node; the killed agent then "
            "restarts from its data dir and the next rep starts once it is Ready everywhere and "
            f"exactly {f['replicas']} pods exist. Baseline, the same kills: until n1's Node "
            "watch reports the killed node NotReady, the failure detector alone and the floor "
            f"of any replacement. The workload's own scheduler was the victim in "
            f"{f['leaderKilled']} of {f['reps']} reps.",
            "",
            bench_sched.failover_table(f),
            "",
            f"**Target** replacement Running within {f['targetSeconds']:g} s of the failure: "
            f"{yes(f['targetMet'])} (worst {running['max'] / 1000:.2f} s of {f['reps']} kills"
            + (
                f"; {f['missed']} kill(s) not replaced within {f['missedAfterSeconds']:g} s, "
                "left out of the table)."
                if f.get("missed")
                else ")."
            ),
            "",
            "**What limits it**: detection. A node is NotReady "
            f"`membership.node_timeout` = {cfg['nodeTimeout']:g} s after its last heartbeat, "
            f"and heartbeats go every {cfg['heartbeatInterval']:g} s, so a kill is noticed "
            f"{cfg['nodeTimeout'] - cfg['heartbeatInterval']:g}-{cfg['nodeTimeout']:g} s "
            f"later (measured p50 {detect['p50'] / 1000:.2f} s). Then the scheduler waits "
            f"`scheduler.pod_eviction_grace` = {cfg['podEvictionGrace']:g} s, deletes the lost "
            "pod and places a replacement in the same pass (when the victim held the lease, "
            "another node takes it in that pass): "
            f"+{(placed['p50'] - detect['p50']) / 1000:.2f} s p50 to placed. The new pod "
            f"starts warm: +{(running['p50'] - placed['p50']) / 1000:.2f} s to Running. "
            "Restarting the agent took "
            f"{f['rejoinSeconds']['p50'] / 1000:.1f} s p50 until it was Ready everywhere.",
            "",
        ]
    if burst:
        runs = burst["runs"]
        reference = ", ".join(f"{k} ~{v:,} pods/s" for k, v in burst["reference"].items())
        lines += [
            f"**Scheduling throughput**: {burst['agents']} agents; per size, one Job with "
            "completions = parallelism = N pods of `hello.wasm` (exits at once; tiny requests) "
            "PUT once through n1, timed on n1's Pod watch until every pod has `spec.nodeName`, "
            "then until every pod Succeeded and the Job is Complete (each within "
            f"{runs[0]['timeoutSeconds']:g} s of the PUT). Baselines, same run, on the idle "
            "cluster: the Job controller's whole pass in-process (placement plus building the "
            "pod objects into a plan) and the bare `placement.place` loop over "
            f"{burst['agents']} `NodeInfo` (`assume()` after each pod): no document, fsync, "
            f"replication or kubelets. For scale, published figures (not measured here): "
            f"{reference}.",
            "",
            bench_sched.throughput_table(burst),
            "",
            "What each burst did to the cluster (*pods created*: every pod of the Job ever "
            "seen, more than N when pods on nodes that looked NotReady were evicted and "
            "replaced; *leases taken*: LeaderElection events recorded for the Job; *worst loop "
            "stall*: "
            "the largest event-loop stall time any agent's failure detector forgave over the "
            "burst; *Ready flips*: liveness transitions seen by all agents together):",
            "",
            bench_sched.completion_table(burst),
            "",
            "**Target**: none set; the in-process baselines are the ceiling for this Python code.",
            "",
        ]
        text = "**What limits it**: "
        first = runs[0]
        text += (
            f"the leader places all {first['pods']} pods in its first pass and writes them "
            f"in one transaction; n1 saw them {first['placedSeconds']:g} s after the PUT "
            f"({first['podsPerSecond']:g} pods/s), against "
            f"{first['baseline']['controllerSeconds']:g} s for the same controller pass "
            "in-process: the rest is the leader's view of the whole document, the "
            "transaction, its fsync and the replication of every pod object, on a machine "
            f"where other processes kept {burst['load']['otherCores']:g} of "
            f"{os.cpu_count()} cores busy. "
        )
        for x in runs[1:]:
            text += (
                f"With {x['pods']} pods, placing took {x['placedSeconds']:g} s "
                f"({x['podsPerSecond']:g} pods/s; in-process: "
                f"{x['baseline']['controllerSeconds']:g} s). "
            )
        passes = [sorted(x["passes"].values()) or [0] for x in runs]
        text += (
            "Running them is slower than placing them: every pod's status changes about three "
            "times, each change is a transaction replicated to every agent, and every agent "
            "runs a scheduling pass after every change ("
            + "; ".join(
                f"{x['pods']} pods: {p[0]}-{p[-1]} passes per agent, "
                f"{sum(x.get('skippedPasses', {}).values()):,} of "
                f"{sum(x['passes'].values()):,} in all skipped"
                for x, p in zip(runs, passes, strict=True)
            )
            + "; a node that leads nothing decides so from the leases alone and skips the "
            "view of every pod), and every change is replicated through every agent, whose "
            "Python WebRTC stack (DTLS, SCTP) and CRDT decoding share the same two cores. "
        )
        sick = [
            x
            for x in runs
            if x["podsCreated"] > x["pods"]
            or len(x["leaderElections"]) > 1
            or x["health"]["maxStalledSeconds"] >= MembershipSettings().node_timeout
        ]
        if sick:
            text += (
                "**The bursts overloaded the cluster**: "
                + "; ".join(
                    f"{x['pods']} pods: an event loop stalled {x['health']['maxStalledSeconds']:g}"
                    f" s ({x['health']['mostStalled']}), {x['health']['livenessTransitions']} "
                    f"Ready flips, {x['podsCreated']} pods created, "
                    f"{len(x['leaderElections'])} lease(s) taken"
                    for x in sick
                )
                + ". Stalled agents miss heartbeats and look NotReady to the others"
                + (
                    ", which evict their pods and create replacements"
                    if any(x["podsCreated"] > x["pods"] for x in sick)
                    else ""
                )
                + (
                    " and take over their leases"
                    if any(len(x["leaderElections"]) > 1 for x in sick)
                    else ""
                )
                + "."
                + (
                    " A pod evicted that way is deleted and its replacement runs too, so more "
                    "pods run than the Job needed; the bursts are CPU-bound (10 agents on "
                    f"{os.cpu_count()} cores), not limited by placement."
                    if any(x["podsCreated"] > x["pods"] for x in sick)
                    else ""
                )
            )
        lines.append(text.rstrip())
    return lines


def render_chaos(bench: Bench) -> list[str]:
    r = bench.result
    assert r is not None
    if r.get("skipped"):
        return [f"**Skipped**: {r['skipped']} (the run needs root and Linux network namespaces)."]
    w = r["writes"]
    converged, exact = r["convergedSeconds"], r["exactReplicasSeconds"]
    in_time = (
        converged is not None
        and exact is not None
        and converged < CHAOS_CONVERGE
        and exact < CHAOS_REPLICAS
    )
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
        bench_chaos.table(r),
        "",
        f"**Target** no acknowledged write lost: {yes(w['lost'] == 0)} ({w['lost']} of "
        f"{w['acknowledged']}). Converged within {CHAOS_CONVERGE:g} s and exact replicas "
        f"within {CHAOS_REPLICAS:g} s of the heal (docs/guarantees.md, asserted by "
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


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f} s"


SECTIONS: list[tuple[str, str, Callable[..., list[str]]]] = [
    ("latency", "Write-to-visible-everywhere latency", render_latency),
    ("throughput", "Data-channel throughput", render_throughput),
    ("idle", "Idle CPU and memory per agent", render_idle),
    ("doc_growth", "Document size under churn", render_doc_growth),
    ("blobs", "Blob transfer", render_blobs),
    ("pods", "Pod start latency and CPU-bound pod speed", render_pods),
    ("sched", "Scheduling without a control plane", render_sched),
    ("browser", "The browser node", lambda bench: bench_browser.render_markdown(bench.result)),
    ("chaos", "Chaos: kills, freezes, partitions and loss", render_chaos),
]


def summary_rows(benches: dict[str, Bench]) -> list[list[str]]:
    rows = []
    latency = benches.get("latency")
    if latency and latency.result:
        worst = max(i["p2pkube"]["visible"]["p99"] for i in latency.result["results"])
        sizes = "/".join(str(i["agents"]) for i in latency.result["results"])
        rows.append(
            [
                "write visible on every agent",
                f"p99 {worst:g} ms (worst of {sizes} agents)",
                f"p99 < {latency.result['targetP99Ms']:g} ms",
                yes(worst < latency.result["targetP99Ms"]),
            ]
        )
    throughput = benches.get("throughput")
    if throughput and throughput.result:
        res = throughput.result["results"]
        ours = next((x for x in res if x["variant"] == "peerlink" and x["loop"] == "asyncio"), None)
        tcp = next((x for x in res if x["variant"] == "tcp" and x["loop"] == "asyncio"), None)
        if ours and tcp:
            rows.append(
                [
                    "data-channel throughput",
                    f"{ours['mbPerSecond']:g} MB/s (TCP: {tcp['mbPerSecond']:g} MB/s)",
                    "-",
                    "-",
                ]
            )
    idle = benches.get("idle")
    if idle and idle.result:
        s = idle.result["summary"]
        rows.append(
            [
                "idle agent CPU",
                f"{s['cpuPercentMax']:g}% of a core (max of {idle.result['agents']})",
                f"< {idle.result['targetCpuPercent']:g}%",
                yes(s["cpuTargetMet"]),
            ]
        )
        baseline = idle.result.get("baseline")
        if baseline:
            rows.append(
                [
                    "signed heartbeats: idle agent CPU",
                    f"{s['cpuPercentMedian']:g}% of a core (median of {idle.result['agents']}; "
                    f"{baseline['cpuPercentMedian']:g}% unsigned, at {baseline['commit']}, "
                    "same run)",
                    f"< {idle.result['targetCpuPercent']:g}%",
                    yes(s["cpuPercentMax"] < idle.result["targetCpuPercent"]),
                ]
            )
        rows.append(
            [
                "idle agent RSS",
                f"{s['rssMBMax']:g} MB",
                f"< {idle.result['targetRssMB']:g} MB",
                yes(s["rssTargetMet"]),
            ]
        )
    growth = benches.get("doc_growth")
    if growth and growth.result:
        unique = next((x for x in growth.result["results"] if x["scenario"] == "unique-keys"), None)
        if unique:
            rows.append(
                [
                    "document residue per pod lifetime",
                    f"{unique['residue_bytes_per_cycle']:g} B "
                    f"(x{unique['ratio']:g} the live size after {unique['cycles']:,} cycles)",
                    "-",
                    "-",
                ]
            )
    blobs = benches.get("blobs")
    if blobs and blobs.result:
        found = {x["topology"]: x for x in blobs.result["results"]}
        raw = next((b for b in blobs.result["baseline"] if b["variant"] == "peerlink"), None)
        parts = [f"{x['mbPerSecond']:g} MB/s {name}" for name, x in found.items()]
        if raw:
            parts.append(f"raw PeerLink: {raw['mbPerSecond']:g} MB/s")
        rows.append(
            ["blob pull (publish on one agent, pull on another)", ", ".join(parts), "-", "-"]
        )
    pods = benches.get("pods")
    if pods and pods.result:
        r = pods.result
        warm, cold = r["start"]["warm"], r["start"]["cold-tiered"]
        rows.append(
            [
                "pod start, warm (1.09 MB module)",
                f"p99 {warm['p99']:g} ms (Python subprocess p50 "
                f"{r['start']['python-subprocess']['p50']:g} ms)",
                f"p99 < {r['targetWarmP99Ms']:g} ms",
                yes(warm["p99"] < r["targetWarmP99Ms"]),
            ]
        )
        rows.append(
            [
                "pod start, cold (compile)",
                f"p50 {cold['p50']:g} ms tiered, {r['start']['cold-cranelift']['p50']:g} ms "
                "Cranelift alone",
                f"< {r['targetColdMs']:g} ms",
                yes(cold["p50"] < r["targetColdMs"]),
            ]
        )
        cpu = r["cpu"]["seconds"]
        if "native" in cpu:
            rows.append(
                [
                    "CPU-bound pod speed",
                    f"x{cpu['wasm-cranelift'] / cpu['native']:.2f} native time, "
                    f"{cpu['python'] / cpu['wasm-cranelift']:.0f}x faster than CPython",
                    "-",
                    "-",
                ]
            )
    sched = benches.get("sched")
    if sched and sched.result:
        r = sched.result
        if "apply" in r:
            a = r["apply"]
            p99 = a["deployment"]["running"]["p99"]
            rows.append(
                [
                    f"apply to all pods Running ({a['replicas']} pods, {a['agents']} agents)",
                    f"p99 {p99:g} ms (Pods with nodeName: p99 {a['direct']['running']['p99']:g} "
                    "ms)",
                    f"p99 < {a['targetP99Ms']:g} ms",
                    yes(p99 < a["targetP99Ms"]),
                ]
            )
        if "failover" in r:
            f = r["failover"]
            rows.append(
                [
                    "node killed to replacement Running",
                    f"max {f['running']['max'] / 1000:.2f} s, p50 {f['running']['p50'] / 1000:.2f}"
                    f" s (detector alone p50 {f['notReady']['p50'] / 1000:.2f} s)"
                    + (f", {f['missed']} of {f['reps']} not replaced" if f.get("missed") else ""),
                    f"< {f['targetSeconds']:g} s",
                    yes(f["targetMet"]),
                ]
            )
        if "throughput" in r:
            t = r["throughput"]
            parts = [
                f"{x['podsPerSecond']:g} pods/s placing {x['pods']}"
                + (f" ({x['podsCreated']} created)" if x["podsCreated"] > x["pods"] else "")
                for x in t["runs"]
            ]
            best = max(x["baseline"]["controllerPodsPerSecond"] for x in t["runs"])
            rows.append(
                [
                    f"scheduling throughput ({t['agents']} agents, one Job)",
                    ", ".join(parts) + f"; in-process controller: {best:,} pods/s",
                    "-",
                    "-",
                ]
            )
    browser = benches.get("browser")
    if browser and browser.result:
        rows += bench_browser.summary_rows(browser.result)
    chaos = benches.get("chaos")
    if chaos and chaos.result and not chaos.result.get("skipped"):
        r = chaos.result
        w = r["writes"]
        faults = sum(r["faults"].values())
        rows.append(
            [
                f"chaos: acknowledged writes lost ({faults} faults in {r['faultSeconds']:g} s, "
                f"{r['loss']:.0%} loss)",
                f"{w['lost']} of {w['acknowledged']}",
                "0",
                yes(w["lost"] == 0),
            ]
        )
        converged, exact = r["convergedSeconds"], r["exactReplicasSeconds"]
        rows.append(
            [
                "chaos: heal to converged / to exact replicas",
                f"{_seconds(converged)} / {_seconds(exact)}",
                f"< {CHAOS_CONVERGE:g} s / < {CHAOS_REPLICAS:g} s",
                yes(
                    converged is not None
                    and exact is not None
                    and converged < CHAOS_CONVERGE
                    and exact < CHAOS_REPLICAS
                ),
            ]
        )
    return rows


def git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + uncommitted changes" if dirty else head


def render(benches: dict[str, Bench], quick: bool, total_seconds: float) -> str:
    m = machine()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run_all.py`); do not edit by hand, rerun it. Every "
        "figure below was measured in one run on the machine described here, each next to a "
        "baseline measured in the same run. Benchmarks measure and report; they are not tests "
        "and do not fail on a missed target.",
        "",
    ]
    if quick:
        out += ["> **Quick run** (`--quick`): sizes too small for the figures to mean much.", ""]
    out += [
        f"* Date: {now}; commit {git_revision()}; whole run {total_seconds / 60:.1f} min",
        f"* CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ramGiB']:g} GiB; "
        f"kernel {m['kernel']}; temp/data dirs on {m['tmpFilesystem']}",
        f"* Python {m['python']}; aiortc {m['aiortc']}, aioice {m['aioice']}, "
        f"pycrdt {m['pycrdt']}, aiohttp {m['aiohttp']}, uvloop {m['uvloop']}",
        "",
        "## Summary",
        "",
        markdown_table(["what", "measured", "target", "met"], summary_rows(benches) or []),
        "",
    ]
    for key, title, renderer in SECTIONS:
        bench = benches.get(key)
        if bench is None:
            continue
        out += [
            f"## {title}",
            "",
            f"Command: `{display_command(bench.command)}` ({bench.seconds:.0f} s; other "
            f"processes kept {bench.other_cores:.2f} of {os.cpu_count()} cores busy meanwhile)",
            "",
        ]
        if bench.result is None:
            out += [f"**Failed**: {bench.error}", ""]
            continue
        if key == "idle":
            out += renderer(bench, benches.get("idle-heartbeat-doubled"))
        else:
            out += renderer(bench)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (harness smoke test)")
    parser.add_argument(
        "--only", default="", help="comma-separated keys: " + ", ".join(b.key for b in BENCHES)
    )
    parser.add_argument("--output", type=Path, default=DOC, help="document to (re)write")
    parser.add_argument("--no-write", action="store_true", help="print only, keep the document")
    args = parser.parse_args()
    only = {k for k in args.only.split(",") if k}
    unknown = only - {b.key for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    started = time.monotonic()
    benches = {}
    for bench in BENCHES:
        if only and bench.key not in only:
            continue
        run(bench, args.quick)
        benches[bench.key] = bench
    total = time.monotonic() - started
    document = render(benches, args.quick, total)
    print("\n" + "=" * 80)
    print(document)
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(document)
        print(f"wrote {args.output} ({total / 60:.1f} min)")
    failed = [b.key for b in benches.values() if b.error]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
