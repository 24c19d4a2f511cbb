"""Objects in the shape Kubernetes' clients require: every field Kubernetes' schema marks
required is present.

Client libraries check this as they read: the official Python client refuses a Node whose
``status.nodeInfo`` lacks ``kubeletVersion``, an Event without ``involvedObject``, a container
status without ``imageID``. p2pkube's objects carry what p2pkube knows (a wasm node has no
kernel, a module no image ID), so the Kubernetes face fills each missing required field, found
by walking Kubernetes' published schema (``model.k8sschema``) along the object, with its type's
zero value: ``""``, ``0``, ``false``, ``[]``, ``{}``. Nothing is stored; only the answers are
shaped. A Node's ``nodeInfo`` gets meaningful values first (the agent's version as the
kubelet's, ``wasm`` as the runtime), since kubectl shows them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from p2pkube.model.k8sschema import definition, kind_schema, resolve

__all__ = ["node_info", "shaped"]

_ZERO: dict[str, Any] = {"string": "", "integer": 0, "number": 0, "boolean": False}


def _zero(schema: dict[str, Any]) -> Any:
    schema = resolve(schema)
    kinds = schema.get("type", "object")
    kind = next((k for k in kinds if k != "null"), "object") if isinstance(kinds, list) else kinds
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return _ZERO.get(kind, "")


@cache
def _needs_filling(name: str) -> bool:
    """Whether a definition, or anything below it, has required fields (memoised: most
    subtrees have none and are skipped)."""
    return _schema_needs(definition(name) or {}, frozenset({name}))


def _schema_needs(schema: dict[str, Any], seen: frozenset[str]) -> bool:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return name not in seen and _schema_needs(definition(name) or {}, seen | {name})
    if schema.get("required"):
        return True
    children = [*(schema.get("properties") or {}).values()]
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            children.append(schema[key])
    return any(_schema_needs(child, seen) for child in children)


def _fill(value: Any, schema: dict[str, Any]) -> Any:
    ref = schema.get("$ref")
    if isinstance(ref, str) and not _needs_filling(ref.rsplit("/", 1)[-1]):
        return value
    schema = resolve(schema)
    if isinstance(value, list):
        items = schema.get("items")
        return [_fill(v, items) for v in value] if isinstance(items, dict) else value
    if not isinstance(value, dict):
        return value
    properties = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    filled = dict(value)
    for key, child in value.items():
        child_schema = properties.get(key, extra if isinstance(extra, dict) else None)
        if isinstance(child_schema, dict):
            filled[key] = _fill(child, child_schema)
    for key in schema.get("required") or ():
        if filled.get(key) is None and key in properties:
            filled[key] = _fill(_zero(properties[key]), properties[key])
    return filled


def node_info(info: dict[str, Any]) -> dict[str, Any]:
    """A Node's ``status.nodeInfo`` as Kubernetes names it, from what the agent reports
    (``agentVersion``, ``kind``, ``nodeID``; kept too, as extra fields)."""
    version = str(info.get("agentVersion") or "unknown")
    return {
        "architecture": "wasm32",
        "bootID": str(info.get("nodeID") or ""),
        "containerRuntimeVersion": f"wasm://{info.get('kind') or 'native'}",
        "kernelVersion": "",
        "kubeProxyVersion": "",
        "kubeletVersion": f"p2pkube-{version}",
        "machineID": str(info.get("nodeID") or ""),
        "operatingSystem": "wasi",
        "osImage": f"p2pkube {info.get('kind') or 'native'} node",
        "systemUUID": str(info.get("nodeID") or ""),
        **info,
    }


def shaped(api_version: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with every field Kubernetes requires of ``kind`` (see the module docstring)."""
    if kind == "Node":
        status = obj.get("status") or {}
        obj = {**obj, "status": {**status, "nodeInfo": node_info(status.get("nodeInfo") or {})}}
    elif kind == "Pod" and not (obj.get("status") or {}).get("phase"):
        # An API server creates every pod Pending; p2pkube's first status comes from the
        # scheduler or the kubelet a moment later.
        obj = {**obj, "status": {**(obj.get("status") or {}), "phase": "Pending"}}
    schema = kind_schema(api_version, kind)
    return obj if schema is None else _fill(obj, schema)
