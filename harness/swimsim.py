"""A discrete-event simulator of many membership cores in one process (issue 13).

What this machine cannot run as real agents (hundreds or thousands of nodes) runs here: the
real sans-IO SWIM core (``p2pkube.membership.swim.SwimNode``), one per simulated node, against
a simulated network and a virtual clock. Nothing in the core is replaced: the simulator only
calls what the agent's host code calls (``join``, ``tick`` at ``next_deadline()``,
``receive``, ``note_stall``, ``drain_events``) and carries the ``Send`` objects it returns.

The parts:

* :class:`EventQueue`: the virtual clock, a heap of ``(time, sequence, action)``; events run in
  time order, events at the same time in the order they were scheduled.
* :class:`NetworkModel` and :class:`Latency`: what a message meets on its way: a one-way LAN
  latency drawn per message (a floor plus a log-normal tail), a loss probability (a datagram
  that is lost is gone: SWIM's messages are unreliable by design), and partitions (groups of
  nodes that cannot reach each other; checked when a message would arrive).
* :class:`Simulation`: the hosts. A host is pending (not started yet), up, stalled or crashed.
  A message to a pending or stalled host waits in its receive queue (bounded, as a socket's
  buffer is: past ``NetworkModel.queue_limit`` it is dropped) and is handled when the host
  runs; a stalled host's timers fire late, when it wakes, and it is then told ``note_stall``
  (as the agent's event-loop lag probe would). A starved host runs, but handles each message
  and each timer a random 0..lag seconds late (short of CPU: Lifeguard's case). A crashed
  host handles and sends nothing, for good. Counters: messages and bytes sent and received
  per host, by kind, drops by reason.
* :class:`ViewTracker`: who sees whom as what, from the cores' own events, kept sparse (only
  what is not ALIVE), so that detection times, false positives and a partition's heal can be
  read without asking every core about every member.
* :class:`MeshFlood`: a write flooding over the agents' mesh (a random graph of at most
  ``max_peers`` links per node), with the same latency and loss model: how long until 99% of
  the nodes have it. That is the state sync's path, not SWIM's.

The scenarios (:mod:`harness.swimscenarios`) build on these; ``bench/bench_swim_sim.py``
runs them and docs/scale.md says what the model leaves out.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import itertools
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "EventQueue",
    "HostState",
    "Latency",
    "MeshFlood",
    "NetworkModel",
    "NodeFactory",
    "SimNode",
    "Simulation",
    "ViewTracker",
]


class SimNode(Protocol):
    """What the simulator calls on a membership core (``SwimNode`` satisfies it).

    ``join``, ``tick`` and ``receive`` return the messages to send: objects with ``to`` (a node
    name) and ``message``; ``drain_events`` returns what the node concluded or learned: objects
    with ``name``, ``status`` (an enum whose ``name`` is ALIVE, SUSPECT, DEAD or LEFT),
    ``incarnation`` and ``at``.
    """

    def join(self, now: float, members: Iterable[str]) -> list[Any]: ...
    def tick(self, now: float) -> list[Any]: ...
    def next_deadline(self) -> float: ...
    def receive(self, now: float, sender: str, message: Any) -> list[Any]: ...
    def note_stall(self, seconds: float) -> None: ...
    def drain_events(self) -> list[Any]: ...


NodeFactory = Callable[[str, random.Random, float], SimNode]
"""Makes the core of one simulated node: ``factory(name, rng, now)``; ``rng`` is the node's own,
drawn from the simulation's seed, so a run is reproducible."""


class EventQueue:
    """The virtual clock and its events. Single-threaded; no wall clock anywhere."""

    def __init__(self) -> None:
        self.now = 0.0
        self.processed = 0
        """Events run so far (the simulator's own cost measure)."""
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._sequence = itertools.count()

    def at(self, when: float, action: Callable[..., None], *args: Any) -> None:
        """Run ``action(*args)`` at virtual time ``when`` (not before now: the past is done)."""
        if when < self.now or math.isnan(when):
            raise ValueError(f"an event at {when} is before now ({self.now})")
        heapq.heappush(self._heap, (when, next(self._sequence), action, args))

    def after(self, delay: float, action: Callable[..., None], *args: Any) -> None:
        """Run ``action(*args)`` ``delay`` seconds from now."""
        self.at(self.now + delay, action, *args)

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> bool:
        """Run every event due up to ``until``, then set the clock to ``until``. With ``stop``,
        return early (True, the clock at that event) as soon as it holds after an event."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, action, args = heapq.heappop(heap)
            self.now = when
            action(*args)
            self.processed += 1
            if stop is not None and stop():
                return True
        self.now = max(self.now, until)
        return False

    def __len__(self) -> int:
        return len(self._heap)


@dataclass(frozen=True)
class Latency:
    """One-way latency of a message: ``floor`` plus a log-normal part with median ``median``.

    The defaults are an assumption about a LAN with a user-space stack at both ends (WebRTC):
    0.5 ms median one way, p99 about 2 ms; SWIM's timeouts (hundreds of milliseconds) make the
    exact shape matter little, the write flood's hop count matters more.
    """

    floor: float = 0.0002
    median: float = 0.0003
    sigma: float = 0.8

    def sample(self, rng: random.Random) -> float:
        return self.floor + rng.lognormvariate(math.log(self.median), self.sigma)


@dataclass
class NetworkModel:
    """The simulated network: latency, loss, and how much a host that does not run may queue."""

    latency: Latency = field(default_factory=Latency)
    loss: float = 0.0
    """Probability that a message is lost (independently per message)."""
    queue_limit: int = 4096
    """Messages a pending or stalled host may have waiting; more are dropped, as a full socket
    receive buffer drops datagrams."""


class HostState(enum.Enum):
    PENDING = "pending"
    UP = "up"
    STALLED = "stalled"
    CRASHED = "crashed"


class Host:
    """One simulated node: its core, its state, its receive queue and its counters."""

    __slots__ = (
        "lag",
        "name",
        "node",
        "queue",
        "received",
        "received_bytes",
        "sent",
        "sent_bytes",
        "stalled_at",
        "state",
        "timer_at",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.node: SimNode | None = None
        self.state = HostState.PENDING
        self.queue: deque[tuple[str, Any]] = deque()
        self.timer_at = math.inf
        """When the armed timer event fires (inf: none armed)."""
        self.stalled_at = 0.0
        self.lag = 0.0
        """While starved: each message and timer is handled up to this many seconds late."""
        self.sent = 0
        self.sent_bytes = 0
        self.received = 0
        self.received_bytes = 0


class Simulation:
    """N hosts on one :class:`EventQueue` and one :class:`NetworkModel`, reproducible by seed.

    ``size_of(message)`` gives a message's size in bytes for the byte counters;
    ``on_event(observer, event)`` sees every event a core drains (the clock is ``self.now``).
    """

    def __init__(
        self,
        *,
        seed: int,
        network: NetworkModel | None = None,
        size_of: Callable[[Any], int] = lambda message: 0,
        on_event: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.clock = EventQueue()
        self.network = dataclasses.replace(network) if network else NetworkModel()
        """This run's copy of the model (``set_loss`` changes it, not the caller's)."""
        self.size_of = size_of
        self.on_event = on_event
        self._master = random.Random(seed)
        self.rng = random.Random(self._master.getrandbits(64))
        """The network's randomness (latency, loss) and the scenarios' choices."""
        self.hosts: dict[str, Host] = {}
        self.groups: dict[str, int] = {}
        """Partition group of each host named in the current partition (others: group 0)."""
        self.drops: Counter[str] = Counter()
        """Messages dropped, by reason: loss, partition, crashed, queue."""
        self.sent_by_kind: Counter[str] = Counter()
        self.bytes_by_kind: Counter[str] = Counter()

    @property
    def now(self) -> float:
        return self.clock.now

    # -- hosts ----------------------------------------------------------------------------

    def add(
        self, name: str, factory: NodeFactory, *, start_at: float, seeds: Iterable[str]
    ) -> None:
        """A host that starts (makes its core and joins with ``seeds``) at ``start_at``."""
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists")
        self.hosts[name] = Host(name)
        node_rng = random.Random(self._master.getrandbits(64))
        # ``seeds`` is iterated when the host starts, not copied now: at N = 1,000 a copy per
        # host would be a million names held for nothing.
        self.clock.at(start_at, self._start, self.hosts[name], factory, node_rng, seeds)

    def _start(
        self, host: Host, factory: NodeFactory, rng: random.Random, seeds: Iterable[str]
    ) -> None:
        if host.state is HostState.CRASHED:
            return
        host.node = factory(host.name, rng, self.now)
        host.state = HostState.UP
        self._after(host, host.node.join(self.now, seeds))
        self._drain_queue(host)

    def node(self, name: str) -> SimNode:
        """The core of a started host."""
        node = self.hosts[name].node
        if node is None:
            raise KeyError(f"host {name!r} has not started")
        return node

    def live(self) -> list[str]:
        """Hosts that have not crashed."""
        return [h.name for h in self.hosts.values() if h.state is not HostState.CRASHED]

    # -- faults ---------------------------------------------------------------------------

    def crash(self, name: str, at: float | None = None) -> None:
        """The host stops for good at ``at`` (now by default): no timer, no message, no send."""
        self.clock.at(self.now if at is None else at, self._crash, self.hosts[name])

    def _crash(self, host: Host) -> None:
        host.state = HostState.CRASHED
        self.drops["crashed"] += len(host.queue)
        host.queue.clear()

    def stall(self, name: str, at: float, seconds: float) -> None:
        """The host runs nothing from ``at`` for ``seconds``: what arrives meanwhile waits, its
        timers fire when it wakes, and it is told ``note_stall(seconds)`` then."""
        self.clock.at(at, self._stall, self.hosts[name], seconds)

    def _stall(self, host: Host, seconds: float) -> None:
        if host.state is not HostState.UP:
            return
        host.state = HostState.STALLED
        host.stalled_at = self.now
        self.clock.after(seconds, self._wake, host)

    def _wake(self, host: Host) -> None:
        if host.state is not HostState.STALLED or host.node is None:
            return
        host.state = HostState.UP
        # As an event loop does after a stall: first the I/O that waited, then the lag probe
        # and the timers that are overdue.
        self._drain_queue(host)
        if host.state is HostState.UP:
            host.node.note_stall(self.now - host.stalled_at)
            self._fire(host)

    def starve(self, name: str, at: float, seconds: float, lag: float) -> None:
        """From ``at`` for ``seconds``, the host is short of CPU (Lifeguard's case): it runs,
        but handles each message and each timer a random 0..``lag`` seconds late (so its
        probes see acks late, and its core notices its own late ticks)."""
        self.clock.at(at, setattr, self.hosts[name], "lag", lag)
        self.clock.at(at + seconds, setattr, self.hosts[name], "lag", 0.0)

    def partition(self, groups: Iterable[Iterable[str]], at: float | None = None) -> None:
        """From ``at``, hosts in different groups cannot reach each other (a host in no group
        is in group 0 with every other host in none)."""
        assignment = {name: index + 1 for index, group in enumerate(groups) for name in group}
        self.clock.at(self.now if at is None else at, self._set_groups, assignment)

    def heal(self, at: float | None = None) -> None:
        """From ``at``, every host reaches every other again."""
        self.clock.at(self.now if at is None else at, self._set_groups, {})

    def _set_groups(self, assignment: dict[str, int]) -> None:
        self.groups = assignment

    def set_loss(self, loss: float, at: float | None = None) -> None:
        """From ``at``, each message is lost with probability ``loss``."""
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss must be within 0..1, not {loss}")
        self.clock.at(self.now if at is None else at, setattr, self.network, "loss", loss)

    # -- running --------------------------------------------------------------------------

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> bool:
        """Advance the clock to ``until`` (or until ``stop()`` holds: True then)."""
        return self.clock.run_until(until, stop)

    def _after(self, host: Host, sends: list[Any]) -> None:
        """Carry what the core returned, hand its events on, and arm its next timer."""
        node = host.node
        assert node is not None
        for send in sends:
            self._send(host, send.to, send.message)
        events = node.drain_events()
        if events and self.on_event is not None:
            for event in events:
                self.on_event(host.name, event)
        deadline = node.next_deadline()
        if deadline < host.timer_at:
            host.timer_at = deadline
            self.clock.at(max(deadline, self.now), self._timer, host, deadline)

    def _timer(self, host: Host, deadline: float) -> None:
        if deadline != host.timer_at:
            return  # an earlier timer replaced this one
        host.timer_at = math.inf
        if host.state is HostState.UP and host.lag:
            self.clock.after(self.rng.uniform(0.0, host.lag), self._fire_late, host)
        elif host.state is HostState.UP:
            self._fire(host)
        # A stalled host's timer fires when it wakes; a crashed or pending host has none.

    def _fire_late(self, host: Host) -> None:
        if host.state is HostState.UP:
            self._fire(host)

    def _fire(self, host: Host) -> None:
        node = host.node
        assert node is not None
        sends = node.tick(self.now) if node.next_deadline() <= self.now else []
        self._after(host, sends)

    def _send(self, src: Host, to: str, message: Any) -> None:
        size = self.size_of(message)
        kind = type(message).__name__
        src.sent += 1
        src.sent_bytes += size
        self.sent_by_kind[kind] += 1
        self.bytes_by_kind[kind] += size
        if to not in self.hosts:
            self.drops["unknown"] += 1
        elif self.network.loss and self.rng.random() < self.network.loss:
            self.drops["loss"] += 1
        else:
            delay = self.network.latency.sample(self.rng)
            self.clock.after(delay, self._deliver, src.name, self.hosts[to], message, size)

    def _deliver(
        self, src: str, host: Host, message: Any, size: int, arrived: bool = False
    ) -> None:
        """A message reaches ``host`` (``arrived``: it had reached a starved host earlier and
        is handled now)."""
        if host.state is HostState.CRASHED:
            self.drops["crashed"] += 1
        elif (
            not arrived and self.groups and self.groups.get(src, 0) != self.groups.get(host.name, 0)
        ):
            self.drops["partition"] += 1
        elif host.state is not HostState.UP:
            if len(host.queue) >= self.network.queue_limit:
                self.drops["queue"] += 1
            else:
                host.queue.append((src, (message, size)))
        elif host.lag and not arrived:
            self.clock.after(
                self.rng.uniform(0.0, host.lag), self._deliver, src, host, message, size, True
            )
        else:
            self._receive(host, src, message, size)

    def _receive(self, host: Host, src: str, message: Any, size: int) -> None:
        node = host.node
        assert node is not None
        host.received += 1
        host.received_bytes += size
        self._after(host, node.receive(self.now, src, message))

    def _drain_queue(self, host: Host) -> None:
        while host.queue and host.state is HostState.UP:
            src, (message, size) = host.queue.popleft()
            self._receive(host, src, message, size)

    # -- counters -------------------------------------------------------------------------

    def counters(self) -> dict[str, tuple[int, int, int, int]]:
        """Per host: messages sent, bytes sent, messages received, bytes received so far."""
        return {
            h.name: (h.sent, h.sent_bytes, h.received, h.received_bytes)
            for h in self.hosts.values()
        }


ALIVE = "ALIVE"
DEAD = "DEAD"
SUSPECT = "SUSPECT"


class ViewTracker:
    """Who sees whom as what, from the events the cores drain (``Simulation.on_event``).

    Only what is not ALIVE is kept (observer → subject → status name), with totals per status,
    so a quiet cluster of N costs nothing and a partition costs one entry per pair it breaks.
    ``watch(subject)`` also keeps the set of observers that see ``subject`` DEAD, and the first
    time any observer saw it SUSPECT or DEAD: that is how a crash's detection is timed.
    ``crashed`` names the subjects whose DEAD is deserved; every other DEAD (and SUSPECT) is
    counted as a false positive.
    """

    def __init__(self, clock: EventQueue) -> None:
        self.clock = clock
        self.views: dict[str, dict[str, str]] = {}
        self.totals: Counter[str] = Counter()
        """(observer, subject) pairs per status now, ALIVE left out."""
        self.crashed: set[str] = set()
        self.false_dead: Counter[str] = Counter()
        """DEAD declarations of a subject that had not crashed, per subject."""
        self.false_suspect: Counter[str] = Counter()
        """SUSPECT declarations of a subject that had not crashed, per subject."""
        self.first: dict[tuple[str, str], float] = {}
        """(subject, status) → the first time any observer concluded it, for watched subjects."""
        self.dead_to: dict[str, set[str]] = {}
        """Watched subject → observers that see it DEAD now."""
        self.on_change: Callable[[str, str, str], None] | None = None
        """Called as ``on_change(observer, subject, status)`` after every change of a view."""

    def watch(self, subject: str) -> None:
        self.dead_to.setdefault(subject, set())

    def __call__(self, observer: str, event: Any) -> None:
        subject = event.name
        if subject == observer:
            return
        status = event.status.name
        view = self.views.setdefault(observer, {})
        old = view.get(subject, ALIVE)
        if status == old:
            return
        if old != ALIVE:
            self.totals[old] -= 1
        if status == ALIVE:
            view.pop(subject, None)
        else:
            view[subject] = status
            self.totals[status] += 1
        self._count(observer, subject, old, status)
        if self.on_change is not None:
            self.on_change(observer, subject, status)

    def _count(self, observer: str, subject: str, old: str, status: str) -> None:
        if subject not in self.crashed:
            if status == DEAD:
                self.false_dead[subject] += 1
            elif status == SUSPECT:
                self.false_suspect[subject] += 1
        watched = self.dead_to.get(subject)
        if watched is None:
            return
        self.first.setdefault((subject, status), self.clock.now)
        if status == DEAD:
            watched.add(observer)
        elif old == DEAD:
            watched.discard(observer)

    def status(self, observer: str, subject: str) -> str:
        return self.views.get(observer, {}).get(subject, ALIVE)

    def not_alive_among(self, names: Iterable[str]) -> int:
        """(observer, subject) pairs, both in ``names``, whose status is not ALIVE."""
        wanted = set(names)
        return sum(
            1
            for observer in wanted
            for subject in self.views.get(observer, {})
            if subject in wanted
        )


class MeshFlood:
    """A write flooding over the agents' partial mesh, with the simulation's latency model.

    The graph is built as the agents' mesh is shaped: every node links to random others until
    it has ``max_peers`` links or no one with room is left, and no node takes more than
    ``max_peers``. A node that gets the write for the first time forwards it to every
    neighbour but the one it came from; the sends leave one after the other, ``send_cost``
    seconds of the forwarder's CPU each (aiortc's DTLS+SCTP per message), and a message lost
    on the way is sent again ``retransmit_after`` seconds later (the data channel is
    reliable: SCTP retransmits).
    """

    def __init__(self, names: list[str], max_peers: int, rng: random.Random) -> None:
        self.names = names
        self.links: dict[str, set[str]] = {name: set() for name in names}
        order = names[:]
        rng.shuffle(order)
        for name in order:
            self._link(name, max_peers, rng)

    def _link(self, name: str, max_peers: int, rng: random.Random) -> None:
        links = self.links
        attempts = 0
        while len(links[name]) < max_peers and attempts < 8 * max_peers:
            attempts += 1
            other = self.names[rng.randrange(len(self.names))]
            if other != name and other not in links[name] and len(links[other]) < max_peers:
                links[name].add(other)
                links[other].add(name)

    def flood(
        self,
        source: str,
        network: NetworkModel,
        rng: random.Random,
        *,
        send_cost: float = 0.0,
        retransmit_after: float = 1.0,
    ) -> dict[str, float]:
        """Flood from ``source`` on a clock of its own; return when each node first had it,
        in seconds from the write."""
        reached: dict[str, float] = {}
        clock = EventQueue()
        start = clock.now

        def arrive(node: str, came_from: str | None) -> None:
            if node in reached:
                return
            reached[node] = clock.now - start
            departure = 0.0
            for neighbour in self.links[node]:
                if neighbour == came_from:
                    continue
                departure += send_cost
                delay = departure + network.latency.sample(rng)
                while network.loss and rng.random() < network.loss:
                    delay += retransmit_after
                clock.after(delay, arrive, neighbour, node)

        clock.at(clock.now, arrive, source, None)
        clock.run_until(math.inf)
        return reached


def time_to_fraction(reached: dict[str, float], total: int, fraction: float) -> float:
    """When ``fraction`` of ``total`` nodes had it (inf if fewer ever did)."""
    needed = max(1, math.ceil(total * fraction))
    times = sorted(reached.values())
    return times[needed - 1] if len(times) >= needed else math.inf
