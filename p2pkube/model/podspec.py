"""Where pod templates nest in an object's spec, for every kind that holds containers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def containers(obj: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(field path, container) of every container of an object, wherever its spec nests pod
    templates (``spec.containers[0]``, ``spec.template.spec.containers[1]``, ...)."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "containers" and isinstance(item, list):
                    found.extend(
                        (f"{path}.containers[{i}]", c)
                        for i, c in enumerate(item)
                        if isinstance(c, dict)
                    )
                else:
                    walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")

    walk(obj.get("spec"), "spec")
    return found
