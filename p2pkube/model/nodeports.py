"""NodePorts: allocated when a NodePort Service is written, refused when another Service holds
them, and one owner per port when concurrent writes both won.

What the object service calls on every write of a Service (:func:`assign_node_ports`):

- a port without ``nodePort`` gets a random free one of ``services.node_port_range``, as
  Kubernetes allocates (random, so that two nodes allocating at once rarely pick the same);
- a re-apply of the same Service keeps the NodePorts it already had: each port is matched to
  the stored one of the same name, else of the same port number;
- a ``nodePort`` outside the range, or held by another Service, is refused with the field
  path (``spec.ports[0].nodePort: 30080 is already allocated to Service default/other``).

On one node the check and the write run with no ``await`` between them (the object service
validates, allocates and puts the object into the document synchronously, then waits for the
disk), so two applies through the same agent never share a port.

The check reads this node's replica of the state, which is a CRDT: two nodes that accept
writes at the same instant can both allocate the same NodePort to two Services before either
sees the other's write. Both writes then stand (nothing is lost, and ``get svc`` shows both),
and every node resolves the conflict the same way with :func:`node_port_owners`: the port
belongs to the Service with the older ``metadata.creationTimestamp``, then to the smaller
``namespace/name``. The NodePort listeners serve only the owner's port; the other Service's
port stays unserved until it is applied again (which then allocates it a free port, or
refuses the one it names).

Pure Python over plain dicts (no pydantic): the browser node imports the owners rule too.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from p2pkube.model.errors import ValidationFailed

DEFAULT_NODE_PORTS = range(30000, 32768)
"""Mirrors the default of ``services.node_port_range`` (the model imports no agent settings;
the agent passes its own range to the object service)."""

Owner = tuple[str, str, str]
"""(namespace, name, port name) of the Service port that owns a NodePort."""


def describe_range(ports: range) -> str:
    """``30000-32767``."""
    return f"{ports.start}-{ports.stop - 1}"


def _is_node_port_service(obj: Any) -> bool:
    return isinstance(obj, dict) and (obj.get("spec") or {}).get("type") == "NodePort"


def _ports(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    ports = (obj.get("spec") or {}).get("ports") or []
    return [p for p in ports if isinstance(p, dict)]


def _seniority(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    # ISO 8601 UTC timestamps of one format compare as strings; a missing one sorts last.
    created = meta.get("creationTimestamp")
    return (
        created if isinstance(created, str) else "\uffff",
        str(meta.get("namespace") or "default"),
        str(meta.get("name") or ""),
    )


def node_port_owners(services: Iterable[Any]) -> dict[int, Owner]:
    """NodePort -> (namespace, name, port name) of the Service port that owns it.

    Only NodePort Services count. When two Services hold one port (written at the same
    instant on two nodes, see the module docstring), the one with the older
    creationTimestamp owns it, then the smaller namespace, then the smaller name: every node
    decides alike from the same replicated objects. Within one Service the first port naming
    a NodePort owns it.
    """
    owners: dict[int, Owner] = {}
    ranked = sorted((s for s in services if _is_node_port_service(s)), key=_seniority)
    for service in ranked:
        meta = service.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
        for port in _ports(service):
            if (number := _int(port.get("nodePort"))) is not None:
                owners.setdefault(number, (namespace, name, str(port.get("name") or "")))
    return owners


def _kept(port: Mapping[str, Any], previous: list[dict[str, Any]]) -> int | None:
    """The NodePort the stored Service gave this port: same name, else same port number."""
    name = port.get("name")
    for old in previous:
        if name and old.get("name") == name:
            return _int(old.get("nodePort"))
    for old in previous:
        if old.get("port") == port.get("port"):
            return _int(old.get("nodePort"))
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def assign_node_ports(
    service: dict[str, Any],
    previous: Any,
    others: Iterable[Any],
    *,
    node_ports: range = DEFAULT_NODE_PORTS,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """``service`` (validated, a NodePort Service or not) with every port's NodePort set.

    ``previous`` is the stored object of that name (or None), ``others`` every other Service
    in the cluster. Raises ValidationFailed naming each refused port. A non-NodePort Service
    is returned as it is.
    """
    if not _is_node_port_service(service):
        return service
    rng = rng or random.SystemRandom()
    taken: dict[int, str] = {}
    for other in others:
        if not _is_node_port_service(other):
            continue
        meta = other.get("metadata") or {}
        holder = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
        for port in _ports(other):
            if (number := _int(port.get("nodePort"))) is not None:
                taken.setdefault(number, holder)
    old = _ports(previous) if _is_node_port_service(previous) else []
    ports = [dict(p) for p in _ports(service)]
    problems = _check_given(ports, taken, node_ports)
    used = {p["nodePort"] for p in ports if "nodePort" in p}
    for port in ports:
        if "nodePort" in port:
            continue
        kept = _kept(port, old)
        if kept is not None and kept in node_ports and kept not in taken and kept not in used:
            port["nodePort"] = kept
            used.add(kept)
    free = [n for n in node_ports if n not in taken and n not in used]
    for i, port in enumerate(ports):
        if "nodePort" in port:
            continue
        if not free:
            problems.append(
                f"spec.ports[{i}].nodePort: no free NodePort left in {describe_range(node_ports)}"
            )
            continue
        port["nodePort"] = free.pop(rng.randrange(len(free)))
    if problems:
        raise ValidationFailed(problems)
    return {**service, "spec": {**service["spec"], "ports": ports}}


def _check_given(
    ports: list[dict[str, Any]], taken: Mapping[int, str], node_ports: range
) -> list[str]:
    """Problems of the NodePorts the manifest names: outside the range, held elsewhere, or
    named twice in this Service."""
    problems = []
    seen: set[int] = set()
    for i, port in enumerate(ports):
        number = _int(port.get("nodePort"))
        if number is None:
            continue
        path = f"spec.ports[{i}].nodePort"
        if number not in node_ports:
            problems.append(
                f"{path}: {number} is outside {describe_range(node_ports)} "
                "(services.node_port_range)"
            )
        elif number in taken:
            problems.append(f"{path}: {number} is already allocated to Service {taken[number]}")
        elif number in seen:
            problems.append(f"{path}: Duplicate value: {number}")
        seen.add(number)
    return problems
