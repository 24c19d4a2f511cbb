"""Which ``apiVersion`` each kind has: Kubernetes' own, with ``p2pkube.io/v1`` as an alias.

Manifests written for Kubernetes name ``apps/v1`` Deployments and ``batch/v1`` Jobs; p2pkube
stores and shows every kind Kubernetes defines under Kubernetes' apiVersion, so ``get -o yaml``
prints what ``kubectl apply`` would take. Early p2pkube manifests said ``p2pkube.io/v1`` for
every kind; that is still accepted on input (and objects stored by those versions are shown
with the standard apiVersion: :func:`standardised`). Kinds of p2pkube's own (``Blob``) keep
``p2pkube.io/v1``.

No platform library here: the browser node shows objects too.
"""

from __future__ import annotations

from typing import Any

P2PKUBE_API_VERSION = "p2pkube.io/v1"
"""p2pkube's own group: its own kinds, and an accepted alias for every standard one."""

STANDARD_API_VERSIONS: dict[str, str] = {
    "Pod": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Namespace": "v1",
    "Node": "v1",
    "Event": "v1",
    "Endpoints": "v1",
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
}
"""Kubernetes' apiVersion of every kind p2pkube shares with it."""


CLUSTER_SCOPED_KINDS = frozenset({"Node", "Blob", "Namespace"})
"""Kinds without a namespace (stored under ``Kind//name``); every other kind has one, by
default ``default``."""


def api_version_of(kind: str) -> str:
    """The apiVersion objects of ``kind`` are stored and shown with."""
    return STANDARD_API_VERSIONS.get(kind, P2PKUBE_API_VERSION)


def accepted_api_versions(kind: str) -> tuple[str, ...]:
    """What a manifest of ``kind`` may say: the standard apiVersion first, then the alias."""
    standard = api_version_of(kind)
    return (standard,) if standard == P2PKUBE_API_VERSION else (standard, P2PKUBE_API_VERSION)


def standardised(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with its kind's standard apiVersion (the object itself when it has it)."""
    kind = obj.get("kind")
    if not isinstance(kind, str):
        return obj
    wanted = api_version_of(kind)
    return obj if obj.get("apiVersion") == wanted else {**obj, "apiVersion": wanted}
