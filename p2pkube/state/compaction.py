"""Compaction: when to start a new document generation, and what it holds.

Yjs never forgets a deleted item, so under churn the document grows without bound.
Every `compact_check_interval` the compactor (see `is_compactor`) checks the encoded
size against the live size and, past the thresholds, starts a new *generation*: a
fresh document holding only the newest version of every key, minus tombstones older
than `tombstone_ttl`. Every state message names its generation; a peer that sees a
higher one fetches that document (peersync.py), carries every newer version it holds
over into it (`plan_switch`), and switches. The correctness argument is in
docs/state.md.

`ClusterState` does the switch itself (it owns the document and its subscribers);
this module decides and computes: `Compactor.due`/`confirmed` (the thresholds),
`Compactor.entries`/`build` (the new generation's content), `plan_switch` (what is
carried over and which keys change visibly).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .settings import StateSettings
from .store import LOAD, MAP_NAMES, StateStore, StoreFactory
from .versioned import HybridClock, Stamp, read_stamp

__all__ = ["Compactor", "IgnoreFuture", "SwitchPlan", "plan_switch", "store_from_entries"]

log = logging.getLogger("p2pkube.state.cluster")  # the name operators know these lines by

IgnoreFuture = Callable[[str, str, Stamp, str], None]
"""`cb(map_name, key, stamp, what)`: a stored version stamped beyond now + max_clock_skew
is left out (`what` says how); counted and logged by the state."""


def visible(blob: bytes | None) -> bytes | None:
    """`blob` if it holds a value, None for absent, tombstone or garbage."""
    header = read_stamp(blob)
    return blob if header is not None and not header[1] else None


def store_from_entries(
    factory: StoreFactory, entries: Iterable[tuple[str, str, bytes]], client_id: int | None
) -> StateStore:
    """A fresh document holding ``(map, key, blob)`` entries, written in one transaction
    before anyone listens (the base of a new generation: no history)."""
    fresh = factory(client_id)
    with fresh.transaction(LOAD):
        for map_name, key, blob in entries:
            fresh.put_raw(map_name, key, blob)
    return fresh


@dataclass(slots=True)
class SwitchPlan:
    """What a switch to a new document carries over, and what it changes visibly."""

    carries: list[tuple[str, str, bytes]] = field(default_factory=list)
    """Versions of the old document newer than the new one's, to re-put in it."""
    changed: dict[str, set[str]] = field(default_factory=dict)
    """Per map, the keys whose visible value differs between the documents."""


def plan_switch(
    old: StateStore,
    new: StateStore,
    hlc: HybridClock,
    ttl_ms: int,
    ignore_future: IgnoreFuture,
) -> SwitchPlan:
    """Compare the old document with the new generation's: every version of the old one
    newer than the one in `new` is carried over (keeping its stamp, so concurrent carries
    of one version agree), except expired tombstones the compactor dropped on purpose and
    versions stamped too far ahead. Our clock observes every stamp of `new`."""
    now_ms = hlc.wall_ms()
    plan = SwitchPlan()
    for map_name in sorted(MAP_NAMES):
        new_entries = dict(new.raw_items(map_name))
        new_stamps: dict[str, Stamp] = {}
        for key, blob in new_entries.items():
            header = read_stamp(blob)
            if header is not None:
                new_stamps[key] = header[0]
                hlc.observe(header[0].wall, header[0].counter)
        old_entries = dict(old.raw_items(map_name))
        for key, blob in old_entries.items():
            mine = read_stamp(blob)
            if mine is None:
                continue
            theirs = new_stamps.get(key)
            if theirs is not None and theirs >= mine[0]:
                continue
            if hlc.beyond_bound(mine[0].wall):
                ignore_future(map_name, key, mine[0], "not carrying it over")
                continue

            if key not in new_entries and mine[1] and now_ms - mine[0].wall > ttl_ms:
                continue  # an expired tombstone: the compactor dropped it on purpose
            plan.carries.append((map_name, key, blob))
            new_entries[key] = blob
        plan.changed[map_name] = {
            key
            for key in old_entries.keys() | new_entries.keys()
            if old_entries.get(key) != new_entries.get(key)
            and visible(old_entries.get(key)) != visible(new_entries.get(key))
        }
    return plan


class Compactor:
    """The compaction policy of one node's state: whether a check should build a new
    generation (`due`, then `confirmed` on the built one) and what it holds (`entries`).

    `is_compactor()` says whether this node may start a new generation right now (a
    failing callback counts as no); `ignore_future` hears of versions left out.
    """

    def __init__(
        self,
        settings: StateSettings,
        hlc: HybridClock,
        *,
        is_compactor: Callable[[], bool],
        ignore_future: IgnoreFuture,
    ) -> None:
        self.settings = settings
        self._hlc = hlc
        self._is_compactor = is_compactor
        self._ignore_future = ignore_future

    def ttl_ms(self) -> int:
        """`tombstone_ttl` in milliseconds (read each time: settings are mutable)."""
        return int(self.settings.tombstone_ttl * 1000)

    def horizon_ms(self) -> int:
        """Tombstones stamped before this (wall ms) are dropped by a compaction now."""
        return self._hlc.wall_ms() - self.ttl_ms()

    def entries(self, store: StateStore) -> list[tuple[str, str, bytes]]:
        """The newest version of every key, minus expired tombstones and garbage."""
        horizon = self.horizon_ms()
        out: list[tuple[str, str, bytes]] = []
        for map_name in sorted(MAP_NAMES):
            for key, blob in store.raw_items(map_name):
                header = read_stamp(blob)
                if header is None or (header[1] and header[0].wall < horizon):
                    continue
                if self._hlc.beyond_bound(header[0].wall):
                    self._ignore_future(map_name, key, header[0], "compacting it away")
                    continue
                out.append((map_name, key, blob))
        return out

    def build(self, store: StateStore, factory: StoreFactory, client_id: int) -> StateStore:
        """The document a compaction would start now (the caller closes or switches to it)."""
        return store_from_entries(factory, self.entries(store), client_id)

    def due(self, doc_size: int, live_estimate: Callable[[], int]) -> bool:
        """Whether a check should build a new generation: the document exceeds
        max(compact_min_bytes, compact_ratio x estimated live size) and this node is
        the compactor (asked last: the callback may cost more than the comparison)."""
        s = self.settings
        if doc_size <= s.compact_min_bytes:
            return False
        if doc_size <= s.compact_ratio * live_estimate():
            return False
        try:
            return self._is_compactor()
        except Exception:
            log.exception("is_compactor callback failed; not compacting")
            return False

    def confirmed(self, doc_size: int, base: StateStore) -> bool:
        """Whether the built generation is as small as estimated (the estimate can be
        off; the next check re-estimates)."""
        s = self.settings
        live = len(base.encode_state())
        return doc_size > max(s.compact_min_bytes, s.compact_ratio * live)

    async def loop(self, check: Callable[[], object], running: Callable[[], bool]) -> None:
        """Run `check` every `compact_check_interval`, jittered by +-50% so that nodes
        that are all eligible rarely compact at the same moment (until not `running`)."""
        while True:
            await asyncio.sleep(self.settings.compact_check_interval * random.uniform(0.5, 1.5))
            if not running():
                return
            try:
                check()
            except Exception:
                log.exception("state compaction check failed")
