"""``describe`` of the kinds that are neither pods nor workloads: Nodes (with the pods they
run and what those pods ask for) and ConfigMaps."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from p2pkube.cli.describe_sections import (
    Lookup,
    conditions_of,
    events,
    format_time,
    header,
    table,
)
from p2pkube.cli.output import field, format_age
from p2pkube.cli.tabwriter import Writer
from p2pkube.model.quantity import format_bytes, format_cpu, parse_quantity
from p2pkube.model.resources import container_requests
from p2pkube.model.taints import node_taints, taint_text

_NODE_INFO = {
    "kind": "Kind",
    "agentVersion": "Agent Version",
    "nodeID": "Node ID",
    "pythonVersion": "Python Version",
}


def _quantity(value: Any) -> Fraction:
    try:
        return parse_quantity(value)
    except (TypeError, ValueError):
        return Fraction(0)


def _share(used: Fraction, total: Fraction) -> str:
    return f"{int(used * 100 / total) if total else 0}%"


def _limits(container: dict[str, Any]) -> tuple[Fraction, Fraction]:
    limits = (container.get("resources") or {}).get("limits") or {}
    return _quantity(limits.get("cpu", 0)), _quantity(limits.get("memory", 0))


def describe_node(node: dict[str, Any], lookup: Lookup) -> str:
    """kubectl's NodeDescriber, with the node's peers and the modules it holds."""
    w = Writer()
    meta, status = node.get("metadata") or {}, node.get("status") or {}
    name = meta.get("name")
    header(w, node, namespaced=False)
    w.line(0, "CreationTimestamp:", format_time(meta.get("creationTimestamp")))
    taints = [taint_text(t) for t in node_taints(node)]
    for i, text in enumerate(taints or ["<none>"]):
        w.line(0, "Taints:" if i == 0 else "", text)
    w.line(0, "Unschedulable:", str(bool((node.get("spec") or {}).get("unschedulable"))).lower())
    if "peers" in status:
        w.line(0, "Peers:", status["peers"])
    _node_conditions(w, conditions_of(node))
    capacity = status.get("capacity") or {}
    allocatable = status.get("allocatable") or capacity
    for title, values in (("Capacity", capacity), ("Allocatable", allocatable)):
        w.line(0, f"{title}:")
        for key, value in sorted(values.items()):
            w.line(1, f"{key}:", value)
    info = status.get("nodeInfo") or {}
    if info:
        w.line(0, "System Info:")
        for key, value in info.items():
            w.line(0, f"  {_NODE_INFO.get(key, key)}:", value)
    images = status.get("images") or []
    if isinstance(images, list):
        w.line(0, "Modules:", f"{len(images)} held completely (other nodes fetch them from here)")
    _allocated(w, _running_on(lookup, name), allocatable)
    events(w, lookup.events(node))
    return w.text()


def _running_on(lookup: Lookup, name: Any) -> list[dict[str, Any]]:
    """The node's pods that have not ended, by namespace and name."""
    pods = [
        p
        for p in lookup.objects("Pod", None)
        if field(p, "spec.nodeName") == name
        and field(p, "status.phase") not in ("Succeeded", "Failed")
    ]
    pods.sort(key=lambda p: (field(p, "metadata.namespace", ""), field(p, "metadata.name", "")))
    return pods


def _allocated(w: Writer, pods: list[dict[str, Any]], allocatable: dict[str, Any]) -> None:
    """kubectl's Non-terminated Pods table and Allocated resources: what each pod and all of
    them request and may use, and their share of what the node can allocate."""
    cpu = _Amount(_quantity(allocatable.get("cpu", 0)), _cpu)
    memory = _Amount(_quantity(allocatable.get("memory", 0)), _memory)
    w.line(0, "Non-terminated Pods:", f"({len(pods)} in total)")
    sums = [Fraction(0)] * 4
    rows = []
    for pod in pods:
        amounts = _pod_amounts(pod)
        sums = [total + value for total, value in zip(sums, amounts, strict=True)]
        rows.append(
            [
                field(pod, "metadata.namespace"),
                field(pod, "metadata.name"),
                "",
                cpu.text(amounts[0]),
                cpu.text(amounts[1]),
                memory.text(amounts[2]),
                memory.text(amounts[3]),
                format_age(field(pod, "metadata.creationTimestamp")),
            ]
        )
    table(w, _POD_HEADERS, rows)
    w.line(0, "Allocated resources:")
    w.line(1, "(Total limits may be over 100 percent, i.e., overcommitted.)")
    table(
        w,
        ("Resource", "Requests", "Limits"),
        [
            ("cpu", cpu.text(sums[0]), cpu.text(sums[1])),
            ("memory", memory.text(sums[2]), memory.text(sums[3])),
        ],
    )


_POD_HEADERS = ("Namespace", "Name", "", "CPU Requests", "CPU Limits", "Memory Requests",
                "Memory Limits", "Age")  # fmt: skip


def _node_conditions(w: Writer, found: list[dict[str, Any]]) -> None:
    if not found:
        return
    w.line(0, "Conditions:")
    headers = ("Type", "Status", "LastHeartbeatTime", "LastTransitionTime", "Reason", "Message")
    rows = [
        (
            c.get("type"),
            c.get("status"),
            format_time(c["lastHeartbeatTime"]) if c.get("lastHeartbeatTime") else "<none>",
            format_time(c.get("lastTransitionTime")),
            c.get("reason", ""),
            c.get("message", ""),
        )
        for c in found
    ]
    table(w, headers, rows)


def _pod_amounts(pod: dict[str, Any]) -> tuple[Fraction, Fraction, Fraction, Fraction]:
    """A pod's CPU requests, CPU limits, memory requests, memory limits."""
    containers = [c for c in field(pod, "spec.containers") or [] if isinstance(c, dict)]
    cpu_req = Fraction(sum(container_requests(c).milli_cpu for c in containers), 1000)
    mem_req = Fraction(sum(container_requests(c).memory for c in containers))
    cpu_lim = sum((_limits(c)[0] for c in containers), Fraction(0))
    mem_lim = sum((_limits(c)[1] for c in containers), Fraction(0))
    return cpu_req, cpu_lim, mem_req, mem_lim


class _Amount:
    """How a node's description writes an amount of one resource: ``250m (12%)``, its share of
    what the node can allocate."""

    def __init__(self, total: Fraction, fmt: Callable[[Fraction], str]) -> None:
        self.total = total
        self.fmt = fmt

    def text(self, value: Fraction) -> str:
        return f"{self.fmt(value)} ({_share(value, self.total)})"


def _cpu(value: Fraction) -> str:
    return format_cpu(value) if value else "0"


def _memory(value: Fraction) -> str:
    return format_bytes(int(value)) if value else "0"


def describe_secret(secret: dict[str, Any], lookup: Lookup) -> str:
    """kubectl's SecretDescriber: the size of each value, never the value."""
    w = Writer()
    header(w, secret)
    w.line(0, "")
    w.line(0, "Type:", str(secret.get("type") or "Opaque"))
    w.line(0, "")
    w.line(0, "Data")
    w.line(0, "====")
    data = secret.get("data")
    if not isinstance(data, dict):
        w.line(0, "<sealed: this node cannot open it>")
    for key, value in sorted((data or {}).items()):
        w.line(0, f"{key}:", f"{len(_decoded(value))} bytes")
    events(w, lookup.events(secret))
    return w.text()


def _decoded(value: Any) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except binascii.Error:
        return str(value).encode()


def describe_configmap(cm: dict[str, Any], lookup: Lookup) -> str:
    """kubectl's ConfigMapDescriber."""
    w = Writer()
    header(w, cm)
    w.line(0, "")
    w.line(0, "Data")
    w.line(0, "====")
    for key, value in sorted((cm.get("data") or {}).items()):
        w.line(0, f"{key}:")
        w.line(0, "----")
        for part in str(value).split("\n"):
            w.line(0, part)
        w.line(0, "")
    w.line(0, "")
    w.line(0, "BinaryData")
    w.line(0, "====")
    w.line(0, "")
    events(w, lookup.events(cm))
    return w.text()
