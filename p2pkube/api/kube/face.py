"""The Kubernetes API over the agent's object service: what kubectl and client libraries call.

Every native agent answers ``/api/...`` and ``/apis/...`` on its local API's address, with its
token, as an API server would (docs/kubectl.md). Nothing here stores or watches by itself:
reads go to the same backend as the local API (``api.backend.AgentBackend``), writes through
the same validated store (``ApiServer.store``), watches come from the same hub. What this
module adds is Kubernetes' shape around them:

* paths (``api.kube.paths``), lists with a resourceVersion, Tables for ``kubectl get``;
* resourceVersions: the node's revisions (``model.watch.WatchHub``), so an update carrying
  a stale one is a 409 Conflict and a watch can resume from one (or is told 410 Gone);
* watches as Kubernetes streams them, with BOOKMARK events when asked;
* PATCH in the three content types kubectl sends (``api.kube.patch``), ``dryRun=All``,
  ``fieldManager`` (accepted, not tracked);
* the subresources kubectl uses: status, scale, log, eviction.

Errors are Kubernetes ``Status`` objects with Kubernetes' reasons (the server's middleware
turns an :class:`ApiProblem` into one).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from p2pkube.api.kube.metrics import MetricsReader
from p2pkube.api.kube.patch import APPLY_PATCH, apply_patch
from p2pkube.api.kube.paths import Target, parse_path
from p2pkube.api.kube.protobuf import CONTENT_TYPE as PROTOBUF
from p2pkube.api.kube.protobuf import UnknownKindError, decode_body, is_protobuf
from p2pkube.api.kube.resources import METRICS_GROUP, KubeResource
from p2pkube.api.kube.shape import shaped
from p2pkube.api.kube.tables import accepts_table, include_object, table_of
from p2pkube.api.query import client_gone, flag, watch_seconds
from p2pkube.api.status import ApiProblem, status_body
from p2pkube.api.warningheader import HEADER as WARNING_HEADER
from p2pkube.api.warningheader import warning_header
from p2pkube.model.selectors import (
    FieldRequirement,
    match_fields,
    match_labels,
    parse_field_selector,
    parse_selector,
)
from p2pkube.model.watch import ResourceVersionTooOld, Watch
from p2pkube.state.store import object_key

if TYPE_CHECKING:
    from p2pkube.api.server import ApiServer

log = logging.getLogger(__name__)

__all__ = ["KubeApi"]

_BODY_TYPES = frozenset({"application/json", "application/yaml", ""})
"""Media types of object bodies besides protobuf (create, replace); PATCH has its own."""

_GENERATED_SUFFIX = 5
"""Random characters after a ``generateName`` prefix, as Kubernetes appends."""


def _conflict(resource: KubeResource, name: str) -> ApiProblem:
    return ApiProblem(
        409,
        f'Operation cannot be fulfilled on {resource.plural} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        reason="Conflict",
    )


def _not_found(resource: KubeResource, name: str) -> ApiProblem:
    return ApiProblem(404, f'{resource.plural} "{name}" not found')


class KubeApi:
    """The Kubernetes face of one :class:`~p2pkube.api.server.ApiServer` (see the module
    docstring); mount :meth:`routes` after the routes that serve fixed Kubernetes paths
    (discovery, proxies)."""

    def __init__(self, server: ApiServer, bookmark_seconds: float) -> None:
        """``bookmark_seconds``: ``kubeapi.bookmark_seconds``."""
        self.server = server
        self.backend = server.backend
        self.bookmark_seconds = bookmark_seconds
        self.metrics = MetricsReader(server.backend)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route("*", "/api/{path:.+}", self._dispatch),
            web.route("*", "/apis/{path:.+}", self._dispatch),
        ]

    # --- dispatch --------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        target = parse_path(request.path)
        if target is None:
            raise ApiProblem(
                404, f"the server could not find the requested resource ({request.path})"
            )
        method = request.method
        if target.resource.group == METRICS_GROUP:
            return await self._metrics(request, target)
        if target.name is None:
            if method == "GET":
                if target.watch or flag(request, "watch"):
                    return await self._watch(request, target)
                return self._list(request, target)
            if method == "POST":
                return await self._create(request, target)
            if method == "DELETE":
                return await self._delete_collection(request, target)
        elif target.subresource is None:
            if method == "GET":
                if target.watch:
                    return await self._watch(request, target)
                return self._json(request, target, self._read(target))
            if method == "PUT":
                return await self._replace(request, target)
            if method == "PATCH":
                return await self._patch(request, target)
            if method == "DELETE":
                return await self._delete(request, target)
        else:
            return await self._subresource(request, target)
        raise ApiProblem(405, f"{method} is not supported on {request.path}")

    async def _subresource(self, request: web.Request, target: Target) -> web.StreamResponse:
        sub, method = target.subresource, request.method
        if sub == "status":
            if method == "GET":
                return self._json(request, target, self._read(target))
            if method in ("PUT", "PATCH"):
                return await self._write_status(request, target)
        if sub == "scale":
            if method == "GET":
                return web.json_response(self._scale_of(target.resource, self._read(target)))
            if method in ("PUT", "PATCH"):
                return await self._write_scale(request, target)
        if sub == "log" and method == "GET":
            assert target.namespace is not None and target.name is not None
            return await self.server.pod_log(request, target.namespace, target.name)
        if sub == "eviction" and method == "POST":
            return await self._evict(request, target)
        raise ApiProblem(
            405, f"{method} is not supported on the {sub} subresource of {target.resource.plural}"
        )

    # --- reads -------------------------------------------------------------------------------

    def _key(self, resource: KubeResource, obj: dict[str, Any]) -> str:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "" if resource.namespaced else ""
        return object_key(resource.kind, namespace, str(meta.get("name", "")))

    def _shown(self, resource: KubeResource, obj: dict[str, Any]) -> dict[str, Any]:
        """``obj`` as the API shows it: its resourceVersion on this node, its apiVersion."""
        meta = dict(obj.get("metadata") or {})
        meta["resourceVersion"] = str(self.backend.revision(self._key(resource, obj)))
        shown = {**obj, "apiVersion": resource.api_version, "kind": resource.kind, "metadata": meta}
        return shaped(resource.api_version, resource.kind, shown)

    def _find(self, target: Target) -> dict[str, Any] | None:
        resource, name = target.resource, target.name or ""
        if resource.kind == "Node":  # with its Ready condition, as the node sees it
            return self.server.find_node(name)
        return self.backend.get_object(resource.kind, target.namespace or "", name)

    def _read(self, target: Target) -> dict[str, Any]:
        found = self._find(target)
        if found is None:
            raise _not_found(target.resource, target.name or "")
        return self._shown(target.resource, found)

    def _items(self, request: web.Request, target: Target) -> list[dict[str, Any]]:
        resource = target.resource
        if resource.kind == "Node":
            found = self.backend.list_nodes()
        else:
            found = self.backend.list_objects(resource.kind, target.namespace)
        matches = _selection(request)
        return [self._shown(resource, o) for o in found if matches(o)]

    def _list(self, request: web.Request, target: Target) -> web.Response:
        return self._listing(
            request, target, self._items(request, target), str(self.backend.revision())
        )

    def _listing(
        self, request: web.Request, target: Target, items: list[dict[str, Any]], revision: str
    ) -> web.Response:
        """A list of ``items`` (as read at ``revision``), or its Table when asked."""
        resource = target.resource
        if accepts_table(request.headers.get("Accept", "")):
            table = table_of(resource, items, resource_version=revision, include=_include(request))
            return web.json_response(table)
        return web.json_response(
            {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": revision},
                "items": items,
            }
        )

    def _json(
        self, request: web.Request, target: Target, obj: dict[str, Any], status: int = 200
    ) -> web.Response:
        """One object, or its one-row Table when asked (``kubectl get pod NAME``)."""
        if accepts_table(request.headers.get("Accept", "")):
            revision = obj.get("metadata", {}).get("resourceVersion", "")
            table = table_of(
                target.resource, [obj], resource_version=revision, include=_include(request)
            )
            return web.json_response(table, status=status)
        return web.json_response(obj, status=status)

    async def _metrics(self, request: web.Request, target: Target) -> web.Response:
        """``metrics.k8s.io``: measured usage, read-only (``api/kube/metrics.py``)."""
        if request.method not in ("GET", "HEAD") or target.subresource is not None:
            raise ApiProblem(405, f"{request.method} is not supported on {request.path}")
        if target.watch or flag(request, "watch"):
            raise ApiProblem(405, f"{target.resource.plural}.{METRICS_GROUP} cannot be watched")
        readings = await self.metrics.read(target, _selection(request, only=target.name))
        if target.name is None:
            response = self._listing(request, target, readings.items, "")
        elif readings.items:
            response = self._json(request, target, readings.items[0])
        else:
            kind = target.resource.kind.lower()
            raise ApiProblem(404, f'{kind}.{METRICS_GROUP} "{target.name}" not found')
        for warning in readings.warnings:
            response.headers.add(WARNING_HEADER, warning_header(warning))
        return response

    # --- writes ------------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        """The request's object, in JSON, YAML or Kubernetes' protobuf (which kubectl's typed
        commands send: ``create configmap``...); anything else is a 415."""
        content_type = request.headers.get("Content-Type", "application/json")
        media_type = content_type.split(";")[0].strip().lower()
        protobuf = is_protobuf(content_type)
        if media_type not in _BODY_TYPES and not protobuf:
            raise ApiProblem(
                415,
                "the body of the request was in an unknown format - accepted media types "
                f"include: application/json, application/yaml, {PROTOBUF}",
            )
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiProblem(413, "the request body is too large") from None
        try:
            if protobuf:
                body = decode_body(raw)
            elif media_type == "application/yaml":
                body = yaml.safe_load(raw)
            else:
                body = json.loads(raw)
        except UnknownKindError as exc:
            raise ApiProblem(415, str(exc)) from None
        except (ValueError, yaml.YAMLError) as exc:  # ProtobufError is a ValueError
            raise ApiProblem(400, f"the request body cannot be decoded: {exc}") from None
        if not isinstance(body, dict):
            raise ApiProblem(400, "the request body must be an object")
        return body

    def _checked(self, target: Target, obj: dict[str, Any]) -> dict[str, Any]:
        """``obj`` with the path's namespace, refusing a kind or a namespace that contradicts
        the path (Kubernetes' messages)."""
        resource = target.resource
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind not in (None, resource.kind):
            raise ApiProblem(
                400, f"the kind of the object ({kind}) does not match the path ({resource.kind})"
            )
        if api_version not in (None, resource.api_version, "p2pkube.io/v1"):
            raise ApiProblem(
                400,
                f"the API version of the object ({api_version}) does not match the path "
                f"({resource.api_version})",
            )
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise ApiProblem(400, "the object has no metadata")
        meta = dict(meta)
        if resource.namespaced:
            given = meta.get("namespace")
            if given and given != target.namespace:
                raise ApiProblem(
                    400,
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            meta["namespace"] = target.namespace
        if not meta.get("name") and meta.get("generateName"):
            alphabet = string.ascii_lowercase + string.digits
            suffix = "".join(secrets.choice(alphabet) for _ in range(_GENERATED_SUFFIX))
            meta["name"] = f"{meta['generateName']}{suffix}"
        if target.name is not None and meta.get("name") != target.name:
            raise ApiProblem(
                400,
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({target.name})",
            )
        return {**obj, "kind": resource.kind, "apiVersion": resource.api_version, "metadata": meta}

    async def _store(
        self, request: web.Request, target: Target, obj: dict[str, Any], *, create: bool
    ) -> web.Response:
        warnings: list[str] = []
        stored = await self.server.store(
            obj, create_only=create, warn=warnings.append, dry_run=_dry_run(request)
        )
        shown = self._shown(target.resource, stored)
        response = self._json(request, target, shown, 201 if create else 200)
        for warning in warnings:
            response.headers.add(WARNING_HEADER, warning_header(warning))
        return response

    async def _create(self, request: web.Request, target: Target) -> web.Response:
        obj = self._checked(target, await self._body(request))
        return await self._store(request, target, obj, create=True)

    def _check_version(self, target: Target, obj: dict[str, Any], current: dict[str, Any]) -> None:
        """409 Conflict when ``obj`` was read at another resourceVersion than ``current``'s."""
        given = (obj.get("metadata") or {}).get("resourceVersion")
        if given and given != current["metadata"]["resourceVersion"]:
            raise _conflict(target.resource, target.name or "")

    async def _replace(self, request: web.Request, target: Target) -> web.Response:
        obj = self._checked(target, await self._body(request))
        current = self._read(target)
        self._check_version(target, obj, current)
        return await self._store(request, target, obj, create=False)

    async def _patch(self, request: web.Request, target: Target) -> web.Response:
        raw = await request.read()
        found = self._find(target)
        if found is None and not request.headers.get("Content-Type", "").startswith(APPLY_PATCH):
            raise _not_found(target.resource, target.name or "")
        # Server-side apply creates what does not exist yet: it applies onto an empty object.
        current = (
            self._shown(target.resource, found)
            if found is not None
            else {
                "apiVersion": target.resource.api_version,
                "kind": target.resource.kind,
                "metadata": {
                    "name": target.name,
                    **({"namespace": target.namespace} if target.namespace else {}),
                },
            }
        )
        patched = self._patched(current, raw, request)
        obj = self._checked(target, patched)
        if found is not None:
            self._check_version(target, patched, current)
        return await self._store(request, target, obj, create=found is None)

    async def _delete(self, request: web.Request, target: Target) -> web.Response:
        current = self._read(target)
        await self._delete_one(request, target.resource, current)
        return self._json(request, target, current)

    async def _delete_one(
        self, request: web.Request, resource: KubeResource, current: dict[str, Any]
    ) -> None:
        options = await self._delete_options(request)
        if options.get("dryRun") or _dry_run(request):
            return
        if resource.kind == "Node":
            raise ApiProblem(
                405, "a node leaves the cluster when its agent stops; it cannot be deleted"
            )
        meta = current["metadata"]
        force = str(options.get("gracePeriodSeconds")) == "0"
        async with asyncio.timeout(self.server.write_timeout):
            await self.backend.delete_object(
                resource.kind, meta.get("namespace") or "", meta["name"], force=force
            )

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        """The DeleteOptions, from the body (kubectl) or the query (other clients)."""
        body = await self._body(request) if request.can_read_body else {}
        body = {**request.query, **body}
        if body.get("propagationPolicy") == "Orphan" or str(body.get("orphanDependents")) in (
            "True",
            "true",
        ):
            raise ApiProblem(
                422, "propagationPolicy Orphan is not supported: owned objects are always deleted"
            )
        return body

    async def _delete_collection(self, request: web.Request, target: Target) -> web.Response:
        items = self._items(request, target)
        for obj in items:
            await self._delete_one(request, target.resource, obj)
        return web.json_response(
            {
                "kind": f"{target.resource.kind}List",
                "apiVersion": target.resource.api_version,
                "metadata": {"resourceVersion": str(self.backend.revision())},
                "items": items,
            }
        )

    # --- subresources ------------------------------------------------------------------------

    def _scale_of(self, resource: KubeResource, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
            },
        }

    async def _write_scale(self, request: web.Request, target: Target) -> web.Response:
        current = self._read(target)
        scale = self._scale_of(target.resource, current)
        if request.method == "PUT":
            wanted = await self._body(request)
        else:
            wanted = self._patched(scale, await request.read(), request)
        self._check_version(target, wanted, current)
        replicas = (wanted.get("spec") or {}).get("replicas")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ApiProblem(
                422,
                f'Scale.autoscaling "{target.name}" is invalid: spec.replicas: Invalid value: '
                f"{replicas!r}: must be greater than or equal to 0",
                causes=["spec.replicas: must be greater than or equal to 0"],
            )
        spec = {**(current.get("spec") or {}), "replicas": replicas}
        stored = await self.server.store(
            {**current, "spec": spec}, create_only=False, warn=None, dry_run=_dry_run(request)
        )
        return web.json_response(
            self._scale_of(target.resource, self._shown(target.resource, stored))
        )

    async def _write_status(self, request: web.Request, target: Target) -> web.Response:
        """PUT or PATCH of ``.../status``: only the status changes, as in Kubernetes (the rest
        of the body is ignored)."""
        current = self._read(target)
        if request.method == "PUT":
            wanted = self._checked(target, await self._body(request))
        else:
            wanted = self._patched(current, await request.read(), request)
        self._check_version(target, wanted, current)
        status = wanted.get("status")
        if not isinstance(status, dict):
            raise ApiProblem(
                422, f'{target.resource.plural} "{target.name}": status must be an object'
            )
        meta = current["metadata"]
        try:
            async with asyncio.timeout(self.server.write_timeout):
                stored = await self.backend.put_status(
                    target.resource.kind,
                    meta.get("namespace") or "",
                    meta["name"],
                    status,
                    dry_run=_dry_run(request),
                )
        except LookupError:
            raise _not_found(target.resource, target.name or "") from None
        return self._json(request, target, self._shown(target.resource, stored))

    def _patched(self, current: dict[str, Any], raw: bytes, request: web.Request) -> dict[str, Any]:
        """``current`` with the request's patch applied (PatchError, a Status, when it cannot
        be: the content type decides how, as on an API server)."""
        return apply_patch(current, raw, request.headers.get("Content-Type", ""))

    async def _evict(self, request: web.Request, target: Target) -> web.Response:
        """``pods/NAME/eviction`` (kubectl drain): a graceful delete of the pod. p2pkube has
        no PodDisruptionBudgets, so an eviction is never refused for one."""
        current = self._read(target)
        # The body is an Eviction naming the pod the path names (kubectl sends it as
        # protobuf); without PodDisruptionBudgets nothing in it changes the answer.
        await request.read()
        if not _dry_run(request):
            meta = current["metadata"]
            async with asyncio.timeout(self.server.write_timeout):
                await self.backend.delete_object("Pod", meta["namespace"], meta["name"])
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            status=201,
        )

    # --- watches -----------------------------------------------------------------------------

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        """A Kubernetes watch: from ``resourceVersion`` (or the current objects first when it
        is absent or "0"), BOOKMARKs when ``allowWatchBookmarks``, 410 Gone as an ERROR event
        when the revision is older than this node remembers, as a watch cache answers."""
        resource = target.resource
        namespace = target.namespace if resource.namespaced else ""
        matches = _selection(request, only=target.name)
        since = _resource_version(request)
        seconds = watch_seconds(request)
        table = accepts_table(request.headers.get("Accept", ""))
        include = _include(request)
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "no-store"}
        )
        response.enable_chunked_encoding()
        try:
            watch = self.backend.watch(
                resource.kind,
                namespace,
                match=matches,
                timeout=seconds,
                since=since,
                gone=lambda key: _identity(resource, key),
            )
        except ResourceVersionTooOld as exc:
            await response.prepare(request)
            await self._send(response, [_error_event(410, "Expired", str(exc))])
            await response.write_eof()
            return response
        self.server.watch_opened(watch)
        first_table = True

        def shown(event: dict[str, Any]) -> dict[str, Any]:
            nonlocal first_table
            obj = self._shown(resource, event["object"])
            if event["type"] == "DELETED":
                obj["metadata"]["resourceVersion"] = str(self.backend.revision())
            if table:
                obj = table_of(
                    resource,
                    [obj],
                    resource_version=obj["metadata"]["resourceVersion"],
                    include=include,
                    with_definitions=first_table,
                )
                first_table = False
            return {"type": event["type"], "object": obj}

        try:
            await self._stream(request, response, watch, resource, shown)
        finally:
            watch.close()
            self.server.watch_closed(watch)
        return response

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        watch: Watch,
        resource: KubeResource,
        shown: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        bookmarks = flag(request, "allowWatchBookmarks")
        initial_end = flag(request, "sendInitialEvents")
        loop = asyncio.get_running_loop()
        next_bookmark = loop.time() + self.bookmark_seconds
        try:
            async with asyncio.timeout(self.server.write_timeout):
                await response.prepare(request)
            if initial_end and bookmarks:
                await self._send(response, [shown(e) for e in watch.ready_events() if e])
                await self._send(response, [self._bookmark(resource, initial_end=True)])
            while True:
                wait = min(self.server.watch_poll_interval, max(0.0, next_bookmark - loop.time()))
                try:
                    async with asyncio.timeout(wait):
                        first = await watch.get()
                except TimeoutError:
                    if client_gone(request):
                        return
                    if bookmarks and loop.time() >= next_bookmark:
                        await self._send(response, [self._bookmark(resource)])
                        next_bookmark = loop.time() + self.bookmark_seconds
                    continue
                events = [first, *watch.ready_events()]
                await self._send(response, [shown(e) for e in events if e is not None])
                if None in events:
                    if watch.error is not None:
                        await self._send(response, [{"type": "ERROR", "object": watch.error}])
                    async with asyncio.timeout(self.server.write_timeout):
                        await response.write_eof()
                    return
        except (ConnectionError, TimeoutError) as exc:
            log.debug("watch on %s ended: %r", request.path, exc)

    def _bookmark(self, resource: KubeResource, *, initial_end: bool = False) -> dict[str, Any]:
        """A BOOKMARK: every change up to this revision has been sent (only sent when the
        watch's queue is empty, so the claim holds)."""
        meta: dict[str, Any] = {"resourceVersion": str(self.backend.revision())}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": meta},
        }

    async def _send(self, response: web.StreamResponse, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        payload = b"".join(
            json.dumps(event, separators=(",", ":")).encode() + b"\n" for event in events
        )
        async with asyncio.timeout(self.server.write_timeout):
            await response.write(payload)


def _identity(resource: KubeResource, key: str) -> dict[str, Any]:
    """What a DELETED event of a resumed watch shows: the object's kind and name only."""
    _, namespace, name = key.split("/", 2)
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": meta}


def _error_event(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"type": "ERROR", "object": status_body(code, message, reason)}


def _selection(request: web.Request, only: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """The request's label and field selectors as one predicate (400 when malformed);
    ``only`` narrows it to one name (the ``/watch/.../NAME`` form)."""
    try:
        labels = parse_selector(request.query.get("labelSelector", ""))
        fields = parse_field_selector(request.query.get("fieldSelector", ""))
    except ValueError as exc:
        raise ApiProblem(400, str(exc)) from None
    if only is not None:
        fields = (*fields, FieldRequirement("metadata.name", True, only))
    return lambda obj: (
        match_labels(labels, (obj.get("metadata") or {}).get("labels"))
        and match_fields(fields, obj)
    )


def _dry_run(request: web.Request) -> bool:
    """``dryRun=All`` (the one value Kubernetes defines); anything else is refused."""
    values = request.query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise ApiProblem(400, f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return bool(values)


def _include(request: web.Request) -> str:
    try:
        return include_object(request.query.get("includeObject"))
    except ValueError as exc:
        raise ApiProblem(400, str(exc)) from None


def _resource_version(request: web.Request) -> int | None:
    """A watch's starting revision; None for "" and "0" (start with the current objects)."""
    raw = request.query.get("resourceVersion", "")
    if raw in ("", "0"):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiProblem(400, f"invalid resource version: {raw!r}") from None
