"""The parts of SWIM + Lifeguard with state of their own, apart from the node that drives them:
the transmit-limited queue of updates to piggyback, the suspicion timer that shrinks with
independent confirmations, the probe ring, the node's timers (a heap with lazy deletion), and
the formulas that scale with the cluster's size (memberlist's ``retransmitLimit``,
``suspicionTimeout`` and ``pushPullScale``); and the node's records of members, probes and
relays.

Sans-IO and standard library only (runs in Pyodide).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .settings import SwimSettings
from .swim_messages import Status, Update, update_size

__all__ = [
    "LIVE",
    "BroadcastQueue",
    "MemberState",
    "Probe",
    "ProbeRing",
    "Relay",
    "Suspicion",
    "TimerKey",
    "Timers",
    "TokenBucket",
    "is_alive",
    "is_live",
    "push_pull_scale",
    "push_pull_table",
    "retransmit_limit",
    "suspicion_bounds",
]

LIVE = (Status.ALIVE, Status.SUSPECT)
"""The statuses of a member that counts: probed, and one of the N of every formula."""

PUSH_PULL_SCALE_THRESHOLD = 32
"""Members up to which the push/pull interval is not scaled (memberlist's value)."""


def retransmit_limit(retransmit_mult: int, members: int) -> int:
    """How many messages one node piggybacks an update on: ``mult`` x ceil(log10(N + 1)),
    enough for an epidemic to reach all N members with high probability."""
    return retransmit_mult * math.ceil(math.log10(max(1, members) + 1))


def suspicion_bounds(settings: SwimSettings, members: int) -> tuple[float, float]:
    """(floor, ceiling) of the suspicion timeout for a cluster of ``members``: the floor is
    ``suspicion_mult`` x ``probe_interval`` x max(1, 1 + ``suspicion_log_growth`` x
    log10(N / ``suspicion_flat_members``)), the ceiling ``suspicion_max_timeout_mult`` times
    it. With 10 members flat and a growth of 1 this is memberlist's ``mult`` x
    max(1, log10 N) x interval."""
    flat = max(1, settings.suspicion_flat_members)
    decades = math.log10(max(1, members) / flat)
    growth = max(1.0, 1.0 + settings.suspicion_log_growth * decades)
    floor = settings.suspicion_mult * settings.probe_interval * growth
    return floor, floor * settings.suspicion_max_timeout_mult


def push_pull_scale(interval: float, members: int) -> float:
    """memberlist's push/pull period: unscaled up to 32 members, then one more interval per
    doubling, so that full-state exchanges cost bounded bandwidth at any size."""
    if members <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    return interval * (math.ceil(math.log2(members) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1)


class Suspicion:
    """One member's suspicion at one incarnation (Lifeguard's LHA-Suspicion): it times out after
    ``ceiling`` with no confirmations, falling towards ``floor`` as members other than the
    first accuser suspect it too: timeout = max(floor, ceiling - (ceiling - floor) x
    log(C + 1) / log(K + 1)) for C confirmations of the K expected."""

    def __init__(
        self,
        incarnation: int,
        start: float,
        accuser: str,
        expected: int,
        bounds: tuple[float, float],
    ) -> None:
        self.incarnation = incarnation
        self.start = start
        self.expected = max(0, expected)
        self.floor, self.ceiling = bounds
        self.confirmations = 0
        self._seen = {accuser}

    def timeout(self) -> float:
        """Seconds from ``start`` to DEAD with the confirmations so far."""
        if self.expected < 1:
            return self.floor
        fraction = math.log(self.confirmations + 1) / math.log(self.expected + 1)
        return max(self.floor, self.ceiling - (self.ceiling - self.floor) * fraction)

    def deadline(self) -> float:
        return self.start + self.timeout()

    def confirm(self, origin: str) -> bool:
        """Count ``origin``'s suspicion once; True when it was new (then it is worth
        re-gossiping, so that the others' timers shrink too). Bounded: at most K count."""
        if self.confirmations >= self.expected or origin in self._seen:
            return False
        self._seen.add(origin)
        self.confirmations += 1
        return True


class Accusers:
    """The members that accused this node (a SUSPECT or DEAD about it), told its refutation
    directly: the accuser whose suspicion timer fires first is then one hop from the news,
    however long the gossip would take to find it. The sender of the message that carried the
    accusation is told too. Bounded: at most ``limit`` origins per incarnation of this node
    (the first accuser and its K confirmations), however many accusations arrive, so that
    forged origins cannot make it send without bound."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self._heard: dict[str, None] = {}
        """Origins heard in the message being handled, in order."""
        self._told: dict[str, None] = {}
        """Origins told at ``_incarnation``: each once."""
        self._incarnation = -1

    def heard(self, origin: str) -> None:
        """An accusation from ``origin`` in the message being handled."""
        if len(self._heard) < self.limit:
            self._heard[origin] = None

    def take(self, incarnation: int, sender: str) -> list[str]:
        """Whom to send this node's ALIVE at ``incarnation`` after a message from ``sender``
        that accused it: the sender and the origins heard not told yet at this incarnation."""
        if incarnation != self._incarnation:
            self._incarnation = incarnation
            self._told.clear()
        names = [sender]
        for origin in self._heard:
            if origin != sender and origin not in self._told and len(self._told) < self.limit:
                self._told[origin] = None
                names.append(origin)
        self._heard.clear()
        return names

    def clear(self) -> None:
        """The message is handled and had no accusation worth answering."""
        self._heard.clear()


class BroadcastQueue:
    """Updates waiting to be piggybacked, at most one per member (a newer update about a member
    replaces the older one: it is the only one worth spreading). Each goes out on at most the
    retransmit limit of messages; the least sent go first, and among those sent as often, the
    last added or sent (memberlist orders by transmits, then newest). Kept in buckets by
    transmit count, so that picking costs O(limit), not O(queue): after a partition a node
    may hold an update about each member of the other half."""

    def __init__(self) -> None:
        self._pending: dict[str, Update] = {}
        self._sent: dict[str, int] = {}
        self._buckets: dict[int, dict[str, None]] = {}
        """Transmit count -> names, in the order they entered the bucket."""

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, update: Update) -> None:
        self._discard(update.name)
        self._pending[update.name] = update
        self._move(update.name, 0)

    def about(self, name: str) -> Update | None:
        return self._pending.get(name)

    def pick(
        self, limit: int, transmit_limit: int, first_about: str | None, budget: float = math.inf
    ) -> list[Update]:
        """Up to ``limit`` updates of at most ``budget`` bytes in all (`update_size`; the
        first goes whatever its size) for one message, each counted as sent once. An update
        about the recipient goes first (Lifeguard's buddy system: a suspected member learns
        of its suspicion on the very probe that tests it, and can refute at once)."""
        chosen: list[str] = []
        if limit < 1 or not self._pending:
            return []
        if first_about is not None and first_about in self._pending:
            chosen.append(first_about)
            budget -= update_size(self._pending[first_about])
        for sent in sorted(self._buckets):
            for name in reversed(self._buckets[sent]):
                if len(chosen) >= limit:
                    break
                if name == first_about:
                    continue
                size = update_size(self._pending[name])
                if chosen and size > budget:
                    continue  # a smaller one may still fit
                chosen.append(name)
                budget -= size
        updates = [self._pending[name] for name in chosen]
        for name in chosen:
            sent = self._sent[name] + 1
            if sent >= transmit_limit:
                self._discard(name)
            else:
                self._move(name, sent)
        return updates

    def _move(self, name: str, sent: int) -> None:
        before = self._sent.get(name)
        if before is not None:
            self._leave_bucket(name, before)
        self._sent[name] = sent
        self._buckets.setdefault(sent, {})[name] = None

    def _discard(self, name: str) -> None:
        if self._pending.pop(name, None) is not None:
            self._leave_bucket(name, self._sent.pop(name))

    def _leave_bucket(self, name: str, sent: int) -> None:
        bucket = self._buckets[sent]
        del bucket[name]
        if not bucket:
            del self._buckets[sent]


TimerKey = tuple[str, object]


class Timers:
    """Deadlines by (kind, key), in a heap with lazy deletion: setting a key again or cancelling
    it leaves the old heap entry behind, skipped when it surfaces."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, object]] = []
        self._due: dict[TimerKey, float] = {}
        self._count = 0

    def set(self, at: float, kind: str, key: object = None) -> None:
        self._due[(kind, key)] = at
        self._count += 1
        heapq.heappush(self._heap, (at, self._count, kind, key))
        if len(self._heap) > 2 * len(self._due) + 64:
            self._rebuild(0.0)

    def has(self, kind: str, key: object = None) -> bool:
        return (kind, key) in self._due

    def cancel(self, kind: str, key: object = None) -> None:
        self._due.pop((kind, key), None)

    def clear(self) -> None:
        self._heap.clear()
        self._due.clear()

    def next(self) -> float:
        while self._heap:
            at, _, kind, key = self._heap[0]
            if self._due.get((kind, key)) == at:
                return at
            heapq.heappop(self._heap)
        return math.inf

    def pop_due(self, now: float) -> TimerKey | None:
        while self._heap and self._heap[0][0] <= now:
            at, _, kind, key = heapq.heappop(self._heap)
            if self._due.get((kind, key)) == at:
                del self._due[(kind, key)]
                return kind, key
        return None

    def shift(self, seconds: float) -> None:
        self._rebuild(seconds)

    def _rebuild(self, shift: float) -> None:
        self._due = {key: at + shift for key, at in self._due.items()}
        self._heap = [(at, i, key[0], key[1]) for i, (key, at) in enumerate(self._due.items())]
        heapq.heapify(self._heap)
        self._count = len(self._heap)


def dead_is_due(suspicion: Suspicion | None, incarnation: int, now: float, ratio: float) -> bool:
    """Whether another member's DEAD at ``incarnation`` is taken as it is: only once this node
    has itself suspected the member at that incarnation for ``ratio`` of its suspicion floor
    (``swim.believe_dead_after``). Sooner it is one more suspicion, so one member alone
    (hostile, or the cut-off one) cannot make a live member DEAD: it would have to keep it
    suspected, unrefuted, that long. A real failure is suspected everywhere about as early as
    by its first accuser, so its DEAD is taken at once."""
    if suspicion is None or suspicion.incarnation != incarnation:
        return False
    return now - suspicion.start >= ratio * suspicion.floor


class ProbeRing:
    """The members a node probes, round-robin over a shuffled list (memberlist's ``nodes``):
    each gets probed once per round, a new one lands at a random place (so it is not always
    probed last), and each wrap reshuffles and drops what is no longer worth keeping. Random
    members (helpers, gossip targets) are drawn from it too."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._names: list[str] = []
        self._in: set[str] = set()
        self._pos = 0

    def __contains__(self, name: object) -> bool:
        return name in self._in

    def __len__(self) -> int:
        return len(self._names)

    def insert(self, name: str) -> None:
        names = self._names
        names.append(name)
        self._in.add(name)
        place = self._rng.randrange(len(names))
        names[place], names[-1] = names[-1], names[place]

    def next(self, probeable: Callable[[str], bool], keep: Callable[[str], bool]) -> str | None:
        """The next member to probe, or None when none is probeable; at each wrap, only the
        members ``keep`` holds stay, reshuffled."""
        for _ in range(len(self._names) + 1):
            if self._pos >= len(self._names):
                self._names = [name for name in self._names if keep(name)]
                self._in = set(self._names)
                self._rng.shuffle(self._names)
                self._pos = 0
                if not self._names:
                    return None
            name = self._names[self._pos]
            self._pos += 1
            if probeable(name):
                return name
        return None

    def sample(
        self, count: int, eligible: Callable[[str], bool], exclude: Iterable[str]
    ) -> list[str]:
        """Up to ``count`` distinct eligible members at random: by random draws (memberlist's
        kRandomNodes, O(count) in a large cluster), by a scan when the ring is small."""
        excluded = set(exclude)
        names = self._names
        tries = 4 * count + 16
        if len(names) <= tries:
            found = [n for n in names if n not in excluded and eligible(n)]
            return self._rng.sample(found, min(count, len(found)))
        picked: list[str] = []
        for _ in range(tries):
            name = names[self._rng.randrange(len(names))]
            if name in excluded or name in picked or not eligible(name):
                continue
            picked.append(name)
            if len(picked) >= count:
                break
        return picked


class TokenBucket:
    """``rate`` per second, with a burst of as many (one second's worth)."""

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._at = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._tokens = min(self._rate, self._tokens + max(0.0, now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass
class MemberState:
    """What a node holds of one member (`SwimNode.members` hands out frozen `Member` copies)."""

    name: str
    status: Status
    incarnation: int
    since: float
    proof: bytes | None = None
    """The proof of the member's own last ALIVE or LEFT, passed on in push/pull."""
    grace: float = 0.0
    """Seconds its last ALIVE asked to be added to its suspicion timeout (capped)."""


def is_live(state: MemberState) -> bool:
    return state.status in LIVE


def is_alive(state: MemberState) -> bool:
    return state.status is Status.ALIVE


def forget(
    members: dict[str, MemberState], gone: dict[str, None], ring: ProbeRing, horizon: float
) -> None:
    """Drop the tombstones (``gone``: DEAD and LEFT members) of those gone since before
    ``horizon`` (memberlist reaps them too): churn must not fill the table up to
    ``max_members``. One still in the probe ring waits for the ring's next reset, which drops
    it from there. This node itself is never in ``gone`` (it is not DEAD, and after it leaves
    nothing runs)."""
    for name in list(gone):
        if members[name].since < horizon and name not in ring:
            del members[name]
            del gone[name]


def push_pull_table(members: Iterable[MemberState], me: str, horizon: float) -> tuple[Update, ...]:
    """The table ``me`` sends in a push/pull: everyone but DEAD and LEFT members since before
    ``horizon`` (no longer gossiped to). ALIVE and LEFT go as their members said them (with
    the proof), suspicions and deaths as ``me``'s opinion."""
    states = []
    for state in members:
        if state.status in (Status.DEAD, Status.LEFT) and state.since < horizon:
            continue
        own = state.status in (Status.ALIVE, Status.LEFT)
        states.append(
            Update(
                state.name,
                state.status,
                state.incarnation,
                state.name if own else me,
                state.proof if own else None,
                state.grace if state.status is Status.ALIVE else 0.0,
            )
        )
    return tuple(states)


@dataclass
class Probe:
    """This node's probe of the current protocol period."""

    target: str
    seq: int
    helpers: list[str] = field(default_factory=list)
    nacks: set[str] = field(default_factory=set)
    acked: bool = False


@dataclass
class Relay:
    """A PingReq this node serves: ping ``target`` under our own seq, answer ``origin``'s."""

    origin: str
    seq: int
    target: str
