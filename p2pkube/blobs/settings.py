"""Every timing and limit of blob storage, transfer and collection (``--set blobs.X=...``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BlobSettings:
    chunk_size: int = 256 * 1024
    """Chunk size of the blobs this node publishes (recorded in each manifest). A chunk is one
    rpc answer: big enough that the per-message cost of aiortc is amortised, small enough
    that a corrupt or lost chunk is cheap to fetch again and that a window of them stays
    small in memory."""
    max_chunk_size: int = 4 * 1024 * 1024
    """Largest chunk this node serves or accepts in a manifest (must stay below
    ``rpc.max_response_bytes``)."""
    window: int = 8
    """Chunk requests one fetch keeps in flight (over all holders together): the receiver
    paces the transfer, so at most window x chunk_size bytes are on their way to it."""
    chunk_timeout: float = 10.0
    """Seconds one chunk request may take; then that holder is dropped for this fetch and
    the chunk is asked of another."""
    max_chunk_attempts: int = 5
    """Requests for one chunk (over all holders) before the whole fetch fails."""
    holder_wait: float = 5.0
    """How long a fetch waits for a holder to appear when none is known (e.g. the holder's
    Node status has not reached us yet right after a publish) before it fails."""
    stall_timeout: float = 60.0
    """A fetch during which no chunk arrived for this long fails (nothing waits forever)."""
    refresh_interval: float = 0.5
    """How often a running fetch re-reads the holders: a holder that turned NotReady is
    dropped and the chunks it owed are asked of others."""
    max_concurrent_fetches: int = 4
    """Different blobs fetched at once; more wait their turn (calls for the same blob always
    share one fetch)."""
    max_upload_bytes: int = 512 * 1024 * 1024
    """Largest blob ``p2pkube publish`` accepts (the upload is streamed to disk, never held
    in memory)."""
    io_timeout: float = 120.0
    """Longest one disk operation (copy, hash, read of a chunk) may take before it fails."""
    gc_grace: float = 600.0
    """A blob referenced by no object is collected after this many seconds: a user
    publishes a module first and applies the workload using it later. Publishing or pulling
    it again restarts the count on that node."""
    gc_interval: float = 30.0
    """How often each node looks for unreferenced blobs."""
    progress_interval: float = 0.25
    """How often ``p2pkube pull`` receives a progress line while a fetch runs."""
