"""Wire messages: y-protocols sync messages plus p2pkube's generation envelope.

The y-protocols bytes are exactly those of `y-protocols/sync.js` (and pycrdt's
helpers), so a browser node can feed them to the stock JS implementation::

    sync message := varUint(0 = messageSync) varUint(kind) varUint8Array(payload)
    kind         := 0 step1 (payload = state vector)
                  | 1 step2 (payload = update: what the step1 sender misses)
                  | 2 update (payload = one incremental update)

p2pkube wraps each y-protocols message in an envelope naming the document
generation it belongs to, kept *outside* the y-protocols bytes so they stay pure::

    state message := generation sync-message
    generation    := varUint(number) varUint(creator)

(docs/protocol.md's name; a state message is the body of a link's SYNC frame, see
`p2pkube.net.frames`, which is why nothing here is called a frame.)

A generation is one Yjs document; compaction (docs/state.md) replaces the
document by a fresh one with a higher generation. Generations are ordered as the
tuple (number, creator): `creator` is the Yjs client id of the node that built
it, so two nodes compacting at once create two distinct ids and every peer
converges on the larger one. The first document is `GENESIS` = (0, 0); any
other generation has number >= 1 and creator >= 1 (client ids are never 0).

Decoding never trusts a length: every varUint is bounded (JS-safe, at most
`_MAX_VARUINT_BYTES` bytes) and every length is checked against the bytes that
are actually there and against a caller-supplied maximum, so hostile input can
neither crash the agent nor make it allocate.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final, NamedTuple

from .settings import DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_SV_ENTRIES

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_MAX_SV_ENTRIES",
    "EMPTY_STATE_VECTOR",
    "GENESIS",
    "MESSAGE_SYNC",
    "Generation",
    "StateMessage",
    "SyncMessageKind",
    "SyncProtocolError",
    "decode_generation",
    "decode_state_message",
    "decode_state_vector",
    "decode_sync_message",
    "encode_generation",
    "encode_state_message",
    "encode_sync_step1",
    "encode_sync_step2",
    "encode_update",
    "read_var_uint",
    "write_var_uint",
]

MESSAGE_SYNC: Final = 0
"""y-protocols top-level message type `messageSync` (1 would be awareness)."""

_MAX_VARUINT_BYTES: Final = 8
"""8 x 7 bits = 56 bits: enough for any JS-safe integer (lib0 caps at 2**53)."""
_MAX_SAFE_INT: Final = 2**53 - 1


EMPTY_STATE_VECTOR: Final = b"\x00"
"""An encoded state vector with no clients: a step 1 carrying it asks for the whole document."""


class Generation(NamedTuple):
    """Which document a state message belongs to; tuple order decides which one wins."""

    number: int
    """Incremented by each compaction."""
    creator: int
    """Client id of the compacting node (0 only for GENESIS): breaks ties between
    two nodes that compacted the same generation at the same time."""

    def __str__(self) -> str:
        return f"{self.number}.{self.creator}"


GENESIS: Final = Generation(0, 0)
"""The generation of a document that was never compacted."""


class SyncProtocolError(ValueError):
    """Malformed, truncated or hostile sync input; the caller should drop the peer."""


class SyncMessageKind(IntEnum):
    """The y-protocols sync sub-message type."""

    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


def write_var_uint(num: int) -> bytes:
    """Encode a non-negative int as lib0 varUint (7 bits per byte, low bits first)."""
    if num < 0 or num > _MAX_SAFE_INT:
        raise ValueError(f"varUint out of range: {num}")
    out = bytearray()
    while num > 0x7F:
        out.append(0x80 | (num & 0x7F))
        num >>= 7
    out.append(num)
    return bytes(out)


def read_var_uint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode a lib0 varUint at `pos`; return (value, next position).

    Raises SyncProtocolError on truncation or on a value beyond 2**53 - 1.
    """
    value = 0
    shift = 0
    end = len(data)
    for i in range(_MAX_VARUINT_BYTES):
        if pos + i >= end:
            raise SyncProtocolError("truncated varUint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value > _MAX_SAFE_INT:
                raise SyncProtocolError("varUint exceeds 2**53 - 1")
            return value, pos + i + 1
        shift += 7
    raise SyncProtocolError("varUint too long")


def _encode(kind: SyncMessageKind, payload: bytes) -> bytes:
    return bytes((MESSAGE_SYNC, kind)) + write_var_uint(len(payload)) + payload


def encode_sync_step1(state_vector: bytes) -> bytes:
    """Step 1: "here is what I have" (sent by both sides on connect)."""
    return _encode(SyncMessageKind.STEP1, state_vector)


def encode_sync_step2(diff: bytes) -> bytes:
    """Step 2: the reply to a step 1, everything the other side was missing."""
    return _encode(SyncMessageKind.STEP2, diff)


def encode_update(update: bytes) -> bytes:
    """An incremental update, relayed as transactions commit."""
    return _encode(SyncMessageKind.UPDATE, update)


def decode_sync_message(
    data: bytes | memoryview, max_payload: int = DEFAULT_MAX_PAYLOAD
) -> tuple[SyncMessageKind, bytes]:
    """Decode one y-protocols sync message into (kind, payload).

    Strict: the payload length must match the remaining bytes exactly, so a
    truncated message or trailing garbage is an error rather than a guess.
    """
    view = memoryview(data)
    msg_type, pos = read_var_uint(view, 0)
    if msg_type != MESSAGE_SYNC:
        raise SyncProtocolError(f"not a sync message (type {msg_type})")
    kind_num, pos = read_var_uint(view, pos)
    try:
        kind = SyncMessageKind(kind_num)
    except ValueError:
        raise SyncProtocolError(f"unknown sync message kind {kind_num}") from None
    length, pos = read_var_uint(view, pos)
    if length > max_payload:
        raise SyncProtocolError(f"payload of {length} bytes exceeds limit {max_payload}")
    remaining = len(view) - pos
    if length > remaining:
        raise SyncProtocolError(f"truncated payload: {remaining} of {length} bytes")
    if length < remaining:
        raise SyncProtocolError(f"{remaining - length} trailing bytes after payload")
    return kind, bytes(view[pos:])


def decode_state_vector(
    state_vector: bytes, max_entries: int = DEFAULT_MAX_SV_ENTRIES
) -> dict[int, int]:
    """Decode an encoded Yjs state vector into {client id: clock}.

    Used to validate a peer's step 1 before handing it to the CRDT library and
    to compare state vectors (tests, stats).
    """
    view = memoryview(state_vector)
    count, pos = read_var_uint(view, 0)
    if count > max_entries:
        raise SyncProtocolError(f"state vector with {count} entries exceeds {max_entries}")
    # Each entry takes at least two bytes: reject an impossible count up front.
    if count * 2 > len(view) - pos:
        raise SyncProtocolError("truncated state vector")
    out: dict[int, int] = {}
    for _ in range(count):
        client, pos = read_var_uint(view, pos)
        clock, pos = read_var_uint(view, pos)
        out[client] = clock
    if pos != len(view):
        raise SyncProtocolError("trailing bytes after state vector")
    return out


@dataclass(frozen=True, slots=True)
class StateMessage:
    """One state message: a y-protocols sync message for a document generation."""

    generation: Generation
    kind: SyncMessageKind
    payload: bytes

    def encode(self) -> bytes:
        """Serialize as generation + pure y-protocols bytes."""
        return encode_state_message(self.generation, _encode(self.kind, self.payload))


def encode_generation(generation: Generation) -> bytes:
    """varUint(number) varUint(creator)."""
    return write_var_uint(generation.number) + write_var_uint(generation.creator)


def decode_generation(data: bytes | memoryview, pos: int = 0) -> tuple[Generation, int]:
    """Decode a generation at `pos`; return (generation, next position).

    Raises SyncProtocolError for a truncated or oversize varUint, or for an id no
    honest node creates: (0, c) with c != 0, or (n >= 1, 0).
    """
    number, pos = read_var_uint(data, pos)
    creator, pos = read_var_uint(data, pos)
    if (number == 0) != (creator == 0):
        raise SyncProtocolError(f"invalid generation {number}.{creator}")
    return Generation(number, creator), pos


def encode_state_message(generation: Generation, sync_message: bytes) -> bytes:
    """Prefix an encoded y-protocols message with its document generation."""
    return encode_generation(generation) + sync_message


def decode_state_message(data: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD) -> StateMessage:
    """Decode a state message (generation envelope + sync message)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SyncProtocolError(f"frame must be bytes, not {type(data).__name__}")
    view = memoryview(data)
    generation, pos = decode_generation(view, 0)
    kind, payload = decode_sync_message(view[pos:], max_payload)
    return StateMessage(generation, kind, payload)
