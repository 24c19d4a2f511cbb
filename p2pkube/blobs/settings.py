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
    max_blob_bytes: int = 256 * 1024 * 1024
    """Largest blob this node publishes or pulls. ``p2pkube publish`` (and ``apply`` of a
    ``.wasm`` image) over it is refused (the upload is streamed to disk, never held in
    memory); a pull whose Blob manifest declares more is refused before any file is created
    or any chunk asked for, since any member can write a manifest declaring any size. A pod
    whose module is over it waits with ErrImagePull naming this setting, not retried (the
    module will not shrink; raise this and restart the agent to pull it). 256 MiB: the
    modules pods run are kilobytes to tens of MB (``examples/build/sqlite.wasm`` is 1 MB, a
    CPython built for WASI some tens of MB), so this leaves room for big ones while bounding
    what one manifest can make every node write; it is pulled in about 11-20 s at this
    transport's 13-23 MB/s (well within ``kubelet.image_pull_timeout``); and a browser node
    holds its blobs in the tab's memory."""
    min_free_bytes: int = 1024 * 1024 * 1024
    """Free space a pull must leave on the filesystem of the blob store (``<data-dir>/blobs``):
    a pull is refused when the blob's size plus what pulls already running still write would
    leave less, checked before it starts and again every ``disk_check_interval`` as chunks
    land (a pull that crosses it stops; its partial file stays for a resume). The kubelet
    retries such a pull with back-off (ImagePullBackOff), as space may free up. 1 GiB: the
    agent's state log, pod logs and compiled modules live on that filesystem and must stay
    writable after a pull. 0 turns the check off; a browser node does not check (its files
    are in memory, and Emscripten's statvfs reports made-up numbers)."""
    disk_check_interval: float = 1.0
    """How often a running pull re-checks the free space (one statvfs, in a worker thread):
    something else on the machine may be filling the disk meanwhile."""
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
