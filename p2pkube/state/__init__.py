"""Cluster state shared by all peers as one Yjs document.

Split by concern: `store` (the narrow document interface + pycrdt backend),
`versioned` (timestamped values, tombstones, the hybrid clock), `sync`
(y-protocols wire messages + generation envelope), `persist` (snapshot + update
log on disk), `admission` and `yupdate` (what a peer's update may write: bounded
stamps and sizes, a byte budget per link) and `cluster` (`ClusterState`, the
service tying them together, including last-writer-wins repair and generation
compaction). See
docs/state.md for the design and its correctness arguments.
"""

from .cluster import ClusterState, StateSettings, StateStats, ValueTooLarge, WriteBatch
from .persist import PersistenceError, PersistSettings
from .store import (
    EVENTS,
    LEASES,
    LOAD,
    LOCAL,
    MAP_NAMES,
    OBJECTS,
    REPAIR,
    STATUS,
    SWITCH,
    StateStore,
    StoreFactory,
    UnknownMapError,
    object_key,
)
from .sync import GENESIS, Generation, SyncMessageKind, SyncProtocolError
from .versioned import HybridClock, Stamp, Version

__all__ = [
    "EVENTS",
    "GENESIS",
    "LEASES",
    "LOAD",
    "LOCAL",
    "MAP_NAMES",
    "OBJECTS",
    "REPAIR",
    "STATUS",
    "SWITCH",
    "ClusterState",
    "Generation",
    "HybridClock",
    "PersistSettings",
    "PersistenceError",
    "PycrdtStore",
    "Stamp",
    "StateSettings",
    "StateStats",
    "StateStore",
    "StoreFactory",
    "SyncMessageKind",
    "SyncProtocolError",
    "UnknownMapError",
    "ValueTooLarge",
    "Version",
    "WriteBatch",
    "object_key",
]


def __getattr__(name: str) -> object:
    """``PycrdtStore`` on first use only: importing pycrdt is for native nodes (the browser
    node has no pycrdt and brings its own StateStore)."""
    if name == "PycrdtStore":
        from .pycrdt_store import PycrdtStore

        return PycrdtStore
    raise AttributeError(name)
