"""CPU and memory of pods, from their (validated) specs: what they request and may use.

One place for the arithmetic, shared by the kubelet's admission and limits and the scheduler's
fit filter, so both agree on what a pod costs. Values follow Kubernetes: a container that sets
a limit but no request requests its limit; CPU is counted in whole millicores, rounded up, as
kube-scheduler counts it (``Quantity.MilliValue``), and memory in bytes. Integers, not exact
fractions: the kubelet sums its pods' requests at every admission and the scheduler at every
placement, and ``Fraction`` arithmetic made that a third of a node's CPU during a 1,000-pod Job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from math import ceil
from typing import Any

from p2pkube.model.quantity import parse_quantity


@dataclass(frozen=True, slots=True)
class Resources:
    milli_cpu: int = 0
    """Thousandths of a core."""
    memory: int = 0
    """Bytes."""

    @classmethod
    def of(cls, cpu: Fraction, memory: Fraction | int) -> Resources:
        """From parsed quantities: cores (rounded up to a millicore) and bytes."""
        return cls(ceil(cpu * 1000), ceil(memory))

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.milli_cpu + other.milli_cpu, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.milli_cpu - other.milli_cpu, self.memory - other.memory)

    def fits_in(self, available: Resources) -> bool:
        return self.milli_cpu <= available.milli_cpu and self.memory <= available.memory


def _get(container: dict[str, Any], section: str, name: str) -> Fraction | None:
    value = container.get("resources", {}).get(section, {}).get(name)
    return None if value is None else parse_quantity(value)


def container_requests(container: dict[str, Any]) -> Resources:
    cpu = _get(container, "requests", "cpu")
    memory = _get(container, "requests", "memory")
    cpu = cpu if cpu is not None else _get(container, "limits", "cpu")
    memory = memory if memory is not None else _get(container, "limits", "memory")
    return Resources.of(cpu or Fraction(0), memory or 0)


def pod_requests(spec: Mapping[str, Any]) -> Resources:
    """What a pod asks of a node: the sum over its containers."""
    total = Resources()
    for container in spec.get("containers", []):
        total = total + container_requests(container)
    return total


def memory_limit(container: dict[str, Any], default: int) -> int:
    """The container's memory cap in bytes (``default`` when it sets none)."""
    limit = _get(container, "limits", "memory")
    return int(limit) if limit is not None else default


def cpu_limit(container: dict[str, Any]) -> float | None:
    """The container's CPU cap in cores, None when unlimited."""
    limit = _get(container, "limits", "cpu")
    return float(limit) if limit is not None else None
