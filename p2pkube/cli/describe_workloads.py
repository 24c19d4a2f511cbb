"""``describe`` of the workloads: Deployments (with their ReplicaSets old and new, as kubectl
finds them), ReplicaSets, Jobs, CronJobs and DaemonSets; and the revision helpers ``rollout``
shares."""

from __future__ import annotations

from typing import Any

from p2pkube.cli.describe_pods import pod_template
from p2pkube.cli.describe_sections import (
    Lookup,
    conditions,
    controlled_by,
    events,
    format_time,
    header,
    pods_status,
)
from p2pkube.cli.output import field, format_selector, human_duration
from p2pkube.cli.tabwriter import Writer
from p2pkube.model.timestamps import parse_datetime

TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


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
    """kubectl's DeploymentDescriber."""
    w = Writer()
    meta, spec = deployment.get("metadata") or {}, deployment.get("spec") or {}
    status = deployment.get("status") or {}
    header(w, deployment, ("CreationTimestamp:", format_time(meta.get("creationTimestamp"))))
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
    conditions(w, deployment, ("type", "status", "reason"))
    new, old = deployment_replicasets(deployment, lookup.owned("ReplicaSet", deployment))
    w.line(0, "OldReplicaSets:", _replicasets([rs for rs in old if field(rs, "spec.replicas")]))
    w.line(0, "NewReplicaSet:", _replicasets([new] if new else []))
    events(w, lookup.events(deployment))
    return w.text()


def describe_replicaset(rs: dict[str, Any], lookup: Lookup) -> str:
    """kubectl's ReplicaSetDescriber."""
    w = Writer()
    spec = rs.get("spec") or {}
    header(w, rs, ("Selector:", format_selector(field(spec, "selector.matchLabels"))))
    controlled_by(w, rs)
    w.line(
        0,
        "Replicas:",
        f"{field(rs, 'status.replicas', 0)} current / {spec.get('replicas', 1)} desired",
    )
    w.line(0, "Pods Status:", pods_status(lookup.owned("Pod", rs)))
    pod_template(w, spec.get("template"))
    events(w, lookup.events(rs))
    return w.text()


def describe_job(job: dict[str, Any], lookup: Lookup) -> str:
    """kubectl's JobDescriber."""
    w = Writer()
    meta, spec = job.get("metadata") or {}, job.get("spec") or {}
    status = job.get("status") or {}
    header(w, job, ("Selector:", f"controller-uid={meta.get('uid', '')}"))
    controlled_by(w, job)
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
    conditions(w, job, ("type", "status", "reason", "message"))
    events(w, lookup.events(job))
    return w.text()


def describe_daemonset(ds: dict[str, Any], lookup: Lookup) -> str:
    """kubectl's DaemonSetDescriber."""
    w = Writer()
    spec, status = ds.get("spec") or {}, ds.get("status") or {}
    header(
        w,
        ds,
        ("Selector:", format_selector(field(spec, "selector.matchLabels"))),
        ("Node-Selector:", format_selector(field(spec, "template.spec.nodeSelector"))),
    )
    w.line(0, "Update Strategy:", field(spec, "updateStrategy.type", "RollingUpdate"))
    for title, key in (
        ("Desired Number of Nodes Scheduled", "desiredNumberScheduled"),
        ("Current Number of Nodes Scheduled", "currentNumberScheduled"),
        ("Number of Nodes Scheduled with Up-to-date Pods", "updatedNumberScheduled"),
        ("Number of Nodes Scheduled with Available Pods", "numberAvailable"),
        ("Number of Nodes Misscheduled", "numberMisscheduled"),
    ):
        w.line(0, f"{title}: {status.get(key, 0)}")
    w.line(0, "Pods Status:", pods_status(lookup.owned("Pod", ds)))
    pod_template(w, spec.get("template"))
    events(w, lookup.events(ds))
    return w.text()


def describe_cronjob(cronjob: dict[str, Any], lookup: Lookup) -> str:
    """kubectl's CronJobDescriber (with its job template, as describeJobTemplate shows it)."""
    w = Writer()
    spec, status = cronjob.get("spec") or {}, cronjob.get("status") or {}
    header(w, cronjob)
    w.line(0, "Schedule:", spec.get("schedule", ""))
    if spec.get("timeZone"):
        w.line(0, "Time Zone:", spec["timeZone"])
    w.line(0, "Concurrency Policy:", spec.get("concurrencyPolicy", "Allow"))
    w.line(0, "Suspend:", "True" if spec.get("suspend") else "False")
    for title, key in (
        ("Successful Job History Limit", "successfulJobsHistoryLimit"),
        ("Failed Job History Limit", "failedJobsHistoryLimit"),
    ):
        w.line(0, f"{title}:", spec.get(key, "<unset>"))
    deadline = spec.get("startingDeadlineSeconds")
    w.line(0, "Starting Deadline Seconds:", "<unset>" if deadline is None else f"{deadline}s")
    job = field(spec, "jobTemplate.spec") or {}
    w.line(0, "Selector:", "<unset>")
    w.line(0, "Parallelism:", job.get("parallelism", "<unset>"))
    w.line(0, "Completions:", job.get("completions", "<unset>"))
    if job.get("activeDeadlineSeconds"):
        w.line(0, "Active Deadline Seconds:", f"{job['activeDeadlineSeconds']}s")
    pod_template(w, job.get("template"))
    last = status.get("lastScheduleTime")
    w.line(0, "Last Schedule Time:", format_time(last) if last else "<unset>")
    names = [str(r.get("name")) for r in status.get("active") or [] if isinstance(r, dict)]
    w.line(0, "Active Jobs:", ", ".join(names) or "<none>")
    events(w, lookup.events(cronjob))
    return w.text()
