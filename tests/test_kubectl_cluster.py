"""Kubernetes' own clients on real agents (separate processes, real aiortc, pycrdt, wasmtime):
the official Python client, ``@kubernetes/client-node`` in Node.js, and kubectl for what needs
running pods (logs, drain).

Two agents in a mesh. The module is published once with ``p2pkube publish`` (a client of the
Kubernetes API cannot upload a module; it names one by digest) and every client works with
nothing but the kubeconfig ``p2pkube kubeconfig`` prints for agent ``a``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch

from p2pkube.devcluster import LocalCluster, wait_until
from tests.clusters import module_cluster, wait_all_ready

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "examples" / "build"
NODE_CLIENT = REPO / "tests" / "node"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
NAMES = ["a", "b"]


class Mesh:
    def __init__(self, cluster: LocalCluster, kubeconfig: Path, digest: str) -> None:
        self.cluster = cluster
        self.kubeconfig = kubeconfig
        self.digest = digest
        self.cache = kubeconfig.parent / "kube-cache"
        api = config.new_client_from_config(str(kubeconfig))
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)

    def kubectl(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        result = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout + result.stderr

    def deployment(self, name: str, replicas: int, *args: str) -> dict[str, Any]:
        labels = {"app": name}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [{"name": "main", "image": self.digest, "args": list(args)}]
                    },
                },
            },
        }

    def running(self, selector: str) -> list[Any]:
        pods = self.core.list_namespaced_pod("default", label_selector=selector).items
        return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Mesh]:
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    root = tmp_path_factory.mktemp("kubectl-cluster")
    with module_cluster(root / "cluster", request) as cluster:
        cluster.start_signaling()
        cluster.extra_agent_args = ["--set", "kubelet.backoff_initial=0.2", "--memory", "1Gi"]
        for name in NAMES:
            cluster.start_agent(name)
        wait_all_ready(cluster, NAMES)
        published = json.loads(
            cluster.cli("a", "publish", str(BUILD / "ticker.wasm"), "-o", "json").stdout
        )
        kubeconfig = root / "kubeconfig"
        kubeconfig.write_text(cluster.cli("a", "kubeconfig").stdout)
        yield Mesh(cluster, kubeconfig, published["metadata"]["name"])


def test_the_python_client_lists_creates_watches_reads_logs_and_deletes(mesh: Mesh) -> None:
    nodes = mesh.core.list_node().items
    assert sorted(n.metadata.name for n in nodes) == NAMES
    assert all(
        c.status == "True" for n in nodes for c in n.status.conditions if c.type == "Ready"
    )
    mesh.apps.create_namespaced_deployment("default", mesh.deployment("py", 2, "0.2"))
    running: set[str] = set()
    stream = watch.Watch()
    for event in stream.stream(
        mesh.core.list_namespaced_pod, "default", label_selector="app=py", timeout_seconds=60
    ):
        pod = event["object"]
        if pod.status.phase == "Running":
            running.add(pod.metadata.name)
        if len(running) == 2:
            stream.stop()
    assert len(running) == 2
    name = sorted(running)[0]
    wait_until(
        lambda: "tick 2" in mesh.core.read_namespaced_pod_log(name, "default"), 20, what="ticks"
    )
    log = mesh.core.read_namespaced_pod_log(name, "default", tail_lines=1)
    assert log.startswith("tick ") and log.count("\n") == 1
    mesh.apps.delete_namespaced_deployment("py", "default")
    wait_until(lambda: not mesh.core.list_namespaced_pod("default", label_selector="app=py").items,
               60, what="the pods to go")


def test_node_client_lists_and_watches(mesh: Mesh) -> None:
    if not (NODE_CLIENT / "node_modules" / "@kubernetes" / "client-node").is_dir():
        pytest.fail("tests/node has no node_modules: run `npm ci --prefix tests/node` (make test does)")
    process = subprocess.Popen(
        ["node", str(NODE_CLIENT / "list_and_watch.mjs"), str(mesh.kubeconfig)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NODE_PATH": str(NODE_CLIENT / "node_modules")},
    )
    try:
        assert process.stdout is not None
        listed = json.loads(process.stdout.readline())
        assert sorted(listed["nodes"]) == NAMES
        assert listed["resourceVersion"]
        mesh.core.create_namespaced_config_map(
            "default", {"metadata": {"name": "from-python"}, "data": {"k": "v"}}
        )
        seen = json.loads(process.stdout.readline())
        assert seen == {"type": "ADDED", "name": "from-python"}
        mesh.core.delete_namespaced_config_map("from-python", "default")
        seen = json.loads(process.stdout.readline())
        assert seen == {"type": "DELETED", "name": "from-python"}
    finally:
        process.kill()
        _, err = process.communicate(timeout=10)
    assert "Error" not in err, err


def test_kubectl_logs_follow_tail_and_previous(mesh: Mesh) -> None:
    mesh.apps.create_namespaced_deployment("default", mesh.deployment("logs", 1, "0.2"))
    wait_until(lambda: mesh.running("app=logs"), 60, what="a running pod")
    pod = mesh.running("app=logs")[0].metadata.name
    wait_until(lambda: "tick 3" in mesh.kubectl("logs", pod), 20, what="three ticks")
    tail = mesh.kubectl("logs", pod, "-c", "main", "--tail=2").splitlines()
    assert len(tail) == 2 and all(line.startswith("tick ") for line in tail)
    follow = subprocess.Popen(
        [KUBECTL, "--kubeconfig", str(mesh.kubeconfig), "--cache-dir", str(mesh.cache)]
        + ["logs", "-f", "--tail=1", "deployment/logs"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        first = int(follow.stdout.readline().split()[1])
        second = int(follow.stdout.readline().split()[1])
        assert second == first + 1  # new lines as they are written
    finally:
        follow.kill()
        follow.communicate(timeout=10)
    previous = mesh.kubectl("logs", pod, "-p", check=False)
    assert "previous terminated container" in previous or "not found" in previous
    mesh.apps.delete_namespaced_deployment("logs", "default")


def test_kubectl_drain_evicts_and_the_pods_move(mesh: Mesh) -> None:
    mesh.apps.create_namespaced_deployment("default", mesh.deployment("moving", 2, "0.5"))
    wait_until(lambda: len(mesh.running("app=moving")) == 2, 60, what="two running pods")
    out = mesh.kubectl("drain", "b", "--ignore-daemonsets", "--timeout=60s", timeout=90)
    assert "node/b cordoned" in out and "node/b drained" in out
    wait_until(
        lambda: len(mesh.running("app=moving")) == 2
        and {p.spec.node_name for p in mesh.running("app=moving")} == {"a"},
        60,
        what="both pods on a",
    )
    assert "SchedulingDisabled" in mesh.kubectl("get", "node", "b")
    mesh.kubectl("uncordon", "b")
    mesh.apps.delete_namespaced_deployment("moving", "default")
