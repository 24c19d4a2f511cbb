"""Who links to whom in a loopback cluster (p2pkube.devcluster.LocalCluster): the flags of a
node that keeps exactly one link, and a node's neighbours as its status reports them. The chain
``a - b - c`` of the blob and pod tests (tests/clusters.py) and of the relayed blob pull
(bench/bench_blobs.py) is built with them."""

from __future__ import annotations

from p2pkube.devcluster import LocalCluster

ONE_LINK = (
    "--set",
    "transport.max_peers=1",
    "--set",
    "transport.max_peers_jitter=0",
    "--set",
    "transport.inbound_slack=0",
)
"""Agent flags for a node that keeps exactly one link (and refuses any other)."""


def neighbours(cluster: LocalCluster, name: str) -> set[str]:
    """The nodes ``name`` has a link to, from its ``/v1/status``."""
    status = cluster.api(name, "GET", "/v1/status")
    return {n["name"] for n in status["mesh"]["neighbours"]}
