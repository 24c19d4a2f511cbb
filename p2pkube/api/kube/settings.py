"""The Kubernetes API face's timings and limits as named settings with their defaults
(memberlist style; ``p2pkube join --set kubeapi.FIELD=VALUE``). No imports: the browser node
loads every settings module, and it serves no API."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class KubeApiSettings:
    bookmark_seconds: float = 60.0
    """How often a watch that allows bookmarks gets one while nothing changes (Kubernetes
    sends them about once a minute), so a client resumes from a recent resourceVersion."""
    port_forward_stream_pair_timeout: float = 30.0
    """Seconds the second stream of a forwarded connection may take after the first
    (kubectl opens an error and a data stream; the kubelet's streamCreationTimeout)."""
    port_forward_idle_timeout: float = 300.0
    """Seconds a port-forward session may go without a frame from kubectl (which pings
    every 5-10 s) before it ends."""
    port_forward_stall_timeout: float = 60.0
    """Seconds a forwarded connection's reader may leave its buffer full before that one
    stream is reset (the others go on)."""
    port_forward_write_timeout: float = 30.0
    """Seconds one write to kubectl may wait for room before the session ends."""
    port_forward_max_streams: int = 256
    """Streams open at once in one session (two per forwarded connection); more are refused."""
