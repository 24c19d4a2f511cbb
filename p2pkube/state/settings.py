"""Settings of the cluster state: the sync, compaction and admission limits
(`StateSettings`, the ``state.*`` section of `p2pkube join --set`) and the persistence
layer's (`PersistSettings`, derived from them).

Only dataclasses and constants, so that `p2pkube.settings` can list every setting
without loading the document store or the sync code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_MAX_PAYLOAD", "DEFAULT_MAX_SV_ENTRIES", "PersistSettings", "StateSettings"]

DEFAULT_MAX_PAYLOAD: Final = 64 * 1024 * 1024
"""Default upper bound for one payload: far above a 10k-object state (~3 MB)."""
DEFAULT_MAX_SV_ENTRIES: Final = 1_000_000
"""Default upper bound on clients in one state vector (one per process start ever)."""


@dataclass(frozen=True, slots=True)
class PersistSettings:
    """Limits and timings of the persistence layer."""

    snapshot_log_bytes: int = 8 * 1024 * 1024
    """Compact (write a snapshot, empty the log) once the log reaches this size:
    bounds load time (replaying) and disk use; a 10k-object snapshot is ~3 MB."""
    snapshot_log_records: int = 20_000
    """...or once it holds this many records (many tiny updates replay slowly)."""
    max_buffer_bytes: int = 32 * 1024 * 1024
    """Bound on appended-but-unwritten bytes; beyond it the buffer is replaced by a
    pending snapshot (the document holds the same data)."""
    max_record_bytes: int = 256 * 1024 * 1024
    """A log record claiming more than this is treated as a corrupt tail."""
    writer_idle_timeout: float = 1.0
    """The writer task re-checks for work at least this often (no unbounded wait)."""
    flush_timeout: float = 30.0
    """`flush()` raises TimeoutError after this long (e.g. a hung disk)."""
    io_retry_delay: float = 0.5
    """Pause after a failed write before retrying (as a snapshot)."""
    close_timeout: float = 30.0
    """How long `close()` waits for the final flush before abandoning it."""


_PERSIST_DEFAULTS: Final = PersistSettings()


@dataclass(slots=True)
class StateSettings:
    """Timings and limits of the cluster-state service (flat and mutable, so that
    `p2pkube join --set state.FIELD=VALUE` can override any of them)."""

    anti_entropy_interval: float = 5.0
    """Seconds between two anti-entropy rounds: each sends step 1 to
    ``anti_entropy_fanout`` attached peers, round-robin, paid with one state vector + one
    (usually tiny) diff each. Updates are flooded over reliable links, so this only repairs
    what a refused or cut-off message left out (and a peer's own rounds repair it too)."""
    anti_entropy_quiet: float = 1.0
    """A round is postponed (to the next interval) while a burst is arriving: an update or
    step 2 of at least ``anti_entropy_burst_bytes`` was applied from a peer within this many
    seconds. Flooding is delivering then, and a step 1 sent in the middle of a burst is
    answered with everything still in flight toward us: a 1,000-pod Job on 10 agents made
    20-65 MB of step 2 answers, several times the Job's own updates, queued on the same links
    as the probes (0: never postponed)."""
    anti_entropy_burst_bytes: int = 16 * 1024
    """Smallest update that counts as a burst for ``anti_entropy_quiet``: a 1,000-pod Job's
    transactions are 40-780 KB, a node's status writes a few KB. Small updates flow all
    the time (statuses, leases, events) and must not hold back the repair they need when
    one went missing (with every update counted, a partial mesh of 6 waited 40 s for a Node
    object a stale neighbour list had not relayed)."""
    anti_entropy_max_postponed: int = 3
    """Rounds postponed in a row at most: under endless churn the repair still runs every
    ``anti_entropy_interval`` times one more than this."""
    anti_entropy_fanout: int = 3
    """Peers one anti-entropy round sends step 1 to (0: all). A constant number keeps the
    cost per node independent of its degree: with 13 links, a round to every peer made 5
    state messages per second per agent at rest, a third of its traffic. With d peers, each
    link is checked by this side every ceil(d / fanout) rounds, and by the other side's."""
    max_message_bytes: int = DEFAULT_MAX_PAYLOAD
    """Largest payload accepted from a peer (a full 10k-object state is ~3 MB)."""
    max_state_vector_entries: int = DEFAULT_MAX_SV_ENTRIES
    """Largest state vector accepted from a peer (one entry per process start)."""
    snapshot_log_bytes: int = _PERSIST_DEFAULTS.snapshot_log_bytes
    """Compact the on-disk log into a snapshot once it reaches this many bytes
    (bounds replay time at start and disk use)."""
    snapshot_log_records: int = _PERSIST_DEFAULTS.snapshot_log_records
    """...or once it holds this many records (many tiny updates replay slowly)."""
    persist_buffer_bytes: int = _PERSIST_DEFAULTS.max_buffer_bytes
    """Bound on updates waiting for the disk writer; beyond it a snapshot replaces
    them (memory stays bounded, nothing is lost: the document holds them)."""
    max_log_record_bytes: int = _PERSIST_DEFAULTS.max_record_bytes
    """A log record claiming more than this is treated as a corrupt tail at load."""
    persist_idle_timeout: float = _PERSIST_DEFAULTS.writer_idle_timeout
    """The disk writer re-checks for work at least this often."""
    flush_timeout: float = _PERSIST_DEFAULTS.flush_timeout
    """`put`/`flush` raise TimeoutError when the disk has not confirmed within this."""
    io_retry_delay: float = _PERSIST_DEFAULTS.io_retry_delay
    """Pause after a failed disk write before retrying it as a snapshot."""
    close_timeout: float = _PERSIST_DEFAULTS.close_timeout
    """How long `close()` waits for the final flush."""
    compact_check_interval: float = 10.0
    """Mean seconds between compaction checks (jittered by +-50% so that nodes that
    are all eligible rarely compact at the same moment). A check costs one encode
    of the document when it changed; building the new generation costs ~20 us per
    entry, on the event loop, and only happens past the thresholds below."""
    compact_min_bytes: int = 1024 * 1024
    """Never compact a document smaller than this: below it, growth costs less than
    making every peer download a new generation."""
    compact_ratio: float = 4.0
    """Compact when the encoded document exceeds this many times its live size (the
    size of a fresh document holding the newest version of every key). 4 keeps the
    worst-case memory/join cost at 4x live while compacting rarely (each compaction
    makes every peer fetch the whole live document once)."""
    tombstone_ttl: float = 24 * 3600.0
    """Seconds a tombstone (a delete) is kept by compaction. A peer that was offline
    longer than this, holding an older value of a deleted key, resurrects it when it
    rejoins (like Cassandra's gc_grace_seconds): keep it above the longest outage
    after which a node is expected to rejoin with its data."""
    max_clock_skew: float = 60.0
    """An update from a peer carrying a value stamped more than this many seconds ahead of
    our wall clock is refused (not applied, logged and counted with the link; the sender
    offers it again at anti-entropy, so it is taken once it is within the bound). Our hybrid
    clock follows remote stamps, and issues stamps, at most half this far ahead of our wall
    clock: honest clocks within max_clock_skew / 2 of each other never refuse each other's
    writes (NTP keeps them within milliseconds). A stored version further ahead than this
    (written before the bound existed) is overwritten by a normal write, never restored by
    a repair, and dropped by compaction."""
    max_object_bytes: int = 1024 * 1024
    """Largest encoded value (msgpack bytes) of one map entry: an object (apiVersion, kind,
    metadata, spec), a status, a lease or an event. A local write over it raises
    ValueTooLarge (the API answers 422 naming the size and the limit); an update from a
    peer carrying a larger value is refused, logged and counted with the link. Kubernetes
    refuses ConfigMaps and Secrets over 1 MiB; etcd's request limit is 1.5 MiB. Use the
    same value on every node: a node refuses a peer's step 2 that holds a value over its
    own limit."""
    link_update_bytes_per_second: int = 4 * 1024 * 1024
    """Update bytes per second one link may deliver (a token bucket per link, refilled at
    this rate). An update over the budget is dropped (logged and counted with the link) and
    fetched again by the next anti-entropy round, in the step 2 answering our step 1: one
    member cannot make every node apply, store and relay more than this per link. A step 2
    we asked for is taken whenever the link is not in debt, whatever its size (the catch-up
    of a large state), and may leave it in debt."""
    link_update_burst_bytes: int = 16 * 1024 * 1024
    """Bucket size of `link_update_bytes_per_second`: update bytes a link may deliver at
    once after a quiet period (a burst of writes; sixteen objects of the maximum size)."""
    refusal_log_interval: float = 10.0
    """At most one log line per this many seconds per link about refused or dropped
    updates (the rest are counted, and the next line says how many)."""
    generation_fetch_timeout: float = 30.0
    """How long we wait for the full document of a newer generation from one peer
    before asking again (possibly another peer). Must cover sending the whole live
    document over one link."""
    generation_nudge_interval: float = 1.0
    """At most one step 1 per this many seconds to a peer that keeps sending frames of
    an older generation (it tells the peer which generation to fetch)."""
    max_generation_jump: int = 1_000_000
    """A frame whose generation number is more than this ahead of ours is a protocol
    error: honest nodes advance by one per compaction, so a huge number is a peer
    trying to exhaust the 2**53 number space and stop compaction forever."""

    def persist_settings(self) -> PersistSettings:
        """The persistence layer's view of these settings."""
        return PersistSettings(
            snapshot_log_bytes=self.snapshot_log_bytes,
            snapshot_log_records=self.snapshot_log_records,
            max_buffer_bytes=self.persist_buffer_bytes,
            max_record_bytes=self.max_log_record_bytes,
            writer_idle_timeout=self.persist_idle_timeout,
            flush_timeout=self.flush_timeout,
            io_retry_delay=self.io_retry_delay,
            close_timeout=self.close_timeout,
        )
