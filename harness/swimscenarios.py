"""The membership simulator's scenarios: the real SWIM core at N nodes, one fault at a time.

Each scenario builds a fresh cluster (:class:`SimCluster`: N ``SwimNode`` cores on a
:class:`~harness.swimsim.Simulation`, every node starting at once with every other as a
seed: a formed cluster; each core draws the phase of its own rounds), lets it settle for
``warmup`` virtual seconds (not counted), injects its fault and returns its figures as a
dict (JSON-ready; times in seconds, ``None`` where something never happened within the
bound).
``bench/bench_swim_sim.py`` runs them for each N; docs/scale.md explains them.

The core is imported when a cluster is built, not with this module, so the simulator's
engine can be used (and tested) on its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.swimsim import (
    DEAD,
    SUSPECT,
    MeshFlood,
    NetworkModel,
    NodeFactory,
    Simulation,
    ViewTracker,
    time_to_fraction,
)

__all__ = [
    "LIFEGUARD_OFF",
    "ClusterConfig",
    "SimCluster",
    "crash",
    "flood",
    "lifeguard_off",
    "loss",
    "partition",
    "stall",
    "starve",
    "steady",
]

LIFEGUARD_OFF: dict[str, float] = {
    "awareness_max_multiplier": 1,
    "suspicion_max_timeout_mult": 1,
    "stall_threshold": math.inf,
    "rtt_timeout_max": 0,
}
"""Settings that turn off, for the comparison run, what the core does beyond SWIM with
suspicion: Lifeguard's local health (the multiplier stays 0), its dynamic suspicion timeout
(ceiling = floor), the core's stall compensation (a late tick no longer moves pending
timers) and its round-trip timing (probe timeouts stretched by measured acks). Nacks stay:
the core has no switch for them."""


FAULT_WARMUP = 5.0
"""Default seconds between the joins and a fault: every core has probed a dozen times."""


@dataclass
class ClusterConfig:
    """What a scenario's cluster is made of."""

    n: int
    seed: int = 1
    settings: Any = None
    """A ``SwimSettings``; None: the defaults the agents run."""
    network: NetworkModel = field(default_factory=NetworkModel)
    warmup: float | None = None
    """Virtual seconds between the first join and the fault or the window; what happens in
    them is not counted. None: :data:`FAULT_WARMUP` after the last join, and for ``steady``
    one ``push_pull_interval`` more: every core starts its first push/pull at a random time
    within one interval, and that wave must be over for the window to hold exactly one
    push/pull per node. The fault scenarios do not wait for it (their faults meet it as
    background, as they would meet the periodic ones)."""
    stagger: float = 0.0
    """Joins are spread uniformly over this many seconds. 0: all at once, as in a formed
    cluster (each core draws the phase of its own probe rounds at random anyway); more, and
    a node is probed by the others before it runs, suspected and refuting: a cluster forming."""


def _swim() -> Any:
    from p2pkube.membership import swim

    return swim


def node_names(n: int) -> list[str]:
    """Names as long as the agents' node ids (32 hex digits), so that byte counts are right."""
    return [hashlib.sha256(b"sim-node-%d" % i).hexdigest()[:32] for i in range(n)]


def push_pull_period(settings: Any, n: int) -> float:
    """The long-run push/pull period of a cluster of ``n`` (memberlist's scaling)."""
    from p2pkube.membership.swim_gossip import push_pull_scale

    return float(push_pull_scale(settings.push_pull_interval, n))


def default_settings() -> Any:
    return _swim().SwimSettings()


def lifeguard_off(settings: Any) -> tuple[Any, dict[str, str]]:
    """``settings`` with Lifeguard's parts off (those of :data:`LIFEGUARD_OFF` it has), and the
    fields changed, with their new values as text."""
    names = {f.name for f in dataclasses.fields(settings)}
    changes = {k: v for k, v in LIFEGUARD_OFF.items() if k in names}
    return dataclasses.replace(settings, **changes), {k: f"{v:g}" for k, v in changes.items()}


def _without_join_exchange(settings: Any) -> Any:
    if "join_contacts" in {f.name for f in dataclasses.fields(settings)}:
        return dataclasses.replace(settings, join_contacts=0)
    return settings


class _Others:
    """Every name but one, iterated lazily (a seed list per node would be N² names)."""

    def __init__(self, names: list[str], me: str) -> None:
        self.names = names
        self.me = me

    def __iter__(self) -> Iterator[str]:
        return (name for name in self.names if name != self.me)


class SimCluster:
    """N real SWIM cores on a simulated network, with a :class:`ViewTracker` on their events."""

    def __init__(self, config: ClusterConfig, factory: NodeFactory | None = None) -> None:
        swim = _swim()
        self.config = config
        self.settings = config.settings if config.settings is not None else swim.SwimSettings()
        self.warmup = config.warmup if config.warmup is not None else FAULT_WARMUP + config.stagger
        self.started = time.perf_counter()
        # Bytes come from the cores' own counts (each sizes what it sends and receives with
        # swim.message_size): sizing every message a third time here would cost ~10% of a run.
        self.sim = Simulation(seed=config.seed, network=config.network)
        self.tracker = ViewTracker(self.sim.clock)
        self.sim.on_event = self.tracker
        self.names = node_names(config.n)
        # A formed cluster: nobody is joining, so the join's whole-table exchange (an O(N)
        # message each way per node, O(N²) in all) is left out; only join() reads it.
        settings = _without_join_exchange(self.settings)

        def make(name: str, rng: random.Random, now: float) -> Any:
            return swim.SwimNode(name, settings=settings, rng=rng, now=now)

        for name in self.names:
            start = self.sim.rng.uniform(0.0, config.stagger)
            self.sim.add(name, factory or make, start_at=start, seeds=_Others(self.names, name))

    @property
    def now(self) -> float:
        return self.sim.now

    def settle(self) -> None:
        """Run the warm-up; what it concluded is not counted as a false positive."""
        self.sim.run_until(self.warmup)
        self.tracker.false_dead.clear()
        self.tracker.false_suspect.clear()

    def pick(self, k: int) -> list[str]:
        """``k`` distinct live nodes, drawn from the seed."""
        return self.sim.rng.sample(self.sim.live(), k)

    def crash(self, name: str) -> None:
        self.tracker.crashed.add(name)
        self.tracker.watch(name)
        self.sim.crash(name)

    def false_positives(self) -> dict[str, int]:
        """DEAD and SUSPECT conclusions about nodes that had not crashed, so far."""
        t = self.tracker
        return {
            "falseDead": sum(t.false_dead.values()),
            "falseDeadNodes": len(t.false_dead),
            "falseSuspect": sum(t.false_suspect.values()),
            "falseSuspectNodes": len(t.false_suspect),
        }

    def traffic(self) -> tuple[list[tuple[int, int, int, int]], Counter[str], Counter[str]]:
        """Per node, from its core's own counters: messages sent, bytes sent, messages
        received, bytes received; and the messages and bytes sent by kind, summed."""
        per_node = []
        kinds: Counter[str] = Counter()
        kind_bytes: Counter[str] = Counter()
        for name in self.names:
            # SwimStats: the core's, which the engine's SimNode protocol does not require
            stats = self.sim.node(name).stats  # type: ignore[attr-defined]
            per_node.append(
                (
                    sum(stats.sent.values()),
                    sum(stats.sent_bytes.values()),
                    sum(stats.received.values()),
                    sum(stats.received_bytes.values()),
                )
            )
            kinds.update(stats.sent)
            kind_bytes.update(stats.sent_bytes)
        return per_node, kinds, kind_bytes

    COUNTS = ("suspicions", "refutations", "deaths", "stalls")
    """The cores' ``SwimStats`` counters the fault scenarios report: members suspected after
    a node's own failed probe, refutations, DEADs concluded by a node's own suspicion
    timeout, late ticks and stalls noticed."""

    def counts(self) -> Counter[str]:
        """:data:`COUNTS` summed over every node, so far."""
        totals: Counter[str] = Counter(dict.fromkeys(self.COUNTS, 0))
        for name in self.names:
            stats = self.sim.node(name).stats  # type: ignore[attr-defined]
            for counter in self.COUNTS:
                totals[counter] += getattr(stats, counter)
        return totals

    def cost(self) -> dict[str, float]:
        """What the run cost this process: wall seconds and events."""
        return {
            "wallSeconds": round(time.perf_counter() - self.started, 2),
            "events": self.sim.clock.processed,
        }


def steady(config: ClusterConfig, seconds: float | None = None) -> dict[str, Any]:
    """A quiet cluster: messages and bytes each node sends and receives per second, and what
    kinds they are (SWIM: a constant load per member, whatever N). The window (None: one
    long-run push/pull period, which then holds exactly one push/pull of each node) starts
    after the warm-up."""
    cluster = SimCluster(config)
    if config.warmup is None:
        cluster.warmup += cluster.settings.push_pull_interval
    cluster.settle()
    seconds = seconds or push_pull_period(cluster.settings, config.n)
    before, kinds_before, bytes_before = cluster.traffic()
    cluster.sim.run_until(cluster.now + seconds)
    after, kinds_after, bytes_after = cluster.traffic()
    rates = [
        tuple((a - b) / seconds for a, b in zip(late, early, strict=True))
        for late, early in zip(after, before, strict=True)
    ]
    n = config.n

    def column(i: int) -> list[float]:
        return [r[i] for r in rates]

    kinds = {
        kind: round(count / seconds / n, 3) for kind, count in (kinds_after - kinds_before).items()
    }
    kind_bytes = {
        kind: round(count / seconds / n, 1) for kind, count in (bytes_after - bytes_before).items()
    }
    return {
        "n": n,
        "seconds": seconds,
        "sentPerNode": round(statistics.fmean(column(0)), 3),
        "sentPerNodeMax": round(max(column(0)), 3),
        "bytesPerNode": round(statistics.fmean(column(1)), 1),
        "bytesPerNodeMax": round(max(column(1)), 1),
        "receivedPerNode": round(statistics.fmean(column(2)), 3),
        "receivedPerNodeMax": round(max(column(2)), 3),
        "sentByKind": kinds,
        "bytesByKind": kind_bytes,
        **cluster.false_positives(),
        **cluster.cost(),
    }


class _Detections:
    """When each crashed node was first suspected, first declared DEAD, and DEAD everywhere
    (by every node alive)."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.crashed_at: dict[str, float] = {}
        self.everywhere: dict[str, float] = {}
        cluster.tracker.on_change = self.changed

    def crash(self, name: str) -> None:
        self.crashed_at[name] = self.cluster.now
        self.cluster.crash(name)

    def changed(self, observer: str, subject: str, status: str) -> None:
        if status != DEAD or subject not in self.crashed_at or subject in self.everywhere:
            return
        seen = self.cluster.tracker.dead_to[subject]
        if len(seen) < len(self.cluster.names) - len(self.cluster.tracker.crashed):
            return  # not yet: the full check below costs N
        if all(o in seen for o in self.cluster.sim.live()):
            self.everywhere[subject] = self.cluster.now

    def done(self) -> bool:
        return len(self.everywhere) == len(self.crashed_at)

    def figures(self) -> dict[str, Any]:
        first = self.cluster.tracker.first
        rows = []
        for name, at in self.crashed_at.items():
            rows.append(
                {
                    "suspect": _since(first.get((name, SUSPECT)), at),
                    "dead": _since(first.get((name, DEAD)), at),
                    "deadEverywhere": _since(self.everywhere.get(name), at),
                }
            )
        return {"crashes": rows, **{key: _stats([r[key] for r in rows]) for key in rows[0]}}


def _since(when: float | None, start: float) -> float | None:
    return None if when is None else round(when - start, 3)


def _stats(values: list[float | None]) -> dict[str, float | None]:
    """Median and max of the values that happened, and how many did not."""
    seen = [v for v in values if v is not None]
    return {
        "median": round(statistics.median(seen), 3) if seen else None,
        "max": round(max(seen), 3) if seen else None,
        "missed": len(values) - len(seen),
    }


def crash(config: ClusterConfig, crashes: int = 3, gap: float = 20.0) -> dict[str, Any]:
    """``crashes`` nodes stop for good, ``gap`` seconds apart: time from each crash to its
    first SUSPECT, first DEAD and DEAD on every live node."""
    cluster = SimCluster(config)
    cluster.settle()
    detections = _Detections(cluster)
    for i in range(crashes):
        cluster.sim.run_until(cluster.warmup + i * gap)
        detections.crash(cluster.pick(1)[0])
    cluster.sim.run_until(cluster.now + gap, detections.done)
    return {"n": config.n, **detections.figures(), **cluster.false_positives(), **cluster.cost()}


def stall(
    config: ClusterConfig,
    fraction: float = 0.1,
    seconds: float = 2.0,
    bound: float = 120.0,
) -> dict[str, Any]:
    """``fraction`` of the nodes stall for ``seconds`` each (their loop runs nothing), starting
    within one second of each other: false positives, and how long until every node sees
    every node ALIVE again (at most ``bound`` s after the stalls end)."""
    cluster = SimCluster(config)
    cluster.settle()
    stalled = cluster.pick(max(1, round(config.n * fraction)))
    before = cluster.counts()
    for name in stalled:
        cluster.sim.stall(name, cluster.warmup + cluster.sim.rng.uniform(0.0, 1.0), seconds)
    end = cluster.warmup + 1.0 + seconds
    return {"seconds": seconds, **_after_slow_nodes(cluster, stalled, end, bound, before)}


def starve(
    config: ClusterConfig,
    fraction: float = 0.1,
    seconds: float = 30.0,
    lag: float = 1.0,
    bound: float = 120.0,
) -> dict[str, Any]:
    """``fraction`` of the nodes are short of CPU for ``seconds``: each handles every message
    and timer a random 0..``lag`` s late (Lifeguard's experiment: members that process
    messages slowly). Its probes see acks late and its peers see its acks late: false
    positives, and how long until every node sees every node ALIVE again."""
    cluster = SimCluster(config)
    cluster.settle()
    starved = cluster.pick(max(1, round(config.n * fraction)))
    before = cluster.counts()
    for name in starved:
        cluster.sim.starve(name, cluster.warmup, seconds, lag)
    end = cluster.warmup + seconds
    return {
        "seconds": seconds,
        "lag": lag,
        **_after_slow_nodes(cluster, starved, end, bound, before),
    }


def _after_slow_nodes(
    cluster: SimCluster, slow: list[str], end: float, bound: float, before: Counter[str]
) -> dict[str, Any]:
    """Run to ``end`` and on until every view is ALIVE again (at most ``bound`` s more):
    false positives, about the slow nodes and about the others, and what the cores counted
    since ``before``."""
    tracker = cluster.tracker
    cluster.sim.run_until(end)
    clear = cluster.sim.run_until(end + bound, lambda: sum(tracker.totals.values()) == 0)
    of_slow = sum(tracker.false_dead[name] for name in slow)
    return {
        "n": cluster.config.n,
        "slowNodes": len(slow),
        "allAliveAfter": round(cluster.now - end, 3) if clear else None,
        "falseDeadOfSlow": of_slow,
        "falseDeadOfOthers": sum(tracker.false_dead.values()) - of_slow,
        **{key: count - before[key] for key, count in cluster.counts().items()},
        **cluster.false_positives(),
        **cluster.cost(),
    }


def loss(config: ClusterConfig, rate: float = 0.05, seconds: float = 60.0) -> dict[str, Any]:
    """Every message is lost with probability ``rate`` for ``seconds``; one node crashes half
    way: false positives, the load, and the crash's detection under loss."""
    cluster = SimCluster(config)
    cluster.settle()
    cluster.sim.set_loss(rate)
    before = sum(sent for sent, _, _, _ in cluster.sim.counters().values())
    _, kinds_before, _ = cluster.traffic()
    cluster.sim.run_until(cluster.warmup + seconds / 2)
    detections = _Detections(cluster)
    detections.crash(cluster.pick(1)[0])
    cluster.sim.run_until(cluster.warmup + seconds)
    sent = sum(sent for sent, _, _, _ in cluster.sim.counters().values()) - before
    _, kinds_after, _ = cluster.traffic()
    per_node = seconds * config.n
    return {
        "n": config.n,
        "loss": rate,
        "seconds": seconds,
        "sentPerNode": round(sent / per_node, 3),
        "sentByKind": {k: round(v / per_node, 3) for k, v in (kinds_after - kinds_before).items()},
        **detections.figures(),
        **cluster.false_positives(),
        **cluster.cost(),
    }


def partition(
    config: ClusterConfig, split_bound: float = 120.0, heal_bound: float = 300.0
) -> dict[str, Any]:
    """The cluster splits in two halves: time until each side sees every node of the other
    DEAD (at most ``split_bound``), then the network heals: time until every node sees every
    node ALIVE again (at most ``heal_bound``)."""
    cluster = SimCluster(config)
    cluster.settle()
    order = cluster.names[:]
    cluster.sim.rng.shuffle(order)
    half = len(order) // 2
    sides = (order[:half], order[half:])
    cross = 2 * len(sides[0]) * len(sides[1])
    tracker = cluster.tracker
    cluster.sim.partition(sides)
    start = cluster.now
    split = cluster.sim.run_until(start + split_bound, lambda: tracker.totals[DEAD] >= cross)
    split_at = cluster.now
    dead_pairs = tracker.totals[DEAD]
    cluster.sim.heal()
    healed = cluster.sim.run_until(split_at + heal_bound, lambda: sum(tracker.totals.values()) == 0)
    return {
        "n": config.n,
        "crossPairs": cross,
        "splitBound": split_bound,
        "healBound": heal_bound,
        "deadPairsAtHeal": dead_pairs,
        "splitSeconds": round(split_at - start, 3) if split else None,
        "healSeconds": round(cluster.now - split_at, 3) if healed else None,
        "notAliveLeft": sum(tracker.totals.values()),
        **cluster.cost(),
    }


def flood(
    n: int,
    seed: int = 1,
    *,
    writes: int = 20,
    max_peers: int = 8,
    send_cost: float = 0.0,
    network: NetworkModel | None = None,
) -> dict[str, Any]:
    """A write flooding over a random mesh of ``max_peers`` links per node: time until 99% and
    100% of the nodes have it (median and max over ``writes`` writes from random nodes)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    names = node_names(n)
    mesh = MeshFlood(names, max_peers, rng)
    network = network or NetworkModel()
    to99: list[float] = []
    to_all: list[float] = []
    for _ in range(writes):
        reached = mesh.flood(rng.choice(names), network, rng, send_cost=send_cost)
        to99.append(time_to_fraction(reached, n, 0.99))
        to_all.append(time_to_fraction(reached, n, 1.0))
    degrees = [len(links) for links in mesh.links.values()]
    return {
        "n": n,
        "maxPeers": max_peers,
        "meanDegree": round(statistics.fmean(degrees), 2),
        "sendCostMs": send_cost * 1000,
        "loss": network.loss,
        "to99ms": _ms_stats(to99),
        "toAllMs": _ms_stats(to_all),
        "wallSeconds": round(time.perf_counter() - started, 2),
    }


def _ms_stats(seconds: list[float]) -> dict[str, float | None]:
    finite = [s * 1000 for s in seconds if math.isfinite(s)]
    return {
        "median": round(statistics.median(finite), 2) if finite else None,
        "max": round(max(finite), 2) if finite else None,
        "missed": len(seconds) - len(finite),
    }


# -- sweeps over seeds: how SwimSettings' defaults were chosen ------------------------------


def crash_sweep(n: int, seeds: int, settings: Any = None) -> dict[str, Any]:
    """:func:`crash` (3 crashes 15 s apart) over seeds 0..``seeds`` - 1: crash -> DEAD
    everywhere, median, p90, p99 and max over every crash, and the false DEADs seen."""
    took: list[float] = []
    missed = false_dead = 0
    for seed in range(seeds):
        figures = crash(ClusterConfig(n=n, seed=seed, settings=settings), crashes=3, gap=15.0)
        for row in figures["crashes"]:
            if row["deadEverywhere"] is None:
                missed += 1
            else:
                took.append(row["deadEverywhere"])
        false_dead += figures["falseDead"]
    counts = {"n": n, "crashes": len(took) + missed, "missed": missed, "falseDead": false_dead}
    return {**counts, **_percentiles(took)}


def stall_sweep(
    n: int, seeds: int, seconds: float, fraction: float, settings: Any = None
) -> dict[str, Any]:
    """:func:`stall` over seeds 0..``seeds`` - 1 (``fraction`` 0: a single member): the runs
    with a false DEAD, and the false DEADs in all."""
    runs_with = false_dead = 0
    for seed in range(seeds):
        config = ClusterConfig(n=n, seed=seed, settings=settings)
        figures = stall(config, fraction=fraction, seconds=seconds, bound=60.0)
        runs_with += figures["falseDead"] > 0
        false_dead += figures["falseDead"]
    return {
        "n": n,
        "seconds": seconds,
        "fraction": fraction,
        "runs": seeds,
        "runsWithFalseDead": runs_with,
        "falseDead": false_dead,
    }


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"median": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1], 3)}


def main(argv: list[str] | None = None) -> None:
    """``python -m harness.swimscenarios crash|stall --n 10 --seeds 100 [--seconds 2.2]
    [--fraction 0.1] [--set field=value ...]``: one JSON line per N, with the default
    ``SwimSettings`` or those overrides."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m harness.swimscenarios")
    parser.add_argument("what", choices=("crash", "stall"))
    parser.add_argument("--n", type=int, action="append", required=True)
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fraction", type=float, default=0.0)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    settings = default_settings()
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        kind = type(getattr(settings, name))
        settings = dataclasses.replace(settings, **{name: kind(value)})
    for n in args.n:
        if args.what == "crash":
            figures = crash_sweep(n, args.seeds, settings)
        else:
            figures = stall_sweep(n, args.seeds, args.seconds, args.fraction, settings)
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
