"""The CronJob controller as a pure function, driven through test_sched's simulated cluster.

The clock is the simulation's (``World.clock``, one second per pass unless a test moves it):
each test puts the pass where a schedule matters, just before or after a firing, a deadline,
a failover. Jobs are finished by writing their status, as their own controller would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from p2pkube.model.cron import Schedule, rfc3339
from p2pkube.model.errors import ValidationFailed
from p2pkube.model.schema import validate_object
from p2pkube.sched import controllers as ctl
from p2pkube.sched.cronjob import SCHEDULED_ANNOTATION, job_uid, reconcile_cronjob
from p2pkube.sched.election import LEASE_ANNOTATION
from p2pkube.sched.events import EventRecorder
from p2pkube.sched.manager import NodeState, Scheduler
from p2pkube.sched.settings import EventSettings, SchedulerSettings
from p2pkube.sched.view import Plan
from p2pkube.state import ClusterState, object_key
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.store import OBJECTS
from tests.memorybackend import blob
from tests.statenet import Mesh, contents
from tests.test_sched import DIGEST, World, cluster, container, new_uid, node
from tests.test_sched_eviction import wait_for

REPO = Path(__file__).resolve().parent.parent
BASE = 1_800_000_000
"""The simulation's epoch (``World.view``): 2027-01-15T08:00:00Z, a whole hour."""
MINUTE = 60


def cronjob(name: str = "tick", schedule: str = "*/5 * * * *", **spec: Any) -> dict[str, Any]:
    """A CronJob as the agent stores it, created at ``BASE + 10``."""
    obj = validate_object(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": name},
            "spec": {
                "schedule": schedule,
                "jobTemplate": {
                    "metadata": {"labels": {"app": name}, "annotations": {"team": "ops"}},
                    "spec": {
                        "template": {
                            "spec": {"restartPolicy": "Never", "containers": [container()]}
                        }
                    },
                },
                **spec,
            },
        }
    )
    obj["metadata"].update(
        namespace="default", uid=new_uid(), generation=1, creationTimestamp=stamp(BASE + 10)
    )
    return obj


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def at(world: World, seconds: float, key: str, lease: str = "1/me") -> Plan:
    """One pass of the CronJob's controller with the clock at ``seconds``."""
    world.clock = int(seconds) - BASE - 1  # (World.view advances it by one)
    return world.pass_(key, lease)


def jobs(world: World) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in world.objects.values() if o["kind"] == "Job"}


def finish(world: World, name: str, outcome: str, seconds: float) -> None:
    """Write a Job's final status, as its controller would."""
    world.status[f"Job/default/{name}"] = {
        "startTime": stamp(seconds - 5),
        "completionTime": stamp(seconds) if outcome == "Complete" else None,
        "conditions": [{"type": outcome, "status": "True"}],
    }


def reasons(plan: Plan) -> list[str]:
    return [e.reason for e in plan.events]


def test_a_cronjob_fires_at_its_scheduled_time_under_kubernetes_names() -> None:
    world = cluster("a", "b")
    cj = cronjob()
    key = world.add(cj)
    plan = at(world, BASE + 200, key)
    assert jobs(world) == {}
    assert plan.wake == 100  # woken at BASE + 300, the next */5 time, not by polling
    plan = at(world, BASE + 300, key, lease="3/id-a")
    minutes = (BASE + 300) // 60
    job = jobs(world)[f"tick-{minutes}"]
    assert reasons(plan) == ["SuccessfulCreate"]
    assert plan.events[0].message == f"Created job tick-{minutes}"
    meta = job["metadata"]
    assert meta["uid"] == job_uid(cj["metadata"]["uid"], minutes)
    assert meta["labels"] == {"app": "tick"}
    assert meta["annotations"] == {
        "team": "ops",
        SCHEDULED_ANNOTATION: "2027-01-15T08:05:00Z",
        LEASE_ANNOTATION: "3/id-a",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": "tick",
            "uid": cj["metadata"]["uid"],
            "controller": True,
        }
    ]
    assert job["spec"] == cj["spec"]["jobTemplate"]["spec"]
    status = world.status[key]
    assert status["lastScheduleTime"] == "2027-01-15T08:05:00Z"
    assert [r["name"] for r in status["active"]] == [f"tick-{minutes}"]
    assert plan.wake == 300
    # Level-triggered: the passes after it write nothing and create nothing.
    for later in (BASE + 301, BASE + 420):
        plan = at(world, later, key)
        assert plan.empty and len(jobs(world)) == 1
    finish(world, f"tick-{minutes}", "Complete", BASE + 450)
    plan = at(world, BASE + 460, key)
    assert reasons(plan) == ["SawCompletedJob"]
    assert world.status[key] == {
        "lastScheduleTime": "2027-01-15T08:05:00Z",
        "lastSuccessfulTime": "2027-01-15T08:07:30Z",
    }
    at(world, BASE + 600, key)
    assert sorted(jobs(world)) == [f"tick-{minutes}", f"tick-{minutes + 5}"]


def test_a_new_leader_does_not_fire_a_time_again_and_two_leaders_write_one_job() -> None:
    world = cluster("a", "b")
    cj = cronjob(schedule="* * * * *")
    key = world.add(cj)
    at(world, BASE + MINUTE, key, lease="1/id-a")
    name = f"tick-{BASE // 60 + 1}"
    assert list(jobs(world)) == [name]
    # A node taking over sees the Job but not the status written with it (cannot happen
    # with one transaction, but a status can also be overwritten by an older one): it
    # recognises the Job by its name and only records the time.
    world.status.pop(key)
    plan = at(world, BASE + MINUTE + 3, key, lease="2/id-b")
    assert list(jobs(world)) == [name] and "SuccessfulCreate" not in reasons(plan)
    assert world.status[key]["lastScheduleTime"] == "2027-01-15T08:01:00Z"
    # Two nodes that both believe they lead plan the next firing from the same state:
    # the same key, the same uid, the same spec; whichever write the CRDT keeps, one Job.
    plans = []
    for lease in ("2/id-b", "3/id-a"):
        world.clock = BASE + 2 * MINUTE + 1 - BASE - 1
        view = world.view()
        plan = Plan()
        reconcile_cronjob(ctl.Context(view, plan, lease, 0.25, new_uid), view.objects["CronJob"][0])
        plans.append(plan)
    made = [
        {k: v for k, v in value.items() if k != "metadata"}
        | {"uid": value["metadata"]["uid"], "name": value["metadata"]["name"]}
        for plan in plans
        for (m, k), value in plan.puts.items()
        if m == "objects"
    ]
    assert len(made) == 2 and made[0] == made[1]
    assert made[0]["name"] == f"tick-{BASE // 60 + 2}"


def test_concurrency_policies_allow_forbid_and_replace() -> None:
    world = cluster("a")
    allow = world.add(cronjob("allow", "* * * * *"))
    forbid = world.add(cronjob("forbid", "* * * * *", concurrencyPolicy="Forbid"))
    replace = world.add(cronjob("replace", "* * * * *", concurrencyPolicy="Replace"))
    first, second = BASE // 60 + 1, BASE // 60 + 2
    for key in (allow, forbid, replace):
        at(world, BASE + MINUTE, key)
    assert sorted(jobs(world)) == [f"{n}-{first}" for n in ("allow", "forbid", "replace")]
    # A minute later the first runs are still active.
    at(world, BASE + 2 * MINUTE, allow)
    assert len(world.status[allow]["active"]) == 2
    plan = at(world, BASE + 2 * MINUTE, forbid)
    assert reasons(plan) == ["JobAlreadyActive"] and f"forbid-{second}" not in jobs(world)
    assert world.status[forbid]["lastScheduleTime"] == "2027-01-15T08:01:00Z"
    plan = at(world, BASE + 2 * MINUTE, replace)
    assert reasons(plan) == ["SuccessfulDelete", "SuccessfulCreate"]
    assert f"replace-{first}" not in jobs(world) and f"replace-{second}" in jobs(world)
    assert [r["name"] for r in world.status[replace]["active"]] == [f"replace-{second}"]
    # Forbid: once the running one ends, the time it held back starts (late, as in
    # Kubernetes, since no startingDeadlineSeconds bounds it).
    finish(world, f"forbid-{first}", "Failed", BASE + 2 * MINUTE + 20)
    at(world, BASE + 2 * MINUTE + 21, forbid)
    assert f"forbid-{second}" in jobs(world)


def test_suspend_stops_firing_and_resuming_starts_the_latest_missed_time_once() -> None:
    world = cluster("a")
    cj = cronjob(schedule="* * * * *", suspend=True)
    key = world.add(cj)
    for minute in range(1, 6):
        plan = at(world, BASE + minute * MINUTE, key)
        assert plan.wake is None  # a suspended CronJob needs no wake-up
    assert jobs(world) == {}
    world.objects[key] = {**cj, "spec": {**cj["spec"], "suspend": False}}
    at(world, BASE + 5 * MINUTE + 30, key)
    assert list(jobs(world)) == [f"tick-{BASE // 60 + 5}"]  # 5 missed: the latest, once
    at(world, BASE + 5 * MINUTE + 31, key)
    assert len(jobs(world)) == 1


def test_starting_deadline_seconds_bounds_how_late_a_start_may_be() -> None:
    world = cluster("a")
    late = world.add(cronjob("late", "* * * * *", startingDeadlineSeconds=20))
    ok = world.add(cronjob("ok", "* * * * *", startingDeadlineSeconds=20))
    # Their leader was away at BASE + 60 (a failover, a long pass): back 25 s and 15 s later.
    plan = at(world, BASE + MINUTE + 25, late)
    assert reasons(plan) == ["MissSchedule"] and jobs(world) == {}
    assert plan.events[0].message == (
        "Missed scheduled time to start a job: Fri, 15 Jan 2027 08:01:00 +0000"
    )
    assert "lastScheduleTime" not in world.status.get(late, {})
    at(world, BASE + MINUTE + 15, ok)
    assert list(jobs(world)) == [f"ok-{BASE // 60 + 1}"]
    # The next time is not missed.
    at(world, BASE + 2 * MINUTE + 1, late)
    assert f"late-{BASE // 60 + 2}" in jobs(world)


def test_more_than_100_missed_times_start_the_latest_with_a_warning() -> None:
    world = cluster("a")
    key = world.add(cronjob(schedule="* * * * *"))
    plan = at(world, BASE + 200 * MINUTE + 5, key)  # a clock jump, or a cluster down 3 h
    assert reasons(plan) == ["TooManyMissedTimes", "SuccessfulCreate"]
    assert plan.events[0].type == "Warning"
    assert list(jobs(world)) == [f"tick-{BASE // 60 + 200}"]
    plan = at(world, BASE + 200 * MINUTE + 6, key)
    assert plan.empty


def test_history_limits_prune_the_oldest_finished_jobs() -> None:
    world = cluster("a")
    key = world.add(
        cronjob(schedule="* * * * *", successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1)
    )
    outcomes = ["Complete", "Failed", "Complete", "Failed", "Complete", "Complete"]
    for i, outcome in enumerate(outcomes, start=1):
        at(world, BASE + i * MINUTE, key)
        finish(world, f"tick-{BASE // 60 + i}", outcome, BASE + i * MINUTE + 30)
    plan = at(world, BASE + 6 * MINUTE + 40, key)
    left = sorted(int(n.rsplit("-", 1)[1]) - BASE // 60 for n in jobs(world))
    assert left == [4, 5, 6]  # the newest two Complete and the newest Failed
    assert "SuccessfulDelete" in reasons(plan)
    assert world.status[key]["lastSuccessfulTime"] == "2027-01-15T08:06:30Z"
    assert "active" not in world.status[key]


def test_the_schedule_is_read_in_its_time_zone() -> None:
    world = cluster("a")
    tokyo = world.add(cronjob("tokyo", "0 9 * * *", timeZone="Asia/Tokyo"))
    berlin = world.add(cronjob("berlin", "@hourly", timeZone="Europe/Berlin"))
    # 09:00 in Tokyo is 00:00 UTC: the day after BASE (08:00 UTC).
    midnight = BASE + 16 * 3600
    plan = at(world, midnight - 1, tokyo)
    assert jobs(world) == {} and plan.wake == 1
    at(world, midnight, tokyo)
    job = jobs(world)[f"tokyo-{midnight // 60}"]
    assert job["metadata"]["annotations"][SCHEDULED_ANNOTATION] == "2027-01-16T09:00:00+09:00"
    at(world, BASE + 3600, berlin)
    job = jobs(world)[f"berlin-{(BASE + 3600) // 60}"]
    assert job["metadata"]["annotations"][SCHEDULED_ANNOTATION] == "2027-01-15T10:00:00+01:00"


def test_deleting_a_cronjob_collects_its_jobs_then_their_pods() -> None:
    world = cluster("a", "b")
    key = world.add(cronjob(schedule="* * * * *"))
    at(world, BASE + MINUTE, key)
    job_key = next(k for k in world.objects if k.startswith("Job/"))
    world.pass_(job_key)  # the Job's own controller makes its pod
    world.kubelets()
    assert len(world.pods()) == 1
    del world.objects[key]
    for _ in range(2):
        plan = Plan()
        ctl.collect_orphans(ctl.Context(world.view(), plan, "", 0.25, new_uid))
        world.apply(plan)
        world.kubelets()
    assert jobs(world) == {} and world.pods() == []


def manifest(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": spec.pop("name", "hello")},
        "spec": {
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "OnFailure",
                            "containers": [{"name": "c", "image": DIGEST}],
                        }
                    }
                }
            },
            **spec,
        },
    }


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (
            {"schedule": "CRON_TZ=Europe/Berlin 0 9 * * *"},
            'spec.schedule: Invalid value: "CRON_TZ=Europe/Berlin 0 9 * * *": cannot use TZ or '
            "CRON_TZ in schedule, use timeZone field instead",
        ),
        (
            {"schedule": "0 0 9 * * *"},
            'spec.schedule: Invalid value: "0 0 9 * * *": expected exactly 5 fields, found 6: '
            "0 0 9 * * *",
        ),
        ({"schedule": "61 * * * *"}, 'spec.schedule: Invalid value: "61 * * * *": bad minute'),
        (
            {"schedule": "0 0 L * *"},
            "spec.schedule: Invalid value: \"0 0 L * *\": bad day of month: 'L' (L is not a "
            "value here)",
        ),
        (
            {"schedule": "@every 1h"},
            'spec.schedule: Invalid value: "@every 1h": @every is not supported (use a '
            "five-field schedule)",
        ),
        (
            {"schedule": "@daily", "timeZone": "Mars/Olympus"},
            "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone 'Mars/Olympus' "
            "(an IANA name such as Europe/Berlin or America/New_York)",
        ),
        (
            {"schedule": "@daily", "concurrencyPolicy": "Sometimes"},
            "spec.concurrencyPolicy: Input should be 'Allow', 'Forbid' or 'Replace'",
        ),
        (
            {"schedule": "@daily", "startingDeadlineSeconds": -1},
            "spec.startingDeadlineSeconds: Input should be greater than or equal to 0",
        ),
        (
            {"schedule": "@daily", "name": "n" * 53},
            "metadata.name: must be no more than 52 characters",
        ),
    ],
)
def test_a_cronjob_manifest_is_checked_as_kubernetes_checks_it(
    spec: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationFailed) as failed:
        validate_object(manifest(**spec))
    assert failed.value.errors == [problem]


def test_kubernetes_schedules_macros_and_defaults_are_accepted() -> None:
    for schedule in ("*/1 * * * *", "@hourly", "@daily", "@midnight", "@weekly", "@monthly",
                     "@yearly", "@annually", "0 9 ? * MON-FRI", "30 6-16/4 * * 1-5",
                     "0 0 1,15 JAN,jul *"):  # fmt: skip
        spec = validate_object(manifest(schedule=schedule))["spec"]
    assert (
        spec["concurrencyPolicy"],
        spec["suspend"],
        spec["successfulJobsHistoryLimit"],
        spec["failedJobsHistoryLimit"],
    ) == ("Allow", False, 3, 1)
    assert "timeZone" not in spec and "startingDeadlineSeconds" not in spec


def test_the_example_cronjob_is_kubernetes_documentations() -> None:
    """examples/cronjob.yaml validates as it is (its module path aside, which apply replaces
    with the published digest)."""
    example = yaml.safe_load((REPO / "examples" / "cronjob.yaml").read_text())
    containers = example["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == "build/hello.wasm"
    containers[0]["image"] = DIGEST
    spec = validate_object(example)["spec"]
    assert (example["apiVersion"], spec["schedule"], spec["concurrencyPolicy"]) == (
        "batch/v1",
        "* * * * *",
        "Allow",
    )


async def test_both_sides_of_a_partition_fire_a_time_and_the_heal_leaves_one_job(
    mesh: Mesh,
) -> None:
    """Two real Schedulers over two real pycrdt states that cannot talk: each holds the
    CronJob's lease as it sees it (the other is NotReady to it) and fires the same minute.
    Once linked, the states converge to one Job for that minute, with the uid both wrote, and
    both sides' pods are that Job's (none orphaned); with each other Ready again, the Job's
    one scheduler keeps a single pod."""
    if time.time() % 60 > 57:  # both sides must fire within one minute: not across its end
        await asyncio.sleep(60.1 - time.time() % 60)
    now = time.time()
    cj = cronjob(schedule="* * * * *")
    cj["metadata"]["creationTimestamp"] = stamp(now - 150)  # a minute is due at once
    key = "CronJob/default/tick"
    records = {name: node(name) for name in ("n1", "n2")}
    states: dict[str, ClusterState] = {}
    healed = False

    def view_of(me: str) -> Callable[[], list[NodeState]]:
        def nodes() -> list[NodeState]:
            return [
                NodeState(
                    r["obj"], r["status"], healed or n == me, 0.0 if healed or n == me else 10.0
                )
                for n, r in records.items()
            ]

        return nodes

    for name in records:
        states[name] = ClusterState(None, store_factory=PycrdtStore)
        await states[name].open()
        await states[name].put(OBJECTS, object_key("Blob", "", DIGEST), blob(DIGEST))
        await states[name].put(OBJECTS, key, cj)  # applied before the partition
    schedulers = {
        name: Scheduler(
            f"id-{name}",
            name,
            state,
            nodes=view_of(name),
            is_collector=lambda: False,
            events=EventRecorder(state, name, EventSettings()),
            settings=SchedulerSettings(),
        )
        for name, state in states.items()
    }
    minute = int(now) // 60
    name = f"tick-{minute}"
    try:
        for scheduler in schedulers.values():
            await scheduler.start()
        for state in states.values():
            await wait_for(lambda s=state: s.get(OBJECTS, f"Job/default/{name}"), 5, "the job")
            await wait_for(lambda s=state: s.keys(OBJECTS, "Pod/"), 5, "its pod")
        for scheduler in schedulers.values():
            await scheduler.close()
            await scheduler.events.flush()
        tags = {s.get(OBJECTS, f"Job/default/{name}")["metadata"]["annotations"][LEASE_ANNOTATION]
                for s in states.values()}  # fmt: skip
        assert tags == {"1/id-n1", "1/id-n2"}  # each side fired it, under its own lease
        mesh.link(states["n1"], "n1", states["n2"], "n2")
        await mesh.settle()
        one, two = (contents(s) for s in states.values())
        assert one == two
        jobs = [k for k in one["objects"] if k.startswith("Job/")]
        assert jobs == [f"Job/default/{name}"]
        job = one["objects"][jobs[0]]
        assert job["metadata"]["uid"] == job_uid(cj["metadata"]["uid"], minute)
        pods = [v for k, v in one["objects"].items() if k.startswith("Pod/")]
        assert len(pods) == 2  # one per side
        assert {p["metadata"]["ownerReferences"][0]["uid"] for p in pods} == {
            job["metadata"]["uid"]
        }
        created = sorted(
            e["source"]["host"] for e in one["events"].values() if e["reason"] == "SuccessfulCreate"
            and e["involvedObject"]["kind"] == "CronJob"
        )  # fmt: skip
        assert created == ["n1", "n2"]
        assert one["status"][key]["lastScheduleTime"] == stamp(minute * 60)
        # Healed: both Ready to each other, one lease, one scheduler for the Job.
        healed = True
        for scheduler in schedulers.values():
            await scheduler.start()

        def active_pods() -> int:  # (a pod marked for deletion waits for its kubelet)
            pods = [p for _, p in states["n1"].items(OBJECTS, "Pod/")]
            return len([p for p in pods if not p["metadata"].get("deletionTimestamp")])

        await wait_for(lambda: active_pods() == 1, 5, "one pod")
        await mesh.settle()
        assert [k for k in states["n2"].keys(OBJECTS, "Job/")] == [f"Job/default/{name}"]
        assert states["n2"].get(OBJECTS, f"Job/default/{name}")["metadata"]["uid"] == job_uid(
            cj["metadata"]["uid"], minute
        )
    finally:
        for scheduler in schedulers.values():
            await scheduler.close()
        await mesh.close()
        for state in states.values():
            await state.close()


def test_missed_times_are_counted_within_the_starting_deadline() -> None:
    world = cluster("a")
    key = world.add(cronjob(schedule="* * * * *", startingDeadlineSeconds=3600))
    plan = at(world, BASE + 200 * MINUTE + 5, key)  # 200 missed, 60 within the deadline
    assert reasons(plan) == ["SuccessfulCreate"]


def test_schedules_read_as_kubernetes_reads_them() -> None:
    def times(expr: str, start: str, count: int, zone: str | None = None) -> list[str]:
        schedule = Schedule(expr, zone)
        moment = datetime.fromisoformat(start)
        found = []
        for _ in range(count):
            moment = schedule.next_after(moment)
            found.append(rfc3339(moment.astimezone(schedule.zone)))
        return found

    # robfig/cron: both day fields restricted (a step on * restricts) fire on either.
    assert times("0 0 */10 * MON", "2027-01-01T00:00:00+00:00", 4) == [
        "2027-01-04T00:00:00Z",  # a Monday
        "2027-01-11T00:00:00Z",  # the 11th, and a Monday
        "2027-01-18T00:00:00Z",
        "2027-01-21T00:00:00Z",  # the 21st
    ]
    # ? is *, names in either case.
    assert times("30 9 ? * mon-fri", "2027-01-15T10:00:00+00:00", 2) == [
        "2027-01-18T09:30:00Z",
        "2027-01-19T09:30:00Z",
    ]
    # DST as Debian's cron: a time a spring-forward skips runs right after the jump; one a
    # fall-back repeats runs once.
    assert times("30 2 * * *", "2027-03-27T12:00:00+00:00", 2, "Europe/Berlin") == [
        "2027-03-28T03:00:00+02:00",
        "2027-03-29T02:30:00+02:00",
    ]
    assert times("30 2 * * *", "2026-10-24T12:00:00+00:00", 2, "Europe/Berlin") == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    latest = Schedule("@hourly").latest_until(datetime(2027, 1, 15, 8, 0, tzinfo=UTC))
    assert latest == datetime(2027, 1, 15, 8, 0, tzinfo=UTC)  # at or before
