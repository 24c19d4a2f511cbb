"""``p2pkube describe``: kubectl's multi-line descriptions of pods, workloads, nodes, configmaps.

Each describer writes ``key<TAB>value`` lines through :class:`Writer`, which aligns them the way
kubectl's tabwriter does (Go's text/tabwriter, padding 2: a column is aligned over the run of
consecutive lines that have it), so the output reads like kubectl's line for line. Events come
last, those whose ``involvedObject.uid`` is the object's, oldest first, with kubectl's
``AGE (xN over M)`` for repeats.

Like kubectl, ``describe pods web`` describes every pod whose name starts with ``web`` when no
pod is called exactly that (pod names end in a random suffix), and ``describe pods`` with no
name describes them all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import click

from p2pkube.api.client import ApiClient, ApiError
from p2pkube.cli.common import (
    DEFAULT_NAMESPACE,
    CliError,
    KubectlCommand,
    State,
    all_namespaces_option,
    data_dir_option,
    namespace_option,
    selector_option,
)
from p2pkube.cli.output import (
    Resource,
    event_last_seen,
    field,
    find_resource,
    format_age,
    format_selector,
    human_duration,
)
from p2pkube.model.quantity import format_bytes, format_cpu, parse_quantity
from p2pkube.model.resources import container_requests
from p2pkube.model.timestamps import parse_datetime

TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"

LEVELS = ("", "  ", "    ", "      ", "        ")
_EPOCH = datetime.min.replace(tzinfo=UTC)
"""Indentation of kubectl's describe levels 0 to 4."""


# --- text/tabwriter ----------------------------------------------------------------------------


class Writer:
    """Lines of cells, formatted like Go's ``tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)``.

    ``line(level, "Name:", value)`` is kubectl's ``w.Write(LEVEL, "Name:\\t%s\\n", value)``:
    every cell but the last is tab-terminated and aligned with the same column of the
    neighbouring lines that have it; a line with one cell ends every alignment block. Cells
    are kept apart rather than joined with tabs, so a tab inside a value changes nothing.
    """

    def __init__(self) -> None:
        self.rows: list[list[str]] = []

    def line(self, level: int, *cells: Any) -> None:
        texts = ["" if c is None else str(c) for c in cells] or [""]
        texts[0] = LEVELS[level] + texts[0]
        *head, last = texts
        first, *more = last.split("\n") if last else [""]
        self.rows.append([*head, first])
        for extra in more:  # a multi-line value continues under its first line
            self.rows.append([*([""] * len(head)), extra])

    def text(self) -> str:
        out: list[str] = []
        widths: list[int] = []
        rows = self.rows

        def write(start: int, end: int) -> None:
            for row in rows[start:end]:
                cells = [
                    cell.ljust(widths[j]) if j < len(widths) else cell for j, cell in enumerate(row)
                ]
                out.append("".join(cells).rstrip())

        def block(start: int, end: int) -> None:
            column = len(widths)
            this = start
            while this < end:
                if column >= len(rows[this]) - 1:
                    this += 1
                    continue
                write(start, this)
                start = this
                width = 0
                while this < end and column < len(rows[this]) - 1:
                    width = max(width, len(rows[this][column]) + 2)
                    this += 1
                widths.append(width)
                block(start, this)
                widths.pop()
                start = this
            write(start, end)

        block(0, len(rows))
        return "\n".join(out) + "\n"


# --- formatting helpers ----------------------------------------------------------------------


def format_time(ts: Any) -> str:
    """kubectl's describe time (Go's RFC1123Z, local time): ``Tue, 01 Dec 2026 15:50:10 +0000``;
    ``<unknown>`` if unreadable."""
    then = parse_datetime(ts)
    if then is None:
        return "<unknown>"
    return then.astimezone().strftime("%a, %d %b %Y %H:%M:%S %z")


def _labels(w: Writer, title: str, labels: Any, level: int = 0) -> None:
    items = sorted(labels.items()) if isinstance(labels, dict) else []
    if not items:
        w.line(level, f"{title}:", "<none>")
        return
    for i, (key, value) in enumerate(items):
        w.line(level, f"{title}:" if i == 0 else "", f"{key}={value}")


def _annotations(w: Writer, title: str, annotations: Any, level: int = 0) -> None:
    items = sorted(annotations.items()) if isinstance(annotations, dict) else []
    if not items:
        w.line(level, f"{title}:", "<none>")
        return
    for i, (key, value) in enumerate(items):
        w.line(level, f"{title}:" if i == 0 else "", f"{key}: {value}")


def _bool(value: Any) -> str:
    return "True" if value else "False"


def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in field(obj, "metadata.ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def _controlled_by(w: Writer, obj: dict[str, Any]) -> None:
    ref = controller_ref(obj)
    if ref is not None:
        w.line(0, "Controlled By:", f"{ref.get('kind')}/{ref.get('name')}")


def without_hash(template: Any) -> Any:
    """A pod template without the ``pod-template-hash`` label its ReplicaSet adds."""
    if not isinstance(template, dict):
        return template
    meta = dict(template.get("metadata") or {})
    meta["labels"] = {
        k: v for k, v in (meta.get("labels") or {}).items() if k != TEMPLATE_HASH_LABEL
    }
    return {**template, "metadata": meta}


def revision(rs: dict[str, Any]) -> int:
    """The ``deployment.kubernetes.io/revision`` of a ReplicaSet (0 when absent or bad)."""
    try:
        return int((field(rs, "metadata.annotations") or {}).get(REVISION_ANNOTATION, 0))
    except (TypeError, ValueError):
        return 0


# --- what describers look up -----------------------------------------------------------------


@dataclass
class Lookup:
    """Related objects (events, pods, replica sets), each kind listed once per namespace."""

    client: ApiClient
    show_events: bool = True
    _lists: dict[tuple[str, str | None], list[dict[str, Any]]] = dataclass_field(
        default_factory=dict
    )

    def objects(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        key = (kind, namespace)
        if key not in self._lists:
            self._lists[key] = self.client.list_objects(kind, namespace)
        return self._lists[key]

    def events(self, obj: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The events about ``obj``, oldest first; None when --show-events=false."""
        if not self.show_events:
            return None
        meta = obj.get("metadata") or {}
        uid, namespace = meta.get("uid"), meta.get("namespace") or ""
        found = [
            e
            for e in self.objects("Event", namespace)
            if (field(e, "involvedObject.uid") == uid and uid)
            or (
                not field(e, "involvedObject.uid")
                and field(e, "involvedObject.kind") == obj.get("kind")
                and field(e, "involvedObject.name") == meta.get("name")
            )
        ]
        return sorted(found, key=lambda e: parse_datetime(event_last_seen(e)) or _EPOCH)

    def owned(self, kind: str, owner: dict[str, Any]) -> list[dict[str, Any]]:
        """Objects of ``kind`` whose controller is ``owner``."""
        uid = field(owner, "metadata.uid")
        return [
            o
            for o in self.objects(kind, field(owner, "metadata.namespace") or DEFAULT_NAMESPACE)
            if (controller_ref(o) or {}).get("uid") == uid and uid
        ]


def _events(w: Writer, events: list[dict[str, Any]] | None) -> None:
    if events is None:
        return
    if not events:
        w.line(0, "Events:", "<none>")
        return
    w.line(0, "Events:")
    w.line(1, "Type", "Reason", "Age", "From", "Message")
    w.line(1, "----", "------", "----", "----", "-------")
    for event in events:
        count = event.get("count") or 1
        if isinstance(count, int) and count > 1:
            age = (
                f"{format_age(event.get('lastTimestamp'))} (x{count} over "
                f"{format_age(event.get('firstTimestamp'))})"
            )
        else:
            age = format_age(event.get("firstTimestamp") or event_last_seen(event))
        component = field(event, "source.component") or ""
        host = field(event, "source.host") or ""
        source = "/".join(str(p) for p in (component, host) if p) or "<unknown>"
        message = " ".join(str(event.get("message") or "").split())
        w.line(1, event.get("type") or "Normal", event.get("reason") or "", age, source, message)


def _pods_status(pods: list[dict[str, Any]]) -> str:
    phases = [str(field(p, "status.phase") or "Pending") for p in pods]
    return (
        f"{phases.count('Running')} Running / {phases.count('Pending')} Waiting / "
        f"{phases.count('Succeeded')} Succeeded / {phases.count('Failed')} Failed"
    )


# --- containers, volumes, templates ----------------------------------------------------------


def _state(w: Writer, title: str, state: Any) -> None:
    state = state if isinstance(state, dict) else {}
    if isinstance(state.get("running"), dict):
        w.line(2, f"{title}:", "Running")
        w.line(3, "Started:", format_time(state["running"].get("startedAt")))
    elif isinstance(state.get("terminated"), dict):
        ended = state["terminated"]
        w.line(2, f"{title}:", "Terminated")
        if ended.get("reason"):
            w.line(3, "Reason:", ended["reason"])
        if ended.get("message"):
            w.line(3, "Message:", ended["message"])
        w.line(3, "Exit Code:", ended.get("exitCode", "<unknown>"))
        w.line(3, "Started:", format_time(ended.get("startedAt")))
        w.line(3, "Finished:", format_time(ended.get("finishedAt")))
    else:
        waiting = state.get("waiting") if isinstance(state.get("waiting"), dict) else {}
        w.line(2, f"{title}:", "Waiting")
        if waiting.get("reason"):
            w.line(3, "Reason:", waiting["reason"])
        if waiting.get("message"):
            w.line(3, "Message:", waiting["message"])


def _containers(
    w: Writer,
    containers: Any,
    statuses: Any = None,
    *,
    space: str = "",
) -> None:
    """kubectl's describeContainers; ``space`` indents a pod template's ("  ")."""
    w.line(0, f"{space}Containers:")
    by_name = {s.get("name"): s for s in statuses or [] if isinstance(s, dict) and s.get("name")}
    for container in containers or []:
        if not isinstance(container, dict):
            continue
        name = container.get("name", "")
        w.line(1, f"{' ' if space else ''}{name}:")
        status = by_name.get(name)
        w.line(2, "Image:", container.get("image", "<none>"))
        if status is not None and status.get("imageID"):
            w.line(2, "Image ID:", status["imageID"])
        for title in ("command", "args"):
            values = container.get(title)
            if values:
                w.line(2, f"{title.capitalize()}:")
                for value in values:
                    for part in str(value).split("\n"):
                        w.line(3, part)
        if container.get("stdinData"):
            w.line(2, "Stdin:", f"{len(str(container['stdinData']).encode())} bytes")
        if status is not None:
            _state(w, "State", status.get("state"))
            last = status.get("lastState")
            if isinstance(last, dict) and isinstance(last.get("terminated"), dict):
                _state(w, "Last State", last)
            w.line(2, "Ready:", _bool(status.get("ready")))
            w.line(2, "Restart Count:", status.get("restartCount", 0))
        resources = container.get("resources") or {}
        for title in ("limits", "requests"):
            values = resources.get(title) or {}
            if values:
                w.line(2, f"{title.capitalize()}:")
                for key, value in sorted(values.items()):
                    w.line(3, f"{key}:", value)
        env = [e for e in container.get("env") or [] if isinstance(e, dict)]
        if env:
            w.line(2, "Environment:")
            for var in env:
                w.line(3, f"{var.get('name')}:", var.get("value", ""))
        else:
            w.line(2, "Environment:", "<none>")
        mounts = [m for m in container.get("volumeMounts") or [] if isinstance(m, dict)]
        if mounts:
            w.line(2, "Mounts:")
            for mount in mounts:
                mode = "ro" if mount.get("readOnly", True) else "rw"
                w.line(3, f"{mount.get('mountPath')} from {mount.get('name')} ({mode})")
        else:
            w.line(2, "Mounts:", "<none>")


def _volumes(w: Writer, volumes: Any, space: str = "") -> None:
    volumes = [v for v in volumes or [] if isinstance(v, dict)]
    if not volumes:
        w.line(0, f"{space}Volumes:", "<none>")
        return
    w.line(0, f"{space}Volumes:")
    for volume in volumes:
        w.line(1, f"{' ' if space else ''}{volume.get('name')}:")
        if isinstance(volume.get("hostPath"), dict):
            w.line(2, "Type:", "HostPath (bare host directory volume)")
            w.line(2, "Path:", volume["hostPath"].get("path", ""))
        elif "emptyDir" in volume:
            w.line(2, "Type:", "EmptyDir (a temporary directory that shares a pod's lifetime)")
        else:
            w.line(2, "Type:", "<unknown>")


def pod_template(w: Writer, template: Any) -> None:
    """kubectl's DescribePodTemplate."""
    w.line(0, "Pod Template:")
    if not isinstance(template, dict):
        w.line(1, "<unset>")
        return
    meta = template.get("metadata") or {}
    spec = template.get("spec") or {}
    _labels(w, "  Labels", meta.get("labels"))
    if meta.get("annotations"):
        _annotations(w, "  Annotations", meta["annotations"])
    _containers(w, spec.get("containers"), space="  ")
    _volumes(w, spec.get("volumes"), space="  ")
    if spec.get("nodeSelector"):
        _labels(w, "  Node-Selectors", spec["nodeSelector"])


# --- the describers ----------------------------------------------------------------------------


def describe_pod(pod: dict[str, Any], lookup: Lookup) -> str:
    w = Writer()
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    status = pod.get("status") or {}
    w.line(0, "Name:", meta.get("name"))
    w.line(0, "Namespace:", meta.get("namespace"))
    w.line(0, "Node:", spec.get("nodeName") or "<none>")
    if status.get("startTime"):
        w.line(0, "Start Time:", format_time(status["startTime"]))
    _labels(w, "Labels", meta.get("labels"))
    _annotations(w, "Annotations", meta.get("annotations"))
    if meta.get("deletionTimestamp"):
        w.line(0, "Status:", f"Terminating (lasts {format_age(meta['deletionTimestamp'])})")
        w.line(0, "Termination Grace Period:", f"{spec.get('terminationGracePeriodSeconds', 30)}s")
    else:
        w.line(0, "Status:", status.get("phase") or "Pending")
    if status.get("reason"):
        w.line(0, "Reason:", status["reason"])
    if status.get("message"):
        w.line(0, "Message:", status["message"])
    _controlled_by(w, pod)
    _containers(w, spec.get("containers"), status.get("containerStatuses"))
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if conditions:
        detailed = any(c.get("reason") or c.get("message") for c in conditions)
        w.line(0, "Conditions:")
        if detailed:
            w.line(1, "Type", "Status", "Reason", "Message")
            for c in conditions:
                w.line(1, c.get("type"), c.get("status"), c.get("reason", ""), c.get("message", ""))
        else:
            w.line(1, "Type", "Status")
            for c in conditions:
                w.line(1, c.get("type"), c.get("status"))
    _volumes(w, spec.get("volumes"))
    if spec.get("activeDeadlineSeconds"):
        w.line(0, "Active Deadline Seconds:", f"{spec['activeDeadlineSeconds']}s")
    w.line(0, "Restart Policy:", spec.get("restartPolicy", "Always"))
    _labels(w, "Node-Selectors", spec.get("nodeSelector"))
    _events(w, lookup.events(pod))
    return w.text()


def _replicasets(sets: list[dict[str, Any]]) -> str:
    return (
        ", ".join(
            f"{field(rs, 'metadata.name')} ({field(rs, 'status.replicas', 0)}/"
            f"{field(rs, 'spec.replicas', 0)} replicas created)"
            for rs in sets
        )
        or "<none>"
    )


def current_hash(deployment: dict[str, Any]) -> str | None:
    """The ``pod-template-hash`` the Deployment controller gives the ReplicaSet of the
    deployment's current template (None if it cannot be computed)."""
    from p2pkube.sched.view import template_hash  # the controller's own function

    template = field(deployment, "spec.template")
    return template_hash(template) if isinstance(template, dict) else None


def is_current(deployment: dict[str, Any], rs: dict[str, Any]) -> bool:
    """Whether ``rs`` holds the deployment's current pod template: its pod-template-hash is
    the controller's hash of that template, or (kubectl's test) its template equals the
    deployment's but for that label."""
    labels = field(rs, "metadata.labels") or {}
    if labels.get(TEMPLATE_HASH_LABEL) and labels.get(TEMPLATE_HASH_LABEL) == current_hash(
        deployment
    ):
        return True
    return without_hash(field(rs, "spec.template")) == without_hash(
        field(deployment, "spec.template")
    )


def deployment_replicasets(
    deployment: dict[str, Any], owned: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the ReplicaSet of the current template, the others newest first), as kubectl's
    GetAllReplicaSets finds them."""
    new = next((rs for rs in owned if is_current(deployment, rs)), None)
    old = [rs for rs in owned if rs is not new]
    old.sort(key=revision, reverse=True)
    return new, old


def describe_deployment(deployment: dict[str, Any], lookup: Lookup) -> str:
    w = Writer()
    meta, spec = deployment.get("metadata") or {}, deployment.get("spec") or {}
    status = deployment.get("status") or {}
    w.line(0, "Name:", meta.get("name"))
    w.line(0, "Namespace:", meta.get("namespace"))
    w.line(0, "CreationTimestamp:", format_time(meta.get("creationTimestamp")))
    _labels(w, "Labels", meta.get("labels"))
    _annotations(w, "Annotations", meta.get("annotations"))
    w.line(0, "Selector:", format_selector(field(spec, "selector.matchLabels")))
    w.line(
        0,
        "Replicas:",
        f"{spec.get('replicas', 1)} desired | {status.get('updatedReplicas', 0)} updated | "
        f"{status.get('replicas', 0)} total | {status.get('availableReplicas', 0)} available | "
        f"{status.get('unavailableReplicas', 0)} unavailable",
    )
    strategy = spec.get("strategy") or {}
    w.line(0, "StrategyType:", strategy.get("type", "RollingUpdate"))
    rolling = strategy.get("rollingUpdate")
    if isinstance(rolling, dict):
        w.line(
            0,
            "RollingUpdateStrategy:",
            f"{rolling.get('maxUnavailable', '25%')} max unavailable, "
            f"{rolling.get('maxSurge', '25%')} max surge",
        )
    if status.get("revision"):
        w.line(0, "Revision:", status["revision"])
    pod_template(w, spec.get("template"))
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if conditions:
        w.line(0, "Conditions:")
        w.line(1, "Type", "Status", "Reason")
        w.line(1, "----", "------", "------")
        for c in conditions:
            w.line(1, c.get("type"), c.get("status"), c.get("reason", ""))
    new, old = deployment_replicasets(deployment, lookup.owned("ReplicaSet", deployment))
    w.line(0, "OldReplicaSets:", _replicasets([rs for rs in old if field(rs, "spec.replicas")]))
    w.line(0, "NewReplicaSet:", _replicasets([new] if new else []))
    _events(w, lookup.events(deployment))
    return w.text()


def describe_replicaset(rs: dict[str, Any], lookup: Lookup) -> str:
    w = Writer()
    meta, spec = rs.get("metadata") or {}, rs.get("spec") or {}
    w.line(0, "Name:", meta.get("name"))
    w.line(0, "Namespace:", meta.get("namespace"))
    w.line(0, "Selector:", format_selector(field(spec, "selector.matchLabels")))
    _labels(w, "Labels", meta.get("labels"))
    _annotations(w, "Annotations", meta.get("annotations"))
    _controlled_by(w, rs)
    w.line(
        0,
        "Replicas:",
        f"{field(rs, 'status.replicas', 0)} current / {spec.get('replicas', 1)} desired",
    )
    w.line(0, "Pods Status:", _pods_status(lookup.owned("Pod", rs)))
    pod_template(w, spec.get("template"))
    _events(w, lookup.events(rs))
    return w.text()


def describe_job(job: dict[str, Any], lookup: Lookup) -> str:
    w = Writer()
    meta, spec = job.get("metadata") or {}, job.get("spec") or {}
    status = job.get("status") or {}
    w.line(0, "Name:", meta.get("name"))
    w.line(0, "Namespace:", meta.get("namespace"))
    w.line(0, "Selector:", f"controller-uid={meta.get('uid', '')}")
    _labels(w, "Labels", meta.get("labels"))
    _annotations(w, "Annotations", meta.get("annotations"))
    _controlled_by(w, job)
    w.line(0, "Parallelism:", spec.get("parallelism", 1))
    w.line(0, "Completions:", spec.get("completions", 1))
    w.line(0, "Backoff Limit:", spec.get("backoffLimit", 6))
    start = parse_datetime(status.get("startTime"))
    end = parse_datetime(status.get("completionTime"))
    if start is not None:
        w.line(0, "Start Time:", format_time(status["startTime"]))
    if end is not None:
        w.line(0, "Completed At:", format_time(status["completionTime"]))
    if start is not None and end is not None:
        w.line(0, "Duration:", human_duration((end - start).total_seconds()))
    if spec.get("activeDeadlineSeconds"):
        w.line(0, "Active Deadline Seconds:", f"{spec['activeDeadlineSeconds']}s")
    w.line(
        0,
        "Pods Statuses:",
        f"{status.get('active', 0)} Active / {status.get('succeeded', 0)} Succeeded / "
        f"{status.get('failed', 0)} Failed",
    )
    pod_template(w, spec.get("template"))
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if conditions:
        w.line(0, "Conditions:")
        w.line(1, "Type", "Status", "Reason", "Message")
        w.line(1, "----", "------", "------", "-------")
        for c in conditions:
            w.line(1, c.get("type"), c.get("status"), c.get("reason", ""), c.get("message", ""))
    _events(w, lookup.events(job))
    return w.text()


def describe_daemonset(ds: dict[str, Any], lookup: Lookup) -> str:
    w = Writer()
    meta, spec = ds.get("metadata") or {}, ds.get("spec") or {}
    status = ds.get("status") or {}
    w.line(0, "Name:", meta.get("name"))
    w.line(0, "Namespace:", meta.get("namespace"))
    w.line(0, "Selector:", format_selector(field(spec, "selector.matchLabels")))
    w.line(0, "Node-Selector:", format_selector(field(spec, "template.spec.nodeSelector")))
    _labels(w, "Labels", meta.get("labels"))
    _annotations(w, "Annotations", meta.get("annotations"))
    w.line(0, "Update Strategy:", field(spec, "updateStrategy.type", "RollingUpdate"))
    for title, key in (
        ("Desired Number of Nodes Scheduled", "desiredNumberScheduled"),
        ("Current Number of Nodes Scheduled", "currentNumberScheduled"),
        ("Number of Nodes Scheduled with Up-to-date Pods", "updatedNumberScheduled"),
        ("Number of Nodes Scheduled with Available Pods", "numberAvailable"),
        ("Number of Nodes Misscheduled", "numberMisscheduled"),
    ):
        w.line(0, f"{title}: {status.get(key, 0)}")
    w.line(0, "Pods Status:", _pods_status(lookup.owned("Pod", ds)))
    pod_template(w, spec.get("template"))
    _events(w, lookup.events(ds))
    return w.text()


_NODE_INFO = {
    "kind": "Kind",
    "agentVersion": "Agent Version",
    "nodeID": "Node ID",
    "pythonVersion": "Python Version",
}


def _quantity(value: Any) -> Fraction:
    try:
        return parse_quantity(value)
    except (TypeError, ValueError):
        return Fraction(0)


def _share(used: Fraction, total: Fraction) -> str:
    return f"{int(used * 100 / total) if total else 0}%"


def _limits(container: dict[str, Any]) -> tuple[Fraction, Fraction]:
    limits = (container.get("resources") or {}).get("limits") or {}
    return _quantity(limits.get("cpu", 0)), _quantity(limits.get("memory", 0))


def describe_node(node: dict[str, Any], lookup: Lookup) -> str:
    w = Writer()
    meta, status = node.get("metadata") or {}, node.get("status") or {}
    name = meta.get("name")
    w.line(0, "Name:", name)
    _labels(w, "Labels", meta.get("labels"))
    _annotations(w, "Annotations", meta.get("annotations"))
    w.line(0, "CreationTimestamp:", format_time(meta.get("creationTimestamp")))
    if "peers" in status:
        w.line(0, "Peers:", status["peers"])
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if conditions:
        w.line(0, "Conditions:")
        w.line(1, "Type", "Status", "LastHeartbeatTime", "LastTransitionTime", "Reason", "Message")
        w.line(1, "----", "------", "-----------------", "------------------", "------", "-------")
        for c in conditions:
            beat = format_time(c["lastHeartbeatTime"]) if c.get("lastHeartbeatTime") else "<none>"
            w.line(
                1,
                c.get("type"),
                c.get("status"),
                beat,
                format_time(c.get("lastTransitionTime")),
                c.get("reason", ""),
                c.get("message", ""),
            )
    capacity = status.get("capacity") or {}
    allocatable = status.get("allocatable") or capacity
    for title, values in (("Capacity", capacity), ("Allocatable", allocatable)):
        w.line(0, f"{title}:")
        for key, value in sorted(values.items()):
            w.line(1, f"{key}:", value)
    info = status.get("nodeInfo") or {}
    if info:
        w.line(0, "System Info:")
        for key, value in info.items():
            w.line(0, f"  {_NODE_INFO.get(key, key)}:", value)
    images = status.get("images") or []
    if isinstance(images, list):
        w.line(0, "Modules:", f"{len(images)} held completely (other nodes fetch them from here)")
    pods = [
        p
        for p in lookup.objects("Pod", None)
        if field(p, "spec.nodeName") == name
        and field(p, "status.phase") not in ("Succeeded", "Failed")
    ]
    pods.sort(key=lambda p: (field(p, "metadata.namespace", ""), field(p, "metadata.name", "")))
    cpu_total = _quantity(allocatable.get("cpu", 0))
    memory_total = _quantity(allocatable.get("memory", 0))
    w.line(0, "Non-terminated Pods:", f"({len(pods)} in total)")
    w.line(1, "Namespace", "Name", "", "CPU Requests", "CPU Limits", "Memory Requests",
           "Memory Limits", "Age")  # fmt: skip
    w.line(1, "---------", "----", "", "------------", "----------", "---------------",
           "-------------", "---")  # fmt: skip
    sums = [Fraction(0)] * 4
    for pod in pods:
        containers = [c for c in field(pod, "spec.containers") or [] if isinstance(c, dict)]
        cpu_req = sum((container_requests(c).cpu for c in containers), Fraction(0))
        mem_req = Fraction(sum(container_requests(c).memory for c in containers))
        cpu_lim = sum((_limits(c)[0] for c in containers), Fraction(0))
        mem_lim = sum((_limits(c)[1] for c in containers), Fraction(0))
        for i, value in enumerate((cpu_req, cpu_lim, mem_req, mem_lim)):
            sums[i] += value
        w.line(
            1,
            field(pod, "metadata.namespace"),
            field(pod, "metadata.name"),
            "",
            f"{_cpu(cpu_req)} ({_share(cpu_req, cpu_total)})",
            f"{_cpu(cpu_lim)} ({_share(cpu_lim, cpu_total)})",
            f"{_memory(mem_req)} ({_share(mem_req, memory_total)})",
            f"{_memory(mem_lim)} ({_share(mem_lim, memory_total)})",
            format_age(field(pod, "metadata.creationTimestamp")),
        )
    w.line(0, "Allocated resources:")
    w.line(1, "(Total limits may be over 100 percent, i.e., overcommitted.)")
    w.line(1, "Resource", "Requests", "Limits")
    w.line(1, "--------", "--------", "------")
    w.line(
        1,
        "cpu",
        f"{_cpu(sums[0])} ({_share(sums[0], cpu_total)})",
        f"{_cpu(sums[1])} ({_share(sums[1], cpu_total)})",
    )
    w.line(
        1,
        "memory",
        f"{_memory(sums[2])} ({_share(sums[2], memory_total)})",
        f"{_memory(sums[3])} ({_share(sums[3], memory_total)})",
    )
    _events(w, lookup.events(node))
    return w.text()


def _cpu(value: Fraction) -> str:
    return format_cpu(value) if value else "0"


def _memory(value: Fraction) -> str:
    return format_bytes(int(value)) if value else "0"


def describe_configmap(cm: dict[str, Any], lookup: Lookup) -> str:
    w = Writer()
    meta = cm.get("metadata") or {}
    w.line(0, "Name:", meta.get("name"))
    w.line(0, "Namespace:", meta.get("namespace"))
    _labels(w, "Labels", meta.get("labels"))
    _annotations(w, "Annotations", meta.get("annotations"))
    w.line(0, "")
    w.line(0, "Data")
    w.line(0, "====")
    for key, value in sorted((cm.get("data") or {}).items()):
        w.line(0, f"{key}:")
        w.line(0, "----")
        for part in str(value).split("\n"):
            w.line(0, part)
        w.line(0, "")
    w.line(0, "")
    w.line(0, "BinaryData")
    w.line(0, "====")
    w.line(0, "")
    _events(w, lookup.events(cm))
    return w.text()


DESCRIBERS: dict[str, Callable[[dict[str, Any], Lookup], str]] = {
    "Pod": describe_pod,
    "Deployment": describe_deployment,
    "ReplicaSet": describe_replicaset,
    "Job": describe_job,
    "DaemonSet": describe_daemonset,
    "Node": describe_node,
    "ConfigMap": describe_configmap,
}


# --- the command -------------------------------------------------------------------------------


def _describable(name: str) -> Resource:
    resource = find_resource(name)
    if resource is None or resource.kind not in DESCRIBERS:
        known = ", ".join(r.plural for r in (find_resource(k) for k in DESCRIBERS) if r is not None)
        what = (
            f'the server doesn\'t have a resource type "{name}"'
            if resource is None
            else (f"{resource.plural} cannot be described (use get {resource.plural} -o yaml)")
        )
        raise CliError(f"{what}; describe knows: {known}")
    return resource


def find_objects(
    client: ApiClient,
    resource: Resource,
    namespace: str | None,
    name: str | None,
    selector: str | None = None,
    *,
    prefix: bool = True,
) -> list[dict[str, Any]]:
    """The objects ``describe`` means: one by name, else (``prefix``) those whose name starts
    with it, or every one (``name`` None) matching ``selector``. ApiError(404) if none."""
    ns = namespace if resource.namespaced else ""
    missing: ApiError | None = None
    if name is not None:
        try:
            if resource.kind == "Node":
                return [client.get_node(name)]
            return [client.get_object(resource.kind, ns or DEFAULT_NAMESPACE, name)]
        except ApiError as exc:
            if exc.code != 404 or not prefix:
                raise
            missing = exc
    if resource.kind == "Node":
        items = client.list_nodes(selector)
    else:
        items = client.list_objects(resource.kind, ns, selector)
    if name is not None:
        items = [o for o in items if str(field(o, "metadata.name", "")).startswith(name)]
        if not items and missing is not None:
            raise missing
    resource.sort(items)
    return items


def split_targets(resource_name: str, names: Sequence[str]) -> list[tuple[str, str | None]]:
    """(resource, name) pairs from ``RESOURCE [NAME...]`` or ``TYPE/NAME...``."""
    if "/" in resource_name:
        pairs = []
        for arg in (resource_name, *names):
            kind, slash, name = arg.partition("/")
            if not slash or not kind or not name:
                raise click.UsageError(
                    f"{arg!r}: give either RESOURCE NAME... or TYPE/NAME..., not both"
                )
            pairs.append((kind, name))
        return pairs
    return [(resource_name, name) for name in names] or [(resource_name, None)]


@click.command(cls=KubectlCommand)
@click.argument("resource_name", metavar="RESOURCE")
@click.argument("names", nargs=-1, metavar="[NAME_PREFIX...]")
@namespace_option
@all_namespaces_option
@selector_option
@click.option(
    "--show-events/--no-show-events",
    default=True,
    help="List the events about each object (the default; also --show-events=false).",
)
@data_dir_option
@click.pass_obj
def describe(
    state: State,
    resource_name: str,
    names: tuple[str, ...],
    namespace: str | None,
    all_namespaces: bool,
    selector: str | None,
    show_events: bool,
) -> None:
    """Show the details of objects and the events about them, like kubectl describe.

    RESOURCE is pods, deployments, replicasets, jobs, daemonsets, nodes or configmaps (or
    their short names: po, deploy, rs, ds, no, cm), optionally as TYPE/NAME. A NAME_PREFIX
    that is no object's exact name describes every object whose name starts with it; no name
    describes them all (-l narrows them down).
    """
    targets = split_targets(resource_name, names)
    if all_namespaces and any(name is not None for _, name in targets):
        raise click.UsageError("a NAME cannot be looked up across all namespaces (drop -A)")
    client = state.client()
    lookup = Lookup(client, show_events=show_events)
    ns = None if all_namespaces else (namespace or DEFAULT_NAMESPACE)
    texts: list[str] = []
    failed = False
    for kind, name in targets:
        resource = _describable(kind)
        try:
            found = find_objects(client, resource, ns, name, selector)
        except ApiError as exc:
            if exc.code != 404:
                raise
            click.echo(str(exc), err=True)  # go on with the other names, like kubectl
            failed = True
            continue
        texts += [DESCRIBERS[resource.kind](obj, lookup) for obj in found]
        if not found:
            where = f" in {ns} namespace" if resource.namespaced and ns else ""
            click.echo(f"No resources found{where}.", err=True)
    if texts:
        click.echo("\n\n".join(texts), nl=False)
    if failed:
        sys.exit(1)
