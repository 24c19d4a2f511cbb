"""WebAssembly pods on real agents (separate processes, real aiortc, pycrdt and wasmtime).

The chain ``a - b - c`` (a and c linked to b only): manifests applied on one node run on
another, modules travel peer to peer through relays, statuses are written by the node that
runs the pod and read everywhere, and logs are served by that node over the mesh.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.model.podspec import containers
from tests.clusters import chain_cluster, neighbours

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "examples" / "build"
FAST_RESTARTS = ["--set", "kubelet.backoff_initial=0.3", "--set", "kubelet.backoff_max=1"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator:
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    with chain_cluster(tmp_path_factory.mktemp("pods"), request, FAST_RESTARTS) as cluster:
        yield cluster


def pod(name: str, module: str, node: str, *args: str, **spec: Any) -> dict[str, Any]:
    container = spec.pop("container", {})
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"test": "pods"}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "main", "image": f"{module}.wasm", "args": list(args), **container}
            ],
            **spec,
        },
    }


def write_manifest(directory: Path, *objects: dict[str, Any]) -> Path:
    """A multi-document manifest next to copies of the modules it names."""
    for obj in objects:
        for _path, container in containers(obj):
            image = container["image"]
            if image.endswith(".wasm") and not (directory / image).exists():
                shutil.copy(BUILD / image, directory / image)
    path = directory / "manifest.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    return path


def pods(cluster: LocalCluster, viewer: str) -> dict[str, dict[str, Any]]:
    out = cluster.cli(viewer, "get", "pods", "-o", "json").stdout
    return {p["metadata"]["name"]: p for p in json.loads(out)["items"]}


def phase(cluster: LocalCluster, viewer: str, name: str) -> str | None:
    return (pods(cluster, viewer).get(name, {}).get("status") or {}).get("phase")


def container(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["status"]["containerStatuses"][0]


def table(cluster: LocalCluster, viewer: str) -> dict[str, list[str]]:
    """NAME -> the other columns of `get pods -o wide`."""
    lines = cluster.cli(viewer, "get", "pods", "-o", "wide").stdout.strip().splitlines()
    rows = {}
    for line in lines[1:]:
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


def test_a_pod_applied_on_a_runs_on_c_and_its_logs_reach_a(
    chain: LocalCluster, tmp_path: Path
) -> None:
    assert neighbours(chain, "a") == {"b"} and neighbours(chain, "c") == {"b"}
    manifest = write_manifest(
        tmp_path,
        pod(
            "hello",
            "hello",
            "c",
            "one",
            "two words",
            restartPolicy="Never",
            container={"env": [{"name": "GREETING", "value": "hi"}], "stdinData": "in\n"},
        ),
    )
    applied = chain.cli("a", "apply", "-f", str(manifest))
    assert applied.stdout.strip() == "pod/hello created"
    assert "published (hello.wasm)" in applied.stderr
    for viewer in "abc":
        wait_until(lambda v=viewer: phase(chain, v, "hello") == "Succeeded", 30, what=viewer)
    seen = pods(chain, "a")["hello"]
    terminated = container(seen)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    row = table(chain, "b")["hello"]  # READY STATUS RESTARTS AGE NODE IMAGE LABELS
    assert row[:3] == ["0/1", "Completed", "0"] and row[4] == "c"
    logs = chain.cli("a", "logs", "hello").stdout.splitlines()
    assert logs == [
        "hello from main",
        "argv[1] = one",
        "argv[2] = two words",
        "GREETING=hi",
        "stdin: in",
    ]
    stamped = chain.cli("b", "logs", "hello", "--timestamps", "--tail", "1").stdout.split()
    assert stamped[0].endswith("Z") and stamped[1:] == ["stdin:", "in"]
    # The module is on c now (it fetched it through b) as well as on a.
    digest = seen["spec"]["containers"][0]["image"]
    holders = chain.api("b", "GET", f"/v1/blobs/{digest}")["status"]["holders"]
    assert sorted(holders) == ["a", "c"]
    again = chain.cli("a", "apply", "-f", str(manifest))
    assert again.stdout.strip() == "pod/hello unchanged"


@pytest.mark.serial  # bounds the hostile pods' whole story in time
def test_hostile_pods_fail_with_reasons_and_spare_the_node(
    chain: LocalCluster, tmp_path: Path
) -> None:
    never = {"restartPolicy": "Never"}
    manifest = write_manifest(
        tmp_path,
        pod("steady", "ticker", "b", "0.2"),
        pod("spin", "loop", "b", activeDeadlineSeconds=2, **never),
        pod(
            "bomb", "membomb", "b", container={"resources": {"limits": {"memory": "64Mi"}}}, **never
        ),
        pod("flood", "flood", "b", **never),
        pod("deep", "stackbomb", "b", **never),
        pod("abort", "crash", "b", "abort", **never),
    )
    chain.cli("c", "apply", "-f", str(manifest))
    expected = {
        "spin": "DeadlineExceeded",
        "bomb": "OOMKilled",
        "flood": "OutputFlood",
        "deep": "StackOverflow",
        "abort": "Trapped",
    }
    started = time.monotonic()
    failed_after: dict[str, float] = {}  # when a first listed each one Failed: which was slow

    def all_failed() -> bool:
        for name in expected:
            if name not in failed_after and phase(chain, "a", name) == "Failed":
                failed_after[name] = round(time.monotonic() - started, 1)
        return len(failed_after) == len(expected)

    wait_until(all_failed, 40, what="all failed")
    took = time.monotonic() - started
    print(f"seconds until a listed each hostile pod Failed: {failed_after}")
    b_loop = chain.api("b", "GET", "/v1/status")["membership"]
    assert took < 30, (failed_after, {k: b_loop[k] for k in ("stalls", "starvedSpells")})
    seen = pods(chain, "a")
    for name, reason in expected.items():
        assert container(seen[name])["state"]["terminated"]["reason"] == reason, name
    rows = table(chain, "c")
    assert {name: rows[name][1] for name in expected} == expected
    steady = seen["steady"]
    assert steady["status"]["phase"] == "Running" and container(steady)["restartCount"] == 0
    assert rows["steady"][:3] == ["1/1", "Running", "0"]
    # b is healthy: it answers, its memory is bounded, and the ticker keeps ticking.
    status = chain.api("b", "GET", "/v1/status")
    assert status["process"]["rssBytes"] < 400 * 1024 * 1024
    ticks = len(chain.cli("a", "logs", "steady").stdout.splitlines())
    wait_until(
        lambda: len(chain.cli("a", "logs", "steady").stdout.splitlines()) >= ticks + 3,
        10,
        what="more ticks",
    )
    flood_log = chain.cli("a", "logs", "flood", "--tail", "2").stdout.splitlines()
    assert len(flood_log) == 2 and flood_log[-1].startswith("flood ")
    for name in [*expected, "steady"]:
        chain.cli("a", "delete", "pod", name)


def test_restart_policy_back_off_and_previous_logs(chain: LocalCluster, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, pod("crashy", "crash", "c", restartPolicy="OnFailure"))
    chain.cli("a", "apply", "-f", str(manifest))

    def restarted() -> dict[str, Any] | None:
        obj = pods(chain, "b").get("crashy")
        return obj if obj and container(obj)["restartCount"] >= 2 else None

    obj = wait_until(restarted, 30, what="two restarts")
    last = container(obj)["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (3, "Error")
    # Between two crashes the container runs for a moment, and `get pods` then says Running
    # (as kubectl does): about 2.5% of the time here (20 of 850 samples from another node,
    # before and after this session's changes). What a user sees otherwise is the back-off.
    wait_until(
        lambda: table(chain, "a")["crashy"][1] in ("CrashLoopBackOff", "Error"),
        10,
        what="crashy shown CrashLoopBackOff",
    )
    previous = chain.cli("a", "logs", "crashy", "--previous").stdout.splitlines()
    assert previous == ["about to fail", "fatal: simulated failure"]
    chain.cli("a", "delete", "-f", str(manifest))
    wait_until(lambda: "crashy" not in pods(chain, "b"), 15, what="crashy gone")


def test_delete_stops_the_pod_on_its_node_then_removes_it(
    chain: LocalCluster, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path, pod("svc", "ticker", "c", "30"))
    chain.cli("a", "apply", "-f", str(manifest))
    wait_until(lambda: phase(chain, "a", "svc") == "Running", 30, what="svc running")
    assert chain.api("c", "GET", "/v1/status")["pods"]["runtime"]["running"] == 1
    asked = time.monotonic()
    assert chain.cli("a", "delete", "pod", "svc").stdout.strip() == 'pod "svc" deleted'
    for viewer in "abc":
        wait_until(lambda v=viewer: "svc" not in pods(chain, v), 15, what=f"svc gone on {viewer}")
    assert time.monotonic() - asked < 10
    assert chain.api("c", "GET", "/v1/status")["pods"]["runtime"]["running"] == 0
    missing = chain.cli("a", "logs", "svc", check=False)
    assert missing.returncode == 1 and 'pods "svc" not found' in missing.stderr


def test_an_invalid_manifest_changes_nothing_and_says_everything(
    chain: LocalCluster, tmp_path: Path
) -> None:
    bad = pod("Bad_Name", "hello", "c", restartPolicy="Sometimes")
    bad["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}}
    worse = pod("ok-name", "missing", "c")
    worse["spec"]["replicas"] = 3
    (tmp_path / "hello.wasm").write_bytes((BUILD / "hello.wasm").read_bytes())
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump_all([bad, worse]))
    before_pods, before_blobs = (
        pods(chain, "a"),
        chain.cli("a", "get", "blobs", "-o", "name").stdout,
    )
    result = chain.cli("a", "apply", "-f", str(manifest), check=False)
    assert result.returncode == 1
    errors = result.stderr
    for expected in (
        "metadata.name",
        "spec.restartPolicy",
        "resources.limits.memory: 'lots' is not a quantity",
        "containers[0].image: no such file",
        "spec.replicas: unknown field",
        "document 1",
        "document 2",
    ):
        assert expected in errors, expected
    assert "nothing was applied" in errors
    assert pods(chain, "a") == before_pods
    assert chain.cli("a", "get", "blobs", "-o", "name").stdout == before_blobs


def test_logs_follow_streams_from_another_node_until_the_container_ends(
    chain: LocalCluster, tmp_path: Path
) -> None:
    manifest = write_manifest(
        tmp_path, pod("counter", "ticker", "c", "0.4", "6", restartPolicy="Never")
    )
    chain.cli("a", "apply", "-f", str(manifest))
    wait_until(lambda: phase(chain, "a", "counter") == "Running", 30, what="counter running")
    started = time.monotonic()
    followed = chain.cli("a", "logs", "-f", "counter")
    took = time.monotonic() - started
    assert followed.stdout.splitlines() == [f"tick {n}" for n in range(1, 7)]
    assert took > 1.0, "follow returned before the container had printed everything"
    wait_until(lambda: phase(chain, "a", "counter") == "Succeeded", 10, what="counter done")
    chain.cli("a", "delete", "pod", "counter")
    # A fast writer: every line arrives once, in order, even when lines keep coming while
    # the follower's previous poll is still on its way back.
    manifest = write_manifest(
        tmp_path, pod("chatty", "ticker", "c", "0.002", "1500", restartPolicy="Never")
    )
    chain.cli("a", "apply", "-f", str(manifest))
    wait_until(lambda: phase(chain, "a", "chatty") in ("Running", "Succeeded"), 30)
    followed = chain.cli("a", "logs", "-f", "chatty").stdout.splitlines()
    assert followed == [f"tick {n}" for n in range(1, 1501)]
    chain.cli("a", "delete", "pod", "chatty")


def test_a_restarted_agent_takes_its_pods_back(chain: LocalCluster, tmp_path: Path) -> None:
    """Last in the file: it kills c."""
    manifest = write_manifest(
        tmp_path,
        pod("service", "ticker", "c", "0.5"),
        pod("job", "ticker", "c", "0.5", restartPolicy="Never"),
    )
    chain.cli("a", "apply", "-f", str(manifest))
    for name in ("service", "job"):
        wait_until(lambda n=name: phase(chain, "a", n) == "Running", 30, what=f"{name} running")
    chain.kill("c")
    chain.start_agent("c")
    chain.wait_api("c")

    def resumed() -> dict[str, Any] | None:
        seen = pods(chain, "a")
        service, job = seen.get("service"), seen.get("job")
        if not service or not job or job["status"]["phase"] != "Failed":
            return None
        if container(service)["restartCount"] != 1 or not container(service)["ready"]:
            return None
        return seen

    seen = wait_until(resumed, 40, what="c to take its pods back")
    assert container(seen["service"])["lastState"]["terminated"]["reason"] == "AgentRestarted"
    assert container(seen["job"])["state"]["terminated"]["reason"] == "AgentRestarted"
    assert chain.api("c", "GET", "/v1/status")["pods"]["runtime"]["running"] == 1
