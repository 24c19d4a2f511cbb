"""A CronJob on real agents (separate processes, real aiortc, pycrdt and wasmtime): scheduled
by the node elected for it, and firing once per scheduled time when that node is killed just
before a firing.

Cron has minute resolution. Rather than wait for the next minute boundary (5-65 s), the
agents run with their clocks moved forward by whole seconds (Debian's libfaketime, preloaded;
it moves the monotonic clock too, which each process only compares with itself: leaving it
alone breaks ``time.sleep``), so that a minute boundary comes ``SETUP_SECONDS`` after they
start: the cluster sees real minutes that begin sooner. The test reads the same moved clock
(``cluster_now``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.model.timestamps import parse_time
from p2pkube.sched.cronjob import SCHEDULED_ANNOTATION, job_uid
from p2pkube.sched.election import LEASE_ANNOTATION
from tests.clusters import all_ready, wait_all_ready
from tests.test_pods_cluster import BUILD, write_manifest
from tests.test_workloads_cluster import items

REPO = Path(__file__).resolve().parent.parent
NAMES = ["n1", "n2", "n3"]
SETUP_SECONDS = 20
"""Seconds from starting the agents to the first minute boundary of their clock: enough to
form the cluster, publish and pull the module with ``LEAD_SECONDS`` to spare (about 12 s on
this machine); when set-up takes longer the firing is a minute later, as before."""
LEAD_SECONDS = 6.0
"""At least this long between choosing the firing and the firing: to apply the CronJob and
list it."""
KILL_BEFORE = 1.5
"""Seconds before the firing that its scheduler is killed: it has not fired; another must."""
TAKEOVER_SECONDS = 6.0
"""Firing to the Job created by the new leader, as asserted: SWIM's detection after the kill
(2.3-2.7 s between real agents) + scheduler.pod_eviction_grace, less KILL_BEFORE, with room
for a loaded machine."""


def libfaketime() -> Path:
    """Debian's libfaketime for threaded programs (package faketime, which .ci/run installs)."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    assert found, "libfaketime is missing: apt-get install faketime"
    return found[0]


def hello_cronjob() -> dict[str, Any]:
    """Kubernetes' documentation's CronJob (concepts/workloads/controllers/cron-jobs), with a
    WebAssembly module for the image."""
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "hello"},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "hello",
                                    "image": "hello.wasm",
                                    "args": ["Hello from the p2pkube cluster"],
                                }
                            ],
                            "restartPolicy": "OnFailure",
                        }
                    }
                }
            },
        },
    }


def leader_of(cluster: LocalCluster, key: str, among: list[str]) -> str | None:
    """The agent among ``among`` whose scheduler leads ``key`` (``p2pkube status``)."""
    for name in among:
        if key in cluster.api(name, "GET", "/v1/status")["scheduler"]["leading"]:
            return name
    return None


@pytest.mark.serial  # times a failover (SWIM's detection) against a minute boundary
def test_a_cronjob_fires_once_when_its_scheduler_is_killed_just_before_a_firing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    started = time.monotonic()
    if not (BUILD / "hello.wasm").exists():
        subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    cluster.start_signaling()
    target = time.time() + SETUP_SECONDS
    offset = int(-(-target // 60) * 60 - target)  # whole seconds: a boundary ~SETUP_SECONDS on
    # The library itself, not the `faketime` command (which forks: a kill -9 of it would
    # leave the agent running), in new interpreters (a fork of the zygote loads no library).
    cluster.env.update(LD_PRELOAD=str(libfaketime()), FAKETIME=f"+{offset}s")
    cluster.starter = None

    def cluster_now() -> float:
        return time.time() + offset

    for name in NAMES:
        cluster.start_agent(name)
    wait_all_ready(cluster, NAMES)
    # The module first, on every node (a blob lives where it was published or pulled, and n2,
    # which publishes it, will be killed); then the minute, then the CronJob.
    manifest = write_manifest(tmp_path, hello_cronjob())
    published = cluster.cli("n2", "publish", str(tmp_path / "hello.wasm"), "-o", "name")
    image = published.stdout.strip().removeprefix("blob/")
    for name in ("n1", "n3"):
        cluster.cli(name, "pull", image)
    firing = (int(cluster_now()) // 60 + 1) * 60
    if firing - cluster_now() < LEAD_SECONDS:
        firing += 60
    applied = cluster.cli("n2", "apply", "-f", str(manifest))
    assert applied.stdout.strip() == "cronjob/hello created"
    key = "CronJob/default/hello"
    assert leader_of(cluster, key, NAMES) == "n2"  # the node it was applied through leads it
    cronjob = items(cluster, "n1", "CronJob")[0]
    template = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert template["containers"][0]["image"] == image
    listed = cluster.cli("n3", "get", "cronjobs").stdout.splitlines()
    assert listed[0].split() == [
        *("NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE")
    ]
    assert listed[1].split()[:6] == ["hello", "*", "*", "*", "*", "*"]
    assert listed[1].split()[6:10] == ["<none>", "False", "0", "<none>"]

    time.sleep(max(0.0, firing - KILL_BEFORE - cluster_now()))
    assert items(cluster, "n1", "Job") == [], "nothing fired before the scheduled time"
    cluster.kill("n2")
    killed_at = cluster_now()
    assert killed_at < firing, "the test was late: n2 was killed after the firing"
    name = f"hello-{firing // 60}"

    def the_job(viewer: str) -> dict[str, Any] | None:
        found = [j for j in items(cluster, viewer, "Job") if j["metadata"]["name"] == name]
        return found[0] if found else None

    job = wait_until(lambda: the_job("n1"), 20, interval=0.05, what=f"job {name}")
    seen = cluster_now()
    leader = wait_until(lambda: leader_of(cluster, key, ["n1", "n3"]), 10, what="a new leader")
    print(f"n2 killed {firing - killed_at:.2f}s before {name}'s time; {leader} created it, seen "
          f"{seen - firing:.2f}s after that time")  # fmt: skip
    created = parse_time(job["metadata"]["creationTimestamp"])
    assert created is not None and created - firing < TAKEOVER_SECONDS
    meta = job["metadata"]
    assert meta["annotations"][SCHEDULED_ANNOTATION] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(firing)
    )
    assert meta["annotations"][LEASE_ANNOTATION].startswith("2/")  # the new leader's, epoch 2
    assert meta["uid"] == job_uid(cronjob["metadata"]["uid"], firing // 60)
    assert meta["ownerReferences"][0]["uid"] == cronjob["metadata"]["uid"]

    # It runs, once: its one pod succeeds and logs what Kubernetes' example prints.
    def complete() -> dict[str, Any] | None:
        job = the_job("n3")
        conditions = (job or {}).get("status", {}).get("conditions") or []
        return job if any(c["type"] == "Complete" for c in conditions) else None

    wait_until(complete, 30, what=f"{name} complete")
    pods = items(cluster, "n3", "Pod", f"job-name={name}")
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]
    logs = cluster.cli("n1", "logs", pods[0]["metadata"]["name"]).stdout
    assert "argv[1] = Hello from the p2pkube cluster" in logs
    events = [
        e
        for viewer in ("n1", "n3")
        for e in items(cluster, viewer, "Event")
        if e["involvedObject"]["name"] == "hello" and e["involvedObject"]["kind"] == "CronJob"
    ]
    created_events = {
        (e["source"].get("host"), e["message"]) for e in events if e["reason"] == "SuccessfulCreate"
    }
    assert (leader, f"Created job {name}") in created_events
    assert not any(m == f"Created job {name}" and h != leader for h, m in created_events)
    elections = {e["message"] for e in events if e["reason"] == "LeaderElection"}
    assert f"{leader} schedules cronjob hello (lease epoch 2)" in elections
    status = items(cluster, "n1", "CronJob")[0]["status"]
    assert status["lastScheduleTime"] == meta["annotations"][SCHEDULED_ANNOTATION]

    # The killed node comes back: it takes nothing back and fires nothing again.
    cluster.start_agent("n2")
    cluster.wait_api("n2")
    wait_until(lambda: all_ready(cluster, "n2", NAMES), 30, what="n2 back")
    time.sleep(1.0)
    for viewer in NAMES:
        jobs = {j["metadata"]["name"]: j for j in items(cluster, viewer, "Job")}
        fired = sorted(n for n in jobs if int(n.rsplit("-", 1)[1]) <= firing // 60)
        assert fired == [name], f"{viewer} sees {sorted(jobs)}"
        assert jobs[name]["metadata"]["uid"] == meta["uid"]
    assert leader_of(cluster, key, NAMES) == leader
    print(f"wall time {time.monotonic() - started:.1f}s")
