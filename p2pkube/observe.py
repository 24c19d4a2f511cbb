"""What the shared node reports as it happens, for metrics: a tiny platform-neutral interface.

Most figures a node exposes are counters its parts already keep (``Node.status()``); a
metrics exporter reads those when it is scraped. A few can only be taken at the event: how
long a scheduling pass took, how long a pod waited to start, how long a container ran, how
long a Service request took. The scheduler, the kubelet and the Service router call an
:class:`Observer` at those moments.

This base class does nothing, and is what a node gets unless its starter passes another: a
browser tab, or a native agent without ``--metrics-address``, pays one no-op method call per
event. The native exporter (``p2pkube.metrics``) subclasses it with prometheus_client
histograms and counters. This module imports nothing, so the shared node and the browser
bundle carry no metrics library.
"""

from __future__ import annotations


class Observer:
    """No-op receiver of the node's timed events (subclassed by ``p2pkube.metrics``).

    Each method is called on the event loop at the event, and must stay as cheap as a counter
    increment or a histogram observation."""

    def scheduling_pass(self, seconds: float) -> None:
        """A scheduling pass ended after ``seconds`` (skipped passes included)."""

    def pod_started(self, seconds: float) -> None:
        """A pod reached Running here ``seconds`` after this node's kubelet first saw it
        (the kubelet's pod start latency: module pull, compile, admission, config included)."""

    def container_started(self) -> None:
        """A container instance started (a run-to-completion instance, or a handler container
        that began serving)."""

    def container_restarted(self) -> None:
        """A container is being started again (its restart count went up)."""

    def container_ended(self, seconds: float, succeeded: bool) -> None:
        """A container run ended after ``seconds``: an instance exited, or a handler container
        stopped serving; ``succeeded`` when it exited 0 (a handler: never)."""

    def service_request(self, code: int, seconds: float) -> None:
        """The Service router answered a request with HTTP ``code`` after ``seconds`` (to the
        response head, or to its own error)."""


NO_OBSERVER = Observer()
"""The shared no-op observer."""
