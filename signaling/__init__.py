"""p2pkube signaling server: introduces peers of a cluster, then gets out of the way.

Agents find each other here and exchange WebRTC offers, answers and ICE
candidates; all cluster state then flows peer to peer.  The server keeps
nothing but live sockets, so it can be restarted at will.

Entry points: :func:`create_app`, :class:`SignalingServer`, :func:`run_server`
(see :mod:`signaling.server`) and ``python -m signaling``; the wire format and
the token helpers live in :mod:`signaling.protocol`.
"""

from .protocol import cluster_id, generate_token, load_tokens, token_digest
from .server import SignalingServer, SignalingSettings, create_app, run_server

__all__ = [
    "SignalingServer",
    "SignalingSettings",
    "cluster_id",
    "create_app",
    "generate_token",
    "load_tokens",
    "run_server",
    "token_digest",
]
