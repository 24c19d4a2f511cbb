"""The workload commands of the CLI (get for every kind, get -w, describe, scale, rollout)
against a real local API server.

As in test_cli.py, the real ``ApiServer`` runs on 127.0.0.1:0 in a thread of its own; behind
it sits the in-memory backend (tests/memorybackend.py): the agent's real object service and
watch hub over an in-memory state, holding the objects of :func:`seed`. Tests drive watches by
scripting changes that the backend applies on the server's loop while the CLI waits.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from p2pkube.api.server import ApiServer
from p2pkube.cli.common import parse_duration
from p2pkube.cli.main import cli
from p2pkube.cli.output import RowPrinter
from p2pkube.cli.rollout import daemonset_progress, deployment_progress
from p2pkube.cli.tabwriter import Writer
from p2pkube.model.schema import validate_object
from tests.memorybackend import MemoryBackend, blob, serving

REPO = Path(__file__).resolve().parent.parent
IMAGE = "sha256:" + "ab" * 32
OTHER_IMAGE = "sha256:" + "cd" * 32
API = "p2pkube.io/v1"


NOW = datetime.now(UTC).replace(microsecond=0)
"""The CLI's clock in these tests (see ``frozen_clock``), so ages do not drift as they run."""


def ts(ago: timedelta = timedelta()) -> str:
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


class _FrozenDatetime(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return NOW if tz is not None else NOW.replace(tzinfo=None)


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """AGE columns and describe's ages are computed against NOW."""
    import p2pkube.cli.output

    monkeypatch.setattr(p2pkube.cli.output, "datetime", _FrozenDatetime)


def template(args: list[str], *, hash_label: str | None = None, **spec: Any) -> dict[str, Any]:
    labels = {"app": "web"}
    if hash_label:
        labels["pod-template-hash"] = hash_label
    return {
        "metadata": {"labels": labels, "annotations": {}},
        "spec": {
            "containers": [{"name": "main", "image": IMAGE, "args": args}],
            "restartPolicy": "Always",
            **spec,
        },
    }


def node(name: str, ready: str = "True") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"uid-node-{name}",
            "labels": {"p2pkube.io/kind": "native", "zone": "a"},
            "creationTimestamp": ts(timedelta(hours=3)),
        },
        "spec": {},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": "AgentReady",
                    "lastHeartbeatTime": ts(),
                    "lastTransitionTime": ts(timedelta(hours=3)),
                }
            ],
            "capacity": {"cpu": "2", "memory": "4Gi"},
            "allocatable": {"cpu": "2", "memory": "4Gi"},
            "nodeInfo": {"kind": "native", "agentVersion": "0.1.0", "nodeID": "ab" * 32},
            "images": [{"names": [IMAGE]}],
            "peers": 2,
        },
    }


def owner(kind: str, name: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": API, "kind": kind, "name": name, "uid": f"uid-{name}", "controller": True}
    ]


def meta(name: str, ago: timedelta, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "default",
        "uid": f"uid-{name}",
        "creationTimestamp": ts(ago),
        "generation": 1,
        **extra,
    }


def deployment(replicas: int = 3, args: tuple[str, ...] = ("2",), **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Deployment",
        "metadata": {
            **meta("web", timedelta(minutes=10)),
            "generation": 2,
            "labels": {"app": "web"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(list(args)),
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "revisionHistoryLimit": 10,
        },
        "status": status
        or {
            "observedGeneration": 2,
            "replicas": 3,
            "updatedReplicas": 3,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "unavailableReplicas": 1,
            "revision": 2,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
            ],
        },
    }


def replicaset(
    name: str, revision: int, args: list[str], replicas: int, ready: int
) -> dict[str, Any]:
    digest = name.rsplit("-", 1)[1]
    return {
        "apiVersion": API,
        "kind": "ReplicaSet",
        "metadata": {
            **meta(name, timedelta(minutes=10 - revision)),
            "labels": {"app": "web", "pod-template-hash": digest},
            "annotations": {
                "deployment.kubernetes.io/revision": str(revision),
                "p2pkube.io/lease": "1/" + "ab" * 32,
                **({"kubernetes.io/change-cause": "first version"} if revision == 1 else {}),
            },
            "ownerReferences": owner("Deployment", "web"),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": digest}},
            "template": template(args, hash_label=digest),
        },
        "status": {
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": 1,
        },
    }


def running_pod(name: str, rs: str, node_name: str) -> dict[str, Any]:
    started = ts(timedelta(minutes=5))
    return {
        "apiVersion": API,
        "kind": "Pod",
        "metadata": {
            **meta(name, timedelta(minutes=5)),
            "labels": {"app": "web", "pod-template-hash": rs.rsplit("-", 1)[1]},
            "ownerReferences": owner("ReplicaSet", rs),
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "args": ["2"],
                    "env": [{"name": "GREETING", "value": "hi"}],
                    "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "64Mi"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
                }
            ],
            "volumes": [{"name": "data", "hostPath": {"path": "/srv/data"}}],
            "nodeName": node_name,
            "restartPolicy": "Always",
        },
        "status": {
            "podUID": f"uid-{name}",
            "phase": "Running",
            "startTime": started,
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "imageID": IMAGE,
                    "ready": True,
                    "started": True,
                    "restartCount": 1,
                    "state": {"running": {"startedAt": started}},
                    "lastState": {
                        "terminated": {
                            "exitCode": 3,
                            "reason": "Error",
                            "startedAt": ts(timedelta(minutes=6)),
                            "finishedAt": started,
                        }
                    },
                }
            ],
        },
    }


DIAGNOSIS = "0/2 nodes are available: 2 Insufficient cpu."


def pending_pod(name: str, rs: str) -> dict[str, Any]:
    pod = running_pod(name, rs, "n1")
    del pod["spec"]["nodeName"]
    pod["status"] = {
        "podUID": f"uid-{name}",
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": DIAGNOSIS,
                "lastTransitionTime": ts(timedelta(minutes=4)),
            }
        ],
    }
    return pod


def job(name: str, *, done: bool) -> dict[str, Any]:
    status: dict[str, Any] = {
        "startTime": ts(timedelta(minutes=3)),
        "active": 0 if done else 1,
        "succeeded": 3 if done else 1,
        "failed": 0,
        "ready": 0 if done else 1,
        "conditions": [],
    }
    if done:
        status["completionTime"] = ts(timedelta(minutes=3) - timedelta(seconds=47))
        status["conditions"] = [
            {
                "type": "Complete",
                "status": "True",
                "reason": "Completed",
                "message": "Job completed",
                "lastTransitionTime": status["completionTime"],
            }
        ]
    return {
        "apiVersion": API,
        "kind": "Job",
        "metadata": meta(name, timedelta(minutes=3)),
        "spec": {
            "completions": 3,
            "parallelism": 1,
            "backoffLimit": 6,
            "template": {
                "metadata": {"labels": {}, "annotations": {}},
                "spec": {
                    "containers": [{"name": "calc", "image": OTHER_IMAGE, "args": ["1000"]}],
                    "restartPolicy": "Never",
                },
            },
        },
        "status": status,
    }


def daemonset() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "DaemonSet",
        "metadata": meta("agent", timedelta(hours=1)),
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}, "annotations": {}},
                "spec": {
                    "containers": [{"name": "tick", "image": IMAGE, "args": ["1"]}],
                    "restartPolicy": "Always",
                    "nodeSelector": {"zone": "a"},
                },
            },
            "updateStrategy": {"type": "RollingUpdate"},
        },
        "status": {
            "observedGeneration": 1,
            "desiredNumberScheduled": 2,
            "currentNumberScheduled": 2,
            "numberMisscheduled": 0,
            "numberReady": 1,
            "updatedNumberScheduled": 2,
            "numberAvailable": 1,
            "numberUnavailable": 1,
        },
    }


def event(
    about: dict[str, Any],
    reason: str,
    message: str,
    *,
    ago: timedelta,
    count: int = 1,
    first: timedelta | None = None,
    warning: bool = False,
    component: str = "scheduler",
    host: str = "n1",
) -> dict[str, Any]:
    m = about["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{m['name']}.{reason.lower()}",
            "namespace": m.get("namespace", ""),
            "creationTimestamp": ts(first or ago),
        },
        "involvedObject": {
            "kind": about["kind"],
            "namespace": m.get("namespace", ""),
            "name": m["name"],
            "uid": m["uid"],
        },
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "count": count,
        "firstTimestamp": ts(first or ago),
        "lastTimestamp": ts(ago),
        "source": {"component": component, "host": host},
    }


def cluster_objects() -> list[dict[str, Any]]:
    web = deployment()
    old = replicaset("web-6f7d9c8b5a", 1, ["1"], 0, 0)
    new = replicaset("web-58b4f7c9d2", 2, ["2"], 3, 2)
    pods = [
        running_pod("web-58b4f7c9d2-bxk2q", "web-58b4f7c9d2", "n1"),
        running_pod("web-58b4f7c9d2-tz9wm", "web-58b4f7c9d2", "n2"),
        pending_pod("web-58b4f7c9d2-zzzzz", "web-58b4f7c9d2"),
    ]
    done, busy = job("pi", done=True), job("crunch", done=False)
    ds = daemonset()
    events = [
        event(web, "ScalingReplicaSet", "Scaled up replica set web-58b4f7c9d2 to 3",
              ago=timedelta(minutes=5)),
        event(pods[0], "Scheduled", "Successfully assigned default/web-58b4f7c9d2-bxk2q to n1",
              ago=timedelta(minutes=5)),
        event(pods[0], "Started", "Started container main", ago=timedelta(seconds=30),
              count=2, first=timedelta(minutes=5), component="kubelet"),
        event(pods[2], "FailedScheduling", DIAGNOSIS, ago=timedelta(seconds=10), warning=True,
              count=4, first=timedelta(minutes=4)),
        event(done, "Completed", "Job completed", ago=timedelta(minutes=2)),
    ]  # fmt: skip
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta("greeting", timedelta(hours=2)),
        "data": {"hello": "world", "poem": "line one\nline two"},
    }
    return [web, old, new, *pods, done, busy, ds, *events, configmap]


def normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with its spec as the agent stores it (defaults filled by the real models)."""
    if "spec" not in obj or obj["kind"] == "Node":
        return obj
    shell = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": {"name": "x"}}
    meta = {"labels": {}, "annotations": {}, **obj["metadata"]}
    return {
        **obj,
        "metadata": meta,
        "spec": validate_object({**shell, "spec": obj["spec"]})["spec"],
    }


def seed() -> list[dict[str, Any]]:
    """What the cluster holds when a test starts: two Ready nodes, the images, the workloads."""
    return [node("n1"), node("n2"), blob(IMAGE), blob(OTHER_IMAGE)] + [
        normalized(o) for o in cluster_objects()
    ]


@dataclass
class Agent:
    server: ApiServer
    backend: MemoryBackend
    data_dir: Path
    loop: asyncio.AbstractEventLoop

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop (where the backend lives) and wait for it (and for
        what it returns, when that is awaitable)."""

        async def run() -> Any:
            result = fn()
            return await result if inspect.isawaitable(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The object ``kind``/``default``/``name`` as the agent shows it (status merged)."""
        obj = self.backend.get_object(kind, "default", name)
        assert obj is not None, (kind, name)
        return obj


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    backend = MemoryBackend("n1")
    data_dir = tmp_path / "data"
    with serving(backend, seed(), data_dir, watch_poll_interval=0.2) as (server, loop):
        yield Agent(server, backend, data_dir, loop)


def run(agent: Agent, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["--data-dir", str(agent.data_dir), *args], catch_exceptions=False
    )


def ok(agent: Agent, *args: str) -> str:
    result = run(agent, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def rows(text: str) -> list[list[str]]:
    """A table's lines split into cells (on runs of 2+ spaces, so 'LAST SEEN' stays whole)."""
    import re

    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


Step = Callable[[MemoryBackend], Awaitable[None]]


def script(agent: Agent, steps: Sequence[tuple[float, Step]]) -> None:
    """When the next watch starts, apply each step after its delay (seconds since the start)."""
    armed = [True]

    async def run(backend: MemoryBackend, started: float) -> None:
        loop = asyncio.get_running_loop()
        for delay, step in steps:
            await asyncio.sleep(max(0.0, started + delay - loop.time()))
            await step(backend)

    def on_watch(backend: MemoryBackend, kind: str) -> None:
        if not armed[0]:
            return
        armed[0] = False
        backend.spawn(run(backend, asyncio.get_running_loop().time()))

    agent.backend.on_watch = on_watch


# --- get: tables of every workload kind --------------------------------------------------------


def test_get_deployments_table_wide_and_aliases(agent: Agent) -> None:
    table = rows(ok(agent, "get", "deployments"))
    assert table[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1] == ["web", "2/3", "3", "2", "10m"]
    assert (
        ok(agent, "get", "deploy")
        == ok(agent, "get", "deployment")
        == ok(agent, "get", "deployments.apps")
    )
    wide = rows(ok(agent, "get", "deploy", "-o", "wide"))
    assert wide[0][-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1][-3:] == ["main", "sha256:abababababab", "app=web"]
    assert ok(agent, "get", "deploy", "-o", "name") == "deployment/web\n"
    assert ok(agent, "get", "deployment/web", "-o", "name") == "deployment/web\n"


def test_get_replicasets_table_and_wide(agent: Agent) -> None:
    table = rows(ok(agent, "get", "rs"))
    assert table == [
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        ["web-58b4f7c9d2", "3", "3", "2", "8m"],
        ["web-6f7d9c8b5a", "0", "0", "0", "9m"],
    ]
    wide = rows(ok(agent, "get", "replicasets", "-o", "wide"))
    assert wide[0] == ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES",
                       "SELECTOR"]  # fmt: skip
    assert wide[1][-1] == "app=web,pod-template-hash=58b4f7c9d2"


def test_get_jobs_status_completions_duration(agent: Agent) -> None:
    table = rows(ok(agent, "get", "jobs"))
    assert table[0] == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert table[1] == ["crunch", "Running", "1/3", "3m", "3m"]  # still running: up to now
    assert table[2] == ["pi", "Complete", "3/3", "47s", "3m"]  # start to completion
    failed = job("broken", done=False)
    failed["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "X"}]
    agent.call(lambda: agent.backend.set(failed))
    assert rows(ok(agent, "get", "job", "broken"))[1][:2] == ["broken", "Failed"]
    wide = rows(ok(agent, "get", "job", "pi", "-o", "wide"))
    assert wide[1][-3:] == ["calc", "sha256:cdcdcdcdcdcd", "controller-uid=uid-pi"]


def test_get_daemonsets(agent: Agent) -> None:
    table = rows(ok(agent, "get", "ds"))
    assert table[0] == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE",
                        "NODE SELECTOR", "AGE"]  # fmt: skip
    assert table[1] == ["agent", "2", "2", "1", "2", "1", "zone=a", "60m"]
    assert rows(ok(agent, "get", "daemonsets", "-o", "wide"))[1][-3:] == [
        "tick",
        "sha256:abababababab",
        "app=agent",
    ]


def test_get_events_sorted_by_last_seen(agent: Agent) -> None:
    table = rows(ok(agent, "get", "events"))
    assert table[0] == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert [r[2] for r in table[1:]] == [
        "Scheduled",  # 5m ago (ties keep name order)
        "ScalingReplicaSet",
        "Completed",
        "Started",
        "FailedScheduling",  # 10s ago: the newest last, like kubectl
    ]
    assert table[4] == ["30s", "Normal", "Started", "pod/web-58b4f7c9d2-bxk2q",
                        "Started container main"]  # fmt: skip
    assert table[5][:4] == ["10s", "Warning", "FailedScheduling", "pod/web-58b4f7c9d2-zzzzz"]
    wide = rows(ok(agent, "get", "ev", "-o", "wide"))
    assert wide[0] == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "SOURCE", "MESSAGE",
                       "FIRST SEEN", "COUNT", "NAME"]  # fmt: skip
    assert wide[4][4] == "kubelet/n1" and wide[4][6:8] == ["5m", "2"]
    listing = json.loads(ok(agent, "get", "events", "-o", "json"))
    assert listing["kind"] == "List" and len(listing["items"]) == 5
    assert rows(ok(agent, "get", "events", "-A"))[0][0] == "NAMESPACE"
    refused = run(agent, "delete", "event", "web.scalingreplicaset")
    assert refused.exit_code == 1 and "cannot be deleted" in refused.stderr


def test_get_pods_shows_an_unschedulable_pod_as_pending_on_no_node(agent: Agent) -> None:
    table = {r[0]: r[1:] for r in rows(ok(agent, "get", "pods", "-o", "wide"))[1:]}
    # READY STATUS RESTARTS AGE NODE IMAGE LABELS
    assert table["web-58b4f7c9d2-zzzzz"][:3] == ["0/1", "Pending", "0"]
    assert table["web-58b4f7c9d2-zzzzz"][4] == "<none>"
    assert table["web-58b4f7c9d2-bxk2q"][1] == "Running"
    assert table["web-58b4f7c9d2-bxk2q"][4] == "n1"


def test_get_yaml_of_one_workload_and_unknown_names(agent: Agent) -> None:
    obj = yaml.safe_load(ok(agent, "get", "deploy", "web", "-o", "yaml"))
    assert obj["kind"] == "Deployment" and obj["status"]["revision"] == 2
    missing = run(agent, "get", "deploy", "nope")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == 'Error from server (NotFound): deployments "nope" not found'
    empty = run(agent, "get", "ds", "-n", "other")
    assert empty.exit_code == 0 and empty.stdout == ""
    assert empty.stderr.strip() == "No resources found in other namespace."


# --- get -w ------------------------------------------------------------------------------------


def current(backend: MemoryBackend, kind: str, name: str) -> dict[str, Any]:
    """The object ``kind``/``default``/``name`` as the agent shows it (status merged)."""
    obj = backend.get_object(kind, "default", name)
    assert obj is not None, (kind, name)
    return obj


async def _pod_changes(backend: MemoryBackend) -> None:
    """What happens to the pods while `get pods -w` waits: one becomes ready..."""
    pod = current(backend, "Pod", "web-58b4f7c9d2-zzzzz")
    pod["spec"]["nodeName"] = "n2"
    pod["status"] = running_pod("web-58b4f7c9d2-zzzzz", "web-58b4f7c9d2", "n2")["status"]
    await backend.set(pod)


async def _pod_added(backend: MemoryBackend) -> None:
    await backend.set(running_pod("web-58b4f7c9d2-new11", "web-58b4f7c9d2", "n1"))


async def _pod_deleted(backend: MemoryBackend) -> None:
    await backend.remove("Pod", "default", "web-58b4f7c9d2-tz9wm")


POD_STEPS = [(0.3, _pod_changes), (0.5, _pod_added), (0.7, _pod_deleted)]


def test_get_watch_prints_the_list_then_a_row_per_event(agent: Agent) -> None:
    script(agent, POD_STEPS)
    started = time.monotonic()
    out = ok(agent, "get", "pods", "-w", "--request-timeout", "2s")
    assert 1.5 < time.monotonic() - started < 10  # the server ended the watch at its timeout
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert sum(1 for line in lines if line.startswith("NAME")) == 1  # the header once
    table = rows(out)
    assert [r[:3] for r in table[1:]] == [
        ["web-58b4f7c9d2-bxk2q", "1/1", "Running"],  # the list...
        ["web-58b4f7c9d2-tz9wm", "1/1", "Running"],
        ["web-58b4f7c9d2-zzzzz", "0/1", "Pending"],
        ["web-58b4f7c9d2-zzzzz", "1/1", "Running"],  # ...then the events, in order
        ["web-58b4f7c9d2-new11", "1/1", "Running"],
        ["web-58b4f7c9d2-tz9wm", "1/1", "Running"],  # DELETED: its last row
    ]
    # Rows printed later line up with the list's columns.
    status_col = lines[0].index("STATUS")
    assert all(line[status_col:].split()[0] in ("Running", "Pending") for line in lines[1:])


def test_get_watch_only_with_event_column_and_other_outputs(agent: Agent) -> None:
    script(agent, POD_STEPS)
    out = ok(agent, "get", "pods", "--watch-only", "--output-watch-events",
             "--request-timeout", "2")  # fmt: skip
    table = rows(out)
    assert table[0][:3] == ["EVENT", "NAME", "READY"]
    assert [r[:2] for r in table[1:]] == [
        ["MODIFIED", "web-58b4f7c9d2-zzzzz"],
        ["ADDED", "web-58b4f7c9d2-new11"],
        ["DELETED", "web-58b4f7c9d2-tz9wm"],
    ]

    other = running_pod("other", "web-58b4f7c9d2", "n1")
    other["metadata"]["labels"] = {"app": "other"}

    async def restarted(backend: MemoryBackend) -> None:
        pod = current(backend, "Pod", "web-58b4f7c9d2-bxk2q")
        pod["status"]["containerStatuses"][0]["restartCount"] = 2
        await backend.set(pod)

    script(agent, [(0.3, lambda b: b.set(other)), (0.4, restarted)])
    names = ok(agent, "get", "pods", "-w", "-o", "name", "-l", "app=web", "--request-timeout", "1")
    assert names.splitlines() == [
        "pod/web-58b4f7c9d2-bxk2q",  # the list (tz9wm was deleted above)...
        "pod/web-58b4f7c9d2-new11",
        "pod/web-58b4f7c9d2-zzzzz",
        "pod/web-58b4f7c9d2-bxk2q",  # ...then its change; "other" does not match -l
    ]

    async def parallel(backend: MemoryBackend) -> None:
        pi = current(backend, "Job", "pi")
        await backend.set({**pi, "spec": pi["spec"] | {"parallelism": 2}})

    script(agent, [(0.3, parallel)])
    events = ok(agent, "get", "job", "pi", "-w", "-o", "json", "--output-watch-events",
                "--request-timeout", "1")  # fmt: skip
    decoder, text, seen = json.JSONDecoder(), events.strip(), []
    while text:
        value, end = decoder.raw_decode(text)
        seen.append(value)
        text = text[end:].strip()
    assert [(e["type"], e["object"]["spec"]["parallelism"]) for e in seen] == [
        ("ADDED", 1),
        ("MODIFIED", 2),
    ]


def test_get_watch_nodes_and_refusals(agent: Agent) -> None:
    out = ok(agent, "get", "nodes", "-w", "--request-timeout", "1")
    assert [r[0] for r in rows(out)] == ["NAME", "n1", "n2"]  # listed once, nothing changed
    refused = run(agent, "get", "blobs", "-w")
    assert refused.exit_code == 2 and "cannot be watched" in refused.stderr
    stray = run(agent, "get", "pods", "--request-timeout", "1s")
    assert stray.exit_code == 2 and "-w" in stray.stderr
    bad = run(agent, "get", "pods", "-w", "--request-timeout", "soon")
    assert bad.exit_code == 2 and "not a duration" in bad.stderr


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_get_watch_ends_cleanly_on_ctrl_c(agent: Agent, delay: float) -> None:
    """The real entry point in a subprocess: SIGINT ends the watch with exit 0, no traceback,
    whether it comes right after the list (the watch not yet open) or while the watch waits."""
    # As from a terminal: Ctrl-C raises KeyboardInterrupt. A process started in the
    # background by a non-interactive shell (`make test &`) inherits SIGINT ignored, and
    # Python then leaves it ignored (so does Go, so kubectl too): the test must not depend on
    # how its runner was started.
    as_from_a_terminal = (
        "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "runpy.run_module('p2pkube', run_name='__main__', alter_sys=True)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", as_from_a_terminal, "--data-dir",
         str(agent.data_dir), "get", "deploy", "-w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split()[0] == "NAME"
        assert proc.stdout.readline().split()[0] == "web"
        time.sleep(delay)  # maybe before the watch began, maybe while it waits
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            with open(f"/proc/{proc.pid}/status") as status:
                masks = [line.strip() for line in status if line.startswith("Sig")]
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            _out, stacks = proc.communicate(timeout=10)
            pytest.fail(f"`get -w` did not end 5 s after SIGINT ({masks}); its threads:\n{stacks}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Aborted" not in err


# --- describe ----------------------------------------------------------------------------------


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_describe_pod(agent: Agent) -> None:
    text = ok(agent, "describe", "pod", "web-58b4f7c9d2-bxk2q")
    lines = lines_of(text)
    assert lines[0] == "Name:           web-58b4f7c9d2-bxk2q"
    for expected in (
        "Namespace:      default",
        "Node:           n1",
        "Labels:         app=web",
        "                pod-template-hash=58b4f7c9d2",
        "Annotations:    <none>",
        "Status:         Running",
        "Controlled By:  ReplicaSet/web-58b4f7c9d2",
        "Containers:",
        "  main:",
        "    State:          Running",
        "    Last State:     Terminated",
        "      Reason:       Error",
        "      Exit Code:    3",
        "    Ready:          True",
        "    Restart Count:  1",
        "    Limits:",
        "      memory:  64Mi",
        "    Requests:",
        "      cpu:  500m",
        "    Environment:",
        "      GREETING:  hi",
        "    Mounts:",
        "      /data from data (ro)",
        "Conditions:",
        "  Type   Status",
        "  Ready  True",
        "Volumes:",
        "  data:",
        "    Type:        HostPath (bare host directory volume)",
        "    Path:        /srv/data",
        "Events:",
    ):
        assert expected in lines, (expected, text)
    assert any(
        line.startswith("Start Time:     ") and line.endswith(("+0000", "0")) for line in lines
    )
    assert "    Image:     " + IMAGE in lines
    assert lines[lines.index("    Args:") + 1] == "      2"
    events = rows("\n".join(lines[lines.index("Events:") + 1 :]))
    assert events[0] == ["Type", "Reason", "Age", "From", "Message"]
    assert events[1] == ["----", "------", "----", "----", "-------"]
    assert events[2] == ["Normal", "Scheduled", "5m", "scheduler/n1",
                         "Successfully assigned default/web-58b4f7c9d2-bxk2q to n1"]  # fmt: skip
    assert events[3] == ["Normal", "Started", "30s (x2 over 5m)", "kubelet/n1",
                         "Started container main"]  # fmt: skip
    # TYPE/NAME works too, and --show-events=false drops the table.
    assert ok(agent, "describe", "pod/web-58b4f7c9d2-bxk2q") == text
    quiet = ok(agent, "describe", "po", "web-58b4f7c9d2-bxk2q", "--show-events=false")
    assert "Events:" not in quiet and quiet.startswith("Name:")


def test_describe_an_unschedulable_pod_says_why(agent: Agent) -> None:
    lines = lines_of(ok(agent, "describe", "pod", "web-58b4f7c9d2-zzzzz"))
    assert "Node:           <none>" in lines and "Status:         Pending" in lines
    conditions = rows("\n".join(lines[lines.index("Conditions:") + 1 :][:2]))
    assert conditions == [
        ["Type", "Status", "Reason", "Message"],
        ["PodScheduled", "False", "Unschedulable", DIAGNOSIS],
    ]
    last = rows(lines[-1])[0]
    assert last == ["Warning", "FailedScheduling", "10s (x4 over 4m)", "scheduler/n1", DIAGNOSIS]


def test_describe_by_name_prefix_all_and_missing(agent: Agent) -> None:
    several = ok(agent, "describe", "pods", "web-58b4f7c9d2")  # no pod has exactly that name
    assert [line for line in lines_of(several) if line.startswith("Name:")] == [
        "Name:           web-58b4f7c9d2-bxk2q",
        "Name:           web-58b4f7c9d2-tz9wm",
        "Name:           web-58b4f7c9d2-zzzzz",
    ]
    assert "\n\n\nName:" in several  # kubectl's separator
    every = ok(agent, "describe", "jobs")
    assert [line for line in lines_of(every) if line.startswith("Name:")] == [
        "Name:           crunch",
        "Name:           pi",
    ]
    missing = run(agent, "describe", "pod", "nothing", "web-58b4f7c9d2-bxk2q")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == 'Error from server (NotFound): pods "nothing" not found'
    assert missing.stdout.startswith("Name:           web-58b4f7c9d2-bxk2q")  # the others still
    unknown = run(agent, "describe", "widgets")
    assert unknown.exit_code == 1 and "describe knows: pods" in unknown.stderr
    blobs = run(agent, "describe", "blobs")
    assert blobs.exit_code == 1 and "cannot be described" in blobs.stderr


def test_describe_deployment(agent: Agent) -> None:
    lines = lines_of(ok(agent, "describe", "deployment", "web"))
    for expected in (
        "Name:                   web",
        "Namespace:              default",
        "Selector:               app=web",
        "Replicas:               3 desired | 3 updated | 3 total | 2 available | 1 unavailable",
        "StrategyType:           RollingUpdate",
        "RollingUpdateStrategy:  25% max unavailable, 25% max surge",
        "Pod Template:",
        "  Labels:  app=web",
        "  Containers:",
        "   main:",
        "    Environment:  <none>",
        "    Mounts:       <none>",
        "  Volumes:        <none>",
        "Conditions:",
        "  Available      True    MinimumReplicasAvailable",
        "  Progressing    True    ReplicaSetUpdated",
        "OldReplicaSets:  <none>",  # the old one is scaled to 0
        "NewReplicaSet:   web-58b4f7c9d2 (3/3 replicas created)",
        "Events:",
    ):
        assert expected in lines, (expected, lines)
    assert rows(lines[-1])[0][:2] == ["Normal", "ScalingReplicaSet"]
    # Mid-rollout both show.
    rs = agent.get("ReplicaSet", "web-6f7d9c8b5a")
    rs["spec"]["replicas"], rs["status"]["replicas"] = 1, 1
    agent.call(lambda: agent.backend.set(rs))
    lines = lines_of(ok(agent, "describe", "deploy", "web"))
    assert "OldReplicaSets:  web-6f7d9c8b5a (1/1 replicas created)" in lines


def test_describe_replicaset_job_daemonset(agent: Agent) -> None:
    rs = lines_of(ok(agent, "describe", "rs", "web-58b4f7c9d2"))
    for expected in (
        "Selector:       app=web,pod-template-hash=58b4f7c9d2",
        "Annotations:    deployment.kubernetes.io/revision: 2",
        "Controlled By:  Deployment/web",
        "Replicas:       3 current / 3 desired",
        "Pods Status:    2 Running / 1 Waiting / 0 Succeeded / 0 Failed",
    ):
        assert expected in rs, (expected, rs)
    assert rs[-1].split() == ["Events:", "<none>"]

    job_lines = lines_of(ok(agent, "describe", "job", "pi"))
    for expected in (
        "Parallelism:    1",
        "Completions:    3",
        "Duration:       47s",
        "Pods Statuses:  0 Active / 3 Succeeded / 0 Failed",
        "   calc:",
        "  Complete  True    Completed  Job completed",
    ):
        assert expected in job_lines, (expected, job_lines)
    assert any(line.startswith("Start Time:     ") for line in job_lines)
    assert any(line.startswith("Completed At:   ") for line in job_lines)
    assert rows(job_lines[-1])[0][:2] == ["Normal", "Completed"]
    running = lines_of(ok(agent, "describe", "job", "crunch"))
    assert "Pods Statuses:  1 Active / 1 Succeeded / 0 Failed" in running
    assert not any(line.startswith(("Completed At:", "Duration:")) for line in running)

    ds = lines_of(ok(agent, "describe", "ds", "agent"))
    for expected in (
        "Node-Selector:    zone=a",
        "Desired Number of Nodes Scheduled: 2",
        "Number of Nodes Scheduled with Up-to-date Pods: 2",
        "Number of Nodes Scheduled with Available Pods: 1",
        "Number of Nodes Misscheduled: 0",
        "  Node-Selectors:  zone=a",
    ):
        assert expected in ds, (expected, ds)


def test_describe_node_and_configmap(agent: Agent) -> None:
    lines = lines_of(ok(agent, "describe", "node", "n1"))
    for expected in (
        "Name:               n1",
        "Labels:             p2pkube.io/kind=native",
        "                    zone=a",
        "Capacity:",
        "  cpu:     2",
        "  memory:  4Gi",
        "Allocatable:",
        "System Info:",
        "  Agent Version:      0.1.0",
        "Non-terminated Pods:  (1 in total)",  # the pending pod is on no node, tz9wm on n2
        "Allocated resources:",
        "  cpu       500m (25%)  0 (0%)",
        "  memory    64Mi (1%)   64Mi (1%)",
        "Events:     <none>",
    ):
        assert expected in lines, (expected, lines)
    ready = next(line for line in lines if line.startswith("  Ready"))
    assert ready.split()[1] == "True" and ready.split()[-1] == "AgentReady"
    pod_row = next(line for line in lines if "web-58b4f7c9d2-bxk2q" in line)
    assert pod_row.split()[:6] == ["default", "web-58b4f7c9d2-bxk2q", "500m", "(25%)", "0", "(0%)"]
    all_nodes = ok(agent, "describe", "nodes")
    assert "Name:               n2" in all_nodes

    cm = lines_of(ok(agent, "describe", "cm", "greeting"))
    assert cm[:4] == ["Name:         greeting", "Namespace:    default", "Labels:       <none>",
                      "Annotations:  <none>"]  # fmt: skip
    assert cm[cm.index("poem:") + 1 : cm.index("poem:") + 4] == ["----", "line one", "line two"]


# --- scale -----------------------------------------------------------------------------------


def test_scale_a_deployment_read_modify_write(agent: Agent) -> None:
    assert ok(agent, "scale", "deployment", "web", "--replicas", "5") == "deployment/web scaled\n"
    (body,) = agent.backend.puts
    assert body["spec"]["replicas"] == 5
    assert "status" not in body and "generation" not in body["metadata"]
    assert (
        body["spec"]["template"] == agent.get("Deployment", "web")["spec"]["template"]
    )  # the rest unchanged
    stored = agent.get("Deployment", "web")
    assert stored["metadata"]["generation"] == 3 and stored["status"]["revision"] == 2
    assert rows(ok(agent, "get", "deploy"))[1][1] == "2/5"

    assert ok(agent, "scale", "deploy/web", "--replicas", "1", "--current-replicas", "5") == (
        "deployment/web scaled\n"
    )
    wrong = run(agent, "scale", "deploy", "web", "--replicas", "3", "--current-replicas", "4")
    assert wrong.exit_code == 1
    assert wrong.stderr.strip() == "error: Expected replicas to be 4, was 1"
    assert len(agent.backend.puts) == 2  # the precondition failed before any write


def test_scale_replicasets_and_refusals(agent: Agent) -> None:
    owned = run(agent, "scale", "rs", "web-58b4f7c9d2", "--replicas", "1")
    assert owned.exit_code == 1
    assert "controlled by Deployment/web" in owned.stderr and agent.backend.puts == []
    lone = replicaset("solo-abc", 1, ["1"], 1, 1)
    del lone["metadata"]["ownerReferences"]
    agent.call(lambda: agent.backend.set(lone))
    assert ok(agent, "scale", "replicaset", "solo-abc", "--replicas", "4") == (
        "replicaset/solo-abc scaled\n"
    )
    assert agent.backend.puts[-1]["spec"]["replicas"] == 4
    for args, needle, code in (
        (["job", "pi", "--replicas", "2"], "works on deployments, replicasets", 1),
        (["deploy", "web"], "--replicas", 2),
        (["deploy", "web", "--replicas", "-1"], "--replicas", 2),
        (["deploy", "--replicas", "1"], "NAME", 2),
        (["deploy", "nope", "--replicas", "1"], 'deployments "nope" not found', 1),
    ):
        result = run(agent, "scale", *args)
        assert result.exit_code == code, (args, result.stderr)
        assert needle in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


# --- rollout -----------------------------------------------------------------------------------


async def _status(backend: MemoryBackend, generation: int, **status: Any) -> None:
    obj = current(backend, "Deployment", "web")
    obj["metadata"]["generation"] = generation
    obj["status"] = {"observedGeneration": status.pop("observed", generation), **status}
    await backend.set(obj)


def test_rollout_status_follows_the_watch_until_rolled_out(agent: Agent) -> None:
    agent.call(lambda: _status(agent.backend, 3, observed=2, replicas=3, updatedReplicas=3,
                               availableReplicas=3))  # fmt: skip
    script(
        agent,
        [
            (0.2, lambda b: _status(b, 3, replicas=4, updatedReplicas=1, availableReplicas=3)),
            (0.4, lambda b: _status(b, 3, replicas=5, updatedReplicas=3, availableReplicas=3)),
            (0.5, lambda b: _status(b, 3, replicas=5, updatedReplicas=3, availableReplicas=4)),
            (0.6, lambda b: _status(b, 3, replicas=3, updatedReplicas=3, availableReplicas=2)),
            (0.8, lambda b: _status(b, 3, replicas=3, updatedReplicas=3, availableReplicas=3)),
        ],
    )
    started = time.monotonic()
    out = ok(agent, "rollout", "status", "deployment", "web", "--timeout", "30s")
    assert time.monotonic() - started < 10
    waiting = 'Waiting for deployment "web" rollout to finish: '
    assert out.splitlines() == [
        "Waiting for deployment spec update to be observed...",
        f"{waiting}1 out of 3 new replicas have been updated...",
        f"{waiting}2 old replicas are pending termination...",  # printed once for two events
        f"{waiting}2 of 3 updated replicas are available...",
        'deployment "web" successfully rolled out',
    ]


def test_rollout_status_times_out_or_reports_once(agent: Agent) -> None:
    started = time.monotonic()
    result = run(agent, "rollout", "status", "deploy/web", "--timeout", "1s")
    took = time.monotonic() - started
    assert result.exit_code == 1
    assert result.stdout == (
        'Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...\n'
    )
    assert result.stderr.strip() == (
        'error: timed out after 1s waiting for the rollout of deployment "web" to finish'
    )
    assert 0.9 < took < 8
    once = run(agent, "rollout", "status", "deploy", "web", "--watch=false")
    assert once.exit_code == 0 and len(once.stdout.splitlines()) == 1
    assert run(agent, "rollout", "status", "deploy", "web", "-w", "--timeout", "1").exit_code == 1
    agent.call(lambda: _status(agent.backend, 2, replicas=3, updatedReplicas=3,
                               availableReplicas=3))  # fmt: skip
    done = run(agent, "rollout", "status", "deploy", "web")
    assert (done.exit_code, done.stdout) == (0, 'deployment "web" successfully rolled out\n')
    missing = run(agent, "rollout", "status", "deploy", "nope")
    assert missing.exit_code == 1 and "NotFound" in missing.stderr


def test_rollout_status_of_a_deployment_deleted_meanwhile(agent: Agent) -> None:
    async def delete(backend: MemoryBackend) -> None:
        await backend.remove("Deployment", "default", "web")

    script(agent, [(0.2, delete)])
    result = run(agent, "rollout", "status", "deploy", "web")
    assert result.exit_code == 1 and "was deleted" in result.stderr


def test_rollout_status_of_a_daemonset(agent: Agent) -> None:
    ds = agent.get("DaemonSet", "agent")

    async def ready(backend: MemoryBackend) -> None:
        await backend.set(
            {**ds, "status": {**ds["status"], "numberAvailable": 2, "numberReady": 2}}
        )

    script(agent, [(0.2, ready)])
    out = ok(agent, "rollout", "status", "ds", "agent", "--timeout", "10s")
    assert out.splitlines() == [
        'Waiting for daemon set "agent" rollout to finish: 1 of 2 updated pods are available...',
        'daemon set "agent" successfully rolled out',
    ]


def test_rollout_history(agent: Agent) -> None:
    out = ok(agent, "rollout", "history", "deployment", "web")
    assert out.splitlines() == [
        "deployment/web",
        "REVISION  CHANGE-CAUSE",
        "1         first version",
        "2         <none>",
    ]
    one = ok(agent, "rollout", "history", "deploy/web", "--revision", "1")
    lines = lines_of(one)
    assert lines[0] == "deployment/web with revision #1"
    assert "Pod Template:" in lines and lines[lines.index("    Args:") + 1] == "      1"
    missing = run(agent, "rollout", "history", "deploy", "web", "--revision", "9")
    assert missing.exit_code == 1 and "unable to find the specified revision 9" in missing.stderr
    refused = run(agent, "rollout", "history", "ds", "agent")
    assert refused.exit_code == 1 and "works on deployments" in refused.stderr


def test_rollout_undo_puts_the_old_template_back_without_its_hash(agent: Agent) -> None:
    assert ok(agent, "rollout", "undo", "deployment", "web") == "deployment/web rolled back\n"
    (body,) = agent.backend.puts
    old_rs = agent.get("ReplicaSet", "web-6f7d9c8b5a")
    expected = copy.deepcopy(old_rs["spec"]["template"])
    del expected["metadata"]["labels"]["pod-template-hash"]
    assert body["spec"]["template"] == expected  # revision 1's, without pod-template-hash
    assert body["spec"]["template"]["metadata"]["labels"] == {"app": "web"}
    assert body["spec"]["template"]["spec"]["containers"][0]["args"] == ["1"]
    assert body["metadata"]["annotations"]["kubernetes.io/change-cause"] == "first version"
    assert "status" not in body and "generation" not in body["metadata"]
    assert body["spec"]["replicas"] == 3 and body["spec"]["strategy"]["type"] == "RollingUpdate"
    assert agent.get("Deployment", "web")["metadata"]["generation"] == 3

    # The template is revision 1's now: undoing to it again is skipped.
    again = ok(agent, "rollout", "undo", "deploy", "web", "--to-revision", "1")
    assert again == (
        "deployment/web skipped rollback (current template already matches revision 1)\n"
    )
    assert ok(agent, "rollout", "undo", "deploy/web", "--to-revision", "2") == (
        "deployment/web rolled back\n"
    )
    assert agent.backend.puts[-1]["spec"]["template"]["spec"]["containers"][0]["args"] == ["2"]
    bad = run(agent, "rollout", "undo", "deploy", "web", "--to-revision", "7")
    assert bad.exit_code == 1
    assert bad.stderr.strip() == "error: unable to find specified revision 7 in history"


def test_rollout_undo_without_a_previous_revision(agent: Agent) -> None:
    agent.call(lambda: agent.backend.remove("ReplicaSet", "default", "web-6f7d9c8b5a"))
    result = run(agent, "rollout", "undo", "deploy", "web")
    assert result.exit_code == 1
    assert 'no rollout history found for deployment "web"' in result.stderr
    assert agent.backend.puts == []


def test_rollout_restart_sets_restarted_at(agent: Agent) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    assert ok(agent, "rollout", "restart", "deployment", "web") == "deployment/web restarted\n"
    (body,) = agent.backend.puts
    annotations = body["spec"]["template"]["metadata"]["annotations"]
    stamp = datetime.fromisoformat(annotations["kubectl.kubernetes.io/restartedAt"])
    assert before <= stamp <= datetime.now(UTC)
    assert body["spec"]["template"]["spec"] == normalized(deployment())["spec"]["template"]["spec"]
    stored = agent.get("Deployment", "web")
    assert stored["metadata"]["generation"] == 3  # a spec change: a new rollout
    assert ok(agent, "rollout", "restart", "ds/agent") == "daemonset/agent restarted\n"


def test_help_lists_the_new_commands() -> None:
    top = CliRunner().invoke(cli, ["--help"]).stdout
    for command in ("describe", "scale", "rollout"):
        assert f"  {command} " in top
    rollout_help = CliRunner().invoke(cli, ["rollout", "--help"]).stdout
    for sub in ("status", "history", "undo", "restart"):
        assert f"  {sub} " in rollout_help
    get_help = CliRunner().invoke(cli, ["get", "--help"]).stdout
    for name in ("deployments (deploy)", "replicasets (rs)", "daemonsets (ds)", "events (ev)",
                 "--watch-only", "--output-watch-events"):  # fmt: skip
        assert name in get_help


# --- pure helpers ----------------------------------------------------------------------------


def test_writer_aligns_like_gos_tabwriter() -> None:
    w = Writer()
    w.line(0, "Name:", "web")
    w.line(0, "Namespace:", "default")
    w.line(0, "Containers:")  # no cell: ends the block
    w.line(1, "main:")
    w.line(2, "Image:", "x")
    w.line(3, "Started:", "now")
    w.line(0, "Events:")
    w.line(1, "Type", "Reason", "Message")
    w.line(1, "Normal", "Scheduled", "one\ttab")  # a tab in a value is just text
    w.line(0, "")
    w.line(0, "Multi:", "a\nb")
    assert w.text().splitlines() == [
        "Name:       web",
        "Namespace:  default",
        "Containers:",
        "  main:",
        "    Image:      x",
        "      Started:  now",
        "Events:",
        "  Type    Reason     Message",
        "  Normal  Scheduled  one\ttab",
        "",
        "Multi:  a",
        "        b",
    ]


def test_row_printer_keeps_columns_and_prints_the_header_once() -> None:
    printer = RowPrinter(["NAME", "STATUS"])
    assert printer.lines(["a", "Running"]) == ["NAME   STATUS", "a      Running"]
    assert printer.lines(["much-longer", "Pending"]) == ["much-longer   Pending"]
    assert printer.lines(["b", "Running"]) == ["b             Running"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("2m30s", 150),
        ("1h", 3600),
        ("500ms", 0.5),
        ("90", 90),
        ("0", 0),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "-1", "1m-2s", "nan"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_progress_lines_match_kubectl() -> None:
    d = deployment(3)
    d["metadata"]["generation"] = 2
    d["status"] = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
                   "availableReplicas": 3}  # fmt: skip
    assert deployment_progress(d) == ('deployment "web" successfully rolled out', True)
    d["status"]["updatedReplicas"] = 4  # a surplus new pod on its way out
    d["status"]["replicas"] = 4
    assert deployment_progress(d)[1] is False
    d["status"] = {}
    assert deployment_progress(d) == ("Waiting for deployment spec update to be observed...", False)
    ds = daemonset()
    ds["status"]["updatedNumberScheduled"] = 1
    assert daemonset_progress(ds) == (
        'Waiting for daemon set "agent" rollout to finish: 1 out of 2 new pods have been '
        "updated...",
        False,
    )


def test_get_watch_skips_changes_no_column_shows(agent: Agent) -> None:
    async def annotate(backend: MemoryBackend) -> None:
        pod = current(backend, "Pod", "web-58b4f7c9d2-bxk2q")
        pod["metadata"]["annotations"] = {"note": "invisible in the table"}
        await backend.set(pod)

    script(agent, [(0.2, annotate), (0.4, _pod_deleted)])
    out = ok(agent, "get", "pods", "--watch-only", "--request-timeout", "1")
    assert [r[0] for r in rows(out)] == ["NAME", "web-58b4f7c9d2-tz9wm"]  # only the DELETED row

    async def annotate_again(backend: MemoryBackend) -> None:
        pod = current(backend, "Pod", "web-58b4f7c9d2-bxk2q")
        pod["metadata"]["annotations"] = {"note": "still invisible"}
        await backend.set(pod)

    script(agent, [(0.2, annotate_again)])
    names = ok(agent, "get", "pods", "--watch-only", "-o", "name", "--request-timeout", "1")
    assert names == "pod/web-58b4f7c9d2-bxk2q\n"  # -o name prints every event


def test_apply_takes_what_get_o_yaml_printed(agent: Agent, tmp_path: Path) -> None:
    """status and metadata.generation are the agent's: apply drops them like kubectl."""
    manifest = tmp_path / "web.yaml"
    manifest.write_text(ok(agent, "get", "deployment", "web", "-o", "yaml"))
    assert "generation: 2" in manifest.read_text() and "status:" in manifest.read_text()
    assert ok(agent, "apply", "-f", str(manifest)) == "deployment/web unchanged\n"
    (body,) = agent.backend.puts
    assert "status" not in body and "generation" not in body["metadata"]
