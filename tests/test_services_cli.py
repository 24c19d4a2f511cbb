"""``get services|svc``, ``get endpoints|ep``, ``describe service`` and a handler pod's
``describe``, against a real local API server (issue 12).

As in test_cli_workloads.py, the real ``ApiServer`` runs on 127.0.0.1:0 in a thread of its own
over the in-memory backend (tests/memorybackend.py: the agent's real object service, with the
Endpoints kind computed as the agent computes it). Services are written by ``p2pkube apply``
(validation and NodePort allocation as on an agent); pods and nodes are written as their
kubelets and the failure detector would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from p2pkube.cli.kinds import format_endpoints
from p2pkube.cli.main import cli
from tests.memorybackend import MemoryBackend, blob, serving

IMAGE = "sha256:" + "ab" * 32
NOW = datetime.now(UTC).replace(microsecond=0)


def ts(ago: timedelta = timedelta()) -> str:
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def node(name: str, ready: str = "True") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"id-{name}", "creationTimestamp": ts()},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def handler_pod(name: str, node_name: str, *, ready: bool = True) -> dict[str, Any]:
    """A handler pod of the web Deployment as its kubelet shows it."""
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "labels": {"app": "web"},
            "creationTimestamp": ts(timedelta(minutes=5)),
        },
        "spec": {
            "containers": [
                {
                    "name": "echo",
                    "image": IMAGE,
                    "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                        "initialDelaySeconds": 0,
                        "successThreshold": 1,
                        "failureThreshold": 3,
                        "periodSeconds": 2,
                    },
                }
            ],
            "nodeName": node_name,
            "restartPolicy": "Always",
        },
        "status": {
            "podUID": f"uid-{name}",
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: web, labels: {tier: front}}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
  - {name: alt, port: 81, targetPort: 8080}
---
apiVersion: p2pkube.io/v1
kind: Service
metadata: {name: internal}
spec:
  selector: {app: nothing}
  ports:
  - {port: 8080}
"""


@dataclass
class Agent:
    backend: MemoryBackend
    data_dir: Path
    tmp: Path


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    """A real ApiServer over the memory backend: three nodes (n3 NotReady), five web pods."""
    backend = MemoryBackend("n1")
    objects = [
        node("n1"),
        node("n2"),
        node("n3", "False"),
        blob(IMAGE),
        handler_pod("web-a", "n1"),
        handler_pod("web-b", "n2"),
        handler_pod("web-c", "n1"),
        handler_pod("web-d", "n2"),
        handler_pod("web-e", "n3"),  # its node is NotReady
        handler_pod("web-f", "n1", ready=False),  # its probe has not passed
    ]
    data_dir = tmp_path / "data"
    with serving(backend, objects, data_dir):
        yield Agent(backend, data_dir, tmp_path)


def run(agent: Agent, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(
        cli, ["--data-dir", str(agent.data_dir), *args], input=stdin, catch_exceptions=False
    )


def ok(agent: Agent, *args: str, stdin: str | None = None) -> str:
    result = run(agent, *args, stdin=stdin)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def rows(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


@pytest.fixture
def applied(agent: Agent) -> Agent:
    assert ok(agent, "apply", "-f", "-", stdin=SERVICES).splitlines() == [
        "service/web created",
        "service/internal created",
    ]
    return agent


def test_get_services_shows_type_ports_and_selector(applied: Agent) -> None:
    web = json.loads(ok(applied, "get", "svc", "web", "-o", "json"))
    alt = web["spec"]["ports"][1]["nodePort"]  # allocated at apply
    assert 30000 <= alt <= 32767 and alt != 30080
    for name in ("services", "service", "svc", "services.v1"):
        table = rows(ok(applied, "get", name))
        # AGE is seconds since apply: "0s" or "1s" on a loaded machine, never blank
        ages = [row.pop() for row in table[1:]]
        assert all(re.fullmatch(r"\d+s", age) for age in ages), ages
        assert table == [
            ["NAME", "TYPE", "PORT(S)", "AGE"],
            ["internal", "ClusterIP", "8080/TCP"],
            ["web", "NodePort", f"80:30080/TCP,81:{alt}/TCP"],
        ]
    wide = rows(ok(applied, "get", "svc", "-o", "wide"))
    assert wide[0] == ["NAME", "TYPE", "PORT(S)", "AGE", "SELECTOR", "LABELS"]
    assert wide[2][2] == f"80:30080/TCP,81:{alt}/TCP"
    assert (wide[1][4], wide[2][4], wide[2][5]) == ("app=nothing", "app=web", "tier=front")
    # -o yaml shows what was written, under Kubernetes' apiVersion (the manifest said
    # p2pkube.io/v1, still accepted)
    internal = yaml.safe_load(ok(applied, "get", "svc", "internal", "-o", "yaml"))
    assert internal["apiVersion"] == "v1" and internal["kind"] == "Service"
    # re-applying keeps the allocated port: nothing changed
    assert "service/web unchanged" in ok(applied, "apply", "-f", "-", stdin=SERVICES)


def test_a_conflicting_nodeport_is_refused_with_the_field_path(applied: Agent) -> None:
    other = SERVICES.split("---")[0].replace("name: web,", "name: other,")
    result = run(applied, "apply", "-f", "-", stdin=other)
    assert result.exit_code != 0
    assert "spec.ports[0].nodePort: 30080 is already allocated to Service default/web" in (
        result.stderr
    )
    outside = SERVICES.split("---")[0].replace("30080", "29999")
    result = run(applied, "apply", "-f", "-", stdin=outside)
    assert "spec.ports[0].nodePort: 29999 is outside 30000-32767" in result.stderr


def test_get_endpoints_lists_ready_endpoints_as_node_pod_port(applied: Agent) -> None:
    table = rows(ok(applied, "get", "endpoints"))
    assert table[0] == ["NAME", "ENDPOINTS", "AGE"]
    assert table[1][:2] == ["internal", "<none>"]
    # web: a, b, c, d ready on two ports (8 addresses), e (node NotReady) and f (not Ready) not
    assert table[2][0] == "web"
    assert table[2][1] == "n1/web-a:8080,n2/web-b:8080,n1/web-c:8080 + 5 more..."
    assert rows(ok(applied, "get", "ep", "web")) == [table[0], table[2]]
    endpoints = json.loads(ok(applied, "get", "ep", "web", "-o", "json"))
    assert endpoints["kind"] == "Endpoints" and endpoints["apiVersion"] == "v1"
    (subset,) = endpoints["subsets"]
    assert [a["targetRef"]["name"] for a in subset["addresses"]] == [
        "web-a", "web-b", "web-c", "web-d"
    ]  # fmt: skip
    assert [a["nodeName"] for a in subset["notReadyAddresses"]] == ["n3", "n1"]
    assert all("ip" not in a for a in subset["addresses"])
    assert subset["ports"] == [
        {"name": "http", "port": 8080, "protocol": "TCP"},
        {"name": "alt", "port": 8080, "protocol": "TCP"},
    ]
    yaml_list = yaml.safe_load(ok(applied, "get", "ep", "-o", "yaml"))
    assert [i["metadata"]["name"] for i in yaml_list["items"]] == ["internal", "web"]


def test_endpoints_are_read_only(applied: Agent) -> None:
    result = run(applied, "delete", "endpoints", "web")
    assert result.exit_code != 0 and "endpoints cannot be deleted: every node computes" in (
        result.stderr
    )
    manifest = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets: []\n"
    result = run(applied, "apply", "-f", "-", stdin=manifest)
    assert result.exit_code != 0 and "kind: Endpoints are computed by every node" in result.stderr
    result = run(applied, "get", "ep", "-w")
    assert result.exit_code != 0
    result = run(applied, "get", "ep", "nope")
    assert result.exit_code != 0 and 'endpoints "nope" not found' in result.stderr
    # deleting the Service is what removes its endpoints
    assert ok(applied, "delete", "svc", "web").strip() == 'service "web" deleted'
    assert [r[0] for r in rows(ok(applied, "get", "ep"))] == ["NAME", "internal"]


def test_describe_service_shows_each_port_with_its_endpoints(applied: Agent) -> None:
    text = ok(applied, "describe", "svc", "web")
    lines = text.splitlines()
    assert rows("\n".join(lines)) == [
        ["Name:", "web"],
        ["Namespace:", "default"],
        ["Labels:", "tier=front"],
        ["Annotations:", "<none>"],
        ["Selector:", "app=web"],
        ["Type:", "NodePort"],
        ["Port:", "http", "80/TCP"],
        ["TargetPort:", "http/TCP"],
        ["NodePort:", "http", "30080/TCP"],
        ["Endpoints:", "n1/web-a:8080,n2/web-b:8080,n1/web-c:8080 + 1 more..."],
        ["Port:", "alt", "81/TCP"],
        ["TargetPort:", "8080/TCP"],
        ["NodePort:", "alt", rows(text)[12][2]],
        ["Endpoints:", "n1/web-a:8080,n2/web-b:8080,n1/web-c:8080 + 1 more..."],
        ["Events:", "<none>"],
    ]
    internal = rows(ok(applied, "describe", "service/internal"))
    assert ["Port:", "<unset>", "8080/TCP"] in internal and ["Endpoints:", "<none>"] in internal
    assert not any(r[0] == "NodePort:" for r in internal)


def test_describe_pod_shows_a_handlers_port_and_readiness_probe(agent: Agent) -> None:
    described = rows(ok(agent, "describe", "pod", "web-a"))
    assert ["Port:", "8080/TCP"] in described
    assert [
        "Readiness:",
        "http-get http://:http/healthz delay=0s timeout=1s period=2s #success=1 #failure=3",
    ] in described


def test_format_endpoints_truncates_as_kubectl() -> None:
    def address(i: int) -> dict[str, Any]:
        return {"nodeName": f"n{i}", "targetRef": {"kind": "Pod", "name": f"p{i}"}}

    three = {"subsets": [{"addresses": [address(i) for i in range(3)],
                          "ports": [{"name": "http", "port": 80}]}]}  # fmt: skip
    assert format_endpoints(three) == "n0/p0:80,n1/p1:80,n2/p2:80"
    assert format_endpoints(three, "other") == "<none>"
    four = {"subsets": [{"addresses": [address(i) for i in range(4)],
                         "ports": [{"port": 80}]}]}  # fmt: skip
    assert format_endpoints(four, "") == "n0/p0:80,n1/p1:80,n2/p2:80 + 1 more..."
    assert format_endpoints({"subsets": []}) == "<none>"
