"""One WebSocket of the signaling server (:class:`Session`) and one cluster's room of them
(:class:`Room`).

A session owns its bounded outbox and the one writer task that writes to the
socket, so relaying to a slow peer never blocks the sender; a room broadcasts
to its members, encoding each message once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

from p2pkube.net.signaling_wire import (
    FATAL_CLOSE_CODES,
    ErrorCode,
    PeerRecord,
    encode,
    error_message,
)
from p2pkube.pacing import TokenBucket

from .settings import SignalingSettings

__all__ = ["Room", "Session"]

#: The server's logger: what a session logs is the server's to say (``signaling.server``).
logger = logging.getLogger("signaling.server")


@dataclass(frozen=True, slots=True)
class _Close:
    """Outbox marker: close the socket with this WebSocket close code."""

    code: int
    reason: str


class Session:
    """One WebSocket: its identity once joined, its outbox and its writer.

    Only the writer task writes to the socket; everyone else enqueues with
    :meth:`send` (never blocks), so a slow receiver cannot stall the peer
    whose message is being relayed to it.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        remote: str,
        settings: SignalingSettings,
    ) -> None:
        self.ws = ws
        self.remote = remote
        self._transport = transport
        self.settings = settings
        self.record: PeerRecord | None = None
        self.room: Room | None = None
        self.closing = False
        self.bucket = TokenBucket(settings.messages_per_second, settings.rate_burst)
        self._drops = 0
        self._drop_window_start = time.monotonic()
        self._last_warning = float("-inf")
        self._outbox: asyncio.Queue[str | _Close] = asyncio.Queue(settings.send_queue_size)
        self._writer = asyncio.create_task(self._write_loop(), name=f"signaling-writer {remote}")

    @property
    def label(self) -> str:
        """Short description for log lines (never includes the token)."""
        if self.record is None:
            return f"{self.remote} (not joined)"
        assert self.room is not None
        return f"{self.record.peer}/{self.record.name} in {self.room.cluster} from {self.remote}"

    def send(self, message: dict[str, Any]) -> None:
        """Queue ``message`` for this socket; close it if it is stuck."""
        self.send_text(encode(message))

    def send_text(self, text: str) -> None:
        """Queue an encoded message (see :meth:`send`).

        Never blocks: a socket that lets ``send_queue_size`` messages pile up
        is not reading, and is closed with 1013 (try again later) rather than
        allowed to hold memory or slow its senders down.
        """
        if self.closing:
            return
        try:
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            logger.warning("signaling: %s is not reading; closing it", self.label)
            self.close(WSCloseCode.TRY_AGAIN_LATER, "send queue full")

    def fail(self, code: ErrorCode, message: str, *, log: bool = True) -> None:
        """Send a fatal error and close with its 4000+ close code.

        Pending messages are dropped: after a fatal error nothing else
        matters, and the outbox must have room for the error itself.
        ``log=False`` when the caller logs it its own way (failed joins).
        """
        if self.closing:
            return
        if log:
            logger.info("signaling: %s rejected: %s: %s", self.label, code, message)
        self.close(FATAL_CLOSE_CODES[code], str(code), error_message(code, message))

    def warn(self, code: ErrorCode, message: str, *, to: str | None = None) -> None:
        """Send a non-fatal error."""
        self.send(error_message(code, message, to=to))

    def admit_rate(self) -> bool | None:
        """Apply the rate limit to one incoming message.

        Returns True to process it, False to drop it silently (a warning has
        been queued if due), None when the socket has been closed for
        sustained abuse.
        """
        if self.bucket.take(1.0, time.monotonic()):
            return True
        now = time.monotonic()
        if now - self._drop_window_start > self.settings.rate_limit_window:
            self._drop_window_start = now
            self._drops = 0
        self._drops += 1
        limit = self.settings.messages_per_second
        if self._drops > self.settings.rate_limit_max_drops:
            self.fail(
                ErrorCode.RATE_LIMITED,
                f"sustained rate over {limit:g} messages/s; {self._drops} messages dropped",
            )
            return None
        if now - self._last_warning >= self.settings.rate_limit_warning_interval:
            self._last_warning = now
            self.warn(
                ErrorCode.RATE_LIMITED,
                f"over {limit:g} messages/s (burst {self.settings.rate_burst}); "
                "messages are being dropped",
            )
        return False

    def close(self, code: int, reason: str, last_message: dict[str, Any] | None = None) -> None:
        """Close with WebSocket ``code`` after sending ``last_message`` if given.

        Pending messages are dropped; idempotent (the first close wins).
        """
        if self.closing:
            return
        self.closing = True
        while not self._outbox.empty():
            self._outbox.get_nowait()
        if last_message is not None:
            self._outbox.put_nowait(encode(last_message))
        self._outbox.put_nowait(_Close(code, reason))

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self._outbox.get()
                if isinstance(item, _Close):
                    async with asyncio.timeout(self.settings.close_timeout + 1.0):
                        await self.ws.close(code=item.code, message=item.reason.encode())
                    return
                async with asyncio.timeout(self.settings.send_timeout):
                    await self.ws.send_str(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # connection reset, timeout, closed socket...
            logger.debug("signaling: write to %s failed: %r", self.label, exc)
            self.closing = True
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (last resort)."""
        transport = self._transport
        if isinstance(transport, asyncio.Transport) and not transport.is_closing():
            transport.abort()

    async def finish(self) -> None:
        """Let queued messages (e.g. a final error) go out, then stop the writer.

        Bounded by the send and close timeouts; whatever is left is cut.
        """
        self.close(WSCloseCode.GOING_AWAY, "")
        budget = self.settings.send_timeout + self.settings.close_timeout + 1.0
        try:
            async with asyncio.timeout(budget):
                await asyncio.shield(self._writer)
        except TimeoutError:
            self.abort()
        except asyncio.CancelledError:
            self._writer.cancel()
            raise
        finally:
            if not self._writer.done():
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer


@dataclass(slots=True)
class Room:
    """The live sessions of one cluster, by peer id."""

    cluster: str
    sessions: dict[str, Session] = field(default_factory=dict)

    def broadcast(self, message: dict[str, Any], *, exclude: Session | None = None) -> None:
        """Queue ``message`` for every member but ``exclude`` (encoded once)."""
        text = encode(message)
        for session in list(self.sessions.values()):
            if session is not exclude:
                session.send_text(text)
