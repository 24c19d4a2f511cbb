"""CPU and memory of pods, from their (validated) specs: what they request and may use.

One place for the arithmetic, shared by the kubelet's admission and limits and the scheduler's
fit filter, so both agree on what a pod costs. Values follow Kubernetes: a container that sets
a limit but no request requests its limit; quantities are exact fractions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from p2pkube.model.quantity import parse_quantity


@dataclass(frozen=True)
class Resources:
    cpu: Fraction = Fraction(0)
    """Cores."""
    memory: int = 0
    """Bytes."""

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory)

    def fits_in(self, available: Resources) -> bool:
        return self.cpu <= available.cpu and self.memory <= available.memory


def _get(container: dict[str, Any], section: str, name: str) -> Fraction | None:
    value = container.get("resources", {}).get(section, {}).get(name)
    return None if value is None else parse_quantity(value)


def container_requests(container: dict[str, Any]) -> Resources:
    cpu = _get(container, "requests", "cpu")
    memory = _get(container, "requests", "memory")
    cpu = cpu if cpu is not None else _get(container, "limits", "cpu")
    memory = memory if memory is not None else _get(container, "limits", "memory")
    return Resources(cpu or Fraction(0), int(memory or 0))


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
