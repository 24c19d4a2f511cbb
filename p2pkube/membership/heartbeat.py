"""The HEARTBEAT frame: what a node signs about itself, and what a receiver reads from it.

A heartbeat travels through other nodes (it is flooded), so the node it speaks for signs it
end to end with its node key (:mod:`p2pkube.net.signed`). The frame body is::

    {ttl: int, hb: bin, sig: bin(64)}

``hb`` is the msgpack encoding of the signed payload, carried as bytes so that every relay
passes on exactly what was signed; ``sig`` is the Ed25519 signature of
``msgpack(["p2pkube-heartbeat-v1", cluster, hb])``; ``ttl`` (hops left) is outside it because
relays decrement it. The payload carries the sender's public key, from which its node id is
derived, so a heartbeat proves itself and nobody needs to have met the sender first.

Byte by byte in docs/protocol.md (HEARTBEAT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack

from p2pkube.net.frames import FrameError, require_fields, unpack
from p2pkube.net.keys import node_id_from_public_key
from p2pkube.net.signed import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Signatures, transcript

DOMAIN = "p2pkube-heartbeat-v1"
"""Domain separation: a heartbeat signature verifies as nothing else."""
MAX_PEERS = 1024
"""Neighbour ids kept from one heartbeat (more than any node links to)."""
MAX_PAYLOAD_BYTES = 64 * 1024
"""A heartbeat payload is ~100 bytes plus 35 per neighbour; anything bigger is garbage."""

_PAYLOAD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "node": str,
    "pub": bytes,
    "name": str,
    "inc": int,
    "seq": int,
    "time": int,
    "peers": list,
}


@dataclass(frozen=True)
class Heartbeat:
    """A received heartbeat, parsed (its signature not yet checked)."""

    node: str
    pub: bytes
    name: str
    inc: int
    """Incarnation: the sender's start time, ms since the epoch (its wall clock)."""
    seq: int
    """Counts from 1 within an incarnation."""
    time: int
    """When it was signed, ms since the epoch (the sender's wall clock)."""
    peers: list[str]
    leaving: bool
    grace: float
    body: dict[str, Any]
    """The frame body as received: relayed as it is (with ``ttl`` lowered)."""

    @property
    def version(self) -> tuple[int, int]:
        return (self.inc, self.seq)


def payload(
    node: str,
    pub: bytes,
    name: str,
    inc: int,
    seq: int,
    time_ms: int,
    peers: list[str],
    *,
    leaving: bool = False,
    grace: float = 0.0,
) -> dict[str, Any]:
    """The map a node signs about itself (optional keys only when set)."""
    body: dict[str, Any] = {
        "node": node,
        "pub": pub,
        "name": name,
        "inc": inc,
        "seq": seq,
        "time": time_ms,
        "peers": peers,
    }
    if leaving:
        body["leaving"] = True
    if grace > 0:
        body["grace"] = float(grace)
    return body


async def seal(signatures: Signatures, fields: dict[str, Any], ttl: int) -> dict[str, Any]:
    """The HEARTBEAT frame body for ``fields`` (a :func:`payload`), signed by this node."""
    hb = msgpack.packb(fields, use_bin_type=True)
    return {"ttl": ttl, "hb": hb, "sig": await signatures.sign(DOMAIN, hb)}


def signed_bytes(cluster: str, body: dict[str, Any]) -> bytes:
    """What the heartbeat's ``sig`` must be a signature of."""
    return transcript(DOMAIN, cluster, body["hb"])


def parse(body: dict[str, Any]) -> Heartbeat:
    """Read a HEARTBEAT body (shape checked by frames.py); FrameError when it cannot be a
    heartbeat any honest node signed or relayed: a relay checks before it forwards, so the
    neighbour that sent it is to blame."""
    if len(body["sig"]) != SIGNATURE_BYTES:
        raise FrameError("heartbeat signature must be 64 bytes")
    if len(body["hb"]) > MAX_PAYLOAD_BYTES:
        raise FrameError(f"heartbeat payload over {MAX_PAYLOAD_BYTES} bytes")
    fields = require_fields(unpack(body["hb"], MAX_PAYLOAD_BYTES), _PAYLOAD_FIELDS)
    pub = fields["pub"]
    if len(pub) != PUBLIC_KEY_BYTES:
        raise FrameError("heartbeat public key must be 32 bytes")
    if node_id_from_public_key(pub) != fields["node"]:
        raise FrameError("heartbeat node id does not match its public key")
    if min(fields["inc"], fields["seq"], fields["time"]) < 0:
        raise FrameError("heartbeat inc, seq and time must not be negative")
    return Heartbeat(
        node=fields["node"],
        pub=pub,
        name=fields["name"],
        inc=fields["inc"],
        seq=fields["seq"],
        time=fields["time"],
        peers=[p for p in fields["peers"] if isinstance(p, str)][:MAX_PEERS],
        leaving=fields.get("leaving") is True,
        grace=_grace(fields.get("grace", 0.0)),
        body=body,
    )


def _grace(value: Any) -> float:
    """A positive finite number of seconds, or 0 for anything else (never an error: older
    and newer peers may send what this one does not read)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) and value > 0 else 0.0
