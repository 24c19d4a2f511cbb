"""Wire frames on the p2pkube data channel: a msgpack envelope with a version and a type.

Every data-channel message is ``msgpack([version, type, body])``. Frames larger than
``FRAGMENT_BYTES`` travel as a run of FRAGMENT frames (browsers and aiortc cap one data-channel
message at 64-256 KiB), reassembled by :class:`Reassembler`. Decoding never trusts the peer:
lengths are bounded before allocation, bodies are checked against the shape their type requires,
and anything else raises :class:`FrameError` so the caller can drop the peer and log why.

The byte-level description of every frame is in docs/protocol.md.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

PROTOCOL_VERSION = 4
"""The link protocol's version, the first element of every frame; a frame of another version
is a violation, so a link to an agent of another version never forms. 3: SWIM frames, and
the flooded HEARTBEAT frame (type 4) of version 2 is gone. 4: an urgent frame may come
between the FRAGMENTs of another frame."""
FRAGMENT_BYTES = 60 * 1024
"""Largest single data-channel message we send (below the 64 KiB every WebRTC stack accepts)."""
MAX_FRAME_BYTES = 32 * 1024 * 1024
"""Largest reassembled frame accepted from a peer; a bigger one is a protocol violation."""


class FrameType(IntEnum):
    HELLO = 1
    AUTH = 2
    SYNC = 3
    # 4 was HEARTBEAT (version 2's flooded heartbeats): reserved, never reused; a peer that
    # sends it commits a violation (unknown frame type).
    ROUTE = 5
    BYE = 6
    FRAGMENT = 7
    PING = 8
    SWIM = 9
    SYNC_DEFLATE = 10
    """A SYNC whose body is deflated (zlib): large state messages (``deflate``)."""


URGENT_FRAMES = frozenset({FrameType.SWIM, FrameType.PING, FrameType.ROUTE})
"""Frame types a sender puts on the channel ahead of queued bulk frames when they fit one
message (``FRAGMENT_BYTES``): membership's probes and answers, the link's keepalive, and
routed messages (a SWIM message to a member further away, rpc calls). A receiver may see
one between the FRAGMENTs of a bulk frame. Routed messages are independent of each other,
so their order does not matter; SYNC, BYE and the handshake keep theirs."""


class FrameError(ValueError):
    """A frame that is not valid p2pkube protocol; the sender is dropped."""


@dataclass(frozen=True)
class Frame:
    type: FrameType
    body: Any


# Each body validator returns the body unchanged or raises FrameError. They check only what the
# receiver relies on; extra map keys are allowed so that newer peers can add fields.
def require_fields(body: Any, spec: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """``body`` if it is a map holding every key of ``spec`` with a value of its type (a bool
    is no int unless bool is named); FrameError naming the first field that is not."""
    if not isinstance(body, dict):
        raise FrameError(f"body must be a map, got {type(body).__name__}")
    for key, kinds in spec.items():
        if key not in body:
            raise FrameError(f"missing field {key!r}")
        value = body[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
            raise FrameError(f"field {key!r} has type {type(value).__name__}")
    return body


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _bytes(body: Any) -> bytes:
    if not isinstance(body, bytes):
        raise FrameError(f"body must be bytes, got {type(body).__name__}")
    return body


def _list(body: Any) -> list[Any]:
    if not isinstance(body, list):
        raise FrameError(f"body must be an array, got {type(body).__name__}")
    return body


def _fragment(body: Any) -> list[Any]:
    if (
        not isinstance(body, list)
        or len(body) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in body[:2])
        or not isinstance(body[2], bytes)
    ):
        raise FrameError("fragment must be [index, total_length, bytes]")
    return body


_VALIDATORS: dict[FrameType, Callable[[Any], Any]] = {
    FrameType.HELLO: lambda b: require_fields(
        b, {"node": str, "pub": bytes, "name": str, "kind": str, "nonce": bytes, "cluster": str}
    ),
    FrameType.AUTH: lambda b: require_fields(b, {"sig": bytes, "mac": bytes}),
    FrameType.SYNC: _bytes,
    FrameType.SYNC_DEFLATE: _bytes,
    FrameType.ROUTE: lambda b: require_fields(
        b, {"id": str, "src": str, "dst": str, "ttl": int, "data": bytes, "sig": bytes}
    ),
    FrameType.BYE: lambda b: require_fields(b, {"reason": str}),
    FrameType.FRAGMENT: _fragment,
    FrameType.PING: lambda b: require_fields(b, {}),
    FrameType.SWIM: _list,
}


def deflate(data: bytes) -> bytes:
    """``data`` deflated (zlib, level 1: state messages shrink ~7x for ~14 ms per MB here;
    every byte saved is a byte the pure-Python DTLS/SCTP stack of each link need not carry)."""
    return zlib.compress(data, 1)


def inflate(data: bytes, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """The bytes ``data`` deflates, at most ``max_bytes`` of them (a zip bomb is refused
    before it is expanded); FrameError when it is not a whole zlib stream or inflates to
    more."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_bytes)
    except zlib.error as exc:
        raise FrameError(f"not a zlib stream: {exc}") from None
    if inflater.unconsumed_tail:
        raise FrameError(f"a deflated body inflates beyond {max_bytes} bytes")
    if not inflater.eof or inflater.unused_data:
        raise FrameError("a deflated body is truncated or has trailing bytes")
    return out


def encode_frame(frame_type: FrameType, body: Any) -> bytes:
    """One frame as bytes (not yet fragmented)."""
    return msgpack.packb([PROTOCOL_VERSION, int(frame_type), body], use_bin_type=True)


def decode_frame(data: bytes | str, max_bytes: int = MAX_FRAME_BYTES) -> Frame:
    """Parse and validate one frame; FrameError on anything a well-behaved peer never sends
    (a text message included: a data channel carries both)."""
    if not isinstance(data, bytes | bytearray):
        raise FrameError("text message on a binary channel")
    if len(data) > max_bytes:
        raise FrameError(f"frame of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    decoded = unpack(data, max_bytes)
    if not isinstance(decoded, list) or len(decoded) != 3:
        raise FrameError("envelope must be [version, type, body]")
    version, type_code, body = decoded
    if version != PROTOCOL_VERSION:
        raise FrameError(f"unsupported protocol version {version!r}")
    try:
        frame_type = FrameType(type_code)
    except ValueError:
        raise FrameError(f"unknown frame type {type_code!r}") from None
    return Frame(frame_type, _VALIDATORS[frame_type](body))


def unpack(data: bytes, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """One msgpack value from a peer, under the limits every frame is decoded with (no value
    longer than ``max_bytes``, no ext types, string map keys); FrameError on anything else.
    Also for msgpack carried inside a frame as ``bin`` (SWIM messages, routed data)."""
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_bytes,
            max_str_len=1024 * 1024,
            max_array_len=100_000,
            max_map_len=100_000,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise FrameError(f"not msgpack: {exc.__class__.__name__}") from None


def fragment(data: bytes, size: int = FRAGMENT_BYTES) -> Iterator[bytes]:
    """Split an encoded frame into messages no larger than about ``size`` bytes."""
    if len(data) <= size:
        yield data
        return
    for index, start in enumerate(range(0, len(data), size)):
        yield encode_frame(FrameType.FRAGMENT, [index, len(data), data[start : start + size]])


class Reassembler:
    """Joins FRAGMENT frames back into the frame they carry.

    The channel is ordered and a sender writes a fragmented frame's pieces in order, so at
    most one fragmented frame is in flight per channel; whole frames (urgent ones,
    ``URGENT_FRAMES``) may come between its pieces and are returned at once. Anything else
    (a gap, a size mismatch, a total above the limit) is a protocol violation.
    """

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self._max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._received = 0
        self._total = 0

    def feed(self, data: bytes | str) -> Frame | None:
        """Feed one received message (text is refused, see :func:`decode_frame`); returns a
        complete frame or None while one is partial."""
        frame = decode_frame(data, self._max_bytes)
        if frame.type is not FrameType.FRAGMENT:
            if self._parts and frame.type not in URGENT_FRAMES:
                raise FrameError(
                    f"{frame.type.name} interleaved with an unfinished fragmented frame"
                )
            return frame
        index, total, chunk = frame.body
        if index != len(self._parts) or (self._parts and total != self._total):
            raise FrameError("fragment out of sequence")
        if not 0 < total <= self._max_bytes:
            raise FrameError(f"fragmented frame of {total} bytes exceeds the limit")
        self._total = total
        self._parts.append(chunk)
        self._received += len(chunk)
        if self._received > total:
            raise FrameError("fragments exceed their declared length")
        if self._received < total:
            return None
        whole = b"".join(self._parts)
        self._parts, self._received, self._total = [], 0, 0
        inner = decode_frame(whole, self._max_bytes)
        if inner.type is FrameType.FRAGMENT:
            raise FrameError("nested fragment")
        return inner
