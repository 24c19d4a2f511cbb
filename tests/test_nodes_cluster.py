"""Cordons and taints on real agents (separate processes, real aiortc, pycrdt and wasmtime),
driven with the CLI as a user drives them: ``p2pkube cordon|uncordon|taint``, then what ``get
nodes``, ``describe node`` and the pods show on other nodes.

One module-wide cluster of three agents; the restart comes last.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pkube.devcluster import LocalCluster, wait_until
from tests.clusters import all_ready, module_cluster, wait_all_ready
from tests.test_pods_cluster import write_manifest
from tests.test_workloads_cluster import active, deployment, items, remove, running, template

REPO = Path(__file__).resolve().parent.parent
NAMES = ["n1", "n2", "n3"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator:
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    with module_cluster(tmp_path_factory.mktemp("nodes") / "cluster", request) as local:
        local.start_signaling()
        local.extra_agent_args = ["--memory", "1Gi"]
        for name in NAMES:
            local.start_agent(name, "--label", f"zone={name}")
        wait_all_ready(local, NAMES)
        yield local


def status_column(cluster: LocalCluster, viewer: str) -> dict[str, str]:
    """NAME -> STATUS of ``p2pkube get nodes`` on ``viewer``, as printed."""
    lines = cluster.cli(viewer, "get", "nodes").stdout.splitlines()
    header = lines[0].split()
    at = header.index("STATUS")
    return {line.split()[0]: line.split()[at] for line in lines[1:]}


def per_node(pods: list[dict[str, Any]]) -> Counter[str]:
    return Counter(p["spec"]["nodeName"] for p in pods)


def cli_out(cluster: LocalCluster, viewer: str, *args: str) -> str:
    return cluster.cli(viewer, *args).stdout.strip()


def test_a_cordoned_node_keeps_its_pods_and_gets_no_new_ones_until_uncordoned(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    web = deployment("web", 3, "1")
    cluster.cli("n1", "apply", "-f", str(write_manifest(tmp_path, web)))
    wait_until(lambda: len(running(cluster, "n2", "web")) == 3, 30, what="3 replicas")
    assert per_node(running(cluster, "n2", "web")) == {"n1": 1, "n2": 1, "n3": 1}

    assert cli_out(cluster, "n1", "cordon", "n3") == "node/n3 cordoned"
    assert cli_out(cluster, "n1", "cordon", "n3") == "node/n3 already cordoned"
    wait_until(
        lambda: status_column(cluster, "n2").get("n3") == "Ready,SchedulingDisabled",
        10,
        what="n2 to show n3 cordoned",
    )
    assert status_column(cluster, "n2")["n1"] == "Ready"
    described = cli_out(cluster, "n2", "describe", "node", "n3")
    assert "Unschedulable:      true" in described
    assert "Taints:             node.kubernetes.io/unschedulable:NoSchedule" in described

    pinned = {  # a pod only n3 would take: Pending, with kubectl's diagnosis
        "apiVersion": "p2pkube.io/v1",
        "kind": "Pod",
        "metadata": {"name": "pinned", "labels": {"app": "pinned"}},
        "spec": template("ticker", "1", app="pinned")["spec"],
    }
    pinned["spec"]["nodeSelector"] = {"zone": "n3"}
    cluster.cli("n1", "apply", "-f", str(write_manifest(tmp_path, pinned)))

    def pending_reason() -> str | None:
        pod = cluster.api("n2", "GET", "/v1/objects/Pod/default/pinned")
        conditions = (pod.get("status") or {}).get("conditions") or [{}]
        return conditions[0].get("message")

    assert wait_until(pending_reason, 10, what="pinned Pending") == (
        "0/3 nodes are available: 2 node(s) didn't match Pod's node selector, "
        "1 node(s) were unschedulable."
    )

    assert cli_out(cluster, "n2", "scale", "deployment", "web", "--replicas", "6")
    wait_until(lambda: len(running(cluster, "n1", "web")) == 6, 30, what="6 replicas")
    placed = per_node(running(cluster, "n1", "web"))
    assert placed["n3"] == 1, f"the cordoned node kept its pod and got no new one: {placed}"
    assert placed["n1"] + placed["n2"] == 5

    assert cli_out(cluster, "n3", "uncordon", "n3") == "node/n3 uncordoned"
    wait_until(lambda: status_column(cluster, "n1").get("n3") == "Ready", 10, what="uncordon")
    assert "Taints:             <none>" in cli_out(cluster, "n1", "describe", "node", "n3")
    wait_until(lambda: len(running(cluster, "n1", "pinned")) == 1, 20, what="pinned placed")
    assert running(cluster, "n1", "pinned")[0]["spec"]["nodeName"] == "n3"
    cluster.cli("n1", "delete", "pod", "pinned")
    cluster.cli("n2", "scale", "deployment", "web", "--replicas", "8")
    wait_until(lambda: len(running(cluster, "n1", "web")) == 8, 30, what="8 replicas")
    placed = per_node(running(cluster, "n1", "web"))
    assert placed["n3"] >= 2, f"n3, the emptiest, got a new pod again: {placed}"
    remove(cluster, "n1", web)
    wait_until(lambda: not items(cluster, "n1", "Pod", "app=web"), 20, what="web's pods gone")


def test_a_noexecute_taint_evicts_the_pods_there_and_they_come_back_elsewhere(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    evict = deployment("evict", 3, "1")
    cluster.cli("n2", "apply", "-f", str(write_manifest(tmp_path, evict)))
    wait_until(lambda: len(running(cluster, "n3", "evict")) == 3, 30, what="3 replicas")
    before = {p["metadata"]["name"] for p in running(cluster, "n3", "evict")}
    on_n2 = [
        p["metadata"]["name"]
        for p in running(cluster, "n3", "evict")
        if p["spec"]["nodeName"] == "n2"
    ]
    assert len(on_n2) == 1

    assert cli_out(cluster, "n1", "taint", "nodes", "n2", "maintenance=now:NoExecute") == (
        "node/n2 tainted"
    )
    failed = cluster.cli("n1", "taint", "nodes", "n2", "maintenance=later:NoExecute", check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip() == (
        "error: node n2 already has maintenance taint(s) with same effect(s) and --overwrite "
        "is false"
    )

    def moved() -> bool:
        now = running(cluster, "n3", "evict")
        everywhere = active(cluster, "n3", "evict")
        return len(now) == 3 and len(everywhere) == 3 and "n2" not in per_node(everywhere)

    wait_until(moved, 30, what="n2's pod evicted and replaced elsewhere")
    assert on_n2[0] not in {p["metadata"]["name"] for p in running(cluster, "n3", "evict")}
    assert len(before & {p["metadata"]["name"] for p in running(cluster, "n3", "evict")}) == 2
    def eviction_event() -> bool:
        events = json.loads(cluster.cli("n3", "get", "events", "-o", "json").stdout)["items"]
        return any(
            e["reason"] == "TaintManagerEviction"
            and e["message"] == f"Marking for deletion Pod default/{on_n2[0]}"
            for e in events
        )

    # The event replicates apart from the pods' state: it may reach n3 after the move did.
    wait_until(eviction_event, 20, what="the TaintManagerEviction event on n3")
    node = json.loads(cluster.cli("n3", "get", "node", "n2", "-o", "json").stdout)
    (taint,) = node["spec"]["taints"]
    assert (taint["key"], taint["value"], taint["effect"]) == ("maintenance", "now", "NoExecute")
    assert taint["timeAdded"]

    assert cli_out(cluster, "n3", "taint", "nodes", "n2", "maintenance:NoExecute-") == (
        "node/n2 untainted"
    )
    missing = cluster.cli("n3", "taint", "nodes", "n2", "maintenance-", check=False)
    assert missing.stderr.strip() == 'error: taint "maintenance" not found'
    remove(cluster, "n2", evict)
    wait_until(lambda: not items(cluster, "n1", "Pod", "app=evict"), 20, what="pods gone")


def test_a_node_manifest_applies_its_spec_and_nothing_else(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """`apply -f` of a Node written as Kubernetes' docs write one: its taints (and labels
    when given) are applied, the agent's part is kept, and another change is refused."""
    manifest = tmp_path / "node.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nspec:\n  taints:\n"
        "  - key: dedicated\n    value: batch\n    effect: NoSchedule\n"
    )
    assert cli_out(cluster, "n2", "apply", "-f", str(manifest)) == "node/n1 configured"
    assert cli_out(cluster, "n2", "apply", "-f", str(manifest)) == "node/n1 unchanged"
    node = json.loads(cluster.cli("n3", "get", "node", "n1", "-o", "json").stdout)
    assert node["spec"]["taints"] == [
        {"key": "dedicated", "value": "batch", "effect": "NoSchedule"}
    ]
    assert node["metadata"]["labels"] == {"p2pkube.io/kind": "native", "zone": "n1"}
    # A field of Kubernetes' Node that p2pkube does not implement is ignored with a warning;
    # one Kubernetes does not define either is refused.
    written = manifest.read_text()
    manifest.write_text(written.replace("spec:", "spec:\n  podCIDR: 10.0.0.0/24"))
    ignored = cluster.cli("n2", "apply", "-f", str(manifest))
    assert ignored.stdout.strip() == "node/n1 unchanged"
    assert "Warning: spec.podCIDR: ignored" in ignored.stderr
    manifest.write_text(written.replace("spec:", "spec:\n  podCidr: 10.0.0.0/24"))
    refused = cluster.cli("n2", "apply", "-f", str(manifest), check=False)
    assert refused.returncode == 1
    assert "spec.podCidr: unknown field" in refused.stderr
    missing = cluster.cli("n2", "cordon", "n9", check=False)
    assert missing.stderr.strip() == 'Error from server (NotFound): nodes "n9" not found'
    assert cli_out(cluster, "n1", "taint", "nodes", "n1", "dedicated:NoSchedule-") == (
        "node/n1 untainted"
    )


def test_a_node_cordoned_while_it_was_down_is_still_cordoned_after_its_restart(
    cluster: LocalCluster,
) -> None:
    cluster.kill("n3")
    wait_until(lambda: cluster.nodes("n1").get("n3") == "False", 20, what="n3 NotReady")
    assert cli_out(cluster, "n1", "cordon", "n3") == "node/n3 cordoned"
    assert status_column(cluster, "n1")["n3"] == "NotReady,SchedulingDisabled"
    cluster.start_agent("n3", "--label", "zone=n3")
    cluster.wait_api("n3")
    wait_all_ready(cluster, NAMES)
    deadline = time.monotonic() + 3  # its first sync, and its own part of its Node written
    while time.monotonic() < deadline:
        for viewer in NAMES:
            assert status_column(cluster, viewer)["n3"] == "Ready,SchedulingDisabled", viewer
        time.sleep(0.3)
    node = json.loads(cluster.cli("n2", "get", "node", "n3", "-o", "json").stdout)
    assert node["metadata"]["labels"]["zone"] == "n3"
    assert node["spec"]["unschedulable"] is True
    assert cli_out(cluster, "n2", "uncordon", "n3") == "node/n3 uncordoned"
    wait_until(lambda: all_ready(cluster, "n3", NAMES), 10)
