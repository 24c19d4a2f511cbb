"""What to collect: blobs no object refers to, once they stayed unreferenced for the grace.

Each node decides for its own copies (complete or partial) and removes them; the Blob object
(the manifest in the replicated state) is deleted by one node only, the one the agent names
(``Agent._is_compactor``: the Ready node with the smallest id), so N nodes do not write N
tombstones for it. The decision is pure bookkeeping over sets, with an injectable clock, so it
is tested without a cluster; ``BlobService`` applies it.

"Unreferenced for the grace" is measured on this node's monotonic clock from the first sweep
that found the blob unreferenced (or the last local publish or pull of it, see :meth:`touch`):
a restarted agent starts counting again, which only ever delays a collection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field


@dataclass
class GcDecision:
    remove_local: list[str] = field(default_factory=list)
    """Digests whose local copies (complete or partial) this node removes now."""
    delete_manifests: list[str] = field(default_factory=list)
    """Digests whose Blob objects this node deletes from the state now."""


class BlobCollector:
    """Remembers since when each known blob is unreferenced and says what is due."""

    def __init__(self, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self._clock = clock
        self._unreferenced_since: dict[str, float] = {}
        self.collected = 0
        """Local copies removed so far."""
        self.manifests_deleted = 0

    def touch(self, digest: str) -> None:
        """A user just published or pulled ``digest`` here: its grace starts again."""
        self._unreferenced_since[digest] = self._clock()

    def decide(
        self,
        *,
        local: Collection[str],
        manifests: Collection[str],
        referenced: Collection[str],
        busy: Collection[str] = (),
        collector: bool = False,
    ) -> GcDecision:
        """``local``: digests held here (complete or partial); ``manifests``: Blob objects in
        the state; ``referenced``: digests some object's spec names; ``busy``: being fetched
        right now; ``collector``: whether this node deletes manifests."""
        now = self._clock()
        decision = GcDecision()
        known = set(local) | set(manifests)
        for digest in list(self._unreferenced_since):
            if digest not in known:
                del self._unreferenced_since[digest]  # gone: forget it
        for digest in sorted(known):
            if digest in referenced or digest in busy:
                self._unreferenced_since.pop(digest, None)
                continue
            since = self._unreferenced_since.setdefault(digest, now)
            if now - since < self.grace:
                continue
            if digest in local:
                decision.remove_local.append(digest)
            if collector and digest in manifests:
                decision.delete_manifests.append(digest)
        return decision
