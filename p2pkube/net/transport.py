"""The transport interface the rest of p2pkube depends on, free of any WebRTC library.

The native node implements it with aiortc (:class:`p2pkube.net.mesh.Mesh`), the browser node
with the page's RTCPeerConnection (``p2pkube.browser``); membership, state sync and rpc see
only these protocols, so the same code runs in both.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Protocol

from p2pkube.net.frames import Frame, FrameType

SIGNAL_KINDS = frozenset({"offer", "answer", "bye"})
"""ROUTE ``data.kind`` values that are link negotiation (flooded when no route is known);
every other kind is a routed message for ``on_routed`` and follows known routes only."""


class RoutedTransport(Protocol):
    """The part of a transport that request/response (``p2pkube.net.rpc``) needs: a message
    to any node of the mesh, and the messages addressed to this one."""

    node_id: str
    on_routed: Callable[[str, dict[str, Any]], None]
    """``(source node, data)`` for each routed message addressed to this node. It may raise
    ``FrameError`` for a message that is not valid protocol: if the source is the neighbour
    it came from, that neighbour is dropped and banned like for any other violation."""

    def send_routed(self, node_id: str, data: dict[str, Any]) -> bool:
        """Queue ``data`` (a msgpack map with a ``kind`` not in SIGNAL_KINDS) toward
        ``node_id``; False at once when there is no path (no flooding)."""
        ...

    async def wait_writable(self, node_id: str, limit: int) -> bool:
        """Wait until the first link on the path toward ``node_id`` has at most ``limit``
        bytes queued (False: no path, or the link closed). The caller bounds the wait."""
        ...


class Transport(RoutedTransport, Protocol):
    """What the agent needs from a transport (native: ``Mesh``; browser: its own)."""

    on_link_up: Callable[[str], None]
    on_link_down: Callable[[str], None]
    on_frame: Callable[[str, Frame], None]
    route_hint: Callable[[str], str | None]

    def neighbours(self) -> list[str]: ...
    def queued_bytes(self) -> int:
        """Bytes waiting on all links toward the neighbours (a burst being sent)."""
        ...

    def send(self, node_id: str, frame_type: FrameType, body: Any) -> bool: ...
    def broadcast(self, frame_type: FrameType, body: Any, exclude: Collection[str] = ()) -> int: ...
    def add_candidate(self, node_id: str) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...
