"""The WebSocket the signaling client talks through, and its native (aiohttp) implementation.

:class:`~p2pkube.net.signaling_client.SignalingClient` holds only the signaling protocol; it
opens its connection with a :data:`Connect` function. Natively that is :func:`aiohttp_connect`;
the browser node passes one over the page's WebSocket (``p2pkube.browser.signaling``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)


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


class AiohttpWebSocket:
    """:class:`WebSocket` over aiohttp, owning its client session."""

    def __init__(self, session: object, ws: object) -> None:
        self._session = session
        self._ws = ws

    @property
    def closed(self) -> bool:
        return bool(self._ws.closed)  # type: ignore[attr-defined]

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code  # type: ignore[attr-defined,no-any-return]

    async def send_str(self, text: str) -> None:
        import aiohttp

        try:
            await self._ws.send_str(text)  # type: ignore[attr-defined]
        except aiohttp.ClientError as exc:
            raise ConnectionError(str(exc)) from exc

    async def receive_str(self) -> str | None:
        import aiohttp

        while True:
            msg = await self._ws.receive()  # type: ignore[attr-defined]
            if msg.type == aiohttp.WSMsgType.TEXT:
                return str(msg.data)
            if msg.type == aiohttp.WSMsgType.ERROR:
                raise ConnectionError(f"connection error: {msg.data}")
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                return None
            log.warning("signaling: ignoring non-text frame from server")

    async def close(self) -> None:
        try:
            await self._ws.close()  # type: ignore[attr-defined]
        finally:
            await self._session.close()  # type: ignore[attr-defined]


async def aiohttp_connect(
    url: str, heartbeat: float, max_receive_bytes: int, close_timeout: float
) -> WebSocket:
    """Open ``url`` with aiohttp (pinging after ``heartbeat`` seconds of silence)."""
    import aiohttp

    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(
            url,
            heartbeat=heartbeat,
            max_msg_size=max_receive_bytes,
            timeout=aiohttp.ClientWSTimeout(ws_close=close_timeout),
            autoping=True,
        )
    except aiohttp.ClientError as exc:
        await session.close()
        raise ConnectionError(str(exc) or type(exc).__name__) from exc
    except BaseException:
        await session.close()
        raise
    return AiohttpWebSocket(session, ws)
