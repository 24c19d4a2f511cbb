"""Where a pod's configuration comes from: the ConfigMaps and Secrets of its namespace.

Env (:mod:`p2pkube.runtime.podenv`) and volumes (:mod:`p2pkube.runtime.configvolumes`) read a
source's keys here, as bytes: a ConfigMap's text values encoded, a Secret's base64 values
decoded. Messages are Kubernetes' (``secret "db" not found``). A Secret this node cannot
open (no sealer, or another cluster's key: :mod:`p2pkube.model.secrets`) is an error of its
own, never taken for a missing or empty one. No message ever quotes a value.

Shared Python: the browser node's kubelet runs it too.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Final

from p2pkube.model.secrets import SECRET_KIND, readable

CONFIG_MAP_KIND: Final = "ConfigMap"

ObjectLookup = Callable[[str, str, str], dict[str, Any] | None]
"""``(kind, namespace, name)`` -> the object as the node's object service shows it (a Secret
opened), or None when there is none."""


class SourceMissing(Exception):
    """A ConfigMap, Secret or key a pod needs is missing (or cannot be read here); the message
    is what Kubernetes would say."""


def what(kind: str, name: str) -> str:
    """``configmap "x"`` / ``secret "x"``, as Kubernetes names a source in its messages."""
    return f'{kind.lower()} "{name}"'


def source_data(
    lookup: ObjectLookup, kind: str, namespace: str, name: str, *, optional: bool
) -> dict[str, bytes] | None:
    """The keys of a ConfigMap or Secret; None when it is missing and ``optional``;
    SourceMissing when it is missing otherwise, or is a Secret this node cannot open."""
    found = lookup(kind, namespace, name)
    if found is None:
        if optional:
            return None
        raise SourceMissing(f"{what(kind, name)} not found")
    if kind == SECRET_KIND and not readable(found):
        raise SourceMissing(
            f"{what(kind, name)} cannot be read on this node (its values are sealed under a "
            "key this node does not have; see the agent's log)"
        )
    data = found.get("data")
    if not isinstance(data, dict):
        return {}
    if kind != SECRET_KIND:
        return {str(k): str(v).encode() for k, v in data.items()}
    decoded = {}
    for key, value in data.items():
        try:
            decoded[str(key)] = base64.b64decode(str(value), validate=True)
        except binascii.Error:
            raise SourceMissing(f"{what(kind, name)}: key {key} is not base64") from None
    return decoded
