"""The Service kind, handler containers' ports and readiness probes, NodePort allocation and
conflicts, and the endpoints every node computes (issue 12): fast, over hand-built objects.

Writes go through the agent's real object service over an in-memory state (as the local API
does); the endpoints functions take plain pod and Service dicts, as the router and the API get
them from the replicated state.
"""

from __future__ import annotations

import copy
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from p2pkube.model.errors import ValidationFailed
from p2pkube.model.nodeports import assign_node_ports, node_port_owners
from p2pkube.model.objects import ObjectService
from p2pkube.model.schema import validate_object
from p2pkube.services.endpoints import endpoints_object, pod_endpoint, pod_port, service_endpoints
from p2pkube.state import ClusterState
from p2pkube.state.pycrdt_store import PycrdtStore

IMAGE = "sha256:" + "ab" * 32


def errors_of(obj: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        validate_object(obj)
    return caught.value.errors


def pod(*containers: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"containers": list(containers)},
    }


def container(name: str = "main", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, **fields}


def service(
    name: str = "web",
    *ports: dict[str, Any],
    type: str | None = None,
    api: str = "v1",
    namespace: str | None = None,
    **meta: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"app": "web"}, "ports": list(ports) or [{"port": 80}]}
    if type is not None:
        spec["type"] = type
    metadata = {"name": name, **meta}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": api, "kind": "Service", "metadata": metadata, "spec": spec}


# --- containers[].ports and readinessProbe ------------------------------------------------------


def test_a_handler_container_keeps_its_ports_and_probe_with_kubernetes_defaults() -> None:
    c = container(
        ports=[{"containerPort": 8080, "name": "http"}],
        readinessProbe={"httpGet": {"port": "http", "path": "/healthz"}, "periodSeconds": 2},
    )
    spec = validate_object(pod(c))["spec"]["containers"][0]
    assert spec["ports"] == [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]
    probe = spec["readinessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "http", "httpHeaders": [],
                                "scheme": "HTTP"}  # fmt: skip
    assert (probe["initialDelaySeconds"], probe["successThreshold"], probe["failureThreshold"]) == (
        0,
        1,
        3,
    )
    assert probe["periodSeconds"] == 2
    assert "timeoutSeconds" not in probe  # services.probe_timeout applies at run time


def test_a_container_without_ports_stores_none() -> None:
    spec = validate_object(pod(container()))["spec"]["containers"][0]
    assert "ports" not in spec and "readinessProbe" not in spec


@pytest.mark.parametrize(
    ("port", "error"),
    [
        ({"containerPort": 0}, "containers[0].ports[0].containerPort: Input should be greater"),
        ({"containerPort": 65536}, "containers[0].ports[0].containerPort: Input should be less"),
        ({"name": "http"}, "containers[0].ports[0].containerPort: Field required"),
        ({"containerPort": 80, "name": "HTTP"}, "ports[0].name: must contain only lowercase"),
        ({"containerPort": 80, "name": "a--b"}, "ports[0].name: must contain only lowercase"),
        ({"containerPort": 80, "name": "-ab"}, "ports[0].name: must contain only lowercase"),
        ({"containerPort": 80, "name": "8080"}, "ports[0].name: must contain at least one letter"),
        ({"containerPort": 80, "name": "a" * 16}, "ports[0].name: must be no more than 15"),
        ({"containerPort": 80, "protocol": "UDP"}, "ports[0].protocol: 'UDP' is not supported: "
                                                   "handler pods answer HTTP over TCP"),
        ({"containerPort": 80, "protocol": "SCTP"}, "ports[0].protocol: 'SCTP' is not supported"),
        ({"containerPort": 80, "hostport": 80}, "ports[0].hostport: unknown field"),
    ],
)  # fmt: skip
def test_bad_container_ports_name_the_field(port: dict[str, Any], error: str) -> None:
    errors = errors_of(pod(container(ports=[port])))
    assert any(error in e and e.startswith("spec.containers[0].ports[0].") for e in errors), errors


def test_port_numbers_and_names_are_unique_within_the_pod() -> None:
    errors = errors_of(
        pod(
            container("a", ports=[{"containerPort": 80, "name": "http"}]),
            container("b", ports=[{"containerPort": 80}, {"containerPort": 81, "name": "http"}]),
        )
    )
    assert errors == [
        "spec.containers[1].ports[0].containerPort: Duplicate value: 80",
        "spec.containers[1].ports[1].name: Duplicate value: 'http'",
    ]


@pytest.mark.parametrize(
    ("probe", "error"),
    [
        ({"exec": {"command": ["true"]}}, "readinessProbe.exec: not supported: a handler pod is "
                                          "probed over HTTP only (httpGet)"),
        ({"tcpSocket": {"port": 80}}, "readinessProbe.tcpSocket: not supported"),
        ({"grpc": {"port": 80}}, "readinessProbe.grpc: not supported"),
        ({"periodSeconds": 3}, "readinessProbe.httpGet: Required value"),
        ({"httpGet": {"port": 80, "scheme": "HTTPS"}}, "readinessProbe.httpGet.scheme: 'HTTPS' is "
                                                       "not supported"),
        ({"httpGet": {"port": "metrics"}}, "readinessProbe.httpGet.port: no port named 'metrics'"),
        ({"httpGet": {"port": 81}}, "readinessProbe.httpGet.port: 81 is not one of the "
                                    "container's ports (80)"),
        ({"httpGet": {"port": 80, "path": "healthz"}}, "readinessProbe.httpGet.path: must be an "
                                                       "absolute URL path"),
        ({"httpGet": {"port": 80}, "failureThreshold": 0}, "readinessProbe.failureThreshold: "
                                                           "Input should be greater than or equal"),
        ({"httpGet": {"port": 80}, "periodSeconds": 0}, "readinessProbe.periodSeconds: Input "),
        ({"httpGet": {"port": 80, "httpHeaders": [{"name": "a b", "value": "x"}]}},
         "readinessProbe.httpGet.httpHeaders[0].name: must be an HTTP header field name"),
    ],
)  # fmt: skip
def test_bad_readiness_probes_name_the_field(probe: dict[str, Any], error: str) -> None:
    c = container(ports=[{"containerPort": 80, "name": "http"}], readinessProbe=probe)
    errors = errors_of(pod(c))
    assert any(e.startswith("spec.containers[0].") and error in e for e in errors), errors


def test_a_readiness_probe_needs_a_container_with_ports() -> None:
    errors = errors_of(pod(container(readinessProbe={"httpGet": {"port": 80}})))
    assert errors == [
        "spec.containers[0].readinessProbe: a container without ports answers no HTTP request "
        "to probe (declare ports: [{containerPort: N}])"
    ]


# --- the Service kind -------------------------------------------------------------------------


def test_a_service_gets_kubernetes_defaults_and_kubernetes_api_version() -> None:
    for api in ("v1", "p2pkube.io/v1"):  # the old alias is still accepted
        valid = validate_object(service("web", {"port": 80}, api=api))
        assert valid["apiVersion"] == "v1"
        assert valid["spec"] == {
            "selector": {"app": "web"},
            "type": "ClusterIP",
            "ports": [{"protocol": "TCP", "port": 80, "targetPort": 80}],
        }
    named = validate_object(service("web", {"port": 80, "targetPort": "http"}, type="NodePort"))
    assert named["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"type": "LoadBalancer"}, "spec.type: 'LoadBalancer' is not supported: p2pkube "
                                   "provisions no external load balancer; use NodePort"),
        ({"type": "ExternalName"}, "spec.type: 'ExternalName' is not supported"),
        ({"type": "Headless"}, "spec.type: 'Headless' is not a Service type"),
        ({"ports": []}, "spec.ports: List should have at least 1 item"),
        ({"ports": [{"port": 0}]}, "spec.ports[0].port: Input should be greater than or equal"),
        ({"ports": [{"port": 80, "protocol": "UDP"}]}, "spec.ports[0].protocol: 'UDP' is not "
                                                       "supported: handler pods answer HTTP"),
        ({"ports": [{"port": 80, "targetPort": 0}]}, "spec.ports[0].targetPort: must be between"),
        ({"ports": [{"port": 80, "targetPort": "Web_"}]}, "spec.ports[0].targetPort: must contain "
                                                          "only lowercase"),
        ({"ports": [{"port": 80, "nodePort": 30080}]}, "spec.ports[0].nodePort: may only be set "
                                                       "when type is NodePort (type is ClusterIP)"),
        ({"ports": [{"port": 80}, {"port": 81, "name": "b"}]}, "spec.ports[0].name: Required "
                                                               "value"),
        ({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}, "spec.ports[1].port: "
                                                                            "Duplicate value: 80"),
        ({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}, "spec.ports[1].name: "
                                                                            "Duplicate value"),
        ({"selector": {"app": "-x"}}, "spec.selector: value of 'app'"),
        ({"clusterIp": "10.0.0.1"}, "spec.clusterIp: unknown field"),
    ],
)  # fmt: skip
def test_bad_services_name_the_field(spec: dict[str, Any], error: str) -> None:
    obj = service()
    obj["spec"].update(spec)
    errors = errors_of(obj)
    assert any(error in e for e in errors), errors


def test_endpoints_cannot_be_written() -> None:
    errors = errors_of({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"}})
    assert errors == [
        "kind: Endpoints are computed by every node from the Services and the pods (p2pkube "
        "get endpoints shows them); they cannot be written"
    ]


# --- NodePort allocation at apply ------------------------------------------------------------


@pytest.fixture
async def objects() -> AsyncIterator[ObjectService]:
    """The agent's object service over an in-memory state, as the local API writes through it."""
    state = ClusterState(None, store_factory=PycrdtStore)
    await state.open()
    try:
        yield ObjectService(state, node_ready=lambda name: True, validate=validate_object)
    finally:
        await state.close()


async def put_errors(objects: ObjectService, obj: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        await objects.put(obj)
    return caught.value.errors


async def test_nodeports_are_allocated_in_the_range_and_kept_on_reapply(
    objects: ObjectService,
) -> None:
    web = service("web", {"name": "http", "port": 80}, {"name": "admin", "port": 81},
                  type="NodePort")  # fmt: skip
    stored = await objects.put(copy.deepcopy(web))
    first = {p["name"]: p["nodePort"] for p in stored["spec"]["ports"]}
    assert all(30000 <= n <= 32767 for n in first.values()) and len(set(first.values())) == 2
    # the same manifest again, the ports reordered and one renumbered: matched by name
    web["spec"]["ports"] = [{"name": "admin", "port": 82}, {"name": "http", "port": 80}]
    again = await objects.put(copy.deepcopy(web))
    assert {p["name"]: p["nodePort"] for p in again["spec"]["ports"]} == first
    # an unnamed port is matched by its number
    single = service("one", {"port": 8080}, type="NodePort")
    kept = (await objects.put(copy.deepcopy(single)))["spec"]["ports"][0]["nodePort"]
    assert (await objects.put(copy.deepcopy(single)))["spec"]["ports"][0]["nodePort"] == kept


async def test_a_nodeport_held_by_another_service_is_refused(objects: ObjectService) -> None:
    await objects.put(service("other", {"port": 80, "nodePort": 30080}, type="NodePort"))
    await objects.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}})
    errors = await put_errors(
        objects,
        service("web", {"port": 80, "nodePort": 30080}, type="NodePort", namespace="prod"),
    )
    assert errors == ["spec.ports[0].nodePort: 30080 is already allocated to Service default/other"]
    # the holder itself may be applied again with its port
    await objects.put(service("other", {"port": 80, "nodePort": 30080}, type="NodePort"))
    # and a free one is never one that is held
    allocated = await objects.put(service("web", {"port": 80}, type="NodePort"))
    assert allocated["spec"]["ports"][0]["nodePort"] != 30080


async def test_nodeports_outside_the_range_or_twice_are_refused(objects: ObjectService) -> None:
    errors = await put_errors(
        objects,
        service(
            "web",
            {"name": "a", "port": 80, "nodePort": 30100},
            {"name": "b", "port": 81, "nodePort": 29999},
            {"name": "c", "port": 82, "nodePort": 30100},
            type="NodePort",
        ),
    )
    assert errors == [
        "spec.ports[1].nodePort: 29999 is outside 30000-32767 (services.node_port_range)",
        "spec.ports[2].nodePort: Duplicate value: 30100",
    ]
    objects.node_ports = range(20000, 20002)  # services.node_port_range "20000-20001"
    ok = await objects.put(service("low", {"port": 80, "nodePort": 20000}, type="NodePort"))
    assert ok["spec"]["ports"][0]["nodePort"] == 20000
    two = await objects.put(service("two", {"port": 80}, type="NodePort"))
    assert two["spec"]["ports"][0]["nodePort"] == 20001
    errors = await put_errors(objects, service("full", {"port": 80}, type="NodePort"))
    assert errors == ["spec.ports[0].nodePort: no free NodePort left in 20000-20001"]


async def test_a_clusterip_service_gets_no_nodeport(objects: ObjectService) -> None:
    stored = await objects.put(service("web", {"port": 80}))
    assert "nodePort" not in stored["spec"]["ports"][0]


def test_concurrent_holders_resolve_to_the_older_service_then_the_smaller_name() -> None:
    def held(name: str, ns: str, created: str, port_name: str = "") -> dict[str, Any]:
        port = {"port": 80, "nodePort": 30080, **({"name": port_name} if port_name else {})}
        obj = service(name, port, type="NodePort", namespace=ns, creationTimestamp=created)
        return validate_object(obj)

    young = held("a", "default", "2026-12-06T10:00:01Z")
    old = held("z", "prod", "2026-12-06T10:00:00Z", "http")
    assert node_port_owners([young, old]) == {30080: ("prod", "z", "http")}
    twin = held("b", "default", "2026-12-06T10:00:00Z")
    assert node_port_owners([old, twin, young]) == {30080: ("default", "b", "")}
    assert node_port_owners([twin, old]) == node_port_owners([old, twin])
    clusterip = validate_object(service("c", {"port": 80}))
    assert node_port_owners([clusterip]) == {}


def test_allocation_is_random_and_leaves_other_services_alone() -> None:
    web = validate_object(service("web", {"port": 80}, type="NodePort"))
    picks = {
        assign_node_ports(web, None, [], rng=random.Random(seed))["spec"]["ports"][0]["nodePort"]
        for seed in range(5)
    }
    assert len(picks) > 1  # random, as Kubernetes: two nodes allocating at once rarely collide
    assert web["spec"]["ports"][0].get("nodePort") is None  # the input is not changed


# --- endpoints -------------------------------------------------------------------------------

NODE_IDS = {"n1": "id-1", "n2": "id-2", "n3": "id-3"}


def node_ready(name: str) -> bool:
    return name != "n3"  # n3 is NotReady as this node sees it


def running_pod(
    name: str,
    node: str | None = "n1",
    *,
    ready: bool = True,
    labels: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    namespace: str = "default",
    **extra: Any,
) -> dict[str, Any]:
    """A pod as the object service shows it: spec, metadata and the status its kubelet wrote."""
    spec: dict[str, Any] = {
        "containers": [
            container(ports=ports if ports is not None else [{"containerPort": 8080,
                                                              "name": "http"}])
        ]
    }  # fmt: skip
    if node:
        spec["nodeName"] = node
    meta = {"name": name, "namespace": namespace, "labels": labels or {"app": "web"}}
    meta.update(extra.pop("metadata", {}))
    status = {
        "phase": extra.pop("phase", "Running"),
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    return {"apiVersion": "p2pkube.io/v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": status}  # fmt: skip


def web_service(*ports: dict[str, Any], selector: dict[str, str] | None = None) -> dict[str, Any]:
    obj = validate_object(service("web", *(ports or ({"port": 80, "targetPort": "http"},))))
    obj["spec"]["selector"] = {"app": "web"} if selector is None else selector
    obj["metadata"].update(namespace="default", creationTimestamp="2026-12-06T10:00:00Z")
    return obj


def compute(svc: dict[str, Any], pods: list[dict[str, Any]], port: int | str = "") -> list[Any]:
    return service_endpoints(svc, pods, node_ready=node_ready, node_id_of=NODE_IDS.get, port=port)


def test_endpoints_are_the_selected_pods_on_nodes_with_their_resolved_port() -> None:
    pods = [
        running_pod("web-b", "n2"),
        running_pod("web-a", "n1"),
        running_pod("web-c", "n3"),  # its node is NotReady
        running_pod("web-d", "n1", ready=False),  # its readiness probe has not passed
        running_pod("other", "n1", labels={"app": "db"}),
        running_pod("elsewhere", "n1", namespace="prod"),
        running_pod("pending", None),
        running_pod("going", "n1", metadata={"deletionTimestamp": "2026-12-06T10:00:00Z"}),
        running_pod("done", "n1", phase="Succeeded"),
        running_pod("no-port", "n1", ports=[{"containerPort": 9090, "name": "metrics"}]),
    ]
    found = compute(web_service(), pods)
    assert [(e.pod, e.node, e.node_id, e.port, e.ready) for e in found] == [
        ("web-a", "n1", "id-1", 8080, True),
        ("web-b", "n2", "id-2", 8080, True),
        ("web-c", "n3", "id-3", 8080, False),
        ("web-d", "n1", "id-1", 8080, False),
    ]
    assert found[0].key == "n1/web-a"


def test_target_ports_resolve_per_pod_by_number_or_name() -> None:
    pods = [
        running_pod("v1", ports=[{"containerPort": 8080, "name": "http"}]),
        running_pod("v2", ports=[{"containerPort": 9000, "name": "http"}]),
        running_pod("v3", ports=[{"containerPort": 8080}]),
    ]
    svc = web_service(
        {"name": "web", "port": 80, "targetPort": "http"},
        {"name": "raw", "port": 81, "targetPort": 8080},
    )
    assert [(e.pod, e.port) for e in compute(svc, pods, "web")] == [("v1", 8080), ("v2", 9000)]
    assert [(e.pod, e.port) for e in compute(svc, pods, 81)] == [("v1", 8080), ("v3", 8080)]
    assert [e.pod for e in compute(svc, pods)] == ["v1", "v2"]  # "" is the first port
    assert compute(svc, pods, "nope") == []
    # an empty selector selects nothing
    assert compute(web_service(selector={}), pods) == []
    # the port a targetPort defaults to is the Service port
    assert [e.pod for e in compute(web_service({"port": 8080}), pods)] == ["v1", "v3"]


def test_a_pods_own_port_for_port_forward() -> None:
    pod_a = running_pod("a", ports=[{"containerPort": 8080, "name": "http"},
                                    {"containerPort": 9090, "name": "metrics"}])  # fmt: skip
    assert pod_port(pod_a) == 8080
    assert pod_port(pod_a, "metrics") == 9090
    assert pod_port(pod_a, 9090) == 9090 and pod_port(pod_a, "9090") == 9090
    assert pod_port(pod_a, 7070) is None and pod_port(pod_a, "admin") is None
    assert pod_port(running_pod("b", ports=[])) is None
    endpoint = pod_endpoint(pod_a, node_ready=node_ready, node_id_of=NODE_IDS.get, port="metrics")
    assert endpoint is not None and (endpoint.pod, endpoint.port, endpoint.ready) == (
        "a",
        9090,
        True,
    )
    gone = running_pod("c", phase="Failed")
    assert pod_endpoint(gone, node_ready=node_ready, node_id_of=NODE_IDS.get) is None


def test_the_endpoints_object_has_kubernetes_shape_without_ips() -> None:
    pods = [
        running_pod("a", "n1"),
        running_pod("b", "n2", ready=False),
        running_pod("c", "n2", ports=[{"containerPort": 9000, "name": "http"}]),
    ]
    svc = web_service({"name": "web", "port": 80, "targetPort": "http"})
    obj = endpoints_object(svc, pods, node_ready=node_ready, node_id_of=NODE_IDS.get)
    ref = {"kind": "Pod", "namespace": "default"}
    assert obj == {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "web", "namespace": "default",
                     "creationTimestamp": "2026-12-06T10:00:00Z"},
        "subsets": [
            {
                "addresses": [{"nodeName": "n1", "targetRef": {**ref, "name": "a"}}],
                "notReadyAddresses": [{"nodeName": "n2", "targetRef": {**ref, "name": "b"}}],
                "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}],
            },
            {
                "addresses": [{"nodeName": "n2", "targetRef": {**ref, "name": "c"}}],
                "ports": [{"name": "web", "port": 9000, "protocol": "TCP"}],
            },
        ],
    }  # fmt: skip
    empty = endpoints_object(web_service(selector={}), pods, node_ready=node_ready,
                             node_id_of=NODE_IDS.get)  # fmt: skip
    assert empty["subsets"] == []
