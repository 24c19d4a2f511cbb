"""Cluster state shared by all peers as one Yjs document.

Split by concern: `store` (the narrow document interface; `pycrdt_store` is the native
backend, which the native agent injects: nothing here imports it), `versioned`
(timestamped values, tombstones, the hybrid clock), `sync` (y-protocols wire messages +
generation envelope), `persist` (snapshot + update log on disk), `admission` and
`yupdate` (what a peer's update may write: bounded stamps and sizes, a byte budget per
link), `sizes` (size limits and accounting, the counters), `peersync` (sync sessions
with the attached peers and anti-entropy), `compaction` (generations) and `cluster`
(`ClusterState`, the key-value service tying them together, including last-writer-wins
repair), `settings` (the dataclasses). See docs/state.md for the design and its
correctness arguments.

The names below are loaded on first use (PEP 562), so that importing
`p2pkube.state.settings` (as `p2pkube.settings` does) loads no store code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .settings import PersistSettings, StateSettings

if TYPE_CHECKING:  # the same names as _LAZY, for type checkers and import-linter
    from .cluster import ClusterState, WriteBatch
    from .persist import PersistenceError
    from .sizes import StateStats, ValueTooLarge
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

_LAZY: dict[str, str] = {
    **dict.fromkeys(["ClusterState", "WriteBatch"], ".cluster"),
    **dict.fromkeys(["PersistenceError"], ".persist"),
    **dict.fromkeys(["StateStats", "ValueTooLarge"], ".sizes"),
    **dict.fromkeys(
        [
            "EVENTS",
            "LEASES",
            "LOAD",
            "LOCAL",
            "MAP_NAMES",
            "OBJECTS",
            "REPAIR",
            "STATUS",
            "SWITCH",
            "StateStore",
            "StoreFactory",
            "UnknownMapError",
            "object_key",
        ],
        ".store",
    ),
    **dict.fromkeys(["GENESIS", "Generation", "SyncMessageKind", "SyncProtocolError"], ".sync"),
    **dict.fromkeys(["HybridClock", "Stamp", "Version"], ".versioned"),
}
"""Exported name -> the submodule defining it."""

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
    """Import the submodule defining `name` on first use, then keep the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
