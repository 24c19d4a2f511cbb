"""Host access is the node operator's grant: hostPath attacks against real agents.

Three agents in processes, real wasmtime pods (``files.wasm`` lists a directory, prints the
first line of its ``input.txt`` and tries to write ``output.txt``):

* ``n1`` grants nothing (the default). Its data dir was made 0755 with a 0644 file in it
  before it first started, as an older version or a loose umask would leave it.
* ``n2`` grants ``share`` read-only and ``out`` read-write.
* ``n3`` grants, read-write, the directory that holds its own data dir.

The attacker holds the join token: it applies pods from another node, as any member can.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from p2pkube.devcluster import LocalCluster, wait_until
from tests.clusters import module_cluster, wait_all_ready

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "examples" / "build"
REFUSED = "HostPathNotAllowed"


@dataclass
class Lab:
    cluster: LocalCluster
    share: Path
    """Granted read-only on n2; holds input.txt and ``escape``, a symlink to ``outside``."""
    out: Path
    """Granted read-write on n2."""
    outside: Path
    """Granted nowhere."""

    def data_dir(self, node: str) -> Path:
        return (self.cluster.root / node).resolve()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    hosts = tmp_path_factory.mktemp("host").resolve()
    share, out, outside = hosts / "share", hosts / "out", hosts / "outside"
    for directory in (share, out, outside):
        directory.mkdir()
    (share / "input.txt").write_text("shared by the operator\n")
    (outside / "input.txt").write_text("not granted to anyone\n")
    (share / "escape").symlink_to(outside)
    root = tmp_path_factory.mktemp("hostpaths").resolve() / "cluster"
    with module_cluster(root, request) as cluster:
        loose = cluster.root / "n1"
        loose.mkdir(parents=True, mode=0o755)
        loose.chmod(0o755)
        (loose / "left-behind.txt").write_text("written with umask 022\n")
        (loose / "left-behind.txt").chmod(0o644)
        cluster.start_signaling()
        cluster.start_agent("n1")
        cluster.start_agent("n2", "--allow-host-path", str(share), "--allow-host-path", f"{out}:rw")
        cluster.start_agent("n3", "--allow-host-path", f"{cluster.root}:rw")
        wait_all_ready(cluster, ["n1", "n2", "n3"])
        yield Lab(cluster, share, out, outside)


def pod(
    name: str,
    host_path: Path | str,
    *args: str,
    node: str | None = None,
    writable: bool = False,
    module: str = "files",
) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": "host", "mountPath": "/data"}
    if writable:
        mount["readOnly"] = False
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            **({"nodeName": node} if node else {}),
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": f"{module}.wasm",
                    "args": list(args) or ["/data"],
                    "volumeMounts": [mount],
                }
            ],
            "volumes": [{"name": "host", "hostPath": {"path": str(host_path)}}],
        },
    }


def apply(lab: Lab, directory: Path, *objects: dict[str, Any], on: str = "n1") -> None:
    """Apply ``objects`` from node ``on``, as any holder of the token may."""
    for module in ("files", "ticker", "hello"):
        shutil.copy(BUILD / f"{module}.wasm", directory / f"{module}.wasm")
    manifest = directory / "manifest.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    lab.cluster.cli(on, "apply", "-f", str(manifest))


def pods(lab: Lab, viewer: str = "n1") -> dict[str, dict[str, Any]]:
    items = lab.cluster.api(viewer, "GET", "/v1/objects/Pod")["items"]
    return {p["metadata"]["name"]: p for p in items}


def ended(lab: Lab, *names: str) -> dict[str, dict[str, Any]]:
    """The pods ``names`` once each has ended (Succeeded or Failed)."""

    def check() -> dict[str, dict[str, Any]] | None:
        seen = pods(lab)
        done = {n: seen[n] for n in names if n in seen and phase(seen[n]) in DONE}
        return done if len(done) == len(names) else None

    return wait_until(check, 40, what=f"{', '.join(names)} to end")


DONE = ("Succeeded", "Failed")


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def unschedulable(lab: Lab, name: str) -> dict[str, Any]:
    """The status of pod ``name`` once the scheduler found no node for it."""

    def check() -> dict[str, Any] | None:
        status = pods(lab).get(name, {}).get("status") or {}
        scheduled = (status.get("conditions") or [{}])[0]
        return status if scheduled.get("reason") == "Unschedulable" else None

    return wait_until(check, 30, what=f"{name} to be unschedulable")


def logs(lab: Lab, name: str) -> list[str]:
    return lab.cluster.cli("n1", "logs", name).stdout.splitlines()


def event(lab: Lab, name: str, reason: str) -> dict[str, Any]:
    """The event ``reason`` about ``name``, once recorded (events are written in batches)."""

    def check() -> dict[str, Any] | None:
        items = lab.cluster.api("n1", "GET", "/v1/objects/Event")["items"]
        return next(
            (
                e
                for e in items
                if e.get("involvedObject", {}).get("name") == name and e["reason"] == reason
            ),
            None,
        )

    return wait_until(check, 20, what=f"a {reason} event about {name}")


def assert_refused(obj: dict[str, Any], *words: str) -> None:
    """Failed on its node with HostPathNotAllowed, no container ever set up."""
    status = obj["status"]
    assert (status["phase"], status.get("reason")) == ("Failed", REFUSED), status
    assert status["containerStatuses"] == []
    for word in words:
        assert word in status["message"], (word, status["message"])


def test_each_node_publishes_its_grant_none_by_default(lab: Lab) -> None:
    nodes = {
        n["metadata"]["name"]: n["status"]
        for n in lab.cluster.api("n3", "GET", "/v1/nodes")["items"]
    }
    assert nodes["n1"]["allowedHostPaths"] == []
    assert nodes["n2"]["allowedHostPaths"] == [
        {"pathPrefix": str(lab.share), "readOnly": True},
        {"pathPrefix": str(lab.out), "readOnly": False},
    ]
    assert nodes["n3"]["allowedHostPaths"] == [
        {"pathPrefix": str(lab.cluster.root.resolve()), "readOnly": False}
    ]
    for name in ("n1", "n2", "n3"):
        assert nodes[name]["protectedHostPaths"] == [str(lab.data_dir(name))]


def test_the_host_root_is_refused_without_a_grant_and_the_node_key_stays_unread(
    lab: Lab, tmp_path: Path
) -> None:
    key = lab.data_dir("n1") / "identity.key"
    before = hashlib.sha256(key.read_bytes()).hexdigest()
    relative = lab.data_dir("n1").relative_to("/")
    apply(
        lab, tmp_path, pod("takeover", "/", f"/data/{relative}", node="n1", writable=True), on="n2"
    )
    refused = ended(lab, "takeover")["takeover"]
    assert_refused(refused, "hostPath / (read-write)", "node n1 allows none", "--allow-host-path")
    warning = event(lab, "takeover", REFUSED)
    assert warning["type"] == "Warning" and "hostPath / (read-write)" in warning["message"]
    assert logs(lab, "takeover") == []  # it never ran: nothing listed, nothing read
    assert not (lab.data_dir("n1") / "output.txt").exists()
    assert hashlib.sha256(key.read_bytes()).hexdigest() == before
    assert lab.cluster.api("n1", "GET", "/v1/status")["node"] == "n1"  # the node carries on


def test_a_granted_prefix_is_readable_and_writable_only_where_granted_rw(
    lab: Lab, tmp_path: Path
) -> None:
    apply(
        lab,
        tmp_path,
        pod("reader", lab.share, node="n2"),
        pod("sneaky-writer", lab.share, node="n2", writable=True),
        pod("writer", lab.out, node="n2", writable=True),
        pod("escaper", lab.share, "/data/escape", node="n2"),
    )
    seen = ended(lab, "reader", "sneaky-writer", "writer", "escaper")
    assert phase(seen["reader"]) == "Succeeded"
    read = logs(lab, "reader")
    assert "read /data/input.txt: shared by the operator" in read
    assert any(line.startswith("write /data/output.txt: ") and "ok" not in line for line in read)
    assert not (lab.share / "output.txt").exists()
    assert_refused(seen["sneaky-writer"], f"hostPath {lab.share} (read-write)", "granted read-only")
    assert phase(seen["writer"]) == "Succeeded"
    assert "write /data/output.txt: ok" in logs(lab, "writer")
    written = lab.out / "output.txt"
    assert written.read_text() == "written by files.wasm\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600  # the agent's umask
    # Inside a mount, a symlink out of it is not followed (wasmtime's WASI).
    assert "list /data/escape: Operation not permitted" in logs(lab, "escaper")


def test_a_symlink_from_a_granted_prefix_to_elsewhere_is_refused_then_avoided(
    lab: Lab, tmp_path: Path
) -> None:
    """``share/escape`` looks granted on n2 (placement sees paths as written), so the
    scheduler sends it there; n2 resolves it out of its grant, refuses it, and publishes
    that: the next pod asking for it is placed nowhere."""
    escape = lab.share / "escape"
    apply(lab, tmp_path, pod("symlinked", escape))
    refused = ended(lab, "symlinked")["symlinked"]
    assert refused["spec"]["nodeName"] == "n2"
    assert_refused(refused, f"which resolves to {lab.outside}", "no grant of this node holds it")
    assert logs(lab, "symlinked") == []

    def published() -> list[str] | None:
        status = lab.cluster.api("n1", "GET", "/v1/nodes/n2")["status"]
        return status.get("refusedHostPaths") or None

    assert wait_until(published, 20, what="n2 to publish its refusal") == [str(escape)]
    apply(lab, tmp_path, pod("symlinked-again", escape))
    diagnosis = f"0/3 nodes are available: 3 node(s) didn't allow hostPath {escape}."
    assert unschedulable(lab, "symlinked-again")["conditions"][0]["message"] == diagnosis


def test_the_data_dir_is_never_mountable_even_under_a_grant(lab: Lab, tmp_path: Path) -> None:
    data = lab.data_dir("n3")
    free = lab.cluster.root / "free"
    free.mkdir(exist_ok=True)
    apply(
        lab,
        tmp_path,
        pod("data-dir", data, node="n3"),
        pod("inside", data / "runtime", node="n3"),
        pod("above", lab.cluster.root, node="n3", writable=True),
        pod("beside", free, node="n3", writable=True),
    )
    seen = ended(lab, "data-dir", "inside", "above", "beside")
    assert_refused(seen["data-dir"], f"lies in the agent's data dir {data}")
    assert_refused(seen["inside"], f"lies in the agent's data dir {data}")
    assert_refused(seen["above"], f"holds the agent's data dir {data}")
    assert phase(seen["beside"]) == "Succeeded"
    assert (free / "output.txt").exists()
    assert not (data / "output.txt").exists()


def mode_of(path: Path) -> int | None:
    """``path``'s mode, None when it went between the listing and the look: the agents run
    while the test walks their data dirs (a compiled module was replaced so in a full run)."""
    try:
        return path.lstat().st_mode
    except FileNotFoundError:
        return None


def test_placement_sends_host_path_pods_only_where_granted_or_says_why_not(
    lab: Lab, tmp_path: Path
) -> None:
    web = {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    **pod("x", lab.share, "30", module="ticker")["spec"],
                    "restartPolicy": "Always",
                },
            },
        },
    }
    apply(lab, tmp_path, web, pod("nowhere", "/nowhere"))

    def placed() -> list[str] | None:
        nodes = [
            p["spec"].get("nodeName") for name, p in pods(lab).items() if name.startswith("web-")
        ]
        return nodes if len(nodes) == 2 and all(nodes) else None

    assert wait_until(placed, 30, what="web placed") == ["n2", "n2"]  # not spread: only n2 grants

    status = unschedulable(lab, "nowhere")
    diagnosis = "0/3 nodes are available: 3 node(s) didn't allow hostPath /nowhere."
    assert status["phase"] == "Pending" and status["conditions"][0]["message"] == diagnosis
    assert "nodeName" not in pods(lab)["nowhere"]["spec"]
    assert event(lab, "nowhere", "FailedScheduling")["message"] == diagnosis
    lab.cluster.cli("n1", "delete", "deployment", "web")


def test_the_data_dirs_are_private_after_start(lab: Lab, tmp_path: Path) -> None:
    """Every file the agents wrote (state, logs, stdin, blobs, compiled modules, emptyDirs,
    key and API token) is 0600 and every dir 0700, n1's loose dir from before included."""
    busy = pod("busy", "/unused", node="n1", module="hello")
    busy["spec"]["volumes"] = [{"name": "host", "emptyDir": {}}]
    busy["spec"]["containers"][0]["stdinData"] = "secret input\n"
    apply(lab, tmp_path, busy)
    assert phase(ended(lab, "busy")["busy"]) == "Succeeded"
    assert "stdin: secret input" in logs(lab, "busy")
    for node in ("n1", "n2", "n3"):
        data = lab.data_dir(node)
        seen = {p.relative_to(data).parts[0] for p in data.rglob("*")}
        assert {"identity.key", "api.token", "api.json", "state"} <= seen, seen
        modes = {p: mode_of(p) for p in [data, *data.rglob("*")]}
        loose = [
            f"{oct(stat.S_IMODE(mode))} {p}"
            for p, mode in modes.items()
            if mode is not None and not stat.S_ISLNK(mode) and mode & 0o077
        ]
        assert loose == [], loose
    n1 = lab.data_dir("n1")
    assert {"pods", "blobs", "runtime"} <= {p.name for p in n1.iterdir()}
    assert any(n1.glob("pods/*/main/*.stdin")) and any(n1.glob("pods/*/volumes/host"))
    assert any(n1.glob("runtime/compiled/*/*.cwasm"))
    assert stat.S_IMODE((n1 / "left-behind.txt").stat().st_mode) == 0o600
    assert "removed group/other access from 2 entries" in lab.cluster.log_tail("n1", 400)


def test_the_docker_entrypoint_passes_its_grants_to_join(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("entry", REPO / "docker" / "entrypoint.py")
    assert spec is not None and spec.loader is not None
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    for name in [k for k in os.environ if k.startswith("P2PKUBE_")]:
        monkeypatch.delenv(name)
    assert "--allow-host-path" not in entry.join_command("p", [])
    monkeypatch.setenv("P2PKUBE_ALLOW_HOST_PATH", "/srv/models, /var/out:rw")
    command = entry.join_command("p", [])
    grants = [command[i + 1] for i, arg in enumerate(command) if arg == "--allow-host-path"]
    assert grants == ["/srv/models", "/var/out:rw"]
