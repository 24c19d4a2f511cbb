"""The resources the Kubernetes API face serves: one table that discovery, routing, OpenAPI and
the tables for ``kubectl get`` all read.

Every kind p2pkube stores is served under Kubernetes' own group and version (model/apiversions)
with Kubernetes' resource names: the CLI's kinds (``p2pkube.cli.kinds``) already carry kubectl's
plural, singular and short names, so they are read from there rather than declared twice. What
only the API needs (verbs, subresources, the Kubernetes kind of a subresource) is added here.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pkube.cli.kinds import RESOURCES as CLI_RESOURCES
from p2pkube.cli.output import Resource as CliResource
from p2pkube.cli.topkinds import NODE_METRICS, POD_METRICS
from p2pkube.model.apiversions import api_version_of

__all__ = [
    "ALL_VERBS",
    "METRICS_GROUP",
    "METRICS_RESOURCES",
    "RESOURCES",
    "GroupVersion",
    "KubeResource",
    "Subresource",
    "by_kind",
    "find",
    "group_versions",
    "served_in",
]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
"""What a stored kind accepts, as discovery names Kubernetes' verbs."""
READ_VERBS = ("get", "list", "watch")


@dataclass(frozen=True)
class Subresource:
    """``pods/log``, ``deployments/scale``...: the name after the object's, and what it is."""

    name: str
    kind: str
    """The kind it reads and writes (``Scale``, ``Eviction``; the parent's own for status)."""
    group: str = ""
    version: str = "v1"
    verbs: tuple[str, ...] = ("get",)


PROXY_VERBS = ("create", "delete", "get", "patch", "update")
"""A proxy passes every method through (``api/proxyroutes.py``); Kubernetes lists these."""
STATUS = ("status",)
SCALE = ("scale",)


@dataclass(frozen=True)
class KubeResource:
    """One resource of the Kubernetes API, backed by one kind of the replicated state."""

    kind: str
    group: str
    """``""`` for the core group (served under ``/api/v1``), else ``apps``, ``batch``..."""
    version: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    namespaced: bool
    verbs: tuple[str, ...]
    subresources: tuple[Subresource, ...]
    cli: CliResource
    """The CLI's view of the kind: its columns make the Table that ``kubectl get`` prints."""
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> GroupVersion:
        return GroupVersion(self.group, self.version)

    @property
    def base_path(self) -> str:
        """``/api/v1`` or ``/apis/GROUP/VERSION``."""
        return self.group_version.base_path


@dataclass(frozen=True)
class GroupVersion:
    group: str
    version: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def base_path(self) -> str:
        """``/api/v1`` or ``/apis/GROUP/VERSION``."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


def _subresources(kind: str, group: str, version: str) -> tuple[Subresource, ...]:
    status = Subresource("status", kind, group, version, ("get", "patch", "update"))
    scale = Subresource("scale", "Scale", "autoscaling", "v1", ("get", "patch", "update"))
    if kind == "Pod":
        return (
            status,
            Subresource("log", "Pod"),
            Subresource("eviction", "Eviction", "policy", "v1", ("create",)),
            Subresource("portforward", "PodPortForwardOptions", verbs=("create", "get")),
            Subresource("proxy", "PodProxyOptions", verbs=PROXY_VERBS),
        )
    if kind == "Service":
        return (status, Subresource("proxy", "ServiceProxyOptions", verbs=PROXY_VERBS))
    if kind in ("Deployment", "ReplicaSet"):
        return (status, scale)
    if kind in ("Namespace", "Node", "DaemonSet", "Job", "CronJob"):
        return (status,)
    return ()


#: The kinds kubectl's ``all`` category covers, as in Kubernetes (``kubectl get all``).
_ALL_CATEGORY = frozenset(
    {"Pod", "Service", "Deployment", "ReplicaSet", "DaemonSet", "Job", "CronJob"}
)
#: Kinds only agents write: served read-only (a Node's spec is the user's through patch/update).
_READ_ONLY = frozenset({"Endpoints"})
_NODE_VERBS = ("delete", "get", "list", "patch", "update", "watch")


def _verbs(kind: str) -> tuple[str, ...]:
    if kind in _READ_ONLY:
        return READ_VERBS
    if kind == "Node":
        return _NODE_VERBS
    return ALL_VERBS


def _from_cli(resource: CliResource) -> KubeResource:
    group, _, version = api_version_of(resource.kind).rpartition("/")
    singular = resource.kind.lower()
    short = tuple(n for n in resource.names[1:] if n != singular)
    return KubeResource(
        kind=resource.kind,
        group=group,
        version=version,
        plural=resource.plural,
        singular=singular,
        short_names=short,
        namespaced=resource.namespaced,
        verbs=_verbs(resource.kind),
        subresources=_subresources(resource.kind, group, version),
        cli=resource,
        categories=("all",) if resource.kind in _ALL_CATEGORY else (),
    )


METRICS_GROUP = "metrics.k8s.io"
"""Measured usage (``kubectl top``), as metrics-server serves it: read-only, never stored;
answered by ``api/kube/metrics.py``."""


def _metrics(resource: CliResource) -> KubeResource:
    return KubeResource(
        kind=resource.kind,
        group=METRICS_GROUP,
        version="v1beta1",
        plural=resource.plural,
        singular="",  # as metrics-server's discovery
        short_names=(),
        namespaced=resource.namespaced,
        verbs=("get", "list"),
        subresources=(),
        cli=resource,
    )


METRICS_RESOURCES = (_metrics(NODE_METRICS), _metrics(POD_METRICS))

RESOURCES: tuple[KubeResource, ...] = (
    *(_from_cli(r) for r in CLI_RESOURCES),
    *METRICS_RESOURCES,
)
"""Every served resource: the stored kinds in the CLI's order, then the metrics."""


def by_kind(kind: str) -> KubeResource | None:
    for resource in RESOURCES:
        if resource.kind == kind:
            return resource
    return None


def find(group: str, version: str, plural: str) -> KubeResource | None:
    """The resource at ``/api[s]/GROUP/VERSION/.../PLURAL``, or None."""
    for resource in RESOURCES:
        if (resource.group, resource.version, resource.plural) == (group, version, plural):
            return resource
    return None


def group_versions() -> list[GroupVersion]:
    """Every group/version served, the core group first, then by group name. Groups that
    only carry subresource kinds (``policy/v1`` Eviction, ``autoscaling/v1`` Scale) are
    listed too: a request body names them. Discovery lists only those with resources
    (``discovery.discovered``); kubectl drain finds ``policy/v1`` in ``pods/eviction``."""
    seen = {(r.group, r.version) for r in RESOURCES}
    seen |= {(s.group, s.version) for r in RESOURCES for s in r.subresources}
    return [GroupVersion(g, v) for g, v in sorted(seen, key=lambda gv: (gv[0] != "", gv))]


def served_in(group_version: GroupVersion) -> list[KubeResource]:
    """The resources of one group/version, in table order (none for ``policy/v1``, whose
    Eviction is only a subresource of pods)."""
    return [r for r in RESOURCES if r.group_version == group_version]
