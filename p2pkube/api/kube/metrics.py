"""``metrics.k8s.io/v1beta1``: NodeMetrics and PodMetrics, as metrics-server serves them.

``kubectl top`` and ``p2pkube top`` read these documents (one source for both): the usage each
node measured (``runtime/usage.py``), asked for over the mesh when the node is another, with
each object's labels from the replicated state (so ``-l`` selects as on the Node or Pod).
What metrics-server does, done alike:

* ``usage.cpu`` is the CPU rate over the ``window`` in nanocores (``12345678n``, ``15m``),
  ``usage.memory`` the memory in binary-SI bytes (``123456Ki``); ``timestamp`` is when the
  window ended;
* only Ready nodes and Running pods have metrics; a node that does not answer in time is left
  out (a ``Warning`` header says which and why: kubectl prints it), and ``get`` of an object
  without metrics is 404 NotFound, which kubectl top turns into "metrics not available";
* ``get`` and ``list`` only (no watch), label and field selectors, Tables for ``kubectl get``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from p2pkube.api.kube.paths import Target
from p2pkube.model.quantity import format_binary, format_nanocores
from p2pkube.model.timestamps import utc_now
from p2pkube.runtime.usage import UsageReport, UsageUnavailable

if TYPE_CHECKING:
    from p2pkube.api.backend import AgentBackend

__all__ = ["MetricsReader", "Readings", "node_metrics", "pod_metrics"]

API_VERSION = "metrics.k8s.io/v1beta1"


def _window(seconds: float) -> str:
    """A Go ``metav1.Duration`` as JSON shows it: ``10s``, ``10.062s``."""
    return f"{round(seconds, 3):g}s"


def _meta(obj: dict[str, Any], now: str) -> dict[str, Any]:
    source = obj.get("metadata") or {}
    meta: dict[str, Any] = {"name": source.get("name", "")}
    if source.get("namespace"):
        meta["namespace"] = source["namespace"]
    meta["creationTimestamp"] = now  # as metrics-server: the object is made at each read
    if source.get("labels"):
        meta["labels"] = dict(source["labels"])
    return meta


def _usage(cpu_nanocores: int, memory_bytes: int) -> dict[str, str]:
    return {"cpu": format_nanocores(cpu_nanocores), "memory": format_binary(memory_bytes)}


def node_metrics(node: dict[str, Any], report: UsageReport, now: str) -> dict[str, Any]:
    """The NodeMetrics of ``node`` from its own report."""
    return {
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": _meta(node, now),
        "timestamp": report.timestamp,
        "window": _window(report.window),
        "usage": _usage(report.cpu_nanocores, report.memory_bytes),
    }


def pod_metrics(pod: dict[str, Any], report: UsageReport, now: str) -> dict[str, Any] | None:
    """The PodMetrics of ``pod`` from its node's report; None when the report has no
    figures for it (it has not started there yet)."""
    meta = pod.get("metadata") or {}
    figures = report.pods.get(f"{meta.get('namespace', '')}/{meta.get('name', '')}")
    if figures is None:
        return None
    declared = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    order = [n for n in declared if n in figures] + sorted(set(figures) - set(declared))
    return {
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": _meta(pod, now),
        "timestamp": report.timestamp,
        "window": _window(report.window),
        "containers": [{"name": name, "usage": _usage(*figures[name])} for name in order],
    }


def _ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _running_on(pod: dict[str, Any]) -> str | None:
    """The node a Running pod runs on (None for any other pod: it has no metrics)."""
    if (pod.get("status") or {}).get("phase") != "Running":
        return None
    node = (pod.get("spec") or {}).get("nodeName")
    return str(node) if node else None


@dataclass
class Readings:
    """The metrics objects a request names, and why some are missing."""

    items: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class MetricsReader:
    """Builds the NodeMetrics and PodMetrics a request names, from the agent's backend."""

    def __init__(self, backend: AgentBackend) -> None:
        self.backend = backend

    async def read(self, target: Target, matches: Callable[[dict[str, Any]], bool]) -> Readings:
        """The metrics of the Nodes or Pods ``target`` names that ``matches`` selects (the
        selectors apply to the Node or Pod, as metrics-server applies them)."""
        if target.resource.kind == "NodeMetrics":
            return await self._nodes(matches)
        return await self._pods(target.namespace, matches)

    async def _reports(self, names: set[str], readings: Readings) -> dict[str, UsageReport]:
        answers = await self.backend.read_usage(sorted(names))
        reports = {}
        for name, answer in answers.items():
            if isinstance(answer, UsageUnavailable):
                readings.warnings.append(f"no metrics from node {name}: {answer}")
            else:
                reports[name] = answer
        return reports

    async def _nodes(self, matches: Callable[[dict[str, Any]], bool]) -> Readings:
        readings = Readings()
        nodes = [n for n in self.backend.list_nodes() if matches(n) and _ready(n)]
        names = {str((n.get("metadata") or {}).get("name")) for n in nodes}
        reports = await self._reports(names, readings)
        now = utc_now()
        for node in sorted(nodes, key=lambda n: str((n.get("metadata") or {}).get("name"))):
            report = reports.get(str((node.get("metadata") or {}).get("name")))
            if report is not None:
                readings.items.append(node_metrics(node, report, now))
        return readings

    async def _pods(
        self, namespace: str | None, matches: Callable[[dict[str, Any]], bool]
    ) -> Readings:
        readings = Readings()
        pods = [
            p
            for p in self.backend.list_objects("Pod", namespace)
            if matches(p) and _running_on(p) is not None
        ]
        nodes = {node for p in pods if (node := _running_on(p)) is not None}
        reports = await self._reports(nodes, readings)
        now = utc_now()
        for pod in sorted(pods, key=_pod_order):
            report = reports.get(_running_on(pod) or "")
            shown = None if report is None else pod_metrics(pod, report, now)
            if shown is not None:
                readings.items.append(shown)
        return readings


def _pod_order(pod: dict[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))
