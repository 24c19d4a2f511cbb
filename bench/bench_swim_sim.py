"""Membership at sizes this machine cannot run as agents: the real SWIM core, simulated.

For each N of ``--sizes`` it runs the scenarios of :mod:`harness.swimscenarios` on N real
``SwimNode`` cores (p2pkube/membership/swim.py, the agents' default ``SwimSettings``) in one
process, on a virtual clock and a simulated LAN (harness/swimsim.py), each scenario on a fresh
cluster whose nodes all start knowing each other:

* ``steady``: a quiet cluster: messages and bytes each node sends and receives per second;
* ``crash``: ``--crashes`` nodes stop for good, 20 s apart: time to the first SUSPECT, the
  first DEAD, and DEAD on every live node;
* ``stall``: 10% of the nodes stall for 2 s (their loop runs nothing; what arrives waits):
  false positives (DEAD of a node that never crashed), with Lifeguard and with its local
  health, dynamic suspicion timeout and the core's stall compensation off, same seed;
* ``starve``: 10% of the nodes short of CPU for 30 s (each message and timer handled a
  random 0-1 s late: Lifeguard's experiment), with Lifeguard and without;
* ``loss``: 5% of all messages lost for ``--loss-seconds``, a crash half way;
* ``partition``: two halves, until each sees the other DEAD, then healed: until every node
  sees every node ALIVE;
* ``flood``: a write flooding the agents' mesh (``max_peers`` = 8 links per node): time to
  reach 99% of the nodes, network only and with aiortc's CPU cost per message sent.

Before a size it projects the memory that size needs from the last one (every core holds
every member: N² entries) and skips what would not fit, saying so. docs/scale.md says what
the model leaves out.

Run: ``.venv/bin/python -m bench.bench_swim_sim [--sizes 100,1000] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import resource
import time
from collections.abc import Callable
from typing import Any

import psutil

from bench.benchlib import emit, markdown_table, yes
from harness import swimscenarios as scenarios
from harness.swimsim import NetworkModel

TITLE = "Membership at scale (simulated SWIM + Lifeguard)"
"""The heading of this benchmark's section in docs/benchmarks.md."""
SCENARIOS = ("steady", "crash", "stall", "starve", "loss", "partition", "flood")
TARGET_DETECTION_S = 3.0
"""Issue 13: a crash is detected (DEAD) in under 3 s on a LAN: up to the size over which
the suspicion floor stays flat (``swim.suspicion_flat_members``); beyond, it grows with
log N by design, and the target is the floor + this margin."""
BEYOND_FLAT_MARGIN_S = 1.0
AIORTC_SEND_COST = 0.0005
"""CPU seconds aiortc spends per data-channel message sent (DTLS + SCTP in Python, plus its
SACK), as measured for the flooded heartbeats SWIM replaced (bench/bench_idle.py, issue 10)."""
SWIM_FIRST_DETECTION_PERIODS = math.e / (math.e - 1)
"""SWIM (Das, Gupta, Motivala 2002): with each member probing one random member per period,
a crashed member is first probed, in expectation, after e/(e-1) ≈ 1.58 periods, whatever N."""


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux


def measure_size(
    n: int, args: argparse.Namespace, wanted: set[str], deadline: float
) -> dict[str, Any]:
    """Every wanted scenario at size ``n``; those that would start after ``deadline``
    (``time.monotonic()``) are left out and listed under ``leftOut``."""
    started = time.perf_counter()
    out: dict[str, Any] = {"n": n}

    def config(**kw: Any) -> scenarios.ClusterConfig:
        return scenarios.ClusterConfig(n=n, seed=args.seed, **kw)

    off, changed = scenarios.lifeguard_off(scenarios.default_settings())
    runs: list[tuple[str, Callable[[], Any]]] = [
        ("steady", lambda: scenarios.steady(config(), args.steady_seconds or None)),
        ("crash", lambda: scenarios.crash(config(), crashes=args.crashes)),
        ("stall", lambda: scenarios.stall(config())),
        (
            "stallLifeguardOff",
            lambda: {**scenarios.stall(config(settings=off)), "changed": changed},
        ),
        ("starve", lambda: scenarios.starve(config())),
        (
            "starveLifeguardOff",
            lambda: {**scenarios.starve(config(settings=off)), "changed": changed},
        ),
        ("loss", lambda: scenarios.loss(config(), args.loss, args.loss_seconds)),
        ("partition", lambda: scenarios.partition(config())),
        ("flood", lambda: flood(n, args)),
    ]
    left_out = []
    for key, run in runs:
        if key.removesuffix("LifeguardOff") not in wanted:
            continue
        too_big = _too_big(key, n, args)
        if too_big:
            out[key] = {"skipped": too_big}
        elif time.monotonic() > deadline:
            left_out.append(key)
        else:
            out[key] = run()
            if key != "flood":
                print_row(key, out[key])
    if left_out:
        out["leftOut"] = left_out
    out["wallSeconds"] = round(time.perf_counter() - started, 1)
    out["peakRssMB"] = round(peak_rss_mb(), 1)
    return out


def _too_big(key: str, n: int, args: argparse.Namespace) -> str | None:
    """Why scenario ``key`` is not run at ``n`` (None: it is)."""
    if key == "partition" and n > args.partition_max:
        return f"N > --partition-max {args.partition_max}"
    if key.startswith("starve") and n > args.starve_max:
        return f"N > --starve-max {args.starve_max}"
    return None


def flood(n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The write flood: network only, with aiortc's send cost, and with loss on top."""
    writes = max(3, min(20, 200_000 // n))
    rows = [
        scenarios.flood(n, args.seed, writes=writes),
        scenarios.flood(n, args.seed, writes=writes, send_cost=AIORTC_SEND_COST),
        scenarios.flood(
            n,
            args.seed,
            writes=writes,
            send_cost=AIORTC_SEND_COST,
            network=NetworkModel(loss=args.loss),
        ),
    ]
    for row in rows:
        print_row("flood", row)
    return rows


def print_row(name: str, figures: dict[str, Any]) -> None:
    brief = {k: v for k, v in figures.items() if k not in ("crashes", "sentByKind", "bytesByKind")}
    print(f"  {name}: {brief}", flush=True)


def projection(n: int, previous: dict[str, Any] | None, baseline_mb: float) -> str | None:
    """Why size ``n`` cannot run here (None: it can): the memory it needs, projected from the
    last size run (every core holds every member: N² entries)."""
    if previous is None or "peakRssMB" not in previous:
        return None
    m = previous["n"]
    per_pair = max(0.0, previous["peakRssMB"] - baseline_mb) / (m * m)
    need = per_pair * n * n
    available = psutil.virtual_memory().available / 1e6
    if need > 0.8 * available:
        return (
            f"needs about {need / 1e3:,.0f} GB ({per_pair * 1e6:,.0f} bytes per member entry "
            f"at N = {m:,}, N² entries), {available / 1e3:,.0f} GB available"
        )
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="40,100,1000", help="comma-separated N")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--steady-seconds",
        type=float,
        default=0.0,
        help="the quiet window; 0: one long-run push/pull period (one exchange per node)",
    )
    parser.add_argument("--crashes", type=int, default=3)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--loss-seconds", type=float, default=60.0)
    parser.add_argument(
        "--partition-max", type=int, default=2000, help="largest N to split (N² pairs tracked)"
    )
    parser.add_argument(
        "--starve-max",
        type=int,
        default=100,
        help="largest N to starve (every starved node is suspected by every node, over and "
        "over: about N² suspicions and refutations, ~15 s at 100, far more at 1,000)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=0.0,
        help="start no scenario after this many seconds (0: no limit); those left are listed",
    )
    args = parser.parse_args()
    wanted = {s for s in args.scenarios.split(",") if s}
    unknown = wanted - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    baseline = rss_mb()
    settings = scenarios.default_settings()
    result: dict[str, Any] = {
        "bench": "swim_sim",
        "seed": args.seed,
        "settings": dataclasses.asdict(settings),
        "latency": dataclasses.asdict(NetworkModel().latency),
        "scenarios": sorted(wanted, key=SCENARIOS.index),
        "loss": args.loss,
        "lossSeconds": args.loss_seconds,
        "sizes": [],
    }
    previous: dict[str, Any] | None = None
    deadline = time.monotonic() + args.time_limit if args.time_limit > 0 else math.inf
    for n in (int(s) for s in args.sizes.split(",") if s):
        reason = projection(n, previous, baseline)
        if reason:
            print(f"N = {n:,}: skipped: {reason}", flush=True)
            result["sizes"].append({"n": n, "skipped": reason})
            continue
        print(f"N = {n:,}", flush=True)
        previous = measure_size(n, args, wanted, deadline)
        result["sizes"].append(previous)
        print(f"  {previous['wallSeconds']} s, peak RSS {previous['peakRssMB']} MB", flush=True)
    print()
    for line in render(result):
        print(line)
    emit(result)


# -- the section of docs/benchmarks.md ------------------------------------------------------


def _ran(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in result["sizes"] if "skipped" not in s]


def _t(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _span(stats: dict[str, Any]) -> str:
    """``median / max`` seconds, and how many never happened within the bound."""
    text = f"{_t(stats['median'])} / {_t(stats['max'])}"
    return text + (f" ({stats['missed']} missed)" if stats["missed"] else "")


def load_table(result: dict[str, Any]) -> str:
    rows = []
    for size in _ran(result):
        s, c = size.get("steady"), size.get("crash")
        rows.append(
            [
                size["n"],
                s["sentPerNode"] if s else "-",
                s["sentPerNodeMax"] if s else "-",
                s["bytesPerNode"] if s else "-",
                s["receivedPerNodeMax"] if s else "-",
                _span(c["suspect"]) if c else "-",
                _span(c["dead"]) if c else "-",
                _span(c["deadEverywhere"]) if c else "-",
                size["wallSeconds"],
                size["peakRssMB"],
            ]
        )
    return markdown_table(
        [
            "N",
            "msgs sent/node/s",
            "max",
            "bytes sent/node/s",
            "msgs received/node/s, max",
            "crash → 1st SUSPECT s (median / max)",
            "→ 1st DEAD s",
            "→ DEAD everywhere s",
            "wall s",
            "peak RSS MB",
        ],
        rows,
    )


def _split(part: dict[str, Any]) -> str:
    if not part:
        return "-"
    if part["splitSeconds"] is not None:
        return _t(part["splitSeconds"])
    share = part["deadPairsAtHeal"] / part["crossPairs"]
    return f"not within {part['splitBound']:g} s ({share:.0%} of the pairs; healed then)"


def _heal(part: dict[str, Any]) -> str:
    if not part:
        return "-"
    if part["healSeconds"] is not None:
        return _t(part["healSeconds"])
    return f"not within {part['healBound']:g} s ({part['notAliveLeft']:,} pairs left)"


def slow_table(result: dict[str, Any]) -> str:
    rows = []
    for size in _ran(result):
        for key, what in (("stall", "stalled 2 s"), ("starve", "starved 30 s")):
            for suffix, lifeguard in (("", "on"), ("LifeguardOff", "off")):
                f = size.get(key + suffix)
                if not f or "skipped" in f:
                    continue
                rows.append(
                    [
                        size["n"],
                        f"{f['slowNodes']} {what}",
                        lifeguard,
                        f["falseDeadOfSlow"],
                        f["falseDeadOfOthers"],
                        f["falseSuspectNodes"],
                        f["suspicions"],
                        f["refutations"],
                        _t(f["allAliveAfter"]),
                    ]
                )
    return markdown_table(
        [
            "N",
            "slow nodes",
            "Lifeguard",
            "DEAD of a slow node",
            "DEAD of a healthy node",
            "nodes ever SUSPECT",
            "suspicions raised",
            "refutations",
            "all ALIVE again after s",
        ],
        rows,
    )


def _of(count: int, nodes: int) -> str:
    return f"{count} (of {nodes} nodes)" if count else "0"


def network_table(result: dict[str, Any]) -> str:
    rows = []
    for size in _ran(result):
        loss, part = size.get("loss"), size.get("partition") or {}
        rows.append(
            [
                size["n"],
                loss["sentPerNode"] if loss else "-",
                _of(loss["falseDead"], loss["falseDeadNodes"]) if loss else "-",
                loss["falseSuspectNodes"] if loss else "-",
                _span(loss["deadEverywhere"]) if loss else "-",
                part.get("skipped") or _split(part),
                part.get("skipped") or _heal(part),
            ]
        )
    return markdown_table(
        [
            "N",
            "5% loss: msgs sent/node/s",
            "false DEAD",
            "nodes ever SUSPECT",
            "crash → DEAD everywhere s",
            "halves: each sees the other DEAD after s",
            "healed: all ALIVE after s",
        ],
        rows,
    )


def flood_table(result: dict[str, Any]) -> str:
    rows = []
    for size in _ran(result):
        for f in size.get("flood") or []:
            rows.append(
                [
                    size["n"],
                    f["meanDegree"],
                    f["sendCostMs"],
                    f"{f['loss']:.0%}",
                    f["to99ms"]["median"] or "-",
                    f["to99ms"]["max"] or "-",
                    f["toAllMs"]["max"] or "-",
                ]
            )
    return markdown_table(
        [
            "N",
            "mean links",
            "CPU per send ms",
            "loss",
            "to 99% ms, median",
            "max",
            "to all ms, max",
        ],
        rows,
    )


def render(r: dict[str, Any]) -> list[str]:
    st = r["settings"]
    skipped = [s for s in r["sizes"] if "skipped" in s]
    period = st.get("probe_interval", math.nan)
    lines = [
        "The real SWIM + Lifeguard core (`p2pkube/membership/swim.py`, default "
        "`SwimSettings`) at sizes this machine cannot run as agents: N cores in one process "
        "on a virtual clock and a simulated LAN (`harness/swimsim.py`; what it models and "
        f"what it leaves out: [scale.md](scale.md)). Seed {r['seed']}; each scenario on a "
        "fresh cluster whose nodes start knowing each other. Settings: "
        + ", ".join(
            f"`{k}` {v}"
            for k, v in st.items()
            if isinstance(v, int | float) and not k.startswith("max_")
        )
        + ".",
        "",
        "**Load and crash detection** (steady: a quiet cluster; crash: nodes stopped for good, "
        "one at a time):",
        "",
        load_table(r),
        "",
        "**Slow nodes** (no node crashed: every DEAD is false). 10% of the nodes *stalled* "
        "for 2 s, within one second (their loop runs nothing; what arrives waits), or "
        "*starved* for 30 s (short of CPU: each handles every message and timer a random "
        "0-1 s late; Lifeguard's experiment); each run again with the same seed and "
        f"Lifeguard off ({', '.join(_changed(r)) or 'n/a'}: plain SWIM with suspicion). "
        "*Nodes ever SUSPECT*: distinct nodes any node suspected; *suspicions raised*: "
        "probes that failed into a suspicion:",
        "",
        slow_table(r),
        "",
        f"**The network**: {r.get('loss', 0.05):.0%} of all messages lost for "
        f"{r.get('lossSeconds', 60):g} s with a crash half way; the cluster cut in two "
        "halves, healed once each half saw the other DEAD:",
        "",
        network_table(r),
        "",
        "**A write flooding the agents' mesh** (state sync's path, not SWIM's): each node "
        "links to up to 8 others; a node forwards a new write to its other links one after "
        "the other; a lost message is retransmitted after 1 s (aiortc's SCTP minimum RTO):",
        "",
        flood_table(r),
        "",
    ]
    too_big = [
        f"N = {s['n']:,}: {key} ({f['skipped']})"
        for s in _ran(r)
        for key, f in s.items()
        if key != "partition" and isinstance(f, dict) and "skipped" in f
    ]
    if too_big:
        lines += ["Not run at this size: " + "; ".join(too_big) + ".", ""]
    left = [s for s in _ran(r) if s.get("leftOut")]
    if left:
        lines += [
            "Left out for the run's `--time-limit`: "
            + "; ".join(f"N = {s['n']:,}: {', '.join(s['leftOut'])}" for s in left)
            + ".",
            "",
        ]
    if skipped:
        lines += [
            "Not run: " + "; ".join(f"N = {s['n']:,}: {s['skipped']}" for s in skipped) + ".",
            "",
        ]
    lines.append(
        "**Against the published expectations**: SWIM's load per member is constant (one "
        "probe and its ack per period, plus k indirect probes when one fails) and its first "
        f"detection comes after e/(e-1) ≈ {SWIM_FIRST_DETECTION_PERIODS:.2f} periods in "
        f"expectation ({SWIM_FIRST_DETECTION_PERIODS * period:.2f} s at `probe_interval` "
        f"{period}), independent of N; the suspicion that follows lasts "
        "`suspicion_mult` * log10(N) periods at least (Lifeguard shrinks it from its maximum "
        "as other members confirm), so DEAD grows with log N by design. Lifeguard's authors "
        "report false positives cut by more than an order of magnitude when members are "
        "starved of CPU; the slow-node rows compare the same runs with its parts off. **What "
        "limits it**: every core holds every member, so one process holds N² entries; the "
        "model leaves out the CPU a message costs an agent (DTLS, SCTP, signing) except in "
        "the flood's second and third rows."
    )
    return lines


def _changed(r: dict[str, Any]) -> list[str]:
    for size in _ran(r):
        off = size.get("stallLifeguardOff") or size.get("starveLifeguardOff")
        if off:
            return [f"`{name}` {value}" for name, value in off.get("changed", {}).items()]
    return []


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    """This benchmark's rows of the summary table."""
    sizes = _ran(result)
    steady = [(s["n"], s["steady"]) for s in sizes if "steady" in s]
    crash = [(s["n"], s["crash"]) for s in sizes if "crash" in s]
    stall = [(s["n"], s["stall"]) for s in sizes if "stall" in s]
    rows = []
    if steady:
        rates = [f["sentPerNode"] for _, f in steady]
        rows.append(
            [
                "simulated SWIM: messages sent per node per s",
                ", ".join(f"{f['sentPerNode']:g} at N = {n:,}" for n, f in steady),
                "independent of N",
                yes(max(rates) <= 1.5 * min(rates)),
            ]
        )
    if crash:
        swim = _swim_settings(result["settings"])
        flat = swim.suspicion_flat_members
        bounds = {n: _detection_target(swim, n) for n, _ in crash}
        rows.append(
            [
                "simulated SWIM: crash to first DEAD",
                ", ".join(f"max {_t(f['dead']['max'])} s at N = {n:,}" for n, f in crash),
                f"< {TARGET_DETECTION_S:g} s up to N = {flat:,} (LAN); beyond, the suspicion "
                f"floor (log N) + {BEYOND_FLAT_MARGIN_S:g} s",
                yes(
                    all(
                        f["dead"]["max"] is not None and f["dead"]["max"] < bounds[n]
                        for n, f in crash
                    )
                ),
            ]
        )
    rows += _starve_rows(sizes)
    if stall:
        rows.append(
            [
                "simulated SWIM: DEAD of a node stalled 2 s (10% stalled)",
                ", ".join(f"{f['falseDead']:,} at N = {n:,}" for n, f in stall),
                "0",
                yes(all(f["falseDead"] == 0 for _, f in stall)),
            ]
        )
    return rows


def _swim_settings(settings: dict[str, Any]) -> Any:
    """The ``SwimSettings`` a result ran with (fields it does not name: today's defaults)."""
    from p2pkube.membership.settings import SwimSettings

    known = {f.name for f in dataclasses.fields(SwimSettings)}
    return SwimSettings(**{k: v for k, v in settings.items() if k in known})


def _detection_target(swim: Any, n: int) -> float:
    """The crash-to-first-DEAD target at size ``n`` (see :data:`TARGET_DETECTION_S`)."""
    from p2pkube.membership.swim_gossip import suspicion_bounds

    if n <= swim.suspicion_flat_members:
        return TARGET_DETECTION_S
    return suspicion_bounds(swim, n)[0] + BEYOND_FLAT_MARGIN_S


def _starve_rows(sizes: list[dict[str, Any]]) -> list[list[str]]:
    runs = [
        (s["n"], s["starve"], s.get("starveLifeguardOff"))
        for s in sizes
        if "starve" in s and "skipped" not in s["starve"]
    ]
    if not runs:
        return []

    def healthy(f: dict[str, Any] | None) -> str:
        return (
            "-" if f is None else f"{f['falseDeadOfOthers']} DEAD, {f['falseSuspectNodes']} SUSPECT"
        )

    return [
        [
            "simulated SWIM: healthy nodes declared DEAD or SUSPECT, 10% starved 30 s",
            "; ".join(
                f"N = {n:,}: {healthy(on)} (Lifeguard off: {healthy(off)})" for n, on, off in runs
            ),
            "0 DEAD",
            yes(all(on["falseDeadOfOthers"] == 0 for _, on, _ in runs)),
        ]
    ]


if __name__ == "__main__":
    main()
