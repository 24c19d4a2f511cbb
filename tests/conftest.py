"""Shared fixtures: a local cluster of real processes that is always torn down."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from harness.zygote import Zygote
from p2pkube.devcluster import LocalCluster
from p2pkube.runtime.native import NativeRuntime
from p2pkube.runtime.settings import RuntimeSettings
from tests.statenet import Mesh

SLOW_MODULES = frozenset(
    {
        # headless Chromium
        "test_browser_bridge",
        "test_browser_insecure",
        "test_browser_node",
        "test_browser_services",
        # network namespaces, the chaos schedule, the compose topology, the whole demo
        "test_chaos",
        "test_compose",
        "test_demo",
        "test_netns",
        "test_turn",
        # clusters of real agent processes
        "test_blobs_cluster",
        "test_blobs_quota_cluster",
        "test_cli_workloads_cluster",
        "test_cluster",
        "test_hostile_peer",
        "test_hostpaths_cluster",
        "test_mesh_relay",
        "test_oci_cluster",
        "test_pods_cluster",
        "test_signaling_trust",
        "test_state_trust_cluster",
        "test_workloads_cluster",
    }
)
"""Test modules that start agent processes, Chromium or network namespaces: marked ``slow``
(as is any other test that takes the ``cluster`` fixture below), so ``make test-fast``
(``-m "not slow"``) leaves them out while ``make test`` runs everything."""


SERIAL_MODULES = frozenset(
    {
        # network namespaces whose assertions time SWIM or convergence under loss
        "test_chaos",
        "test_netns",
        # time detection, failover and refutation against SWIM's bounds (test_cluster and
        # test_workloads_cluster mark only their tests that do)
        "test_eviction_cluster",
        "test_service_routing_cluster",
        "test_swim_cluster",
        "test_swim_frugal",
        # the demo's load loop counts failed GETs across a kill -9
        "test_demo",
    }
)
"""Test modules that ``make test`` runs one at a time, after the rest, with the machine to
themselves: their assertions time liveness, failover or a stall against the protocol's
bounds (which assume the agents get the CPU they ask for), or they need the one network lab.
Single tests elsewhere that do the same carry ``@pytest.mark.serial``. The rest of the suite
runs over two processes (pytest-xdist), each module's tests on one of them (its module-scoped
cluster is started once), and the modules that open NodePorts on 127.0.0.x on one process."""

NETLAB_MODULES = frozenset({"test_compose", "test_turn"})
"""Modules whose network lab (harness/netlab.py: fixed namespace names and subnets) times
nothing against a protocol bound: they run with the rest, on one process, one lab at a time
(the serial netlab modules run after them, so two labs never exist at once)."""

NODEPORT_MODULES = frozenset(
    {
        "test_browser_services",
        "test_cli_workloads_cluster",
        "test_nodeport_cluster",
        "test_services_cluster",
    }
)
"""Slow modules whose agents listen on NodePorts: every LocalCluster gives its first agents
127.0.0.2, 127.0.0.3..., so two of them at once could ask for the same address and port."""


SHARED_GROUPS = {
    **dict.fromkeys(NODEPORT_MODULES, "nodeports"),
    **dict.fromkeys(NETLAB_MODULES, "netlab"),
}
"""The xdist group of modules that must not run at the same time (any other slow module is a
group of its own, so its module-scoped fixtures are set up once)."""


FRESH_INTERPRETERS_ENV = "P2PKUBE_TEST_FRESH_INTERPRETERS"
"""Set to 1 to start every LocalCluster process as a new interpreter, as users do, instead
of forking it from the zygote (harness/zygote.py), which saves the imports' CPU."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: left out by make test-fast (see SLOW_MODULES)")
    config.addinivalue_line(
        "markers", "serial: run by make test alone, after the rest (see SERIAL_MODULES)"
    )
    if os.environ.get(FRESH_INTERPRETERS_ENV) != "1":
        LocalCluster.starter = Zygote()  # started on first use: test-fast never pays for it


def pytest_unconfigure(config: pytest.Config) -> None:
    starter, LocalCluster.starter = LocalCluster.starter, None
    if isinstance(starter, Zygote):
        starter.close()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads xdist_group right away
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module is not None else ""
        if module in SLOW_MODULES or "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        if module in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
        if item.get_closest_marker("slow") and not item.get_closest_marker("serial"):
            item.add_marker(pytest.mark.xdist_group(SHARED_GROUPS.get(module, module)))


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A LocalCluster under tmp_path; on failure, the tail of every log is printed."""
    local = LocalCluster(tmp_path / "cluster")
    try:
        yield local
    finally:
        local.close()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for name in ["signaling", *local.agents]:
                print(f"--- {name} log ---\n{local.log_tail(name, 60)}")


REQUEST_PROCESSES = os.environ.get("P2PKUBE_TEST_REQUEST_PROCESSES", "")
"""``runtime.request_processes`` of the ``runtime`` fixture when set (else the default): run
the runtime and handler tests with handler requests on the agent's threads (0) or in that
many worker processes (``runtime/procs.py``)."""


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[NativeRuntime]:
    """A wasmtime pod runtime with its data dir under tmp_path, closed afterwards."""
    settings = RuntimeSettings()
    if REQUEST_PROCESSES:
        settings.request_processes = int(REQUEST_PROCESSES)
    native = NativeRuntime(tmp_path / "data", settings)
    await native.start_request_processes()  # else the first request runs on a thread
    try:
        yield native
    finally:
        await native.close()


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    """An in-process network of ClusterStates (the state tests), closed afterwards."""
    network = Mesh()
    yield network
    await network.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
