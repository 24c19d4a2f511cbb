"""The mesh as the dashboard draws it, and the small report each node gives about itself.

**Nodes and links.** Every member's signed membership record carries its neighbour list, so
any node knows the whole graph (``SwimMembership.nodes()``). A link is drawn when both of its
ends list each other (this node's own links come from its mesh): a record that is a little
stale on one side (a link just closed, a member just dead) does not draw a link that no
longer exists, and a link is one edge however many records name it.

**Round trips.** SWIM probes every neighbour over the link itself and times the ack
(``SwimMembership.link_rtts``): each node knows its own links' RTT at no extra cost. For the
links between two other nodes this node asks those nodes: the ``dashboard.report`` rpc answers
a node's link RTTs and its per-Service request counters. Reports are asked only while a
dashboard polls (nothing runs otherwise), at most every ``dashboard.report_interval`` per
node, from at most ``dashboard.max_reports`` nodes, each call bounded by
``dashboard.report_timeout``; one refresh runs at a time and concurrent polls share it. A link
shows the mean of what its two ends measured (``rttMsBy`` has each).

**Request rates.** Each node's router counts the requests it took per Service
(``ServiceRouter.stats.per_service``); a poll sums the reports, and the page turns the
totals into rates between two polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from p2pkube.dashboard.settings import DashboardSettings
from p2pkube.membership.swim_host import SwimMembership
from p2pkube.net.rpc import Rpc, RpcError

log = logging.getLogger(__name__)

__all__ = ["METHOD", "MeshView"]

METHOD = "dashboard.report"
"""The rpc a node answers with its own report (see the module docstring)."""


class MeshView:
    """Builds the dashboard's poll answer on one node (native agent or tab)."""

    def __init__(
        self,
        node_id: str,
        node_name: str,
        *,
        membership: SwimMembership,
        neighbours: Callable[[], list[str]],
        rpc: Rpc,
        settings: DashboardSettings,
        kind_of: Callable[[str], str | None],
        leases: Callable[[], list[dict[str, Any]]],
        service_requests: Callable[[], dict[str, int]],
    ) -> None:
        """``kind_of(name)``: a node's kind from its Node object (native, browser; None if
        unknown); ``leases()``: the workloads' leases (``Scheduler.leases``);
        ``service_requests()``: this node's per-Service request counters."""
        self.node_id = node_id
        self.node_name = node_name
        self.membership = membership
        self.settings = settings
        self._neighbours = neighbours
        self._rpc = rpc
        self._kind_of = kind_of
        self._leases = leases
        self._service_requests = service_requests
        self._reports: dict[str, tuple[float, dict[str, Any]]] = {}
        """Node id -> (when it answered, monotonic; its report), for Ready nodes only."""
        self._refreshed = float("-inf")
        self._refresh: asyncio.Task[None] | None = None
        rpc.register(METHOD, self._serve)

    # -- this node's report ----------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """This node's links' round trips (ms, by neighbour id) and its request counters."""
        return {
            "rtt": {
                peer: round(seconds * 1000, 3)
                for peer, seconds in sorted(self.membership.link_rtts().items())
            },
            "requests": dict(self._service_requests()),
        }

    async def _serve(self, source: str, body: Any) -> dict[str, Any]:
        return self.report()

    # -- the poll answer -------------------------------------------------------------------------
    async def snapshot(self) -> dict[str, Any]:
        """Members, links with RTT, leases and request totals (refreshing the other nodes'
        reports first when they are older than ``report_interval``, waiting at most
        ``report_timeout`` for them)."""
        members = self.membership.nodes()
        ready = sorted(m.node for m in members if m.ready and m.node != self.node_id)
        if time.monotonic() - self._refreshed >= self.settings.report_interval and (
            self._refresh is None or self._refresh.done()
        ):
            self._refreshed = time.monotonic()
            self._refresh = asyncio.get_running_loop().create_task(
                self._ask(ready[: self.settings.max_reports])
            )
        if self._refresh is not None and not self._refresh.done():
            await asyncio.wait({self._refresh}, timeout=self.settings.report_timeout)
        own = self.report()
        reports = {
            node: report for node, (_, report) in self._reports.items() if node in set(ready)
        }
        reports[self.node_id] = own
        nodes = [
            {
                "id": self.node_id,
                "name": self.node_name,
                "kind": self._kind_of(self.node_name),
                "ready": True,
                "reason": "AgentReady",
                "self": True,
            }
        ]
        links: dict[str, set[str]] = {self.node_id: set(self._neighbours())}
        for member in members:
            if member.node == self.node_id:
                continue
            nodes.append(
                {
                    "id": member.node,
                    "name": member.name,
                    "kind": self._kind_of(member.name),
                    "ready": member.ready,
                    "reason": member.reason,
                    "self": False,
                }
            )
            links[member.node] = set(member.peers) if member.ready else set()
        requests: Counter[str] = Counter()
        for report in reports.values():
            requests.update(_counts(report.get("requests")))
        return {
            "node": self.node_name,
            "nodeID": self.node_id,
            "pollSeconds": self.settings.poll_interval,
            "nodes": sorted(nodes, key=lambda n: str(n["name"])),
            "edges": _edges(links, reports),
            "leases": self._leases(),
            "serviceRequests": dict(sorted(requests.items())),
            "reports": {
                "asked": len(ready[: self.settings.max_reports]),
                "answered": len(reports) - 1,
            },
        }

    async def _ask(self, nodes: list[str]) -> None:
        """Ask ``nodes`` for their reports at once; a node that fails has none until it
        answers again (an old RTT is not shown as current)."""

        async def one(node: str) -> None:
            try:
                report = await self._rpc.call(
                    node, METHOD, None, timeout=self.settings.report_timeout
                )
            except RpcError as exc:
                log.debug("no dashboard report from %s: %s", node, exc)
                self._reports.pop(node, None)
                return
            if isinstance(report, dict):
                self._reports[node] = (time.monotonic(), report)

        await asyncio.gather(*(one(node) for node in nodes))
        asked = set(nodes)
        for node in [n for n in self._reports if n not in asked]:
            del self._reports[node]

    async def close(self) -> None:
        """Cancel a refresh still running."""
        task, self._refresh = self._refresh, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _counts(value: Any) -> dict[str, int]:
    """A report's request counters, what of them is well formed (another node wrote them)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


def _rtt(report: dict[str, Any] | None, peer: str) -> float | None:
    table = report.get("rtt") if report else None
    value = table.get(peer) if isinstance(table, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _edges(links: dict[str, set[str]], reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One edge per link both ends list, with the round trip each end measured."""
    edges = []
    for a in sorted(links):
        for b in sorted(links[a]):
            if not a < b or a not in links.get(b, ()):
                continue
            by = {
                end: rtt
                for end, rtt in ((a, _rtt(reports.get(a), b)), (b, _rtt(reports.get(b), a)))
                if rtt is not None
            }
            mean = round(sum(by.values()) / len(by), 3) if by else None
            edges.append({"source": a, "target": b, "rttMs": mean, "rttMsBy": by})
    return edges
