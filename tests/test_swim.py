"""SWIM + Lifeguard (p2pkube/membership/swim.py), real SwimNodes over a tiny in-test network.

The driver below delivers each node's Sends after a fixed latency on a virtual clock and calls
`tick` at each node's `next_deadline`; it can crash a node, cut directed links and stall a
node (hold its messages and timers, then wake it). Everything else is the real core.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.swimscenarios import lifeguard_off
from p2pkube.agent import JoinOptions, settings_for
from p2pkube.cli.main import cli
from p2pkube.membership.settings import SwimSettings
from p2pkube.membership.swim import (
    Member,
    MemberEvent,
    Message,
    Send,
    Status,
    SwimNode,
    Update,
    message_size,
)
from p2pkube.membership.swim_gossip import (
    BroadcastQueue,
    Suspicion,
    retransmit_limit,
    suspicion_bounds,
)
from p2pkube.membership.swim_messages import (
    MAX_PROOF,
    MAX_SEQ,
    Ack,
    Gossip,
    Nack,
    Ping,
    PingReq,
    PushPull,
    update_size,
)
from p2pkube.settings import AgentSettings

SETTINGS = SwimSettings()
LATENCY = 0.002
SETTLE = 5.0
DETECTION_BOUND = 3.5
"""SwimSettings documents it: at N = 10 a crash is DEAD everywhere ~2.7 s after it (median),
3.3 s at most in 20 runs."""


class Net:
    """N SwimNodes, a virtual clock and a network that delivers after ``LATENCY``."""

    def __init__(
        self,
        size: int,
        *,
        seed: int = 1,
        settings: SwimSettings = SETTINGS,
        links: dict[str, set[str]] | None = None,
    ) -> None:
        """``links``: a partial mesh; each node then watches (probes) only its neighbours,
        as swim_host does, though any node still reaches any other."""
        self.names = [f"n{i}" for i in range(size)]
        self.now = 0.0
        self.nodes = {
            name: SwimNode(
                name,
                settings=settings,
                rng=random.Random(f"{seed}/{name}"),
                now=0.0,
                watches=None if links is None else links[name].__contains__,
                neighbours=None if links is None else links[name].copy,
            )
            for name in self.names
        }
        self.queue: list[tuple[float, int, str, str, Message]] = []
        self.count = 0
        self.crashed: set[str] = set()
        self.cut: set[tuple[str, str]] = set()
        self.stalls: dict[str, tuple[float, float, bool]] = {}
        """name -> (since, until, tell): held while stalled; told note_stall at wake if tell."""
        self.held: dict[str, list[tuple[str, Message]]] = {}
        self.events: list[tuple[str, MemberEvent]] = []
        self.sent: list[tuple[float, str, Send]] = []
        self.keep: Callable[[str, Update], bool] | None = None
        """The receiving host's filter: (receiver, update) -> pass it to the core or strip it."""
        for name in self.names:
            self.send(name, self.nodes[name].join(0.0, self.names))

    def send(self, sender: str, sends: list[Send]) -> None:
        for out in sends:
            self.sent.append((self.now, sender, out))
            if (sender, out.to) in self.cut or out.to in self.crashed:
                continue
            self.count += 1
            heapq.heappush(
                self.queue, (self.now + LATENCY, self.count, out.to, sender, out.message)
            )

    def _record(self, name: str) -> None:
        self.events += [(name, event) for event in self.nodes[name].drain_events()]

    def _next_node(self) -> tuple[float, str]:
        awake = [n for n in self.names if n not in self.crashed and n not in self.stalls]
        at, name = min(((self.nodes[n].next_deadline(), n) for n in awake), default=(math.inf, ""))
        return max(at, self.now), name  # a node that woke from a stall ticks late, now

    def run(self, seconds: float) -> None:
        until = self.now + seconds
        while True:
            at_message = self.queue[0][0] if self.queue else math.inf
            at_node, name = self._next_node()
            wake, sleeper = min(((s[1], n) for n, s in self.stalls.items()), default=(math.inf, ""))
            at = min(at_message, at_node, wake)
            if at > until:
                self.now = until
                return
            self.now = at
            if at == wake:
                self._wake(sleeper)
            elif at == at_message:
                _, _, to, sender, message = heapq.heappop(self.queue)
                if to in self.stalls:
                    self.held.setdefault(to, []).append((sender, message))
                elif to not in self.crashed:
                    message = self._filtered(to, message)
                    self.send(to, self.nodes[to].receive(at, sender, message))
                    self._record(to)
            else:
                self.send(name, self.nodes[name].tick(at))
                self._record(name)

    def _filtered(self, to: str, message: Message) -> Message:
        keep = self.keep
        if keep is None:
            return message
        message = replace(message, updates=tuple(u for u in message.updates if keep(to, u)))
        if isinstance(message, PushPull):
            message = replace(message, states=tuple(u for u in message.states if keep(to, u)))
        return message

    def stall(self, name: str, seconds: float, *, tell: bool = True) -> None:
        self.stalls[name] = (self.now, self.now + seconds, tell)

    def _wake(self, name: str) -> None:
        since, _, tell = self.stalls.pop(name)
        node = self.nodes[name]
        if tell:
            node.note_stall(self.now - since)
        for sender, message in self.held.pop(name, []):
            self.send(name, node.receive(self.now, sender, self._filtered(name, message)))
        self._record(name)

    def view(self, observer: str, name: str) -> Member:
        return self.nodes[observer].members()[name]

    def others(self, name: str) -> list[str]:
        return [n for n in self.names if n != name and n not in self.crashed]

    def events_about(self, name: str, status: Status) -> list[tuple[str, MemberEvent]]:
        return [(o, e) for o, e in self.events if e.name == name and e.status is status]


def settled(size: int, seed: int = 1, links: dict[str, set[str]] | None = None) -> Net:
    net = Net(size, seed=seed, links=links)
    net.run(SETTLE)
    assert all(
        member.status is Status.ALIVE
        for node in net.nodes.values()
        for member in node.members().values()
    ), "a healthy cluster settles with everyone ALIVE everywhere"
    net.events.clear()
    return net


@pytest.mark.parametrize("seed", range(6))
def test_a_crashed_member_is_suspect_then_dead_everywhere_within_the_documented_time(
    seed: int,
) -> None:
    net = settled(10, seed)
    crash_at = net.now
    net.crashed.add("n3")
    net.run(10.0)
    for observer in net.others("n3"):
        assert net.view(observer, "n3").status is Status.DEAD, observer
    suspects = net.events_about("n3", Status.SUSPECT)
    deaths = net.events_about("n3", Status.DEAD)
    assert suspects and min(e.at for _, e in suspects) < min(e.at for _, e in deaths)
    assert sorted(o for o, _ in deaths) == net.others("n3"), "each observer declares it once"
    last = max(e.at for _, e in deaths) - crash_at
    assert last <= DETECTION_BOUND, f"DEAD everywhere {last:.2f} s after the crash"
    # nobody else is harmed, and healthy probers that got their helpers' nacks stay healthy
    assert {e.name for _, e in net.events} == {"n3"}
    assert all(net.nodes[n].local_health == 0 for n in net.others("n3"))


@pytest.mark.parametrize("seed", range(4))
def test_on_a_partial_mesh_each_node_probes_only_its_neighbours_and_a_crash_is_still_found(
    seed: int,
) -> None:
    """12 nodes in a ring, each linked to the two before and the two after it: nobody probes
    across the ring, yet a crashed member is DEAD everywhere within the same bound as with
    probes of everyone (its four neighbours' suspicions confirm each other; with only two
    neighbours each, Lifeguard's ceiling applies: ~3.8 s)."""
    names = [f"n{i}" for i in range(12)]
    links = {n: {names[(i + d) % 12] for d in (-2, -1, 1, 2)} for i, n in enumerate(names)}
    net = settled(12, seed, links)
    pinged = {(sender, out.to) for _, sender, out in net.sent if isinstance(out.message, Ping)}
    assert pinged == {(a, b) for a in names for b in links[a]}
    gossiped = {(sender, out.to) for _, sender, out in net.sent if isinstance(out.message, Gossip)}
    assert gossiped and gossiped <= {(a, b) for a in names for b in links[a]}
    crash_at = net.now
    net.crashed.add("n3")
    net.run(10.0)
    deaths = net.events_about("n3", Status.DEAD)
    assert sorted(o for o, _ in deaths) == sorted(net.others("n3"))
    assert max(e.at for _, e in deaths) - crash_at <= DETECTION_BOUND
    assert {e.name for _, e in net.events} == {"n3"}
    asked = {(sender, out.to) for _, sender, out in net.sent if isinstance(out.message, PingReq)}
    assert asked and asked <= {(a, b) for a in names for b in links[a]}  # helpers: neighbours


def test_a_suspected_member_that_is_alive_refutes_and_is_never_dead() -> None:
    net = settled(8)
    everyone_else = {(n, "n2") for n in net.others("n2")}
    net.cut |= everyone_else  # n2 hears nothing: its acks stop, it looks failed
    net.run(1.5)
    assert net.events_about("n2", Status.SUSPECT), "n2 was suspected"
    net.cut -= everyone_else
    net.run(10.0)
    assert not net.events_about("n2", Status.DEAD)
    assert net.nodes["n2"].stats.refutations >= 1
    incarnation = net.nodes["n2"].members()["n2"].incarnation
    assert incarnation >= 1
    for observer in net.others("n2"):
        assert net.view(observer, "n2").status is Status.ALIVE
        assert net.view(observer, "n2").incarnation == incarnation


def test_an_indirect_probe_keeps_a_member_alive_when_only_the_direct_path_drops() -> None:
    net = settled(8)
    net.cut |= {("n0", "n1"), ("n1", "n0")}
    net.run(30.0)
    assert net.events == [], "no suspicion anywhere"
    assert net.view("n0", "n1").status is Status.ALIVE
    assert net.view("n1", "n0").status is Status.ALIVE
    assert net.nodes["n0"].stats.indirect_probes >= 3
    assert sum(node.stats.relayed for node in net.nodes.values()) >= 3
    assert net.nodes["n0"].local_health == 0


@pytest.mark.parametrize("offset", [0.0, 0.1, 0.2, 0.3, 0.4])
@pytest.mark.parametrize("tell", [True, False], ids=["note_stall", "late-ticks"])
def test_a_node_whose_loop_stalls_two_seconds_is_not_dead_and_declares_no_one_dead(
    offset: float, tell: bool
) -> None:
    net = settled(10)
    net.run(offset)
    net.stall("n4", 2.0, tell=tell)
    net.run(2.0 + 0.001)
    assert net.nodes["n4"].local_health >= 1, "the stall raised its local health multiplier"
    assert net.nodes["n4"].stats.stalls == 1
    net.run(15.0)
    assert not [e for _, e in net.events if e.status is Status.DEAD]
    for observer in net.others("n4"):
        assert net.view(observer, "n4").status is Status.ALIVE


def test_a_starved_node_holds_its_own_verdicts_but_not_the_others() -> None:
    """n1 holds its verdicts (its host knows it is starved): its own suspicion of a crashed
    member does not end in DEAD while it holds them, but the DEAD the others declare still
    reaches it; once the hold ends, its own timers fire again."""
    net = settled(10)
    holder = net.nodes["n1"]
    holder.hold_verdicts(net.now + 30.0)
    net.crashed.add("n3")
    net.run(10.0)
    assert net.view("n1", "n3").status is Status.DEAD  # the others' verdict reached it
    assert holder.stats.deaths == 0  # not its own
    assert sum(net.nodes[n].stats.deaths for n in net.others("n3")) >= 1

    alone = settled(3)
    held = alone.nodes["n0"]
    held.hold_verdicts(alone.now + 6.0)
    alone.crashed |= {"n1", "n2"}  # no one else can declare anything
    alone.run(5.0)
    assert held.stats.deaths == 0 and held.stats.verdicts_held >= 1
    assert {m.status for n, m in held.members().items() if n != "n0"} == {Status.SUSPECT}
    alone.run(2.0)  # the hold is over: its timers fire
    assert {m.status for n, m in held.members().items() if n != "n0"} == {Status.DEAD}


def test_a_member_that_asked_for_grace_survives_a_longer_stall() -> None:
    net = settled(10)
    net.nodes["n2"].set_grace(net.now, 10.0)  # a browser tab going hidden
    net.run(2.0)
    assert all(net.view(n, "n2").grace == 10.0 for n in net.others("n2"))
    net.stall("n2", 8.0)
    net.run(20.0)
    assert net.events_about("n2", Status.SUSPECT), "it was suspected"
    assert not [e for _, e in net.events if e.status is Status.DEAD]
    net.nodes["n2"].set_grace(net.now, 0.0)  # visible again
    net.run(2.0)
    assert all(net.view(n, "n2").grace == 0.0 for n in net.others("n2"))
    net.stall("n2", 8.0)
    net.run(20.0)
    assert net.events_about("n2", Status.DEAD), "without grace the same stall is fatal"


def test_a_grace_beyond_the_bound_is_capped() -> None:
    node = SwimNode("a", settings=SETTINGS, rng=random.Random(1), now=0.0)
    node.receive(1.0, "b", Gossip((Update("b", Status.ALIVE, 1, "b", None, 1000.0),)))
    assert node.members()["b"].grace == SETTINGS.max_grace


def test_a_member_that_restarts_after_it_was_declared_dead_comes_back_alive() -> None:
    net = settled(8)
    net.crashed.add("n5")
    net.run(10.0)
    assert all(net.view(n, "n5").status is Status.DEAD for n in net.others("n5"))
    net.crashed.discard("n5")  # a new process, which remembers nothing: incarnation 0
    net.nodes["n5"] = SwimNode("n5", settings=SETTINGS, rng=random.Random(5), now=net.now)
    net.send("n5", net.nodes["n5"].join(net.now, net.names))
    net.run(5.0)
    incarnation = net.view("n5", "n5").incarnation
    assert incarnation >= 1, "it refuted the DEAD it was told of"
    for observer in net.others("n5"):
        assert (net.view(observer, "n5").status, net.view(observer, "n5").incarnation) == (
            Status.ALIVE,
            incarnation,
        )


def test_a_node_that_hears_nothing_raises_its_health_and_its_accusations_harm_no_one() -> None:
    net = settled(8)
    deaf = {(n, "n0") for n in net.others("n0")}
    net.cut |= deaf  # n0 still sends, but no ack, nack or refutation reaches it
    net.run(20.0)
    assert net.nodes["n0"].local_health == SETTINGS.awareness_max_multiplier - 1
    assert all(net.nodes[n].local_health == 0 for n in net.others("n0"))
    wrongly_dead = [(o, e.name) for o, e in net.events if e.status is Status.DEAD and o != "n0"]
    assert {name for _, name in wrongly_dead} <= {"n0"}, "only n0 itself looks dead to others"


def test_suspicion_timeouts_follow_the_lifeguard_formula() -> None:
    memberlist = SwimSettings(
        suspicion_mult=4,
        suspicion_max_timeout_mult=3,
        probe_interval=0.5,
        suspicion_flat_members=10,
        suspicion_log_growth=1,
    )
    assert suspicion_bounds(memberlist, 10) == (2.0, 6.0)
    assert suspicion_bounds(memberlist, 5) == (2.0, 6.0), "log10 N is floored at 1"
    assert suspicion_bounds(memberlist, 1000) == pytest.approx((6.0, 18.0))
    lan = replace(memberlist, suspicion_flat_members=100, suspicion_log_growth=2)
    assert suspicion_bounds(lan, 100) == (2.0, 6.0), "flat up to 100 members"
    assert suspicion_bounds(lan, 1000) == pytest.approx((6.0, 18.0)), "memberlist's"
    assert suspicion_bounds(lan, 10_000) == pytest.approx((10.0, 30.0))
    defaults = SwimSettings()
    assert suspicion_bounds(defaults, 100) == suspicion_bounds(defaults, 5), "flat to 100"
    assert suspicion_bounds(defaults, 1000) == suspicion_bounds(
        replace(defaults, suspicion_flat_members=10, suspicion_log_growth=1), 1000
    ), "memberlist's floor at 1,000 members"
    suspicion = Suspicion(7, 10.0, "b", 3, (2.0, 6.0))
    assert suspicion.deadline() == 16.0, "no confirmation: the ceiling"
    assert not suspicion.confirm("b"), "the accuser does not confirm itself"
    assert suspicion.confirm("c")
    assert not suspicion.confirm("c"), "one confirmation per member"
    assert suspicion.timeout() == pytest.approx(6.0 - 4.0 * math.log(2) / math.log(4))
    assert suspicion.confirm("d") and suspicion.confirm("e")
    assert suspicion.timeout() == 2.0, "K confirmations: the floor"
    assert not suspicion.confirm("f"), "no more than K count"
    assert Suspicion(7, 0.0, "b", 0, (2.0, 6.0)).timeout() == 2.0, "none expected: the floor"


def answered(node: SwimNode, now: float, sends: list[Send]) -> list[Send]:
    """Every member answers ``node``'s pings at once (so that its own probes fail none); the
    other sends are returned."""
    rest = []
    for out in sends:
        if isinstance(out.message, Ping):
            node.receive(now, out.to, Ack(out.message.seq))
        else:
            rest.append(out)
    return rest


def drive(node: SwimNode, until: float) -> list[Send]:
    """Tick ``node`` alone at each of its deadlines up to ``until`` (pings answered)."""
    sent: list[Send] = []
    while (at := node.next_deadline()) <= until:
        sent += answered(node, at, node.tick(at))
    return sent


def test_a_node_declares_dead_when_the_shrinking_suspicion_times_out() -> None:
    node = SwimNode("a", settings=SETTINGS, rng=random.Random(3), now=0.0)
    names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "x"]
    answered(node, 0.0, node.join(0.0, names))
    floor, ceiling = suspicion_bounds(SETTINGS, 10)
    drive(node, 1.0)
    node.receive(1.0, "b", Gossip((Update("x", Status.SUSPECT, 0, "b"),)))
    assert node.members()["x"].status is Status.SUSPECT
    assert node.next_deadline() <= 1.0 + ceiling
    drive(node, 1.5)
    for origin in ("c", "d", "e"):
        node.receive(1.5, origin, Gossip((Update("x", Status.SUSPECT, 0, origin),)))
    drive(node, 1.0 + floor - 0.001)
    assert node.members()["x"].status is Status.SUSPECT
    node.drain_events()
    drive(node, 1.0 + floor)
    assert node.drain_events() == [MemberEvent("x", Status.DEAD, 0, 1.0 + floor)], (
        "DEAD at the floor after the suspicion began, once K=3 members confirmed"
    )


def test_updates_are_piggybacked_at_most_retransmit_limit_times_each() -> None:
    net = settled(10)
    start = len(net.sent)
    # n1 hears it is suspected (n0's accusation reaches only n1) and refutes: the refutation is
    # news to everyone, each of whom passes it on
    net.send("n0", [Send("n1", Gossip((Update("n1", Status.SUSPECT, 0, "n0"),)))])
    fresh = Update("n1", Status.ALIVE, 1, "n1")
    net.run(10.0)
    limit = retransmit_limit(SETTINGS.retransmit_mult, 10)
    assert limit == 12
    carried: dict[str, int] = {}
    for _, sender, out in net.sent[start:]:
        updates = out.message.updates
        assert len(updates) <= SETTINGS.max_piggyback
        carried[sender] = carried.get(sender, 0) + updates.count(fresh)
    # n1 also sends it once straight to its accuser n0 (Accusers), beyond the piggyback limit
    assert carried.pop("n1") == limit + 1, carried
    assert {carried.get(n) for n in net.names if n != "n1"} == {limit}, carried
    assert all(net.view(n, "n1").incarnation == 1 for n in net.names)
    assert net.nodes["n1"].stats.refutations == 1


def test_the_broadcast_queue_sends_the_least_sent_and_newest_first_one_per_member() -> None:
    queue = BroadcastQueue()
    a, b, c = (Update(n, Status.SUSPECT, 0, "z") for n in "abc")
    for update in (a, b, c):
        queue.add(update)
    assert queue.pick(2, 3, None) == [c, b], "never sent: newest first"
    assert queue.pick(2, 3, None) == [a, b], "a was sent least"
    newer_a = Update("a", Status.DEAD, 0, "z")
    queue.add(newer_a)  # replaces a, at zero transmits
    assert len(queue) == 3 and queue.about("a") == newer_a
    assert queue.pick(1, 3, "b") == [b], "the recipient's own news first"
    assert len(queue) == 2, "b reached its 3 transmits and left"
    assert queue.pick(5, 3, None) == [newer_a, c]
    assert queue.pick(5, 3, None) == [newer_a, c]
    assert queue.pick(5, 3, None) == [newer_a] and len(queue) == 0


def test_a_message_carries_updates_up_to_its_byte_budget_and_at_least_one() -> None:
    """Signed ALIVEs are ~300 bytes: a message takes as many as fit ``max_piggyback_bytes``
    (one SCTP chunk), the smaller ones that still fit, and always one, however big."""
    queue = BroadcastQueue()
    signed = [Update(f"m{i}", Status.ALIVE, 1, f"m{i}", b"p" * 300) for i in range(5)]
    accusation = Update("x", Status.SUSPECT, 1, "z")
    for update in (accusation, *signed):
        queue.add(update)
    first = queue.pick(16, 10, None, 1000)
    assert first[:3] == [signed[4], signed[3], signed[2]]  # newest first, three fit
    assert first[3:] == [accusation]  # a small one still fits after the big one that did not
    assert sum(update_size(u) for u in first) <= 1000
    assert queue.pick(16, 10, None, 100) == [signed[1]], "one goes whatever its size"


def test_left_is_not_dead() -> None:
    net = settled(8)
    net.send("n3", net.nodes["n3"].leave(net.now))
    net.crashed.add("n3")
    net.run(10.0)
    for observer in net.others("n3"):
        assert net.view(observer, "n3").status is Status.LEFT
    assert {e.status for _, e in net.events} == {Status.LEFT}
    assert net.nodes["n3"].next_deadline() == math.inf
    assert net.nodes["n3"].tick(net.now) == []


def test_the_halves_of_a_healed_partition_find_each_other_again() -> None:
    net = settled(8)
    left, right = net.names[:4], net.names[4:]
    cut = {(a, b) for a in left for b in right} | {(b, a) for a in left for b in right}
    net.cut |= cut
    net.run(15.0)
    for a in left:
        for b in right:
            assert net.view(a, b).status is Status.DEAD
            assert net.view(b, a).status is Status.DEAD
    net.cut -= cut
    net.run(SETTINGS.reconnect_interval * 2 + 5.0)
    views = [net.nodes[n].members() for n in net.names]
    assert all(m.status is Status.ALIVE for view in views for m in view.values())


def test_a_refutation_goes_straight_to_the_accusers_once_each_and_bounded() -> None:
    node = SwimNode("a", settings=SETTINGS, rng=random.Random(1), now=0.0)
    names = [f"m{i}" for i in range(8)]
    node.join(0.0, names)
    forged = Update("a", Status.SUSPECT, 0, "nobody")  # an origin it does not know: not told
    accusations = (forged, *(Update("a", Status.SUSPECT, 0, m) for m in names[:6]))
    sends = node.receive(1.0, "m7", Gossip(accusations))
    alive = Update("a", Status.ALIVE, 1, "a")
    limit = SETTINGS.suspicion_confirmations + 1
    assert [s.to for s in sends] == ["m7", *names[:limit]], "the sender, then K + 1 origins"
    assert all(s.message == Gossip((alive,)) for s in sends)
    assert node.stats.accusers_told == limit and node.stats.refutations == 1
    # late copies of the refuted accusation: the sender is corrected, origins told are not
    # told again, and no further origin is told at this incarnation (the bound)
    late = Gossip(tuple(Update("a", Status.DEAD, 0, m) for m in names[:6]))
    assert [s.to for s in node.receive(1.1, "m6", late)] == ["m6"]
    assert node.stats.accusers_told == limit and node.stats.corrections == 1
    # accused again at the new incarnation: a new refutation, its accusers told afresh
    again = Gossip((Update("a", Status.SUSPECT, 1, "m0"),))
    sends = node.receive(2.0, "m5", again)
    assert [s.to for s in sends] == ["m5", "m0"]
    assert all(s.message == Gossip((Update("a", Status.ALIVE, 2, "a"),)) for s in sends)


def test_a_refutation_to_a_ping_rides_on_the_ack_and_reaches_the_other_accusers() -> None:
    node = SwimNode("a", settings=SETTINGS, rng=random.Random(1), now=0.0)
    node.join(0.0, ["b", "c", "d"])
    accusations = (Update("a", Status.SUSPECT, 0, "c"), Update("a", Status.SUSPECT, 0, "b"))
    ack, to_c = node.receive(1.0, "b", Ping(7, "a", accusations))
    alive = Update("a", Status.ALIVE, 1, "a")
    assert ack.to == "b" and isinstance(ack.message, Ack) and alive in ack.message.updates
    assert to_c == Send("c", Gossip((alive,))), "b has it on the ack; c gets it alone"


def test_a_member_that_missed_a_refutation_is_corrected_by_the_next_message_between_them() -> None:
    o = SwimNode("o", settings=SETTINGS, rng=random.Random(1), now=0.0)
    x = SwimNode("x", settings=SETTINGS, rng=random.Random(2), now=0.0)
    o.join(0.0, ["b", "x"])
    x.join(0.0, ["b", "o"])
    x.receive(0.5, "b", Gossip((Update("x", Status.SUSPECT, 0, "b"),)))  # x refutes: 1
    o.receive(0.5, "b", Gossip((Update("x", Status.SUSPECT, 0, "b"),)))
    o.receive(3.0, "b", Gossip((Update("x", Status.DEAD, 0, "b"),)))  # o never hears the refutation
    assert o.members()["x"].status is Status.DEAD
    # x sends o anything (here a gossip round)
    answers = o.receive(9.0, "x", Gossip((Update("b", Status.ALIVE, 0, "b"),)))
    told = [(a.to, u.name, u.status, u.incarnation) for a in answers for u in a.message.updates]
    assert ("x", "x", Status.DEAD, 0) in told, "o tells x what it holds"
    # o's notice came with b's DEAD (which o passes on): x corrects o, and b, the origin
    correction, to_origin = x.receive(9.01, "o", answers[0].message)
    assert correction.to == "o" and x.stats.corrections == 1
    assert to_origin.to == "b" and to_origin.message == correction.message
    o.receive(9.02, "x", correction.message)
    assert (o.members()["x"].status, o.members()["x"].incarnation) == (Status.ALIVE, 1)


def test_dead_and_left_members_are_forgotten_after_the_reconnect_timeout() -> None:
    settings = replace(SETTINGS, reconnect_timeout=20.0, gossip_to_the_dead_time=5.0)
    net = Net(6, settings=settings)
    net.run(SETTLE)
    net.crashed.add("n1")
    net.send("n2", net.nodes["n2"].leave(net.now))
    net.crashed.add("n2")
    net.run(10.0)
    assert {net.view("n0", n).status for n in ("n1", "n2")} == {Status.DEAD, Status.LEFT}
    net.run(settings.reconnect_timeout + settings.reconnect_interval * 2)
    for observer in net.others("n1"):
        assert set(net.nodes[observer].members()) == set(net.names) - {"n1", "n2"}
        assert net.nodes[observer].member_rtt("n1") is None  # forgotten with the member


def test_each_probed_member_has_a_smoothed_round_trip() -> None:
    """The acks to direct probes are timed per member (what the dashboard shows per link)."""
    net = settled(4)
    for name, node in net.nodes.items():
        rtts = [node.member_rtt(other) for other in net.others(name)]
        assert all(rtt is not None and 0 <= rtt < 1 for rtt in rtts), (name, rtts)
    assert net.nodes["n0"].member_rtt("nobody") is None


def fed(node: SwimNode, *updates: Update, at: float = 1.0) -> tuple[Status, int]:
    """b's status and incarnation at ``node`` once it got ``updates`` (from c) at ``at``."""
    node.receive(at, "c", Gossip(updates))
    member = node.members()["b"]
    return member.status, member.incarnation


def test_a_stale_update_never_overrides_a_newer_one() -> None:
    node = SwimNode("a", settings=SETTINGS, rng=random.Random(1), now=0.0)
    assert fed(node, Update("b", Status.ALIVE, 3, "b")) == (Status.ALIVE, 3)
    for stale in (
        Update("b", Status.SUSPECT, 2, "c"),
        Update("b", Status.DEAD, 1, "c"),
        Update("b", Status.ALIVE, 2, "b"),
        Update("b", Status.LEFT, 0, "b"),
        Update("b", Status.ALIVE, 3, "b"),
    ):
        assert fed(node, stale) == (Status.ALIVE, 3), stale
    assert node.stats.dropped["stale"] == 4
    assert fed(node, Update("b", Status.SUSPECT, 3, "c"))[0] is Status.SUSPECT
    assert fed(node, Update("b", Status.ALIVE, 3, "b"))[0] is Status.SUSPECT
    # another's DEAD is taken once this node suspected b long enough (believe_dead_after)
    assert fed(node, Update("b", Status.DEAD, 3, "c"), at=9.0)[0] is Status.DEAD
    assert fed(node, Update("b", Status.SUSPECT, 3, "c"))[0] is Status.DEAD
    assert fed(node, Update("b", Status.ALIVE, 3, "b"))[0] is Status.DEAD
    assert fed(node, Update("b", Status.ALIVE, 4, "b")) == (Status.ALIVE, 4)
    # about itself: an old accusation is not refuted, a current one is
    node.receive(1.0, "c", Gossip((Update("a", Status.SUSPECT, 0, "c"),)))
    assert node.members()["a"].incarnation == 1 and node.stats.refutations == 1
    node.receive(1.0, "c", Gossip((Update("a", Status.DEAD, 0, "c"),)))
    assert node.members()["a"].incarnation == 1 and node.stats.refutations == 1


GARBAGE_MALFORMED: list[object] = [
    Ping("1", "a"),  # type: ignore[arg-type]
    Ping(-1, "a"),
    Ping(2**32, "a"),
    Ping(1, 5),  # type: ignore[arg-type]
    Ping(1, ""),
    Ack(True),
    Nack(None),  # type: ignore[arg-type]
    PingReq(1, "b" * 300),
    Gossip([Update("b", Status.ALIVE, 0, "b")]),  # type: ignore[arg-type]
    Gossip(("not an update",)),  # type: ignore[arg-type]
    Gossip((Update("b", "alive", 0, "b"),)),  # type: ignore[arg-type]
    Gossip((Update("b", Status.ALIVE, -1, "b"),)),
    Gossip((Update("b", Status.ALIVE, 0, "c"),)),
    Gossip((Update("b", Status.LEFT, 0, "c"),)),
    Gossip((Update("b", Status.ALIVE, 0, "b", "proof"),)),  # type: ignore[arg-type]
    Gossip((Update("b", Status.ALIVE, 0, "b"),) * (SETTINGS.max_updates_per_message + 1)),
    Gossip((Update("b", Status.ALIVE, 1, "b", None, -1.0),)),
    Gossip((Update("b", Status.ALIVE, 1, "b", None, math.inf),)),
    Gossip((Update("b", Status.ALIVE, 1, "b", None, "10"),)),  # type: ignore[arg-type]
    Gossip((Update("b", Status.SUSPECT, 1, "c", None, 5.0),)),
    PushPull(None, True),  # type: ignore[arg-type]
    PushPull((), "yes"),  # type: ignore[arg-type]
]


def test_garbage_messages_are_dropped_with_a_counter_and_never_raise() -> None:
    node = SwimNode("a", settings=SETTINGS, rng=random.Random(1), now=0.0)
    node.join(0.0, ["a", "b"])
    before = node.members()
    for message in GARBAGE_MALFORMED:
        assert node.receive(1.0, "b", message) == [], message  # type: ignore[arg-type]
    assert node.receive(1.0, None, Ping(1, "a")) == []  # type: ignore[arg-type]
    assert node.receive(1.0, "s" * 1000, Ping(1, "a")) == []
    assert node.stats.dropped["malformed"] == len(GARBAGE_MALFORMED) + 2
    for message in (object(), "ping", None, {"kind": "ping", "seq": 1}):
        assert node.receive(1.0, "b", message) == []  # type: ignore[arg-type]
    assert node.stats.dropped["unknown-kind"] == 4
    assert node.stats.last_drop.startswith("unknown kind")
    assert node.receive(1.0, "a", Ping(1, "a")) == []
    assert node.receive(1.0, "b", Ping(1, "z")) == []
    assert node.receive(1.0, "b", Ack(12345)) == []
    assert node.stats.dropped["from-self"] == 1
    assert node.stats.dropped["misdirected"] == 1
    assert node.stats.dropped["unexpected-ack"] == 1
    assert node.members() == before and sum(node.stats.received.values()) == 2
    (answer,) = node.receive(1.0, "b", Ping(9, "a"))
    assert answer.to == "b" and isinstance(answer.message, Ack) and answer.message.seq == 9


def random_value(rng: random.Random) -> object:
    """A field value a hostile or broken peer might send: often plausible, often not."""
    return rng.choice(
        [
            rng.randrange(-2, 2**33),
            rng.choice(["a", "b", "c", "x", "", "é" * 300]),
            rng.choice(list(Status)),
            rng.random() * 1e5,
            None,
            b"\x00" * rng.randrange(0, 2000),
            True,
            (),
            float("nan"),
        ]
    )


def random_update(rng: random.Random) -> Update:
    if rng.random() < 0.5:  # well formed, about members that exist or not
        status = rng.choice(list(Status))
        name = rng.choice(["a", "b", "c", "x"])
        origin = name if status in (Status.ALIVE, Status.LEFT) else rng.choice(["b", "c"])
        return Update(name, status, rng.randrange(0, 4), origin)
    return Update(*(random_value(rng) for _ in range(6)))  # type: ignore[arg-type]


def random_message(rng: random.Random) -> Message:
    updates = tuple(random_update(rng) for _ in range(rng.randrange(0, 4)))
    kind = rng.choice([Ping, Ack, PingReq, Nack, Gossip, PushPull])
    if kind is Gossip:
        return Gossip(updates)
    if kind is PushPull:
        return PushPull(updates, rng.choice([True, False, None]))  # type: ignore[arg-type]
    seq = rng.choice([rng.randrange(0, 10), random_value(rng)])
    if kind in (Ping, PingReq):
        target = rng.choice(["a", "b", "x", random_value(rng)])
        return kind(seq, target, updates)  # type: ignore[arg-type]
    return kind(seq, updates)


def test_random_and_hostile_messages_never_raise_and_never_make_a_node_doubt_itself() -> None:
    rng = random.Random(13)
    node = SwimNode("a", settings=SETTINGS, rng=random.Random(1), now=0.0)
    node.join(0.0, ["a", "b", "c"])
    now = 0.0
    for _ in range(5000):
        now += rng.random() * 0.05
        if now >= node.next_deadline():
            node.tick(now)
        sender = rng.choice(["b", "c", "x", "a", random_value(rng)])
        for out in node.receive(now, sender, random_message(rng)):  # type: ignore[arg-type]
            assert isinstance(out.to, str) and out.to != "a"
    me = node.members()["a"]
    assert me.status is Status.ALIVE and 0 <= me.incarnation <= 2**32 - 1
    assert node.stats.dropped["malformed"] > 0 and sum(node.stats.received.values()) > 0


def test_a_ping_req_is_relayed_and_nacked_when_the_target_stays_silent() -> None:
    node = SwimNode("h", settings=SETTINGS, rng=random.Random(1), now=0.0)
    answered(node, 0.0, node.join(0.0, ["p", "t"]))
    drive(node, 1.0)
    (ping,) = node.receive(1.0, "p", PingReq(77, "t"))
    assert ping.to == "t" and isinstance(ping.message, Ping)
    (ack,) = node.receive(1.01, "t", Ack(ping.message.seq))
    assert ack.to == "p" and isinstance(ack.message, Ack) and ack.message.seq == 77
    drive(node, 2.0)
    (ping,) = node.receive(2.0, "p", PingReq(78, "t"))
    sent = drive(node, 2.0 + SETTINGS.nack_timeout)
    nacks = [(s.to, s.message.seq) for s in sent if isinstance(s.message, Nack)]
    assert nacks == [("p", 78)]


def test_push_pull_requests_beyond_the_rate_are_merged_but_not_answered() -> None:
    node = SwimNode("a", settings=SETTINGS, rng=random.Random(1), now=0.0)
    node.join(0.0, ["a", "b"])
    table = (Update("c", Status.ALIVE, 0, "c"),)
    answers = [node.receive(1.0, "b", PushPull(table, True)) for _ in range(20)]
    replies = [a for a in answers if any(isinstance(s.message, PushPull) for s in a)]
    assert len(replies) == int(SETTINGS.push_pull_replies_per_second)
    assert node.stats.dropped["push-pull-busy"] == 20 - len(replies)
    assert "c" in node.members(), "what the unanswered requests carried was merged"
    (later,) = node.receive(2.0, "b", PushPull(table, True))
    assert isinstance(later.message, PushPull) and not later.message.reply


def test_message_size_grows_with_the_updates_it_carries() -> None:
    bare = message_size(Ping(1, "n1"))
    update = Update("n2", Status.SUSPECT, 3, "n1")
    assert 10 <= bare < message_size(Ping(1, "n1", (update,))) < bare + 40
    assert message_size(PushPull((update,) * 10, True)) > 10 * 15


def proof_for(incarnation: int, grace: float, left: bool) -> bytes:
    """What the test's host signs: one distinct proof per record."""
    return f"{incarnation}/{grace}/{'left' if left else 'alive'}".encode()


class Prover:
    """The host's ``prove``: every call kept; while ``ready`` is False it has nothing signed
    (a browser's WebCrypto signature still on its way) and answers None."""

    def __init__(self, *, ready: bool = True) -> None:
        self.ready = ready
        self.calls: list[tuple[int, float, bool]] = []

    def __call__(self, incarnation: int, grace: float, left: bool) -> bytes | None:
        self.calls.append((incarnation, grace, left))
        return proof_for(incarnation, grace, left) if self.ready else None


def proven_node(prover: Prover) -> SwimNode:
    """Node a, joined to b and c, its join's news sent out (every ping answered)."""
    node = SwimNode("a", settings=SETTINGS, rng=random.Random(1), now=0.0, prove=prover)
    answered(node, 0.0, node.join(0.0, ["a", "b", "c"]))
    drive(node, 2.0)
    return node


def carried(sends: list[Send], name: str = "a") -> list[Update]:
    """Updates about ``name`` piggybacked on ``sends`` (push/pull tables apart)."""
    return [u for send in sends for u in send.message.updates if u.name == name]


def own_alive(incarnation: int, proof: bytes | None, grace: float = 0.0) -> Update:
    return Update("a", Status.ALIVE, incarnation, "a", proof, grace)


def test_join_and_a_refutation_carry_the_proof_prove_gave_for_the_incarnation() -> None:
    prover = Prover()
    node = SwimNode("a", settings=SETTINGS, rng=random.Random(1), now=0.0, prove=prover)
    (push_pull,) = node.join(0.0, ["a", "b", "c"])
    assert prover.calls == [(0, 0.0, False)]
    assert isinstance(push_pull.message, PushPull)
    assert own_alive(0, proof_for(0, 0.0, False)) in push_pull.message.states
    assert carried([push_pull]) == [own_alive(0, proof_for(0, 0.0, False))]
    answered(node, 0.0, [push_pull])
    drive(node, 2.0)
    prover.ready = False  # e.g. the host is signing a record for its new links
    (again,) = node.join(2.0, ["d"])
    assert carried([again]) == [own_alive(0, proof_for(0, 0.0, False))], "a join keeps the proof"
    prover.ready = True
    (refutation,) = node.receive(2.0, "b", Gossip((Update("a", Status.SUSPECT, 0, "b"),)))
    assert node.own_incarnation == 1 and prover.calls[-1] == (1, 0.0, False)
    assert refutation.to == "b", "the accuser is told at once"
    assert carried([refutation]) == [own_alive(1, proof_for(1, 0.0, False))]
    (ack,) = node.receive(2.01, "c", Ping(5, "a"))
    assert ack.to == "c" and carried([ack]) == [own_alive(1, proof_for(1, 0.0, False))]
    (reply,) = node.receive(2.02, "c", PushPull((), True))
    assert isinstance(reply.message, PushPull)
    (mine,) = [u for u in reply.message.states if u.name == "a"]
    assert mine == own_alive(1, proof_for(1, 0.0, False))


def test_announce_takes_a_new_incarnation_that_the_next_messages_carry_with_its_proof() -> None:
    prover = Prover()
    node = proven_node(prover)
    assert carried(drive(node, 4.0)) == [], "the join's ALIVE was sent its limit and done"
    node.announce(4.0)
    assert node.own_incarnation == 1 and prover.calls[-1] == (1, 0.0, False)
    assert node.next_deadline() <= 4.0 + SETTINGS.gossip_interval, "a gossip round is armed"
    sent = drive(node, 4.0 + SETTINGS.gossip_interval)
    assert sent and carried(sent) == [own_alive(1, proof_for(1, 0.0, False))] * len(sent)
    node.set_grace(5.0, 4.0)  # the same path: a new incarnation, with the grace in its proof
    assert node.own_incarnation == 2 and prover.calls[-1] == (2, 4.0, False)
    (ack,) = node.receive(5.0, "b", Ping(9, "a"))
    assert carried([ack]) == [own_alive(2, proof_for(2, 4.0, False), 4.0)]


def test_a_late_proof_is_spread_afresh_for_the_current_incarnation_not_for_an_old_one() -> None:
    prover = Prover(ready=False)
    node = proven_node(prover)
    node.announce(2.0)
    node.announce(2.0)
    assert node.own_incarnation == 2
    unproven = carried(drive(node, 6.0))
    assert unproven and set(unproven) == {own_alive(2, None)}, "sent as it is, without proof"
    assert carried(drive(node, 8.0)) == [], "and done: its retransmit limit was reached"
    node.set_proof(8.0, 1, proof_for(1, 0.0, False))
    assert carried(drive(node, 10.0)) == [], "a proof of an old incarnation is ignored"
    node.set_proof(10.0, 2, proof_for(2, 0.0, False))
    resent = drive(node, 10.0 + SETTINGS.gossip_interval)
    assert resent and carried(resent) == [own_alive(2, proof_for(2, 0.0, False))] * len(resent)
    (reply,) = node.receive(10.2, "b", PushPull((), True))
    assert isinstance(reply.message, PushPull)
    assert own_alive(2, proof_for(2, 0.0, False)) in reply.message.states


def test_a_member_holding_an_unproven_alive_takes_the_proof_of_the_same_incarnation() -> None:
    b = SwimNode("b", settings=SETTINGS, rng=random.Random(2), now=0.0)
    b.join(0.0, ["b", "c"])
    b.receive(1.0, "c", Gossip((own_alive(1, None),)))
    b.receive(1.1, "c", Gossip((own_alive(1, b"signed"),)))
    (reply,) = b.receive(1.2, "c", PushPull((), True))
    assert isinstance(reply.message, PushPull)
    assert own_alive(1, b"signed") in reply.message.states
    assert carried([reply]) == [own_alive(1, b"signed")], "and passes it on"
    b.receive(1.3, "c", Gossip((own_alive(1, b"other"),)))
    (reply,) = b.receive(1.4, "c", PushPull((), True))
    assert isinstance(reply.message, PushPull)
    assert own_alive(1, b"signed") in reply.message.states, "the first proof stays"


def test_leave_sends_left_with_the_proof_of_left_and_ignores_later_proofs() -> None:
    prover = Prover()
    node = proven_node(prover)
    node.set_grace(2.0, 4.0)
    sends = node.leave(2.5)
    assert prover.calls[-1] == (1, 4.0, True)
    left = Update("a", Status.LEFT, 1, "a", proof_for(1, 4.0, True))
    assert sends and all(carried([s]) == [left] for s in sends)
    node.set_proof(3.0, 1, b"late")
    node.announce(3.0)
    assert node.own_incarnation == 1 and not node.is_live("a")
    assert node.members()["a"].status is Status.LEFT and node.next_deadline() == math.inf


def test_is_live_says_alive_or_suspect() -> None:
    node = proven_node(Prover())
    assert node.is_live("a") and node.is_live("b") and not node.is_live("nobody")
    node.receive(2.0, "c", Gossip((Update("b", Status.SUSPECT, 0, "c"),)))
    assert node.is_live("b")
    node.receive(9.0, "c", Gossip((Update("b", Status.DEAD, 0, "c"),)))  # suspected long enough
    assert not node.is_live("b")


@pytest.mark.parametrize("bad", ["text", b"x" * (MAX_PROOF + 1)])
def test_a_proof_the_others_would_reject_is_the_hosts_error(bad: object) -> None:
    def prove(incarnation: int, grace: float, left: bool) -> bytes | None:
        return bad  # type: ignore[return-value]  # what a broken host might return

    node = SwimNode("a", settings=SETTINGS, rng=random.Random(1), now=0.0, prove=prove)
    with pytest.raises(ValueError, match="proof"):
        node.join(0.0, ["a", "b"])
    with pytest.raises(ValueError, match="proof"):
        proven_node(Prover()).set_proof(2.0, 0, bad)  # type: ignore[arg-type]


def test_a_host_that_strips_accusations_beyond_what_a_member_signed_keeps_it_alive() -> None:
    """The host's incarnation bound (issue 13's trust): an accusation above the highest
    incarnation its target signed is stripped before the core sees it; the cores run on
    with the filtered messages, and a member accused at 2^32 - 1 is not made to jump there."""
    net = settled(8)

    def keep(to: str, update: Update) -> bool:
        return update.incarnation <= net.nodes[update.name].own_incarnation

    net.keep = keep
    forged = Gossip((Update("n2", Status.DEAD, MAX_SEQ, "n0"),))
    net.send("n0", [Send(name, forged) for name in net.others("n0")])
    net.run(10.0)
    assert net.events == []
    assert net.nodes["n2"].own_incarnation == 0
    assert all(net.view(n, "n2").status is Status.ALIVE for n in net.names)


def test_join_set_overrides_swim_settings_into_the_agent_settings(tmp_path: Path) -> None:
    options = JoinOptions(
        "ws://127.0.0.1:8787",
        "token",
        "n1",
        tmp_path,
        overrides=["swim.probe_interval=0.5", "swim.indirect_checks=5", "swim.max_grace=10"],
    )
    swim = settings_for(options).swim
    assert (swim.probe_interval, swim.indirect_checks, swim.max_grace) == (0.5, 5, 10.0)
    assert AgentSettings().swim == SwimSettings(), "the defaults are SwimSettings' own"


@pytest.mark.parametrize(
    ("assignment", "reason"),
    [
        ("swim.probe_interval=0", "swim.probe_interval must be a number of seconds above 0"),
        ("swim.gossip_interval=nan", "swim.gossip_interval must be a number of seconds above 0"),
        ("swim.probe_interval=0.1", "probe_timeout + swim.nack_timeout must be below"),
        ("swim.suspicion_max_timeout_mult=0.5", "swim.suspicion_max_timeout_mult must be at least"),
        ("swim.max_piggyback=0", "swim.max_piggyback must be at least 1"),
        ("swim.max_updates_per_message=8", "swim.max_updates_per_message must be at least"),
        ("swim.max_grace=100000", "swim.max_grace must be 0..86400"),
        ("swim.stall_threshold=-1", "swim.stall_threshold must be above 0"),
        ("swim.announce_delay=-1", "swim.announce_delay must be 0 or more"),
        ("swim.probe_interval=fast", "--set swim.probe_interval=fast"),
        ("swim.probe_period=1", "swim has no setting 'probe_period'"),
    ],
)
def test_p2pkube_join_rejects_a_bad_swim_setting_naming_it(assignment: str, reason: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["join", "ws://127.0.0.1:8787", "--name", "n1", "--set", assignment],
        env={"P2PKUBE_TOKEN": "s3cret-s3cret-s3cret-0123456789"},
    )
    assert result.exit_code == 2, result.output
    assert reason in " ".join(result.stderr.split()), result.stderr


def test_the_simulators_lifeguard_off_settings_are_valid() -> None:
    settings, _ = lifeguard_off(SwimSettings())
    settings.check()


def test_a_lone_members_dead_is_only_a_suspicion_until_this_node_suspected_long_enough() -> None:
    """A member that answers each refutation with a DEAD of the new incarnation never makes a
    live member DEAD (believe_dead_after): each DEAD is one more suspicion, refuted at once."""
    node = SwimNode("a", settings=SETTINGS, rng=random.Random(1), now=0.0)
    node.join(0.0, ["a", "b", "c"])
    floor = suspicion_bounds(SETTINGS, 3)[0]
    for incarnation in range(5):  # c accuses, b refutes at once, c accuses the new incarnation
        node.receive(1.0 + incarnation, "c", Gossip((Update("b", Status.DEAD, incarnation, "c"),)))
        assert node.members()["b"].status is Status.SUSPECT
        refutation = Update("b", Status.ALIVE, incarnation + 1, "b")
        node.receive(1.01 + incarnation, "b", Gossip((refutation,)))
        assert node.members()["b"].status is Status.ALIVE
    # a DEAD after this node itself suspected b for long enough is taken as it is
    node.receive(10.0, "c", Gossip((Update("b", Status.SUSPECT, 5, "c"),)))
    late = 10.0 + SETTINGS.believe_dead_after * floor + 0.01
    node.receive(late, "c", Gossip((Update("b", Status.DEAD, 5, "c"),)))
    assert node.members()["b"].status is Status.DEAD


def test_probes_start_where_the_host_aligns_them() -> None:
    """The agent puts its probes on its process's beat (`align`): after the first, every
    probe is due on the grid although each tick comes a little late (the period itself
    grows here: no member answers, and Lifeguard slows the prober down)."""
    grid = SETTINGS.probe_interval
    node = SwimNode(
        "a",
        settings=SETTINGS,
        rng=random.Random(1),
        now=0.0,
        align=lambda due, period: round(due / period) * period,
    )
    node.join(0.0, ["b", "c"])
    starts = []
    while len(starts) < 6:
        due = node.next_deadline()
        probes = node.stats.probes
        node.tick(due + 0.003)
        if node.stats.probes > probes:
            starts.append(due)
    later = starts[1:]
    assert all(abs(t / grid - round(t / grid)) < 1e-6 for t in later), starts
    assert starts[0] % grid > 1e-3  # the first was not: it is the core's own random start
