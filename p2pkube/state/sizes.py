"""Size limits and accounting of the cluster state, and its counters.

`ValueTooLarge` is what a write over `StateSettings.max_object_bytes` raises.
`SizeAccount` keeps, from every entry change, an estimate of the document a compaction
would build now (the newest version of every key, unexpired tombstones included), so
that the compaction check costs no rebuild until the estimate says it is worth one.
`StateStats` are the counters `p2pkube status` and the benchmarks read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .store import MAP_NAMES, StateStore
from .versioned import Stamp, read_stamp

__all__ = [
    "ENTRY_OVERHEAD",
    "MAX_PEERS_IN_REFUSAL_STATS",
    "TOMBSTONE_BUCKETS_PER_TTL",
    "SizeAccount",
    "StateStats",
    "ValueTooLarge",
    "check_size",
    "entry_size",
]

TOMBSTONE_BUCKETS_PER_TTL: Final = 64
"""Granularity of the tombstone-age accounting: ttl / 64 (at most a minute, at least
1 ms). A bucket counts as live until its end passes the ttl horizon, so the estimate
errs towards compacting later, by less than 1/64 of the ttl's deletes."""

ENTRY_OVERHEAD: Final = 8
"""Bytes a map entry costs in a freshly built document besides its map name, key and
blob (item header, parent and length varUints); calibrated against pycrdt, used only
to estimate the live size cheaply between compaction checks."""

MAX_PEERS_IN_REFUSAL_STATS: Final = 64
"""`StateStats.refusals_by_peer` keeps the links most recently refused, at most this many."""


@dataclass(slots=True)
class StateStats:
    """Counters for `p2pkube status`/benchmarks; a copy taken when read."""

    updates_sent: int = 0
    updates_received: int = 0
    update_bytes_sent: int = 0
    """Bytes of the update messages sent (one message per peer it went to)."""
    update_bytes_received: int = 0
    """Bytes of the update messages received."""
    anti_entropy_rounds: int = 0
    """Anti-entropy rounds run (each sends a step 1 to up to `anti_entropy_fanout` peers)."""
    sync_step1_sent: int = 0
    anti_entropy_postponed: int = 0
    """Anti-entropy rounds postponed because updates were arriving (`anti_entropy_quiet`)."""
    sync_step1_received: int = 0
    sync_step2_bytes_sent: int = 0
    sync_step2_bytes_received: int = 0
    sync_step2_received: int = 0
    send_errors: int = 0
    protocol_errors: int = 0
    bytes_persisted: int = 0
    disk_writes: int = 0
    snapshots_written: int = 0
    corrupt_log_bytes: int = 0
    """Damaged bytes skipped in the middle of the update log at open (valid records
    followed them; logged as an ERROR with the offset): what they held comes from peers."""
    peers: int = 0
    doc_size: int = 0
    """Encoded size of the whole document (recomputed only after it changed)."""
    live_size: int = 0
    """Estimated size of the document a compaction would build now (newest version of
    every key, unexpired tombstones included); exact right after a compaction check
    that built one."""
    generation: int = 0
    """Number of the current document generation (0 until the first compaction)."""
    generation_creator: int = 0
    """Client id of the node that created the current generation (0 for genesis)."""
    compactions: int = 0
    """Generations this node created."""
    generation_switches: int = 0
    """Generation switches (own compactions included) since open."""
    generation_fetches: int = 0
    """Requests for the whole document of a newer generation."""
    stale_frames: int = 0
    """Frames of an older generation received (answered with our step 1)."""
    lww_repairs: int = 0
    """Re-puts of a newer version after Yjs let a concurrent older one win."""
    tombstones: int = 0
    """Deleted keys still held as tombstones."""
    clock_skew_clamps: int = 0
    """Remote stamps our clock did not follow all the way (beyond `max_clock_skew` / 2)."""
    clock_lowered: int = 0
    """Times our clock was pulled back to wall clock + `max_clock_skew` / 2 to issue a stamp
    (it was restored from a run whose wall clock was ahead)."""
    refused_future_stamps: int = 0
    """Updates from peers refused for a value stamped beyond now + `max_clock_skew`."""
    refused_oversize: int = 0
    """Updates from peers refused for a value over `max_object_bytes`."""
    budget_drops: int = 0
    """Updates dropped because their link was over `link_update_bytes_per_second`."""
    budget_dropped_bytes: int = 0
    """Bytes of those updates."""
    refusals_by_peer: dict[str, int] = field(default_factory=dict)
    """Refused and dropped updates per link (peer id), for the links most recently refused."""
    future_versions_ignored: int = 0
    """Stored versions stamped beyond now + `max_clock_skew` that a write overwrote, a
    repair did not restore, or a compaction or switch dropped."""

    state_vector: dict[int, int] = field(default_factory=dict)


class ValueTooLarge(ValueError):
    """A value whose encoding exceeds `StateSettings.max_object_bytes`; nothing was written."""

    def __init__(self, map_name: str, key: str, size: int, limit: int) -> None:
        super().__init__(
            f"{map_name}/{key}: the encoded value is {size:,} bytes, over the limit of "
            f"{limit:,} bytes (state.max_object_bytes)"
        )
        self.size = size
        self.limit = limit


def check_size(map_name: str, key: str, size: int, limit: int | None) -> None:
    """ValueTooLarge when `size` exceeds `limit` (None: no limit)."""
    if limit is not None and size > limit:
        raise ValueTooLarge(map_name, key, size, limit)


def entry_size(map_name: str, key: str, blob: bytes) -> int:
    """Estimated bytes of one entry in a freshly built document."""
    return len(map_name) + len(key) + len(blob) + ENTRY_OVERHEAD


class SizeAccount:
    """The live-size estimate: bytes of every live value, and of every tombstone by age.

    Expiry is time-based, so tombstones are kept by stamp time bucket (wall // bucket
    ms), not per key: each change event carries the old blob, hence the bucket to
    subtract from, and a ttl of deletes is at most ~64 buckets (1440 for the 24 h
    default) plus older ones until the next compaction.
    """

    def __init__(self, ttl_ms: int) -> None:
        self.bucket_ms = max(1, min(60_000, ttl_ms // TOMBSTONE_BUCKETS_PER_TTL))
        """Fixed here: changing it later would subtract from the wrong buckets."""
        self.value_bytes = 0
        """Estimated fresh-document bytes of all live values."""
        self.tombstone_bytes: dict[int, int] = {}
        """Estimated bytes of tombstones by stamp time bucket."""
        self.tombstones = 0
        """Deleted keys still held as tombstones."""

    def add(
        self,
        map_name: str,
        key: str,
        blob: bytes | None,
        header: tuple[Stamp, bool] | None,
        sign: int,
    ) -> None:
        """Count an entry in (`sign` +1) or out (-1); absent or garbage entries count nothing."""
        if blob is None or header is None:
            return
        stamp, tombstone = header
        if tombstone:
            bucket = stamp.wall // self.bucket_ms
            size = self.tombstone_bytes.get(bucket, 0) + sign * entry_size(map_name, key, blob)
            if size:
                self.tombstone_bytes[bucket] = size
            else:
                self.tombstone_bytes.pop(bucket, None)
            self.tombstones += sign
        else:
            self.value_bytes += sign * entry_size(map_name, key, blob)

    def recount(self, store: StateStore) -> None:
        """Rebuild the accounting from scratch (after a generation switch)."""
        self.value_bytes = 0
        self.tombstone_bytes.clear()
        self.tombstones = 0
        for map_name in MAP_NAMES:
            for key, blob in store.raw_items(map_name):
                self.add(map_name, key, blob, read_stamp(blob), +1)

    def live_estimate(self, horizon_ms: int) -> int:
        """Bytes of the document a compaction would build now, dropping tombstones
        stamped before `horizon_ms` (O(minutes of deletes))."""
        kept = sum(
            size
            for bucket, size in self.tombstone_bytes.items()
            if (bucket + 1) * self.bucket_ms > horizon_ms
        )
        return self.value_bytes + kept
