"""NodePort listeners: every native node serves each NodePort of each NodePort Service.

As kube-proxy does on each Kubernetes node, every native agent listens on its ``--node-ip``
(all interfaces by default) at every ``spec.ports[].nodePort`` of every Service of type
NodePort in the replicated state, and routes what comes in to that Service port
(``ServiceTarget(namespace, name, port=<the port's name, else its number>)``) through the
front door (``api/frontdoor.py``) and the node's router. So a Service is reachable on every
node, whether or not it runs one of its pods.

The listeners follow the state: :class:`NodePorts` reconciles when a Service changes (the
state's change callback wakes it) and every ``services.node_port_resync`` seconds, which is
also when a port it could not bind is tried again. A port taken on this host by another
program gives a Warning event on the Service (``FailedBindNodePort``, once per port and
error) and a log line; the Service's other ports are served all the same. A port two Services
claim (two nodes allocated it at the same instant, a CRDT race) is served for its owner by
``model.nodeports.node_port_owners`` only, the same choice on every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import psutil
from aiohttp import web

from p2pkube.api.frontdoor import Handler, HttpListener, ServiceOpener, error_response, serve
from p2pkube.model.nodeports import node_port_owners
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import HttpError, ServiceTarget
from p2pkube.state import ClusterState
from p2pkube.state.store import OBJECTS
from p2pkube.ticker import timeout_on_beat

log = logging.getLogger(__name__)

SERVICE_PREFIX = "Service/"

Record = Callable[[dict[str, Any], str, str], None]
"""``record(service, reason, message)``: a Warning event on a Service."""


def node_addresses(node_ip: str, hostname: str) -> list[dict[str, str]]:
    """The Node's ``status.addresses``: InternalIP is ``--node-ip``, or for all interfaces
    (``0.0.0.0``, the default) this host's first non-loopback IPv4 address, as the kubelet
    picks one; loopback when the host has no other."""
    address = node_ip
    if ipaddress.ip_address(node_ip).is_unspecified:
        address = "127.0.0.1"
        for addrs in psutil.net_if_addrs().values():
            found = [
                a.address
                for a in addrs
                if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback
            ]
            if found:
                address = found[0]
                break
    return [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": hostname}]


def node_port_targets(services: list[Any]) -> dict[int, tuple[ServiceTarget, dict[str, Any]]]:
    """NodePort -> (the Service port it routes to, the Service) for every port served here.

    A port claimed by two Services goes to its owner only (``node_port_owners``)."""
    owners = node_port_owners(services)
    targets: dict[int, tuple[ServiceTarget, dict[str, Any]]] = {}
    for service in services:
        if not isinstance(service, dict):
            continue
        meta = service.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
        for port in (service.get("spec") or {}).get("ports") or []:
            if not isinstance(port, dict):
                continue
            number, port_name = port.get("nodePort"), str(port.get("name") or "")
            if not isinstance(number, int) or number in targets:
                continue
            if owners.get(number) != (namespace, name, port_name):
                continue
            target = ServiceTarget(namespace, name, port=port_name or str(port.get("port", "")))
            targets[number] = (target, service)
    return targets


class NodePorts:
    """This node's NodePort listeners, reconciled from the Services in the state."""

    def __init__(
        self,
        state: ClusterState,
        opener: ServiceOpener,
        address: str,
        settings: ServiceSettings,
        *,
        record: Record,
    ) -> None:
        self.state = state
        self.opener = opener
        self.address = address
        """``--node-ip``: where every NodePort listens (``0.0.0.0``: all interfaces)."""
        self.settings = settings
        self._record = record
        self.listeners: dict[int, HttpListener] = {}
        self._targets: dict[int, ServiceTarget] = {}
        self._warned: dict[int, str] = {}
        """Port -> the bind error already reported (one event per port and error)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        """Serve the NodePorts of the state as it is, then follow it."""
        self._unsubscribe = self.state.on_change(self._on_change)
        await self.reconcile()
        self._task = asyncio.create_task(self._loop(), name="nodeports")

    async def close(self) -> None:
        """Stop following the state and close every listener."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for port in list(self.listeners):
            await self._stop(port)

    def _on_change(self, map_name: str, keys: set[str], _origin: object) -> None:
        if map_name == OBJECTS and any(k.startswith(SERVICE_PREFIX) for k in keys):
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with timeout_on_beat(self.settings.node_port_resync):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception:
                log.exception("NodePort reconcile failed")

    async def reconcile(self) -> None:
        """Open the listeners of new NodePorts, close those of ports gone, retry failures."""
        services = [obj for _, obj in self.state.items(OBJECTS, SERVICE_PREFIX)]
        desired = node_port_targets(services)
        for port in [p for p in self.listeners if p not in desired]:
            await self._stop(port)
        for port in [p for p in self._warned if p not in desired]:
            del self._warned[port]
        for port, (target, service) in sorted(desired.items()):
            self._targets[port] = target  # a changed port name applies at once, no rebind
            if port not in self.listeners:
                await self._start(port, service)

    async def _start(self, port: int, service: dict[str, Any]) -> None:
        listener = HttpListener(self._handler(port), self.address, port, self.settings)
        try:
            await listener.start()
        except OSError as exc:
            self._bind_failed(port, service, exc)
            return
        self.listeners[port] = listener
        self._warned.pop(port, None)
        log.info("NodePort %s:%d serves %s", self.address, port, _describe(self._targets[port]))

    def _bind_failed(self, port: int, service: dict[str, Any], exc: OSError) -> None:
        # asyncio's strerror repeats the address; the errno's text says it all.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        message = (
            f"cannot listen on NodePort {self.address}:{port}: {reason}; retrying every "
            f"{self.settings.node_port_resync:g} s"
        )
        log.warning("%s (Service %s)", message, _describe(self._targets[port]))
        if self._warned.get(port) != reason:
            self._warned[port] = reason
            self._record(service, "FailedBindNodePort", message)

    async def _stop(self, port: int) -> None:
        listener = self.listeners.pop(port, None)
        self._targets.pop(port, None)
        if listener is not None:
            await listener.stop()
            log.info("NodePort %s:%d closed", self.address, port)

    def _handler(self, port: int) -> Handler:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            target = self._targets.get(port)
            if target is None:  # the Service went while this connection was open
                return error_response(HttpError(404, f"NodePort {port} serves no Service"))
            return await serve(
                request, self.opener, target, request.path, self.settings, door=f"nodePort {port}"
            )

        return handle


def _describe(target: ServiceTarget) -> str:
    return f"{target.namespace}/{target.name}:{target.port}"
