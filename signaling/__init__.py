"""p2pkube signaling server: introduces peers of a cluster, then gets out of the way.

Agents find each other here and exchange WebRTC offers, answers and ICE
candidates; all cluster state then flows peer to peer.  The server keeps
nothing but live sockets, so it can be restarted at will.

Entry points: :func:`create_app`, :class:`SignalingServer`, :func:`run_server`
(see :mod:`signaling.server`) and ``python -m signaling``; the wire format and
the token helpers live in :mod:`signaling.protocol`.
"""

from typing import Any

from .protocol import Verifier, cluster_id, generate_token, link_key, load_tokens, signaling_key

_SERVER_NAMES = frozenset({"SignalingServer", "SignalingSettings", "create_app", "run_server"})


def __getattr__(name: str) -> Any:
    """The server's names load aiohttp on first use: agents (and the browser node, which has
    no aiohttp) import only :mod:`signaling.protocol` from here."""
    if name in _SERVER_NAMES:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SignalingServer",
    "SignalingSettings",
    "Verifier",
    "cluster_id",
    "create_app",
    "generate_token",
    "link_key",
    "load_tokens",
    "run_server",
    "signaling_key",
]
