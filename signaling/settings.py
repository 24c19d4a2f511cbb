"""Every limit and timing of the signaling server (``p2pkube signal``), each with its default.

Its own package's settings: the server is not an agent, so these are not among
``p2pkube.settings``' sections; docs/protocol.md's limits table names each field.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SignalingSettings"]


@dataclass(frozen=True, slots=True)
class SignalingSettings:
    """Every limit and timing of the server, each with a safe default.

    The defaults suit a cluster of a few hundred agents plus browser tabs on
    one small server; tests shrink the timings to run fast.
    """

    #: Largest accepted text message, in UTF-8 bytes (64 KiB).  An SDP offer
    #: is a few KiB; anything much larger is abuse.  Bigger messages get the
    #: fatal ``too-large`` error.
    max_message_bytes: int = 64 * 1024
    #: Frames larger than ``max_message_bytes * hard_limit_factor`` are cut by
    #: the WebSocket layer itself (close 1009) before they are read in full, so
    #: a hostile client cannot make the server buffer an unbounded frame.
    hard_limit_factor: int = 4
    #: Sustained messages per second a socket may send (token bucket rate).
    messages_per_second: float = 50.0
    #: Token bucket capacity: a burst of this many messages is accepted at once.
    rate_burst: int = 200
    #: A socket that has more than this many messages dropped by the rate
    #: limit within ``rate_limit_window`` seconds is closed with the fatal
    #: ``rate-limited`` error (4005); below that, messages are only dropped.
    rate_limit_max_drops: int = 200
    #: Window (seconds) over which dropped messages are counted.
    rate_limit_window: float = 10.0
    #: At most one non-fatal ``rate-limited`` warning per this many seconds,
    #: so the warnings do not become a flood of their own.
    rate_limit_warning_interval: float = 1.0
    #: Most peers in one room (cluster); a join beyond gets ``room-full``.
    max_peers_per_room: int = 256
    #: Most WebSocket connections in total, joined or not; beyond, a new
    #: socket is told ``room-full`` and closed.  Rooms exist only for the
    #: tokens served, so this also bounds every room together.
    max_connections: int = 4096
    #: Seconds of silence before the server pings a socket (aiohttp
    #: ``heartbeat=``); a socket that does not answer within half of this is
    #: dropped, so a vanished agent shows up as ``peer-left`` promptly.
    heartbeat: float = 10.0
    #: Seconds a new socket has to send its ``join`` (``join-timeout``).
    join_timeout: float = 5.0
    #: Messages queued for one socket before it counts as stuck; a socket
    #: whose queue overflows is closed with WebSocket code 1013 (try again).
    send_queue_size: int = 256
    #: Seconds one write to a socket may take before the socket is aborted.
    send_timeout: float = 10.0
    #: Seconds to wait for the peer's close frame when closing a socket.
    close_timeout: float = 2.0
    #: Failed joins per second one client address may make in the long run (a
    #: token bucket per address; IPv6 addresses count per /64).  A join that
    #: fails (wrong mac, wrong identity, malformed, too slow) spends a token;
    #: while an address has none, its joins are refused with ``rate-limited``
    #: without being checked, so guessing the token from one address gets at
    #: most this many tries a second.
    join_failures_per_second: float = 2.0
    #: Failed joins one address may make at once before the rate applies (the
    #: bucket's capacity): room for an operator's typo or a few restarts.
    join_failure_burst: int = 5
    #: Client addresses whose failed joins are remembered, at most; beyond,
    #: the one that failed longest ago is forgotten (the table never grows).
    join_failure_addresses: int = 4096
    #: Seconds a throttled join is held before it is refused, so a throttled
    #: client that reconnects at once does not make the server spin.
    join_refusal_delay: float = 1.0
    #: At most one log line per address per this many seconds about refused
    #: (throttled) joins, with their count; every checked failure is logged.
    join_refusal_log_interval: float = 10.0

    def __post_init__(self) -> None:
        """Reject settings that would make the server misbehave."""
        positive = {
            "max_message_bytes": self.max_message_bytes,
            "hard_limit_factor": self.hard_limit_factor,
            "messages_per_second": self.messages_per_second,
            "rate_burst": self.rate_burst,
            "rate_limit_window": self.rate_limit_window,
            "max_peers_per_room": self.max_peers_per_room,
            "max_connections": self.max_connections,
            "heartbeat": self.heartbeat,
            "join_timeout": self.join_timeout,
            "send_timeout": self.send_timeout,
            "close_timeout": self.close_timeout,
            "join_failures_per_second": self.join_failures_per_second,
            "join_failure_burst": self.join_failure_burst,
            "join_failure_addresses": self.join_failure_addresses,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"SignalingSettings.{name} must be positive, got {value}")
        if self.rate_limit_max_drops < 0 or self.rate_limit_warning_interval < 0:
            raise ValueError("SignalingSettings rate-limit drop settings must be >= 0")
        if self.join_refusal_delay < 0 or self.join_refusal_log_interval < 0:
            raise ValueError("SignalingSettings join refusal settings must be >= 0")
        if self.send_queue_size < 2:
            # Room for an error message plus the close marker.
            raise ValueError("SignalingSettings.send_queue_size must be at least 2")

    @property
    def hard_message_bytes(self) -> int:
        """The WebSocket layer's own frame limit (see ``hard_limit_factor``)."""
        return self.max_message_bytes * self.hard_limit_factor
