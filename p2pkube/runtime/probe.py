"""Readiness probes of handler containers (``readinessProbe.httpGet``), as the kubelet runs them.

A handler pod cannot listen, so the probe does not connect to a port: it is a GET run through
the pod's own :class:`~p2pkube.runtime.handler.HandlerPool` (one instance, like any request,
within the pod's concurrency), from ``REMOTE_ADDR`` 127.0.0.1 (the node itself, as the
kubelet probes from the node), with ``User-Agent: kube-probe/...`` and the probe's
``httpHeaders``. A status from 200 to 399 is a success, anything else (or a 502/504 of the
pool, or no answer within ``timeoutSeconds``) a failure, as Kubernetes' HTTP probe.

The timing fields mean what they mean in Kubernetes: the first probe runs
``initialDelaySeconds`` after the container started, then one every ``periodSeconds``; the
container becomes ready after ``successThreshold`` successes in a row and unready after
``failureThreshold`` failures in a row (it starts unready). Every failure is reported with
Kubernetes' message (``Readiness probe failed: HTTP probe failed with statuscode: 500``), which
the kubelet records as a Warning event ``Unhealthy``.

Shared Python (the browser node runs it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from p2pkube import __version__
from p2pkube.runtime.cgi import CgiRequest
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import HttpError, RequestHandler, StreamBroken

log = logging.getLogger(__name__)

USER_AGENT = f"kube-probe/{__version__} (p2pkube)"
PROBE_BODY_BYTES = 10 * 1024
"""Body bytes a probe reads before it lets the rest go (the kubelet reads 10 KiB too)."""


def container_ports(spec: Mapping[str, Any]) -> dict[int, str]:
    """``containerPort -> name`` ("" when unnamed) of a container spec; entries that are not
    a mapping with an integer containerPort are ignored (read defensively)."""
    ports: dict[int, str] = {}
    declared = spec.get("ports")
    for entry in declared if isinstance(declared, list) else ():
        if isinstance(entry, Mapping):
            number = entry.get("containerPort")
            if isinstance(number, int) and not isinstance(number, bool) and number > 0:
                ports[number] = str(entry.get("name") or "")
    return ports


def is_handler(spec: Mapping[str, Any]) -> bool:
    """Whether a container is an HTTP handler: it declares at least one containerPort."""
    return bool(container_ports(spec))


def _number(value: Any, default: float, minimum: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= minimum:
        return float(value)
    return default


@dataclass(frozen=True)
class HttpGetProbe:
    """One ``readinessProbe`` with an ``httpGet`` action, its defaults filled in."""

    path: str
    query: str
    port: int | str
    """A containerPort number or name (resolved against the pod's containers)."""
    headers: tuple[tuple[str, str], ...]
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, container: Mapping[str, Any], settings: ServiceSettings) -> HttpGetProbe | None:
        """The container's readiness probe, None when it has none (or not an httpGet)."""
        probe = container.get("readinessProbe")
        action = probe.get("httpGet") if isinstance(probe, Mapping) else None
        if not isinstance(probe, Mapping) or not isinstance(action, Mapping):
            return None
        target = str(action.get("path") or "/")
        path, _, query = target.partition("?")
        port = action.get("port")
        if not isinstance(port, (int, str)) or isinstance(port, bool) or port in ("", 0):
            ports = container_ports(container)
            port = next(iter(ports), 0)
        raw_headers = action.get("httpHeaders")
        headers = tuple(
            (str(h.get("name")), str(h.get("value", "")))
            for h in (raw_headers if isinstance(raw_headers, list) else ())
            if isinstance(h, Mapping) and h.get("name")
        )
        return cls(
            path=unquote(path if path.startswith("/") else "/" + path),
            query=query,
            port=port,
            headers=headers,
            initial_delay=_number(probe.get("initialDelaySeconds"), 0.0, 0),
            period=_number(probe.get("periodSeconds"), settings.probe_period, 0.001),
            timeout=_number(probe.get("timeoutSeconds"), settings.probe_timeout, 0.001),
            success_threshold=int(_number(probe.get("successThreshold"), 1, 1)),
            failure_threshold=int(_number(probe.get("failureThreshold"), 3, 1)),
        )

    def url(self, port: int | str) -> str:
        return f"http://127.0.0.1:{port}{self.path}" + (f"?{self.query}" if self.query else "")


async def probe_once(
    probe: HttpGetProbe, port: int, handler: RequestHandler | None
) -> tuple[bool, str]:
    """Run the probe once: (success, why it failed)."""
    url = probe.url(port)
    if handler is None:  # nothing serves that port (yet): what a refused connection says
        return False, (f'Get "{url}": dial tcp 127.0.0.1:{port}: connect: connection refused')
    request = CgiRequest(
        "GET",
        probe.path,
        probe.query,
        headers=(("User-Agent", USER_AGENT), ("Accept", "*/*"), *probe.headers),
        remote_addr="127.0.0.1",
        server_name="127.0.0.1",
        server_port=port,
    )
    try:
        async with asyncio.timeout(probe.timeout):
            response = await handler.handle(request, b"")
            try:
                status = response.head.status
                read = 0
                with contextlib.suppress(StreamBroken):
                    while read < PROBE_BODY_BYTES and (chunk := await response.read()):
                        read += len(chunk)
            finally:
                await response.aclose()
    except TimeoutError:
        return False, (
            f'Get "{url}": context deadline exceeded '
            "(Client.Timeout exceeded while awaiting headers)"
        )
    except HttpError as exc:
        return False, f"HTTP probe failed with statuscode: {exc.status} ({exc.message})"
    if 200 <= status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {status}"


class ReadinessProber:
    """Runs one container's readiness probe until stopped; owned by the pod's worker.

    ``resolve(port)`` gives the handler serving ``port`` in the pod (None if none does);
    ``on_ready(bool)`` is called when readiness flips; ``on_failure(message)`` on every
    failed probe (the message already reads ``Readiness probe failed: ...``)."""

    def __init__(
        self,
        probe: HttpGetProbe,
        *,
        resolve_port: Callable[[int | str], int | None],
        resolve: Callable[[int], RequestHandler | None],
        on_ready: Callable[[bool], None],
        on_failure: Callable[[str], None],
        name: str,
    ) -> None:
        self.probe = probe
        self._resolve_port = resolve_port
        self._resolve = resolve
        self._on_ready = on_ready
        self._on_failure = on_failure
        self.ready = False
        self.successes = 0
        self.failures = 0
        self._task = asyncio.create_task(self._run(), name=f"readiness probe {name}")

    async def _run(self) -> None:
        probe = self.probe
        await asyncio.sleep(probe.initial_delay)
        while True:
            try:
                await self._check()
            except Exception:  # a bug of ours: say so, keep probing
                log.exception("readiness probe failed unexpectedly")
            await asyncio.sleep(probe.period)

    async def _check(self) -> None:
        probe = self.probe
        port = self._resolve_port(probe.port)
        if port is None:
            ok, why = False, f"port {probe.port!r} is not a containerPort of the pod"
        else:
            ok, why = await probe_once(probe, port, self._resolve(port))
        if ok:
            self.failures = 0
            self.successes += 1
            if not self.ready and self.successes >= probe.success_threshold:
                self.ready = True
                self._on_ready(True)
            return
        self.successes = 0
        self.failures += 1
        self._on_failure(f"Readiness probe failed: {why}")
        if self.ready and self.failures >= probe.failure_threshold:
            self.ready = False
            self._on_ready(False)

    async def stop(self) -> None:
        """Cancel the probe and wait for it (an in-flight probe request is closed)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
