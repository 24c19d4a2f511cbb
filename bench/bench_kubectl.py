"""kubectl against an agent's Kubernetes API, next to the p2pkube CLI and local API (issue 15).

One native agent on loopback (the node kubectl talks to), plus a second one so the cluster is
a cluster. Three measurements, each beside its baseline in the same run:

1. ``kubectl get pods`` against a node holding 300 pods, next to ``p2pkube get pods``: the
   whole command (process start, TLS, discovery from kubectl's disk cache, the Table), and
   the list request alone (``GET .../pods`` with a Table, in-process) next to the local API's
   ``GET /v1/objects/Pod``. The 300 pods are a Deployment's replicas that no node can take
   (a nodeSelector no node has): objects in the replicated state, which is what a list reads.
2. Watch event delay: a ConfigMap written through the local API, until a Kubernetes watch
   (HTTPS, from a resourceVersion) and a local-API watch (``/v1/watch/ConfigMap``), both
   open at once, deliver it.
3. A Deployment of three ticker pods, from ``kubectl apply`` until all three are Running, next
   to the same manifest through ``p2pkube apply``.

Run: ``.venv/bin/python -m bench.bench_kubectl [--gets 20] [--watch-writes 50] [--rollouts 3]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.benchlib import REPO, emit, markdown_table, summary_ms, yes
from p2pkube.devcluster import LocalCluster, wait_until

TITLE = "kubectl: the Kubernetes API every agent serves, next to p2pkube's CLI and local API"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
BUILD = REPO / "examples" / "build"
NAMES = ["a", "b"]
PODS = 300
TARGET_GET_RATIO = 2.0
"""``kubectl get pods`` within twice ``p2pkube get pods`` (both are a process start and one
list; kubectl adds TLS and its client-side printing)."""
TARGET_WATCH_EXTRA_MS = 20.0
"""The Kubernetes watch delivers within 20 ms of the local API's (same hub, one more encoding)."""


class Node:
    """Agent ``a`` as kubectl, the Python standard library and the p2pkube CLI reach it."""

    def __init__(self, cluster: LocalCluster, work: Path) -> None:
        self.cluster = cluster
        self.kubeconfig = work / "kubeconfig"
        self.kubeconfig.write_text(cluster.cli("a", "kubeconfig").stdout)
        config = yaml.safe_load(self.kubeconfig.read_text())
        self.kube_url = config["clusters"][0]["cluster"]["server"]
        self.token = config["users"][0]["user"]["token"]
        ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
        self.tls = ssl.create_default_context(cadata=ca.decode())
        info = json.loads((cluster.root / "a" / "api.json").read_text())
        self.local_url = info["url"]
        self.cache = work / "kube-cache"

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return result.stdout

    def open(self, url: str, accept: str = "application/json") -> Any:
        request = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {self.token_for(url)}", "Accept": accept}
        )
        context = self.tls if url.startswith("https") else None
        return urllib.request.urlopen(request, context=context, timeout=60)

    def token_for(self, url: str) -> str:
        if url.startswith(self.kube_url):
            return self.token
        return (self.cluster.root / "a" / "api.token").read_text().strip()


def deployment(name: str, image: str, replicas: int, **spec: Any) -> dict[str, Any]:
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
                    **spec,
                    "containers": [{"name": "main", "image": image, "args": ["3600"]}],
                },
            },
        },
    }


def timed(runs: int, action: Any) -> list[float]:
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - began)
    return seconds


def measure_gets(node: Node, runs: int) -> dict[str, Any]:
    """``get pods`` with 300 pods: the commands, then the list requests alone."""
    rows = node.kubectl("get", "pods").strip().splitlines()  # warms kubectl's caches
    assert len(rows) == PODS + 1, f"kubectl lists {len(rows) - 1} pods"
    own = node.cluster.cli("a", "get", "pods").stdout.strip().splitlines()
    assert len(own) == PODS + 1, f"p2pkube lists {len(own) - 1} pods"
    table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

    def read(url: str, accept: str = "application/json") -> None:
        with node.open(url, accept) as response:
            response.read()

    return {
        "kubectl": summary_ms(timed(runs, lambda: node.kubectl("get", "pods"))),
        "p2pkube": summary_ms(timed(runs, lambda: node.cluster.cli("a", "get", "pods"))),
        "kubeTable": summary_ms(
            timed(runs, lambda: read(f"{node.kube_url}/api/v1/namespaces/default/pods", table))
        ),
        "kubeList": summary_ms(
            timed(runs, lambda: read(f"{node.kube_url}/api/v1/namespaces/default/pods"))
        ),
        "localList": summary_ms(
            timed(runs, lambda: read(f"{node.local_url}/v1/objects/Pod?namespace=default"))
        ),
    }


class Stream(threading.Thread):
    """Reads a watch stream line by line and stamps when each ConfigMap name arrived."""

    def __init__(self, response: Any) -> None:
        super().__init__(daemon=True)
        self.response = response
        self.seen: dict[str, float] = {}

    def run(self) -> None:
        for line in self.response:
            event = json.loads(line)
            name = (event.get("object") or {}).get("metadata", {}).get("name")
            if name and name not in self.seen:
                self.seen[name] = time.perf_counter()


def measure_watch(node: Node, writes: int) -> dict[str, Any]:
    """Delay from a write to each watch's event, both watches open at once."""
    with node.open(f"{node.kube_url}/api/v1/namespaces/default/configmaps") as response:
        version = json.loads(response.read())["metadata"]["resourceVersion"]
    kube = Stream(
        node.open(
            f"{node.kube_url}/api/v1/namespaces/default/configmaps?watch=true"
            f"&resourceVersion={version}&timeoutSeconds=600"
        )
    )
    local = Stream(node.open(f"{node.local_url}/v1/watch/ConfigMap?namespace=default"))
    kube.start()
    local.start()
    written: dict[str, float] = {}
    for i in range(writes):
        name = f"bench-{i}"
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}
        written[name] = time.perf_counter()
        node.cluster.api("a", "PUT", "/v1/objects", body)
        wait_until(lambda n=name: n in kube.seen and n in local.seen, 10, interval=0.001)
        time.sleep(0.05)
    return {
        "kube": summary_ms([kube.seen[n] - t for n, t in written.items()]),
        "local": summary_ms([local.seen[n] - t for n, t in written.items()]),
    }


def running(node: Node, app: str) -> int:
    query = f"namespace=default&labelSelector=app%3D{app}"
    pods = node.cluster.api("a", "GET", f"/v1/objects/Pod?{query}")
    return sum(1 for p in pods["items"] if (p.get("status") or {}).get("phase") == "Running")


def measure_rollouts(node: Node, image: str, work: Path, runs: int) -> dict[str, Any]:
    """A three-replica Deployment, applied by each tool, until its pods are Running."""
    times: dict[str, list[float]] = {"kubectl": [], "p2pkube": []}
    manifest = work / "rollout.yaml"
    for run in range(runs):
        for tool in ("kubectl", "p2pkube"):
            name = f"{tool}-{run}"
            manifest.write_text(yaml.safe_dump(deployment(name, image, 3)))
            began = time.perf_counter()
            if tool == "kubectl":
                node.kubectl("apply", "-f", str(manifest))
            else:
                node.cluster.cli("a", "apply", "-f", str(manifest))
            wait_until(lambda n=name: running(node, n) == 3, 120, interval=0.02)
            times[tool].append(time.perf_counter() - began)
            node.cluster.cli("a", "delete", "deployment", name)
            wait_until(lambda n=name: running(node, n) == 0, 120, interval=0.1)
    return {tool: summary_ms(seconds) for tool, seconds in times.items()}


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    with tempfile.TemporaryDirectory(prefix="bench-kubectl-") as tmp:
        work = Path(tmp)
        cluster = LocalCluster(work / "cluster")
        try:
            cluster.start_signaling()
            cluster.extra_agent_args = ["--memory", "4Gi", "--cpu", "8"]
            for name in NAMES:
                cluster.start_agent(name)
            for name in NAMES:
                cluster.wait_api(name, timeout=90)
            wait_until(
                lambda: (
                    all(v == "True" for v in cluster.nodes("a").values())
                    and len(cluster.nodes("a")) == 2
                ),
                90,
                what="both nodes Ready",
            )
            node = Node(cluster, work)
            published = cluster.cli("a", "publish", str(BUILD / "ticker.wasm"), "-o", "json")
            image = json.loads(published.stdout)["metadata"]["name"]
            many = deployment("many", image, PODS, nodeSelector={"bench": "nowhere"})
            node.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(many))
            wait_until(
                lambda: len(cluster.api("a", "GET", "/v1/objects/Pod")["items"]) == PODS,
                120,
                what=f"{PODS} pods",
            )
            gets = measure_gets(node, args.gets)
            watch = measure_watch(node, args.watch_writes)
            node.kubectl("delete", "deployment", "many")
            wait_until(
                lambda: not cluster.api("a", "GET", "/v1/objects/Pod")["items"], 120, what="no pods"
            )
            rollouts = measure_rollouts(node, image, work, args.rollouts)
        finally:
            cluster.close()
    version = subprocess.run([KUBECTL, "version", "--client", "-o", "json"], capture_output=True,
                             text=True, check=False).stdout  # fmt: skip
    client = json.loads(version).get("clientVersion", {}).get("gitVersion", "?") if version else "?"
    return {"bench": "kubectl", "kubectl": client, "pods": PODS, "gets": gets, "watch": watch,
            "rollouts": rollouts}  # fmt: skip


def _row(what: str, entry: dict[str, Any]) -> list[Any]:
    return [what, entry["p50"], entry["p95"], entry["max"], entry["n"]]


def render(result: dict[str, Any]) -> list[str]:
    gets, watch, rollouts = result["gets"], result["watch"], result["rollouts"]
    headers = ["", "p50 ms", "p95 ms", "max ms", "n"]
    return [
        f"Two agents on loopback; kubectl {result['kubectl']} talks to agent a over HTTPS with "
        f"the kubeconfig `p2pkube kubeconfig` prints. {result['pods']} pods: a Deployment's "
        "replicas that no node can take (objects in the replicated state, which a list reads).",
        "",
        f"`get pods` with {result['pods']} pods, the whole command and the request alone:",
        "",
        markdown_table(
            headers,
            [
                _row("kubectl get pods (process, TLS, cached discovery, Table)", gets["kubectl"]),
                _row("p2pkube get pods (baseline: process, local API, own table)", gets["p2pkube"]),
                _row("GET /api/v1/.../pods as a Table (Kubernetes API)", gets["kubeTable"]),
                _row("GET /api/v1/.../pods as a PodList (Kubernetes API)", gets["kubeList"]),
                _row("GET /v1/objects/Pod (local API, baseline)", gets["localList"]),
            ],
        ),
        "",
        "Watch event delay, from a ConfigMap write (local API PUT, acknowledged once on disk) "
        "to the event on each watch, both open at once:",
        "",
        markdown_table(
            headers,
            [
                _row("Kubernetes watch (HTTPS, from a resourceVersion)", watch["kube"]),
                _row("local API watch /v1/watch (baseline)", watch["local"]),
            ],
        ),
        "",
        "A Deployment of 3 ticker pods, from apply until all 3 are Running:",
        "",
        markdown_table(
            headers,
            [
                _row("kubectl apply -f", rollouts["kubectl"]),
                _row("p2pkube apply -f (baseline)", rollouts["p2pkube"]),
            ],
        ),
    ]


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    gets, watch = result["gets"], result["watch"]
    ratio = gets["kubectl"]["p50"] / gets["p2pkube"]["p50"]
    extra = watch["kube"]["p50"] - watch["local"]["p50"]
    rollout = result["rollouts"]
    return [
        [
            f"kubectl get pods, {result['pods']} pods, p50",
            f"{gets['kubectl']['p50']:.0f} ms (p2pkube get pods {gets['p2pkube']['p50']:.0f} ms)",
            f"<= {TARGET_GET_RATIO:g}x p2pkube",
            yes(ratio <= TARGET_GET_RATIO),
        ],
        [
            "Kubernetes watch event delay, p50",
            f"{watch['kube']['p50']:.1f} ms (local API watch {watch['local']['p50']:.1f} ms)",
            f"<= local + {TARGET_WATCH_EXTRA_MS:g} ms",
            yes(extra <= TARGET_WATCH_EXTRA_MS),
        ],
        [
            "Deployment of 3 until Running, kubectl apply, p50",
            f"{rollout['kubectl']['p50'] / 1000:.2f} s (p2pkube apply "
            f"{rollout['p2pkube']['p50'] / 1000:.2f} s)",
            "as p2pkube apply",
            yes(rollout["kubectl"]["p50"] <= 1.5 * rollout["p2pkube"]["p50"]),
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gets", type=int, default=20, help="runs of each get")
    parser.add_argument("--watch-writes", type=int, default=50, help="ConfigMaps written")
    parser.add_argument("--rollouts", type=int, default=3, help="Deployments per tool")
    args = parser.parse_args()
    result = run_benchmark(args)
    print("\n".join(render(result)))
    emit(result)


if __name__ == "__main__":
    main()
