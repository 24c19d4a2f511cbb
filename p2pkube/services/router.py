"""The router: a request for a Service (or a pod) to one ready endpoint, here or over the mesh.

Every node routes with its own view: the Service and the pods come from the replicated state,
the endpoints from ``services/endpoints.py``, and which nodes can be used from this node's own
failure detector and links. An endpoint whose node is NotReady, or that this node has no path
to (its link went and no route replaces it), drops out at once, before any timeout.

Choice (as Envoy and Linkerd balance): an endpoint on this node when ``services.prefer_local``
and there is one (no mesh hop), else the less loaded of two picked at random (power of two
choices on the requests this router has outstanding per endpoint), which spreads load without
herding on the momentarily least loaded one.

Retries: a request that failed before any response byte went back is tried on up to
``services.retry_attempts`` other endpoints when that is safe: it never reached a handler
(unreachable node, busy node, full queue), or its endpoint's node failed (lost, timed out)
and its method is idempotent. A handler's own verdict (its 502 or 504) is the answer, and a
response whose head went out is never retried. The whole request is bounded by
``services.request_deadline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2pkube.net.rpc import Rpc, RpcRemoteError, counters
from p2pkube.observe import NO_OBSERVER, Observer
from p2pkube.services import remote, wire
from p2pkube.services.endpoints import pod_endpoint, pod_port, service_endpoints, service_port
from p2pkube.services.liveness import LATE_TIMER_GRACES, NodeProbes
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import (
    IDEMPOTENT_METHODS,
    Endpoint,
    HttpError,
    ResponseHead,
    ResponseStream,
    ServiceRequest,
    ServiceTarget,
    StreamBroken,
)
from p2pkube.state.store import OBJECTS, STATUS, ChangeCallback

log = logging.getLogger(__name__)

MAX_CACHED_TARGETS = 1024
"""Targets whose endpoints a router keeps at most (all are forgotten beyond, and at every
change of a Service, Pod or Node)."""


class Objects(Protocol):
    """How the router reads Services and Pods (the node's ObjectService: objects merged with
    their status)."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    def list(self, kind: str, namespace: str | None) -> list[dict[str, Any]]: ...


@dataclass
class RouterStats:
    """Counters shown in ``p2pkube status`` under ``services``."""

    requests: int = 0
    local: int = 0
    """Attempts sent to a handler on this node."""
    remote: int = 0
    """Attempts sent over the mesh."""
    retries: int = 0
    broken: int = 0
    """Responses cut short after their head went out."""
    failures: Counter[int] = field(default_factory=Counter)
    """Requests answered with an HTTP error of the router's own, by status."""
    per_service: Counter[str] = field(default_factory=Counter)
    """Requests for each Service (``namespace/name``) this router took, counted only for
    Services that exist (so the keys are bounded by them): the dashboard's request rates."""


class _Tracked:
    """A response as the router hands it out: counted as outstanding on its endpoint until it
    ends, breaks or is closed, and cut short at the request's deadline."""

    def __init__(
        self,
        inner: ResponseStream,
        deadline: float,
        release: Callable[[], None],
        stats: RouterStats,
    ) -> None:
        self.head: ResponseHead = inner.head
        self.endpoint = inner.endpoint
        self._inner = inner
        self._deadline = deadline
        self._release: Callable[[], None] | None = release
        self._stats = stats

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout(max(0.0, self._deadline - time.monotonic())):
                chunk = await self._inner.read()
        except TimeoutError:
            self._stats.broken += 1
            await self.aclose()
            raise StreamBroken("the request deadline passed while the body was read") from None
        except StreamBroken:
            self._stats.broken += 1
            await self.aclose()
            raise
        if not chunk:
            self._done()
        return chunk

    def whole_body(self) -> bytes | None:
        body = self._inner.whole_body()
        if body is not None:
            self._done()
        return body

    def _done(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    async def aclose(self) -> None:
        if self._release is None:
            return
        self._done()
        await self._inner.aclose()


class ServiceRouter:
    """Routes requests (``open``) and serves other nodes' (the request rpc's server side)."""

    def __init__(
        self,
        node_name: str,
        objects: Objects,
        rpc: Rpc,
        settings: ServiceSettings,
        *,
        node_ready: Callable[[str], bool],
        node_id_of: Callable[[str], str | None],
        reachable: Callable[[str], bool],
        handler_for: remote.HandlerLookup,
        on_change: Callable[[ChangeCallback], object] | None = None,
        rng: random.Random | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        """``node_ready(name)``: Ready in this node's failure detector; ``reachable(node_id)``:
        this node has a path to it now; ``handler_for(namespace, pod, port)``: the local
        kubelet's handler of that pod's containerPort (None when it runs none here);
        ``on_change``: the state's change subscription, which lets the router keep each
        target's endpoints until a Service, Pod or Node changes (without it, they are
        computed per request)."""
        self.node_name = node_name
        self.settings = settings
        self.stats = RouterStats()
        self.observer = observer
        """Told each request's code and latency (metrics)."""
        self.server = remote.StreamServer(rpc, settings, handler_for)
        self._objects = objects
        self._rpc = rpc
        self._node_ready = node_ready
        self._node_id_of = node_id_of
        self._reachable = reachable
        self._handler_for = handler_for
        self._rng = rng or random.Random()
        self._outstanding: Counter[str] = Counter()
        self._cache: dict[ServiceTarget, list[Endpoint] | HttpError] | None = None
        if on_change is not None:
            self._cache = {}
            on_change(self._on_change)
        self._jobs: set[asyncio.Task[Any]] = set()
        self.probes = NodeProbes(self._ping, settings)
        """Nodes pinged because a request waits on them, and those ejected for not
        answering (``services/liveness.py``)."""

    def start(self) -> None:
        self.server.start()

    async def close(self) -> None:
        await self.probes.close()
        await self.server.close()
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)

    def stats_dict(self) -> dict[str, Any]:
        return {
            **{
                k: v for k, v in counters(self.stats).items() if k not in ("failures", "perService")
            },
            "failures": {str(status): n for status, n in sorted(self.stats.failures.items())},
            "perService": dict(sorted(self.stats.per_service.items())),
            "outstanding": {key: n for key, n in sorted(self._outstanding.items()) if n},
            "liveness": self.probes.stats(),
            "served": self.server.stats_dict(),
        }

    def _spawn(self, job: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    # -- endpoints -----------------------------------------------------------------------------
    def endpoints(self, target: ServiceTarget) -> list[Endpoint]:
        """The endpoints of ``target`` this node may send to now (ready, on a node that is
        Ready and reachable from here). Raises HttpError 404 for an unknown Service, pod or
        port."""
        usable = [endpoint for endpoint in self._endpoints(target) if self._usable(endpoint)]
        # Nodes that did not answer a ping get no request meanwhile, unless none else is left.
        return [e for e in usable if not self.probes.ejected(e.node_id)] or usable

    def _on_change(self, map_name: str, keys: set[str], origin: object) -> None:
        """Forget the cached endpoints when a Service, a Pod or a Node changed."""
        if self._cache and map_name in (OBJECTS, STATUS):
            if any(key.startswith(("Service/", "Pod/", "Node/")) for key in keys):
                self._cache.clear()

    def _endpoints(self, target: ServiceTarget) -> list[Endpoint]:
        """The target's endpoints with their pods' readiness (their nodes' is checked per
        request by ``_usable``: it changes without any change of the state)."""
        if self._cache is None:
            return self._compute(target)
        found = self._cache.get(target)
        if found is None:
            if len(self._cache) >= MAX_CACHED_TARGETS:
                self._cache.clear()
            try:
                found = self._cache[target] = self._compute(target)
            except HttpError as exc:
                found = self._cache[target] = exc
        if isinstance(found, HttpError):
            raise HttpError(found.status, found.message)
        return found

    def _compute(self, target: ServiceTarget) -> list[Endpoint]:
        namespace, name = target.namespace, target.name
        kind = "Pod" if target.pod else "Service"
        obj = self._objects.get(kind, namespace, name)
        if obj is None:
            raise HttpError(404, f'{kind.lower()} "{name}" not found in namespace {namespace}')
        ready, ids = _any_node, self._node_id_of
        if target.pod:
            if pod_port(obj, target.port) is None:
                raise HttpError(404, f'pod "{name}" has no port {target.port!r}')
            endpoint = pod_endpoint(obj, port=target.port, node_ready=ready, node_id_of=ids)
            return [endpoint] if endpoint is not None else []
        if service_port(obj, target.port) is None:
            raise HttpError(404, f'service "{name}" has no port {target.port!r}')
        pods = self._objects.list("Pod", namespace)
        return service_endpoints(obj, pods, port=target.port, node_ready=ready, node_id_of=ids)

    def _usable(self, endpoint: Endpoint) -> bool:
        if not endpoint.ready:
            return False
        if endpoint.node == self.node_name:
            return True
        return (
            bool(endpoint.node_id)
            and self._node_ready(endpoint.node)
            and self._reachable(endpoint.node_id)
        )

    def _pick(self, candidates: list[Endpoint], tried: set[str]) -> Endpoint | None:
        pool = [endpoint for endpoint in candidates if endpoint.key not in tried]
        if self.settings.prefer_local:
            pool = [e for e in pool if e.node == self.node_name] or pool
        if len(pool) <= 1:
            return pool[0] if pool else None
        first, second = self._rng.sample(pool, 2)
        return first if self._outstanding[first.key] <= self._outstanding[second.key] else second

    # -- requests ------------------------------------------------------------------------------
    async def open(self, request: ServiceRequest) -> ResponseStream:
        """Send ``request`` to a ready endpoint; its response once the head arrived.

        Raises HttpError: 404 (no such Service, pod or port), 503 with Retry-After (no ready
        endpoint, all busy), 502/504 (the handler or its node failed), 504 at the deadline."""
        self.stats.requests += 1
        started = time.monotonic()
        deadline = started + self.settings.request_deadline
        target = request.target
        if not target.pod and self._objects.get("Service", target.namespace, target.name):
            self.stats.per_service[f"{target.namespace}/{target.name}"] += 1
        try:
            async with asyncio.timeout(self.settings.request_deadline):
                response = await self._attempts(request, deadline)
        except TimeoutError:
            error = HttpError(504, "no response within services.request_deadline")
            self.stats.failures[error.status] += 1
            self.observer.service_request(error.status, time.monotonic() - started)
            raise error from None
        except HttpError as exc:
            self.stats.failures[exc.status] += 1
            self.observer.service_request(exc.status, time.monotonic() - started)
            raise
        self.observer.service_request(response.head.status, time.monotonic() - started)
        return response

    async def _attempts(self, request: ServiceRequest, deadline: float) -> ResponseStream:
        target = request.target
        tried: set[str] = set()
        last: HttpError | None = None
        for attempt in range(1 + self.settings.retry_attempts):
            endpoint = self._pick(self.endpoints(target), tried)
            if endpoint is None:
                break
            if attempt:
                self.stats.retries += 1
            tried.add(endpoint.key)
            self._outstanding[endpoint.key] += 1
            retry_left = attempt < self.settings.retry_attempts
            try:
                stream = await self._send(endpoint, request, deadline, tried, retry_left)
            except HttpError as exc:
                self._release(endpoint.key)
                if not self._retryable(request, exc):
                    raise
                log.info("%s via %s failed (%s); trying another", _what(target), endpoint.key, exc)
                last = exc
                continue
            except BaseException:  # the deadline, or the client went away
                self._release(endpoint.key)
                raise
            return _Tracked(
                stream, deadline, functools.partial(self._release, endpoint.key), self.stats
            )
        if last is not None:
            if last.status == 503 and last.retry_after is None:
                last.retry_after = self.settings.retry_after
            raise last
        raise HttpError(
            503, f"no ready endpoints for {_what(target)}", retry_after=self.settings.retry_after
        )

    @staticmethod
    def _retryable(request: ServiceRequest, error: HttpError) -> bool:
        """Whether another endpoint may get the request after ``error``: its node or the
        path failed (a handler may have seen it only if the method is idempotent), or it was
        refused unseen (503: a full queue, a pod no longer there). A handler's verdict (502,
        504) or a bad request (400) would be the same elsewhere."""
        if isinstance(error, remote.NodeFailure):
            return not error.reached_handler or request.cgi.method in IDEMPOTENT_METHODS
        return error.status == 503 and not error.reached_handler

    def _waiting_on(
        self, endpoint: Endpoint, request: ServiceRequest, tried: set[str], retry_left: bool
    ) -> Callable[[], bool]:
        """What a request to another node checks while it waits (every
        ``services.lost_check_interval``): the node is still Ready and reachable, and, when
        the request could fail over, it answered its ping (``services/liveness.py``).

        A missed ping is only a guess (a starved node misses one too), so it ends a request in
        flight only to send it elsewhere, as Envoy's outlier detection steers traffic and
        leaves the failure verdict to health checks: the method must be idempotent (a request
        that may not be sent twice is never sent twice), a retry must be left, and another
        node must have an endpoint for it. Otherwise the request keeps waiting until the
        failure detector declares the node lost, or its deadline."""
        started = time.monotonic()
        node = endpoint.node_id
        may_fail_over = request.cgi.method in IDEMPOTENT_METHODS and retry_left
        target = request.target

        def elsewhere() -> bool:
            try:
                endpoints = self.endpoints(target)
            except HttpError:  # the Service or pod went meanwhile: nowhere to go
                return False
            return any(e.node_id != node and e.key not in tried for e in endpoints)

        def alive() -> bool:
            if not self._usable(endpoint):
                return False
            answering = self.probes.alive(node, time.monotonic() - started)
            return answering or not (may_fail_over and elsewhere())

        return alive

    async def _ping(self, node_id: str) -> None:
        """Ask ``node_id`` whether it is there; any answer, even an error, says it is. The
        probe times the answer (and forgives a timer that fired late), so the call's own
        timeout is only a backstop."""
        backstop = self.settings.ping_timeout * (2 + LATE_TIMER_GRACES)
        with contextlib.suppress(RpcRemoteError):
            await self._rpc.call(node_id, wire.PING, None, timeout=backstop)

    def _release(self, key: str) -> None:
        self._outstanding[key] -= 1
        if self._outstanding[key] <= 0:
            del self._outstanding[key]

    async def _send(
        self,
        endpoint: Endpoint,
        request: ServiceRequest,
        deadline: float,
        tried: set[str],
        retry_left: bool,
    ) -> ResponseStream:
        if endpoint.node != self.node_name:
            self.stats.remote += 1
            return await remote.open_remote(
                self._rpc,
                endpoint,
                request.cgi,
                request.body,
                self.settings,
                deadline=deadline,
                spawn=self._spawn,
                alive=self._waiting_on(endpoint, request, tried, retry_left),
            )
        self.stats.local += 1
        handler = self._handler_for(endpoint.namespace, endpoint.pod, endpoint.port)
        if handler is None:
            raise HttpError(503, f"pod {endpoint.pod} serves no port {endpoint.port} here yet")
        try:
            return await handler.handle(request.cgi, request.body)
        except HttpError:
            raise
        except Exception as exc:
            log.exception("the handler of %s failed", endpoint.key)
            raise HttpError(502, f"{type(exc).__name__}: {exc}", reached_handler=True) from None


def _any_node(name: str) -> bool:
    """Node readiness as the cached endpoints take it: every node ready (``_usable`` checks
    the node's readiness at each request)."""
    return True


def _what(target: ServiceTarget) -> str:
    kind = "pod" if target.pod else "service"
    return f'{kind} "{target.name}" in namespace {target.namespace}'
