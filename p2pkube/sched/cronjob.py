"""The CronJob controller: Jobs made from a template on a cron schedule, as Kubernetes' (v2).

It runs like every controller (``controllers.py``): on the node that holds the CronJob's
lease, level-triggered, from the pass's view and clock alone. At each pass it works out the
most recent scheduled time not yet started (after ``status.lastScheduleTime``, or the
creation, and within ``startingDeadlineSeconds``), applies ``concurrencyPolicy`` (Allow,
Forbid, Replace), creates the Job, records the time in ``status.lastScheduleTime`` in the
same transaction, prunes the finished Jobs beyond the history limits, and asks the scheduler
to wake it at the next scheduled time (``Plan.wake_after``), so a firing is late by a pass
(milliseconds), not by a resync.

**A firing is idempotent, which is what makes it happen once across a failover.** The Job
for a scheduled time has a name derived from that time alone, ``<cronjob>-<minutes since the
epoch>`` (Kubernetes' name), and a uid derived from the CronJob's uid and that time
(``job_uid``). A node that takes over the lease recomputes the time its predecessor may or
may not have fired: if the Job (or the lastScheduleTime written with it, in one transaction)
reached it, it creates nothing; if neither did, it creates the Job itself. Two nodes that
both believe they lead (a moment of disagreement, a partition) write the same key with the
same uid: the CRDT keeps one value, and whichever wins, it is the same Job, so its pods
(owned by that uid) are not orphaned and not made twice by its own controller.
docs/guarantees.md says what holds and where it stops.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from p2pkube.model.apiversions import api_version_of
from p2pkube.model.cron import Schedule, ScheduleError, rfc3339, zone
from p2pkube.model.timestamps import parse_datetime
from p2pkube.sched.controllers import Context, put_status_if_changed
from p2pkube.sched.election import LEASE_ANNOTATION
from p2pkube.sched.view import clone, controller_of, involved, owner_reference
from p2pkube.state import object_key
from p2pkube.state.store import OBJECTS, STATUS

SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
"""On each Job a CronJob creates: its scheduled time, RFC 3339 in the CronJob's time zone."""
MANY_MISSED = 100
"""More missed times than this since the last one started: a ``TooManyMissedTimes`` warning
(Kubernetes' bound; the most recent one still starts, as in Kubernetes' controller v2)."""
EVENT_WINDOW = 10.0
"""Seconds after a condition arose during which a pass reports it (``MissSchedule``,
``JobAlreadyActive``, ``TooManyMissedTimes``). Passes run at every state change; reporting at
each would bump an event's count with the cluster's activity, not with the schedule."""


def job_uid(cronjob_uid: str, minutes: int) -> str:
    """The uid of the Job of ``cronjob_uid`` for the scheduled minute ``minutes``: the same
    on every node, so that two schedulers firing the same time write the same Job."""
    return hashlib.sha256(f"{cronjob_uid}/{minutes}".encode()).hexdigest()[:32]


def job_name(cronjob: dict[str, Any], when: datetime) -> str:
    """``<cronjob>-<scheduled time in minutes since the epoch>``, as Kubernetes names it."""
    return f"{cronjob['metadata']['name']}-{int(when.timestamp()) // 60}"


def _finished(job: dict[str, Any]) -> str | None:
    """``Complete`` or ``Failed`` when the Job has ended, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def _ref(job: dict[str, Any]) -> dict[str, Any]:
    meta = job["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "namespace": meta.get("namespace", "default"),
        "uid": meta.get("uid", ""),
    }


def _job_key(job: dict[str, Any]) -> str:
    meta = job["metadata"]
    return object_key("Job", meta.get("namespace", "default"), meta["name"])


def _recent(now: datetime, since: datetime) -> bool:
    return timedelta() <= now - since < timedelta(seconds=EVENT_WINDOW)


def reconcile_cronjob(ctx: Context, cronjob: dict[str, Any]) -> None:
    view, plan = ctx.view, ctx.plan
    meta, spec = cronjob["metadata"], cronjob["spec"]
    old = cronjob.get("status") or {}
    uid = meta.get("uid", "")
    jobs = sorted(
        (j for j in view.objects.get("Job", []) if controller_of(j) == uid),
        key=lambda j: (str(j["metadata"].get("creationTimestamp", "")), j["metadata"]["name"]),
    )
    was_active = {r.get("uid") for r in old.get("active") or [] if isinstance(r, dict)}
    last_success = parse_datetime(old.get("lastSuccessfulTime"))
    for job in jobs:
        outcome = _finished(job)
        if outcome and job["metadata"].get("uid") in was_active:
            plan.event(
                involved(cronjob),
                "SawCompletedJob",
                f"Saw completed job: {job['metadata']['name']}, condition: {outcome}",
            )
        done = parse_datetime((job.get("status") or {}).get("completionTime"))
        if outcome == "Complete" and done is not None:
            last_success = done if last_success is None else max(last_success, done)
    active = [j for j in jobs if not _finished(j)]
    _prune_history(ctx, cronjob, jobs)
    last_schedule = parse_datetime(old.get("lastScheduleTime"))
    if not spec.get("suspend"):
        fired = _fire(ctx, cronjob, active, last_schedule)
        if fired is not None:
            when, created, replaced = fired
            last_schedule = when
            active = [j for j in active if j not in replaced]
            if created is not None:
                active.append(created)
    status: dict[str, Any] = {}
    if active:
        status["active"] = [_ref(j) for j in active]
    if last_schedule is not None:
        status["lastScheduleTime"] = rfc3339(last_schedule)
    if last_success is not None:
        status["lastSuccessfulTime"] = rfc3339(last_success.astimezone(UTC))
    key = object_key("CronJob", meta.get("namespace", "default"), meta["name"])
    put_status_if_changed(plan, key, cronjob.get("status"), status)


def _fire(
    ctx: Context,
    cronjob: dict[str, Any],
    active: list[dict[str, Any]],
    last_schedule: datetime | None,
) -> tuple[datetime, dict[str, Any] | None, list[dict[str, Any]]] | None:
    """Start the most recent unmet scheduled time if it is due and allowed: (that time, the
    Job created or None if it existed already, the Jobs Replace deleted); None when nothing
    was started. Asks for a pass at the next scheduled time either way."""
    view, plan = ctx.view, ctx.plan
    meta, spec = cronjob["metadata"], cronjob["spec"]
    try:
        where = zone(spec.get("timeZone"))
    except ScheduleError as exc:
        plan.event(
            involved(cronjob),
            "UnknownTimeZone",
            f"invalid timeZone: {spec.get('timeZone')!r}: {exc}",
            warning=True,
        )
        return None
    try:
        schedule = Schedule(str(spec.get("schedule", "")), spec.get("timeZone"))
    except ScheduleError as exc:
        plan.event(
            involved(cronjob),
            "UnparseableSchedule",
            f"unparseable schedule: {spec.get('schedule')!r} : {exc}",
            warning=True,
        )
        return None
    now = datetime.fromtimestamp(view.now_seconds, UTC)
    plan.wake_after((schedule.next_after(now) - now).total_seconds())
    earliest = last_schedule or parse_datetime(meta.get("creationTimestamp")) or now
    first = schedule.next_after(earliest)
    if first > now:
        return None  # nothing due since the last start (or the creation)
    latest = schedule.latest_until(now)
    deadline = spec.get("startingDeadlineSeconds")
    if deadline is not None and latest + timedelta(seconds=deadline) < now:
        missed_at = latest + timedelta(seconds=deadline)
        if _recent(now, missed_at):
            plan.event(
                involved(cronjob),
                "MissSchedule",
                "Missed scheduled time to start a job: "
                f"{latest.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
                warning=True,
            )
        return None
    # Missed times are counted within startingDeadlineSeconds, as Kubernetes counts them.
    window = earliest if deadline is None else max(earliest, now - timedelta(seconds=deadline))
    missed = 1
    moment = schedule.next_after(window)
    while moment < latest and missed <= MANY_MISSED:
        moment = schedule.next_after(moment)
        missed += 1
    name = job_name(cronjob, latest)
    namespace = meta.get("namespace", "default")
    existing = next(
        (
            j
            for j in view.objects.get("Job", [])
            if _job_key(j) == object_key("Job", namespace, name)
        ),
        None,
    )
    if existing is not None:
        # Fired already (by this node or a predecessor whose status write did not arrive),
        # or a Job of that name that is not ours: either way nothing is created.
        return (latest, None, []) if controller_of(existing) == meta.get("uid") else None
    policy = spec.get("concurrencyPolicy", "Allow")
    blocked = policy == "Forbid" and bool(active)
    if missed > MANY_MISSED and (not blocked or _recent(now, latest)):
        plan.event(
            involved(cronjob),
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or "
            "check clock skew",
            warning=True,
        )
    if blocked:
        if _recent(now, latest):
            plan.event(
                involved(cronjob),
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy "
                "is Forbid",
            )
        if deadline is not None:
            plan.wake_after((latest + timedelta(seconds=deadline) - now).total_seconds())
        return None
    replaced = []
    if policy == "Replace":
        for job in active:
            plan.delete(OBJECTS, _job_key(job))
            plan.delete(STATUS, _job_key(job))
            plan.event(
                involved(cronjob), "SuccessfulDelete", f"Deleted job {job['metadata']['name']}"
            )
            replaced.append(job)
    job = _new_job(ctx, cronjob, latest, where)
    plan.put(OBJECTS, _job_key(job), job)
    plan.event(involved(cronjob), "SuccessfulCreate", f"Created job {name}")
    return latest, job, replaced


def _new_job(
    ctx: Context, cronjob: dict[str, Any], when: datetime, where: tzinfo
) -> dict[str, Any]:
    """The Job of ``cronjob`` for the scheduled time ``when`` (Kubernetes' getJobFromTemplate2)."""
    meta = cronjob["metadata"]
    template = cronjob["spec"]["jobTemplate"]
    template_meta = template.get("metadata") or {}
    minutes = int(when.timestamp()) // 60
    return {
        "apiVersion": api_version_of("Job"),
        "kind": "Job",
        "metadata": {
            "name": job_name(cronjob, when),
            "namespace": meta.get("namespace", "default"),
            "uid": job_uid(str(meta.get("uid", "")), minutes),
            "creationTimestamp": ctx.view.now,
            "generation": 1,
            "labels": dict(template_meta.get("labels") or {}),
            "annotations": {
                **(template_meta.get("annotations") or {}),
                SCHEDULED_ANNOTATION: rfc3339(when.astimezone(where)),
                LEASE_ANNOTATION: ctx.lease,
            },
            "ownerReferences": [owner_reference(cronjob)],
        },
        "spec": clone(template["spec"]),
    }


def _prune_history(ctx: Context, cronjob: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
    """Delete the oldest finished Jobs beyond ``successfulJobsHistoryLimit`` (Complete) and
    ``failedJobsHistoryLimit`` (Failed), oldest start first; their pods follow (the
    collector deletes pods whose owner is gone)."""
    spec = cronjob["spec"]
    for outcome, field, default in (
        ("Complete", "successfulJobsHistoryLimit", 3),
        ("Failed", "failedJobsHistoryLimit", 1),
    ):
        ended = [j for j in jobs if _finished(j) == outcome]
        ended.sort(
            key=lambda j: (
                (j.get("status") or {}).get("startTime") is None,
                str((j.get("status") or {}).get("startTime") or ""),
                j["metadata"]["name"],
            )
        )
        limit = int(spec.get(field, default))
        for job in ended[: max(0, len(ended) - limit)]:
            ctx.plan.delete(OBJECTS, _job_key(job))
            ctx.plan.delete(STATUS, _job_key(job))
            ctx.plan.event(
                involved(cronjob), "SuccessfulDelete", f"Deleted job {job['metadata']['name']}"
            )
