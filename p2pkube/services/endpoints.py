"""A Service's endpoints, computed by every node from the replicated pods (never stored).

An endpoint is a pod the Service selects, on the node that runs it, with the containerPort the
Service port's ``targetPort`` resolves to on that pod. The inputs are plain dicts as the object
service shows them (a pod merged with its status, whose ``podUID`` matched), so the same
functions serve the router (which may cache per Service, see :func:`selected_pods`), the local
API (the read-only ``Endpoints`` kind, :func:`endpoints_object`) and ``port-forward pod/NAME``
(:func:`pod_endpoint`).

Kubernetes' rules, with p2pkube's differences:

- pods in the Service's namespace whose labels hold every ``spec.selector`` pair; an empty
  selector selects none (Kubernetes then leaves Endpoints to be written by hand, which
  p2pkube does not take);
- a pod not yet on a node, being deleted (``deletionTimestamp``) or ended (Succeeded,
  Failed) is no endpoint;
- a numeric ``targetPort`` must be one of the pod's containerPorts, a named one is looked up
  in its containers' ports: a pod without it has no handler for it and is skipped for that
  port (a wasm module cannot listen, so only declared ports answer);
- an endpoint is ready when the pod's Ready condition is True *and* its node is Ready as this
  node sees it (``node_ready``): a router drops a lost node's endpoints at once.

Pods have no IP addresses (a request reaches a pod through its node over the mesh), so the
``Endpoints`` object's addresses carry ``nodeName`` and ``targetRef`` but no ``ip``.

Pure standard library: the browser node imports it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from p2pkube.services.types import Endpoint

__all__ = [
    "ENDPOINTS_KIND",
    "ObjectReader",
    "computed_endpoints",
    "container_ports",
    "endpoints_object",
    "pod_endpoint",
    "pod_port",
    "selected_pods",
    "selects",
    "service_endpoints",
    "service_port",
    "target_port",
]

ENDPOINTS_KIND = "Endpoints"
TERMINAL_PHASES = ("Succeeded", "Failed")

NodeReady = Callable[[str], bool]
NodeIdOf = Callable[[str], "str | None"]


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- which pods ---------------------------------------------------------------------------------


def selects(service: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """Whether ``service`` selects ``pod``: same namespace, every selector pair among its
    labels, a non-empty selector."""
    selector = _spec(service).get("selector")
    if not isinstance(selector, dict) or not selector:
        return False
    if (_meta(pod).get("namespace") or "default") != (_meta(service).get("namespace") or "default"):
        return False
    labels = _meta(pod).get("labels")
    labels = labels if isinstance(labels, dict) else {}
    return all(labels.get(key) == value for key, value in selector.items())


def _serving(pod: Mapping[str, Any]) -> bool:
    """On a node, not being deleted, not ended: a pod that may answer requests."""
    status = pod.get("status")
    phase = status.get("phase") if isinstance(status, dict) else None
    return (
        bool(_spec(pod).get("nodeName"))
        and not _meta(pod).get("deletionTimestamp")
        and phase not in TERMINAL_PHASES
    )


def selected_pods(
    service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The pods that may be the Service's endpoints, by name: what a router caches per Service
    (recomputed when a Pod or the Service changes; readiness is checked per request)."""
    found = [p for p in pods if selects(service, p) and _serving(p)]
    return sorted(found, key=lambda p: str(_meta(p).get("name")))


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status")
    conditions = status.get("conditions") if isinstance(status, dict) else None
    return any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions or []
    )


# --- which port ---------------------------------------------------------------------------------


def container_ports(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every well-formed ``containers[].ports`` entry of a pod, in order."""
    found: list[Mapping[str, Any]] = []
    for container in _spec(pod).get("containers") or []:
        if isinstance(container, dict):
            for port in container.get("ports") or []:
                if isinstance(port, dict) and _int(port.get("containerPort")) is not None:
                    found.append(port)
    return found


def pod_port(pod: Mapping[str, Any], port: int | str = "") -> int | None:
    """The containerPort ``port`` names on ``pod``: a number it declares, a port name, or
    ("") its first port; None when the pod has no such port (``port-forward pod/NAME``)."""
    declared = container_ports(pod)
    if port == "" or port is None:
        return declared[0]["containerPort"] if declared else None
    wanted = int(port) if isinstance(port, str) and port.isdigit() else port
    for entry in declared:
        if entry["containerPort"] == wanted or (
            isinstance(wanted, str) and entry.get("name") == wanted
        ):
            return int(entry["containerPort"])
    return None


def target_port(pod: Mapping[str, Any], service_port: Mapping[str, Any]) -> int | None:
    """The containerPort a Service port's ``targetPort`` (default: its ``port``) resolves to
    on ``pod``, None if the pod declares no such port."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, str) and target.isdigit():
        target = int(target)  # a manifest may quote the number
    if isinstance(target, int) and not isinstance(target, bool):
        return target if any(p["containerPort"] == target for p in container_ports(pod)) else None
    if isinstance(target, str) and target:
        for entry in container_ports(pod):
            if entry.get("name") == target:
                return int(entry["containerPort"])
    return None


def service_port(service: Mapping[str, Any], port: int | str = "") -> Mapping[str, Any] | None:
    """The Service port a request names: by name, by number, or ("") the first one."""
    ports = [p for p in _spec(service).get("ports") or [] if isinstance(p, dict)]
    if port == "" or port is None:
        return ports[0] if ports else None
    for entry in ports:
        if entry.get("name") == port or str(entry.get("port")) == str(port):
            return entry
    return None


# --- endpoints ----------------------------------------------------------------------------------


def _endpoint(
    pod: Mapping[str, Any], port: int, node_ready: NodeReady, node_id_of: NodeIdOf
) -> Endpoint:
    node = str(_spec(pod).get("nodeName"))
    return Endpoint(
        namespace=str(_meta(pod).get("namespace") or "default"),
        pod=str(_meta(pod).get("name")),
        node=node,
        node_id=node_id_of(node) or "",
        port=port,
        ready=_pod_ready(pod) and node_ready(node),
    )


def service_endpoints(
    service: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    *,
    node_ready: NodeReady,
    node_id_of: NodeIdOf,
    port: int | str = "",
) -> list[Endpoint]:
    """The endpoints of one port of ``service`` (``port``: its name or number, "" the first),
    ready or not (a router picks among ``ready`` ones), by pod name.

    ``pods`` may be every pod or :func:`selected_pods` already (it is filtered again, which is
    cheap). Empty when the Service has no such port.
    """
    chosen = service_port(service, port)
    if chosen is None:
        return []
    found = []
    for pod in selected_pods(service, pods):
        number = target_port(pod, chosen)
        if number is not None:
            found.append(_endpoint(pod, number, node_ready, node_id_of))
    return found


def pod_endpoint(
    pod: Mapping[str, Any],
    *,
    node_ready: NodeReady,
    node_id_of: NodeIdOf,
    port: int | str = "",
) -> Endpoint | None:
    """One pod as an endpoint (``port-forward pod/NAME [PORT]``): None if it is not on a
    node, is being deleted or has ended, or has no such port; ``ready`` as for a Service."""
    number = pod_port(pod, port)
    if number is None or not _serving(pod):
        return None
    return _endpoint(pod, number, node_ready, node_id_of)


def endpoints_object(
    service: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    *,
    node_ready: NodeReady,
    node_id_of: NodeIdOf,
) -> dict[str, Any]:
    """Kubernetes' ``Endpoints`` object of ``service`` (what ``get endpoints`` shows).

    Pods whose Service ports resolve alike share a subset, as in Kubernetes. The addresses
    have no ``ip`` (pods have none: requests reach them through their node), but the
    ``nodeName`` and a ``targetRef`` to the pod. Its metadata is the Service's name,
    namespace, labels and creationTimestamp.
    """
    meta = _meta(service)
    ports = [p for p in _spec(service).get("ports") or [] if isinstance(p, dict)]
    groups: dict[tuple[tuple[str, int], ...], dict[str, list[dict[str, Any]]]] = {}
    for pod in selected_pods(service, pods):
        resolved = tuple(
            (str(p.get("name") or ""), number)
            for p in ports
            if (number := target_port(pod, p)) is not None
        )
        if not resolved:
            continue
        endpoint = _endpoint(pod, resolved[0][1], node_ready, node_id_of)
        address = {
            "nodeName": endpoint.node,
            "targetRef": {"kind": "Pod", "name": endpoint.pod, "namespace": endpoint.namespace},
        }
        group = groups.setdefault(resolved, {"addresses": [], "notReadyAddresses": []})
        group["addresses" if endpoint.ready else "notReadyAddresses"].append(address)
    subsets = []
    for resolved, group in groups.items():
        subset: dict[str, Any] = {k: v for k, v in group.items() if v}
        subset["ports"] = [
            {**({"name": name} if name else {}), "port": number, "protocol": "TCP"}
            for name, number in resolved
        ]
        subsets.append(subset)
    return {
        "apiVersion": "v1",
        "kind": ENDPOINTS_KIND,
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace") or "default",
            **({"labels": meta["labels"]} if meta.get("labels") else {}),
            **(
                {"creationTimestamp": meta["creationTimestamp"]}
                if meta.get("creationTimestamp")
                else {}
            ),
        },
        "subsets": subsets,
    }


class ObjectReader(Protocol):
    """What :func:`computed_endpoints` reads objects through (the node's ObjectService)."""

    def list(self, kind: str, namespace: str | None) -> list[dict[str, Any]]: ...


def computed_endpoints(
    objects: ObjectReader,
    namespace: str | None,
    name: str | None = None,
    *,
    node_ready: NodeReady,
    node_id_of: NodeIdOf,
) -> list[dict[str, Any]]:
    """The ``Endpoints`` objects of the Services in ``namespace`` (None: all), or of the one
    named ``name``: the local API's read-only ``Endpoints`` kind. Pods are listed once."""
    services = objects.list("Service", namespace)
    if name is not None:
        services = [s for s in services if _meta(s).get("name") == name]
    if not services:
        return []
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for pod in objects.list("Pod", namespace):
        by_namespace.setdefault(str(_meta(pod).get("namespace") or "default"), []).append(pod)
    return [
        endpoints_object(
            service,
            by_namespace.get(str(_meta(service).get("namespace") or "default"), []),
            node_ready=node_ready,
            node_id_of=node_id_of,
        )
        for service in services
    ]
