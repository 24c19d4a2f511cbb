"""SWIM messages: what one `SwimNode` sends another, how big it is, and whether a received one
is well formed; and the other plain types of the node's interface (`Member`, `MemberEvent`,
`Send`, `SwimStats`).

Plain frozen dataclasses, standard library only (this runs in Pyodide too). The wire encoding
comes with the transport integration; until then `message_size` estimates the encoded size from
the fields so that the simulator can count bytes. A peer may send anything, so `problem` checks
every field the node relies on before `SwimNode.receive` touches it.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .settings import MAX_GRACE

__all__ = [
    "MAX_SEQ",
    "Ack",
    "Gossip",
    "Member",
    "MemberEvent",
    "Message",
    "Nack",
    "Ping",
    "PingReq",
    "Prove",
    "PushPull",
    "Send",
    "Status",
    "SwimStats",
    "Update",
    "checked_proof",
    "message_size",
    "name_problem",
    "no_proof",
    "problem",
]

MAX_SEQ = 2**32 - 1
"""Sequence numbers and incarnations are 32-bit unsigned, as in memberlist."""

MAX_NAME = 256
"""Longest member name accepted from a peer (node ids are 52 characters)."""

MAX_PROOF = 1024
"""Longest opaque proof accepted on an update (an Ed25519 signature and its fields fit)."""


class Status(enum.Enum):
    """What a node believes of a member. Precedence at one incarnation: ALIVE < SUSPECT < DEAD,
    and LEFT (said by the member itself) ends it; a higher incarnation, which only the member
    itself can take, overrides all of them with ALIVE."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True)
class Update:
    """One membership change, piggybacked on messages: ``origin`` said that ``name`` is
    ``status`` at ``incarnation``. ALIVE and LEFT are only ever said by the member itself
    (``origin == name``); ``proof`` is opaque here (the integration will put the member's
    signature in it) and passed on unchanged."""

    name: str
    status: Status
    incarnation: int
    origin: str
    proof: bytes | None = None
    grace: float = 0.0
    """On a member's own ALIVE: seconds it asks the others to add to its suspicion timeout
    (a hidden browser tab, whose timers run at most once a second); 0 on anything else."""


Prove = Callable[[int, float, bool], bytes | None]
"""The host's ``prove(incarnation, grace, left)``: the proof of a node's own ALIVE (or, with
``left``, LEFT) at that incarnation and grace, or None when it has none ready yet (it gives
it later to `SwimNode.set_proof`)."""


def no_proof(incarnation: int, grace: float, left: bool) -> bytes | None:
    """The `Prove` of a host that signs nothing (the simulator, the tests)."""
    return None


def checked_proof(proof: object) -> bytes:
    """``proof`` from the host, if the others would accept it: one they reject as malformed
    would drop every message that carries the node's ALIVE, so it is the host's error."""
    if not isinstance(proof, bytes) or len(proof) > MAX_PROOF:
        raise ValueError(f"a proof must be bytes of at most {MAX_PROOF}: {proof!r:.40}")
    return proof


@dataclass(frozen=True)
class Ping:
    """Are you alive? ``target`` is who the sender means, so a ping that reaches another
    member is not answered for it."""

    seq: int
    target: str
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True)
class Ack:
    """The answer to a `Ping` of the same ``seq`` (forwarded by the member a `PingReq` asked)."""

    seq: int
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True)
class PingReq:
    """Ping ``target`` for me and forward its ack under this ``seq``; send a `Nack` if none
    came within your probe timeout (Lifeguard: the prober learns that the helper is alive,
    so a missing ack is not its own fault)."""

    seq: int
    target: str
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True)
class Nack:
    """The helper of a `PingReq` of this ``seq`` got no ack from its target in time."""

    seq: int
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True)
class Gossip:
    """Only piggybacked updates: sent every gossip interval to a few members while there is
    news, so that a change spreads faster than the probes alone would carry it."""

    updates: tuple[Update, ...]


@dataclass(frozen=True)
class PushPull:
    """The sender's whole member table (``states``, one update per member); ``reply`` asks the
    receiver to answer with its own. Anti-entropy: what piggybacking missed, and how the two
    halves of a healed partition learn of each other."""

    states: tuple[Update, ...]
    reply: bool
    updates: tuple[Update, ...] = ()


Message = Ping | Ack | PingReq | Nack | Gossip | PushPull
"""Every kind a `SwimNode` sends or accepts."""

_KINDS = (Ping, Ack, PingReq, Nack, Gossip, PushPull)


@dataclass(frozen=True)
class Member:
    """What a node knows of one member; ``since`` is the ``now`` of its last status change."""

    name: str
    status: Status
    incarnation: int
    since: float
    grace: float = 0.0
    """Seconds it asked to be added to its suspicion timeout (`SwimNode.set_grace`)."""


@dataclass(frozen=True)
class Send:
    """One message for the host to carry to the member named ``to``."""

    to: str
    message: Message


@dataclass(frozen=True)
class MemberEvent:
    """A status change this node concluded or learned (a new member comes as ALIVE)."""

    name: str
    status: Status
    incarnation: int
    at: float


@dataclass
class SwimStats:
    """Counters for the simulator, the status page and the tests."""

    sent: Counter[str] = field(default_factory=Counter)
    """Messages sent, by kind (class name)."""
    sent_bytes: Counter[str] = field(default_factory=Counter)
    """Estimated bytes sent, by kind (`message_size`)."""
    received: Counter[str] = field(default_factory=Counter)
    """Well-formed messages received, by kind."""
    received_bytes: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    """Messages or updates ignored, by reason: ``malformed``, ``unknown-kind``, ``from-self``,
    ``misdirected``, ``unexpected-ack``, ``unexpected-nack``, ``relays-full``, ``table-full``,
    ``stale``, ``after-leave``, ``push-pull-busy`` (a push/pull request left unanswered)."""
    last_drop: str = ""
    """Why the last malformed message was dropped (for the host's paced log line)."""
    probes: int = 0
    probes_failed: int = 0
    indirect_probes: int = 0
    """PingReqs this node sent."""
    relayed: int = 0
    """PingReqs this node served for others."""
    nacks_sent: int = 0
    nacks_received: int = 0
    suspicions: int = 0
    """Members this node suspected after its own failed probe."""
    confirmations: int = 0
    refutations: int = 0
    corrections: int = 0
    """Current ALIVEs sent straight back to a member that accused an old incarnation."""
    accusers_told: int = 0
    """ALIVEs sent straight to the origins of accusations this node refuted or corrected
    (`swim_gossip.Accusers`), besides the sender of the accusation."""
    deaths: int = 0
    """Members this node declared DEAD when their suspicion timed out."""
    verdicts_held: int = 0
    """Suspicion timeouts that expired while the host held verdicts (`hold_verdicts`)."""
    stalls: int = 0
    stalled_seconds: float = 0.0
    events_dropped: int = 0

    def count_sent(self, out: list[Send]) -> list[Send]:
        """Count ``out`` (by kind, and its estimated bytes) and hand it back."""
        for send in out:
            kind = type(send.message).__name__
            self.sent[kind] += 1
            self.sent_bytes[kind] += message_size(send.message)
        return out

    def count_received(self, message: Message) -> None:
        kind = type(message).__name__
        self.received[kind] += 1
        self.received_bytes[kind] += message_size(message)


_HEADER_BYTES = 2
"""Kind and field count, as a msgpack array header and a small int would take."""
_INT_BYTES = 5
"""A 32-bit unsigned int in msgpack."""


def _str_size(text: str) -> int:
    return 2 + len(text.encode("utf-8", "replace"))


def update_size(update: Update) -> int:
    """An estimate of one update's encoded size in bytes (its proof included)."""
    proof = 1 if update.proof is None else 3 + len(update.proof)
    grace = 9 if update.grace else 1
    fixed = _HEADER_BYTES + 1 + _INT_BYTES + proof + grace
    return fixed + _str_size(update.name) + _str_size(update.origin)


def message_size(message: Message) -> int:
    """An estimate of the encoded size in bytes (msgpack-like), computed from the fields."""
    size = _HEADER_BYTES + sum(update_size(update) for update in message.updates) + 3
    if isinstance(message, Ping | PingReq):
        size += _INT_BYTES + _str_size(message.target)
    elif isinstance(message, Ack | Nack):
        size += _INT_BYTES
    elif isinstance(message, PushPull):
        size += 1 + 3 + sum(update_size(state) for state in message.states)
    return size


def name_problem(value: object, what: str) -> str | None:
    """Why ``value`` is not a member name (a non-empty string of at most ``MAX_NAME``)."""
    if not isinstance(value, str) or not value:
        return f"{what} is not a non-empty string"
    if len(value) > MAX_NAME:
        return f"{what} is longer than {MAX_NAME} characters"
    return None


def _uint_problem(value: object, what: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        return f"{what} is not an integer in 0..{MAX_SEQ}"
    return None


def _update_problem(update: object) -> str | None:
    if not isinstance(update, Update):
        return "an update is not an Update"
    if not isinstance(update.status, Status):
        return "an update's status is not a Status"
    for problem_ in (
        name_problem(update.name, "an update's name"),
        name_problem(update.origin, "an update's origin"),
        _uint_problem(update.incarnation, "an update's incarnation"),
    ):
        if problem_:
            return problem_
    if update.proof is not None and (
        not isinstance(update.proof, bytes) or len(update.proof) > MAX_PROOF
    ):
        return f"an update's proof is not bytes of at most {MAX_PROOF}"
    if update.status in (Status.ALIVE, Status.LEFT) and update.origin != update.name:
        return f"{update.status.value} of {update.name!r} said by another member"
    grace = update.grace
    if isinstance(grace, bool) or not isinstance(grace, int | float):
        return "an update's grace is not a number"
    if not 0.0 <= grace <= MAX_GRACE or (grace and update.status is not Status.ALIVE):
        return f"an update's grace is not in 0..{MAX_GRACE:.0f} on an ALIVE (0 otherwise)"
    return None


def _updates_problem(updates: object, limit: int, what: str) -> str | None:
    if not isinstance(updates, tuple):
        return f"{what} is not a tuple"
    if len(updates) > limit:
        return f"{what} has more than {limit} entries"
    for update in updates:
        if reason := _update_problem(update):
            return reason
    return None


def problem(message: object, *, max_updates: int, max_states: int) -> str | None:
    """Why ``message`` is not a well-formed SWIM message, or None when it is. A message whose
    fields have the wrong types, or that is of no known kind, gets a reason and is dropped by
    the receiver; nothing here raises."""
    if not isinstance(message, _KINDS):
        return f"unknown kind {type(message).__name__}"
    reason = _updates_problem(message.updates, max_updates, "updates")
    if reason:
        return reason
    if isinstance(message, Ping | PingReq | Ack | Nack):
        reason = _uint_problem(message.seq, "seq")
    if not reason and isinstance(message, Ping | PingReq):
        reason = name_problem(message.target, "target")
    if not reason and isinstance(message, PushPull):
        reason = _updates_problem(message.states, max_states, "states")
        if not reason and not isinstance(message.reply, bool):
            reason = "reply is not a bool"
    return reason
