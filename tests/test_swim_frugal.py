"""`p2pkube join --liveness frugal` between real agents: a probe every 0.5 s instead of 0.15 s,
checked as tests/test_swim_cluster.py checks the defaults, with the bounds derived from the
profile's own settings: the agents really probe at the profile's rate, and a ``kill -9`` is
NotReady everywhere within the bound. That the profile keeps issue 13's stall rule is
arithmetic (checked here) and was checked in the simulator (docs/settings.md, *Liveness
profiles*: no false DEAD for 2 s stalls of 10% of the members at N = 10 and 40, 60 runs
each); the defaults' SIGSTOP test (tests/test_swim_cluster.py) exercises the same code."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from p2pkube.devcluster import LocalCluster
from p2pkube.membership.settings import LIVENESS_PROFILES
from p2pkube.membership.swim_gossip import suspicion_bounds
from p2pkube.settings import AgentSettings
from tests.clusters import module_cluster, wait_all_ready
from tests.test_swim_cluster import (
    LOAD_MARGIN,
    NAMES,
    STALL,
    conditions,
    kill_and_see_it_dead,
    membership,
    others,
    running_and_settled,
)

FRUGAL = AgentSettings()
for _assignment in LIVENESS_PROFILES["frugal"]:
    FRUGAL.override(_assignment)
SWIM = FRUGAL.swim
FLOOR, CEILING = suspicion_bounds(SWIM, len(NAMES))
DETECTION_BOUND = SWIM.probe_interval + CEILING + LOAD_MARGIN
"""As tests/test_swim_cluster.py's, from the frugal timings."""


@pytest.fixture(scope="module")
def frugal_cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LocalCluster]:
    with module_cluster(tmp_path_factory.mktemp("frugal") / "cluster", request, 80) as local:
        local.extra_agent_args = ["--liveness", "frugal"]
        local.start_signaling()
        for name in NAMES:
            local.start_agent(name)
        wait_all_ready(local, NAMES, 60)
        yield local


@pytest.fixture
def cluster(frugal_cluster: LocalCluster) -> LocalCluster:
    return running_and_settled(frugal_cluster)


def test_the_profile_keeps_the_stall_rule_of_the_defaults() -> None:
    """The earliest a stalled node can be declared dead (a probe sent as the stall began,
    failed at the end of its period, then the suspicion floor) is the same as the defaults'."""
    default = AgentSettings().swim
    default_floor, _ = suspicion_bounds(default, len(NAMES))
    assert SWIM.probe_interval + FLOOR == pytest.approx(default.probe_interval + default_floor)
    assert SWIM.probe_interval + FLOOR > STALL


def test_frugal_agents_probe_at_their_rate(cluster: LocalCluster) -> None:
    before = {n: membership(cluster, n)["probes"] for n in NAMES}
    started = time.monotonic()
    time.sleep(2)
    elapsed = time.monotonic() - started
    rates = {n: (membership(cluster, n)["probes"] - before[n]) / elapsed for n in NAMES}
    print(f"probes per second: {rates} (defaults: {1 / AgentSettings().swim.probe_interval:.1f})")
    # One probe per period at most (Lifeguard only ever slows it down), and not far below.
    assert all(0.6 / SWIM.probe_interval <= r <= 1.1 / SWIM.probe_interval for r in rates.values())


def test_kill9_is_dead_everywhere_within_the_bound(cluster: LocalCluster) -> None:
    for viewer in others("n2"):
        assert conditions(cluster, viewer)["n2"] == ("True", "AgentReady")
    kill_and_see_it_dead(cluster, "n2", DETECTION_BOUND)
