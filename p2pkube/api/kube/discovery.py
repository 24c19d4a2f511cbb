"""Discovery: what the API face serves, told the way a Kubernetes API server tells it.

Before kubectl or a client library sends any request it reads discovery, and everything
follows from it: resource names and short names (``kubectl get po``, ``deploy``), the
``all`` category, which group and version a kind is in, which verbs and subresources exist
(``kubectl drain`` looks for ``pods/eviction``), ``kubectl api-resources``. Every answer is
built from the one table of served resources (``resources.py``):

- ``GET /api`` (``APIVersions``), ``GET /apis`` (``APIGroupList``), ``GET /apis/GROUP``
  (``APIGroup``), ``GET /api/v1`` and ``GET /apis/GROUP/VERSION`` (``APIResourceList``, a
  subresource as ``pods/log``): the legacy form, one request per group/version;
- aggregated discovery (``apidiscovery.k8s.io/v2``, and ``v2beta1`` for older clients): the
  same ``/api`` and ``/apis`` answer every group, version and resource in one document when
  the ``Accept`` header asks for it, as client-go (kubectl 1.30 and later) does first. The
  response's ``Content-Type`` names the form (client-go decides by it);
- ``GET /version``: see :data:`KUBERNETES_MINOR`.

The documents never change while an agent runs: each is encoded once, at its first request
(they are small), and served with an ETag (``documents.py``).
"""

from __future__ import annotations

import base64
import hashlib
import platform
import sys
from collections.abc import Awaitable, Callable
from functools import cache, partial
from typing import Any

from aiohttp import web

from p2pkube import __version__
from p2pkube.api.kube.documents import JSON, Document, media_ranges, respond
from p2pkube.api.kube.resources import (
    GroupVersion,
    KubeResource,
    Subresource,
    group_versions,
    served_in,
)
from p2pkube.api.status import problem_response

__all__ = [
    "AGGREGATED_VERSIONS",
    "KUBERNETES_MINOR",
    "aggregated_discovery",
    "api_group",
    "api_group_list",
    "api_resource_list",
    "api_versions",
    "discovered",
    "discovery_routes",
    "groups",
    "storage_version_hash",
    "version_info",
]

KUBERNETES_MINOR = 32
"""The Kubernetes release ``/version`` claims: 1.32, the kubectl p2pkube is tested with.
kubectl warns when the server is more than one minor release away from it
(``kubectl version``), so 1.31 to 1.33 clients work quietly. p2pkube is not any Kubernetes
release: it serves a subset of the API (with the newer schemas of ``k8sschema``), and says so
in the build metadata, ``v1.32.0+p2pkube.<version>``: semver that kubectl's parser takes,
like k3s's ``+k3s1``, and not a pre-release (which version constraints such as Helm's
``kubeVersion: ">=1.28.0"`` would skip)."""

AGGREGATED_GROUP = "apidiscovery.k8s.io"
AGGREGATED_KIND = "APIGroupDiscoveryList"
AGGREGATED_VERSIONS = ("v2", "v2beta1")
"""The aggregated forms served, newest first (client-go 1.30+ asks for v2, then v2beta1)."""
LEGACY = "legacy"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_GO_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def version_info() -> dict[str, str]:
    """``GET /version``: Kubernetes' ``version.Info`` (see :data:`KUBERNETES_MINOR`)."""
    machine = platform.machine().lower()
    return {
        "major": "1",
        "minor": str(KUBERNETES_MINOR),
        "gitVersion": f"v1.{KUBERNETES_MINOR}.0+p2pkube.{__version__}",
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": platform.python_implementation().lower(),
        "platform": f"{sys.platform}/{_GO_ARCHITECTURES.get(machine, machine)}",
    }


# --- the legacy form ---------------------------------------------------------------------------


def storage_version_hash(resource: KubeResource) -> str:
    """Kubernetes' ``storageVersionHash``: the first 8 bytes of the SHA-256 of
    ``group/version/kind`` of the stored version, base64. It changes only if the stored
    version does (never, here); clients compare it, never decode it."""
    digest = hashlib.sha256(f"{resource.group}/{resource.version}/{resource.kind}".encode())
    return base64.b64encode(digest.digest()[:8]).decode()


def _for_discovery(group_version: GroupVersion) -> dict[str, str]:
    """A ``GroupVersionForDiscovery``."""
    return {"groupVersion": group_version.api_version, "version": group_version.version}


def discovered() -> list[GroupVersion]:
    """The group/versions discovery lists: those with resources of their own. ``policy/v1``
    and ``autoscaling/v1`` only name the kinds of subresources (``pods/eviction``,
    ``deployments/scale``), which ``/api/v1`` and ``/apis/apps/v1`` tell with their group and
    version; that is where ``kubectl drain`` looks. Listed empty, they would cost every kubectl
    run its discovery cache: client-go never caches an empty resource list, and downloads
    discovery again for it."""
    return [gv for gv in group_versions() if served_in(gv)]


def groups() -> dict[str, list[GroupVersion]]:
    """Every named group discovered, with its versions, the preferred first (the core group
    is not a named group: it is ``/api``)."""
    named: dict[str, list[GroupVersion]] = {}
    for group_version in discovered():
        if group_version.group:
            named.setdefault(group_version.group, []).append(group_version)
    return named


def api_versions() -> dict[str, Any]:
    """``GET /api``: the core group's versions. ``serverAddressByClientCIDRs`` is empty: a
    client reaches this agent at the address it already used."""
    core = [gv.version for gv in discovered() if not gv.group]
    return {"kind": "APIVersions", "versions": core, "serverAddressByClientCIDRs": []}


def _group(name: str, versions: list[GroupVersion]) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [_for_discovery(gv) for gv in versions],
        "preferredVersion": _for_discovery(versions[0]),
    }


def api_group(name: str, versions: list[GroupVersion]) -> dict[str, Any]:
    """``GET /apis/GROUP``."""
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def api_group_list() -> dict[str, Any]:
    """``GET /apis``: every named group."""
    named = [_group(name, versions) for name, versions in groups().items()]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": named}


def _api_resource(resource: KubeResource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": list(resource.verbs),
    }
    if resource.short_names:
        entry["shortNames"] = list(resource.short_names)
    if resource.categories:
        entry["categories"] = list(resource.categories)
    entry["storageVersionHash"] = storage_version_hash(resource)
    return entry


def _api_subresource(resource: KubeResource, sub: Subresource) -> dict[str, Any]:
    """``pods/log`` as its own entry; ``group``/``version`` only when the subresource's kind
    is of another group (``deployments/scale``: ``autoscaling/v1`` Scale)."""
    entry: dict[str, Any] = {
        "name": f"{resource.plural}/{sub.name}",
        "singularName": "",
        "namespaced": resource.namespaced,
    }
    if (sub.group, sub.version) != (resource.group, resource.version):
        entry |= {"group": sub.group, "version": sub.version}
    return entry | {"kind": sub.kind, "verbs": list(sub.verbs)}


def api_resource_list(group_version: GroupVersion) -> dict[str, Any]:
    """``GET /api/v1``, ``GET /apis/GROUP/VERSION``: the resources and subresources, by name
    as Kubernetes sorts them (``pods`` then ``pods/eviction``...)."""
    entries = []
    for resource in served_in(group_version):
        entries.append(_api_resource(resource))
        entries.extend(_api_subresource(resource, sub) for sub in resource.subresources)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version.api_version,
        "resources": sorted(entries, key=lambda entry: entry["name"]),
    }


# --- the aggregated form -----------------------------------------------------------------------


def _kind(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "version": version, "kind": kind}


def _resource_discovery(resource: KubeResource) -> dict[str, Any]:
    """An ``APIResourceDiscovery``: the resource with its subresources inside."""
    entry: dict[str, Any] = {
        "resource": resource.plural,
        "responseKind": _kind(resource.group, resource.version, resource.kind),
        "scope": "Namespaced" if resource.namespaced else "Cluster",
        "singularResource": resource.singular,
        "verbs": list(resource.verbs),
    }
    if resource.short_names:
        entry["shortNames"] = list(resource.short_names)
    if resource.categories:
        entry["categories"] = list(resource.categories)
    if resource.subresources:
        entry["subresources"] = [
            {
                "subresource": sub.name,
                "responseKind": _kind(sub.group, sub.version, sub.kind),
                "verbs": list(sub.verbs),
            }
            for sub in resource.subresources
        ]
    return entry


def _group_discovery(name: str, versions: list[GroupVersion]) -> dict[str, Any]:
    """An ``APIGroupDiscovery`` (the core group's name is empty)."""
    return {
        "metadata": {"name": name} if name else {},
        "versions": [
            {
                "version": gv.version,
                "resources": [
                    _resource_discovery(r)
                    for r in sorted(served_in(gv), key=lambda resource: resource.plural)
                ],
                "freshness": "Current",
            }
            for gv in versions
        ],
    }


def aggregated_discovery(core: bool, version: str = "v2") -> dict[str, Any]:
    """The ``APIGroupDiscoveryList`` of ``/api`` (``core``) or of ``/apis``."""
    if core:
        items = [_group_discovery("", [gv for gv in discovered() if not gv.group])]
    else:
        items = [_group_discovery(name, versions) for name, versions in groups().items()]
    return {
        "kind": AGGREGATED_KIND,
        "apiVersion": f"{AGGREGATED_GROUP}/{version}",
        "metadata": {},
        "items": items,
    }


def aggregated_content_type(version: str) -> str:
    return f"{JSON};g={AGGREGATED_GROUP};v={version};as={AGGREGATED_KIND}"


# --- content negotiation -----------------------------------------------------------------------


def negotiate(accept: str) -> str | None:
    """Which form of ``/api`` or ``/apis`` to answer: an aggregated version
    (:data:`AGGREGATED_VERSIONS`), :data:`LEGACY`, or None when the client accepts neither
    (protobuf only: 406)."""
    if not accept.strip():
        return LEGACY
    for media_type, params in media_ranges(accept):
        if "as" in params or "g" in params:
            aggregated = (
                media_type == JSON
                and params.get("g") == AGGREGATED_GROUP
                and params.get("as") == AGGREGATED_KIND
                and params.get("v") in AGGREGATED_VERSIONS
            )
            if aggregated:
                return params["v"]
            continue
        if media_type in (JSON, "application/*", "*/*"):
            return LEGACY
    return None


# --- routes ------------------------------------------------------------------------------------


def _not_acceptable(accept: str) -> web.Response:
    message = f"only application/json is served here, not {accept!r}"
    return problem_response(406, message, "NotAcceptable")


@cache
def _root_documents(core: bool) -> dict[str, Document]:
    """``/api`` or ``/apis`` in every form, by :func:`negotiate`'s answer."""
    legacy = api_versions() if core else api_group_list()
    forms = {LEGACY: Document.of(legacy)}
    for version in AGGREGATED_VERSIONS:
        content = aggregated_discovery(core, version)
        forms[version] = Document.of(content, aggregated_content_type(version))
    return forms


def _root_handler(core: bool) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        form = negotiate(accept)
        if form is None:
            return _not_acceptable(accept)
        return respond(request, _root_documents(core)[form])

    return handler


def _fixed_handler(build: Callable[[], dict[str, Any]]) -> Handler:
    """A handler answering one JSON document, encoded at its first request."""
    document = cache(lambda: Document.of(build()))

    async def handler(request: web.Request) -> web.Response:
        return respond(request, document())

    return handler


def _get(path: str, handler: Handler) -> list[web.RouteDef]:
    """GET (and HEAD) ``path``, with and without a trailing slash: the generated client
    libraries ask for ``/version/``, ``/api/``, ``/apis/apps/`` (kube-apiserver answers both)."""
    return [web.get(path, handler), web.get(f"{path}/", handler)]


def discovery_routes() -> list[web.RouteDef]:
    """The discovery routes (GET, and HEAD) for the API face's application: ``/version``,
    ``/api``, ``/apis``, and one route per group and per group/version discovered."""
    routes = [
        *_get("/version", _fixed_handler(version_info)),
        *_get("/api", _root_handler(core=True)),
        *_get("/apis", _root_handler(core=False)),
    ]
    for name, versions in groups().items():
        routes += _get(f"/apis/{name}", _fixed_handler(partial(api_group, name, versions)))
    for gv in discovered():
        routes += _get(gv.base_path, _fixed_handler(partial(api_resource_list, gv)))
    return routes
