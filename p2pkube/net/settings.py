"""Every transport timing and limit as a named setting with its default (memberlist style)."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pkube.net.frames import MAX_FRAME_BYTES

MAX_SACK_DELAY = 0.5
"""RFC 4960 section 6.2: a delayed SACK MUST NOT wait longer."""


@dataclass
class TransportSettings:
    max_peers: int = 8
    """Target number of direct connections. Above it a node opens no new links itself, so a large
    cluster forms a partial mesh and relays state; below it, it dials known nodes."""
    max_peers_jitter: int = 2
    """A random 0..jitter added to ``max_peers`` per agent, so degrees do not all saturate alike."""
    inbound_slack: int = 4
    """Inbound offers are accepted up to ``max_peers + jitter + inbound_slack`` links, so a
    newcomer can always attach to a saturated mesh; beyond that an offer gets ``busy``."""
    ice_servers: list[str] = field(default_factory=list)
    """STUN/TURN URLs for RTCConfiguration: ``stun:HOST:PORT``, ``turn:HOST:PORT`` (UDP;
    ``?transport=tcp`` for TCP), ``turns:HOST:PORT?transport=tcp``; comma-separated with
    ``--set``. aiortc uses the first STUN and the first TURN URL only; a TURN server's relay
    candidates let peers that cannot reach each other directly link through it. Empty by
    default: aiortc's default (a public STUN server) is unreachable on closed networks and only
    slows gathering down. A server that does not answer delays every link's offer by up to 5 s
    (aioice's gathering timeout)."""
    ice_username: str = ""
    """Username for the TURN URLs in ``ice_servers`` (TURN long-term credentials, e.g. a
    coturn ``--user``). A TURN URL without a username and a credential is refused at start."""
    ice_credential: str = ""
    """Password for ``ice_username``. Given with ``--set`` it shows in the process list: on a
    shared machine use ``ice_credential_file`` instead."""
    ice_credential_file: str = ""
    """A file whose first line is the password for ``ice_username`` (read once, at start;
    e.g. a Docker secret under /run/secrets/); overrides ``ice_credential``."""
    ice_host_addresses: list[str] = field(default_factory=list)
    """Host addresses to offer as ICE candidates instead of aioice's own choice. aioice never
    offers 127.0.0.1, so a loopback-only cluster (tests, `make demo`) sets ``["127.0.0.1"]``."""
    connect_timeout: float = 10.0
    """Seconds from creating a link to a completed handshake before the attempt is abandoned."""
    link_idle_timeout: float = 3.0
    """A link that delivered no frame for this long, and whose queued data did not drain
    either (a neighbour busy with a burst we send it acknowledges it but may say nothing),
    is closed. A side that sent nothing for half
    of it sends a PING (SWIM probes a given neighbour only every N - 1 probe periods); aiortc
    itself notices a silently cut path only after ~30 s."""
    ice_consent_timeout: float = 120.0
    """Seconds of failed ICE consent checks (RFC 7675) before aioice closes a connection
    (its own rule is six checks ~5 s apart, each answered within 0.5 s: ~30 s). Under load a
    STUN answer often takes longer than 0.5 s, and with aioice's value every link of a
    40-agent cluster on 2 cores died ~30 s after it was made, again and again. A silent peer
    is found by ``link_idle_timeout`` anyway; this is the backstop (``net/ice.py``)."""
    send_buffer_limit: int = 64 * 1024 * 1024
    """Bytes queued on one data channel beyond which the link is closed as too slow (it is rebuilt
    and resynced by state vector, so nothing is lost and no queue grows without bound)."""
    send_window: int = 128 * 1024
    """Bytes of bulk frames (state sync, large routed messages) a link keeps on its data
    channel; the rest waits in the link's own queue. Urgent frames (SWIM, PING, small
    ROUTEs) skip that queue, so under a burst they wait behind at most this much (a few ms at
    loopback speed) instead of behind the whole burst. Large enough to keep the channel busy
    while the carrier's low-water callback refills it."""
    sync_deflate_bytes: int = 4096
    """State messages at least this long travel deflated (SYNC_DEFLATE frames, zlib level 1):
    a 1,000-pod transaction shrinks ~7x, for ~14 ms of CPU per MB, while each byte costs far
    more in the pure-Python DTLS/SCTP stack of every link it crosses. 0 sends all plain."""
    sctp_receive_window: int = 128 * 1024
    """SCTP receive window advertised to the neighbour (aiortc's default is 1 MiB). A window
    larger than the kernel's UDP receive buffer (212 KiB by default) lets a burst overflow it,
    and each overflow costs a 1 s retransmission stall; 0 keeps aiortc's default."""
    sctp_sack_delay: float = 0.2
    """Most seconds a link's SCTP association waits to acknowledge small packets, so that the
    SACK rides on DATA it sends meanwhile (RFC 4960's delayed SACK: it SHOULD be sent within
    200 ms; ``p2pkube/net/sctp.py``). A gap, a duplicate, a full-size chunk or a chunk's worth
    of data not yet acknowledged is acknowledged at once. 0 acknowledges every packet at once,
    as aiortc does. Used until the handshake says what the neighbour is, and for browsers."""
    sctp_sack_delay_native: float = 0.45
    """The same, toward a native neighbour (aiortc, whose retransmission timeout is never
    under 1 s, so a SACK this late is never taken for a loss). An idle link carries a probe
    and its answer each way every few tenths of a second, so with this wait most SACKs ride
    on them instead of going alone: each lone SACK costs a UDP packet and a wake-up of both
    agents, which is most of an idle agent's CPU. At most 0.5 s, RFC 4960's ceiling."""
    close_drain_timeout: float = 1.0
    """On a graceful close, how long to let queued frames (BYE, last updates) drain first:
    aiortc drops data still queued when the connection closes."""
    reconnect_initial_delay: float = 0.5
    """First back-off after a failed attempt to link a node; doubles up to the maximum."""
    reconnect_max_delay: float = 15.0
    """Longest back-off between attempts to link the same node."""
    maintain_interval: float = 0.5
    """How often the mesh checks its degree, dials candidates and closes idle links."""
    ban_seconds: float = 30.0
    """A peer that broke the protocol (garbage, oversize frame, unknown type, failed proof) is
    not linked again for this long."""
    route_ttl: int = 16
    """Hops a relayed signaling message (ROUTE) may travel through the mesh."""
    max_frame_bytes: int = MAX_FRAME_BYTES
    """Largest reassembled frame accepted from a peer."""
    max_signature_checks: int = 1024
    """End-to-end signatures (member records, routed messages) waiting to be checked; one more
    is dropped (``signatures.dropped`` in status). Natively a check takes ~0.16 ms, so the
    queue is nearly always empty; it bounds what a flood of forged messages can queue."""
    max_signature_checks_per_neighbour: int = 256
    """The share of that queue one neighbour's messages may hold, so a neighbour that floods
    messages to check delays only its own (a neighbour relays everything from behind it,
    hence not much less than the whole)."""
    max_queued_routes: int = 1024
    """Routed messages (rpc requests and answers) waiting to be signed and sent; one more
    is refused at once (``send_routed`` returns False, the call fails). rpc's own limits
    keep it far below this."""
    drop_log_interval: float = 10.0
    """At most one warning per this many seconds per kind of dropped routed message (forged,
    unknown source, invalid, queue full); the next one says how many were left out, so a
    peer sending thousands of bad messages cannot flood the log."""

    def __post_init__(self) -> None:
        for name in ("sctp_sack_delay", "sctp_sack_delay_native"):
            if not 0 <= getattr(self, name) <= MAX_SACK_DELAY:
                raise ValueError(
                    f"transport.{name} must be within [0, {MAX_SACK_DELAY}] s "
                    "(RFC 4960 forbids a longer delayed SACK)"
                )


@dataclass
class RpcSettings:
    call_timeout: float = 10.0
    """Seconds a call waits for its answer when the caller names no timeout. Every call has one:
    a request or answer lost with a link (or dropped by a relay without a path) is noticed."""
    max_pending_calls: int = 256
    """Outgoing calls awaiting an answer at once; one more fails at once (``RpcOverloaded``)
    instead of growing the table of waiters without bound."""
    max_requests_per_source: int = 16
    """Incoming requests from one node being handled at once; the excess is answered ``busy``
    at once, so one greedy or hostile member cannot take every handler slot."""
    max_requests: int = 128
    """Incoming requests being handled at once from all nodes together (excess: ``busy``)."""
    max_request_bytes: int = 64 * 1024
    """Largest encoded request body sent or accepted (requests are small: names and indices);
    bounds what ``max_requests`` handlers can hold in memory."""
    max_response_bytes: int = 8 * 1024 * 1024
    """Largest encoded response body sent or accepted; must exceed ``blobs.max_chunk_size``
    plus a little framing."""
    handler_timeout: float = 30.0
    """A handler still running after this long is cancelled and the caller gets ``timeout``."""
    send_buffer_high: int = 1024 * 1024
    """Before sending a request or answer, wait until the link toward its destination has at
    most this many bytes queued: a node serving big answers (blob chunks) to a slow path
    paces itself instead of piling megabytes into the data channel."""
    send_wait_timeout: float = 5.0
    """Longest wait for that queue to drain before sending anyway (the link's own
    ``send_buffer_limit`` still bounds it)."""


@dataclass(frozen=True, slots=True)
class SignalingClientSettings:
    """Timings and bounds of :class:`SignalingClient`, each with its default."""

    #: First delay (s) before reconnecting after a disconnect or failed attempt.
    reconnect_initial_delay: float = 0.5
    #: Longest delay (s) between attempts; the delay doubles up to this.
    reconnect_max_delay: float = 10.0
    #: Fraction of each delay taken off at random (0.5 → between 50% and 100%
    #: of the delay), so agents cut off together do not all return together.
    reconnect_jitter: float = 0.5
    #: Seconds for one attempt: TCP + WebSocket handshake + ``join`` → ``welcome``.
    connect_timeout: float = 5.0
    #: Seconds of silence before we ping the server; no pong within half of
    #: that and the connection counts as dead (then we reconnect).
    heartbeat: float = 10.0
    #: Signals queued for sending at most; beyond, :meth:`send_signal` says
    #: False rather than letting memory grow while the socket is stuck.
    send_queue_size: int = 256
    #: Seconds one write may take before the connection counts as dead.
    send_timeout: float = 10.0
    #: Seconds to wait for the server's close frame when closing.
    close_timeout: float = 2.0
    #: Seconds an async callback may run before it is cancelled (and logged).
    #: Callbacks run one at a time, in order, in their own task, so a slow one
    #: delays later events (never the socket's reading or heartbeat); work
    #: that may take longer belongs in a task of the caller's own.
    callback_timeout: float = 30.0
    #: Events (signals, joins, leaves) waiting for their callbacks at most;
    #: when full, reading from the server pauses until callbacks catch up.
    event_queue_size: int = 1024
    #: Largest message we send, in UTF-8 bytes; matches the server's default
    #: ``max_message_bytes`` (a bigger one would get us disconnected).
    max_send_bytes: int = 64 * 1024
    #: Largest message we accept from the server.
    max_receive_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        """Reject settings that would make the client spin or never retry."""
        if not 0 < self.reconnect_initial_delay <= self.reconnect_max_delay:
            raise ValueError("need 0 < reconnect_initial_delay <= reconnect_max_delay")
        if not 0 <= self.reconnect_jitter <= 1:
            raise ValueError("reconnect_jitter must be within [0, 1]")
        for name in ("connect_timeout", "heartbeat", "send_timeout", "close_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SignalingClientSettings.{name} must be positive")
        if self.callback_timeout <= 0 or self.send_queue_size < 1 or self.event_queue_size < 1:
            raise ValueError(
                "callback_timeout, send_queue_size and event_queue_size must be positive"
            )
