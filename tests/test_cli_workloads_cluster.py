"""The workload commands on real agents (separate processes, real aiortc, pycrdt, wasmtime).

Three agents in a full mesh. One Deployment of examples/build/ticker.wasm is taken through
what a user does with kubectl: apply, ``rollout status``, ``get deployments``, ``scale``, a
template change and ``rollout status`` again, ``rollout history``, ``rollout undo``,
``describe pod`` (its Scheduled and Started events), ``get events`` and ``get pods -w``, each
command run as a user runs it (``python -m p2pkube --data-dir ...``) on one node or another.
"""

from __future__ import annotations

import json
import re
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
from tests.clusters import module_cluster, wait_all_ready

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "examples" / "build"
NAMES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator:
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    with module_cluster(tmp_path_factory.mktemp("cli-workloads") / "cluster", request) as cluster:
        cluster.start_signaling()
        cluster.extra_agent_args = ["--set", "kubelet.backoff_initial=0.2", "--memory", "1Gi"]
        for name in NAMES:
            cluster.start_agent(name)
        wait_all_ready(cluster, NAMES)
        yield cluster


def web(replicas: int, *args: str) -> dict[str, Any]:
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "ticker.wasm",
                            "args": list(args),
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "16Mi"},
                                "limits": {"memory": "64Mi"},
                            },
                        }
                    ]
                },
            },
        },
    }


def write(directory: Path, obj: dict[str, Any]) -> Path:
    """The manifest next to a copy of the module it names (``image: ticker.wasm``)."""
    if not (directory / "ticker.wasm").exists():
        shutil.copy(BUILD / "ticker.wasm", directory / "ticker.wasm")
    path = directory / "web.yaml"
    path.write_text(yaml.safe_dump(obj))
    return path


def cells(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


def pod_names(mesh: LocalCluster, viewer: str) -> list[str]:
    out = mesh.cli(viewer, "get", "pods", "-l", "app=web", "-o", "name").stdout
    return [line.removeprefix("pod/") for line in out.split()]


def rolled_out(mesh: LocalCluster, viewer: str) -> list[str]:
    """`rollout status` to the end (exit 0), its lines."""
    result = mesh.cli(viewer, "rollout", "status", "deployment", "web", "--timeout", "30s")
    lines = result.stdout.splitlines()
    assert lines[-1] == 'deployment "web" successfully rolled out', lines
    assert all(line.startswith(("Waiting for deployment", 'deployment "web"')) for line in lines), (
        lines
    )
    return lines


def template_args(mesh: LocalCluster, viewer: str) -> list[str]:
    obj = json.loads(mesh.cli(viewer, "get", "deployment", "web", "-o", "json").stdout)
    return list(obj["spec"]["template"]["spec"]["containers"][0]["args"])


def test_a_deployment_through_the_cli(mesh: LocalCluster, tmp_path: Path) -> None:
    started = time.monotonic()
    manifest = write(tmp_path, web(3, "0.5"))
    assert mesh.cli("a", "apply", "-f", str(manifest)).stdout.strip() == "deployment/web created"

    # rollout status follows the watch on another node until all 3 are available.
    rolled_out(mesh, "b")
    table = cells(mesh.cli("c", "get", "deployments").stdout)
    assert table[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1][:4] == ["web", "3/3", "3", "3"]
    wide = cells(mesh.cli("a", "get", "rs", "-o", "wide").stdout)
    assert wide[1][1:4] == ["3", "3", "3"] and wide[1][-1].startswith("app=web,pod-template-hash=")

    # scale: read-modify-write of spec.replicas; one pod is left.
    assert mesh.cli("c", "scale", "deployment", "web", "--replicas", "1").stdout == (
        "deployment/web scaled\n"
    )
    rolled_out(mesh, "a")
    wait_until(lambda: len(pod_names(mesh, "b")) == 1, 15, what="one pod left")
    assert cells(mesh.cli("b", "get", "deploy").stdout)[1][:4] == ["web", "1/1", "1", "1"]

    # A template change is a new revision, rolled out.
    changed = web(1, "0.3")
    manifest.write_text(yaml.safe_dump(changed))
    assert mesh.cli("b", "apply", "-f", str(manifest)).stdout.strip() == (
        "deployment/web configured"
    )
    rolled_out(mesh, "c")
    history = mesh.cli("a", "rollout", "history", "deployment", "web").stdout.splitlines()
    assert history == ["deployment/web", "REVISION  CHANGE-CAUSE", "1         <none>",
                       "2         <none>"]  # fmt: skip
    revision_1 = mesh.cli("a", "rollout", "history", "deploy/web", "--revision", "1").stdout
    assert "      0.5" in revision_1.splitlines()

    # undo brings revision 1's template back (as revision 3).
    assert mesh.cli("a", "rollout", "undo", "deployment", "web").stdout == (
        "deployment/web rolled back\n"
    )
    assert template_args(mesh, "b") == ["0.5"]
    rolled_out(mesh, "b")
    wait_until(
        lambda: (
            mesh.cli("c", "rollout", "history", "deploy", "web").stdout.splitlines()[2:]
            == ["2         <none>", "3         <none>"]
        ),
        10,
        what="revision 1 to become 3",
    )
    (name,) = wait_until(
        lambda: (names := pod_names(mesh, "c")) and len(names) == 1 and names, 15, what="one pod"
    )
    pod = json.loads(mesh.cli("c", "get", "pod", name, "-o", "json").stdout)
    assert pod["spec"]["containers"][0]["args"] == ["0.5"]
    again = mesh.cli("a", "rollout", "undo", "deploy", "web", "--to-revision", "3").stdout
    assert "skipped rollback" in again

    # describe pod (by its name prefix, as kubectl allows) lists its events.
    def described() -> str | None:
        text = mesh.cli("a", "describe", "pod", name).stdout
        return text if "Scheduled" in text and "Started" in text else None

    text = wait_until(described, 10, what="Scheduled and Started events")
    lines = text.splitlines()
    assert lines[0].split() == ["Name:", name]
    assert "Controlled By:  ReplicaSet/web-" in text
    assert re.search(r"^Status:\s+Running$", text, re.M)
    assert re.search(r"^\s+State:\s+Running$", text, re.M)
    events = cells("\n".join(lines[lines.index("Events:") + 1 :]))
    assert events[0] == ["Type", "Reason", "Age", "From", "Message"]
    reasons = {row[1]: row for row in events[2:]}
    assert reasons["Scheduled"][3].startswith("scheduler/")
    assert reasons["Scheduled"][4].startswith(f"Successfully assigned default/{name} to ")
    assert reasons["Started"][3].startswith("kubelet/")
    assert name[: len("web-")] == "web-"
    assert mesh.cli("b", "describe", "pod", name[:-3]).stdout.count("Name:  ") >= 1

    # get events lists them too (kubectl's columns, OBJECT kind/name).
    listed = cells(mesh.cli("b", "get", "events").stdout)
    assert listed[0] == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    about = {(row[2], row[3]) for row in listed[1:]}
    assert ("Scheduled", f"pod/{name}") in about and ("Started", f"pod/{name}") in about
    assert any(row[3] == "deployment/web" and row[2] == "ScalingReplicaSet" for row in listed[1:])

    # get pods -w: the list, then a row for each change (here: scaling up to 2 while watching).
    watch = subprocess.Popen(
        [sys.executable, "-m", "p2pkube", "--data-dir", str(mesh.root / "c"), "get", "pods",
         "-w", "-l", "app=web", "--request-timeout", "4s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert watch.stdout is not None
        header = watch.stdout.readline()
        assert header.split()[:3] == ["NAME", "READY", "STATUS"]
        first = watch.stdout.readline()
        assert first.split()[0] == name
        mesh.cli("a", "scale", "deploy", "web", "--replicas", "2")
        out, err = watch.communicate(timeout=20)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, err
    later = [line.split() for line in out.splitlines()]
    assert "NAME" not in {row[0] for row in later}  # the header only once
    new = {row[0] for row in later} - {name}
    assert len(new) == 1, out  # the new pod's rows: Pending, then Running
    assert any(row[2] == "Running" for row in later if row[0] in new), out

    mesh.cli("a", "delete", "deployment", "web")
    wait_until(lambda: not pod_names(mesh, "b"), 20, what="web's pods gone")
    assert time.monotonic() - started < 60
