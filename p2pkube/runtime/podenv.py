"""A container's environment: ``env`` (``value``, ``valueFrom``) and ``envFrom``, resolved as
Kubernetes' kubelet does, from the pod object and the replicated ConfigMaps.

Order: every ``envFrom`` source in turn (its ConfigMap's keys, each with the source's
``prefix``; a key that is not a valid variable name is skipped and named), then ``env``, whose
entries override what ``envFrom`` gave. A ``valueFrom``:

* ``configMapKeyRef``: the key's value; a missing ConfigMap or key stops the container from
  starting (:class:`ConfigError`, which the pod shows as ``CreateContainerConfigError``)
  unless ``optional``, in which case the variable is left out;
* ``fieldRef``: the Downward API fields p2pkube fills in: ``metadata.name``,
  ``metadata.namespace``, ``metadata.labels['KEY']``, ``metadata.annotations['KEY']``
  (empty when absent, as in Kubernetes) and ``spec.nodeName``.

Shared Python: the browser node's kubelet runs it too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from p2pkube.model.names import env_name_error

_MAP_FIELD: Final = re.compile(r"metadata\.(labels|annotations)\['([^'\]]+)'\]")

ConfigMapLookup = Callable[[str, str], dict[str, Any] | None]
"""``(namespace, name)`` -> the ConfigMap object, or None when there is none."""


class ConfigError(Exception):
    """The container cannot start yet; the message is what Kubernetes would say."""


def container_env(
    pod: dict[str, Any], container: dict[str, Any], node_name: str, config_map: ConfigMapLookup
) -> tuple[list[tuple[str, str]], list[str]]:
    """(the environment, in order, and the ``envFrom`` keys skipped as invalid names)."""
    metadata = pod.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    values: dict[str, str] = {}
    skipped: list[str] = []
    for source in container.get("envFrom") or []:
        ref = source["configMapRef"]
        data = _config_map_data(config_map, namespace, ref["name"], bool(ref.get("optional")))
        prefix = str(source.get("prefix") or "")
        for key, value in (data or {}).items():
            name = prefix + key
            if env_name_error(name) is None:
                values[name] = str(value)
            else:
                skipped.append(name)
    for entry in container.get("env") or []:
        source = entry.get("valueFrom")
        if source is None:
            values[entry["name"]] = str(entry.get("value") or "")
            continue
        value = _value_from(source, pod, node_name, namespace, config_map)
        if value is not None:
            values[entry["name"]] = value
    return list(values.items()), skipped


def _value_from(
    source: dict[str, Any],
    pod: dict[str, Any],
    node_name: str,
    namespace: str,
    config_map: ConfigMapLookup,
) -> str | None:
    ref = source.get("configMapKeyRef")
    if ref is not None:
        optional = bool(ref.get("optional"))
        data = _config_map_data(config_map, namespace, ref["name"], optional)
        if data is None:
            return None
        if ref["key"] not in data:
            if optional:
                return None
            raise ConfigError(
                f"couldn't find key {ref['key']} in ConfigMap {namespace}/{ref['name']}"
            )
        return str(data[ref["key"]])
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
        raise ConfigError(f"unsupported fieldRef {path}")
    return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))


def _config_map_data(
    config_map: ConfigMapLookup, namespace: str, name: str, optional: bool
) -> dict[str, Any] | None:
    found = config_map(namespace, name)
    if found is None:
        if optional:
            return None
        raise ConfigError(f'configmap "{name}" not found')
    data = found.get("data")
    return data if isinstance(data, dict) else {}
