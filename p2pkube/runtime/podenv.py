"""A container's environment: ``env`` (``value``, ``valueFrom``) and ``envFrom``, resolved as
Kubernetes' kubelet does, from the pod object and the replicated ConfigMaps and Secrets.

Order: every ``envFrom`` source in turn (its ConfigMap's or Secret's keys, each with the source's
``prefix``; a key that is not a valid variable name is skipped and named), then ``env``, whose
entries override what ``envFrom`` gave. A ``valueFrom``:

* ``configMapKeyRef``, ``secretKeyRef``: the key's value; a missing source or key stops the
  container from starting (:class:`~p2pkube.runtime.configsources.SourceMissing`, which the
  pod shows as
  ``CreateContainerConfigError``) unless ``optional``, in which case the variable is left out;
* ``fieldRef``: the Downward API fields p2pkube fills in: ``metadata.name``,
  ``metadata.namespace``, ``metadata.labels['KEY']``, ``metadata.annotations['KEY']``
  (empty when absent, as in Kubernetes) and ``spec.nodeName``.

Shared Python: the browser node's kubelet runs it too.
"""

from __future__ import annotations

import re
from typing import Any, Final

from p2pkube.model.names import env_name_error
from p2pkube.runtime.configsources import (
    CONFIG_MAP_KIND,
    SECRET_KIND,
    ObjectLookup,
    SourceMissing,
    source_data,
)

_MAP_FIELD: Final = re.compile(r"metadata\.(labels|annotations)\['([^'\]]+)'\]")
_FROM_KINDS: Final = {"configMapRef": CONFIG_MAP_KIND, "secretRef": SECRET_KIND}
_KEY_REF_KINDS: Final = {"configMapKeyRef": CONFIG_MAP_KIND, "secretKeyRef": SECRET_KIND}


def container_env(
    pod: dict[str, Any], container: dict[str, Any], node_name: str, lookup: ObjectLookup
) -> tuple[list[tuple[str, str]], list[str]]:
    """(the environment, in order, and the ``envFrom`` keys skipped as invalid names)."""
    metadata = pod.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    values: dict[str, str] = {}
    skipped: list[str] = []
    for source in container.get("envFrom") or []:
        field, ref = next((f, source[f]) for f in _FROM_KINDS if source.get(f) is not None)
        optional = bool(ref.get("optional"))
        data = source_data(lookup, _FROM_KINDS[field], namespace, ref["name"], optional=optional)
        prefix = str(source.get("prefix") or "")
        for key, value in (data or {}).items():
            name = prefix + key
            if env_name_error(name) is None:
                values[name] = value.decode(errors="replace")
            else:
                skipped.append(name)
    for entry in container.get("env") or []:
        source = entry.get("valueFrom")
        if source is None:
            values[entry["name"]] = str(entry.get("value") or "")
            continue
        resolved = _value_from(source, pod, node_name, namespace, lookup)
        if resolved is not None:
            values[entry["name"]] = resolved
    return list(values.items()), skipped


def _value_from(
    source: dict[str, Any],
    pod: dict[str, Any],
    node_name: str,
    namespace: str,
    lookup: ObjectLookup,
) -> str | None:
    for field, kind in _KEY_REF_KINDS.items():
        ref = source.get(field)
        if ref is None:
            continue
        optional = bool(ref.get("optional"))
        data = source_data(lookup, kind, namespace, ref["name"], optional=optional)
        if data is None:
            return None
        if ref["key"] not in data:
            if optional:
                return None
            raise SourceMissing(
                f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
            )
        return data[ref["key"]].decode(errors="replace")
    path = source["fieldRef"]["fieldPath"]
    metadata = pod.get("metadata") or {}
    if path == "metadata.name":
        return str(metadata.get("name") or "")
    if path == "metadata.namespace":
        return namespace
    if path == "spec.nodeName":
        return str((pod.get("spec") or {}).get("nodeName") or node_name)
    match = _MAP_FIELD.fullmatch(path)
    if match is None:  # validation admits no other path
        raise SourceMissing(f"unsupported fieldRef {path}")
    return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
