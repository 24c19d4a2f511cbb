"""Membership and state as the cluster grows: real agents at N = 5, 10, 20 and 40 on this machine.

One size at a time (``--sizes``), a fresh ``LocalCluster`` of N ``p2pkube join`` processes on
loopback, the way bench_idle.py and bench_latency.py start theirs. For each N:

* **join**: seconds from starting the signaling server and all N agents until every agent's
  API answers, until each agent has seen each node Ready (sweeps of every ``/v1/nodes``
  every 0.25 s), and until one sweep finds them all Ready at once (:func:`join_cluster`);
* **idle**: after ``--settle`` s, a quiet window of ``--seconds`` s in which psutil reads each
  agent's CPU time from outside (bench_idle's ``sample``), then RSS (``memory``); no API call
  inside it. ``/v1/status`` is read right before and after it, for membership messages per
  second per agent (the tolerant reader flattens whatever counters ``membership``, and
  ``swim`` when agents run SWIM, hold, and reports the first of :data:`MESSAGE_COUNTERS`
  present, naming it, plus every counter that moved), data-channel bytes (and frames, when
  links count them) per agent per second over ``mesh.neighbours``, links per agent, and the
  Ready flips every agent saw in the window;
* **write visible everywhere**: bench_latency's harness, imported: a ConfigMap watch on every
  agent (``watch_agent``), warm-up writes, then ``--writes`` PUTs ``--interval`` apart on
  :data:`WRITERS` rotating writers (``run_writes``); p50/p99 from the start of a PUT until the
  last agent's watch has it. Next to it bench_latency's TCP relay baseline at the same N
  (``measure_baseline``), run after the cluster is gone;
* **kill -9 detection**: a Node watch on every other agent (bench_sched's ``Tracker`` stamps
  each event as it arrives), then ``SIGKILL`` of one agent; per observer, the time until its
  watch first shows the victim not Ready; median and max. The agent pushes a Node event on a
  liveness transition, so this is exact to the arrival; polling 39 agents every 50 ms would
  be ~800 HTTP requests a second on 2 cores, starving the failure detectors being timed.

The 1-min load average (the machine is shared) is printed and kept at each size.
Run: ``.venv/bin/python -m bench.bench_scale [--sizes 5,10,20,40] [--seconds 20] [--settle 5]
[--writes 50]``; ``--quick`` is ``--sizes 3,5 --seconds 5 --settle 2 --writes 10``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.bench_idle import memory, sample
from bench.bench_latency import measure_baseline, run_writes, watched_writes
from bench.bench_sched import Tracker, node_ready
from bench.benchlib import (
    emit,
    flatten,
    launch,
    machine_busy_seconds,
    markdown_table,
    spread,
    yes,
)
from p2pkube.api.client import ApiClient, ApiClientError
from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.membership.liveness import detection_bound
from p2pkube.membership.settings import SwimSettings

TITLE = "Membership and state as the cluster grows"
"""The heading of this benchmark's section in docs/benchmarks.md."""
TARGET_CPU_RATIO = 1.5
"""Idle CPU per agent at the largest size at most this many times the smallest (issue 13)."""
MB = 1_000_000
MESSAGE_COUNTERS = (
    "messagesSent",
    "swim.sent",
    "heartbeatsSent",
    "messagesReceived",
    "swim.received",
    "heartbeatsAccepted",
)
"""Membership counters that count messages, in order of preference (a suffix of the flattened
name): what the agent sends (SWIM's host counts ``messagesSent``), else what it received;
the heartbeat detector counts only heartbeats accepted (new ones, relayed included)."""
LINK_COUNTERS = ("bytesSent", "bytesReceived", "framesSent", "framesReceived")
"""Per-link counters of ``mesh.neighbours`` summed per agent, when present."""
READY_TIMEOUT = 150.0
"""Longest wait from the start for every agent to have seen every node Ready: 40 agents on
2 cores got there in 78 s in one run, never in 200 s or 300 s in others (starved loops)."""
ALL_AT_ONCE_GRACE = 20.0
"""Once every pair was seen Ready, how long more to wait for a sweep with all Ready at once."""
DETECT_TIMEOUT = 30.0
"""Longest wait after the kill for every observer to see the victim not Ready."""
WRITERS = 5
"""Agents the writes rotate over (visibility is awaited on all N): each writer's warm-up
write (it loads the validation models) on 40 saturated agents took more than the budget."""
STALL_NOTE = 0.05
"""Event-loop stall (s per s) at the largest size above which the section explains it."""
QUICK = {"sizes": "3,5", "seconds": 5.0, "settle": 2.0, "writes": 10}


def ready_flips(status: dict[str, Any]) -> int:
    """Ready/NotReady transitions this agent has seen, summed over the nodes it knows."""
    nodes = status.get("membership", {}).get("nodes", [])
    return sum(int(n.get("transitions", 0)) for n in nodes if isinstance(n, dict))


def membership_counters(status: dict[str, Any]) -> dict[str, float]:
    """The membership counters of one ``/v1/status`` (``membership``, and ``swim`` if a
    future status puts SWIM's at the top level)."""
    return flatten(
        {k: status[k] for k in ("membership", "swim") if isinstance(status.get(k), dict)}
    )


def link_counters(status: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per link (neighbour node id): the counters of :data:`LINK_COUNTERS` it has."""
    links = status.get("mesh", {}).get("neighbours", [])
    return {
        link["node"]: {k: float(link[k]) for k in LINK_COUNTERS if isinstance(link.get(k), int)}
        for link in links
        if isinstance(link, dict) and "node" in link
    }


def link_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Counters summed over an agent's links, after minus before (a link set up inside the
    window counts from zero, one closed inside it is lost: links are stable when idle)."""
    old, new = link_counters(before), link_counters(after)
    total: dict[str, float] = {}
    for node, counters in new.items():
        for key, value in counters.items():
            total[key] = total.get(key, 0.0) + value - old.get(node, {}).get(key, 0.0)
    return total


def rates(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Per-second change of every counter present at both ends."""
    return {k: (after[k] - before[k]) / seconds for k in after if k in before}


def headline(names: Iterable[str]) -> str | None:
    """The first of :data:`MESSAGE_COUNTERS` present among ``names`` (matched as a suffix)."""
    present = list(names)
    for wanted in MESSAGE_COUNTERS:
        for name in present:
            if name == wanted or name.endswith("." + wanted):
                return name
    return None


def statuses(cluster: LocalCluster, names: list[str]) -> dict[str, tuple[float, dict[str, Any]]]:
    """(monotonic time, ``/v1/status``) of every agent."""
    return {n: (time.monotonic(), cluster.api(n, "GET", "/v1/status")) for n in names}


def idle_window(cluster: LocalCluster, names: list[str], seconds: float) -> dict[str, Any]:
    """CPU and RSS per agent measured from outside, and the status counters around it."""
    before = statuses(cluster, names)
    pids = {n: int(status["process"]["pid"]) for n, (_, status) in before.items()}
    busy, own = machine_busy_seconds(), time.process_time()
    start = sample(pids)
    time.sleep(seconds)
    end = sample(pids)
    busy, own = machine_busy_seconds() - busy, time.process_time() - own
    after = statuses(cluster, names)
    cpu = [100 * (end[n][1] - start[n][1]) / (end[n][0] - start[n][0]) for n in names]
    rss = [memory(pids[n])[0] / MB for n in names]
    per_agent_rates: list[dict[str, float]] = []
    per_agent_links: list[dict[str, float]] = []
    for n in names:
        (t0, s0), (t1, s1) = before[n], after[n]
        per_agent_rates.append(rates(membership_counters(s0), membership_counters(s1), t1 - t0))
        per_agent_links.append({k: v / (t1 - t0) for k, v in link_delta(s0, s1).items()})
    counter = headline(per_agent_rates[0])
    moved = sorted({k for r in per_agent_rates for k, v in r.items() if v > 0})
    degrees = [float(len(after[n][1]["mesh"]["neighbours"])) for n in names]
    flips = sum(ready_flips(after[n][1]) - ready_flips(before[n][1]) for n in names)
    own_cores = sum(cpu) / 100
    return {
        "cpuPercent": spread(cpu),
        "rssMB": spread(rss, 1),
        "otherCores": round(max(0.0, busy / seconds - own_cores - own / seconds), 2),
        "membershipCounter": counter,
        "membershipPerSecond": (
            spread([r.get(counter, 0.0) for r in per_agent_rates], 1) if counter else None
        ),
        "membershipRates": {
            k: round(statistics.median(r.get(k, 0.0) for r in per_agent_rates), 2) for k in moved
        },
        "linkPerSecond": {
            k: spread([r.get(k, 0.0) for r in per_agent_links], 0)
            for k in LINK_COUNTERS
            if any(k in r for r in per_agent_links)
        },
        "links": spread(degrees, 0),
        "readyFlips": flips,
        "protocol": str(after[names[0]][1].get("membership", {}).get("protocol", "heartbeat")),
        "loadAverage": round(os.getloadavg()[0], 2),
    }


def join_cluster(
    cluster: LocalCluster, names: list[str], settings: Sequence[str] = ()
) -> dict[str, Any]:
    """Start the signaling server and the N agents; then sweep every agent's ``/v1/nodes``
    (every 0.25 s) until each (viewer, node) pair has been seen Ready.

    ``readySeconds``: from the start until the last pair was first seen Ready (every agent has
    joined every other's view); ``allAtOnceSeconds``: the first sweep in which every pair was
    Ready (what ``benchlib.start_cluster`` waits for; a 40-agent cluster on this machine
    flapped for minutes and never got there in some runs); ``apiSeconds``: until every
    agent's API answered. Pairs never seen Ready within :data:`READY_TIMEOUT` are counted
    and the size is measured anyway: an overloaded cluster's figures are a result too.
    """
    started = time.monotonic()
    launch(cluster, names, settings)
    api = time.monotonic() - started
    pending = {(viewer, node) for viewer in names for node in names}
    ready: float | None = None
    at_once: float | None = None
    while time.monotonic() - started < READY_TIMEOUT:
        seen = ready_pairs(cluster, names)
        pending -= seen
        now = time.monotonic() - started
        if not pending and ready is None:
            ready = now
        if len(seen) == len(names) ** 2:
            at_once = now
            break
        if ready is not None and now - ready > ALL_AT_ONCE_GRACE:
            break
        time.sleep(0.25)
    figures = {
        "apiSeconds": round(api, 1),
        "readySeconds": _round(ready),
        "allAtOnceSeconds": _round(at_once),
        "notReadyPairs": len(pending),
    }
    print(
        f"  APIs up after {api:.1f}s; every pair seen Ready after {_dash(figures['readySeconds'])}"
        f"s, all at once after {_dash(figures['allAtOnceSeconds'])}s"
        + (
            f"; {len(pending)} pairs never Ready; {_view(cluster, min(pending)[0])}"
            if pending
            else ""
        ),
        flush=True,
    )
    return figures


def _view(cluster: LocalCluster, viewer: str) -> str:
    """What one agent's ``/v1/nodes`` says now, or why it cannot say (for the log)."""
    try:
        return f"{viewer} sees {cluster.nodes(viewer)}"
    except Exception as exc:  # any answer that is not a node list is the news here
        return f"{viewer}'s /v1/nodes: {exc!r}"


def _round(value: float | None) -> float | None:
    return value if value is None else round(value, 1)


def ready_pairs(cluster: LocalCluster, names: list[str]) -> set[tuple[str, str]]:
    """(viewer, node) pairs where the viewer sees the node Ready now (an agent that does not
    answer contributes none)."""
    pairs: set[tuple[str, str]] = set()
    for viewer in names:
        try:
            view = cluster.nodes(viewer)
        except (ApiClientError, OSError):
            continue
        pairs |= {(viewer, node) for node in names if view.get(node) == "True"}
    return pairs


def write_visibility(
    cluster: LocalCluster, names: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """bench_latency's write-to-visible-everywhere run on this cluster (its harness, its
    ConfigMaps, a watch on every agent)."""
    arrivals, write = watched_writes(cluster, names)
    writers = min(WRITERS, len(names))
    result = run_writes(arrivals, write, writers, args.writes, args.interval, "")
    return {k: result[k] for k in ("visible", "ack", "lost", "seconds")}


def ready_flags(node: dict[str, Any]) -> tuple[str, set[str]]:
    """Tracker flags of a Node: ``ready`` or ``notReady``, first-seen times kept per node."""
    return node["metadata"]["name"], {"ready" if node_ready(node) else "notReady"}


def kill_detection(cluster: LocalCluster, names: list[str]) -> dict[str, Any]:
    """``kill -9`` the last agent; per other agent, seconds until its Node watch shows it
    not Ready (see the module docstring)."""
    victim, observers = names[-1], names[:-1]
    trackers = {
        n: Tracker(ApiClient.from_data_dir(cluster.root / n), "Node", flags=ready_flags)
        for n in observers
    }
    try:
        wait_until(
            lambda: all((victim, "ready") in t.first_seen for t in trackers.values()),
            30,
            what=f"every observer's Node watch to list {victim} Ready",
        )
        early = [n for n, t in trackers.items() if (victim, "notReady") in t.first_seen]
        killed = time.monotonic()
        cluster.kill(victim)
        late = [n for n in observers if n not in early]

        def all_seen() -> bool:
            return all((victim, "notReady") in trackers[n].first_seen for n in late)

        try:
            wait_until(all_seen, DETECT_TIMEOUT, interval=0.1, what=f"{victim} NotReady")
        except TimeoutError:
            pass  # reported as missed
        seen = [
            trackers[n].first_seen[(victim, "notReady")] - killed
            for n in late
            if (victim, "notReady") in trackers[n].first_seen
        ]
    finally:
        for tracker in trackers.values():
            tracker.close()
    return {
        "victim": victim,
        "observers": len(observers),
        "seconds": spread(seen) if seen else None,
        "missed": len(late) - len(seen),
        "flappedBefore": len(early),
        "errors": sorted({t.error for t in trackers.values() if t.error}),
    }


def measure_size(size: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Every figure of one cluster size (the cluster is gone when it returns)."""
    load = os.getloadavg()[0]
    print(f"\n{size} agents: load average (1 min) {load:.2f}; starting...", flush=True)
    cluster = LocalCluster(root / f"scale-{size}")
    names = [f"n{i}" for i in range(1, size + 1)]
    try:
        join = join_cluster(cluster, names, args.set)
        time.sleep(args.settle)
        idle = idle_window(cluster, names, args.seconds)
        print_idle(idle)
        visible = attempt("writes", lambda: write_visibility(cluster, names, args))
        print_visible("write visible everywhere", visible)
        time.sleep(2)  # the writes' relaying and anti-entropy settle before the kill
        detection = attempt("kill -9", lambda: kill_detection(cluster, names))
        print_detection(detection)
    finally:
        cluster.close()
    baseline = measure_baseline(
        size, argparse.Namespace(writes=args.writes, interval=args.interval)
    )
    print_visible("TCP relay baseline", baseline)
    return {
        "agents": size,
        "loadAverage": round(load, 2),
        "loadAverageAfterIdle": idle["loadAverage"],
        **join,
        "idle": idle,
        "visible": visible,
        "tcpBaseline": {k: baseline[k] for k in ("visible", "ack", "lost")},
        "detection": detection,
    }


def attempt(what: str, part: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A part's figures, or ``{"error": ...}`` when it failed or timed out: a saturated
    machine is a result at the largest sizes, and the other sizes still count."""
    try:
        return part()
    except (RuntimeError, TimeoutError, ApiClientError) as exc:
        print(f"  {what} failed: {exc}", flush=True)
        return {"error": f"{type(exc).__name__}: {exc}"}


def print_visible(label: str, r: dict[str, Any]) -> None:
    if "error" not in r:
        v = r["visible"]
        print(f"  {label}: p50 {v['p50']} ms, p99 {v['p99']} ms, lost {r['lost']}", flush=True)


def print_idle(idle: dict[str, Any]) -> None:
    cpu, rss = idle["cpuPercent"], idle["rssMB"]
    counter, rate = idle["membershipCounter"], idle["membershipPerSecond"] or {}
    membership = f"{rate['median']}/s ({counter})" if counter else "no counter"
    print(
        f"  idle: CPU {cpu['median']}% (max {cpu['max']}%) of a core per agent, RSS "
        f"{rss['median']} MB (max {rss['max']}); membership {membership}; links "
        f"{idle['links']['median']:g} (max {idle['links']['max']:g}); Ready flips "
        f"{idle['readyFlips']}; other processes {idle['otherCores']} cores; load average now "
        f"{idle['loadAverage']:.2f}",
        flush=True,
    )


def print_detection(d: dict[str, Any]) -> None:
    s = d.get("seconds")
    if "error" in d:
        return
    seen = f"median {s['median']}s, max {s['max']}s" if s else "by nobody"
    print(
        f"  kill -9 {d['victim']}: NotReady on {d['observers'] - d['missed']}/{d['observers']} "
        f"observers, {seen}"
        + (f"; {d['flappedBefore']} saw it NotReady before the kill" if d["flappedBefore"] else "")
        + (f"; errors {d['errors']}" if d["errors"] else ""),
        flush=True,
    )


# --- report -----------------------------------------------------------------------------------


def _dash(value: Any) -> Any:
    """A figure, or ``-`` for none (as benchlib renders NaN)."""
    return "-" if value is None else value


def table(result: dict[str, Any]) -> str:
    """Both tables, cost then timing (also rendered into docs/benchmarks.md)."""
    return idle_table(result) + "\n\n" + timing_table(result)


def idle_table(result: dict[str, Any]) -> str:
    """What an idle agent costs at each size: CPU, memory, messages, bytes, links."""
    rows = []
    for r in result["results"]:
        idle = r["idle"]
        link = idle["linkPerSecond"]
        membership = idle["membershipPerSecond"] or {}
        rows.append(
            [
                r["agents"],
                r["loadAverage"],
                idle["cpuPercent"]["median"],
                idle["cpuPercent"]["max"],
                round(idle["cpuPercent"]["median"] * r["agents"] / 100, 2),
                idle["rssMB"]["median"],
                idle["rssMB"]["max"],
                _dash(membership.get("median")),
                _dash(link.get("bytesSent", {}).get("median")),
                _dash(link.get("framesSent", {}).get("median")),
                f"{idle['links']['median']:g} / {idle['links']['max']:g}",
                idle["readyFlips"],
            ]
        )
    headers = ["agents", "load 1 min", "idle CPU % median", "max", "cluster cores"]
    headers += ["RSS MB median", "max", "membership msg/s", "link bytes/s sent"]
    return markdown_table([*headers, "frames/s sent", "links median / max", "Ready flips"], rows)


def timing_table(result: dict[str, Any]) -> str:
    """Join, detection and write visibility at each size, with the TCP relay baseline."""
    rows = []
    for r in result["results"]:
        d, v = r["detection"], r["visible"].get("visible", {})
        seconds = d.get("seconds") or {}
        rows.append(
            [
                r["agents"],
                r["apiSeconds"],
                _dash(r["readySeconds"]),
                _dash(r["allAtOnceSeconds"]),
                _dash(seconds.get("median")),
                _dash(seconds.get("max")),
                _dash(d.get("missed")),
                _dash(v.get("p50")),
                _dash(v.get("p99")),
                _dash(r["visible"].get("lost")),
                r["tcpBaseline"]["visible"]["p50"],
                r["tcpBaseline"]["visible"]["p99"],
            ]
        )
    headers = ["agents", "APIs up s", "every pair Ready s", "all at once s"]
    headers += ["kill -9 to NotReady s median", "max", "missed"]
    headers += ["visible p50 ms", "p99", "lost", "TCP relay p50 ms", "TCP relay p99"]
    return markdown_table(headers, rows)


def cpu_ratio(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], float]:
    """(smallest size, largest size, idle CPU per agent of the largest / the smallest)."""
    ordered = sorted(result["results"], key=lambda r: r["agents"])
    low, high = ordered[0], ordered[-1]
    base = max(low["idle"]["cpuPercent"]["median"], 1e-9)
    return low, high, high["idle"]["cpuPercent"]["median"] / base


def render(r: dict[str, Any]) -> list[str]:
    """The setup, the per-size table, the CPU target and what limits the figures."""
    low, high, ratio = cpu_ratio(r)
    counters = sorted({x["idle"]["membershipCounter"] or "none" for x in r["results"]})
    moved = sorted({k for x in r["results"] for k in x["idle"]["membershipRates"]})
    return [
        "Real agents (`p2pkube join`) on this machine, one cluster size at a time, each "
        f"started with `--max-peers {r['maxPeers']}`"
        + "".join(f" `--set {setting}`" for setting in r.get("settings") or [])
        + " (a target degree: a random jitter and "
        "accepted inbound offers may add a few). Joining, from starting the signaling server "
        "and all N agents: until every agent's API answers (*APIs up*), until every agent has "
        "seen every node Ready (*every pair Ready*), and until one sweep of every agent's "
        f"`/v1/nodes` found them all Ready at once (*all at once*; `-` when none did within "
        f"{ALL_AT_ONCE_GRACE:g} s more). Idle: after "
        f"{r['settleSeconds']:g} s of settling, CPU (% of one core) and RSS of each agent read "
        f"from outside with psutil over {r['seconds']:g} s, no API call in that window; "
        "membership messages per second per agent from the status counter "
        f"{', '.join(f'`{c}`' for c in counters)} (counters that moved: "
        f"{', '.join(f'`{m}`' for m in moved) or 'none'}); link bytes and frames from the "
        "links' counters in `/v1/status` (`-` when the links do not count frames). "
        f"*kill -9*: one agent killed; per other agent, until its Node watch shows it not "
        f"Ready ({_detector(r)}); *missed*: observers that did not within "
        f"{DETECT_TIMEOUT:g} s. *Ready flips*: Ready/NotReady transitions all agents saw "
        "during the idle window (a false alarm is one). *visible*: bench_latency's harness on "
        f"the same cluster, {r['writes']} ConfigMap writes {r['intervalSeconds'] * 1000:g} ms "
        f"apart through {WRITERS} rotating writers, PUT start until the last of the N agents' "
        "watches has it (*lost*: writes not everywhere 15 s after the last); *TCP*: "
        "bench_latency's TCP relay baseline at the same N.",
        "",
        table(r),
        "",
        *failures(r),
        f"**Target** idle CPU per agent at {high['agents']} agents at most "
        f"{TARGET_CPU_RATIO:g}x the {low['agents']}-agent figure: "
        f"{yes(ratio <= TARGET_CPU_RATIO)} ({high['idle']['cpuPercent']['median']:g}% vs "
        f"{low['idle']['cpuPercent']['median']:g}% of a core, {ratio:.2f}x).",
        "",
        _limits(r),
    ]


def _detector(r: dict[str, Any]) -> str:
    """The membership protocol the agents ran and its detection timing (default settings)."""
    if {x["idle"].get("protocol") for x in r["results"]} != {"swim"}:
        return "the heartbeat failure detector of the commit measured"
    swim = SwimSettings()
    bounds = ", ".join(
        f"{detection_bound(swim, x['agents']):.2f} s at {x['agents']}" for x in r["results"]
    )
    return (
        f"SWIM with Lifeguard, a probe every {swim.probe_interval:g} s; DEAD everywhere "
        f"without load within `detection_bound`: {bounds}"
    )


def _limits(r: dict[str, Any]) -> str:
    """What limits the figures: the shared cores (how busy the largest cluster kept them) and
    how the membership protocol measured scales its messages."""
    ordered = sorted(r["results"], key=lambda x: x["agents"])
    low, high = ordered[0], ordered[-1]
    cluster_cores = high["idle"]["cpuPercent"]["median"] * high["agents"] / 100
    counter = high["idle"]["membershipCounter"] or ""
    rate = (high["idle"]["membershipPerSecond"] or {}).get("median")
    low_rate = (low["idle"]["membershipPerSecond"] or {}).get("median")
    growth = (
        f" (`{counter}`: {low_rate:g}/s per agent at {low['agents']}, {rate:g}/s at "
        f"{high['agents']})"
        if rate is not None and low_rate is not None
        else ""
    )
    protocol = (
        "SWIM probes a constant number of members per period and piggybacks changes on those "
        "messages, so its membership messages per agent should stay flat as N grows"
        if high["idle"].get("protocol") == "swim"
        else "With heartbeats every agent sends one per second on every link and relays "
        "everyone else's, so the membership messages each agent handles grow with N and the "
        "cluster's with N²"
    )
    return (
        f"**What limits it**: every agent and this bench share the machine's {os.cpu_count()} "
        f"cores; at {high['agents']} agents the idle cluster alone kept {cluster_cores:.2f} "
        "of them busy (other processes during the idle windows: "
        + ", ".join(f"{x['idle']['otherCores']:g}" for x in ordered)
        + f" cores; the load average is in the table). {protocol}{growth}; each message is "
        "a DTLS record and an SCTP chunk through aiortc's pure-Python stack. Once the agents "
        "saturate the cores, joining, write visibility and detection all queue behind them: "
        "that, not the network, is what the largest sizes measure."
        + (_SATURATED.format(n=high["agents"]) if saturated(high) else "")
        + _stalls(high)
    )


_SATURATED = (
    " At {n} agents the cluster and the other processes used nearly every core, so the CPU "
    "per agent is what the machine could give, not what the agents asked for: it understates "
    "their demand, and the probes that starved loops never sent make the message rate lower."
)


def saturated(x: dict[str, Any]) -> bool:
    """Whether a size's cluster and the other processes kept 80% of the cores busy."""
    cores = x["idle"]["cpuPercent"]["median"] * x["agents"] / 100 + x["idle"]["otherCores"]
    return cores >= 0.8 * (os.cpu_count() or 1)


def _stalls(x: dict[str, Any]) -> str:
    """The largest size's event-loop stalls, when they were large enough to matter."""
    stalled = x["idle"]["membershipRates"].get("membership.stalledSeconds", 0.0)
    if stalled < STALL_NOTE:
        return ""
    detect = (x["detection"].get("seconds") or {}).get("median")
    return (
        f" At {x['agents']} agents each agent's event loop was stalled {stalled:g} s per "
        "second while idle (median, `membership.stalledSeconds`): time its failure detector "
        "does not count against others (Lifeguard's local health), so a kill was seen "
        f"after {_dash(detect)} s (median) instead of the timeout, and "
        f"{x['idle']['readyFlips']} Ready flips happened in the idle window."
    )


def failures(r: dict[str, Any]) -> list[str]:
    """A line per size that never was Ready everywhere, and per part that did not finish
    (``-`` in the tables), and why."""
    lines = [
        f"* {x['agents']} agents, join: {x['notReadyPairs']} of {x['agents'] ** 2} (viewer, "
        f"node) pairs never seen Ready within {READY_TIMEOUT:g} s; the rest measured anyway"
        for x in r["results"]
        if x["notReadyPairs"]
    ]
    lines += [
        f"* {x['agents']} agents, {part}: {x[key]['error']}"
        for x in r["results"]
        for part, key in (("writes", "visible"), ("kill -9", "detection"))
        if "error" in x[key]
    ]
    return ["Not measured:", "", *lines, ""] if lines else []


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    """This benchmark's row of the summary table: idle CPU per agent, largest vs smallest N."""
    low, high, ratio = cpu_ratio(result)
    return [
        [
            f"idle CPU per agent, {high['agents']} vs {low['agents']} agents",
            f"{ratio:.2f}x ({high['idle']['cpuPercent']['median']:g}% vs "
            f"{low['idle']['cpuPercent']['median']:g}% of a core, medians"
            + ("; machine saturated at the largest size)" if saturated(high) else ")"),
            f"<= {TARGET_CPU_RATIO:g}x",
            yes(ratio <= TARGET_CPU_RATIO),
        ]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5,10,20,40", help="cluster sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="idle measurement window")
    parser.add_argument("--settle", type=float, default=5.0, help="quiet time before it")
    parser.add_argument("--writes", type=int, default=50, help="measured writes per size")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between writes")
    parser.add_argument("--quick", action="store_true", help="small sizes, short windows")
    parser.add_argument("--keep", action="store_true", help="keep the clusters' data dirs")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an agent setting for every agent, e.g. swim.suspicion_flat_members=100 (repeatable)",
    )
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="p2pkube-bench-scale-"))
    started = time.monotonic()
    try:
        results = [measure_size(size, args, root) for size in sizes]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    result = {
        "bench": "scale",
        "sizes": sizes,
        "seconds": args.seconds,
        "settleSeconds": args.settle,
        "writes": args.writes,
        "intervalSeconds": args.interval,
        "maxPeers": LocalCluster.max_peers,
        "settings": args.set,
        "totalSeconds": round(time.monotonic() - started, 1),
        "results": results,
    }
    low, high, ratio = cpu_ratio(result)
    print()
    print(table(result))
    print(
        f"\nidle CPU per agent at {high['agents']} vs {low['agents']} agents: {ratio:.2f}x "
        f"(target <= {TARGET_CPU_RATIO:g}x: {'met' if ratio <= TARGET_CPU_RATIO else 'MISSED'});"
        f" whole run {result['totalSeconds']:.0f}s"
    )
    emit(result)


if __name__ == "__main__":
    main()
