"""Kubernetes API paths: ``/api/v1/namespaces/NS/pods/NAME/log`` -> what it names.

One parser for every request of the Kubernetes face, so the routes stay two catch-alls and the
ambiguous cases are decided in one place: ``/api/v1/namespaces/x/status`` is namespace x's
status (there is no resource named ``status``), ``/api/v1/namespaces/x/pods`` the pods in x.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pkube.api.kube.resources import KubeResource, find

__all__ = ["Target", "parse_path"]


@dataclass(frozen=True)
class Target:
    """What one request path names."""

    resource: KubeResource
    namespace: str | None
    """The path's namespace; None for cluster-scoped kinds and for lists across namespaces."""
    name: str | None = None
    subresource: str | None = None
    rest: str = ""
    """What follows a subresource (a proxy's path)."""
    watch: bool = False
    """The deprecated ``/watch/`` form (``?watch=true`` is the current one)."""


def parse_path(path: str) -> Target | None:
    """The target of an API path, or None when it names no served resource (404)."""
    segments = [s for s in path.split("/") if s]
    if len(segments) >= 2 and segments[0] == "api":
        group, version, parts = "", segments[1], segments[2:]
    elif len(segments) >= 3 and segments[0] == "apis":
        group, version, parts = segments[1], segments[2], segments[3:]
    else:
        return None
    watch = bool(parts) and parts[0] == "watch"
    if watch:
        parts = parts[1:]
    namespace: str | None = None
    if len(parts) >= 3 and parts[0] == "namespaces":
        scoped = find(group, version, parts[2])
        if scoped is not None and scoped.namespaced:
            namespace, parts = parts[1], parts[2:]
    if not parts:
        return None
    resource = find(group, version, parts[0])
    if resource is None:
        return None
    name = parts[1] if len(parts) > 1 else None
    if resource.namespaced and name is not None and namespace is None:
        return None  # /api/v1/pods/NAME names nothing: a pod needs its namespace
    subresource = parts[2] if len(parts) > 2 else None
    if subresource is not None and subresource not in {s.name for s in resource.subresources}:
        return None
    return Target(
        resource=resource,
        namespace=namespace if resource.namespaced else None,
        name=name,
        subresource=subresource,
        rest="/".join(parts[3:]),
        watch=watch,
    )
