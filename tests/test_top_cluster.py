"""``p2pkube top`` and ``kubectl top`` on real agents (separate processes, real aiortc, pycrdt,
wasmtime): usage measured where the pods run, read from another node through the mesh.

The chain ``a - b - c`` (a and c linked to b only, so c's figures reach a relayed by b). On c
run a busy pod (primes counting forever, throttled to 300m) and an idle one (a ticker that
sleeps between lines); every reading is taken on a. The figures are checked against what the
pods do, so constants or declared values would fail: the busy pod uses far more CPU than the
idle one and not more than its limit allows, and node c, which runs it, uses more CPU than
node a, which runs nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pkube.cli.topkinds import cpu_millicores, memory_bytes
from p2pkube.devcluster import LocalCluster, wait_until
from tests.clusters import chain_cluster
from tests.kubectl import Kubectl, requires_kubectl
from tests.test_pods_cluster import pod, write_manifest

REPO = Path(__file__).resolve().parent.parent
INTERVAL = ["--set", "kubelet.usage_interval=1"]
BUSY_LIMIT = 300
"""The busy pod's CPU limit, in millicores."""


@pytest.fixture(scope="module")
def chain(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LocalCluster]:
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    root = tmp_path_factory.mktemp("top")
    with chain_cluster(root, request, INTERVAL) as cluster:
        busy = pod(
            "busy",
            "primes",
            "c",
            "2000000",
            "0",
            container={"resources": {"limits": {"cpu": f"{BUSY_LIMIT}m"}}},
        )
        idle = pod("idle", "ticker", "c", "5")
        manifest = write_manifest(root, busy, idle)
        cluster.cli("a", "apply", "-f", str(manifest))
        wait_until(lambda: _running(cluster, "a") >= {"busy", "idle"}, 60, what="pods running")
        yield cluster


def _running(cluster: LocalCluster, viewer: str) -> set[str]:
    listed = json.loads(cluster.cli(viewer, "get", "pods", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"] for p in listed if p["status"].get("phase") == "Running"}


def _pod_metrics(cluster: LocalCluster, viewer: str) -> dict[str, dict[str, Any]]:
    out = cluster.cli(viewer, "top", "pods", "-o", "json").stdout
    return {m["metadata"]["name"]: m for m in json.loads(out)["items"]}


def _usage(metrics: dict[str, Any]) -> tuple[int, int]:
    """(millicores, bytes) of a PodMetrics (its one container) or a NodeMetrics."""
    usage = metrics["containers"][0]["usage"] if "containers" in metrics else metrics["usage"]
    return cpu_millicores(usage["cpu"]), memory_bytes(usage["memory"])


def _window_after_start(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    """The pods' metrics once both have been measured over a full window of the busy run."""

    def measured() -> dict[str, dict[str, Any]] | None:
        found = _pod_metrics(cluster, "a")
        if {"busy", "idle"} <= set(found) and _usage(found["busy"])[0] > 0:
            return found
        return None

    return wait_until(measured, 30, interval=0.5, what="metrics of busy and idle")


def test_top_pods_from_another_node_shows_measured_usage(chain: LocalCluster) -> None:
    found = _window_after_start(chain)
    busy_cpu, busy_memory = _usage(found["busy"])
    idle_cpu, idle_memory = _usage(found["idle"])
    assert found["busy"]["apiVersion"] == "metrics.k8s.io/v1beta1"
    assert found["busy"]["kind"] == "PodMetrics"
    assert found["busy"]["containers"][0]["name"] == "main"
    assert found["busy"]["window"].endswith("s") and found["busy"]["timestamp"]
    assert found["busy"]["metadata"]["labels"] == {"test": "pods"}
    # Measured: the busy loop uses CPU up to its throttle, the sleeping ticker next to none;
    # both have their linear memory (WebAssembly pages of 64 KiB). How much CPU the busy loop
    # gets is the machine's to give (a full run shares 2 cores, and it got 24m of its 300m
    # once): no floor but above the idle one, whose accuracy test_top.py checks against the
    # kernel's thread clock.
    assert 0 < busy_cpu <= BUSY_LIMIT * 1.5, found["busy"]
    assert idle_cpu < busy_cpu / 3, (found["idle"], found["busy"])
    assert busy_memory >= 65536 and busy_memory % 65536 == 0
    assert idle_memory >= 65536 and idle_memory % 65536 == 0
    # The table, as kubectl top prints it.
    lines = chain.cli("a", "top", "pods").stdout.splitlines()
    assert lines[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert {"busy", "idle"} <= set(rows)
    assert rows["busy"][0].endswith("m") and int(rows["busy"][0][:-1]) > 0
    lines = chain.cli("a", "top", "pods", "busy", "--containers").stdout.splitlines()
    assert lines[0].split() == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert lines[1].split()[:2] == ["busy", "main"]
    selected = chain.cli("a", "top", "pods", "-l", "test=pods", "--sort-by", "cpu").stdout
    assert [line.split()[0] for line in selected.splitlines()[1:3]] == ["busy", "idle"]


def test_a_pod_that_works_harder_shows_more_cpu_over_time(chain: LocalCluster) -> None:
    """The busy pod's CPU stays well above the idle one's window after window: usage is
    re-measured (the timestamps move), not a figure taken once."""
    first = _window_after_start(chain)

    def later() -> dict[str, dict[str, Any]] | None:
        found = _pod_metrics(chain, "a")
        moved = found["busy"]["timestamp"] != first["busy"]["timestamp"]
        return found if moved else None

    second = wait_until(later, 10, interval=0.3, what="a new window")
    for found in (first, second):
        assert _usage(found["busy"])[0] > 3 * max(_usage(found["idle"])[0], 1), found


def test_top_nodes_lists_every_node_with_its_usage(chain: LocalCluster) -> None:
    _window_after_start(chain)
    out = chain.cli("a", "top", "nodes", "-o", "json").stdout
    nodes = {m["metadata"]["name"]: m for m in json.loads(out)["items"]}
    assert set(nodes) == {"a", "b", "c"}
    for name, metrics in nodes.items():
        cpu, memory = _usage(metrics)
        assert metrics["kind"] == "NodeMetrics"
        assert memory > 20 * 2**20, (name, metrics)  # an agent's resident memory
        assert cpu >= 1, (name, metrics)  # an agent is never fully idle (membership, sync)
    # c runs the busy pod: its process uses more than a, which runs nothing.
    assert _usage(nodes["c"])[0] > _usage(nodes["a"])[0], nodes
    lines = chain.cli("a", "top", "nodes").stdout.splitlines()
    assert lines[0].split() == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert set(rows) == {"a", "b", "c"}
    assert all(row[1].endswith("%") and row[3].endswith("%") for row in rows.values()), rows


def test_top_of_a_pod_without_metrics_says_why(chain: LocalCluster) -> None:
    missing = chain.cli("a", "top", "pods", "nosuchpod", check=False)
    assert missing.returncode != 0
    assert 'pods "nosuchpod" not found' in missing.stderr
    empty = chain.cli("a", "top", "pods", "-n", "kube-system")
    assert empty.stdout == "" and "No resources found in kube-system namespace." in empty.stderr


@requires_kubectl
def test_kubectl_top_reads_the_same_metrics(chain: LocalCluster, tmp_path: Path) -> None:
    _window_after_start(chain)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(chain.cli("b", "kubeconfig").stdout)
    kubectl = Kubectl(kubeconfig)
    lines = kubectl.ok("top", "nodes").splitlines()
    assert lines[0].split() == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    assert sorted(line.split()[0] for line in lines[1:]) == ["a", "b", "c"]
    assert all("<unknown>" not in line for line in lines), lines
    lines = kubectl.ok("top", "pods", "-A").splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    kubectl_pods = sorted(line.split()[1] for line in lines[1:])
    ours = chain.cli("b", "top", "pods", "-A").stdout.splitlines()
    assert kubectl_pods == sorted(line.split()[1] for line in ours[1:])
    assert {"busy", "idle"} <= set(kubectl_pods)
    lines = kubectl.ok("top", "pod", "busy", "--containers").splitlines()
    assert lines[1].split()[:2] == ["busy", "main"]
    assert int(lines[1].split()[2].removesuffix("m")) > 0
    selected = kubectl.ok("top", "pods", "-l", "test=pods", "--sort-by=cpu").splitlines()
    assert [line.split()[0] for line in selected[1:3]] == ["busy", "idle"]
    raw = kubectl.ok("get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods")
    listed = json.loads(raw)
    assert listed["kind"] == "PodMetricsList"
