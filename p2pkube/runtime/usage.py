"""Measured usage of a node and of its pods: what ``kubectl top`` and ``p2pkube top`` show.

Usage is measured where it happens, never declared: a node reads its own process's CPU time
and memory (natively the agent's process and its request workers, through psutil, which the
native agent passes in as :data:`ProcessUsage`; a tab has no process figures and counts its
pods), and the runtime's figures of every container (``PodRuntime.usage``: the CPU time its
instances' threads or Workers spent, the size of their linear memories).

CPU is a rate, as the kubelet's summary API gives it: cumulative CPU seconds are read every
``kubelet.usage_interval`` and the usage is the difference of the last two readings over the
time between them, the ``window`` of a NodeMetrics or PodMetrics. Memory is the last reading.
A container that was not there at the previous reading had used nothing then (its figures
start at zero), so a pod shows usage from its first full window on.

Usage stays on the node that measured it. Any node answers for the others by asking them over
the mesh (:data:`METHOD`), each with ``kubelet.usage_timeout``; one that cannot be asked in time
is reported as such (``UsageUnavailable``), and the rest are shown. Shared by native and
browser nodes: nothing here loads psutil or wasmtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from p2pkube.model.timestamps import utc_now
from p2pkube.net.rpc import Rpc, RpcError, RpcRemoteError
from p2pkube.runtime.interface import ContainerUsage
from p2pkube.ticker import sleep_to_beat

log = logging.getLogger(__name__)

__all__ = ["METHOD", "ProcessUsage", "UsageMeter", "UsageReport", "UsageUnavailable"]

METHOD = "usage.read"

ProcessUsage = Callable[[], tuple[float, int]]
"""(CPU seconds used since it started, resident memory bytes) of the node's process(es)."""

NANO = 1_000_000_000


class UsageUnavailable(LookupError):
    """A node's usage cannot be read (not known, not reachable, no answer in time)."""


@dataclass(frozen=True)
class _Reading:
    at: float
    """``time.monotonic()``."""
    timestamp: str
    node_cpu: float | None
    node_memory: int | None
    containers: dict[tuple[str, str, str], tuple[float, int]]
    """(pod dir, ``namespace/name``, container) -> (CPU seconds so far, memory bytes)."""


@dataclass(frozen=True)
class UsageReport:
    """One node's usage over its last window (what :data:`METHOD` answers, as a map)."""

    timestamp: str
    """When the window ended (RFC 3339)."""
    window: float
    """Seconds the CPU rates are measured over."""
    cpu_nanocores: int
    memory_bytes: int
    pods: dict[str, dict[str, tuple[int, int]]]
    """``namespace/name`` -> container -> (CPU nanocores, memory bytes)."""

    def body(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "window": self.window,
            "cpu": self.cpu_nanocores,
            "memory": self.memory_bytes,
            "pods": {
                pod: {name: [cpu, memory] for name, (cpu, memory) in containers.items()}
                for pod, containers in self.pods.items()
            },
        }

    @classmethod
    def from_body(cls, body: Any) -> UsageReport:
        """ValueError when ``body`` is not a report (a node of another version, a bug)."""
        try:
            pods = {
                str(pod): {
                    str(name): (int(figures[0]), int(figures[1]))
                    for name, figures in containers.items()
                }
                for pod, containers in body["pods"].items()
            }
            return cls(
                str(body["timestamp"]),
                float(body["window"]),
                int(body["cpu"]),
                int(body["memory"]),
                pods,
            )
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ValueError(f"malformed usage report: {exc!r}") from None


def _rate(seconds: float, window: float) -> int:
    """CPU seconds spent over ``window`` seconds, in nanocores (never negative)."""
    return max(0, round(seconds / window * NANO)) if window > 0 else 0


class UsageMeter:
    """Reads this node's usage every ``interval`` seconds; answers for it, locally and over
    the mesh, and asks other nodes for theirs."""

    def __init__(
        self,
        rpc: Rpc,
        containers: Callable[[], list[ContainerUsage]],
        process: ProcessUsage | None,
        *,
        interval: float,
        timeout: float,
    ) -> None:
        """``containers``: the runtime's :meth:`~p2pkube.runtime.interface.PodRuntime.usage`;
        ``process``: the node's own figures (None: the sum of its containers')."""
        self.rpc = rpc
        self.containers = containers
        self.process = process
        self.interval = interval
        self.timeout = timeout
        self._previous: _Reading | None = None
        self._latest: _Reading | None = None
        self._task: asyncio.Task[None] | None = None
        rpc.register(METHOD, self._serve)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage meter")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.take()
            except Exception:  # a failed reading must not end the meter
                log.exception("reading this node's usage failed")
            await sleep_to_beat(self.interval)

    async def _read(self) -> _Reading:
        cpu: float | None = None
        memory: int | None = None
        if self.process is not None:  # /proc reads (children: every process's): off the loop
            cpu, memory = await asyncio.to_thread(self.process)
        containers = {
            (c.pod_dir, c.pod, c.container): (c.cpu_seconds, c.memory_bytes)
            for c in self.containers()
        }
        return _Reading(time.monotonic(), utc_now(), cpu, memory, containers)

    async def take(self) -> None:
        """Take a reading now: it ends the current window (the meter does so every
        ``interval``; tests call it to end one at once)."""
        reading = await self._read()
        self._previous, self._latest = self._latest, reading

    async def report(self) -> UsageReport:
        """This node's usage over the last window (the first window ends now)."""
        previous, latest = self._previous, self._latest
        if latest is None:
            raise UsageUnavailable("usage is not being measured here yet")
        if previous is None:  # started less than one interval ago: measure up to now
            previous, latest = latest, await self._read()
        window = latest.at - previous.at
        pods: dict[str, dict[str, tuple[int, int]]] = {}
        for (pod_dir, pod, container), (cpu, memory) in latest.containers.items():
            before = previous.containers.get((pod_dir, pod, container), (0.0, 0))[0]
            rate = _rate(cpu - before, window)
            figures = pods.setdefault(pod, {})
            old_rate, old_memory = figures.get(container, (0, 0))  # two uids: one pod name
            figures[container] = (old_rate + rate, old_memory + memory)
        if latest.node_cpu is not None and previous.node_cpu is not None:
            node_cpu = _rate(latest.node_cpu - previous.node_cpu, window)
            node_memory = latest.node_memory or 0
        else:  # no process figures (a tab): what its pods use
            node_cpu = sum(cpu for figures in pods.values() for cpu, _ in figures.values())
            node_memory = sum(mem for figures in pods.values() for _, mem in figures.values())
        return UsageReport(latest.timestamp, round(window, 3), node_cpu, node_memory, pods)

    async def _serve(self, _src: str, _body: Any) -> dict[str, Any]:
        try:
            return (await self.report()).body()
        except UsageUnavailable as exc:
            raise RpcRemoteError("unavailable", str(exc)) from None

    async def read(
        self, nodes: dict[str, str | None], local: str
    ) -> dict[str, UsageReport | UsageUnavailable]:
        """The usage of each of ``nodes`` (name -> node id, None when unknown), asked at once;
        ``local`` is this node's name (answered without the mesh)."""

        async def one(name: str, node_id: str | None) -> UsageReport | UsageUnavailable:
            try:
                if name == local:
                    return await self.report()
                if node_id is None:
                    raise UsageUnavailable(f"node {name} is not known to this node")
                body = await self.rpc.call(node_id, METHOD, {}, timeout=self.timeout)
                return UsageReport.from_body(body)
            except UsageUnavailable as exc:
                return exc
            except (RpcError, ValueError) as exc:
                return UsageUnavailable(f"node {name} cannot be asked for its usage: {exc}")

        names = list(nodes)
        asks: list[Awaitable[UsageReport | UsageUnavailable]] = [
            one(name, nodes[name]) for name in names
        ]
        answers = await asyncio.gather(*asks)
        return dict(zip(names, answers, strict=True))
