"""The router on real agents (slow): requests reach echo.wasm replicas from a node that runs
none, spread over both replicas, and a GET load loses nothing when a replica's node is
killed (issue 12, "Reliability"). The front doors' own checks are in test_nodeport_cluster.py.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from p2pkube.api.client import ApiClient
from p2pkube.devcluster import LocalCluster, wait_until
from tests.clusters import wait_all_ready
from tests.test_nodeport_cluster import ECHO
from tests.test_nodeport_cluster import MANIFEST as ONE_REPLICA

MANIFEST = ONE_REPLICA.replace("replicas: 1", "replicas: 2")
"""The front doors' echo.wasm Deployment (on nodes labelled role=web) and NodePort Service,
with a replica on each of two nodes."""
assert MANIFEST != ONE_REPLICA


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, X-P2pkube-Endpoint, body) of one GET; status 0 when the connection failed."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(
            urllib.request.Request(url, headers=headers or {}), timeout=15
        ) as response:
            body = response.read().decode()
            return response.status, response.headers.get("X-P2pkube-Endpoint", ""), body
    except urllib.error.HTTPError as exc:
        return exc.code, "", exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, "", str(exc)


def test_gets_spread_over_replicas_and_survive_a_killed_replica_node(
    cluster: LocalCluster,
) -> None:
    if not ECHO.exists():
        pytest.skip("examples not built (make examples)")
    cluster.start_signaling()
    cluster.start_agent("a", "--label", "role=web")
    cluster.start_agent("b", "--label", "role=web")
    cluster.start_agent("c")
    wait_all_ready(cluster, ["a", "b", "c"])
    manifest = cluster.root / "web.yaml"
    manifest.write_text(MANIFEST)
    cluster.cli("c", "apply", "-f", str(manifest))
    wait_until(
        lambda: sorted(cluster.ready_endpoints("c", "web").values()) == ["a", "b"],
        90,
        what="a ready replica on a and on b, as c sees them",
    )
    service = cluster.api("c", "GET", "/v1/objects/Service/default/web")
    url = f"http://{cluster.node_ip('c')}:{service['spec']['ports'][0]['nodePort']}/hello?x=1"

    answers = [get(url) for _ in range(20)]  # through c, which runs no replica
    assert {status for status, _, _ in answers} == {200}, answers[:3]
    assert sorted({endpoint.split("/")[0] for _, endpoint, _ in answers}) == ["a", "b"]
    assert "method: GET" in answers[0][2] and "query: x=1" in answers[0][2]
    api = ApiClient.from_data_dir(cluster.root / "c")  # kubectl's proxy path, through c's API
    bearer = {"Authorization": f"Bearer {api.token}"}
    proxied = get(f"{api.url}/api/v1/namespaces/default/services/web/proxy/p?x=2", bearer)
    assert proxied[0] == 200 and "path: /p" in proxied[2] and "query: x=2" in proxied[2]
    missing = get(f"{api.url}/api/v1/namespaces/default/services/nope/proxy/", bearer)
    assert missing[0] == 404 and 'service "nope" not found in namespace default' in missing[2]

    for via in ("a", "c"):  # the endpoint on the node itself, then one hop away
        port = service["spec"]["ports"][0]["nodePort"]
        took = []
        for _ in range(100):
            started = time.perf_counter()
            status, endpoint, _ = get(f"http://{cluster.node_ip(via)}:{port}/")
            took.append(time.perf_counter() - started)
            assert status == 200 and (via == "c" or endpoint.startswith("a/"))
        took.sort()
        print(f"through {via}: p50 {took[50] * 1e3:.1f} ms, p99 {took[98] * 1e3:.1f} ms")

    # 50 GET/s through c; b is killed after 2 s; the load goes on for 6 s more.
    results: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def timed() -> None:
        started = time.monotonic()
        status, endpoint, _ = get(url)
        results.append((time.monotonic() - started, status, endpoint))

    with ThreadPoolExecutor(max_workers=32) as pool:
        sent: list[Future[None]] = []

        def load() -> None:
            while not stop.is_set():
                sent.append(pool.submit(timed))
                time.sleep(0.02)

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(2)
        cluster.kill("b")
        time.sleep(6)
        stop.set()
        loader.join()
        for future in sent:
            future.result()
    failed = [r for r in results if r[1] != 200]
    latencies = sorted(r[0] for r in results)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"{len(results)} GETs, {len(failed)} failed, p50 {latencies[len(latencies) // 2]:.3f}s, "
        f"p99 {p99:.3f}s, max {latencies[-1]:.3f}s"
    )
    assert len(results) > 250 and failed == [], failed[:5]
    assert {r[2].split("/")[0] for r in results[-50:]} == {"a"}
    status = cluster.api("c", "GET", "/v1/status")["services"]
    assert status["requests"] >= len(results) and status["remote"] >= len(results)
