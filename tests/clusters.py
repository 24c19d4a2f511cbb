"""Shared set-ups of multi-process test clusters (real signaling server, real agents)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from harness.links import ONE_LINK, neighbours
from p2pkube.devcluster import LocalCluster, wait_until


def all_ready(cluster: LocalCluster, viewer: str, names: Sequence[str]) -> bool:
    nodes = cluster.nodes(viewer)
    return sorted(nodes) == sorted(names) and all(v == "True" for v in nodes.values())


def wait_all_ready(cluster: LocalCluster, names: Sequence[str], seconds: float = 30) -> None:
    """Every agent in ``names`` answers its API and lists all of them Ready."""
    for name in names:
        cluster.wait_api(name)
    for name in names:
        wait_until(lambda n=name: all_ready(cluster, n, names), seconds, what=f"{name} view")


@contextlib.contextmanager
def module_cluster(
    root: Path, request: pytest.FixtureRequest, log_lines: int = 60
) -> Iterator[LocalCluster]:
    """A LocalCluster shared by a module's tests: always closed, and the tail of every log
    printed when a test failed meanwhile (or the set-up itself did)."""
    cluster = LocalCluster(root)
    failed_before, finished = request.session.testsfailed, False
    try:
        yield cluster
        finished = True
    finally:
        cluster.close()
        if not finished or request.session.testsfailed > failed_before:
            for name in ["signaling", *cluster.agents]:
                print(f"--- {name} log ---\n{cluster.log_tail(name, log_lines)}")


@contextlib.contextmanager
def chain_cluster(
    root: Path, request: pytest.FixtureRequest, extra_agent_args: Sequence[str] = ()
) -> Iterator[LocalCluster]:
    """The chain ``a - b - c``: a and c keep one link each, to b, so everything between a
    and c is relayed by b. Agent logs are printed if a test using it failed."""
    with module_cluster(root / "cluster", request, log_lines=80) as cluster:
        cluster.start_signaling()
        cluster.extra_agent_args = list(extra_agent_args)
        cluster.start_agent("b")
        cluster.wait_api("b")
        cluster.start_agent("a", *ONE_LINK)
        cluster.wait_api("a")
        wait_until(lambda: neighbours(cluster, "a") == {"b"}, 20, what="a to link b")
        cluster.start_agent("c", *ONE_LINK)
        cluster.wait_api("c")
        wait_until(lambda: neighbours(cluster, "c") == {"b"}, 30, what="c to link b")
        wait_all_ready(cluster, "abc", 20)
        yield cluster
