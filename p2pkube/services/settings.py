"""Every Services timing and limit as a named setting with its default (memberlist style)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServiceSettings:
    request_deadline: float = 30.0
    """Seconds one request may take, from the router taking it to the handler's last byte.
    A handler instance still running then is stopped and the client gets 504 (or, once the
    head has gone, a cut-short body)."""
    container_concurrency: int = 8
    """Requests one handler pod runs at once (Knative's containerConcurrency); a pod
    overrides it with the annotation ``p2pkube.io/container-concurrency``."""
    queue_size: int = 64
    """Requests that wait for a free slot per pod beyond ``container_concurrency``; more are
    refused at once (503 with Retry-After), so a flood cannot queue without end."""
    max_request_body_bytes: int = 8 * 1024 * 1024
    """Largest request body a front door accepts (413 beyond); it is buffered, then put on
    the handler's stdin."""
    max_response_bytes: int = 64 * 1024 * 1024
    """Largest response body a handler may write; beyond it the response is cut short."""
    max_response_header_bytes: int = 64 * 1024
    """Largest response header block a handler may write (502 beyond)."""
    response_buffer_bytes: int = 4 * 1024 * 1024
    """Response body bytes a handler instance may have written that its reader has not read
    yet. Natively the instance then waits until the reader catches up (backpressure); in a
    browser tab, where its output arrives on the event loop that must not block, the stream
    is broken and the instance stopped."""
    max_request_header_bytes: int = 16 * 1024
    """Largest request line or header field a front door accepts (431 beyond)."""
    max_request_headers: int = 100
    """Most request header fields a front door accepts (431 beyond)."""
    header_timeout: float = 10.0
    """Seconds a client has to send its request line and headers (slow-loris cut-off)."""
    body_timeout: float = 30.0
    """Seconds a client has to send its whole request body."""
    stream_chunk_bytes: int = 32 * 1024
    """Body bytes per chunk over the mesh (both ways); well below ``rpc.max_response_bytes``."""
    read_timeout: float = 10.0
    """Seconds a router waits for the next response chunk from a remote endpoint before it
    gives up on the stream (the handler's own deadline still bounds the whole)."""
    prefer_local: bool = True
    """Send a request to an endpoint on this node when there is a ready one (no mesh hop)."""
    retry_attempts: int = 2
    """Further endpoints a request is tried on when its endpoint failed before answering
    and retrying is safe (an idempotent method, or it never reached the handler)."""
    retry_after: int = 1
    """Retry-After (seconds) of a 503 when a Service has no ready endpoint or all are busy."""
    node_port_range: str = "30000-32767"
    """NodePorts allocated and accepted (Kubernetes' default service-node-port-range)."""
    node_port_resync: float = 5.0
    """Seconds between two passes of a node over its NodePort listeners besides those a
    Service change triggers: when a port it could not bind (taken on this host) is tried
    again."""
    max_open_streams: int = 256
    """Requests this node serves for other nodes' routers at once (uploading, running or
    being read); one more is refused with 503 before it reaches a handler."""
    max_open_streams_per_node: int = 64
    """Of those, from one node: one router cannot take every slot."""
    max_upload_bytes: int = 64 * 1024 * 1024
    """Request body bytes a node buffers at once for other nodes' requests still uploading;
    a chunk beyond it is refused (503, no handler saw it): 256 streams of 8 MiB bodies
    cannot take 2 GiB."""
    stream_idle_timeout: float = 30.0
    """Seconds a served request may go without a call from its router (body chunk, read)
    before it is closed and its handler stopped: a router that vanished leaks nothing."""
    poll_wait: float = 5.0
    """Longest a ``svc.read`` waits for the next chunk before answering an empty one (a long
    poll); below ``read_timeout`` so that a slow handler is not taken for a lost node."""
    first_chunk_wait: float = 0.05
    """Seconds the answer carrying a response's head waits for the body's first chunk (or its
    end), so that a small response crosses the mesh in one round trip."""
    lost_check_interval: float = 0.1
    """How often a router checks that the node of a request in flight is still Ready and
    reachable: a request whose node is lost fails over within this of the link going, not
    at its deadline."""
    probe_period: float = 10.0
    """Default seconds between readiness probes (a probe's periodSeconds wins)."""
    probe_timeout: float = 1.0
    """Default seconds one readiness probe may take (a probe's timeoutSeconds wins)."""

    ping_after: float = 0.2
    """Seconds a request waits on another node's answer before the router pings that node
    (``services/liveness.py``): a killed node is otherwise noticed only when the failure
    detector declares it, about two seconds later."""
    ping_timeout: float = 0.3
    """Seconds a ping may take; a node that does not answer in time is ejected from routing,
    and requests waiting on it fail over when that is safe (an idempotent method)."""
    ejection_period: float = 5.0
    """Seconds an ejected node gets no new request (unless it turns Ready again after it was
    NotReady, or no other endpoint is left)."""

    def check(self) -> None:
        """ValueError for values that cannot work together."""
        if self.container_concurrency < 1:
            raise ValueError("services.container_concurrency must be at least 1")
        if self.queue_size < 0:
            raise ValueError("services.queue_size must be 0 or more")
        if not 0 < self.poll_wait < self.read_timeout:
            raise ValueError("services.poll_wait must be above 0 and below services.read_timeout")
        if self.max_open_streams < 1 or self.max_open_streams_per_node < 1:
            raise ValueError("services.max_open_streams(_per_node) must be at least 1")
        if self.stream_chunk_bytes < 1024:
            raise ValueError("services.stream_chunk_bytes must be at least 1024")
        low, _, high = self.node_port_range.partition("-")
        if not (low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high) <= 65535):
            raise ValueError(f"services.node_port_range {self.node_port_range!r}: want LOW-HIGH")

    def node_ports(self) -> range:
        """The NodePort range as a ``range``."""
        low, _, high = self.node_port_range.partition("-")
        return range(int(low), int(high) + 1)
