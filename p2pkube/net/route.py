"""The ROUTE envelope: a message from one node to another, relayed through the mesh and
signed end to end by its source (docs/protocol.md, ROUTE).

Its signature covers its id, ``src``, ``dst``, whether it floods and the sha256 of its
``data`` (msgpack carried as bytes, so a 256 KiB blob chunk is hashed once and the signature
covers 32 bytes), never its ``ttl``, which relays decrement. :func:`seal_route` is the one way
a node builds one; :func:`route_transcript` is what the destination checks the signature
against.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import msgpack

from p2pkube.net.signed import Signatures, transcript

__all__ = ["ROUTE_DOMAIN", "route_fields", "route_transcript", "seal_route"]

ROUTE_DOMAIN = "p2pkube-route-v1"
"""Domain separation of ROUTE signatures (see :func:`route_fields`)."""


def route_fields(route: dict[str, Any]) -> tuple[Any, ...]:
    """What a ROUTE's signature covers after the domain and the cluster: everything but
    ``ttl``, with ``data`` by its sha256."""
    flood = route.get("flood") is True
    digest = hashlib.sha256(route["data"]).digest()
    return (route["id"], route["src"], route["dst"], flood, digest)


async def seal_route(
    signatures: Signatures, dst: str, data: dict[str, Any], *, ttl: int, flood: bool = False
) -> dict[str, Any]:
    """A ROUTE frame body from this node to ``dst`` carrying ``data``, signed."""
    route: dict[str, Any] = {
        "id": secrets.token_hex(8),
        "src": signatures.node_id,
        "dst": dst,
        "ttl": ttl,
        "data": msgpack.packb(data, use_bin_type=True),
    }
    if flood:
        route["flood"] = True
    route["sig"] = await signatures.sign(ROUTE_DOMAIN, *route_fields(route))
    return route


def route_transcript(cluster: str, route: dict[str, Any]) -> bytes:
    """The bytes a ROUTE's ``sig`` signs (:func:`~p2pkube.net.signed.transcript` of its
    domain, the cluster and :func:`route_fields`)."""
    return transcript(ROUTE_DOMAIN, cluster, *route_fields(route))
