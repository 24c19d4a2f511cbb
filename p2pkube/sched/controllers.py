"""Controllers: from a workload and the cluster view, the writes that move it to its spec.

Each runs on the node that holds the workload's lease (``election.py``) and adds to a
:class:`~p2pkube.sched.view.Plan`. They are level-triggered and idempotent like Kubernetes':
a pass over a converged workload plans nothing, so a pass per state change costs no writes.

* ReplicaSet: exactly ``replicas`` active pods; creates them placed (``placement.place``),
  removes the surplus least valuable first (stale-lease pods first, see ``victims``), replaces
  pods whose node is lost (not Ready for ``pod_eviction_grace``, and admitted for eviction
  by the rate limits of ``eviction.py``) and pods that ended.
* Deployment: one ReplicaSet per pod template (named by its hash, numbered by revision), rolled
  with RollingUpdate (maxSurge / maxUnavailable) or Recreate; keeps ``revisionHistoryLimit``.
* Job: up to ``parallelism`` pods at a time until ``completions`` succeeded; Failed after
  ``backoffLimit`` failures or past ``activeDeadlineSeconds``.
* DaemonSet: one pod per Ready node that matches its node selector; rolls template changes
  one node at a time.
* Standalone pods without a node: placed by the node elected for them.
* CronJob: in ``cronjob.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2pkube.model.apiversions import api_version_of
from p2pkube.model.taints import (
    NO_EXECUTE,
    UNREACHABLE_KEY,
    tolerating,
    with_daemon_tolerations,
)
from p2pkube.model.timestamps import parse_time
from p2pkube.sched.election import LEASE_ANNOTATION
from p2pkube.sched.eviction import DEFERRED_REASON
from p2pkube.sched.placement import (
    NodeInfo,
    PodToPlace,
    host_paths,
    node_unschedulable,
    place,
    taint_toleration,
)
from p2pkube.sched.view import (
    TEMPLATE_HASH_LABEL,
    ClusterView,
    Plan,
    PodView,
    clone,
    controller_of,
    involved,
    name_suffix,
    owner_reference,
    template_hash,
)
from p2pkube.state import object_key
from p2pkube.state.store import OBJECTS, STATUS

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
"""Copied from a Deployment to each new ReplicaSet, so `rollout history` shows every cause."""
DS_HASH_LABEL = "controller-revision-hash"


@dataclass(frozen=True)
class Context:
    """What every controller needs besides the view: who acts, under which lease, how."""

    view: ClusterView
    plan: Plan
    lease: str
    """The acting lease's tag, recorded on what is created."""
    eviction_grace: float
    new_uid: Callable[[], str]
    failed_pod_backoff: float = 5.0
    """A pod that failed (or that its node refused) is replaced only once it is this old:
    a node or a module that fails every pod costs one attempt per interval, not one per pass."""


# -- pods ------------------------------------------------------------------------------------
def pod_from_template(
    ctx: Context,
    owner: dict[str, Any],
    template: dict[str, Any],
    *,
    prefix: str,
    labels: dict[str, str] | None = None,
    node: NodeInfo | None = None,
) -> dict[str, Any]:
    meta = template.get("metadata", {})
    owner_meta = owner["metadata"]
    spec = clone(template["spec"])
    if node is not None:
        spec["nodeName"] = node.name
    return {
        "apiVersion": api_version_of("Pod"),
        "kind": "Pod",
        "metadata": {
            "name": f"{prefix}-{name_suffix()}",
            "namespace": owner_meta.get("namespace", "default"),
            "uid": ctx.new_uid(),
            "creationTimestamp": ctx.view.now,
            "generation": 1,
            "labels": {**meta.get("labels", {}), **(labels or {})},
            "annotations": {**meta.get("annotations", {}), LEASE_ANNOTATION: ctx.lease},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": spec,
    }


def create_pod(ctx: Context, pod: dict[str, Any], owner_uid: str | None) -> None:
    """Place ``pod`` (unless its spec names a node) and plan its creation."""
    view, plan = ctx.view, ctx.plan
    key = object_key("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"])
    spec = pod["spec"]
    to_place = PodToPlace(spec, owner_uid)
    if not spec.get("nodeName"):
        placement = place(to_place, view.nodes.values())
        if placement.node is None:
            plan.put(OBJECTS, key, pod)
            plan.put(STATUS, key, unschedulable(pod, placement.diagnosis, view.now))
            plan.event(involved(pod), "FailedScheduling", placement.diagnosis, warning=True)
            return
        spec["nodeName"] = placement.node.name
        placement.node.assume(to_place)
        plan.event(
            involved(pod), "Scheduled", f"Successfully assigned {_ref(pod)} to {spec['nodeName']}"
        )
    else:
        node = view.nodes.get(spec["nodeName"])
        if node is not None:
            node.assume(to_place)
    plan.put(OBJECTS, key, pod)


def create_from_template(
    ctx: Context,
    owner: dict[str, Any],
    template: dict[str, Any],
    *,
    labels: dict[str, str],
    node: NodeInfo | None = None,
) -> None:
    """Create one more pod of ``owner`` (a ReplicaSet, Job or DaemonSet) from ``template``,
    placed (on ``node`` for a DaemonSet), with the owner's ``SuccessfulCreate`` event."""
    meta = owner["metadata"]
    pod = pod_from_template(ctx, owner, template, prefix=meta["name"], labels=labels, node=node)
    create_pod(ctx, pod, meta["uid"])
    ctx.plan.event(involved(owner), "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")


def unschedulable(pod: dict[str, Any], diagnosis: str, now: str) -> dict[str, Any]:
    return {
        "podUID": pod["metadata"]["uid"],
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": diagnosis,
                "lastTransitionTime": now,
            }
        ],
    }


def bind_pending(ctx: Context, pod: PodView) -> None:
    """Place a pod that has no node yet (it did not fit before, or a user created it)."""
    view, plan = ctx.view, ctx.plan
    to_place = PodToPlace(pod.obj["spec"], pod.owner, pod.requests)
    placement = place(to_place, view.nodes.values())
    if placement.node is None:
        status = unschedulable(pod.obj, placement.diagnosis, view.now)
        old = pod.status.get("conditions") or []
        if not old or old[0].get("message") != placement.diagnosis:
            plan.put(STATUS, pod.key, status)
            plan.event(involved(pod.obj), "FailedScheduling", placement.diagnosis, warning=True)
        return
    bound = clone(pod.obj)
    bound["spec"]["nodeName"] = placement.node.name
    placement.node.assume(to_place)
    plan.put(OBJECTS, pod.key, bound)
    plan.delete(STATUS, pod.key)  # the node's kubelet writes it from now on
    plan.event(
        involved(pod.obj),
        "Scheduled",
        f"Successfully assigned {_ref(pod.obj)} to {placement.node.name}",
    )


def delete_pod(ctx: Context, pod: PodView, reason: str, message: str) -> None:
    """Remove a pod: through its node's kubelet (graceful) if it is Ready, at once otherwise."""
    view, plan = ctx.view, ctx.plan
    node = view.nodes.get(pod.node or "")
    if pod.phase in ("Succeeded", "Failed") or node is None or not node.ready:
        plan.delete(OBJECTS, pod.key)
        plan.delete(STATUS, pod.key)
    elif not pod.terminating:
        marked = clone(pod.obj)
        marked["metadata"]["deletionTimestamp"] = view.now
        plan.put(OBJECTS, pod.key, marked)
    plan.event(involved(pod.obj), reason, message)


def evict_lost(ctx: Context, pods: list[PodView], owner: dict[str, Any]) -> list[PodView]:
    """Delete ``owner``'s pods whose node is lost and admitted for eviction (``eviction.py``:
    the rate limits), unless they tolerate the node's loss for longer (a toleration of
    ``node.kubernetes.io/unreachable:NoExecute``, ``_unreachable_tolerated``); returns the
    others. A deferred node gets one ``EvictionDeferred``
    event on ``owner`` per loss (and per disruption state)."""
    view = ctx.view
    kept = []
    for pod in pods:
        node = pod.node or ""
        if not (pod.active and view.node_lost(pod, ctx.eviction_grace)):
            kept.append(pod)
            continue
        wait = _unreachable_tolerated(ctx, pod)
        if wait is None or wait > 0:  # the pod asked to stay on a lost node for longer
            kept.append(pod)
            if wait is not None:
                ctx.plan.wake_after(wait)
        elif view.evictions.allows(node, known=node in view.nodes):
            delete_pod(
                ctx, pod, "NodeNotReady", f"Deleting pod {pod.name}: node {node} is not ready"
            )
        else:
            kept.append(pod)
            _deferred(ctx, node, owner)
    return kept


_UNREACHABLE = {"key": UNREACHABLE_KEY, "effect": NO_EXECUTE}


def _unreachable_tolerated(ctx: Context, pod: PodView) -> float | None:
    """Seconds ``pod`` still stays on its lost node for a toleration of Kubernetes'
    ``node.kubernetes.io/unreachable:NoExecute`` taint (0: none, go now; None: tolerated
    for good).

    A lost node is what Kubernetes taints unreachable (its agent stopped answering). A pod
    that does not tolerate that taint goes after ``scheduler.pod_eviction_grace`` (where
    Kubernetes gives every pod a default toleration of 300 s); one that tolerates it goes
    after its ``tolerationSeconds`` counted from when the node went NotReady, and never
    before the grace; one that tolerates it without seconds stays. A node that has no Node
    object any more takes its pods with it at once, as before."""
    view = ctx.view
    if pod.node not in view.nodes:
        return 0.0
    toleration = tolerating(pod.tolerations, _UNREACHABLE)
    if toleration is None:
        return 0.0
    seconds = toleration.get("tolerationSeconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return None
    return max(0.0, float(seconds) - view.not_ready_for.get(pod.node or "", 0.0))


TAINT_EVICTION_REASON = "TaintManagerEviction"


def evict_tainted(ctx: Context, pods: list[PodView]) -> list[PodView]:
    """Delete the pods whose Ready node has a NoExecute taint they do not tolerate, or
    tolerate for ``tolerationSeconds`` that have run out (Kubernetes' taint manager);
    return the others, asking for a pass when the next one is due.

    Done by whoever deletes and replaces the pod anyway: a workload's elected scheduler
    (its controller creates the replacement in the same pass, placed where the taint is
    not, as for a lost node's pods), the collector for pods no controller owns. The node is
    alive, so the deletion is graceful (its kubelet stops the pod) and not rate limited:
    a user asked for it. Pods of a node that is not Ready are left to the lost-node
    eviction and its limits.
    """
    view, plan = ctx.view, ctx.plan
    kept = []
    for pod in pods:
        due = view.noexecute_due(pod) if pod.active else None
        if due is None or due > 0:
            kept.append(pod)
            if due is not None:
                plan.wake_after(due)
            continue
        meta = pod.meta
        delete_pod(
            ctx,
            pod,
            TAINT_EVICTION_REASON,
            f"Marking for deletion Pod {meta.get('namespace', 'default')}/{pod.name}",
        )
    return kept


def evict_tainted_unowned(ctx: Context) -> None:
    """The collector's part of NoExecute: bound pods that no controller owns (a pod applied
    with or without a node; a workload's pods are its scheduler's)."""
    evict_tainted(ctx, [p for p in ctx.view.pods if p.owner is None and p.node is not None])


def _deferred(ctx: Context, node: str, owner: dict[str, Any]) -> None:
    gate, plan = ctx.view.evictions, ctx.plan
    pair = (node, str(owner["metadata"].get("uid", "")))
    if pair not in gate.reported and pair not in plan.deferred:
        plan.deferred.add(pair)
        plan.event(involved(owner), DEFERRED_REASON, gate.deferral(node), warning=True)


def hold_failed(ctx: Context, pods: list[PodView]) -> list[PodView]:
    """Delete the ended pods that are old enough to be replaced; return those that are not
    (they keep their replica's place for now, and a pass is asked for when they will be)."""
    held = []
    for pod in pods:
        if pod.phase not in ("Succeeded", "Failed"):
            continue
        created = parse_time(pod.created) or ctx.view.now_seconds
        wait = created + ctx.failed_pod_backoff - ctx.view.now_seconds
        if wait > 0:
            held.append(pod)
            ctx.plan.wake_after(wait)
        else:
            delete_pod(ctx, pod, "Replaced", f"Deleting {pod.phase} pod {pod.name}")
    return held


def victims(ctx: Context, pods: list[PodView], count: int) -> list[PodView]:
    """The ``count`` least valuable pods (Kubernetes' ActivePods order, plus the lease).

    Unplaced before placed, on a not-Ready node before a Ready one, Pending before Running,
    not ready before ready, created under another lease (a stale scheduler's writes during a
    partition) before the current one, more restarts first, newer first.
    """
    if count <= 0:
        return []  # (most passes: nothing surplus, and sorting 1,000 pods is not free)

    def value(pod: PodView) -> tuple[Any, ...]:
        node = ctx.view.nodes.get(pod.node or "")
        return (
            pod.node is not None,
            node is not None and node.ready,
            pod.phase == "Running",
            pod.ready,
            pod.lease == ctx.lease,
            -pod.restarts,
            _negated(pod.created),
            pod.name,
        )

    return sorted(pods, key=value)[:count]


def _negated(timestamp: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in timestamp)


def _ref(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', 'default')}/{meta['name']}"


def put_status_if_changed(plan: Plan, key: str, old: Any, new: dict[str, Any]) -> None:
    if old != new:
        plan.put(STATUS, key, new)


# -- ReplicaSet --------------------------------------------------------------------------------
def reconcile_replicaset(ctx: Context, rs: dict[str, Any], desired: int | None = None) -> None:
    view, plan = ctx.view, ctx.plan
    meta = rs["metadata"]
    replicas = int(rs["spec"].get("replicas", 1) if desired is None else desired)
    pods = [p for p in view.owned(rs) if not p.terminating]
    held = hold_failed(ctx, pods)
    pods = evict_tainted(ctx, evict_lost(ctx, [p for p in pods if p.active], rs))
    for pod in pods:
        if pod.node is None:
            bind_pending(ctx, pod)
    missing = replicas - len(pods) - len(held)
    labels = {k: v for k, v in rs["spec"]["template"].get("metadata", {}).get("labels", {}).items()}
    for _ in range(missing):
        create_from_template(ctx, rs, rs["spec"]["template"], labels=labels)
    for pod in victims(ctx, pods, -missing):
        delete_pod(ctx, pod, "Killing", f"Scaling down: deleting pod {pod.name}")
    ready = sum(1 for p in pods if p.ready)
    status = {
        "replicas": len(pods) + max(0, missing),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": meta.get("generation", 1),
    }
    put_status_if_changed(
        plan, object_key("ReplicaSet", meta["namespace"], meta["name"]), rs.get("status"), status
    )


# -- Deployment --------------------------------------------------------------------------------
def _resolve(value: int | str, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    share = int(value.rstrip("%")) * total / 100
    return math.ceil(share) if round_up else math.floor(share)


def reconcile_deployment(ctx: Context, deployment: dict[str, Any]) -> None:
    view, plan = ctx.view, ctx.plan
    meta, spec = deployment["metadata"], deployment["spec"]
    namespace = meta.get("namespace", "default")
    replicas = int(spec.get("replicas", 1))
    owned = [rs for rs in view.objects.get("ReplicaSet", []) if controller_of(rs) == meta["uid"]]
    template = spec["template"]
    digest = template_hash(template)
    new = next(
        (rs for rs in owned if rs["metadata"].get("labels", {}).get(TEMPLATE_HASH_LABEL) == digest),
        None,
    )
    revisions = [
        int((rs["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION, 0)) for rs in owned
    ]
    next_revision = max(revisions, default=0) + 1
    if new is None:
        new = _new_replicaset(ctx, deployment, digest, next_revision)
        owned.append(new)
        plan.event(
            involved(deployment),
            "ScalingReplicaSet",
            f"Created replica set {new['metadata']['name']}",
        )
    elif int(new["metadata"].get("annotations", {}).get(REVISION_ANNOTATION, 0)) != max(revisions):
        # Rolled back to an older template: it becomes the newest revision again.
        new = clone(new)
        new["metadata"]["annotations"][REVISION_ANNOTATION] = str(next_revision)
        plan.put(OBJECTS, _rs_key(new), _without_status(new))
    old = [rs for rs in owned if rs is not new and rs["metadata"]["uid"] != new["metadata"]["uid"]]
    sizes = {rs["metadata"]["uid"]: int(rs["spec"].get("replicas", 0)) for rs in owned}

    def available(rs: dict[str, Any]) -> int:
        return sum(1 for p in view.owned(rs) if p.active and p.ready)

    new_uid = new["metadata"]["uid"]
    strategy = spec.get("strategy") or {"type": "RollingUpdate"}
    if strategy.get("type") == "Recreate":
        if any(sizes[rs["metadata"]["uid"]] for rs in old):
            for rs in old:
                sizes[rs["metadata"]["uid"]] = 0
        elif not any(p.active for rs in old for p in view.owned(rs)):
            sizes[new_uid] = replicas
    else:
        rolling = strategy.get("rollingUpdate") or {}
        surge = _resolve(rolling.get("maxSurge", "25%"), replicas, round_up=True)
        unavailable = _resolve(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        total = sum(sizes.values())
        if sizes[new_uid] < replicas:
            grow = min(replicas + surge - total, replicas - sizes[new_uid])
            sizes[new_uid] += max(0, grow)
        elif sizes[new_uid] > replicas:
            sizes[new_uid] = replicas
        min_available = replicas - unavailable
        all_available = sum(available(rs) for rs in owned)
        new_unavailable = max(0, sizes[new_uid] - available(new))
        room = sum(sizes.values()) - min_available - new_unavailable
        # Old replica sets shrink only by what keeps enough pods available.
        can_remove = max(0, min(room, all_available - min_available + _unready_old(view, old)))
        for rs in sorted(old, key=lambda r: r["metadata"].get("creationTimestamp", "")):
            if can_remove <= 0:
                break
            uid = rs["metadata"]["uid"]
            cut = min(sizes[uid], can_remove)
            sizes[uid] -= cut
            can_remove -= cut
    for rs in owned:
        uid = rs["metadata"]["uid"]
        if int(rs["spec"].get("replicas", 0)) != sizes[uid]:
            scaled = clone(rs)
            scaled["spec"]["replicas"] = sizes[uid]
            plan.put(OBJECTS, _rs_key(rs), _without_status(scaled))
            verb = "up" if sizes[uid] > int(rs["spec"].get("replicas", 0)) else "down"
            plan.event(
                involved(deployment),
                "ScalingReplicaSet",
                f"Scaled {verb} replica set {rs['metadata']['name']} to {sizes[uid]}",
            )
        reconcile_replicaset(ctx, rs, sizes[uid])
    _prune_history(ctx, deployment, [rs for rs in old if sizes[rs["metadata"]["uid"]] == 0])
    ready = sum(available(rs) for rs in owned)
    pods = sum(len([p for p in view.owned(rs) if p.active]) for rs in owned)
    updated = len([p for p in view.owned(new) if p.active])
    complete = updated == replicas and ready >= replicas and pods == replicas
    status = {
        "observedGeneration": meta.get("generation", 1),
        "replicas": pods,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(0, replicas - ready),
        "revision": int(new["metadata"]["annotations"].get(REVISION_ANNOTATION, next_revision)),
        "conditions": [
            {
                "type": "Available",
                "status": "True"
                if ready >= replicas - _max_unavailable(spec, replicas)
                else "False",
                "reason": "MinimumReplicasAvailable"
                if ready >= replicas - _max_unavailable(spec, replicas)
                else "MinimumReplicasUnavailable",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
            },
        ],
    }
    put_status_if_changed(
        plan, object_key("Deployment", namespace, meta["name"]), deployment.get("status"), status
    )


def _max_unavailable(spec: dict[str, Any], replicas: int) -> int:
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return replicas
    rolling = strategy.get("rollingUpdate") or {}
    return _resolve(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)


def _unready_old(view: ClusterView, old: list[dict[str, Any]]) -> int:
    """Old pods that are not available anyway: removing them costs no availability."""
    return sum(1 for rs in old for p in view.owned(rs) if p.active and not p.ready)


def _rs_key(rs: dict[str, Any]) -> str:
    return object_key("ReplicaSet", rs["metadata"]["namespace"], rs["metadata"]["name"])


def _without_status(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "status"}


def _new_replicaset(
    ctx: Context, deployment: dict[str, Any], digest: str, revision: int
) -> dict[str, Any]:
    meta, spec = deployment["metadata"], deployment["spec"]
    template = clone(spec["template"])
    template.setdefault("metadata", {}).setdefault("labels", {})[TEMPLATE_HASH_LABEL] = digest
    rs = {
        "apiVersion": api_version_of("ReplicaSet"),
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{meta['name']}-{digest}",
            "namespace": meta.get("namespace", "default"),
            "uid": ctx.new_uid(),
            "creationTimestamp": ctx.view.now,
            "generation": 1,
            "labels": {**template["metadata"]["labels"]},
            "annotations": {
                **{k: v for k, v in (meta.get("annotations") or {}).items() if k == CHANGE_CAUSE},
                REVISION_ANNOTATION: str(revision),
                LEASE_ANNOTATION: ctx.lease,
            },
            "ownerReferences": [owner_reference(deployment)],
        },
        "spec": {
            "replicas": 0,
            "selector": {
                "matchLabels": {**spec["selector"]["matchLabels"], TEMPLATE_HASH_LABEL: digest}
            },
            "template": template,
        },
    }
    ctx.plan.put(OBJECTS, _rs_key(rs), rs)
    return rs


def _prune_history(ctx: Context, deployment: dict[str, Any], idle: list[dict[str, Any]]) -> None:
    """Delete the oldest scaled-down replica sets beyond revisionHistoryLimit (once empty)."""
    limit = int(deployment["spec"].get("revisionHistoryLimit", 10))
    idle = sorted(
        idle, key=lambda rs: int(rs["metadata"]["annotations"].get(REVISION_ANNOTATION, 0))
    )
    for rs in idle[: max(0, len(idle) - limit)]:
        if not any(p.active or p.terminating for p in ctx.view.owned(rs)):
            ctx.plan.delete(OBJECTS, _rs_key(rs))
            ctx.plan.delete(STATUS, _rs_key(rs))


# -- Job ---------------------------------------------------------------------------------------
def _condition(status: Any, kind: str) -> bool:
    conditions = status.get("conditions") if isinstance(status, dict) else None
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions or [])


def reconcile_job(ctx: Context, job: dict[str, Any]) -> None:
    view, plan = ctx.view, ctx.plan
    meta, spec = job["metadata"], job["spec"]
    key = object_key("Job", meta.get("namespace", "default"), meta["name"])
    old = job.get("status") or {}
    pods = [p for p in view.owned(job) if not p.terminating]
    succeeded = sum(1 for p in pods if p.phase == "Succeeded")
    restarts = (
        sum(p.restarts for p in pods)
        if spec["template"]["spec"].get("restartPolicy") == "OnFailure"
        else 0
    )
    failed = sum(1 for p in pods if p.phase == "Failed") + restarts
    finished = _condition(old, "Complete") or _condition(old, "Failed")
    active = [p for p in pods if p.active]
    status: dict[str, Any] = {
        "startTime": old.get("startTime") or view.now,
        "active": len(active),
        "succeeded": succeeded,
        "failed": failed,
        "ready": sum(1 for p in active if p.ready),
    }
    conditions: list[dict[str, Any]] = list(old.get("conditions") or [])
    if not finished:
        active = evict_tainted(ctx, evict_lost(ctx, active, job))
        for pod in active:
            if pod.node is None:
                bind_pending(ctx, pod)
        deadline = spec.get("activeDeadlineSeconds")
        started = parse_time(status["startTime"]) or view.now_seconds
        if deadline:
            plan.wake_after(started + float(deadline) - view.now_seconds)
        failure: tuple[str, str] | None = None
        if failed > int(spec.get("backoffLimit", 6)):
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif deadline and view.now_seconds - started >= float(deadline):
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        if failure is not None:
            for pod in active:
                delete_pod(ctx, pod, "Killing", f"Job failed: deleting active pod {pod.name}")
            active = []
            conditions = [_job_condition("Failed", failure, view.now)]
            plan.event(involved(job), failure[0], failure[1], warning=True)
        elif succeeded >= int(spec.get("completions", 1)):
            conditions = [_job_condition("Complete", ("Completed", "Job completed"), view.now)]
            status["completionTime"] = view.now
            plan.event(involved(job), "Completed", "Job completed")
        else:
            want = min(int(spec.get("parallelism", 1)), int(spec.get("completions", 1)) - succeeded)
            labels = {"job-name": meta["name"], "controller-uid": meta["uid"]}
            created = max(0, want - len(active))
            for pod in victims(ctx, active, len(active) - want):
                delete_pod(ctx, pod, "Killing", f"Deleting surplus pod {pod.name}")
                active.remove(pod)
            for _ in range(created):
                create_from_template(ctx, job, spec["template"], labels=labels)
            status["active"] = len(active) + created
    else:
        status["completionTime"] = old.get("completionTime")
        status["active"] = len(active)
    status["conditions"] = conditions
    status = {k: v for k, v in status.items() if v is not None}
    put_status_if_changed(plan, key, job.get("status"), status)


def _job_condition(kind: str, why: tuple[str, str], now: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": why[0],
        "message": why[1],
        "lastTransitionTime": now,
    }


# -- DaemonSet ---------------------------------------------------------------------------------
def reconcile_daemonset(ctx: Context, ds: dict[str, Any]) -> None:
    view, plan = ctx.view, ctx.plan
    meta, spec = ds["metadata"], ds["spec"]
    digest = template_hash(spec["template"])
    # Daemon pods tolerate what Kubernetes' DaemonSet controller makes them tolerate (a
    # cordoned node among others): the template as written names the revision (digest),
    # the pods get the tolerations.
    template = {**spec["template"], "spec": with_daemon_tolerations(spec["template"]["spec"])}
    selector = template["spec"].get("nodeSelector") or {}
    daemon = PodToPlace(template["spec"])
    eligible = {  # a node whose operator did not grant its hostPaths would refuse the pod
        name: node
        for name, node in view.nodes.items()
        if node.ready
        and all(node.labels.get(k) == v for k, v in selector.items())
        and host_paths(daemon, node) is None
        and node_unschedulable(daemon, node) is None
        and taint_toleration(daemon, node) is None
    }
    held = hold_failed(ctx, [p for p in view.owned(ds) if not p.terminating])
    # A NoExecute taint evicts a daemon pod too (and its node is no longer eligible); a
    # NoSchedule one only keeps new daemon pods off the node, as in Kubernetes.
    pods = evict_tainted(ctx, [p for p in view.owned(ds) if p.active])
    by_node: dict[str, list[PodView]] = {}
    for pod in pods:
        by_node.setdefault(pod.node or "", []).append(pod)
    waiting = {p.node for p in held}
    for node_name, here in by_node.items():
        node = view.nodes.get(node_name)
        matches = node is not None and all(node.labels.get(k) == v for k, v in selector.items())
        if not matches:
            for pod in here:
                delete_pod(ctx, pod, "Killing", f"Node {node_name} no longer runs this daemon set")
        elif len(here) > 1:
            for pod in victims(ctx, here, len(here) - 1):
                delete_pod(ctx, pod, "Killing", f"Deleting surplus daemon pod {pod.name}")
    labels = {DS_HASH_LABEL: digest}
    for name, node in sorted(eligible.items()):
        if name not in by_node and name not in waiting:
            create_from_template(ctx, ds, template, labels=labels, node=node)
    outdated = [p for p in pods if p.obj["metadata"].get("labels", {}).get(DS_HASH_LABEL) != digest]
    unavailable = sum(1 for p in pods if not p.ready) + (
        len(eligible) - len(set(by_node) & set(eligible))
    )
    if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
        if outdated and unavailable == 0:
            pod = victims(ctx, outdated, 1)[0]
            delete_pod(ctx, pod, "Killing", f"Updating daemon pod {pod.name} to the new template")
    on_eligible = [p for p in pods if p.node in eligible]
    ready_here = sum(1 for p in on_eligible if p.ready)
    status = {
        "observedGeneration": meta.get("generation", 1),
        "desiredNumberScheduled": len(eligible),
        "currentNumberScheduled": len({p.node for p in on_eligible}),
        "numberMisscheduled": len(pods) - len(on_eligible),
        "numberReady": ready_here,
        "updatedNumberScheduled": sum(1 for p in on_eligible if p not in outdated),
        "numberAvailable": ready_here,
        "numberUnavailable": max(0, len(eligible) - ready_here),
    }
    put_status_if_changed(
        plan,
        object_key("DaemonSet", meta.get("namespace", "default"), meta["name"]),
        ds.get("status"),
        status,
    )


# -- garbage collection --------------------------------------------------------------------------
def collect_orphans(ctx: Context) -> None:
    """Delete what a deleted owner left behind (Kubernetes' background cascading deletion):
    a Deployment's ReplicaSets, a CronJob's Jobs, then (at the next pass) their pods."""
    view, plan = ctx.view, ctx.plan
    for rs in view.objects.get("ReplicaSet", []):
        owner = controller_of(rs)
        if owner and owner not in view.uids:
            plan.delete(OBJECTS, _rs_key(rs))
            plan.delete(STATUS, _rs_key(rs))
    for job in view.objects.get("Job", []):  # a deleted CronJob's
        owner = controller_of(job)
        if owner and owner not in view.uids:
            key = object_key(
                "Job", job["metadata"].get("namespace", "default"), job["metadata"]["name"]
            )
            plan.delete(OBJECTS, key)
            plan.delete(STATUS, key)
    for pod in view.pods:
        if pod.owner and pod.owner not in view.uids and not pod.terminating:
            delete_pod(ctx, pod, "Killing", f"Owner of pod {pod.name} was deleted")


def finalize_namespaces(ctx: Context, terminating: list[str]) -> None:
    """Finish deleting the ``terminating`` namespaces (``model.objects`` deleted what was in
    them and marked their pods): a pod or workload created in one since (written on another
    node before it saw the deletion) is deleted too, and a namespace left with no pod is
    removed, as Kubernetes' namespace controller does."""
    view, plan = ctx.view, ctx.plan
    for namespace in terminating:
        for kind, objects in view.objects.items():
            for obj in objects:
                if obj["metadata"].get("namespace") == namespace:
                    key = object_key(kind, namespace, obj["metadata"]["name"])
                    plan.delete(OBJECTS, key)
                    plan.delete(STATUS, key)
        pods = [p for p in view.pods if p.meta.get("namespace", "default") == namespace]
        for pod in pods:
            if not pod.terminating:
                delete_pod(ctx, pod, "Killing", f"Namespace {namespace} is being deleted")
        if not pods:
            key = object_key("Namespace", "", namespace)
            plan.delete(OBJECTS, key)
            plan.delete(STATUS, key)
