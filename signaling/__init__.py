"""p2pkube signaling server: introduces peers of a cluster, then gets out of the way.

Agents find each other here and exchange WebRTC offers, answers and ICE
candidates; all cluster state then flows peer to peer.  The server keeps
nothing but live sockets, so it can be restarted at will.

Entry points: :func:`~signaling.server.create_app`,
:class:`~signaling.server.SignalingServer`, :func:`~signaling.server.run_server`
and ``python -m signaling``.  The wire format it shares with every node is
p2pkube's (:mod:`p2pkube.net.signaling_wire`, and :mod:`p2pkube.net.jointoken` for
the token and what is derived from it); no node imports this package.
"""
