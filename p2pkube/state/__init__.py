"""Cluster state shared by all peers as one Yjs document.

Split by concern: `store` (the narrow document interface + pycrdt backend),
`sync` (y-protocols wire messages), `persist` (snapshot + update log on disk)
and `cluster` (`ClusterState`, the service tying them together). See
docs/state.md for the design and its correctness arguments.
"""

from .cluster import ClusterState, StateSettings, StateStats, WriteBatch
from .persist import PersistenceError, PersistSettings
from .store import (
    EVENTS,
    LEASES,
    LOAD,
    LOCAL,
    MAP_NAMES,
    OBJECTS,
    STATUS,
    PycrdtStore,
    StateStore,
    UnknownMapError,
    object_key,
)
from .sync import SyncMessageKind, SyncProtocolError

__all__ = [
    "EVENTS",
    "LEASES",
    "LOAD",
    "LOCAL",
    "MAP_NAMES",
    "OBJECTS",
    "STATUS",
    "ClusterState",
    "PersistSettings",
    "PersistenceError",
    "PycrdtStore",
    "StateSettings",
    "StateStats",
    "StateStore",
    "SyncMessageKind",
    "SyncProtocolError",
    "UnknownMapError",
    "WriteBatch",
    "object_key",
]
