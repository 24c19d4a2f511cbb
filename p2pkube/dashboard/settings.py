"""The dashboard's timings and limits, each a named setting with its default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DashboardSettings:
    poll_interval: float = 3.0
    """Seconds between two polls of the page for the mesh, the leases and the request
    counters (``GET /v1/dashboard``; objects come from watches, not from polls). The page
    reads it from each answer."""
    report_interval: float = 5.0
    """Seconds another node's report (its links' round trips, its Services' request
    counters) is reused before that node is asked again over the mesh: at most one small
    rpc per node per interval, and none while no dashboard is open."""
    report_timeout: float = 2.0
    """Seconds a poll waits for the other nodes' reports; a node that has not answered by
    then is shown without its links' round trips and request counters (its rpc may still
    answer for the next poll, within ``rpc`` call timeouts)."""
    max_reports: int = 64
    """Most other nodes asked for a report per interval (the Ready ones, by id): a poll's
    cost stays bounded on a large cluster; links between two unasked nodes have no RTT."""

    def check(self) -> None:
        """ValueError naming the setting when one is out of range."""
        for name in ("poll_interval", "report_interval", "report_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"dashboard.{name} must be above 0")
        if self.max_reports < 0:
            raise ValueError("dashboard.max_reports must not be negative")
