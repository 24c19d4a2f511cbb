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
    heartbeats may come late: the node then asks the others (in its heartbeats) to wait this
    much longer than their ``membership.node_timeout`` before calling it NotReady (at most
    their ``membership.max_grace``)."""
    cpu: str = ""
    """CPU the tab offers to pods; empty: ``navigator.hardwareConcurrency`` less one core for
    the page (at least 1)."""
    memory: str = ""
    """Memory the tab offers to pods; empty: half of ``navigator.deviceMemory`` (Chrome says
    at most 8 GB; 4 GiB assumed when it says nothing), at most 4Gi."""
    snapshot_interval: float = 0.5
    """How often the page's view (peers, pods, their last log lines, events) is refreshed."""
