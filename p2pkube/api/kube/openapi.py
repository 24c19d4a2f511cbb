"""The OpenAPI v3 documents of the API face, built from Kubernetes' published schemas.

kubectl reads them for more than ``kubectl explain``: before it sends ``fieldValidation`` (and
so before ``--validate=strict`` or ``--dry-run=server`` mean anything) it looks for that query
parameter on the PATCH operation of the kind (cli-runtime's ``QueryParamVerifierV3``), and its
client-side ``apply`` takes the merge keys of lists (``x-kubernetes-patch-merge-key``) from
them. So the documents are shaped as kube-apiserver's:

- ``GET /openapi/v3``: the index, ``{"paths": {"api/v1": {"serverRelativeURL":
  "/openapi/v3/api/v1?hash=..."}, "apis/apps/v1": ...}}``; the hash is the document's ETag;
- ``GET /openapi/v3/api/v1``, ``/openapi/v3/apis/GROUP/VERSION``: an OpenAPI 3.0 document per
  group/version with resources: ``components.schemas`` holds the served kinds, their lists,
  the kinds of their subresources and everything those reference; ``paths`` the operations
  of every verb the table lists, with Kubernetes' query parameters. Asked with the current
  ``?hash=``, it is served ``Cache-Control: public, immutable`` (a stale hash is redirected to
  the current one), as kube-openapi does.

The schemas are Kubernetes' own (``model/k8sschema``: JSON Schema, one set per release) turned
into OpenAPI 3.0 the way kube-apiserver writes it: ``type`` without ``"null"``, a ``$ref``
with a description beside it wrapped in ``allOf``, no ``additionalProperties: false``, and no
``enum`` pinning ``apiVersion``/``kind`` (both JSON Schema generator artefacts). p2pkube's
own ``Blob`` has no Kubernetes schema: it has a small one written here.

All documents are built together, once, in a worker thread at the first request (the core
group's is half a megabyte of JSON; all of them take about 0.2 s), then served from their
bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from p2pkube.api.kube.discovery import discovered, version_info
from p2pkube.api.kube.documents import JSON, Document, media_ranges, respond
from p2pkube.api.kube.resources import GroupVersion, KubeResource, Subresource, served_in
from p2pkube.api.status import problem_response
from p2pkube.model.k8sschema import definition_name, definitions, kubernetes_release

__all__ = [
    "OpenApiDocuments",
    "build_documents",
    "document_path",
    "group_version_document",
    "openapi_routes",
    "openapi_schema",
    "schema_name",
]

PREFIX = "/openapi/v3"
COMPONENTS: Final = "#/components/schemas/"
JSON_SCHEMA_DEFINITIONS: Final = "#/$defs/"
META = "io.k8s.apimachinery.pkg.apis.meta.v1."

Schema = dict[str, Any]


# --- schemas -------------------------------------------------------------------------------------


def openapi_schema(schema: Schema) -> Schema:
    """One JSON Schema definition of ``k8sschema`` in OpenAPI 3.0, as kube-apiserver writes it
    (see the module docstring)."""
    converted: Schema = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, list):
            kinds = [kind for kind in value if kind != "null"]
            converted[key] = kinds[0] if len(kinds) == 1 else kinds
        elif key == "$ref":
            converted[key] = COMPONENTS + value.removeprefix(JSON_SCHEMA_DEFINITIONS)
        elif key == "properties":
            converted[key] = {name: _property(name, sub) for name, sub in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            converted[key] = openapi_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            converted[key] = [openapi_schema(sub) for sub in value]
        elif key != "additionalProperties" or value is not False:
            converted[key] = value
    if "$ref" in converted and len(converted) > 1:
        # OpenAPI 3.0 ignores whatever sits beside a $ref; kube-apiserver wraps it.
        converted["allOf"] = [{"$ref": converted.pop("$ref")}]
    return converted


def _property(name: str, schema: Schema) -> Schema:
    if name in ("apiVersion", "kind"):
        schema = {key: value for key, value in schema.items() if key != "enum"}
    return openapi_schema(schema)


def _references(schema: Any) -> Iterator[str]:
    """The names of the components ``schema`` refers to, directly."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                yield value.removeprefix(COMPONENTS)
            else:
                yield from _references(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _references(value)


def schema_name(group: str, version: str, kind: str) -> str:
    """The component name of a kind: Kubernetes' for the groups served that Kubernetes
    defines, none of which has a dot (``io.k8s.api.apps.v1.Deployment``), the reversed domain
    for another (``io.p2pkube.v1.Blob``, as a custom resource's)."""
    if "." not in group:
        return definition_name(f"{group}/{version}" if group else version, kind)
    return ".".join([*reversed(group.split(".")), version, kind])


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "kind": kind, "version": version}


def _ref(name: str) -> Schema:
    return {"$ref": COMPONENTS + name}


def _described_ref(name: str, description: str) -> Schema:
    return {"allOf": [_ref(name)], "description": description}


def _object_property(name: str) -> Schema:
    """``apiVersion``, ``kind`` or ``metadata`` as every Kubernetes object describes it."""
    return _property(name, definitions()[definition_name("v1", "Pod")]["properties"][name])


def _list_schema(item: str, gvk: dict[str, str], plural: str) -> Schema:
    """A ``<Kind>List``, as Kubernetes defines every list of objects."""
    meta = _described_ref(META + "ListMeta", "Standard list metadata.")
    return {
        "description": f"{gvk['kind']} is a list of {plural}.",
        "properties": {
            "apiVersion": _object_property("apiVersion"),
            "items": {"description": f"List of {plural}.", "items": _ref(item), "type": "array"},
            "kind": _object_property("kind"),
            "metadata": meta,
        },
        "required": ["items"],
        "type": "object",
        "x-kubernetes-group-version-kind": [gvk],
    }


def _blob_schemas() -> dict[str, Schema]:
    """``p2pkube.io/v1`` Blob: written here, from what a Blob is (docs/protocol.md, Blobs)."""
    blob = schema_name("p2pkube.io", "v1", "Blob")
    strings = {"items": {"type": "string"}, "type": "array"}
    spec = {
        "description": "BlobSpec is a blob's manifest, written once by the node that published "
        "it: how to fetch the file from its holders chunk by chunk, and check every chunk.",
        "properties": {
            "digest": {
                "description": "sha256: and the 64 hex digits of the sha256 of the "
                "whole file; the Blob's name too.",
                "type": "string",
            },
            "size": {
                "description": "Size of the file in bytes.",
                "format": "int64",
                "type": "integer",
            },
            "chunkSize": {
                "description": "Size of every chunk but the last, in bytes.",
                "format": "int64",
                "type": "integer",
            },
            "chunks": {**strings, "description": "The hex sha256 of each chunk, in order."},
        },
        "required": ["digest", "size", "chunkSize", "chunks"],
        "type": "object",
    }
    status = {
        "description": "BlobStatus is what the answering node knows of the blob now.",
        "properties": {
            "holders": {**strings, "description": "The nodes that hold the whole file."},
            "local": {
                "description": "Whether the answering node holds the file: Complete, "
                "Partial (a fetch stopped midway) or Absent.",
                "type": "string",
            },
            "fetch": {
                "description": "How the answering node's fetch of the file stands, while one runs.",
                "type": "object",
            },
        },
        "type": "object",
    }
    gvk = _gvk("p2pkube.io", "v1", "Blob")
    return {
        blob: {
            "description": "Blob is a file the cluster shares, such as a pod's WebAssembly "
            "module, named by its digest. Nodes fetch it from each other; nothing in the "
            "cluster stores it centrally.",
            "properties": {
                "apiVersion": _object_property("apiVersion"),
                "kind": _object_property("kind"),
                "metadata": _object_property("metadata"),
                "spec": _described_ref(f"{blob}Spec", "The blob's manifest."),
                "status": _described_ref(f"{blob}Status", "Who holds the blob."),
            },
            "type": "object",
            "x-kubernetes-group-version-kind": [gvk],
        },
        f"{blob}Spec": spec,
        f"{blob}Status": status,
        f"{blob}List": _list_schema(blob, _gvk("p2pkube.io", "v1", "BlobList"), "blobs"),
    }


def _metrics_schemas() -> dict[str, Schema]:
    """``metrics.k8s.io/v1beta1`` NodeMetrics and PodMetrics: Kubernetes publishes no schema
    of them in its own document (metrics-server serves them), so they are written here from
    metrics-server's types."""
    group, version = "metrics.k8s.io", "v1beta1"
    usage = {
        "additionalProperties": _ref("io.k8s.apimachinery.pkg.api.resource.Quantity"),
        "description": "The memory and CPU usage, measured.",
        "type": "object",
    }
    window = {"description": "The interval the CPU usage is measured over.", "type": "string"}
    timestamp = _described_ref(META + "Time", "When the measurement window ended.")
    node = schema_name(group, version, "NodeMetrics")
    pod = schema_name(group, version, "PodMetrics")
    container = schema_name(group, version, "ContainerMetrics")

    def kind(name: str, description: str, properties: Schema) -> Schema:
        return {
            "description": description,
            "properties": {
                "apiVersion": _object_property("apiVersion"),
                "kind": _object_property("kind"),
                "metadata": _object_property("metadata"),
                "timestamp": timestamp,
                "window": window,
                **properties,
            },
            "required": ["timestamp", "window", *properties],
            "type": "object",
            "x-kubernetes-group-version-kind": [_gvk(group, version, name)],
        }

    return {
        node: kind(
            "NodeMetrics", "NodeMetrics sets resource usage metrics of a node.", {"usage": usage}
        ),
        pod: kind(
            "PodMetrics",
            "PodMetrics sets resource usage metrics of a pod.",
            {
                "containers": {
                    "description": "Metrics for all containers, collected within the same window.",
                    "items": _ref(container),
                    "type": "array",
                }
            },
        ),
        container: {
            "description": "ContainerMetrics sets resource usage metrics of a container.",
            "properties": {
                "name": {"description": "Container name.", "type": "string"},
                "usage": usage,
            },
            "required": ["name", "usage"],
            "type": "object",
        },
        f"{node}List": _list_schema(node, _gvk(group, version, "NodeMetricsList"), "nodes"),
        f"{pod}List": _list_schema(pod, _gvk(group, version, "PodMetricsList"), "pods"),
    }


class _Schemas:
    """Every component that can be served: Kubernetes' definitions, converted as they are
    first needed, and p2pkube's own."""

    def __init__(self) -> None:
        self._own = _blob_schemas() | _metrics_schemas()
        self._converted: dict[str, Schema] = {}

    def get(self, name: str) -> Schema | None:
        if name in self._own:
            return self._own[name]
        if name not in self._converted:
            source = definitions().get(name)
            if source is None:
                return None
            self._converted[name] = openapi_schema(source)
        return self._converted[name]

    def closure(self, roots: Iterable[str]) -> dict[str, Schema]:
        """``roots`` (those that exist) and everything they refer to, sorted by name."""
        found: dict[str, Schema] = {}
        pending = list(roots)
        while pending:
            name = pending.pop()
            schema = None if name in found else self.get(name)
            if schema is not None:
                found[name] = schema
                pending.extend(_references(schema))
        return dict(sorted(found.items()))


# --- operations ----------------------------------------------------------------------------------

PARAMETERS: dict[str, tuple[str, str]] = {
    "allowWatchBookmarks": ("boolean", "Ask a watch for BOOKMARK events (a server may send none)."),
    "continue": (
        "string",
        "Where a list that was cut by limit goes on, from the continue value of the previous page.",
    ),
    "dryRun": ("string", "All: check and answer the request, and persist nothing."),
    "fieldManager": (
        "string",
        "Name of the actor making the change (at most 128 printable characters).",
    ),
    "fieldSelector": ("string", "Selects the objects by their fields. Defaults to everything."),
    "fieldValidation": (
        "string",
        "What to do with unknown or duplicate fields in the object: "
        "Ignore, Warn (the default: a warning for each) or Strict (refuse).",
    ),
    "force": ("boolean", "Take over the fields of other managers in an apply patch."),
    "gracePeriodSeconds": ("integer", "Seconds before the object is deleted; 0 deletes at once."),
    "labelSelector": ("string", "Selects the objects by their labels. Defaults to everything."),
    "limit": (
        "integer",
        "Most objects to answer; the list's continue field then says where the next page starts.",
    ),
    "orphanDependents": ("boolean", "Deprecated: use propagationPolicy."),
    "propagationPolicy": (
        "string",
        "What happens to the dependents: Orphan, Background or Foreground.",
    ),
    "resourceVersion": (
        "string",
        "Which version of the objects a read may be served from; a watch starts after it.",
    ),
    "resourceVersionMatch": (
        "string",
        "How resourceVersion applies to a list: Exact or NotOlderThan.",
    ),
    "sendInitialEvents": (
        "boolean",
        "Start a watch with the current objects as ADDED events, then a BOOKMARK.",
    ),
    "timeoutSeconds": ("integer", "Ends the list or watch after this many seconds."),
    "watch": (
        "boolean",
        "Stream the changes to the objects (ADDED, MODIFIED, DELETED) instead of listing them.",
    ),
    "pretty": ("string", "If 'true', the output is indented."),
    "container": (
        "string",
        "The container whose log to read; may be left out when the pod has only one.",
    ),
    "follow": ("boolean", "Stream the log as it is written."),
    "limitBytes": ("integer", "Most bytes of log to answer."),
    "previous": ("boolean", "The log of the container's previous run."),
    "sinceSeconds": ("integer", "Only lines written in the last seconds."),
    "tailLines": ("integer", "Only the last lines."),
    "timestamps": ("boolean", "Start every line with the time it was written (RFC3339)."),
    "ports": ("integer", "The pod's ports to forward."),
    "path": ("string", "The path to ask the pod or service."),
}
"""Every query parameter, with its type and what it does."""

LIST_PARAMETERS = (
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
)
WRITE_PARAMETERS = ("dryRun", "fieldManager", "fieldValidation")
"""Of every create and replace, and (with force) of every patch: cli-runtime's
``QueryParamVerifierV3`` finds ``fieldValidation`` on a kind's PATCH operation before kubectl
uses server-side validation."""
DELETE_PARAMETERS = ("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy")
LOG_PARAMETERS = (
    "container",
    "follow",
    "limitBytes",
    "previous",
    "sinceSeconds",
    "tailLines",
    "timestamps",
)
PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
"""The bodies a PATCH takes, as Kubernetes lists them."""

ITEM_METHODS = {
    "create": "post",
    "get": "get",
    "update": "put",
    "patch": "patch",
    "delete": "delete",
}
"""The HTTP method of each verb of discovery on one object or subresource (``list`` and
``deletecollection`` are the collection's)."""
ACTIONS = {"post": "create", "get": "read", "put": "replace", "patch": "patch", "delete": "delete"}
"""How an operationId names what a method does to one object (Kubernetes' words)."""
WRITES = {"post": "create", "put": "replace", "patch": "partially update"}
"""How an operation's description says it."""


def _parameter(name: str, location: str = "query") -> Schema:
    kind, description = PARAMETERS.get(name, ("string", ""))
    parameter: Schema = {
        "description": description,
        "in": location,
        "name": name,
        "schema": {"type": kind, "uniqueItems": True},
    }
    if location == "path":
        parameter["required"] = True
    return parameter


def _path_parameter(name: str, description: str) -> Schema:
    return {**_parameter(name, "path"), "description": description}


def _content(schema: Schema, media_types: Iterable[str] = (JSON,)) -> Schema:
    return {"content": {media_type: {"schema": schema} for media_type in media_types}}


def _responses(schema: Schema, codes: Iterable[int] = (200,), streams: bool = False) -> Schema:
    words = {200: "OK", 201: "Created", 202: "Accepted"}
    media_types = (JSON, f"{JSON};stream=watch") if streams else (JSON,)
    answers: Schema = {
        str(code): {**_content(schema, media_types), "description": words[code]} for code in codes
    }
    return {**answers, "401": {"description": "Unauthorized"}}


@dataclass(frozen=True)
class _Target:
    """What one set of operations acts on: a resource, or one of its subresources."""

    resource: KubeResource
    group: str
    version: str
    kind: str
    sub: str = ""

    @property
    def gvk(self) -> dict[str, str]:
        return _gvk(self.group, self.version, self.kind)

    @property
    def schema(self) -> Schema:
        return _ref(schema_name(self.group, self.version, self.kind))

    @property
    def tag(self) -> str:
        return f"{self.resource.group or 'core'}_{self.resource.version}"

    def operation_id(self, action: str, scope: str = "") -> str:
        """Kubernetes' style: ``patchAppsV1NamespacedDeploymentScale``."""
        group = "".join(p.capitalize() for p in (self.resource.group or "core").split("."))
        namespaced = "Namespaced" if self.resource.namespaced and not scope else ""
        return (
            f"{action}{group}{self.resource.version.capitalize()}{namespaced}"
            f"{self.resource.kind}{self.sub.capitalize()}{scope}"
        )

    def operation(
        self, action: str, description: str, x_action: str, *, scope: str = "", **fields: Any
    ) -> Schema:
        """An operation: ``fields`` are its parameters, requestBody and responses."""
        return {
            "description": description,
            "operationId": self.operation_id(action, scope),
            **fields,
            "tags": [self.tag],
            "x-kubernetes-action": x_action,
            "x-kubernetes-group-version-kind": self.gvk,
        }


def _write(target: _Target, method: str, what: str) -> Schema:
    """A create, replace or patch of one object (or subresource)."""
    names = WRITE_PARAMETERS + (("force",) if method == "patch" else ())
    if method == "patch":
        body = _content(_ref(META + "Patch"), PATCH_TYPES)
    else:
        body = _content(target.schema, ("*/*",))
    codes = (200, 201, 202) if method == "post" else (200, 201)
    return target.operation(
        ACTIONS[method],
        what,
        method,
        parameters=[_parameter(name) for name in names],
        requestBody={**body, "required": True},
        responses=_responses(target.schema, codes),
    )


def _item_operations(target: _Target, verbs: Iterable[str], of: str) -> Schema:
    """The operations on one object (or one of its subresources), by verb."""
    operations: Schema = {}
    for method in (ITEM_METHODS[verb] for verb in verbs if verb in ITEM_METHODS):
        if method == "get":
            operations[method] = target.operation(
                "read", f"read {of}", "get", responses=_responses(target.schema)
            )
        elif method == "delete":
            operations[method] = target.operation(
                "delete",
                f"delete {of}",
                "delete",
                parameters=[_parameter(name) for name in DELETE_PARAMETERS],
                requestBody=_content(_ref(META + "DeleteOptions"), ("*/*",)),
                responses=_responses(_ref(META + "Status"), (200, 202)),
            )
        else:
            operations[method] = _write(target, method, f"{WRITES[method]} {of}")
    return operations


def _collection_operations(target: _Target, scope: str = "") -> Schema:
    resource = target.resource
    list_schema = _ref(schema_name(resource.group, resource.version, f"{resource.kind}List"))
    operations: Schema = {}
    if "list" in resource.verbs:
        operations["get"] = target.operation(
            "list",
            f"list or watch objects of kind {resource.kind}",
            "list",
            scope=scope,
            parameters=[_parameter(name) for name in LIST_PARAMETERS],
            responses=_responses(list_schema, streams=True),
        )
    if scope:
        return operations
    if "create" in resource.verbs:
        operations["post"] = _write(target, "post", f"create a {resource.kind}")
    if "deletecollection" in resource.verbs:
        names = sorted({*LIST_PARAMETERS, *DELETE_PARAMETERS} - {"watch", "allowWatchBookmarks"})
        operations["delete"] = target.operation(
            "deleteCollection",
            f"delete collection of {resource.kind}",
            "deletecollection",
            parameters=[_parameter(name) for name in names],
            requestBody=_content(_ref(META + "DeleteOptions"), ("*/*",)),
            responses=_responses(_ref(META + "Status")),
        )
    return operations


def _text_operation(
    target: _Target, action: str, description: str, x_action: str, parameters: list[Schema]
) -> Schema:
    """A subresource that answers text or a stream (``log``, ``proxy``, ``portforward``)."""
    return target.operation(
        action,
        description,
        x_action,
        parameters=parameters,
        responses={
            "200": {**_content({"type": "string"}, ("*/*",)), "description": "OK"},
            "401": {"description": "Unauthorized"},
        },
    )


def _connect_paths(target: _Target, path: str, sub: Subresource) -> dict[str, Schema]:
    """``proxy`` and ``portforward``: a connection to the pod or service, not an object (and
    ``proxy/{path}``, the same with a path after it)."""
    query = [_parameter("ports" if sub.name == "portforward" else "path")]
    kind = target.resource.kind
    operations = {
        method: _text_operation(
            target,
            f"connect{method.capitalize()}",
            f"connect {method.upper()} requests to {sub.name} of {kind}",
            "connect",
            query,
        )
        for method in (ITEM_METHODS[verb] for verb in sub.verbs)
    }
    paths = {path: operations}
    if sub.name == "proxy":
        subpath = _path_parameter("path", "path to the resource")
        paths[f"{path}/{{path}}"] = {
            method: {**op, "operationId": f"{op['operationId']}WithPath", "parameters": [subpath]}
            for method, op in operations.items()
        }
    return paths


def _subresource_paths(resource: KubeResource, item: str, sub: Subresource) -> dict[str, Schema]:
    target = _Target(resource, sub.group, sub.version, sub.kind, sub.name)
    path = f"{item}/{sub.name}"
    if sub.name == "log":
        description = f"read log of the specified {resource.kind}"
        parameters = [_parameter(name) for name in LOG_PARAMETERS]
        return {path: {"get": _text_operation(target, "read", description, "get", parameters)}}
    if sub.kind.endswith("Options"):  # PodProxyOptions...: Kubernetes' kinds of connections
        return _connect_paths(target, path, sub)
    of = f"{sub.name} of the specified {resource.kind}"
    return {path: _item_operations(target, sub.verbs, of)}


def _resource_paths(resource: KubeResource) -> dict[str, Schema]:
    """Every path of a resource with its operations and path-level parameters."""
    target = _Target(resource, resource.group, resource.version, resource.kind)
    pretty = _parameter("pretty")
    name = _path_parameter("name", f"name of the {resource.kind}")
    scoped: list[Schema] = []
    collection = f"{resource.base_path}/{resource.plural}"
    if resource.namespaced:
        scoped = [_path_parameter("namespace", "object name and auth scope, such as for teams")]
        collection = f"{resource.base_path}/namespaces/{{namespace}}/{resource.plural}"
    item = f"{collection}/{{name}}"
    paths = {
        collection: {**_collection_operations(target), "parameters": [*scoped, pretty]},
        item: {
            **_item_operations(target, resource.verbs, f"the specified {resource.kind}"),
            "parameters": [name, *scoped, pretty],
        },
    }
    if resource.namespaced and "list" in resource.verbs:
        every = _collection_operations(target, "ForAllNamespaces")
        paths[f"{resource.base_path}/{resource.plural}"] = {**every, "parameters": [pretty]}
    for sub in resource.subresources:
        for path, operations in _subresource_paths(resource, item, sub).items():
            paths[path] = {**operations, "parameters": [name, *scoped, pretty]}
    return {path: item for path, item in paths.items() if set(item) - {"parameters"}}


# --- documents ------------------------------------------------------------------------------------


def document_path(group_version: GroupVersion) -> str:
    """``api/v1``, ``apis/apps/v1``: the key in the index, after ``/openapi/v3/``."""
    return group_version.base_path.removeprefix("/")


def _roots(resources: list[KubeResource]) -> Iterator[str]:
    """The components a group/version's operations name."""
    yield from (META + name for name in ("DeleteOptions", "Patch", "Status"))
    for resource in resources:
        yield schema_name(resource.group, resource.version, resource.kind)
        yield schema_name(resource.group, resource.version, f"{resource.kind}List")
        for sub in resource.subresources:
            yield schema_name(sub.group, sub.version, sub.kind)


def group_version_document(group_version: GroupVersion, schemas: _Schemas | None = None) -> Schema:
    """The OpenAPI 3.0 document of one group/version."""
    schemas = schemas or _Schemas()
    resources = served_in(group_version)
    components = schemas.closure(_roots(resources))
    for resource in resources:  # kubectl explain finds a kind by this extension
        kind = components[schema_name(resource.group, resource.version, resource.kind)]
        kind.setdefault(
            "x-kubernetes-group-version-kind",
            [_gvk(resource.group, resource.version, resource.kind)],
        )
    paths: dict[str, Schema] = {}
    for resource in resources:
        paths.update(_resource_paths(resource))
    return {
        "openapi": "3.0.0",
        "info": {
            "title": "p2pkube",
            "version": version_info()["gitVersion"],
            "description": "The Kubernetes API as p2pkube serves it; the schemas are those "
            f"of Kubernetes {kubernetes_release()}.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": components},
    }


@dataclass(frozen=True)
class OpenApiDocuments:
    """Every document, encoded, with the index that names them by hash."""

    index: Document
    by_path: dict[str, Document]
    """By :func:`document_path`."""


def build_documents() -> OpenApiDocuments:
    """Every group/version's document and the index (blocking: run it off the loop)."""
    schemas = _Schemas()
    by_path = {
        document_path(gv): Document.of(group_version_document(gv, schemas)) for gv in discovered()
    }
    index = {
        "paths": {
            path: {"serverRelativeURL": f"{PREFIX}/{path}?{urlencode({'hash': doc.hash})}"}
            for path, doc in by_path.items()
        }
    }
    return OpenApiDocuments(Document.of(index), by_path)


class _Built:
    """The documents, built once in a worker thread at the first request that needs them.
    Two first requests at once may both build; they build the same bytes."""

    def __init__(self) -> None:
        self._documents: OpenApiDocuments | None = None

    async def get(self) -> OpenApiDocuments:
        if self._documents is None:
            self._documents = await asyncio.to_thread(build_documents)
        return self._documents


_BUILT = _Built()

_IMMUTABLE = {"Cache-Control": "public, immutable"}
"""What kube-openapi adds when the URL names the document's hash, with an ``Expires`` a year
away: the bytes at that URL never change, and a client's HTTP cache need not even revalidate."""


def _a_year_from_now() -> str:
    return format_datetime(datetime.now(UTC) + timedelta(days=365), usegmt=True)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _group_version_handler(path: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        accept = request.headers.get("Accept", "") or "*/*"
        if not any(kind in (JSON, "application/*", "*/*") for kind, _ in media_ranges(accept)):
            return problem_response(406, f"only {JSON} is served here", "NotAcceptable")
        document = (await _BUILT.get()).by_path[path]
        asked = request.query.get("hash")
        if asked is None:
            return respond(request, document)
        if asked != document.hash:
            current = f"{PREFIX}/{path}?{urlencode({'hash': document.hash})}"
            raise web.HTTPMovedPermanently(current)
        return respond(request, document, _IMMUTABLE | {"Expires": _a_year_from_now()})

    return handler


def openapi_routes() -> list[web.RouteDef]:
    """The OpenAPI v3 routes (GET, and HEAD) for the API face's application: the index and
    one document per group/version discovered."""

    async def index(request: web.Request) -> web.StreamResponse:
        return respond(request, (await _BUILT.get()).index)

    routes = [web.get(PREFIX, index)]
    for gv in discovered():
        path = document_path(gv)
        routes.append(web.get(f"{PREFIX}/{path}", _group_version_handler(path)))
    return routes
