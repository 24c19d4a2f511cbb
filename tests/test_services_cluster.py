"""Services on real agents (separate processes): a NodePort allocated where the Service is
applied is seen and defended on another node, and every node computes the Endpoints of the
replicated pods (issue 12). Slow: it takes the ``cluster`` fixture."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from p2pkube.devcluster import LocalCluster, wait_until
from tests.clusters import wait_all_ready

BUILD = Path(__file__).resolve().parent.parent / "examples" / "build"


def service(name: str, node_port: int | None = None) -> dict[str, Any]:
    port: dict[str, Any] = {"name": "http", "port": 80, "targetPort": "http"}
    if node_port is not None:
        port["nodePort"] = node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [port]},
    }


def handler_pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "echo",
                    "image": "echo.wasm",
                    "ports": [{"containerPort": 8080, "name": "http"}],
                }
            ],
        },
    }


def apply(cluster: LocalCluster, node: str, tmp: Path, *objects: dict[str, Any]) -> Any:
    shutil.copy(BUILD / "echo.wasm", tmp / "echo.wasm")
    path = tmp / "manifest.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    return cluster.cli(node, "apply", "-f", str(path), check=False)


def node_port(cluster: LocalCluster, viewer: str, name: str) -> int | None:
    found = cluster.cli(viewer, "get", "svc", name, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    return int(json.loads(found.stdout)["spec"]["ports"][0]["nodePort"])


def endpoint_nodes(cluster: LocalCluster, viewer: str, name: str) -> dict[str, str]:
    """Pod -> node of every endpoint, ready or not, as ``viewer`` computes them."""
    obj = json.loads(cluster.cli(viewer, "get", "ep", name, "-o", "json").stdout)
    return {
        address["targetRef"]["name"]: address["nodeName"]
        for subset in obj["subsets"]
        for address in subset.get("addresses", []) + subset.get("notReadyAddresses", [])
    }


def has_endpoints(cluster: LocalCluster, viewer: str) -> bool:
    """Whether ``viewer`` computes web-1 on b as web's one endpoint."""
    return endpoint_nodes(cluster, viewer, "web") == {"web-1": "b"}


def test_nodeports_and_endpoints_across_two_agents(cluster: LocalCluster, tmp_path: Path) -> None:
    cluster.start_signaling()
    for name in "ab":
        cluster.start_agent(name)
    wait_all_ready(cluster, ["a", "b"])
    applied = apply(cluster, "a", tmp_path, service("web"), handler_pod("web-1", "b"))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.split("\n")[:2] == ["service/web created", "pod/web-1 created"]
    allocated = node_port(cluster, "a", "web")
    assert allocated is not None and 30000 <= allocated <= 32767
    wait_until(lambda: node_port(cluster, "b", "web") == allocated, 20, what="web on b")
    refused = apply(cluster, "b", tmp_path, service("other", allocated))
    assert refused.returncode != 0
    assert (
        f"spec.ports[0].nodePort: {allocated} is already allocated to Service default/web"
        in refused.stderr
    )
    assert node_port(cluster, "b", "other") is None
    for viewer in "ab":
        wait_until(partial(has_endpoints, cluster, viewer), 30, what=f"endpoints on {viewer}")
    described = cluster.cli("a", "describe", "svc", "web").stdout
    assert f"{allocated}/TCP" in described and "Selector:" in described
    table = cluster.cli("b", "get", "svc").stdout.splitlines()
    assert table[1].split()[:3] == ["web", "NodePort", f"80:{allocated}/TCP"]
