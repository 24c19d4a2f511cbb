"""The membership simulator's engine (harness/swimsim.py): clock, network model, faults.

These tests drive the engine with a tiny protocol written here (test code: each node pings
its peers in turn and answers pings), so that what the simulator does to messages and timers
can be checked exactly, independently of the SWIM core it runs in the benchmark; the last
ones run the real core (p2pkube/membership/swim.py) through the scenarios, at small N.
"""

from __future__ import annotations

import enum
import itertools
import json
import math
import random
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness import swimscenarios
from harness.swimscenarios import ClusterConfig
from harness.swimsim import (
    EventQueue,
    Latency,
    MeshFlood,
    NetworkModel,
    Simulation,
    ViewTracker,
    time_to_fraction,
)


class Status(enum.Enum):
    ALIVE = 1
    SUSPECT = 2
    DEAD = 3


@dataclass(frozen=True)
class Ping:
    seq: int
    sent_at: float
    payload: int = 10


@dataclass(frozen=True)
class Ack:
    seq: int


@dataclass(frozen=True)
class Send:
    to: str
    message: Any


@dataclass(frozen=True)
class Event:
    name: str
    status: Status
    incarnation: int
    at: float


@dataclass
class Pinger:
    """Pings its peers round robin every ``period``; a ping unanswered within ``timeout``
    makes the peer SUSPECT (an event), its ack makes it ALIVE again."""

    name: str
    now: float
    period: float = 0.1
    timeout: float = 0.05
    peers: list[str] = field(default_factory=list)
    log: list[tuple[float, str, Any]] = field(default_factory=list)
    """What it received: (time, sender, message)."""
    ticks: list[float] = field(default_factory=list)
    stalls: list[float] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    suspect: set[str] = field(default_factory=set)
    pending: dict[int, tuple[str, float]] = field(default_factory=dict)
    seq: int = 0
    next_ping: float = math.inf

    def join(self, now: float, members: Iterable[str]) -> list[Send]:
        self.peers = sorted(members)
        self.next_ping = now + self.period
        return []

    def next_deadline(self) -> float:
        expiries = [sent + self.timeout for _, sent in self.pending.values()]
        return min([self.next_ping, *expiries])

    def tick(self, now: float) -> list[Send]:
        self.ticks.append(now)
        for seq, (peer, sent) in list(self.pending.items()):
            if now >= sent + self.timeout:
                del self.pending[seq]
                if peer not in self.suspect:
                    self.suspect.add(peer)
                    self.events.append(Event(peer, Status.SUSPECT, 0, now))
        if now < self.next_ping or not self.peers:
            return []
        self.next_ping = now + self.period
        self.seq += 1
        peer = self.peers[self.seq % len(self.peers)]
        self.pending[self.seq] = (peer, now)
        return [Send(peer, Ping(self.seq, now))]

    def receive(self, now: float, sender: str, message: Any) -> list[Send]:
        self.log.append((now, sender, message))
        if isinstance(message, Ping):
            return [Send(sender, Ack(message.seq))]
        self.pending.pop(message.seq, None)
        if sender in self.suspect:
            self.suspect.discard(sender)
            self.events.append(Event(sender, Status.ALIVE, 0, now))
        return []

    def note_stall(self, seconds: float) -> None:
        self.stalls.append(seconds)

    def drain_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events


def size_of(message: Any) -> int:
    return 20 + message.payload if isinstance(message, Ping) else 12


def make_pinger(name: str, rng: random.Random, now: float) -> Pinger:
    return Pinger(name, now)


def cluster(
    names: list[str],
    *,
    seed: int = 7,
    network: NetworkModel | None = None,
    starts: dict[str, float] | None = None,
    tracker: bool = False,
) -> Simulation:
    """A simulation of pingers, each seeded with all the others."""
    sim = Simulation(seed=seed, network=network, size_of=size_of)
    if tracker:
        sim.on_event = ViewTracker(sim.clock)
    for name in names:
        others = [n for n in names if n != name]
        sim.add(name, make_pinger, start_at=(starts or {}).get(name, 0.0), seeds=others)
    sim.run_until(0.0)
    return sim


def pinger(sim: Simulation, name: str) -> Pinger:
    node = sim.node(name)
    assert isinstance(node, Pinger)
    return node


# -- the clock ---------------------------------------------------------------------------


def test_events_run_in_time_order_and_same_time_events_in_scheduling_order() -> None:
    clock = EventQueue()
    ran: list[tuple[float, str]] = []
    for when, label in [(3.0, "c"), (1.0, "a1"), (2.0, "b"), (1.0, "a2"), (0.5, "z")]:
        clock.at(when, lambda label=label: ran.append((clock.now, label)))
    assert clock.run_until(1.5) is False
    assert ran == [(0.5, "z"), (1.0, "a1"), (1.0, "a2")]
    assert clock.now == 1.5
    clock.after(0.25, lambda: ran.append((clock.now, "d")))
    clock.run_until(10.0)
    assert [label for _, label in ran] == ["z", "a1", "a2", "d", "b", "c"]
    assert ran[3][0] == 1.75
    assert clock.now == 10.0
    with pytest.raises(ValueError, match="before now"):
        clock.at(9.0, lambda: None)


def test_run_until_returns_at_the_event_after_which_the_condition_holds() -> None:
    clock = EventQueue()
    count = [0]
    for i in range(10):
        clock.at(float(i), lambda: count.__setitem__(0, count[0] + 1))
    assert clock.run_until(100.0, stop=lambda: count[0] == 4) is True
    assert clock.now == 3.0
    assert len(clock) == 6


# -- the network -------------------------------------------------------------------------


def test_each_message_is_delayed_by_a_latency_drawn_from_the_model() -> None:
    latency = Latency(floor=0.001, median=0.002, sigma=0.5)
    sim = cluster(["a", "b"], network=NetworkModel(latency=latency))
    sim.run_until(100.0)
    delays = [
        now - message.sent_at
        for now, _, message in pinger(sim, "b").log
        if isinstance(message, Ping)
    ]
    assert len(delays) >= 998  # one ping every 0.1 s from t = 0.1, none lost
    assert min(delays) >= 0.001
    assert statistics.median(delays) == pytest.approx(0.003, rel=0.1)
    # the log-normal tail: p99 of floor + median * exp(2.33 sigma) ~ 0.0072
    assert sorted(delays)[len(delays) * 99 // 100] == pytest.approx(0.0074, rel=0.25)


def test_loss_drops_that_fraction_of_messages() -> None:
    sim = cluster(["a", "b"], network=NetworkModel(loss=0.2))
    sim.run_until(200.0)
    sent = sim.hosts["a"].sent + sim.hosts["b"].sent
    received = sim.hosts["a"].received + sim.hosts["b"].received
    assert 0 <= sent - received - sim.drops["loss"] <= 2  # at most the last pings in flight
    assert sim.drops["loss"] / sent == pytest.approx(0.2, abs=0.02)
    assert set(sim.drops) == {"loss"}


def test_counters_count_each_message_and_its_size() -> None:
    sim = cluster(["a", "b"])
    sim.run_until(0.95)  # pings at 0.1 .. 0.9 and their acks have all arrived; none in flight
    a, b = sim.hosts["a"], sim.hosts["b"]
    assert (a.sent, a.sent_bytes) == (18, 9 * 30 + 9 * 12)  # 9 pings, 9 acks
    assert (b.received, b.received_bytes) == (a.sent, a.sent_bytes)
    assert (a.received, a.received_bytes) == (b.sent, b.sent_bytes) == (18, 378)
    assert sim.sent_by_kind == {"Ping": 18, "Ack": 18}
    assert sim.bytes_by_kind == {"Ping": 18 * 30, "Ack": 18 * 12}
    assert sim.counters()["a"] == (18, 378, 18, 378)


def test_a_partition_cuts_only_between_its_groups_and_heals() -> None:
    sim = cluster(["a", "b", "c"])
    sim.partition([["a"], ["b", "c"]], at=5.0)
    sim.heal(at=10.0)
    sim.run_until(15.0)
    for name in "abc":
        log = pinger(sim, name).log
        during = {sender for when, sender, _ in log if 5.01 < when < 10.0}
        after = {sender for when, sender, _ in log if when > 10.01}
        assert during == ({"b", "c"} - {name} if name != "a" else set())
        assert after == set("abc") - {name}
    assert sim.drops["partition"] > 0
    assert all(not pinger(sim, name).suspect for name in "abc")  # healed: all answer again


def test_a_stalled_node_queues_what_arrives_and_runs_its_timers_when_it_wakes() -> None:
    sim = cluster(["a", "b"], tracker=True)
    sim.stall("b", at=2.05, seconds=1.5)
    wake = 2.05 + 1.5
    sim.run_until(6.0)
    b = pinger(sim, "b")
    arrivals = [when for when, _, _ in b.log]
    assert not [t for t in arrivals if 2.05 < t < wake]
    woken = [(when, m) for when, _, m in b.log if when == wake]
    assert len(woken) == 15  # a pinged every 0.1 s during the stall: all waited, in order
    assert [m.seq for _, m in woken if isinstance(m, Ping)] == sorted(
        m.seq for _, m in woken if isinstance(m, Ping)
    )
    assert b.stalls == [pytest.approx(1.5)]
    assert not [t for t in b.ticks if 2.05 < t < wake]
    assert wake in b.ticks  # its overdue ping round ran at once on waking
    a = pinger(sim, "a")
    assert not [when for when, sender, _ in a.log if 2.06 < when < wake]
    # a's pings went unanswered during the stall: it suspected b, and b's late acks cleared it
    tracker = sim.on_event
    assert isinstance(tracker, ViewTracker)
    assert tracker.false_suspect == {"b": 1}
    assert tracker.status("a", "b") == "ALIVE"


def test_a_starved_node_handles_each_message_and_timer_up_to_its_lag_late() -> None:
    sim = cluster(["a", "b"], tracker=True)
    sim.starve("b", at=2.0, seconds=3.0, lag=0.5)
    sim.run_until(10.0)
    b = pinger(sim, "b")
    delays = {
        message.seq: (message.sent_at, when - message.sent_at)
        for when, _, message in b.log
        if isinstance(message, Ping)
    }
    starved = [delay for sent, delay in delays.values() if 2.05 < sent < 4.85]
    normal = [delay for sent, delay in delays.values() if sent < 1.95 or sent > 5.05]
    assert (len(starved), len(normal)) == (28, 68)  # every ping handled, none lost
    assert max(normal) < 0.01
    assert max(starved) <= 0.5 + 0.01
    assert statistics.median(starved) == pytest.approx(0.25, abs=0.1)  # uniform in 0..0.5
    # b's own pings leave late too: its ping timer fires up to 0.5 s after it is due
    gaps = [
        later.sent_at - earlier.sent_at
        for earlier, later in itertools.pairwise(
            m for _, _, m in pinger(sim, "a").log if isinstance(m, Ping)
        )
    ]
    assert max(gaps) > 0.3 and min(gaps) == pytest.approx(0.1)
    tracker = sim.on_event
    assert isinstance(tracker, ViewTracker)
    assert tracker.false_suspect["b"] >= 1  # its acks came after a's 0.05 s timeout
    assert tracker.status("a", "b") == "ALIVE"  # and it answered in time again later


def test_a_crashed_node_never_runs_again() -> None:
    sim = cluster(["a", "b"], tracker=True)
    sim.crash("b", at=2.05)
    sim.run_until(10.0)
    b = pinger(sim, "b")
    assert max(when for when, _, _ in b.log) < 2.05
    assert max(b.ticks) < 2.05
    assert not [when for when, _, _ in pinger(sim, "a").log if when > 2.06]
    assert sim.drops["crashed"] == 79  # a's pings from t = 2.1 to 9.9
    assert sim.live() == ["a"]
    tracker = sim.on_event
    assert isinstance(tracker, ViewTracker)
    assert tracker.status("a", "b") == "SUSPECT"


def test_a_host_that_has_not_started_gets_what_was_sent_to_it_when_it_starts() -> None:
    sim = cluster(["a", "b"], starts={"b": 0.55})
    sim.run_until(1.0)
    b = pinger(sim, "b")
    first = [(when, m.seq) for when, _, m in b.log if when == 0.55]
    assert [seq for _, seq in first] == [1, 2, 3, 4, 5]


def test_a_full_receive_queue_drops_the_overflow() -> None:
    sim = cluster(["a", "b"], network=NetworkModel(queue_limit=5))
    sim.stall("b", at=1.05, seconds=2.0)
    sim.run_until(4.0)
    assert sim.drops["queue"] == 15  # a's 20 pings from 1.1 to 3.0, 5 of them kept
    assert len([1 for when, _, _ in pinger(sim, "b").log if when == 1.05 + 2.0]) == 5


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    def trace(seed: int) -> list[tuple[float, str, Any]]:
        sim = cluster(["a", "b", "c", "d"], seed=seed, network=NetworkModel(loss=0.1))
        sim.stall("c", at=3.0, seconds=1.0)
        sim.crash("d", at=5.0)
        sim.run_until(10.0)
        return [entry for name in "abcd" for entry in pinger(sim, name).log]

    assert trace(1) == trace(1)
    assert trace(1) != trace(2)


# -- what is measured --------------------------------------------------------------------


def test_the_view_tracker_counts_false_positives_and_times_a_watched_crash() -> None:
    clock = EventQueue()
    tracker = ViewTracker(clock)
    tracker.crashed.add("x")
    tracker.watch("x")
    clock.now = 1.0
    tracker("a", Event("x", Status.SUSPECT, 0, 1.0))
    tracker("a", Event("y", Status.DEAD, 0, 1.0))
    clock.now = 2.0
    tracker("b", Event("x", Status.DEAD, 0, 2.0))
    tracker("a", Event("x", Status.DEAD, 0, 2.0))
    tracker("a", Event("a", Status.DEAD, 0, 2.0))  # about itself: not a view
    assert tracker.first[("x", "SUSPECT")] == 1.0
    assert tracker.first[("x", "DEAD")] == 2.0
    assert tracker.dead_to["x"] == {"a", "b"}
    assert tracker.false_dead == {"y": 1}
    assert tracker.totals["DEAD"] == 3
    assert tracker.totals["SUSPECT"] == 0
    tracker("a", Event("y", Status.ALIVE, 1, 3.0))
    assert tracker.totals["DEAD"] == 2
    assert tracker.not_alive_among(["a", "b", "x"]) == 2
    assert tracker.not_alive_among(["a", "b"]) == 0


def test_a_write_floods_the_mesh_along_its_links() -> None:
    rng = random.Random(3)
    names = [f"n{i}" for i in range(500)]
    mesh = MeshFlood(names, 8, rng)
    assert max(len(links) for links in mesh.links.values()) <= 8
    assert statistics.fmean(len(links) for links in mesh.links.values()) > 7.0
    assert all(b in mesh.links[a] for a, links in mesh.links.items() for b in links)
    latency = Latency(floor=0.001, median=0.0001, sigma=0.1)
    network = NetworkModel(latency=latency)
    reached = mesh.flood("n0", network, rng)
    assert len(reached) == 500
    hops = _hops(mesh, "n0")
    # the first arrival takes at least one floor per hop, and the links are random enough
    # that a shortest path is close to log_7(500) ~ 3.2 hops
    assert all(reached[n] >= hops[n] * 0.001 for n in names)
    assert max(hops.values()) <= 6
    slow = mesh.flood("n0", network, random.Random(3), send_cost=0.0005)
    assert time_to_fraction(slow, 500, 0.99) > time_to_fraction(reached, 500, 0.99) + 0.001
    lossy = mesh.flood("n0", NetworkModel(latency=latency, loss=0.9), random.Random(3))
    assert len(lossy) == 500  # the channel is reliable: a loss costs a retransmission (1 s)
    assert time_to_fraction(lossy, 500, 1.0) >= 1.0
    assert time_to_fraction({"a": 0.1}, 2, 1.0) == math.inf


def _hops(mesh: MeshFlood, source: str) -> dict[str, int]:
    hops = {source: 0}
    frontier = [source]
    while frontier:
        following = []
        for node in frontier:
            for other in mesh.links[node]:
                if other not in hops:
                    hops[other] = hops[node] + 1
                    following.append(other)
        frontier = following
    return hops


# -- the real core in the simulator ------------------------------------------------------
# Small clusters of the real SwimNode (p2pkube/membership/swim.py) with the agents' default
# settings, through harness/swimscenarios.py: what the benchmark measures at scale, checked
# where it is cheap.


def small(n: int, seed: int = 5, **kw: Any) -> ClusterConfig:
    return ClusterConfig(n=n, seed=seed, warmup=5.0, **kw)


def test_the_real_core_finds_each_crashed_node_dead_everywhere_and_no_one_else() -> None:
    figures = swimscenarios.crash(small(10), crashes=2, gap=15.1)
    assert [c["deadEverywhere"] is not None for c in figures["crashes"]] == [True, True]
    # SwimSettings' arithmetic at N <= 10: DEAD everywhere about 3 s after the crash
    assert figures["deadEverywhere"]["max"] < 3.5
    assert figures["suspect"]["max"] < figures["dead"]["max"]
    assert figures["falseDead"] == 0 and figures["falseSuspect"] == 0


def test_a_crash_is_dead_everywhere_within_three_seconds_at_ten_nodes_over_seeds() -> None:
    # issue 13's figure with the default settings (SwimSettings' arithmetic): 60 crashes
    figures = swimscenarios.crash_sweep(10, seeds=20)
    assert figures["crashes"] == 60 and figures["missed"] == figures["falseDead"] == 0
    assert figures["median"] < 2.7 and figures["p90"] < 3.0, figures


@pytest.mark.parametrize(("n", "fraction", "seeds"), [(10, 0.0, 8), (40, 0.1, 3)])
def test_a_member_stalled_for_two_seconds_and_a_margin_is_never_dead(
    n: int, fraction: float, seeds: int
) -> None:
    # a stall must not send, receive or tick (the engine queues and fires late); 2.2 s: the
    # margin SwimSettings' arithmetic leaves (probe_interval + the suspicion floor = 2.25 s)
    figures = swimscenarios.stall_sweep(n, seeds, seconds=2.2, fraction=fraction)
    assert figures["runs"] == seeds and figures["falseDead"] == 0, figures


def test_the_sweeps_command_line_prints_one_json_line_per_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # probe 0.25 s and floor 1.9 s: a member stalled 2.4 s can be DEAD after 2.15 s
    tight = ["--set", "probe_interval=0.25", "--set", "probe_timeout=0.125"]
    tight += ["--set", "nack_timeout=0.08", "--set", "suspicion_mult=7.6"]
    swimscenarios.main(["stall", "--n", "10", "--seeds", "8", "--seconds", "2.4", *tight])
    (line,) = capsys.readouterr().out.splitlines()
    figures = json.loads(line)
    assert (figures["n"], figures["runs"], figures["seconds"]) == (10, 8, 2.4)
    assert figures["runsWithFalseDead"] >= 1, figures


def test_the_real_core_sends_one_probe_per_period_whatever_n() -> None:
    settings = swimscenarios.default_settings()
    for n in (10, 60):
        kinds = swimscenarios.steady(small(n), seconds=20.0)["sentByKind"]
        assert kinds["Ping"] == pytest.approx(1 / settings.probe_interval, rel=0.03)
        assert kinds["Ack"] == kinds["Ping"]


def test_the_real_core_declares_no_node_dead_that_stalled_for_two_seconds() -> None:
    figures = swimscenarios.stall(small(30), fraction=0.1, seconds=2.0, bound=30.0)
    assert figures["slowNodes"] == 3
    assert figures["falseDead"] == 0
    assert figures["allAliveAfter"] is not None


def test_lifeguard_makes_starved_nodes_accuse_less_in_the_simulator() -> None:
    off, changed = swimscenarios.lifeguard_off(swimscenarios.default_settings())
    assert set(changed) == set(swimscenarios.LIFEGUARD_OFF)
    on_figures = swimscenarios.starve(small(20, seed=1), seconds=20.0, bound=30.0)
    off_figures = swimscenarios.starve(small(20, seed=1, settings=off), seconds=20.0, bound=30.0)
    assert on_figures["falseDead"] == 0
    assert off_figures["suspicions"] > 1.5 * on_figures["suspicions"]
    assert off_figures["falseSuspectNodes"] > on_figures["falseSuspectNodes"]


def test_the_real_core_splits_and_heals_with_a_partition_in_the_simulator() -> None:
    figures = swimscenarios.partition(small(10), split_bound=30.0, heal_bound=60.0)
    assert figures["deadPairsAtHeal"] == figures["crossPairs"] == 2 * 5 * 5
    assert figures["splitSeconds"] is not None and figures["healSeconds"] is not None
    assert figures["notAliveLeft"] == 0
