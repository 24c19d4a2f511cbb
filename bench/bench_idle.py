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

``--baseline-commit REV`` also measures the same cluster at an older commit, in the same
window: that commit's own ``bench/bench_idle.py`` runs from a temporary ``git worktree`` (its
agents and signaling server import that tree: it is their cwd and first on PYTHONPATH) at the
same time as this tree's, so both see the same load on the machine (run one after the other,
the load of a shared machine drifted by more than the difference measured); the two clusters
never link (each has its own signaling server and token) and each costs the other ~0.05 of a
core. The worktree is removed afterwards. ``run_all.py`` passes the last commit before
membership messages were signed (issue 10; it flooded unsigned heartbeats, before SWIM), so
the table shows today's idle agent next to that one.

``--scraped K`` starts the last K agents with Prometheus metrics on (``--metrics-address
127.0.0.1:0``) and scrapes each one's ``/metrics`` every ``--scrape-interval`` s (5) from this
process, from the end of the start-up to the end of the window: their rows stand next to the
other agents' (same cluster, same window), which is what serving metrics costs an idle agent.

``--microbench N`` times, in this process, what a signed member record costs with the real
code (`p2pkube.membership.swim_wire`): encoding and Ed25519-signing one (as the membership
host does for each new incarnation of its own), parsing and checking one (``parse_proof`` and
the native ``verify_signature``: once per member and incarnation), against encoding a SWIM
ping frame (what most membership messages cost, unsigned).

Run: ``.venv/bin/python -m bench.bench_idle [--agents 5] [--seconds 30] [--scraped 2]
[--baseline-commit c7e244c] [--microbench 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from bench.benchlib import (
    REPO,
    emit,
    last_json_line,
    machine_busy_seconds,
    markdown_table,
    start_cluster,
    yes,
)
from p2pkube.devcluster import LocalCluster
from p2pkube.membership.settings import SwimSettings

TITLE = "Idle CPU and memory per agent"
"""The heading of this benchmark's section in docs/benchmarks.md."""
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
    """Bytes this agent has sent over all its links (SWIM messages, pings, anti-entropy)."""
    mesh = cluster.api(name, "GET", "/v1/status")["mesh"]
    return sum(n["bytesSent"] for n in mesh["neighbours"])


PROMETHEUS_HEADERS = {
    "Accept": (
        "application/openmetrics-text;version=1.0.0;q=0.5,"
        "application/openmetrics-text;version=0.0.1;q=0.4,"
        "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    ),
    "Accept-Encoding": "gzip",
}
"""What Prometheus asks for on every scrape (its default ``scrape_protocols`` and
``enable_compression``): OpenMetrics first, gzipped. Both cost the agent more than the plain
text format unzipped (measured here, 800 scrapes of one idle agent back to back: 2.2 ms of
its CPU per scrape plain, 4.8 ms as Prometheus asks)."""


class Scraper:
    """Scrapes some agents' ``/metrics`` every ``interval`` s in a thread, as Prometheus
    does: one kept-alive HTTP connection per target, and Prometheus's own request headers
    (:data:`PROMETHEUS_HEADERS`); counts the scrapes and the bytes read (compressed, as
    sent)."""

    def __init__(self, urls: list[str], interval: float) -> None:
        self.urls = urls
        self.interval = interval
        self.scrapes = 0
        self.bytes = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._connections: dict[str, http.client.HTTPConnection] = {}

    def __enter__(self) -> Scraper:
        if self.urls:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        for connection in self._connections.values():
            connection.close()

    def _scrape(self, url: str) -> int:
        """One scrape of ``url`` on its kept-alive connection; the body's size."""
        parts = urllib.parse.urlsplit(url)
        connection = self._connections.get(url)
        if connection is None:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            self._connections[url] = connection
        try:
            connection.request("GET", parts.path or "/", headers=PROMETHEUS_HEADERS)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()  # it reconnects on the next request
            raise
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        return len(body)

    def _run(self) -> None:
        while not self._stop.is_set():
            for url in self.urls:
                try:
                    self.bytes += self._scrape(url)
                    self.scrapes += 1
                except (OSError, http.client.HTTPException) as exc:
                    self.errors.append(f"{url}: {exc}")
            self._stop.wait(self.interval)


def metrics_url(cluster: LocalCluster, name: str) -> str:
    """Where agent ``name`` serves its metrics (``metricsUrl`` in its api.json)."""
    info = json.loads((cluster.root / name / "api.json").read_text())
    return str(info["metricsUrl"])


def table(result: dict[str, Any]) -> str:
    """The per-process table of a result (also rendered by run_all.py)."""
    return markdown_table(
        [
            "process",
            "metrics",
            "CPU % of a core",
            "RSS MB",
            "USS MB",
            "links",
            "link bytes/s sent",
        ],
        [
            [
                r["process"],
                r.get("metrics", "-"),
                r["cpuPercent"],
                r["rssMB"],
                r["ussMB"],
                r.get("links", "-"),
                r.get("linkBytesPerSecond", "-"),
            ]
            for r in result["rows"]
        ],
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One quiet cluster of this tree, measured from outside (see the module docstring)."""
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
    stack = contextlib.ExitStack()
    cluster = LocalCluster(
        root / "cluster", extra_agent_args=[arg for s in args.set for arg in ("--set", s)]
    )
    names = [f"n{i}" for i in range(1, args.agents + 1)]
    scraped = names[len(names) - args.scraped :] if args.scraped else []
    metrics_on = {name: ["--metrics-address", "127.0.0.1:0"] for name in scraped}
    scraping = f"scraped every {args.scrape_interval:g} s"
    try:
        ready = start_cluster(cluster, names, extra=metrics_on)
        print(f"{args.agents} agents Ready everywhere after {ready:.1f}s; settling...", flush=True)
        scraper = Scraper([metrics_url(cluster, name) for name in scraped], args.scrape_interval)
        stack.enter_context(scraper)
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
        stack.close()  # the scraper stops
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
                row["metrics"] = scraping if label in scraped else "off"
                row["linkBytesPerSecond"] = round((sent_after[label] - sent_before[label]) / wall)
                degree = len(cluster.api(label, "GET", "/v1/status")["mesh"]["neighbours"])
                row["links"] = degree
            rows.append(row)
    finally:
        stack.close()
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
        "linkBytesPerSecond": round(statistics.median(r["linkBytesPerSecond"] for r in agents)),
    }
    summary["cpuTargetMet"] = summary["cpuPercentMax"] < TARGET_CPU_PERCENT
    if scraped:
        if scraper.errors:
            raise RuntimeError(f"scrapes failed: {scraper.errors[:3]}")
        plain = [r["cpuPercent"] for r in agents if r["process"] not in scraped]
        with_metrics = [r["cpuPercent"] for r in agents if r["process"] in scraped]
        summary["scraped"] = {
            "agents": len(scraped),
            "interval": args.scrape_interval,
            "scrapes": scraper.scrapes,
            "bytesPerScrape": round(scraper.bytes / max(1, scraper.scrapes)),
            "cpuPercentMedian": round(statistics.median(with_metrics), 2),
            "cpuPercentMedianPlain": round(statistics.median(plain), 2) if plain else None,
        }
    summary["rssTargetMet"] = summary["rssMBMax"] < TARGET_RSS_MB
    return {
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


@contextlib.contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A detached ``git worktree`` of ``commit`` in a temporary directory, removed after."""
    path = Path(tempfile.mkdtemp(prefix="p2pkube-bench-baseline-")) / "tree"
    git = ["git", "-C", str(REPO)]
    subprocess.run([*git, "worktree", "add", "--detach", str(path), commit], check=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False)
        shutil.rmtree(path.parent, ignore_errors=True)


def start_at(tree: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    """That tree's own bench_idle.py, started now (its agents and signaling server import
    that tree); :func:`result_of` waits for its result."""
    command = [
        sys.executable,
        str(tree / "bench" / "bench_idle.py"),
        "--agents",
        str(args.agents),
        "--seconds",
        str(args.seconds),
        "--settle",
        str(args.settle),
        *(arg for s in args.set for arg in ("--set", s)),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]),
    }
    print(f"baseline at the same time: {' '.join(command[1:])} (in {tree})", flush=True)
    return subprocess.Popen(
        command, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def result_of(process: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, err = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        raise RuntimeError("the baseline run did not finish within 600 s") from None
    if process.returncode != 0:
        raise RuntimeError(f"the baseline run failed: {err.strip()[-2000:]}")
    return last_json_line(out)


def baseline_summary(commit: str, run: dict[str, Any]) -> dict[str, Any]:
    """The figures of the run at ``commit`` that the before/after table shows."""
    agents = [r for r in run["rows"] if "linkBytesPerSecond" in r]
    return {
        "commit": commit,
        "cpuPercentMedian": round(statistics.median(r["cpuPercent"] for r in agents), 2),
        "cpuPercentMax": max(r["cpuPercent"] for r in agents),
        "linkBytesPerSecond": round(statistics.median(r["linkBytesPerSecond"] for r in agents)),
        "rssMBMax": max(r["rssMB"] for r in agents),
        "rows": run["rows"],
    }


def microbench(count: int) -> dict[str, Any]:
    """Microseconds per member record of signing and checking (see the module docstring)."""
    return asyncio.run(_microbench(count))


async def _microbench(count: int) -> dict[str, Any]:
    from p2pkube.membership.swim_messages import Gossip, Ping, Status, Update
    from p2pkube.membership.swim_wire import (
        DOMAIN,
        parse_proof,
        proof_of,
        record_bytes,
        signed_transcript,
    )
    from p2pkube.membership.swim_wire import encode as encode_swim
    from p2pkube.membership.topology import short_id
    from p2pkube.net.frames import FrameType, encode_frame
    from p2pkube.net.identity import NodeIdentity, verify_signature
    from p2pkube.net.signed import Signatures

    cluster = "0" * 16
    sender = Signatures(NodeIdentity.generate(), cluster, verify_signature)
    peers = [short_id(NodeIdentity.generate().node_id) for _ in range(4)]
    target = NodeIdentity.generate().node_id

    def record(incarnation: int) -> bytes:
        return record_bytes(sender.node_id, sender.public_key, "n1", incarnation, 0.0, False, peers)

    ping = Ping(1, target, ())
    started = time.perf_counter()
    for _ in range(count):
        encode_frame(FrameType.SWIM, encode_swim(ping))
    pack = time.perf_counter() - started

    started = time.perf_counter()
    proofs = []
    for incarnation in range(count):
        signed = record(incarnation)
        proofs.append(proof_of(signed, await sender.sign(DOMAIN, signed)))
    seal = time.perf_counter() - started

    started = time.perf_counter()
    for proof in proofs:
        member = parse_proof(proof)
        signed = signed_transcript(cluster, member.signed)
        assert await verify_signature(member.pub, member.signature, signed)
    check = time.perf_counter() - started
    await sender.close()

    alive = Update(sender.node_id, Status.ALIVE, 1, sender.node_id, proofs[0], 0.0)
    us = 1e6 / count
    return {
        "count": count,
        "packUs": round(pack * us, 1),
        "sealUs": round(seal * us, 1),
        "checkUs": round(check * us, 1),
        "recordBytes": len(proofs[0]),
        "pingBytes": len(encode_frame(FrameType.SWIM, encode_swim(ping))),
        "aliveBytes": len(encode_frame(FrameType.SWIM, encode_swim(Gossip((alive,))))),
    }


def signing_table(result: dict[str, Any]) -> str:
    """This tree's cluster against the baseline commit's (also rendered by run_all.py)."""
    before, after = result["baseline"], result["summary"]
    return markdown_table(
        ["idle cluster, same window", f"before ({before['commit']})", "after"],
        [
            [
                f"CPU % of a core per agent, median of {result['agents']}",
                before["cpuPercentMedian"],
                after["cpuPercentMedian"],
            ],
            ["CPU % of a core, busiest agent", before["cpuPercentMax"], after["cpuPercentMax"]],
            ["RSS MB, largest agent", before["rssMBMax"], after["rssMBMax"]],
            [
                "link bytes/s sent per agent",
                before["linkBytesPerSecond"],
                after["linkBytesPerSecond"],
            ],
        ],
    )


def micro_table(micro: dict[str, Any]) -> str:
    """The microbenchmark's figures (also rendered by run_all.py)."""
    return markdown_table(
        ["per message", "µs"],
        [
            [
                "encode a SWIM ping frame (the baseline: what most membership messages cost)",
                micro["packUs"],
            ],
            [
                "sign: encode a member record and Ed25519-sign it (as swim_host._prove)",
                micro["sealUs"],
            ],
            [
                "check: parse a record and Ed25519-verify it (parse_proof, verify_signature)",
                micro["checkUs"],
            ],
        ],
    )


# --- docs/benchmarks.md ---------------------------------------------------------------------------

SWIM_DEFAULT = SwimSettings()
"""The agents' SWIM timings; run_all.py's diagnostic run halves the probe period."""
PROBES_DOUBLED = [
    "--set",
    f"swim.probe_interval={SWIM_DEFAULT.probe_interval / 2:g}",
    "--set",
    f"swim.probe_timeout={SWIM_DEFAULT.probe_timeout / 2:g}",
    "--set",
    f"swim.nack_timeout={SWIM_DEFAULT.nack_timeout / 2:g}",
]
"""The idle diagnostic's settings: every agent probes twice as often (the timeouts halved with
the period, as `SwimSettings.check` requires), to show membership's share of idle CPU."""
DIAGNOSTIC = "probesDoubled"
"""Where run_all.py attaches that diagnostic run to this benchmark's result, as
``{"command": ..., "result": ...}``: the section shows both runs."""


def render(r: dict[str, Any]) -> list[str]:
    """The idle cluster's table, the targets, the probe-rate diagnostic and signing figures
    when they ran, and where the CPU and memory go."""
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
        table(r),
        "",
        f"**Targets** < {r['targetCpuPercent']:g}% of a core: {yes(s['cpuTargetMet'])} "
        f"(max {s['cpuPercentMax']:g}%, median {s['cpuPercentMedian']:g}%); "
        f"< {r['targetRssMB']:g} MB RSS: {yes(s['rssTargetMet'])} (max {s['rssMBMax']:g} MB).",
        "",
    ]
    lines += render_scraped(s)
    period = SWIM_DEFAULT.probe_interval
    diagnostic = r.get(DIAGNOSTIC)
    if diagnostic:
        d = diagnostic["result"]["summary"]
        lines += [
            f"Diagnostic run, same cluster probing every {period / 2:g} s instead of "
            f"{period:g} s (`{diagnostic['command']}`):",
            "",
            table(diagnostic["result"]),
            "",
        ]
        probe_note = (
            f" Doubling the probe rate takes an agent from {s['cpuPercentMedian']:g}% to "
            f"{d['cpuPercentMedian']:g}%: that difference is what SWIM's probes cost."
        )
    else:
        probe_note = ""
    lines += render_signing(r)
    memory_note = (
        f" Memory is mostly the imports: an idle interpreter that only imported the agent's "
        f"modules already has {imports['rssMB']:g} MB RSS ({imports['ussMB']:g} MB USS)."
        if imports
        else ""
    )
    lines.append(
        f"**What limits it**: membership's probes. Each agent probes one member every "
        f"{period:g} s (SWIM: a ping and its ack, {1 / period:.1f} of each sent per second "
        "whatever the cluster's size, as many received); every frame is a DTLS record plus an "
        "SCTP DATA chunk through aiortc's pure-Python stack, a UDP packet that wakes the "
        "receiving agent, and the wake-ups are most of the cost on this machine (a 2-core VM: "
        "one wake-up of an idle asyncio loop takes ~0.25 ms of CPU, a plain `time.sleep` one "
        "~0.1 ms). Most SACKs ride on the next probe or answer (p2pkube/net/sctp.py: 5 idle "
        "agents, 1.5 lone SACKs a second per agent), and the agent's periodic chores share one "
        "beat (p2pkube/ticker.py). The links' ICE consent checks, idle PINGs and anti-entropy "
        "every 5 s add a little. `p2pkube join --liveness frugal` probes every 0.5 s (a crash "
        "is found later; docs/settings.md): see the next section for its cost."
        + probe_note
        + memory_note
    )
    return lines


def render_scraped(s: dict[str, Any]) -> list[str]:
    """What serving metrics costs: the scraped agents against the others, same window."""
    scraped = s.get("scraped")
    if not scraped:
        return []
    plain = scraped["cpuPercentMedianPlain"]
    return [
        f"**Metrics**: {scraped['agents']} of the agents served Prometheus metrics "
        f"(`--metrics-address`) and were scraped every {scraped['interval']:g} s from the "
        f"benchmark process as Prometheus does (a kept-alive connection, OpenMetrics, gzip: "
        f"{scraped['scrapes']} scrapes, {scraped['bytesPerScrape']:,} bytes each): "
        f"{scraped['cpuPercentMedian']:g}% of a core (median) against "
        f"{plain if plain is not None else '-'}% for the agents without metrics, in the same "
        "cluster and window (docs/metrics.md).",
        "",
    ]


def render_signing(r: dict[str, Any]) -> list[str]:
    """The same cluster at an older commit, same run, and the member-record microbenchmark."""
    baseline, micro = r.get("baseline"), r.get("microbench")
    if not baseline:
        return []
    s = r["summary"]
    lines = [
        f"**Against {baseline['commit']}**, the last commit before membership and routed "
        "messages were signed (issue 10; it flooded unsigned heartbeats, before SWIM): the "
        f"same {r['agents']}-agent cluster, measured in the same window by that commit's own "
        "`bench_idle.py` from a temporary git worktree (its agents and signaling server import "
        "that tree), so both see the same load; the two clusters never link, and each counts "
        "the other's ~0.05 of a core among the other processes:",
        "",
        signing_table(r),
        "",
    ]
    if micro and "recordBytes" in micro:  # results saved before SWIM timed heartbeats
        lines += [
            f"Per member record, in one process, {micro['count']:,} of them "
            f"(`--microbench {micro['count']}`; a signed record is {micro['recordBytes']} "
            f"bytes, a SWIM ping frame {micro['pingBytes']}, one carrying a signed ALIVE "
            f"{micro['aliveBytes']}):",
            "",
            micro_table(micro),
            "",
            "An agent signs a record only for a new incarnation of its own (a refutation, a "
            "change of neighbours at most every "
            f"{SWIM_DEFAULT.announce_delay:g} s, a grace) and checks each other member's once "
            "per incarnation, so an idle cluster signs and checks almost nothing; the probes "
            "themselves are not signed (a link's handshake proves its neighbour, a routed "
            "message is signed by the mesh). Idle CPU per agent: "
            f"{baseline['cpuPercentMedian']:g}% at {baseline['commit']}, "
            f"{s['cpuPercentMedian']:g}% now (medians); the target of < "
            f"{r['targetCpuPercent']:g}% is {yes(s['cpuTargetMet'])} (busiest agent "
            f"{s['cpuPercentMax']:g}%).",
            "",
        ]
    return lines


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    """This benchmark's rows of the summary table."""
    s = result["summary"]
    rows = [
        [
            "idle agent CPU",
            f"{s['cpuPercentMax']:g}% of a core (max of {result['agents']})",
            f"< {result['targetCpuPercent']:g}%",
            yes(s["cpuTargetMet"]),
        ]
    ]
    baseline = result.get("baseline")
    if baseline:
        rows.append(
            [
                "idle agent CPU against the unsigned heartbeats of issue 10",
                f"{s['cpuPercentMedian']:g}% of a core (median of {result['agents']}; "
                f"{baseline['cpuPercentMedian']:g}% unsigned, at {baseline['commit']}, "
                "same run)",
                f"< {result['targetCpuPercent']:g}%",
                yes(s["cpuPercentMax"] < result["targetCpuPercent"]),
            ]
        )
    scraped = s.get("scraped")
    if scraped:
        plain = scraped["cpuPercentMedianPlain"]
        against = (
            f"; {plain:g}% without metrics, same run: metrics add "
            f"{scraped['cpuPercentMedian'] - plain:.2f} points"
            if plain is not None
            else ""
        )
        rows.append(
            [
                f"idle agent CPU, metrics scraped every {scraped['interval']:g} s",
                f"{scraped['cpuPercentMedian']:g}% of a core (median of {scraped['agents']}"
                f"{against})",
                f"< {result['targetCpuPercent']:g}%",
                yes(scraped["cpuPercentMedian"] < result["targetCpuPercent"]),
            ]
        )
    rows.append(
        [
            "idle agent RSS",
            f"{s['rssMBMax']:g} MB",
            f"< {result['targetRssMB']:g} MB",
            yes(s["rssTargetMet"]),
        ]
    )
    return rows


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
        help="agent setting override (p2pkube join --set), e.g. swim.probe_interval=0.3",
    )
    parser.add_argument(
        "--scraped",
        type=int,
        default=0,
        metavar="K",
        help="the last K agents serve metrics, scraped every --scrape-interval s",
    )
    parser.add_argument("--scrape-interval", type=float, default=5.0, metavar="S")
    parser.add_argument(
        "--baseline-commit",
        default="",
        metavar="REV",
        help="also measure REV's cluster, from a temporary git worktree, before and after ours",
    )
    parser.add_argument(
        "--microbench",
        type=int,
        default=0,
        metavar="N",
        help="also time signing and checking N member records in this process",
    )
    args = parser.parse_args()
    if not 0 <= args.scraped <= args.agents:
        parser.error("--scraped must be 0..--agents")

    if args.baseline_commit:
        with worktree(args.baseline_commit) as tree:
            baseline = start_at(tree, args)
            try:
                result = measure(args)
            except BaseException:
                baseline.kill()
                raise
            before = result_of(baseline)
        result["baseline"] = baseline_summary(args.baseline_commit, before)
    else:
        result = measure(args)
    if args.microbench:
        result["microbench"] = microbench(args.microbench)
    summary = result["summary"]
    print()
    print(table(result))
    print(
        f"\nagents: CPU max {summary['cpuPercentMax']}% (target < {TARGET_CPU_PERCENT:g}%: "
        f"{'met' if summary['cpuTargetMet'] else 'MISSED'}), RSS max {summary['rssMBMax']} MB "
        f"(target < {TARGET_RSS_MB:g} MB: {'met' if summary['rssTargetMet'] else 'MISSED'}); "
        f"other processes on the machine used {result['otherCores']} cores meanwhile"
    )
    scraped = summary.get("scraped")
    if scraped:
        print(
            f"metrics scraped every {scraped['interval']:g} s: CPU median "
            f"{scraped['cpuPercentMedian']}% with, {scraped['cpuPercentMedianPlain']}% without"
        )
    if "baseline" in result:
        print("\n" + signing_table(result))
    if "microbench" in result:
        print("\n" + micro_table(result["microbench"]))
    emit(result)


if __name__ == "__main__":
    main()
