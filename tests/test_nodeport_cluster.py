"""The front doors end to end with real agents (slow): a NodePort on every node's --node-ip,
`p2pkube proxy` and `p2pkube port-forward` as processes, all reaching echo.wasm handler pods
through the router, from a node with a replica and from one without."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pkube.devcluster import LocalCluster, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "examples" / "build" / "echo.wasm"

MANIFEST = f"""
apiVersion: p2pkube.io/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      nodeSelector: {{role: web}}
      containers:
        - name: echo
          image: {ECHO}
          ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """n1 (127.0.0.2) runs the one replica, n2 (127.0.0.3) has none."""
    if not ECHO.exists():
        pytest.skip("examples not built (make examples)")
    local = LocalCluster(tmp_path_factory.mktemp("np") / "cluster")
    try:
        local.start_signaling()
        local.start_agent("n1", "--label", "role=web")
        local.wait_api("n1")
        local.start_agent("n2")
        local.wait_api("n2")
        wait_until(lambda: local.nodes("n2") == {"n1": "True", "n2": "True"}, 60, what="peers")
        manifest = local.root / "web.yaml"
        manifest.write_text(MANIFEST)
        local.cli("n1", "apply", "-f", str(manifest))
        yield local
    finally:
        local.close()


def node_port(cluster: LocalCluster) -> int:
    svc = cluster.api("n2", "GET", "/v1/objects/Service/default/web")
    return int(svc["spec"]["ports"][0]["nodePort"])


def http(url: str, body: bytes | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=15) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def ready(url: str) -> tuple[int, dict[str, str], str] | None:
    answer = http(url)
    return answer if answer[0] == 200 else None


def echoed(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def test_nodeport_answers_on_every_nodes_ip(cluster: LocalCluster) -> None:
    port = node_port(cluster)
    assert port in range(30000, 32768)
    url = f"http://127.0.0.3:{port}/hello?x=1"  # n2: no replica there, one hop to n1
    status, headers, text = wait_until(lambda: ready(url), 90, what="the NodePort")
    fields = echoed(text)
    assert (fields["method"], fields["path"], fields["query"], fields["node"]) == (
        "GET",
        "/hello",
        "x=1",
        "n1",
    )
    assert headers["X-P2pkube-Endpoint"] == f"n1/{fields['pod']}"
    status, _, text = http(f"http://127.0.0.2:{port}/up", body=b"p" * 50_000)  # n1: local
    assert status == 200 and echoed(text)["body"] == "50000 bytes"
    wide = cluster.cli("n1", "get", "nodes", "-o", "wide").stdout
    assert "127.0.0.2" in wide and "127.0.0.3" in wide


def test_bad_input_through_a_nodeport(cluster: LocalCluster) -> None:
    port = node_port(cluster)
    wait_until(lambda: ready(f"http://127.0.0.3:{port}/"), 90, what="the NodePort")
    status, _, text = http(f"http://127.0.0.3:{port}/", body=b"x" * (8 * 1024 * 1024 + 1))
    assert status == 413 and "over the 8,388,608 bytes allowed" in text
    status, _, _ = http(f"http://127.0.0.3:{port}/")
    assert status == 200  # the node serves on


def run_cli_server(
    cluster: LocalCluster, node: str, *args: str
) -> tuple[subprocess.Popen[str], str]:
    """Start a long-running CLI command; its first line of output."""
    process = subprocess.Popen(
        [sys.executable, "-m", "p2pkube", "--data-dir", str(cluster.root / node), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line, process.stderr.read() if process.stderr else ""
    return process, line


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(15)


def test_proxy_serves_kubectls_paths(cluster: LocalCluster) -> None:
    port = free_port()
    process, banner = run_cli_server(cluster, "n2", "proxy", "--port", str(port))
    try:
        assert banner == f"Starting to serve on 127.0.0.1:{port}"
        base = f"http://127.0.0.1:{port}/api/v1/namespaces/default/services"
        _, _, text = wait_until(lambda: ready(f"{base}/web:http/proxy/p?q=2"), 90, what="the proxy")
        assert echoed(text)["path"] == "/p" and echoed(text)["query"] == "q=2"
        status, _, text = http(f"{base}/nope/proxy/")
        assert status == 404 and "nope" in text
    finally:
        assert stop(process) == 0


def test_port_forward_to_the_service_port(cluster: LocalCluster) -> None:
    process, banner = run_cli_server(cluster, "n2", "port-forward", "svc/web", ":80")
    try:
        assert banner.startswith("Forwarding from 127.0.0.1:") and banner.endswith(" -> 80")
        local = banner.split()[2]
        _, _, text = wait_until(lambda: ready(f"http://{local}/fwd"), 90, what="port-forward")
        assert echoed(text)["path"] == "/fwd"
    finally:
        assert stop(process) == 0
    pod = next(
        p["metadata"]["name"]
        for p in cluster.api("n2", "GET", "/v1/objects/Pod?namespace=default")["items"]
        if p["metadata"]["name"].startswith("web-")
    )
    process, banner = run_cli_server(cluster, "n2", "port-forward", f"pod/{pod}", ":http")
    try:
        local = banner.split()[2]
        _, headers, text = wait_until(
            lambda: ready(f"http://{local}/to-the-pod"), 90, what="port-forward pod"
        )
        assert echoed(text)["pod"] == pod and headers["X-P2pkube-Endpoint"] == f"n1/{pod}"
    finally:
        assert stop(process) == 0
    missing = cluster.cli("n2", "port-forward", "svc/nope", "8080:80", check=False)
    assert missing.returncode == 1 and 'services "nope" not found' in missing.stderr


def blocked_node_port(host: str) -> socket.socket:
    """A listening socket on ``host`` at a free port of the NodePort range."""
    for port in random.sample(range(30000, 32768), 50):
        blocker = socket.socket()
        try:
            blocker.bind((host, port))
        except OSError:
            blocker.close()
            continue
        blocker.listen()
        return blocker
    raise RuntimeError("no free NodePort to block")


def test_a_nodeport_taken_on_one_host_is_a_warning_there(cluster: LocalCluster) -> None:
    blocker = blocked_node_port("127.0.0.3")  # n2's --node-ip; n1's 127.0.0.2 stays free
    port = blocker.getsockname()[1]
    manifest = cluster.root / "taken.yaml"
    service = MANIFEST.split("---")[1].replace("name: web}", "name: taken}")
    manifest.write_text(
        service.replace("targetPort: http}", f"targetPort: http, nodePort: {port}}}")
    )
    try:
        cluster.cli("n1", "apply", "-f", str(manifest))
        wait_until(lambda: ready(f"http://127.0.0.2:{port}/"), 90, what="n1's NodePort")

        def warned() -> str | None:
            out = cluster.cli("n2", "describe", "svc", "taken").stdout
            return out if "FailedBindNodePort" in out else None

        described = wait_until(warned, 60, what="the FailedBindNodePort event")
        assert (
            f"nodeport/n2  cannot listen on NodePort 127.0.0.3:{port}: Address already in use"
            in described
        )
        blocker.close()
        wait_until(lambda: ready(f"http://127.0.0.3:{port}/"), 30, what="n2's retried NodePort")
    finally:
        blocker.close()
        cluster.cli("n1", "delete", "service", "taken", check=False)


def test_nodeport_closes_when_the_service_goes(cluster: LocalCluster) -> None:
    port = node_port(cluster)
    wait_until(lambda: ready(f"http://127.0.0.3:{port}/"), 90, what="the NodePort")
    cluster.cli("n1", "delete", "service", "web")

    def closed() -> bool:
        try:
            http(f"http://127.0.0.3:{port}/")
        except urllib.error.URLError:
            return True
        return False

    wait_until(closed, 30, what="the NodePort to close")
