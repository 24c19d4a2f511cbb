"""Settings only a browser node has (section ``browser``); imports nothing of the page."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BrowserSettings:
    sync_interval: float = 1.0
    """Seconds between two copies of the tab's data directory (state, logs, blobs) to
    IndexedDB, which is what a reload finds; the page also copies when it is hidden. Writes of
    the last interval may be lost to a crash of the tab, not to its peers (they send them back
    with the diff). Each copy writes only the files that changed."""
    hidden_grace: float = 10.0
    """While the tab is hidden the browser runs its timers at most once a second, so its
    acks may come late: the node then asks the others (on its signed ALIVE) to add this much
    to their suspicion timeout before they declare it DEAD and NotReady (at most their
    ``swim.max_grace``)."""
    cpu: str = ""
    """CPU the tab offers to pods; empty: ``navigator.hardwareConcurrency`` less one core for
    the page (at least 1)."""
    memory: str = ""
    """Memory the tab offers to pods; empty: half of ``navigator.deviceMemory`` (Chrome says
    at most 8 GB; 4 GiB assumed when it says nothing), at most 4Gi."""
    snapshot_interval: float = 0.5
    """How often the page's view (peers, pods, their last log lines, events) is refreshed."""
    worker_pool: int = 3
    """Idle Web Workers the tab keeps warm for pod instances: an instance (each HTTP request to
    a handler pod runs one) takes one at once instead of waiting ~20-30 ms for a Worker to
    start, and the pool is refilled in the background. A Worker whose instance exited goes back
    to the pool; one that was stopped mid-run is terminated, never reused. Each idle Worker
    costs a thread and a few MB. 0: every instance starts its own Worker."""
    worker_pool_refill_delay: float = 0.05
    """Seconds after the Worker pool ran short before it is topped up with new Workers. A
    short instance (most handler requests) gives its Worker back before then, so a steady
    stream of requests reuses Workers instead of starting new ones."""

    proxy_streams: int = 64
    """Requests from the tab's Service Worker (``fetch()`` of a Service's proxy path from a page
    of this origin) the node serves at once; one more gets 503 with Retry-After, so pages of
    the origin cannot pile up open responses in the tab."""

    def check(self) -> None:
        """ValueError for values that cannot work."""
        if not 0 <= self.worker_pool <= 64:
            raise ValueError("browser.worker_pool must be 0-64")
        if not 0 <= self.worker_pool_refill_delay <= 60:
            raise ValueError("browser.worker_pool_refill_delay must be 0-60 s")
        if self.proxy_streams < 1:
            raise ValueError("browser.proxy_streams must be at least 1")
