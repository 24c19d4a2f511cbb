"""Prometheus metrics (``p2pkube join --metrics-address``; docs/metrics.md).

A real two-agent cluster serves ``/metrics`` on free ports (published as ``metricsUrl`` in
api.json); each is scraped and parsed with prometheus_client's own parser before and after
real work (a Deployment of the echo.wasm handler behind a Service, requests through the
Service, a Job of primes.wasm on the node that must pull the module), and the series that
work should move are checked, with their types and label sets. docs/metrics.md must list
exactly the series an agent serves. The in-process tests check the parts that need no
cluster: the observer's series, the event-loop lag of a really blocked loop, and that two
agents' registries in one process stay apart.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from p2pkube.cli.main import cli
from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.metrics.exporter import AgentMetrics
from p2pkube.metrics.settings import MetricsSettings, parse_address
from tests.clusters import module_cluster, wait_all_ready

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DOC = ROOT / "docs" / "metrics.md"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scrape:
    """One parsed ``/metrics`` answer: family types and labels, and every sample's value."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.labels: dict[str, set[str]] = {}
        self.samples: Samples = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            names = self.labels.setdefault(family.name, set())
            for sample in family.samples:
                names.update(k for k in sample.labels if k != "le")
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly ``labels``; KeyError naming it when absent."""
        return self.samples[(name, frozenset(labels.items()))]

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def series(self) -> set[str]:
        """Series names as queried: counters with ``_total``, the others as named."""
        return {f"{n}_total" if t == "counter" else n for n, t in self.types.items()}


def metrics_url(cluster: LocalCluster, name: str) -> str:
    info = json.loads((cluster.root / name / "api.json").read_text())
    return str(info["metricsUrl"])


def fetch(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(cluster: LocalCluster, name: str) -> Scrape:
    status, content_type, body = fetch(metrics_url(cluster, name))
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    return Scrape(body)


def proxy_get(cluster: LocalCluster, name: str, path: str) -> int:
    """GET through agent ``name``'s API proxy route into the Service ``web``; the status."""
    data_dir = cluster.root / name
    base = json.loads((data_dir / "api.json").read_text())["url"]
    token = (data_dir / "api.token").read_text().strip()
    request = urllib.request.Request(
        f"{base}/api/v1/namespaces/default/services/web:http/proxy{path}",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def workload_manifest(tmp: Path) -> Path:
    """examples/web.yaml (two replicas, its Service without the fixed NodePort, which
    another cluster on this machine may hold), examples/batch.yaml (two completions of
    a small count, on the ``role=worker`` node, which must pull primes.wasm from a peer), and
    a pod of examples/pods/crash.c there too, restarted each time it fails."""
    web = list(yaml.safe_load_all((EXAMPLES / "web.yaml").read_text()))
    batch = yaml.safe_load((EXAMPLES / "batch.yaml").read_text())
    for doc in web:
        if doc["kind"] == "Deployment":
            doc["spec"]["replicas"] = 2
            container = doc["spec"]["template"]["spec"]["containers"][0]
            container["image"] = str(EXAMPLES / container["image"])
        else:
            doc["spec"].pop("type")
            for port in doc["spec"]["ports"]:
                port.pop("nodePort")
    batch["spec"].update(completions=2, parallelism=2)
    pod = batch["spec"]["template"]["spec"]
    pod["nodeSelector"] = {"role": "worker"}
    container = pod["containers"][0]
    container["image"] = str(EXAMPLES / container["image"])
    container["args"] = ["100000"]
    crasher = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crasher"},
        "spec": {
            "nodeSelector": {"role": "worker"},
            "restartPolicy": "Always",
            "containers": [{"name": "crash", "image": str(EXAMPLES / "build" / "crash.wasm")}],
        },
    }
    path = tmp / "work.yaml"
    path.write_text(yaml.safe_dump_all([*web, batch, crasher]))
    return path


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LocalCluster]:
    if not (EXAMPLES / "build" / "echo.wasm").exists():
        pytest.skip("examples not built (make examples)")
    with module_cluster(tmp_path_factory.mktemp("metrics"), request) as local:
        local.start_signaling()
        local.extra_agent_args = ["--metrics-address", "127.0.0.1:0"]
        local.start_agent("a")
        local.wait_api("a")
        local.start_agent("b", "--label", "role=worker")
        wait_all_ready(local, ["a", "b"])
        yield local


def test_metrics_endpoint_serves_only_metrics(cluster: LocalCluster) -> None:
    url = metrics_url(cluster, "a")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url), url
    status, _, body = fetch(url.removesuffix("metrics"))
    assert status == 200 and "/metrics" in body
    assert fetch(url.removesuffix("metrics") + "v1/status")[0] == 404
    # Not the token-protected API: a scrape carries no token, and the answer no secret.
    token = (cluster.root / "a" / "api.token").read_text().strip()
    assert token not in fetch(url)[2]


def test_series_move_as_the_cluster_works(cluster: LocalCluster, tmp_path: Path) -> None:
    before = {name: scrape(cluster, name) for name in "ab"}
    a0, b0 = before["a"], before["b"]
    for name, first in before.items():
        info = [ls for (n, ls) in first.samples if n == "p2pkube_build_info"]
        assert len(info) == 1 and ("node", name) in info[0], info
        assert (
            dict(info[0])["cluster"]
            == json.loads(cluster.cli(name, "status", "-o", "json").stdout)["cluster"]
        )
    # Types and label sets.
    expected = {
        "p2pkube_link_bytes": ("counter", {"peer", "direction"}),
        "p2pkube_link_frames": ("counter", {"peer", "direction"}),
        "p2pkube_sync_updates": ("counter", {"direction"}),
        "p2pkube_state_document_bytes": ("gauge", set()),
        "p2pkube_membership_members": ("gauge", {"status"}),
        "p2pkube_scheduler_pass_duration_seconds": ("histogram", set()),
        "p2pkube_pods": ("gauge", set()),  # no pod yet: no sample, so no label seen
        "p2pkube_pod_start_duration_seconds": ("histogram", set()),
        "p2pkube_event_loop_lag_seconds": ("histogram", set()),
        "p2pkube_event_loop_last_lag_seconds": ("gauge", set()),
        "p2pkube_build_info": ("gauge", {"version", "node", "cluster", "kind"}),
        "process_cpu_seconds": ("counter", set()),
    }
    for family, (kind, labels) in expected.items():
        assert (a0.types.get(family), a0.labels.get(family)) == (kind, labels), family
    assert a0.value("p2pkube_links") == 1
    members = a0.total("p2pkube_membership_members")  # alive, or suspected on a busy machine
    assert members - a0.value("p2pkube_membership_members", status="dead") == 2

    applied = cluster.cli("a", "apply", "-f", str(workload_manifest(tmp_path)))
    assert "deployment" in applied.stdout.lower(), applied.stdout
    wait_until(lambda: proxy_get(cluster, "b", "/hello") == 200, 90, what="web through b")
    answered = [proxy_get(cluster, "b", f"/r{i}") for i in range(6)]
    assert answered == [200] * 6, answered

    def job_done() -> bool:
        job = cluster.cli("a", "get", "job", "primes-batch", "-o", "json", check=False)
        return job.returncode == 0 and json.loads(job.stdout)["status"].get("succeeded") == 2

    wait_until(job_done, 120, what="the Job's two completions")
    wait_until(
        lambda: scrape(cluster, "b").value("p2pkube_container_restarts_total") >= 1,
        60,
        what="the crasher's first restart",
    )
    time.sleep(1.0)  # the lag task ticks at 0.5 s; statuses settle
    a1, b1 = scrape(cluster, "a"), scrape(cluster, "b")

    # Links and sync.
    for node, peer, x0, x1 in (("a", "b", a0, a1), ("b", "a", b0, b1)):
        for direction in ("sent", "received"):
            for family in ("p2pkube_link_bytes_total", "p2pkube_link_frames_total"):
                moved = x1.value(family, peer=peer, direction=direction) > x0.total(
                    family, peer=peer, direction=direction
                )
                assert moved, (node, family, direction)
        assert x1.total("p2pkube_sync_updates_total") > x0.total("p2pkube_sync_updates_total")
        assert x1.total("p2pkube_sync_update_bytes_total") > x0.total(
            "p2pkube_sync_update_bytes_total"
        )
        assert x1.value("p2pkube_state_document_bytes") > x0.value("p2pkube_state_document_bytes")
        assert x1.value("p2pkube_membership_probes_total") > x0.value(
            "p2pkube_membership_probes_total"
        )
        assert x1.value("p2pkube_event_loop_lag_seconds_count") > x0.value(
            "p2pkube_event_loop_lag_seconds_count"
        )
        assert x1.value("p2pkube_scheduler_passes_total") > x0.value(
            "p2pkube_scheduler_passes_total"
        )
        assert x1.value("p2pkube_scheduler_pass_duration_seconds_count") >= x1.value(
            "p2pkube_scheduler_passes_total"
        ) - x0.value("p2pkube_scheduler_passes_total")

    def anti_entropy_rounds() -> float:
        return sum(
            scrape(cluster, n).value("p2pkube_sync_anti_entropy_rounds_total") for n in "ab"
        )

    # A round every 5 s (state.anti_entropy_interval) on each node, postponed while a burst of
    # updates arrives, 3 times at most (state.anti_entropy_max_postponed): within 20 s of a
    # node's start, then, and the cluster's work is such a burst.
    wait_until(lambda: anti_entropy_rounds() > 0, 25, what="an anti-entropy round")

    # Scheduling: the Deployment (and its ReplicaSet) are led by a node.
    leases = a1.value("p2pkube_scheduler_leases_held") + b1.value("p2pkube_scheduler_leases_held")
    assert leases >= 1

    # Pods: 2 web replicas and the crasher Running, the Job's two pods Succeeded on b.
    started = a1.value("p2pkube_pod_starts_total") + b1.value("p2pkube_pod_starts_total")
    assert started >= 5
    running = a1.total("p2pkube_pods", phase="Running") + b1.total("p2pkube_pods", phase="Running")
    assert running == 3
    assert b1.value("p2pkube_pods", phase="Succeeded") == 2
    assert b1.value("p2pkube_container_run_duration_seconds_count", outcome="succeeded") == 2
    # The crasher exits 3 at once and is restarted after 1 s, 2 s, 4 s... of back-off.
    assert b1.value("p2pkube_container_restarts_total") >= 1
    assert b1.value("p2pkube_container_run_duration_seconds_count", outcome="failed") >= 2
    assert b1.value("p2pkube_container_starts_total") >= 2 + 2  # the Job's, the crasher's
    assert b1.labels["p2pkube_pods"] == {"phase"}
    starts = a1.value("p2pkube_pod_start_duration_seconds_count") + b1.value(
        "p2pkube_pod_start_duration_seconds_count"
    )
    assert starts == started
    # b compiled primes.wasm (a miss) for two concurrent pods: the other load was a hit.
    assert b1.total("p2pkube_compile_cache_misses_total") >= 1
    loads = b1.total("p2pkube_compile_cache_misses_total") + b1.total(
        "p2pkube_compile_cache_hits_total"
    )
    assert loads >= 2
    assert b1.labels["p2pkube_compile_cache_hits"] == {"compiler", "tier"}

    # Blobs: b pulled primes.wasm, which only a (where it was applied) held.
    size = (EXAMPLES / "build" / "primes.wasm").stat().st_size
    assert b1.value("p2pkube_blob_pulled_bytes_total") >= size
    assert a1.value("p2pkube_blob_served_bytes_total") >= size

    # Service requests through b's router, by code, with their latencies.
    assert b1.value("p2pkube_service_requests_total", code="200") >= 7  # /hello, then /r0-5
    assert b1.value("p2pkube_service_request_duration_seconds_count", code="200") == b1.value(
        "p2pkube_service_requests_total", code="200"
    )
    assert b1.labels["p2pkube_service_requests"] == {"code"}
    assert b1.total("p2pkube_service_attempts_total") >= 7


def documented_series() -> dict[str, str]:
    """Series name -> type, from the tables of docs/metrics.md."""
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (counter|gauge|histogram) \|", DOC.read_text(), re.M)
    return dict(rows)


def test_doc_lists_every_series_the_agent_serves(cluster: LocalCluster) -> None:
    served = scrape(cluster, "a")
    documented = documented_series()
    kinds = {f"{n}_total" if t == "counter" else n: t for n, t in served.types.items()}
    assert set(documented) == served.series(), (
        f"served, not documented: {sorted(served.series() - set(documented))}; "
        f"documented, not served: {sorted(set(documented) - served.series())}"
    )
    assert documented == kinds


def test_metrics_address_is_checked() -> None:
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("9464", ":9464", "::1:9464", "host:port", "127.0.0.1:70000", "[nope]:1"):
        with pytest.raises(ValueError):
            parse_address(bad)
    result = CliRunner().invoke(
        cli,
        ["join", "ws://127.0.0.1:1", "--name", "x", "--metrics-address", "9464"],
        env={"P2PKUBE_TOKEN": "x" * 40},
    )
    assert result.exit_code == 2 and "is not HOST:PORT" in result.output, result.output


def test_a_taken_metrics_port_stops_the_agent_with_a_clear_error(cluster: LocalCluster) -> None:
    taken = metrics_url(cluster, "a").split("//")[1].split("/")[0]
    agent = cluster.start_agent("c", "--metrics-address", taken)
    assert agent.process is not None
    assert agent.process.wait(60) == 1
    assert f"cannot serve metrics on {taken}: " in cluster.log_tail("c")
    assert "Traceback" not in cluster.log_tail("c")
    assert "c" not in cluster.nodes("a")  # it failed before joining: no Node object


# -- in process --------------------------------------------------------------------------------


def parsed(metrics: AgentMetrics) -> Scrape:
    from prometheus_client import generate_latest

    return Scrape(generate_latest(metrics.registry).decode())


async def test_observer_series_and_registries_apart() -> None:
    settings = MetricsSettings(address="127.0.0.1:0", loop_lag_interval=0.05)
    one = AgentMetrics(settings, node="one", cluster="c1", kind="native")
    two = AgentMetrics(settings, node="two", cluster="c1", kind="native")
    one.scheduling_pass(0.002)
    one.pod_started(1.5)
    one.container_started()
    one.container_restarted()
    one.container_ended(0.5, True)
    one.container_ended(30, False)
    one.service_request(200, 0.004)
    one.service_request(503, 0.001)
    first, second = parsed(one), parsed(two)
    assert first.value("p2pkube_scheduler_pass_duration_seconds_bucket", le="0.0025") == 1
    assert first.value("p2pkube_pod_start_duration_seconds_sum") == 1.5
    assert first.value("p2pkube_pod_starts_total") == 1
    assert first.value("p2pkube_container_restarts_total") == 1
    assert first.value("p2pkube_container_run_duration_seconds_count", outcome="succeeded") == 1
    assert (
        first.value("p2pkube_container_run_duration_seconds_bucket", outcome="failed", le="10.0")
        == 0
    )
    assert first.value("p2pkube_service_requests_total", code="503") == 1
    assert first.value("p2pkube_service_request_duration_seconds_count", code="200") == 1
    # The other agent's registry saw none of it.
    assert second.value("p2pkube_pod_starts_total") == 0
    assert second.total("p2pkube_service_requests_total") == 0
    assert second.total("p2pkube_build_info", node="two") == 1
    assert second.total("p2pkube_build_info", node="one") == 0


async def test_event_loop_lag_measures_a_blocked_loop() -> None:
    metrics = AgentMetrics(
        MetricsSettings(loop_lag_interval=0.05), node="n", cluster="c", kind="native"
    )
    await metrics.start()
    try:
        await asyncio.sleep(0.2)
        time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop on purpose: the lag to measure
        await asyncio.sleep(0.12)
        seen = parsed(metrics)
    finally:
        await metrics.close()
    assert seen.value("p2pkube_event_loop_lag_seconds_count") >= 3
    assert seen.value("p2pkube_event_loop_lag_seconds_bucket", le="0.1") < seen.value(
        "p2pkube_event_loop_lag_seconds_count"
    )  # the stalled check woke over 0.1 s late
    assert seen.value("p2pkube_event_loop_lag_seconds_sum") >= 0.2
