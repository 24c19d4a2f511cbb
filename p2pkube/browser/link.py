"""The browser's carrier of a link: the page's RTCPeerConnection, through ``p2pjs.newPeer``.

The channel is set up as natively (negotiated id 0, ordered, reliable, no trickle), so a tab
and an aiortc agent link directly; the protocol on top is :class:`LinkBase`'s.
"""

from __future__ import annotations

import json
from typing import Any

import p2pjs  # type: ignore[import-not-found]  # bridge.js, registered by the page

from p2pkube.net.linkbase import LinkBase, LinkFactory
from p2pkube.net.settings import TransportSettings


class BrowserLink(LinkBase):
    """A link to one neighbour over the page's WebRTC."""

    def __init__(self, *, ice_servers_json: str, **link: Any) -> None:
        super().__init__(**link)
        self._peer = p2pjs.newPeer(
            ice_servers_json,
            {
                "onOpen": self._on_open,
                "onMessage": self._on_js_message,
                "onClose": lambda reason=None: self.close_soon(f"data channel closed: {reason}"),
                "onConnectionState": self._on_connection_state,
                "onBufferedLow": self._on_buffered_low,
            },
        )

    def _on_js_message(self, message: Any) -> None:
        self._on_message(message if isinstance(message, str) else bytes(message.to_bytes()))

    def _on_connection_state(self, state: Any) -> None:
        if str(state) in ("failed", "closed"):
            self.close_soon(f"connection {state}")

    async def _negotiate_offer(self) -> str:
        return str(await self._peer.createOffer())

    async def _negotiate_answer(self, offer_sdp: str) -> str:
        return str(await self._peer.acceptOffer(offer_sdp))

    async def _apply_answer(self, answer_sdp: str) -> None:
        await self._peer.acceptAnswer(answer_sdp)

    def _channel_open(self) -> bool:
        return str(self._peer.channelState()) == "open"

    def _channel_send(self, message: bytes) -> None:
        if not self._peer.send(message):
            raise ConnectionError("the data channel refused the message")

    def _channel_buffered(self) -> int:
        return int(self._peer.bufferedAmount())

    def _set_low_threshold(self, limit: int) -> None:
        self._peer.setBufferedLowThreshold(limit)

    async def _close_connection(self) -> None:
        self._peer.close()


def ice_servers_json(settings: TransportSettings) -> str:
    """``transport.ice_servers`` (with the TURN credentials) as RTCIceServer objects."""
    servers = []
    for url in settings.ice_servers:
        server: dict[str, str] = {"urls": url}
        if url.startswith(("turn:", "turns:")):
            server |= {"username": settings.ice_username, "credential": settings.ice_credential}
        servers.append(server)
    return json.dumps(servers)


def browser_link_factory(settings: TransportSettings) -> LinkFactory:
    """The mesh's link factory in a tab."""
    servers = ice_servers_json(settings)

    def new_link(**link: Any) -> LinkBase:
        return BrowserLink(ice_servers_json=servers, **link)

    return new_link
