"""NodeMetrics and PodMetrics (``metrics.k8s.io/v1beta1``), as the CLI and kubectl show them.

One place for how measured usage reads: the cells of ``p2pkube top`` (which are kubectl
top's: CPU in whole millicores rounded up, memory in whole MiB rounded down, percentages of
the Node's allocatable) and the :class:`~p2pkube.cli.output.Resource` s whose columns make the
Tables ``kubectl get nodes.metrics.k8s.io`` prints (metrics-server's: name, CPU, memory,
window). The documents themselves are built by the agent (``api/kube/metrics.py``).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from p2pkube.cli.output import Column, Resource, field, human_duration, name_of
from p2pkube.model.quantity import parse_quantity

__all__ = [
    "NODE_METRICS",
    "POD_METRICS",
    "UNKNOWN",
    "cpu_millicores",
    "mebibytes_cell",
    "memory_bytes",
    "millicores_cell",
    "percent_cell",
    "usage_total",
]

UNKNOWN = "<unknown>"
"""What kubectl top shows for a node without figures."""


def _value(quantity: str | Fraction) -> Fraction:
    return quantity if isinstance(quantity, Fraction) else parse_quantity(quantity)


def cpu_millicores(quantity: str | Fraction) -> int:
    """A CPU quantity (or a sum of them) in millicores, rounded up (Kubernetes'
    ``MilliValue``)."""
    return math.ceil(_value(quantity) * 1000)


def memory_bytes(quantity: str | Fraction) -> int:
    """A memory quantity (or a sum of them) in bytes, rounded up (``Value``)."""
    return math.ceil(_value(quantity))


def millicores_cell(quantity: str | Fraction) -> str:
    """``CPU(cores)``: ``15m``."""
    return f"{cpu_millicores(quantity)}m"


def mebibytes_cell(quantity: str | Fraction) -> str:
    """``MEMORY(bytes)``: ``12Mi`` (whole MiB, rounded down, as kubectl)."""
    return f"{memory_bytes(quantity) // 2**20}Mi"


def percent_cell(used: int, allocatable: int) -> str:
    """``CPU(%)`` / ``MEMORY(%)``: the truncated percentage; unknown without allocatable."""
    if allocatable <= 0:
        return UNKNOWN
    return f"{int(used / allocatable * 100)}%"


def _window(obj: dict[str, Any]) -> str:
    window = str(obj.get("window") or "")
    try:
        return human_duration(float(window.removesuffix("s")))
    except ValueError:
        return window


def usage_total(obj: dict[str, Any], resource: str) -> Fraction:
    """A PodMetrics' usage of ``resource`` (``cpu``, ``memory``): the sum over its
    containers; a NodeMetrics': its own."""
    if "containers" in obj:
        used = (parse_quantity(field(c, f"usage.{resource}", "0")) for c in obj["containers"])
        return sum(used, Fraction(0))
    return parse_quantity(field(obj, f"usage.{resource}", "0"))


NODE_METRICS = Resource(
    kind="NodeMetrics",
    names=("nodes",),
    namespaced=False,
    watchable=False,
    undeletable="usage is measured, not stored",
    columns=(
        Column("NAME", name_of),
        Column("CPU", lambda o: millicores_cell(field(o, "usage.cpu", "0"))),
        Column("MEMORY", lambda o: mebibytes_cell(field(o, "usage.memory", "0"))),
        Column("WINDOW", _window),
    ),
)
POD_METRICS = Resource(
    kind="PodMetrics",
    names=("pods",),
    namespaced=True,
    watchable=False,
    undeletable="usage is measured, not stored",
    columns=(
        Column("NAME", name_of),
        Column("CPU", lambda o: millicores_cell(usage_total(o, "cpu"))),
        Column("MEMORY", lambda o: mebibytes_cell(usage_total(o, "memory"))),
        Column("WINDOW", _window),
    ),
)
