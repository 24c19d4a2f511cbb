"""SWIM on the wire: the SWIM frame's body, and the signed record a member makes of itself.

A SWIM message (`p2pkube.membership.swim_messages`) travels as the body of a SWIM frame to a
neighbour, or inside a ROUTE (``{"kind": "swim", "m": body}``) to a member further away. The
body is a msgpack array, kind first, fields in declaration order, updates last::

    Ping      [1, seq, target, updates]        Ack   [2, seq, updates]
    PingReq   [3, seq, target, updates]        Nack  [4, seq, updates]
    Gossip    [5, updates]                     PushPull [6, states, reply, updates]
    update    [name, status, incarnation, origin, proof | nil, grace]
    status    0 alive, 1 suspect, 2 dead, 3 left

Nothing here trusts the peer: `decode` raises `FrameError` for a body of the wrong shape, and
the core's own `problem` check rejects bad values (names, bounds) before it acts on any.

**The member record.** Only a member says ALIVE or LEFT of itself, so each such update carries
as its ``proof`` a record the member signed (`seal_record`, checked by the host): its node id
and public key (the id is derived from the key, so a record proves itself), its display name,
the incarnation and grace of the update, whether it left, and its neighbours as 8-byte short
ids (`p2pkube.membership.topology.short_id`), from which every node computes routes. The
proof is ``msgpack([record, signature])`` with the signature over
``transcript("p2pkube-member-v1", cluster, record)``. Byte by byte in docs/protocol.md (SWIM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack

from p2pkube.membership.swim_messages import (
    MAX_PROOF,
    Ack,
    Gossip,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Status,
    Update,
)
from p2pkube.net.frames import FrameError, require_fields, unpack
from p2pkube.net.keys import node_id_from_public_key
from p2pkube.net.signed import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, transcript

__all__ = ["DOMAIN", "MemberRecord", "decode", "encode", "parse_proof", "record_bytes"]

DOMAIN = "p2pkube-member-v1"
"""Domain separation: a member record's signature verifies as nothing else."""
SHORT_ID_BYTES = 8
"""Length of a neighbour's short id in a record."""
MAX_RECORD_PEERS = 64
"""Most neighbours a record may list (a node links to max_peers + jitter + slack, ~14)."""

_STATUS_CODES = {Status.ALIVE: 0, Status.SUSPECT: 1, Status.DEAD: 2, Status.LEFT: 3}
_STATUSES = {code: status for status, code in _STATUS_CODES.items()}
_KIND_CODES: dict[type, int] = {Ping: 1, Ack: 2, PingReq: 3, Nack: 4, Gossip: 5, PushPull: 6}


def _update(update: Update) -> list[Any]:
    return [
        update.name,
        _STATUS_CODES[update.status],
        update.incarnation,
        update.origin,
        update.proof,
        update.grace,
    ]


def encode(message: Message) -> list[Any]:
    """The SWIM frame body of ``message``."""
    updates = [_update(u) for u in message.updates]
    if isinstance(message, Ping | PingReq):
        return [_KIND_CODES[type(message)], message.seq, message.target, updates]
    if isinstance(message, Ack | Nack):
        return [_KIND_CODES[type(message)], message.seq, updates]
    if isinstance(message, Gossip):
        return [5, updates]
    return [6, [_update(s) for s in message.states], message.reply, updates]


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError(f"swim {what} must be an integer")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise FrameError(f"swim {what} must be a string")
    return value


def _decode_update(item: Any) -> Update:
    if not isinstance(item, list) or len(item) != 6:
        raise FrameError("swim update must be [name, status, incarnation, origin, proof, grace]")
    name, code, incarnation, origin, proof, grace = item
    status = _STATUSES.get(code) if isinstance(code, int) and not isinstance(code, bool) else None
    if status is None:
        raise FrameError(f"swim update status {code!r} is unknown")
    if proof is not None and (not isinstance(proof, bytes) or len(proof) > MAX_PROOF):
        # no honest member sends a longer one (its own proof is checked before it goes), and
        # a relay passes on only what it decoded: the sender made it up
        raise FrameError(f"swim update proof must be nil or bytes of at most {MAX_PROOF}")
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not math.isfinite(grace):
        raise FrameError("swim update grace must be a finite number")
    return Update(
        _str(name, "update name"),
        status,
        _int(incarnation, "incarnation"),
        _str(origin, "update origin"),
        proof,
        float(grace),
    )


def _decode_updates(items: Any, limit: int) -> tuple[Update, ...]:
    if not isinstance(items, list):
        raise FrameError("swim updates must be an array")
    if len(items) > limit:
        raise FrameError(f"swim message with {len(items)} updates (at most {limit})")
    return tuple(_decode_update(item) for item in items)


def decode(body: Any, *, max_updates: int, max_states: int) -> Message:
    """The SWIM message of a frame body; FrameError for anything of the wrong shape (the
    values are checked by the core's `problem`)."""
    if not isinstance(body, list) or not body:
        raise FrameError("swim body must be a non-empty array")
    kind, *fields = body
    shapes = {1: 3, 2: 2, 3: 3, 4: 2, 5: 1, 6: 3}
    if isinstance(kind, bool) or kind not in shapes or len(fields) != shapes[kind]:
        raise FrameError(f"swim message kind {kind!r} with {len(fields)} fields is unknown")
    updates = _decode_updates(fields[-1], max_updates)
    if kind in (1, 3):
        seq, target = _int(fields[0], "seq"), _str(fields[1], "target")
        return Ping(seq, target, updates) if kind == 1 else PingReq(seq, target, updates)
    if kind in (2, 4):
        seq = _int(fields[0], "seq")
        return Ack(seq, updates) if kind == 2 else Nack(seq, updates)
    if kind == 5:
        return Gossip(updates)
    reply = fields[1]
    if not isinstance(reply, bool):
        raise FrameError("swim push/pull reply must be a boolean")
    return PushPull(_decode_updates(fields[0], max_states), reply, updates)


# ---- the member record -------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberRecord:
    """What a member signed about itself (the proof of its ALIVE or LEFT)."""

    node: str
    pub: bytes
    name: str
    incarnation: int
    grace: float
    left: bool
    peers: tuple[bytes, ...]
    """Its neighbours' short ids when it signed."""
    signed: bytes
    """The bytes the signature covers (``record`` of the proof)."""
    signature: bytes


def record_bytes(
    node: str,
    pub: bytes,
    name: str,
    incarnation: int,
    grace: float,
    left: bool,
    peers: list[bytes],
) -> bytes:
    """The record a member signs about itself, encoded."""
    fields = {
        "node": node,
        "pub": pub,
        "name": name,
        "inc": incarnation,
        "grace": float(grace),
        "left": left,
        "peers": peers[:MAX_RECORD_PEERS],
    }
    return msgpack.packb(fields, use_bin_type=True)


def proof_of(record: bytes, signature: bytes) -> bytes:
    """The ``proof`` an ALIVE or LEFT update carries."""
    return msgpack.packb([record, signature], use_bin_type=True)


def signed_transcript(cluster: str, record: bytes) -> bytes:
    """What a record's signature must be a signature of."""
    return transcript(DOMAIN, cluster, record)


_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "node": str,
    "pub": bytes,
    "name": str,
    "inc": int,
    "grace": (int, float),
    "left": bool,
    "peers": list,
}


def parse_proof(proof: bytes) -> MemberRecord:
    """The record inside an update's proof (its signature not yet checked); FrameError when it
    cannot be a record any member signed."""
    if len(proof) > MAX_PROOF:
        raise FrameError(f"member record over {MAX_PROOF} bytes")
    outer = unpack(proof, MAX_PROOF)
    if not (
        isinstance(outer, list) and len(outer) == 2 and all(isinstance(v, bytes) for v in outer)
    ):
        raise FrameError("member proof must be [record, signature]")
    record, signature = outer
    if len(signature) != SIGNATURE_BYTES:
        raise FrameError("member record signature must be 64 bytes")
    fields = require_fields(unpack(record, MAX_PROOF), _RECORD_FIELDS)
    pub = fields["pub"]
    if len(pub) != PUBLIC_KEY_BYTES or node_id_from_public_key(pub) != fields["node"]:
        raise FrameError("member record node id does not match its public key")
    peers = fields["peers"]
    if len(peers) > MAX_RECORD_PEERS or not all(
        isinstance(p, bytes) and len(p) == SHORT_ID_BYTES for p in peers
    ):
        raise FrameError(f"member record peers must be at most {MAX_RECORD_PEERS} short ids")
    grace = fields["grace"]
    if not math.isfinite(grace) or grace < 0 or not 0 <= fields["inc"] < 2**32:
        raise FrameError("member record grace or incarnation out of range")
    return MemberRecord(
        node=fields["node"],
        pub=pub,
        name=fields["name"],
        incarnation=fields["inc"],
        grace=float(grace),
        left=fields["left"],
        peers=tuple(peers),
        signed=record,
        signature=signature,
    )
