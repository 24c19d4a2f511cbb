"""The routing table from neighbour lists: link-state routing over SWIM records (issue 13).

Every member's signed ALIVE record carries its neighbour list as short ids (`short_id`), so each
node knows, for every live member, whom it claims to be linked to. `Topology` turns those claims
into next hops: one BFS from this node, redone lazily on the first query after a change, with
the next hop of every destination cached (a query is O(1) in steady state, a change one
O(N + E) pass). It gives membership's ``route_hint`` (the next hop toward a node; the
heartbeat flood it replaced used the neighbour a node's freshest heartbeat came through) and
feeds ``relay_exclude`` (``neighbours_of``).

Which links count, so that a member cannot attract traffic by lying:

* Between two other members, a link A-B exists only when A's record lists B **and** B's record
  lists A. A one-sided claim (a hostile node, or a record that lags a new link) is ignored.
* This node's own links are the mesh's (``set_own_links``, full ids): authoritative both ways.
  A link of ours counts even while the other end's record does not list us yet (its record
  lags; the data channel is up), and a member that lists us without being one of our links
  gets no edge.
* A short id that two known members share (2^-64 per pair by chance; a targeted one costs
  about 2^64 key generations) is ambiguous: claims of it count for neither (``ambiguous``).

Ties between equal-cost first hops are broken by a hash of (destination, hop), rendezvous
style: deterministic (every node, and every rebuild, picks the same), yet spread, so traffic
to far nodes does not funnel through the one neighbour with the smallest id. With all nodes
sharing one view, each hop is one step closer to the destination, so following `next_hop`
from any node reaches it in `hops` steps.

Bounds: at most ``max_nodes`` members with a claim (a new one beyond is refused) and
``max_links_per_node`` distinct well-formed short ids per claim, reading at most four times
that many entries (the rest is not even read):
a hostile record costs bounded memory and BFS time, and each case is counted in `stats`.

Pure standard library, no asyncio: it runs in Pyodide as well.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["SHORT_ID_BYTES", "Topology", "short_id"]

SHORT_ID_BYTES = 8
"""Length of a short id: 64 bits keep a 4,096-member list at 32 KiB and chance collisions
at about 2^-41 for the whole cluster."""

_M64 = (1 << 64) - 1

_READ_FACTOR = 4
"""A claim is read up to this many times ``max_links_per_node`` entries, duplicates and
malformed ones included, so that no list, however long, costs more than that."""


def short_id(node_id: str) -> bytes:
    """The first 8 bytes of sha256(node_id): how records name neighbours compactly."""
    return hashlib.sha256(node_id.encode()).digest()[:SHORT_ID_BYTES]


def _mix(x: int) -> int:
    """splitmix64's finalizer: a cheap, well-spread 64-bit hash (tie breaking, not security)."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class Topology:
    """This node's view of the mesh graph: each live member's claimed neighbours."""

    def __init__(self, me: str, *, max_nodes: int = 4096, max_links_per_node: int = 64) -> None:
        if max_nodes < 1 or max_links_per_node < 1:
            raise ValueError("max_nodes and max_links_per_node must be at least 1")
        self.me = me
        self.max_nodes = max_nodes
        self.max_links_per_node = max_links_per_node
        self._claims: dict[str, frozenset[bytes]] = {}
        self._own: frozenset[str] = frozenset()
        self._short: dict[str, bytes] = {me: short_id(me)}  # every known node, me included
        self._dirty = True
        self._adj: dict[str, set[str]] = {}
        self._dist: dict[str, int] = {}
        self._next: dict[str, str] = {}
        self._counts = dict.fromkeys(
            ("recomputations", "truncated_records", "malformed_claims", "refused_nodes"), 0
        )
        self._derived = {"pending_claims": 0, "ambiguous": 0}

    # -- changes -------------------------------------------------------------------------------
    def set_links(self, node: str, short_peers: Iterable[bytes]) -> None:
        """``node``'s neighbours as its latest record claims them (replaces the previous claim).

        Our own record is ignored: `set_own_links` is the authority on our links. Entries that
        are not 8-byte ids are dropped and counted; reading stops after ``max_links_per_node``
        distinct ones, or four times as many entries (counted as a truncated record), however
        long the list.
        """
        if node == self.me:
            return
        if node not in self._claims and len(self._claims) >= self.max_nodes:
            self._counts["refused_nodes"] += 1
            return
        claim = self._clean(node, short_peers)
        if self._claims.get(node) == claim:
            return  # a refreshed record with the same neighbours: routes stand
        self._claims[node] = claim
        self._short.setdefault(node, short_id(node))
        self._dirty = True

    def _clean(self, node: str, short_peers: Iterable[bytes]) -> frozenset[bytes]:
        own = self._short.get(node) or short_id(node)
        kept: set[bytes] = set()
        for read, peer in enumerate(short_peers):
            if read == _READ_FACTOR * self.max_links_per_node:
                self._counts["truncated_records"] += 1  # mostly junk or duplicates: enough
                break
            if not isinstance(peer, bytes) or len(peer) != SHORT_ID_BYTES:
                self._counts["malformed_claims"] += 1
            elif peer != own and peer not in kept:
                if len(kept) == self.max_links_per_node:
                    self._counts["truncated_records"] += 1
                    break
                kept.add(peer)
        return frozenset(kept)

    def set_own_links(self, neighbours: Iterable[str]) -> None:
        """This node's actual neighbours, full ids, from the mesh (authoritative, and bounded by
        the mesh's own link limit, so not truncated here)."""
        own = frozenset(n for n in neighbours if n != self.me)
        if own == self._own:
            return
        for gone in self._own - own:
            if gone not in self._claims:
                self._short.pop(gone, None)
        for node in own:
            self._short.setdefault(node, short_id(node))
        self._own = own
        self._dirty = True

    def remove(self, node: str) -> None:
        """A member DEAD, LEFT or forgotten: its claim goes, so no route passes through it.

        If the mesh still has a link to it, that one edge stays until `set_own_links` drops it
        (the data channel is up, so a message *to* it still goes straight there); a new record
        (`set_links`) brings its claim back.
        """
        if node == self.me or self._claims.pop(node, None) is None:
            return
        if node not in self._own:
            self._short.pop(node, None)
        self._dirty = True

    # -- queries -------------------------------------------------------------------------------
    def next_hop(self, dst: str) -> str | None:
        """A neighbour of this node on a shortest path to ``dst`` (``dst`` itself when linked);
        None when no path is known, or ``dst`` is this node."""
        self._ensure()
        return self._next.get(dst)

    def neighbours_of(self, node: str) -> set[str]:
        """Full ids of ``node``'s confirmed peers (both ends claim the link; ours: the mesh's)."""
        self._ensure()
        return set(self._adj.get(node, ()))

    def reachable(self, dst: str) -> bool:
        self._ensure()
        return dst in self._dist

    def hops(self, dst: str) -> int | None:
        """Links on a shortest path to ``dst`` (0: this node; None: unreachable)."""
        self._ensure()
        return self._dist.get(dst)

    def stats(self) -> dict[str, int]:
        """Known nodes, confirmed edges, reachable destinations, BFS runs, and what was dropped:
        claims of unknown nodes still pending, ambiguous short ids, truncated records, malformed
        entries, members refused at ``max_nodes``."""
        self._ensure()
        return {
            "nodes": len(self._adj),
            "members": len(self._claims),
            "edges": sum(len(peers) for peers in self._adj.values()) // 2,
            "reachable": len(self._dist) - 1,
            **self._derived,
            **self._counts,
        }

    # -- the computation -------------------------------------------------------------------------
    def _ensure(self) -> None:
        if self._dirty:
            self._adj = self._edges()
            self._route()
            self._counts["recomputations"] += 1
            self._dirty = False

    def _owners(self) -> dict[bytes, str]:
        """Short id to full id over the known nodes; ambiguous short ids are left out."""
        owner: dict[bytes, str] = {}
        ambiguous: set[bytes] = set()
        for node, short in self._short.items():
            if short in owner:
                ambiguous.add(short)
            owner[short] = node
        for short in ambiguous:
            del owner[short]
        self._derived["ambiguous"] = len(ambiguous)
        return owner

    def _edges(self) -> dict[str, set[str]]:
        """The confirmed undirected edges: mutual claims, and our own links."""
        owner = self._owners()
        adj: dict[str, set[str]] = {node: set() for node in self._short}
        pending = 0
        for a, claim in self._claims.items():
            mine = self._short[a]
            if owner.get(mine) != a:
                continue  # a's short id is ambiguous: claims of it mean no one
            for short in claim:
                b = owner.get(short)
                if b is None:
                    pending += 1
                elif b != self.me and mine in self._claims.get(b, ()):
                    adj[a].add(b)
        for node in self._own:
            adj[self.me].add(node)
            adj[node].add(self.me)
        self._derived["pending_claims"] = pending
        return adj

    def _route(self) -> None:
        """One BFS from this node. Each node's mask holds every first hop (one bit per own
        neighbour) of its shortest paths; the next hop is the one of those the rendezvous hash
        of (destination, hop) ranks highest."""
        first = sorted(self._adj[self.me])
        dist = {self.me: 0}
        masks: dict[str, int] = {}
        for i, node in enumerate(first):
            dist[node] = 1
            masks[node] = 1 << i
        frontier = first
        while frontier:
            reached: list[str] = []
            for u in frontier:
                step, mask = dist[u] + 1, masks[u]
                for v in self._adj[u]:
                    known = dist.get(v)
                    if known is None:
                        dist[v] = step
                        masks[v] = mask
                        reached.append(v)
                    elif known == step:
                        masks[v] |= mask
            frontier = reached
        weights = [_mix(int.from_bytes(self._short[hop], "big")) for hop in first]
        self._dist = dist
        self._next = {dst: first[self._pick(dst, mask, weights)] for dst, mask in masks.items()}

    def _pick(self, dst: str, mask: int, weights: list[int]) -> int:
        """The index of the first hop for ``dst`` among the bits of ``mask``."""
        if mask & (mask - 1) == 0:
            return mask.bit_length() - 1
        key = int.from_bytes(self._short[dst], "big")
        best, best_score = -1, -1
        while mask:
            low = mask & -mask
            i = low.bit_length() - 1
            score = _mix(key ^ weights[i])
            if score > best_score:
                best, best_score = i, score
            mask ^= low
        return best
