"""The WebSocket the signaling client talks through: an interface, free of any platform library.

:class:`~p2pkube.net.signaling_client.SignalingClient` holds only the signaling protocol; it
opens its connection with the :data:`Connect` function it is given. The native agent passes
:func:`p2pkube.net.aiohttp_websocket.aiohttp_connect`, the browser node one over the page's
WebSocket (``p2pkube.browser.signaling``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol


class WebSocket(Protocol):
    """One open WebSocket carrying text messages."""

    @property
    def closed(self) -> bool: ...

    @property
    def close_code(self) -> int | None: ...

    async def send_str(self, text: str) -> None:
        """Send one text message; raises ConnectionError when the socket is gone."""
        ...

    async def receive_str(self) -> str | None:
        """The next text message; None once the socket closed (binary frames are skipped
        with a warning); raises ConnectionError on a transport error."""
        ...

    async def close(self) -> None: ...


Connect = Callable[[str, float, int, float], Awaitable[WebSocket]]
"""``(url, heartbeat, max_receive_bytes, close_timeout)`` → an open socket; raises
ConnectionError/OSError when it cannot open. The caller bounds the time."""
