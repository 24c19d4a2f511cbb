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
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch

from p2pkube.devcluster import LocalCluster, wait_until
from tests.clusters import module_cluster, wait_all_ready
from tests.kubectl import Kubectl, requires_kubectl

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "examples" / "build"
NODE_CLIENT = REPO / "tests" / "node"
NAMES = ["a", "b"]

pytestmark = requires_kubectl


class Mesh(Kubectl):
    """The cluster, kubectl and the Python client for agent a's Kubernetes API."""

    def __init__(self, cluster: LocalCluster, kubeconfig: Path, digests: dict[str, str]) -> None:
        super().__init__(kubeconfig)
        self.cluster = cluster
        self.digest = digests["ticker"]
        self.echo = digests["echo"]
        api = config.new_client_from_config(str(kubeconfig))
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)

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
        return [
            p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Mesh]:
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    root = tmp_path_factory.mktemp("kubectl-cluster")
    with module_cluster(root / "cluster", request) as cluster:
        cluster.start_signaling()
        cluster.extra_agent_args = ["--set", "kubelet.backoff_initial=0.2", "--memory", "1Gi"]
        for name in NAMES:
            cluster.start_agent(name)
        wait_all_ready(cluster, NAMES)
        digests = {
            module: json.loads(
                cluster.cli("a", "publish", str(BUILD / f"{module}.wasm"), "-o", "json").stdout
            )["metadata"]["name"]
            for module in ("ticker", "echo")
        }
        kubeconfig = root / "kubeconfig"
        kubeconfig.write_text(cluster.cli("a", "kubeconfig").stdout)
        yield Mesh(cluster, kubeconfig, digests)


def test_the_python_client_lists_creates_watches_reads_logs_and_deletes(mesh: Mesh) -> None:
    nodes = mesh.core.list_node().items
    assert sorted(n.metadata.name for n in nodes) == NAMES
    assert all(c.status == "True" for n in nodes for c in n.status.conditions if c.type == "Ready")
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
    wait_until(
        lambda: not mesh.core.list_namespaced_pod("default", label_selector="app=py").items,
        60,
        what="the pods to go",
    )


def test_node_client_lists_and_watches(mesh: Mesh) -> None:
    if not (NODE_CLIENT / "node_modules" / "@kubernetes" / "client-node").is_dir():
        pytest.fail(
            "tests/node has no node_modules: run `npm ci --prefix tests/node` (make test does)"
        )
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
    wait_until(lambda: "tick 3" in mesh.ok("logs", pod), 20, what="three ticks")
    tail = mesh.ok("logs", pod, "-c", "main", "--tail=2").splitlines()
    assert len(tail) == 2 and all(line.startswith("tick ") for line in tail)
    follow = subprocess.Popen(
        mesh.argv("logs", "-f", "--tail=1", "deployment/logs"),
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
    result = mesh.run("logs", pod, "-p")
    previous = result.stdout + result.stderr
    assert (
        result.returncode == 1 and "previous terminated container" in previous
    ) or "not found" in previous
    mesh.apps.delete_namespaced_deployment("logs", "default")


def test_kubectl_drain_evicts_and_the_pods_move(mesh: Mesh) -> None:
    mesh.apps.create_namespaced_deployment("default", mesh.deployment("moving", 2, "0.5"))
    wait_until(lambda: len(mesh.running("app=moving")) == 2, 60, what="two running pods")
    drained = mesh.run("drain", "b", "--ignore-daemonsets", "--timeout=60s", timeout=90)
    out = drained.stdout + drained.stderr
    assert drained.returncode == 0, out
    assert "node/b cordoned" in out and "node/b drained" in out
    wait_until(
        lambda: (
            len(mesh.running("app=moving")) == 2
            and {p.spec.node_name for p in mesh.running("app=moving")} == {"a"}
        ),
        60,
        what="both pods on a",
    )
    assert "SchedulingDisabled" in mesh.ok("get", "node", "b")
    mesh.ok("uncordon", "b")
    mesh.apps.delete_namespaced_deployment("moving", "default")


def test_kubectl_port_forward_to_a_service_reaches_its_handler_pod(mesh: Mesh) -> None:
    deployment = mesh.deployment("echo", 1)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container.update(image=mesh.echo, ports=[{"containerPort": 8080, "name": "http"}])
    mesh.apps.create_namespaced_deployment("default", deployment)
    mesh.core.create_namespaced_service(
        "default",
        {
            "metadata": {"name": "echo"},
            "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    wait_until(lambda: mesh.running("app=echo"), 60, what="a running echo pod")
    forward = subprocess.Popen(
        mesh.argv("port-forward", "svc/echo", ":80"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()  # Forwarding from 127.0.0.1:PORT -> 8080
        assert line.startswith("Forwarding from 127.0.0.1:") and line.rstrip().endswith("-> 8080")
        port = int(line.split(":")[1].split()[0])
        for path in ("/first", "/second"):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}?q=1", headers={"X-Echo": "through kubectl"}
            )
            with urllib.request.urlopen(request, timeout=20) as response:
                body = response.read().decode()
            assert response.status == 200
            assert path in body and "through kubectl" in body
            assert mesh.running("app=echo")[0].metadata.name in body
    finally:
        forward.terminate()
        forward.communicate(timeout=10)
    mesh.core.delete_namespaced_service("echo", "default")
    mesh.apps.delete_namespaced_deployment("echo", "default")
