"""Progress where people wait, against real agents (separate processes, real aiortc, pycrdt).

One cluster of three agents, a, b and c, whose pulls are slowed (16 KiB chunks, one request
in flight): publish/apply uploads, pull, rollout status and wait draw click's bar when stderr
is a terminal (a pseudo-terminal here) and keep their plain lines otherwise; ``wait`` meets
its conditions or times out with kubectl's message; and a pod pulling a big module on b says
how far the pull is in ``describe pod`` as seen from c.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
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
SLOW_PULLS = [
    "--set",
    "blobs.chunk_size=16384",
    "--set",
    "blobs.window=1",
    "--set",
    "kubelet.pull_progress_interval=0.3",
]
MiB = 1024 * 1024


def padded_module(path: Path, size: int, seed: bytes) -> Path:
    """examples/build/ticker.wasm grown to ``size`` bytes with a custom section (which the
    runtime skips), so a big module still runs; ``seed`` makes its digest its own."""
    base = (BUILD / "ticker.wasm").read_bytes()
    name = b"p2pkube-padding"
    payload_len = size - len(base) - 1 - 5 - 1 - len(name)
    payload = (seed * (payload_len // len(seed) + 1))[:payload_len]
    body = bytes([len(name)]) + name + payload
    length = len(body)
    leb = bytes(((length >> (7 * i)) & 0x7F) | (0x80 if i < 4 else 0) for i in range(5))
    path.write_bytes(base + b"\x00" + leb + body)
    assert path.stat().st_size == size
    return path


def in_terminal(
    cluster: LocalCluster,
    name: str,
    *args: str,
    timeout: float = 90,
    shown: list[bytes] | None = None,
) -> tuple[int, str, str]:
    """Run ``p2pkube ARGS`` on ``name`` with stderr on a pseudo-terminal (stdout a pipe, as
    in ``p2pkube ... | jq``): (exit code, stdout, what the terminal showed). ``shown``
    receives the terminal's output as it comes."""
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if k != "P2PKUBE_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pkube", "--data-dir", str(cluster.root / name), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    if shown is None:
        shown = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            shown.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
        reader.join(5)
        os.close(master)
    return proc.returncode, out.decode(), b"".join(shown).decode(errors="replace")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator:
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    with module_cluster(tmp_path_factory.mktemp("progress"), request, 80) as cluster:
        cluster.start_signaling()
        cluster.extra_agent_args = SLOW_PULLS
        for name in NAMES:
            cluster.start_agent(name)
        wait_all_ready(cluster, NAMES)
        yield cluster


def holders(cluster: LocalCluster, viewer: str, digest: str) -> list[str]:
    return list(cluster.api(viewer, "GET", f"/v1/blobs/{digest}")["status"]["holders"])


def test_publish_and_apply_show_the_upload_on_a_terminal(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    big = padded_module(tmp_path / "big.wasm", 3 * MiB, b"upload")
    code, out, shown = in_terminal(cluster, "a", "publish", str(big))
    assert code == 0, shown
    assert out.startswith("blob/sha256:") and " published (3.15 MB" in out, out
    assert "uploading big.wasm" in shown and "100%" in shown, shown
    # Not a terminal: no bar, nothing but the result.
    piped = cluster.cli("a", "publish", str(big))
    assert " unchanged (" in piped.stdout and piped.stderr == "", piped

    # apply of a manifest naming a local .wasm uploads it the same way; a small one quietly.
    padded_module(tmp_path / "other.wasm", 2 * MiB, b"apply")
    (tmp_path / "small.wasm").write_bytes((BUILD / "ticker.wasm").read_bytes())
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"upload-{module}"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": f"{module}.wasm", "args": ["0", "1"]}],
            },
        }
        for module in ("other", "small")
    ]
    (tmp_path / "pods.yaml").write_text(yaml.safe_dump_all(pods))
    code, out, shown = in_terminal(cluster, "a", "apply", "-f", str(tmp_path / "pods.yaml"))
    assert code == 0, shown
    assert out.splitlines() == ["pod/upload-other created", "pod/upload-small created"], out
    assert "uploading other.wasm" in shown and "100%" in shown, shown
    assert "uploading small.wasm" not in shown, shown
    assert "blob/sha256:" in shown  # apply's own lines stay on stderr
    for module in ("other", "small"):
        cluster.cli("a", "delete", "pod", f"upload-{module}", "--force")


def test_pull_draws_a_bar_on_a_terminal_and_lines_elsewhere(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    big = padded_module(tmp_path / "pull.wasm", 2 * MiB, b"pull")
    digest = cluster.cli("a", "publish", str(big)).stdout.split()[0].removeprefix("blob/")
    wait_until(lambda: holders(cluster, "b", digest) == ["a"], 10, what="b to know the holder")
    code, out, shown = in_terminal(cluster, "b", "pull", digest)
    assert code == 0, shown
    assert out.startswith(f"blob/{digest} pulled (2.1 MB, 128 chunks in "), out
    assert f"pulling {digest[:19]}" in shown and "128/128 chunks" in shown, shown
    assert "100%" in shown, shown

    wait_until(lambda: holders(cluster, "c", digest) == ["a", "b"], 10, what="two holders")
    piped = cluster.cli("c", "pull", digest)
    assert piped.stdout.count("\n") == 1 and piped.stdout.startswith(f"blob/{digest} pulled")
    lines = piped.stderr.splitlines()
    assert lines and all(line.startswith(f"pulling {digest}: ") for line in lines), lines


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "ticker.wasm", "args": ["1"]}]},
            },
        },
    }


def pod_names(cluster: LocalCluster, app: str) -> list[str]:
    out = cluster.cli("a", "get", "pods", "-l", f"app={app}", "-o", "json").stdout
    return sorted(p["metadata"]["name"] for p in json.loads(out)["items"])


def test_wait_meets_conditions_or_times_out(cluster: LocalCluster, tmp_path: Path) -> None:
    (tmp_path / "ticker.wasm").write_bytes((BUILD / "ticker.wasm").read_bytes())
    (tmp_path / "ticks.yaml").write_text(yaml.safe_dump(deployment("ticks", 2)))
    cluster.cli("a", "apply", "-f", str(tmp_path / "ticks.yaml"))

    waited = cluster.cli(
        "b", "wait", "--for=condition=Available", "deployment/ticks", "--timeout=90s"
    )
    assert waited.stdout == "deployment/ticks condition met\n", waited
    ready = cluster.cli("c", "wait", "pods", "-l", "app=ticks", "--for=condition=Ready")
    names = pod_names(cluster, "ticks")
    assert ready.stdout.splitlines() == [f"pod/{n} condition met" for n in names], ready
    running = cluster.cli(
        "a", "wait", "pod", *names, "--for=jsonpath={.status.phase}=Running", "--timeout", "5s"
    )
    assert running.stdout.count("condition met") == 2, running
    nodes = cluster.cli("a", "wait", "--for=condition=Ready", "nodes", "--all")
    assert nodes.stdout.splitlines() == [f"node/{n} condition met" for n in NAMES], nodes

    # Timed out: kubectl's message, exit 1, after the timeout and not much later.
    started = time.monotonic()
    late = cluster.cli(
        "b", "wait", f"pod/{names[0]}", "--for=jsonpath={.status.phase}=Succeeded",
        "--timeout=2s", check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    assert late.returncode == 1 and late.stdout == "", late
    assert late.stderr == f"error: timed out waiting for the condition on pods/{names[0]}\n"
    assert 2 <= took < 12, took

    # Clear errors for what cannot be waited for.
    missing = cluster.cli("a", "wait", "pod/nope", "--for=condition=Ready", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == 'Error from server (NotFound): pods "nope" not found'
    nothing = cluster.cli("a", "wait", "pods", "-l", "app=none", "--for=delete", check=False)
    assert nothing.returncode == 0 and nothing.stdout == "", nothing  # nothing left to delete
    none = cluster.cli("a", "wait", "pods", "-l", "app=none", "--for=condition=Ready", check=False)
    assert none.returncode == 1 and none.stderr.strip() == "error: no matching resources found"
    bad = cluster.cli("a", "wait", "pods", "--all", "--for=ready", check=False)
    assert bad.returncode == 2 and "unrecognized condition: 'ready'" in bad.stderr, bad.stderr

    # --for=delete on a terminal: a bar counts the pods gone while the Deployment scales to 0.
    result: list[tuple[int, str, str]] = []
    drawn: list[bytes] = []
    args = ["wait", "--for=delete", "pods", "-l", "app=ticks", "--timeout=60s"]
    waiter = threading.Thread(
        target=lambda: result.append(in_terminal(cluster, "c", *args, shown=drawn))
    )
    waiter.start()
    # Its bar is drawn once it has listed the pods: a delete from then on is seen.
    wait_until(lambda: b"waiting for delete" in b"".join(drawn), 30, what="the wait's bar")
    cluster.cli("a", "scale", "deployment", "ticks", "--replicas", "0")
    waiter.join(90)
    code, out, shown = result[0]
    assert code == 0, shown
    assert sorted(out.splitlines()) == [f"pod/{n} condition met" for n in names], out
    assert "waiting for delete on pods" in shown and "2/2 met" in shown, shown
    cluster.cli("a", "delete", "deployment", "ticks")


def test_rollout_status_draws_the_replicas_on_a_terminal(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # A module of its own, 4 MiB: its replicas wait seconds for the (slowed) pull.
    padded_module(tmp_path / "ticker.wasm", 4 * MiB, b"rollout")
    (tmp_path / "roll.yaml").write_text(yaml.safe_dump(deployment("roll", 2)))
    cluster.cli("a", "apply", "-f", str(tmp_path / "roll.yaml"))
    code, out, shown = in_terminal(cluster, "b", "rollout", "status", "deployment/roll")
    assert code == 0, shown
    assert out == 'deployment "roll" successfully rolled out\n', out
    assert 'rollout of deployment "roll"' in shown and "2/2" in shown, shown
    assert "Waiting for" not in shown + out  # the bar replaces the lines
    cluster.cli("a", "delete", "deployment", "roll")


def test_describe_on_a_third_node_shows_how_far_a_pod_pull_is(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """A pod on b whose 8 MiB module is on a only: while b pulls it, ``describe pod`` on c
    shows the bytes and peers, then the pod runs."""
    padded_module(tmp_path / "slow.wasm", 8 * MiB, b"describe")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "slow-pull"},
        "spec": {
            "nodeName": "b",
            "containers": [{"name": "main", "image": "slow.wasm", "args": ["1"]}],
        },
    }
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(pod))
    cluster.cli("a", "apply", "-f", str(tmp_path / "slow.yaml"))
    seen: list[str] = []

    def pulling() -> bool:
        out = cluster.cli("c", "describe", "pod", "slow-pull").stdout
        lines = [x.strip() for x in out.splitlines()]
        message = next((x for x in lines if x.startswith("Message:") and "Pulling" in x), "")
        if message:
            seen.append(message)
        return bool(message) or "Running" in out

    wait_until(pulling, 60, interval=0.2, what="the pull's progress in describe on c")
    assert seen, "the pod ran before describe on c showed its pull"
    assert "Pulling module sha256:" in seen[0], seen
    assert seen[0].endswith(" of 8 MiB from 1 peer"), seen
    wait_until(
        lambda: "Running" in cluster.cli("c", "get", "pod", "slow-pull").stdout, 90,
        what="the pod Running once pulled",
    )  # fmt: skip
    def pulled() -> str | None:
        out = cluster.cli("c", "describe", "pod", "slow-pull").stdout
        return out if "Pulled" in out else None

    # b's Pulled event reaches c on its own, maybe after the pod's Running status did.
    described = wait_until(pulled, 20, what="the Pulled event in describe on c")
    assert "Pulling module sha256:" in described  # the Pulling event stays
    cluster.cli("a", "delete", "pod", "slow-pull", "--force")
