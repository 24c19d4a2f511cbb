"""The agent's local HTTP API, served on loopback for the ``p2pkube`` CLI.

Why a local HTTP API at all: the agent is a long-running asyncio process holding the CRDT
document and the WebRTC mesh; the CLI is a short-lived process. A small JSON API on 127.0.0.1
keeps the two apart (kubectl talks to an API server the same way) and lets tests and scripts
use curl.

Security model: loopback only, plus a bearer token regenerated on every start and written to
``<data_dir>/api.token`` with mode 0600, so only the user who owns the data dir can drive the
agent. Discovery: ``<data_dir>/api.json`` names the URL, pid and node, and is removed on stop.

Errors are Kubernetes ``Status`` objects, never stack traces, so the CLI can print them the way
kubectl does (``Error from server (NotFound): ...``; see ``api.status``).

Blobs (pod modules) have their own endpoints under ``/v1/blobs`` (``api.blobroutes``).

``GET /v1/watch/{kind}`` (or ``/v1/watch/KindA,KindB``: several kinds in one stream) streams
newline-delimited JSON events the way a Kubernetes watch does
(``{"type": "ADDED"|"MODIFIED"|"DELETED"|"ERROR", "object": {...}}``): the current objects first,
then every change as the agent applies it. A watch ends when its ``timeoutSeconds`` pass, when
the client goes away, when the agent stops, or with an ERROR event when the client reads too
slowly (its bounded queue overflowed).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from p2pkube.api import EMPTY_NAMESPACE, INFO_FILE, TOKEN_FILE
from p2pkube.api.backend import AgentBackend
from p2pkube.api.blobroutes import BlobBackend, BlobRoutes, blob_problem
from p2pkube.api.dashboardroutes import DashboardFiles
from p2pkube.api.frontdoor import ServiceOpener
from p2pkube.api.kube.httpbridge import EndpointTable, router_check, service_port_server
from p2pkube.api.kube.portforward import PortForwarder, PortForwardSettings
from p2pkube.api.kube.settings import KubeApiSettings
from p2pkube.api.kube.spdy import SpdySettings
from p2pkube.api.kube.tls import server_context
from p2pkube.api.proxyroutes import proxy_routes
from p2pkube.api.query import client_gone, flag, watch_seconds
from p2pkube.api.status import ApiProblem, list_of, problem_response
from p2pkube.api.warningheader import HEADER as WARNING_HEADER
from p2pkube.api.warningheader import warning_header
from p2pkube.blobs.errors import BlobError
from p2pkube.fsutil import write_file_atomically
from p2pkube.model.apiversions import CLUSTER_SCOPED_KINDS
from p2pkube.model.errors import ObjectRefused, ValidationFailed
from p2pkube.model.selectors import Requirement, match_labels, parse_selector
from p2pkube.model.watch import Watch
from p2pkube.runtime.interface import LogLine
from p2pkube.runtime.logs import timestamp_ns
from p2pkube.runtime.podlogs import LogRequest
from p2pkube.services.settings import ServiceSettings

log = logging.getLogger(__name__)

OMITTED_HEADER = "X-P2pkube-Omitted-Lines"
"""Set on a log answer that left out older lines (its size is bounded): how many."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PER_NODE_FIELDS = frozenset({"resourceVersion", "managedFields", "selfLink"})
"""Metadata a client reads and sends back that is never stored (see ``ApiServer.store``)."""

KUBE_PREFIXES = ("/version", "/api", "/apis", "/openapi/v3")
"""Where the Kubernetes API face answers (``ApiServer._kube``), after the routes of this API
and of the Services that share those prefixes (proxy, port-forward)."""

MAX_STALL_SECONDS = 30.0
"""Longest event-loop block ``POST /v1/debug/stall`` makes: enough for any stall a test
needs (Lifeguard's are seconds), short of one that looks like a hung agent to its user."""

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Default largest JSON body of an object write, refused (413, naming both sizes) before it
is parsed. Above the object cap on purpose: ``state.max_object_bytes`` (1 MiB by default) is
checked on the stored encoding and answers 422 with the exact size; JSON (escapes) can be
larger than that encoding. The native agent uses the larger of this and four times
``state.max_object_bytes``, so raising the cap raises this limit too."""


def resource_name(kind: str) -> str:
    """Lower-case plural used in messages (``ConfigMap`` -> ``configmaps``), as kubectl says it."""
    lower = kind.lower()
    if lower == "endpoints":  # Kubernetes' one kind named in the plural
        return lower
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u"):
        return lower[:-1] + "ies"
    return lower + "s"


def _remove_info_if_ours(path: Path, url: str) -> None:
    """Remove api.json unless another agent has since claimed this data dir."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(info, dict) and info.get("url") == url and info.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


class ApiServer:
    """Serves the local API for one agent on loopback (see the module docstring)."""

    def __init__(
        self,
        backend: AgentBackend,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        write_timeout: float = 30.0,
        shutdown_timeout: float = 2.0,
        watch_poll_interval: float = 2.0,
        blobs: BlobBackend | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        services: ServiceOpener | None = None,
        service_settings: ServiceSettings | None = None,
        kube_port: int | None = 0,
        kube_settings: KubeApiSettings | None = None,
    ) -> None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            # The token is the only protection; never expose it beyond this machine.
            raise ValueError(f"the local API serves on a loopback address only, not {host!r}")
        self.backend = backend
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.write_timeout = write_timeout
        self.shutdown_timeout = shutdown_timeout
        self.watch_poll_interval = watch_poll_interval
        """How often an idle watch checks that its client is still connected (aiohttp does not
        cancel a handler whose client left, and an idle stream writes nothing that could fail)."""
        self.blobs = blobs
        """The blob endpoints answer 404 without it (e.g. an API server in tests)."""
        self._blob_routes = BlobRoutes(blobs, write_timeout)
        self.max_body_bytes = max_body_bytes
        """Largest object body read (blob uploads are streamed and have their own cap)."""
        self.services = services
        """The router behind ``/api/v1/namespaces/NS/services|pods/NAME/proxy/PATH``
        (``api.proxyroutes``); those paths answer 404 without it."""
        self.service_settings = service_settings or ServiceSettings()
        self.kube_port = kube_port
        """Where the Kubernetes API (the same app, over HTTPS: ``api.kube.tls``) listens;
        0 picks a free port, None serves none."""
        self.kube_settings = kube_settings or KubeApiSettings()
        self._kube_router: web.UrlDispatcher | None = None
        """The API face's routes, made at the first Kubernetes request (``_kube``)."""
        self._kube_lock = asyncio.Lock()
        self.kube_url: str | None = None
        """``https://127.0.0.1:PORT`` once started (None without a Kubernetes API)."""
        self.published: dict[str, Any] = {}
        """More entries for api.json, set before start (the agent's ``metricsUrl``)."""
        self._watches: set[Watch] = set()
        self._dashboard_files = DashboardFiles()
        self._forwarder: PortForwarder | None = None
        self._token = ""
        self._url: str | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` once started."""
        if self._url is None:
            raise RuntimeError("ApiServer is not started")
        return self._url

    @property
    def token(self) -> str:
        """The bearer token of this run (also in ``<data_dir>/api.token``)."""
        return self._token

    async def start(self) -> None:
        """Listen, then publish api.token and api.json for the CLI to find us."""
        if self._runner is not None:
            raise RuntimeError("ApiServer already started")
        self._token = secrets.token_urlsafe(32)
        limits = self.service_settings  # the proxy routes take what a NodePort takes
        runner = web.AppRunner(
            self._make_app(),
            access_log=None,
            shutdown_timeout=self.shutdown_timeout,
            max_line_size=limits.max_request_header_bytes,
            max_field_size=limits.max_request_header_bytes,
            max_headers=limits.max_request_headers,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            port = runner.addresses[0][1]
            host = f"[{self.host}]" if ":" in self.host else self.host
            self._url = f"http://{host}:{port}"
            self.port = port
            info: dict[str, Any] = {
                "url": self._url,
                "pid": os.getpid(),
                "node": self.backend.node_name,
                **self.published,
            }
            if self.kube_port is not None:
                async with asyncio.timeout(10):
                    context = await asyncio.to_thread(server_context, self.data_dir, self.host)
                kube_site = web.TCPSite(runner, self.host, self.kube_port, ssl_context=context)
                before = set(runner.addresses)
                await kube_site.start()
                (kube_address,) = [a for a in runner.addresses if a not in before]
                self.kube_port = kube_address[1]
                self.kube_url = info["kubeUrl"] = f"https://{host}:{self.kube_port}"
            async with asyncio.timeout(10):
                await asyncio.to_thread(self._publish, info)
        except BaseException:
            self._url = None
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("local API listening on %s (data dir %s)", self._url, self.data_dir)
        if self.kube_url is not None:
            log.info("Kubernetes API listening on %s (p2pkube kubeconfig)", self.kube_url)

    def _publish(self, info: dict[str, Any]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Token first: whoever sees api.json must be able to read a matching token.
        write_file_atomically(self.data_dir / TOKEN_FILE, self._token.encode() + b"\n")
        write_file_atomically(
            self.data_dir / INFO_FILE, json.dumps(info, indent=2).encode() + b"\n"
        )

    async def stop(self) -> None:
        """Stop serving and withdraw api.json so the CLI says "no agent" instead of hanging."""
        runner, url = self._runner, self._url
        if runner is None or url is None:
            return
        self._runner = None
        for watch in list(self._watches):
            watch.close()  # their handlers finish the streams; cleanup need not wait them out
        if self._forwarder is not None:
            async with asyncio.timeout(self.shutdown_timeout + 5):
                await self._forwarder.close()
        try:
            async with asyncio.timeout(10):
                await asyncio.to_thread(_remove_info_if_ours, self.data_dir / INFO_FILE, url)
        finally:
            async with asyncio.timeout(self.shutdown_timeout + 5):
                await runner.cleanup()
            self._url = None

    # --- HTTP plumbing ---------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=self.max_body_bytes)
        app.add_routes(
            [
                web.get("/v1/nodes", self._list_nodes),
                web.get("/v1/nodes/{name}", self._get_node),
                web.get("/v1/objects/{kind}", self._list_objects),
                web.get("/v1/objects/{kind}/{namespace}/{name}", self._get_object),
                web.put("/v1/objects", self._put_object),
                web.post("/v1/objects", self._create_object),
                web.delete("/v1/objects/{kind}/{namespace}/{name}", self._delete_object),
                web.get("/v1/watch/{kind}", self._watch),
                web.get("/v1/status", self._status),
                web.get("/v1/dashboard", self._dashboard),
                *self._dashboard_files.routes(),
                *self._blob_routes.routes(),
                web.get("/v1/pods/{namespace}/{name}/log", self._pod_log),
                web.put("/v1/debug/partition", self._partition),
                web.post("/v1/debug/stall", self._stall),
            ]
        )
        if self.services is not None:
            app.add_routes(proxy_routes(self.services, self.service_settings))
            app.add_routes(self._port_forwarding(self.services).routes())
        app.add_routes(
            route
            for prefix in KUBE_PREFIXES
            for route in (
                web.route("*", prefix, self._kube),
                web.route("*", prefix + "/{tail:.*}", self._kube),
            )
        )
        return app

    async def _kube(self, request: web.Request) -> web.StreamResponse:
        """Kubernetes' paths, answered by the API face (``api/kube/``: discovery, OpenAPI, the
        objects), which is loaded at the first such request: an agent nobody points kubectl
        at never imports it (about 3 MB of memory and 0.3 CPU-s of every agent's start)."""
        async with self._kube_lock:
            if self._kube_router is None:
                self._kube_router = await asyncio.to_thread(self._load_kube_face)
        match = await self._kube_router.resolve(request)
        if match.http_exception is not None:
            raise match.http_exception
        return await match.handler(request)

    def _load_kube_face(self) -> web.UrlDispatcher:
        """The face's routes (a worker thread: importing is blocking work). Its fixed paths
        (discovery, OpenAPI) come before the object routes' catch-alls."""
        from p2pkube.api.kube.discovery import discovery_routes
        from p2pkube.api.kube.face import KubeApi
        from p2pkube.api.kube.openapi import openapi_routes

        router = web.UrlDispatcher()
        router.add_routes([*discovery_routes(), *openapi_routes()])
        router.add_routes(KubeApi(self, self.kube_settings.bookmark_seconds).routes())
        return router

    def _port_forwarding(self, services: ServiceOpener) -> PortForwarder:
        """``pods/NAME/portforward`` (kubectl port-forward pod/NAME or svc/NAME): HTTP on each
        forwarded connection, to the pod's handler through the Services path."""
        check = (
            router_check(cast(EndpointTable, services)) if hasattr(services, "endpoints") else None
        )
        kube = self.kube_settings
        spdy = SpdySettings(
            idle_timeout=kube.port_forward_idle_timeout,
            stall_timeout=kube.port_forward_stall_timeout,
            write_timeout=kube.port_forward_write_timeout,
            max_streams=kube.port_forward_max_streams,
        )
        self._forwarder = PortForwarder(
            service_port_server(services, self.service_settings, check=check),
            check_pod=self._pod_missing,
            settings=PortForwardSettings(
                spdy=spdy, stream_pair_timeout=kube.port_forward_stream_pair_timeout
            ),
        )
        return self._forwarder

    async def _pod_missing(self, namespace: str, name: str) -> str | None:
        if self.backend.get_object("Pod", namespace, name) is None:
            return f'pods "{name}" not found'
        return None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Authenticate every request and turn every failure into a Status object.

        Auth runs before routing errors surface, so unauthenticated callers learn nothing,
        not even which paths exist. The dashboard's page is public code: its files (never
        any data) are served without the token (``api.dashboardroutes``).
        """
        if not self._authorized(request) and not DashboardFiles.is_public(request.path):
            return problem_response(
                401, "missing or invalid bearer token (read it from api.token in the data dir)"
            )
        try:
            return await handler(request)
        except ApiProblem as exc:
            return problem_response(exc.code, exc.message, exc.reason, exc.causes)
        except ObjectRefused as exc:
            return problem_response(exc.code, exc.message)
        except BlobError as exc:
            problem = blob_problem(exc)
            return problem_response(problem.code, problem.message, problem.reason)
        except web.HTTPException as exc:  # unknown path, wrong method, body too large
            return problem_response(exc.status, f"{exc.reason}: {request.method} {request.path}")
        except TimeoutError:
            return problem_response(504, "the agent did not finish the request in time")
        except Exception:
            log.exception("local API: %s %s failed", request.method, request.path)
            return problem_response(500, "internal error in the agent (see its log)")

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not self._token:
            return False
        return hmac.compare_digest(given.strip().encode(), self._token.encode())

    # --- handlers ----------------------------------------------------------------------------

    async def _list_nodes(self, request: web.Request) -> web.Response:
        selector = _selector(request)
        items = [n for n in self.backend.list_nodes() if _matches(selector, n)]
        return web.json_response(list_of("Node", items))

    async def _get_node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        node = self.find_node(name)
        if node is None:
            raise ApiProblem(404, f'nodes "{name}" not found')
        return web.json_response(node)

    def find_node(self, name: str) -> dict[str, Any] | None:
        """Node ``name`` with its Ready condition as this agent sees it (both APIs)."""
        return next(
            (n for n in self.backend.list_nodes() if n.get("metadata", {}).get("name") == name),
            None,
        )

    async def _list_objects(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        selector = _selector(request)
        namespace = request.query.get("namespace")
        if namespace == EMPTY_NAMESPACE:
            namespace = ""
        items = [
            o for o in self.backend.list_objects(kind, namespace or None) if _matches(selector, o)
        ]
        if namespace == "":  # cluster-scoped only: None would have meant "all namespaces"
            items = [o for o in items if not o.get("metadata", {}).get("namespace")]
        return web.json_response(list_of(kind, items))

    async def _get_object(self, request: web.Request) -> web.Response:
        kind, namespace, name = _key(request)
        if kind in CLUSTER_SCOPED_KINDS:
            namespace = ""  # as Kubernetes ignores one (apply -n gives every object one)
        obj = self.backend.get_object(kind, namespace, name)
        if obj is None:
            raise ApiProblem(404, f'{resource_name(kind)} "{name}" not found')
        return web.json_response(obj)

    async def _put_object(self, request: web.Request) -> web.Response:
        """Create or replace (kubectl apply semantics)."""
        body = await _body(request, self.max_body_bytes)
        return await self._store(body, create_only=False)

    async def _create_object(self, request: web.Request) -> web.Response:
        """Create only; 409 AlreadyExists otherwise (kubectl create semantics)."""
        return await self._store(await _body(request, self.max_body_bytes), create_only=True)

    async def _store(self, obj: dict[str, Any], *, create_only: bool) -> web.Response:
        """The stored object (201 when ``create_only``), with a ``Warning`` header per
        warning, as a Kubernetes API server sends them (kubectl prints each)."""
        warnings: list[str] = []
        stored = await self.store(obj, create_only=create_only, warn=warnings.append)
        response = web.json_response(stored, status=201 if create_only else 200)
        for warning in warnings:
            response.headers.add(WARNING_HEADER, warning_header(warning))
        return response

    async def store(
        self,
        obj: dict[str, Any],
        *,
        create_only: bool,
        warn: Callable[[str], None] | None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Validate and store ``obj`` (both APIs write through here): 409 AlreadyExists when
        ``create_only`` finds one, 422 Invalid with every problem as a cause. Fields that are
        the server's to fill per node (``resourceVersion``, ``managedFields``, ``selfLink``)
        are dropped: a client sends back what it read. ``dry_run`` writes nothing."""
        given = obj.get("metadata")
        if isinstance(given, dict) and _PER_NODE_FIELDS & given.keys():
            given = {k: v for k, v in given.items() if k not in _PER_NODE_FIELDS}
            obj = {**obj, "metadata": given}
        kind: str = obj["kind"]
        meta: dict[str, Any] = obj["metadata"]
        name: str = meta["name"]
        namespace = "" if kind in CLUSTER_SCOPED_KINDS else meta.get("namespace") or "default"
        if create_only and self.backend.get_object(kind, namespace, name) is not None:
            raise ApiProblem(409, f'{resource_name(kind)} "{name}" already exists')
        if kind == "Node" and self.backend.get_object(kind, "", name) is None:
            raise ApiProblem(404, f'nodes "{name}" not found')  # agents create Nodes
        # uid and creationTimestamp are the backend's to set (and to keep on replace).
        try:
            async with asyncio.timeout(self.write_timeout):
                return await self.backend.put_object(obj, warn, dry_run=dry_run)
        except ValidationFailed as exc:
            raise ApiProblem(
                422,
                f'{kind} "{name}" is invalid:\n' + "\n".join(f"* {e}" for e in exc.errors),
                causes=exc.errors,
            ) from None
        except ValueError as exc:
            raise ApiProblem(422, f'{resource_name(kind)} "{name}" is invalid: {exc}') from None

    async def _delete_object(self, request: web.Request) -> web.Response:
        kind, namespace, name = _key(request)
        force = flag(request, "force")
        async with asyncio.timeout(self.write_timeout):
            deleted = await self.backend.delete_object(kind, namespace, name, force=force)
        if not deleted:
            raise ApiProblem(404, f'{resource_name(kind)} "{name}" not found')
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": resource_name(kind)},
                "code": 200,
            }
        )

    async def _pod_log(self, request: web.Request) -> web.StreamResponse:
        return await self.pod_log(
            request, request.match_info["namespace"], request.match_info["name"]
        )

    async def pod_log(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        """A container's log as text, like ``kubectl logs`` (the parameters are those of
        Kubernetes' ``pods/log``); ``follow=true`` streams new lines until the container ends
        (or ``timeoutSeconds`` pass)."""
        since = request.query.get("sinceTime") or None
        since_seconds = _int_query(request, "sinceSeconds")
        if since is None and since_seconds is not None:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - since_seconds))
        log_request = LogRequest(
            namespace=namespace,
            name=name,
            container=request.query.get("container") or None,
            previous=flag(request, "previous"),
            tail=_int_query(request, "tailLines"),
            since=since,
        )
        timestamps = flag(request, "timestamps")
        follow = flag(request, "follow")
        if follow and log_request.previous:
            raise ApiProblem(400, "only the current container can be followed, not --previous")
        if log_request.since is not None:
            try:
                timestamp_ns(log_request.since)
            except ValueError as exc:
                raise ApiProblem(400, f"sinceTime: {exc}") from None

        def text(line: LogLine) -> bytes:
            return (f"{line.time} {line.text}\n" if timestamps else f"{line.text}\n").encode()

        try:
            if not follow:
                async with asyncio.timeout(self.write_timeout):
                    reply = await self.backend.read_logs(log_request)
                return web.Response(
                    body=b"".join(text(x) for x in reply.lines),
                    content_type="text/plain",
                    charset="utf-8",
                    headers={OMITTED_HEADER: str(reply.omitted)} if reply.omitted else None,
                )
            lines_iter = self.backend.follow_logs(log_request, watch_seconds(request))
            first = await anext(lines_iter, None)
        except LookupError as exc:
            raise ApiProblem(getattr(exc, "status", 404), str(exc).strip("'\"")) from None
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        try:
            if first is not None:
                await response.write(text(first))
                async for line in lines_iter:
                    async with asyncio.timeout(self.write_timeout):
                        await response.write(text(line))
            await response.write_eof()
        except (ConnectionError, TimeoutError, LookupError) as exc:
            log.debug("log stream %s ended: %r", request.path, exc)
        finally:
            await lines_iter.aclose()
        return response

    async def _partition(self, request: web.Request) -> web.Response:
        """Fault injection: ``{"nodes": [names]}`` cuts this agent off from those nodes (do it
        on both sides for a partition); ``{"nodes": []}`` heals."""
        try:
            body = await request.json()
        except ValueError:
            raise ApiProblem(400, "request body is not valid JSON") from None
        names = body.get("nodes") if isinstance(body, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ApiProblem(400, 'body must be {"nodes": ["name", ...]}')
        try:
            blocked = self.backend.block_nodes(names)
        except LookupError as exc:
            raise ApiProblem(422, str(exc).strip("'\"")) from None
        return web.json_response({"blocked": blocked})

    async def _stall(self, request: web.Request) -> web.Response:
        """Fault injection: ``{"seconds": S}`` blocks the agent's event loop for S seconds
        (0 < S <= ``MAX_STALL_SECONDS``), answered once it runs again with the seconds it
        was blocked: a starved agent, without signals, for the tests of Lifeguard."""
        try:
            body = await request.json()
        except ValueError:
            raise ApiProblem(400, "request body is not valid JSON") from None
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ApiProblem(400, 'body must be {"seconds": number}')
        if not 0 < seconds <= MAX_STALL_SECONDS:
            raise ApiProblem(422, f"seconds must be above 0 and at most {MAX_STALL_SECONDS:g}")
        return web.json_response({"stalledSeconds": round(self.backend.stall_loop(seconds), 3)})

    # The Kubernetes face's watches share this server's bookkeeping.
    def watch_opened(self, watch: Watch) -> None:
        """Track a watch another face opened, so :meth:`stop` ends it too."""
        self._watches.add(watch)

    def watch_closed(self, watch: Watch) -> None:
        self._watches.discard(watch)

    def open_watches(self) -> int:
        """Watches being streamed now, on either API."""
        return len(self._watches)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.backend.status())

    async def _dashboard(self, request: web.Request) -> web.Response:
        """What the dashboard polls besides its watches (``p2pkube.dashboard``)."""
        async with asyncio.timeout(self.write_timeout):
            return web.json_response(await self.backend.dashboard())

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        """Stream a watch as newline-delimited JSON until it ends (see the module docstring).

        Problems with the request itself are answered as a Status before streaming starts;
        once the 200 is sent, a problem can only end the stream.
        """
        kind = _watched_kinds(request.match_info["kind"])
        selector = _selector(request)
        namespace = request.query.get("namespace")
        if namespace == EMPTY_NAMESPACE:
            namespace = ""
        timeout = watch_seconds(request)
        watch = self.backend.watch(
            kind, namespace, match=lambda obj: _matches(selector, obj), timeout=timeout
        )
        self._watches.add(watch)
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "no-store"}
        )
        response.enable_chunked_encoding()
        try:
            await self._stream(request, response, watch)
        finally:
            watch.close()
            self._watches.discard(watch)
        return response

    async def _stream(
        self, request: web.Request, response: web.StreamResponse, watch: Watch
    ) -> None:
        """Send the headers, then events as they come, each burst in one write; return when the
        watch ends or the client is gone (a client leaving is normal, not an error)."""
        try:
            async with asyncio.timeout(self.write_timeout):
                await response.prepare(request)
            while True:
                try:
                    async with asyncio.timeout(self.watch_poll_interval):
                        first = await watch.get()
                except TimeoutError:
                    if client_gone(request):
                        return
                    continue
                events = [first, *watch.ready_events()]
                ended = None in events
                payload = b"".join(
                    json.dumps(event, separators=(",", ":")).encode() + b"\n"
                    for event in events
                    if event is not None
                )
                if payload:
                    # A client that stops reading blocks the write once the socket buffers
                    # fill; it gets as long as a write request does, then is dropped.
                    async with asyncio.timeout(self.write_timeout):
                        await response.write(payload)
                if ended:
                    async with asyncio.timeout(self.write_timeout):
                        await response.write_eof()
                    return
        except (ConnectionError, TimeoutError) as exc:
            log.debug("watch on %s ended: %r", request.path, exc)


MAX_WATCHED_KINDS = 16
"""Most kinds one ``/v1/watch/A,B,...`` streams (the dashboard watches eight)."""


def _watched_kinds(raw: str) -> str | tuple[str, ...]:
    """``Kind`` or ``KindA,KindB,...``: one watch for several kinds (a page has few
    connections per host to spend on streams)."""
    if "," not in raw:
        return raw
    kinds = tuple(dict.fromkeys(k for k in raw.split(",")))
    if "" in kinds or len(kinds) > MAX_WATCHED_KINDS:
        raise ApiProblem(400, f"watch 1 to {MAX_WATCHED_KINDS} kinds, comma-separated")
    return kinds


def _selector(request: web.Request) -> tuple[Requirement, ...]:
    try:
        return parse_selector(request.query.get("labelSelector", ""))
    except ValueError as exc:
        raise ApiProblem(400, str(exc)) from None


def _matches(selector: tuple[Requirement, ...], obj: dict[str, Any]) -> bool:
    return match_labels(selector, (obj.get("metadata") or {}).get("labels"))


def _int_query(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiProblem(400, f"{name} must be an integer, not {raw!r}") from None
    if value < 0:
        raise ApiProblem(400, f"{name} must not be negative")
    return value


def _key(request: web.Request) -> tuple[str, str, str]:
    namespace = request.match_info["namespace"]
    return (
        request.match_info["kind"],
        "" if namespace == EMPTY_NAMESPACE else namespace,
        request.match_info["name"],
    )


async def _body(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The request's object, checked just enough to build its key; the backend validates.
    ``max_bytes`` is the app's ``client_max_size``, named in the 413 answer."""
    try:
        obj = await request.json()
    except ValueError:
        raise ApiProblem(400, "request body is not valid JSON") from None
    except web.HTTPRequestEntityTooLarge:
        raise ApiProblem(
            413,
            f"the object is {request.content_length or 0:,} bytes of JSON, over the "
            f"{max_bytes:,} bytes this API reads (one object may be at most "
            "state.max_object_bytes encoded, 1 MiB by default)",
        ) from None
    if not isinstance(obj, dict):
        raise ApiProblem(400, "request body must be a JSON object")
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            raise ApiProblem(400, f"object has no {field}")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise ApiProblem(400, "object has no metadata")
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ApiProblem(400, "object has no metadata.name")
    if not isinstance(meta.get("namespace", ""), str):
        raise ApiProblem(400, "metadata.namespace must be a string")
    return obj
