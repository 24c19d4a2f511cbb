"""Every kind the CLI shows, declared once: its names, its columns, its row order.

``get`` (and ``get -w``), ``delete`` and ``describe`` find a kind here with
:func:`find_resource`; another kind means one more :class:`~p2pkube.cli.output.Resource` in
``RESOURCES``, not another code path in the commands. The column helpers (a pod's STATUS, a
job's DURATION...) are kubectl's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from p2pkube.cli.output import (
    Column,
    Resource,
    field,
    format_age,
    format_selector,
    format_size,
    human_duration,
    name_of,
    short_digest,
    utc_now,
)
from p2pkube.model.timestamps import parse_datetime


def _labels(obj: dict[str, Any]) -> str:
    labels = field(obj, "metadata.labels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def _age(obj: dict[str, Any]) -> str:
    return format_age(field(obj, "metadata.creationTimestamp"))


NAME = Column("NAME", name_of)
AGE = Column("AGE", _age)
LABELS = Column("LABELS", _labels, wide=True)
"""The columns most kinds share."""
NAMESPACE_COLUMN = Column("NAMESPACE", lambda o: field(o, "metadata.namespace", ""))
"""Put first when a namespaced kind is listed across namespaces (``get -A``)."""


# --- cluster kinds -------------------------------------------------------------------------------


def _node_status(node: dict[str, Any]) -> str:
    """Ready/NotReady/Unknown from the Ready condition, then ``,SchedulingDisabled`` for a
    cordoned node, as kubectl shows it."""
    shown = "Unknown"
    for condition in field(node, "status.conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            status = condition.get("status")
            shown = "Ready" if status == "True" else "NotReady" if status == "False" else "Unknown"
            break
    return shown + (",SchedulingDisabled" if field(node, "spec.unschedulable") else "")


def _node_kind(node: dict[str, Any]) -> str:
    kind = field(node, "status.nodeInfo.kind") or field(node, "metadata.labels", {}).get(
        "p2pkube.io/kind"
    )
    return kind or "<unknown>"


def _node_id(node: dict[str, Any]) -> str:
    return str(field(node, "status.nodeInfo.nodeID") or field(node, "metadata.uid") or "")[:12]


def _internal_ip(node: dict[str, Any]) -> str:
    addresses = field(node, "status.addresses") or []
    found = [a.get("address") for a in addresses if isinstance(a, dict)]
    internal = [a.get("address") for a in addresses if a.get("type") == "InternalIP"]
    return str((internal or found or ["<none>"])[0])


NODES = Resource(
    kind="Node",
    names=("nodes", "node", "no"),
    namespaced=False,
    undeletable="a node leaves the cluster when its agent stops",
    columns=(
        NAME,
        Column("KIND", _node_kind),
        Column("STATUS", _node_status),
        Column("PEERS", lambda n: field(n, "status.peers", "<unknown>")),
        Column("CPU", lambda n: field(n, "status.capacity.cpu", "<unknown>")),
        Column("MEMORY", lambda n: field(n, "status.capacity.memory", "<unknown>")),
        AGE,
        Column("INTERNAL-IP", _internal_ip, wide=True),
        Column("NODE-ID", _node_id, wide=True),
        Column(
            "VERSION", lambda n: field(n, "status.nodeInfo.agentVersion", "<unknown>"), wide=True
        ),
        LABELS,
    ),
)

SECRETS = Resource(
    kind="Secret",
    names=("secrets", "secret"),
    namespaced=True,
    columns=(
        NAME,
        Column("TYPE", lambda s: s.get("type") or "Opaque"),
        Column("DATA", lambda s: len(s.get("data") or {})),
        AGE,
        LABELS,
    ),
)

NAMESPACES = Resource(
    kind="Namespace",
    names=("namespaces", "namespace", "ns"),
    namespaced=False,
    columns=(NAME, Column("STATUS", lambda n: field(n, "status.phase", "Active")), AGE, LABELS),
)

CONFIGMAPS = Resource(
    kind="ConfigMap",
    names=("configmaps", "configmap", "cm"),
    namespaced=True,
    columns=(
        NAME,
        Column("DATA", lambda c: len(c.get("data") or {}) + len(c.get("binaryData") or {})),
        AGE,
        LABELS,
    ),
)


# --- services -----------------------------------------------------------------------------------


def service_ports(svc: dict[str, Any]) -> str:
    """kubectl's PORT(S): ``80:30080/TCP`` for a NodePort, ``80/TCP`` else."""
    shown = []
    for port in field(svc, "spec.ports") or []:
        if isinstance(port, dict):
            node_port = f":{port['nodePort']}" if port.get("nodePort") else ""
            shown.append(f"{port.get('port')}{node_port}/{port.get('protocol') or 'TCP'}")
    return ",".join(shown) or "<none>"


SERVICES = Resource(
    kind="Service",
    names=("services", "service", "svc"),
    namespaced=True,
    # No CLUSTER-IP or EXTERNAL-IP column: p2pkube gives Services no virtual IP (pods cannot
    # open sockets; requests enter through a NodePort or the proxy path), so they would
    # always read <none>.
    columns=(
        NAME,
        Column("TYPE", lambda s: field(s, "spec.type") or "ClusterIP"),
        Column("PORT(S)", service_ports),
        AGE,
        Column("SELECTOR", lambda s: format_selector(field(s, "spec.selector")), wide=True),
        LABELS,
    ),
)

MAX_ENDPOINTS_SHOWN = 3
"""kubectl lists three endpoints, then ``+ N more...``."""


def format_endpoints(endpoints: dict[str, Any], port_name: str | None = None) -> str:
    """kubectl's ENDPOINTS cell with ``node/pod:port`` for ``ip:port`` (pods have no IP): the
    ready addresses of every port (only of the port named ``port_name`` when given), three of
    them, then ``+ N more...``; ``<none>`` when there is none."""
    shown: list[str] = []
    count = 0
    for subset in endpoints.get("subsets") or []:
        if not isinstance(subset, dict):
            continue
        for port in subset.get("ports") or []:
            if port_name is not None and (port.get("name") or "") != port_name:
                continue
            for address in subset.get("addresses") or []:
                count += 1
                if len(shown) < MAX_ENDPOINTS_SHOWN:
                    pod = field(address, "targetRef.name", "")
                    shown.append(f"{address.get('nodeName')}/{pod}:{port.get('port')}")
    if not shown:
        return "<none>"
    more = count - len(shown)
    return ",".join(shown) + (f" + {more} more..." if more else "")


ENDPOINTS = Resource(
    kind="Endpoints",
    names=("endpoints", "ep"),
    namespaced=True,
    watchable=False,
    undeletable="every node computes them from the Services and the pods (delete the Service)",
    columns=(NAME, Column("ENDPOINTS", format_endpoints), AGE),
)


def pod_status(pod: dict[str, Any]) -> str:
    """The STATUS kubectl shows for a pod: its most telling container reason, else its phase."""
    if field(pod, "metadata.deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Failed" and status.get("reason"):
        return str(status["reason"])  # DeadlineExceeded, OutOfmemory, ...
    reason, running = phase, False
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            terminated = state["terminated"] or {}
            reason = terminated.get("reason") or f"ExitCode:{terminated.get('exitCode')}"
        elif "running" in state and container.get("ready"):
            running = True
    return "Running" if reason == "Completed" and running else str(reason)


def _pod_ready(pod: dict[str, Any]) -> str:
    statuses = field(pod, "status.containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    return f"{ready}/{len(field(pod, 'spec.containers') or [])}"


def _pod_restarts(pod: dict[str, Any]) -> str:
    statuses = field(pod, "status.containerStatuses") or []
    count = sum(int(c.get("restartCount") or 0) for c in statuses)
    last = max(
        (
            str(field(c, "lastState.terminated.finishedAt"))
            for c in statuses
            if field(c, "lastState.terminated.finishedAt")
        ),
        default=None,
    )
    return f"{count} ({format_age(last)} ago)" if count and last else str(count)


PODS = Resource(
    kind="Pod",
    names=("pods", "pod", "po"),
    namespaced=True,
    columns=(
        NAME,
        Column("READY", _pod_ready),
        Column("STATUS", pod_status),
        Column("RESTARTS", _pod_restarts),
        AGE,
        Column("NODE", lambda p: field(p, "spec.nodeName") or "<none>", wide=True),
        Column(
            "IMAGE",
            lambda p: ",".join(
                short_digest(str(c.get("image"))) for c in field(p, "spec.containers") or []
            ),
            wide=True,
        ),
        LABELS,
    ),
)


def _holders(blob: dict[str, Any]) -> list[str]:
    holders = field(blob, "status.holders") or []
    return [str(h) for h in holders] if isinstance(holders, list) else []


BLOBS = Resource(
    kind="Blob",
    names=("blobs", "blob"),
    namespaced=False,
    watchable=False,
    undeletable="blobs no object refers to are collected after blobs.gc_grace",
    columns=(
        Column("NAME", lambda b: short_digest(name_of(b)), narrow=True),
        Column("NAME", name_of, wide=True),
        Column("SIZE", lambda b: format_size(field(b, "spec.size"))),
        Column("CHUNKS", lambda b: len(field(b, "spec.chunks") or [])),
        Column("HOLDERS", lambda b: len(_holders(b)), narrow=True),
        Column("HOLDERS", lambda b: ",".join(_holders(b)) or "<none>", wide=True),
        Column(
            "SOURCE",
            lambda b: (field(b, "metadata.annotations") or {}).get("p2pkube.io/source") or "<none>",
        ),
        AGE,
        Column("LOCAL", lambda b: field(b, "status.local", "<unknown>"), wide=True),
    ),
)

# --- workloads -------------------------------------------------------------------------------


def _int(obj: dict[str, Any], path: str) -> int:
    value = field(obj, path, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _template_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    containers = field(obj, "spec.template.spec.containers") or []
    return [c for c in containers if isinstance(c, dict)]


def _container_names(obj: dict[str, Any]) -> str:
    return ",".join(str(c.get("name", "")) for c in _template_containers(obj)) or "<none>"


def _container_images(obj: dict[str, Any]) -> str:
    images = [short_digest(str(c.get("image", ""))) for c in _template_containers(obj)]
    return ",".join(images) or "<none>"


def _selector(obj: dict[str, Any]) -> str:
    return format_selector(field(obj, "spec.selector.matchLabels"))


_TEMPLATE_COLUMNS = (
    Column("CONTAINERS", _container_names, wide=True),
    Column("IMAGES", _container_images, wide=True),
)
_WORKLOAD_TAIL = (AGE, *_TEMPLATE_COLUMNS, Column("SELECTOR", _selector, wide=True))
"""The last columns of Deployments, ReplicaSets and DaemonSets."""


DEPLOYMENTS = Resource(
    kind="Deployment",
    names=("deployments", "deployment", "deploy"),
    namespaced=True,
    columns=(
        NAME,
        Column("READY", lambda d: f"{_int(d, 'status.readyReplicas')}/{_int(d, 'spec.replicas')}"),
        Column("UP-TO-DATE", lambda d: _int(d, "status.updatedReplicas")),
        Column("AVAILABLE", lambda d: _int(d, "status.availableReplicas")),
        *_WORKLOAD_TAIL,
    ),
)

REPLICASETS = Resource(
    kind="ReplicaSet",
    names=("replicasets", "replicaset", "rs"),
    namespaced=True,
    columns=(
        NAME,
        Column("DESIRED", lambda r: _int(r, "spec.replicas")),
        Column("CURRENT", lambda r: _int(r, "status.replicas")),
        Column("READY", lambda r: _int(r, "status.readyReplicas")),
        *_WORKLOAD_TAIL,
    ),
)


def has_condition(obj: dict[str, Any], kind: str) -> bool:
    """Whether ``status.conditions`` holds ``kind`` with status True."""
    return any(
        isinstance(c, dict) and c.get("type") == kind and c.get("status") == "True"
        for c in field(obj, "status.conditions") or []
    )


def job_status(job: dict[str, Any]) -> str:
    """kubectl 1.28's Job STATUS: Complete, Failed, Terminating or Running."""
    if has_condition(job, "Complete"):
        return "Complete"
    if has_condition(job, "Failed"):
        return "Failed"
    if field(job, "metadata.deletionTimestamp"):
        return "Terminating"
    return "Running"


def job_duration(job: dict[str, Any], now: datetime | None = None) -> str:
    """From the start to completion (or to now while it runs); "" before it started."""
    start = parse_datetime(field(job, "status.startTime"))
    if start is None:
        return ""
    end = parse_datetime(field(job, "status.completionTime")) or now or utc_now()
    return human_duration((end - start).total_seconds())


JOBS = Resource(
    kind="Job",
    names=("jobs", "job"),
    namespaced=True,
    columns=(
        NAME,
        Column("STATUS", job_status),
        Column(
            "COMPLETIONS",
            lambda j: f"{_int(j, 'status.succeeded')}/{field(j, 'spec.completions', 1)}",
        ),
        Column("DURATION", job_duration),
        AGE,
        *_TEMPLATE_COLUMNS,
        Column(
            "SELECTOR",
            lambda j: f"controller-uid={field(j, 'metadata.uid', '')}",
            wide=True,
        ),
    ),
)


def _cronjob_containers(cronjob: dict[str, Any]) -> list[dict[str, Any]]:
    containers = field(cronjob, "spec.jobTemplate.spec.template.spec.containers") or []
    return [c for c in containers if isinstance(c, dict)]


def _last_schedule(cronjob: dict[str, Any]) -> str:
    """kubectl's LAST SCHEDULE: how long ago the last Job was scheduled, ``<none>`` before."""
    last = field(cronjob, "status.lastScheduleTime")
    return format_age(last) if last else "<none>"


CRONJOBS = Resource(
    kind="CronJob",
    names=("cronjobs", "cronjob", "cj"),
    namespaced=True,
    columns=(
        NAME,
        Column("SCHEDULE", lambda c: field(c, "spec.schedule", "")),
        Column("TIMEZONE", lambda c: field(c, "spec.timeZone") or "<none>"),
        Column("SUSPEND", lambda c: "True" if field(c, "spec.suspend") else "False"),
        Column("ACTIVE", lambda c: len(field(c, "status.active") or [])),
        Column("LAST SCHEDULE", _last_schedule),
        AGE,
        Column(
            "CONTAINERS",
            lambda c: ",".join(str(x.get("name", "")) for x in _cronjob_containers(c)) or "<none>",
            wide=True,
        ),
        Column(
            "IMAGES",
            lambda c: (
                ",".join(short_digest(str(x.get("image", ""))) for x in _cronjob_containers(c))
                or "<none>"
            ),
            wide=True,
        ),
        Column("SELECTOR", lambda c: "<none>", wide=True),  # a jobTemplate has no selector
    ),
)

DAEMONSETS = Resource(
    kind="DaemonSet",
    names=("daemonsets", "daemonset", "ds"),
    namespaced=True,
    columns=(
        NAME,
        Column("DESIRED", lambda d: _int(d, "status.desiredNumberScheduled")),
        Column("CURRENT", lambda d: _int(d, "status.currentNumberScheduled")),
        Column("READY", lambda d: _int(d, "status.numberReady")),
        Column("UP-TO-DATE", lambda d: _int(d, "status.updatedNumberScheduled")),
        Column("AVAILABLE", lambda d: _int(d, "status.numberAvailable")),
        Column(
            "NODE SELECTOR", lambda d: format_selector(field(d, "spec.template.spec.nodeSelector"))
        ),
        *_WORKLOAD_TAIL,
    ),
)


def event_object(event: dict[str, Any]) -> str:
    """``kind/name`` of what an event is about, as ``kubectl get events`` shows it."""
    kind = str(field(event, "involvedObject.kind") or "").lower()
    return f"{kind}/{field(event, 'involvedObject.name') or ''}"


def event_source(event: dict[str, Any]) -> str:
    """``component/host``: which part of which node reported the event."""
    component = str(field(event, "source.component") or "")
    host = str(field(event, "source.host") or "")
    return "/".join(part for part in (component, host) if part) or "<unknown>"


def event_message(event: dict[str, Any]) -> str:
    """The message on one line, runs of whitespace as one space."""
    return " ".join(str(event.get("message") or "").split())


def event_last_seen(event: dict[str, Any]) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("firstTimestamp")
        or field(event, "metadata.creationTimestamp", "")
    )


EVENTS = Resource(
    kind="Event",
    names=("events", "event", "ev"),
    namespaced=True,
    undeletable="each node deletes the events it wrote after events.ttl",
    sort_key=lambda e: parse_datetime(event_last_seen(e)) or datetime.min.replace(tzinfo=UTC),
    columns=(
        Column("LAST SEEN", lambda e: format_age(event_last_seen(e))),
        Column("TYPE", lambda e: e.get("type") or "Normal"),
        Column("REASON", lambda e: e.get("reason") or ""),
        Column("OBJECT", event_object),
        Column("SOURCE", event_source, wide=True),
        Column("MESSAGE", event_message),
        Column("FIRST SEEN", lambda e: format_age(e.get("firstTimestamp")), wide=True),
        Column("COUNT", lambda e: e.get("count", 1), wide=True),
        Column("NAME", name_of, wide=True),
    ),
)

RESOURCES: tuple[Resource, ...] = (
    NODES,
    PODS,
    DEPLOYMENTS,
    REPLICASETS,
    JOBS,
    CRONJOBS,
    DAEMONSETS,
    CONFIGMAPS,
    SECRETS,
    NAMESPACES,
    SERVICES,
    ENDPOINTS,
    EVENTS,
    BLOBS,
)


_GROUPS = (".apps", ".batch", ".v1")


def find_resource(name: str) -> Resource | None:
    """The resource a user typed (``nodes``, ``cm``, ``ConfigMap``, ``deployments.apps``...),
    or None."""
    wanted = name.lower()
    for group in _GROUPS:
        wanted = wanted.removesuffix(group)
    for resource in RESOURCES:
        if wanted in resource.names or wanted == resource.singular:
            return resource
    return None
