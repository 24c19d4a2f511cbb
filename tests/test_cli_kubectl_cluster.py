"""kubectl's verbs of issue 14 on a real agent (a separate process: real aiortc, pycrdt,
wasmtime), each command run as a user runs it (``python -m p2pkube --data-dir ...``):
``logs -l`` over the pods of a Deployment (``--prefix``, ``--all-containers``, ``-f``),
``-o jsonpath``/``custom-columns`` of what the agent placed, shell completion of the pods'
names, ``delete -l``, and ``create secret generic`` (the agent seals Secrets, which the
in-memory backend of test_cli_kubectl.py cannot).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from p2pkube.devcluster import LocalCluster, wait_until
from tests.clusters import wait_all_ready

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "examples" / "build"


def deployment() -> dict[str, Any]:
    """Two replicas of two containers each: ``main`` ticks 10 times every 0.2 s (then the
    container ends and is restarted), ``side`` ticks every 0.5 s for ever."""

    def container(name: str, *args: str) -> dict[str, Any]:
        return {
            "name": name,
            "image": "ticker.wasm",
            "args": list(args),
            "resources": {"requests": {"cpu": "50m", "memory": "16Mi"}},
        }

    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Deployment",
        "metadata": {"name": "tick", "labels": {"app": "tick"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "tick"}},
            "template": {
                "metadata": {"labels": {"app": "tick"}},
                "spec": {"containers": [container("main", "0.2", "10"), container("side", "0.5")]},
            },
        },
    }


def test_logs_by_selector_templates_and_completion_on_an_agent(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster.start_signaling()
    cluster.extra_agent_args = ["--set", "kubelet.backoff_initial=0.2", "--memory", "1Gi"]
    cluster.start_agent("a")
    wait_all_ready(cluster, ["a"])
    shutil.copy(BUILD / "ticker.wasm", tmp_path / "ticker.wasm")
    manifest = tmp_path / "tick.yaml"
    manifest.write_text(yaml.safe_dump(deployment()))
    cluster.cli("a", "apply", "-f", str(manifest))

    # -o jsonpath over the List: both pods Running, on node a.
    phases = '{range .items[*]}{.metadata.name} {.status.phase} {.spec.nodeName}{"\\n"}{end}'

    def running() -> list[str] | None:
        out = cluster.cli("a", "get", "pods", "-l", "app=tick", "-o", f"jsonpath={phases}")
        lines = [line.split() for line in out.stdout.splitlines()]
        ok = len(lines) == 2 and all(line[1:] == ["Running", "a"] for line in lines)
        return sorted(line[0] for line in lines) if ok else None

    pods = wait_until(running, 30, what="two tick pods Running on a")
    columns = "custom-columns=POD:.metadata.name,CONTAINERS:.spec.containers[*].name"
    table = cluster.cli("a", "get", "pods", "-l", "app=tick", "-o", columns).stdout
    assert [line.split() for line in table.splitlines()] == [
        ["POD", "CONTAINERS"],
        [pods[0], "main,side"],
        [pods[1], "main,side"],
    ]

    # logs -l: every container of every pod, prefixed, the last 2 lines of each.
    def ticked() -> str | None:
        out = cluster.cli("a", "logs", "-l", "app=tick", "--all-containers", "--prefix",
                          "--tail", "2").stdout  # fmt: skip
        return out if len(out.splitlines()) == 8 else None

    out = wait_until(ticked, 20, what="two lines from each of four containers")
    streams = [re.fullmatch(r"\[pod/(\S+)/(\w+)\] tick \d+", line) for line in out.splitlines()]
    assert all(streams), out
    assert [(m.group(1), m.group(2)) for m in streams if m] == [
        (pod, c) for pod in pods for c in ("main", "side") for _ in range(2)
    ]

    # -f over both pods' main containers at once: each stream ends with its container.
    follow = cluster.cli("a", "logs", "-l", "app=tick", "-c", "main", "-f", "--prefix",
                         "--tail", "1", "--max-log-requests", "2")  # fmt: skip
    followed = {line.split()[0] for line in follow.stdout.splitlines()}
    assert followed == {f"[pod/{pod}/main]" for pod in pods}, follow.stdout
    refused = cluster.cli("a", "logs", "-l", "app=tick", "--all-containers", "-f",
                          "--max-log-requests", "3", check=False)  # fmt: skip
    assert refused.returncode == 1
    assert "you are attempting to follow 4 log streams" in refused.stderr

    # Shell completion asks the running agent for the pods' names.
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "COMP_WORDS": f"p2pkube --data-dir {cluster.root / 'a'} logs tick-",
        "COMP_CWORD": "4",
        "_P2PKUBE_COMPLETE": "bash_complete",
    }
    completed = subprocess.run(
        [sys.executable, "-m", "p2pkube"], env=env, capture_output=True, text=True, timeout=30
    )
    assert completed.stdout.split() == [f"plain,{pod}" for pod in pods]

    # delete -l removes the Deployment; its pods go with it.
    assert cluster.cli("a", "delete", "deploy", "-l", "app=tick").stdout == (
        'deployment "tick" deleted\n'
    )
    wait_until(
        lambda: not cluster.cli("a", "get", "pods", "-l", "app=tick", "-o", "name").stdout,
        30,
        what="the tick pods gone",
    )


def test_create_secret_generic_on_an_agent(cluster: LocalCluster, tmp_path: Path) -> None:
    cluster.start_signaling()
    cluster.start_agent("a")
    wait_all_ready(cluster, ["a"])
    key = tmp_path / "tls.key"
    key.write_bytes(b"\x00\x01not text\xff")
    created = cluster.cli("a", "create", "secret", "generic", "creds",
                          "--from-literal=password=s3cr3t", f"--from-file={key}")  # fmt: skip
    assert created.stdout == "secret/creds created\n"
    table = cluster.cli("a", "get", "secrets").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert table[1].split()[:3] == ["creds", "Opaque", "2"]
    password = cluster.cli("a", "get", "secret", "creds", "-o", "jsonpath={.data.password}")
    assert base64.b64decode(password.stdout) == b"s3cr3t"
    tls = cluster.cli("a", "get", "secret", "creds", "-o", "jsonpath={.data.tls\\.key}")
    assert base64.b64decode(tls.stdout) == b"\x00\x01not text\xff"
    again = cluster.cli("a", "create", "secret", "generic", "creds", "--from-literal=a=b",
                        check=False)  # fmt: skip
    assert again.returncode == 1
    assert again.stderr == 'Error from server (AlreadyExists): secrets "creds" already exists\n'
    assert "s3cr3t" not in again.stderr
    assert cluster.cli("a", "delete", "secrets", "--all").stdout == 'secret "creds" deleted\n'
