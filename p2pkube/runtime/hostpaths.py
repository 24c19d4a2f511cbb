"""Which host directories a pod may mount: the node operator's grant, never the cluster's.

Anyone holding the join token can write a Pod, so a ``hostPath`` is no authority of its own:
a node mounts one only when its operator allowed a prefix that holds it (``p2pkube join
--allow-host-path PREFIX[:rw]``, repeatable, read-only unless ``:rw``; none by default). The
agent's data dir (its node key, API token, state and the compiled modules wasmtime runs as
machine code) is never mountable, even under a granted prefix: neither the dir itself, nor a
path inside it, nor an ancestor (mounting ``/`` would expose it).

Paths are compared after resolving symlinks (``os.path.realpath``; the API already refuses
``..``), so a symlink inside a granted prefix that points outside it does not widen the grant.
The kubelet mounts the resolved path and the native runtime checks, just before the preopen,
that it still resolves to itself, which leaves a window of microseconds instead of the time a
module takes to fetch and compile (a time-of-check to time-of-use race). Inside the mount,
wasmtime's WASI refuses to follow a symlink out of it.

Each node publishes its grants in its Node status (``allowedHostPaths``, in the shape of
Kubernetes' PodSecurityPolicy: ``pathPrefix`` and ``readOnly``; and ``protectedHostPaths``,
its data dir), so placement filters out the nodes that would refuse a pod. Shared Python
(placement and the kubelet run in the browser too): ``os`` and ``posixpath`` only.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

HOST_PATH_NOT_ALLOWED: Final = "HostPathNotAllowed"
"""Pod status reason and event reason of a pod refused for one of its ``hostPath`` volumes."""
GRANT_HINT: Final = "its operator grants host paths with p2pkube join --allow-host-path PREFIX[:rw]"


class HostPathRefused(Exception):
    """A ``hostPath`` this node does not mount; the message says which and why."""

    def __init__(self, message: str, path: str, unforeseen: bool) -> None:
        super().__init__(message)
        self.path = path
        """The path as the pod spec gives it (normalised)."""
        self.unforeseen = unforeseen
        """The published grants allow the path as written: only resolving its symlinks here
        refused it, which placement could not foresee."""


def normalise(path: str) -> str:
    """An absolute path without ``.``, ``..``, doubled or trailing slashes (lexically)."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def within(path: str, prefix: str) -> bool:
    """Whether normalised ``path`` is ``prefix`` or lies under it."""
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


@dataclass(frozen=True)
class HostPathGrant:
    """One prefix the operator allowed, read-only unless ``:rw``."""

    path_prefix: str
    read_only: bool = True

    @classmethod
    def parse(cls, text: str) -> HostPathGrant:
        """``PREFIX``, ``PREFIX:ro`` or ``PREFIX:rw``; ValueError for a relative prefix."""
        prefix, read_only = text.strip(), True
        for suffix, ro in ((":rw", False), (":ro", True)):
            if prefix.endswith(suffix):
                prefix, read_only = prefix[: -len(suffix)], ro
                break
        if not prefix.startswith("/"):
            raise ValueError(
                f"host path grant {text!r}: PREFIX must be an absolute path (PREFIX or PREFIX:rw)"
            )
        return cls(normalise(prefix), read_only)

    def covers(self, path: str, writable: bool) -> bool:
        return within(path, self.path_prefix) and not (writable and self.read_only)

    def __str__(self) -> str:
        return f"{self.path_prefix} ({'read-only' if self.read_only else 'read-write'})"


def parse_grants(texts: Iterable[str]) -> tuple[HostPathGrant, ...]:
    """Every grant of ``texts`` (ValueError naming the first bad one)."""
    return tuple(HostPathGrant.parse(text) for text in texts)


@dataclass(frozen=True)
class HostPathRequest:
    """One ``hostPath`` volume of a pod spec."""

    volume: str
    path: str
    writable: bool
    """Some container mounts it with ``readOnly: false``."""

    def __str__(self) -> str:
        return f"{self.path} ({'read-write' if self.writable else 'read-only'})"


def requested_host_paths(spec: Mapping[str, Any]) -> tuple[HostPathRequest, ...]:
    """The ``hostPath`` volumes of a pod spec, each writable when any mount of it is."""
    writable = {
        mount.get("name")
        for container in spec.get("containers") or []
        if isinstance(container, Mapping)
        for mount in container.get("volumeMounts") or []
        if isinstance(mount, Mapping) and mount.get("readOnly", True) is False
    }
    requests = []
    for volume in spec.get("volumes") or []:
        host = volume.get("hostPath") if isinstance(volume, Mapping) else None
        if isinstance(host, Mapping) and isinstance(host.get("path"), str):
            name = volume.get("name")
            requests.append(HostPathRequest(str(name), host["path"], name in writable))
    return tuple(requests)


@dataclass(frozen=True)
class HostPathPolicy:
    """What one node mounts: its grants, minus its protected paths (the data dir)."""

    grants: tuple[HostPathGrant, ...] = ()
    protected: tuple[str, ...] = ()
    """Resolved paths no pod may mount, nor anything inside or above them."""
    refused: tuple[str, ...] = ()
    """Paths as written that the node refused although these grants allow them as written
    (a symlink in them leads elsewhere): published so that placement does not send a pod
    asking for them to this node again."""

    @classmethod
    def for_node(cls, grants: Iterable[str], data_dir: Path) -> HostPathPolicy:
        """The native node's policy: grants and data dir resolved once, at start (blocking,
        a few ``lstat`` calls)."""
        resolved = tuple(
            HostPathGrant(os.path.realpath(g.path_prefix), g.read_only)
            for g in parse_grants(grants)
        )
        return cls(resolved, (os.path.realpath(data_dir),))

    def refusal(self, path: str, writable: bool) -> str | None:
        """Why ``path`` (normalised or resolved) may not be mounted so here; None if it may."""
        if path in self.refused:
            return "it was refused here before (it resolves to a path that is not granted)"
        for protected in self.protected:
            if within(path, protected):
                return f"it lies in the agent's data dir {protected}, which no pod may mount"
            if within(protected, path):
                return f"it holds the agent's data dir {protected}, which no pod may mount"
        if any(grant.covers(path, writable) for grant in self.grants):
            return None
        if writable and any(grant.covers(path, False) for grant in self.grants):
            return "it is granted read-only"
        return "no grant of this node holds it"

    def resolve(self, requests: Iterable[HostPathRequest]) -> dict[str, Path]:
        """Volume name -> the resolved directory to mount; HostPathRefused for the first
        request this node refuses. Blocking (``realpath``): call it in a thread."""
        resolved = {}
        for request in requests:
            written = normalise(request.path)
            real = os.path.realpath(written)
            why = self.refusal(real, request.writable)
            if why is not None:
                via = "" if real == written else f", which resolves to {real},"
                raise HostPathRefused(
                    f"hostPath {request}{via} is not allowed: {why}",
                    written,
                    unforeseen=self.refusal(written, request.writable) is None,
                )
            resolved[request.volume] = Path(real)
        return resolved

    def describe(self) -> str:
        """The grants as a message shows them."""
        if not self.grants:
            return f"none ({GRANT_HINT})"
        return ", ".join(str(grant) for grant in self.grants)

    def with_refused(self, paths: Iterable[str]) -> HostPathPolicy:
        return HostPathPolicy(self.grants, self.protected, tuple(paths))

    def to_status(self) -> dict[str, Any]:
        """The Node status fields that publish this policy."""
        return {
            "allowedHostPaths": [
                {"pathPrefix": g.path_prefix, "readOnly": g.read_only} for g in self.grants
            ],
            "protectedHostPaths": list(self.protected),
            "refusedHostPaths": list(self.refused),
        }

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> HostPathPolicy:
        """The policy a Node status publishes; what is malformed grants nothing."""
        grants = []
        for entry in _list(status.get("allowedHostPaths")):
            prefix = entry.get("pathPrefix") if isinstance(entry, Mapping) else None
            if isinstance(prefix, str) and prefix.startswith("/"):
                grants.append(HostPathGrant(normalise(prefix), entry.get("readOnly") is not False))
        return cls(
            tuple(grants),
            _paths(status.get("protectedHostPaths")),
            _paths(status.get("refusedHostPaths")),
        )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _paths(value: Any) -> tuple[str, ...]:
    return tuple(normalise(p) for p in _list(value) if isinstance(p, str) and p.startswith("/"))
