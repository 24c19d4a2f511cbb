"""Scheduling without a control plane: apply to Running, failure to replacement, placement rate.

Real agent processes on loopback (``LocalCluster``), driven through the local API the way a
user drives them. Every time is taken on this process's one monotonic clock; a reader thread
per watch stamps each event the moment its line arrives (``ApiClient.watch``), and a condition
("all 5 pods Running and Ready") is timed at the event after which it first held.

**apply** (5 agents; ``ticker.wasm`` already fetched and compiled on every node by a warm-up
round): each rep PUTs a new Deployment (``--replicas`` replicas of ``ticker 1``, small
requests) through n1's API and times, on a Pod watch opened on n2 beforehand, until all its
pods are Running with Ready=True; then deletes it and waits until its pods are gone. Also
timed: until all its pods are *placed* (seen with ``spec.nodeName``), and the PUT round trip.
Baseline, same run, same watch: the same number of Pods PUT directly (concurrently, one
request each) with ``spec.nodeName`` set round-robin over the nodes, so no election, no
Deployment/ReplicaSet controller and no placement; the difference is the cost of scheduling
without a control plane.

**failover** (the same 5 agents): a Deployment of 3 replicas; each rep ``kill -9``s an agent
that runs one of its pods (never n1, which is watched), and times until n1's Pod watch shows 3
Running+Ready pods, none on the killed node. Baseline, the same kill, measured side by side:
until n1's Node watch reports the killed node NotReady (SWIM alone: the probes that miss it
and the suspicion timeout, the floor of any replacement). The
killed agent is then restarted from its data dir, and the next rep waits until it is Ready
everywhere and exactly 3 pods exist.

**throughput** (10 agents): per size in ``--pods`` (default 100, then 300; ``make bench``
also runs 1,000 three times: a size given n times runs n times), one Job with
completions = parallelism = that many pods of ``hello.wasm`` (exits at once; tiny requests),
PUT once through n1; timed until n1's Pod watch has seen every pod with ``spec.nodeName``,
until every pod Succeeded and until the Job's Complete condition (each within
``--burst-timeout`` of the PUT, else reported as not reached); how the pods spread over the
nodes, and what the burst did to the cluster: pods created (more than asked when pods on nodes
that looked NotReady were evicted and replaced), leases taken, the worst event-loop stall of
any agent (its membership core's own stall accounting), Ready/NotReady flips, scheduling
passes per agent. Baselines, same run, on the idle cluster before the bursts:
``placement.place`` over 10 ``NodeInfo`` in a plain Python loop (``assume()`` after each pod),
and the Job controller's whole pass (``reconcile_job`` into a Plan) in-process: pods/s without
the document, fsync, replication and kubelets.

The last stdout line is the JSON result; ``run_all.py`` renders it (``apply_table``,
``failover_table``, ``throughput_table``, ``completion_table``).

Run: ``.venv/bin/python -m bench.bench_sched [--part apply,failover,throughput] [--reps 20]
[--failover-reps 8] [--pods 100,300] [--throughput-agents 10]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from bench.benchlib import (
    REPO,
    emit,
    machine_busy_seconds,
    markdown_table,
    start_cluster,
    summary_ms,
    yes,
)
from p2pkube.api.client import ApiClient, ApiClientError
from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.membership.liveness import detection_bound
from p2pkube.membership.settings import SwimSettings
from p2pkube.membership.swim_gossip import suspicion_bounds
from p2pkube.sched.election import LEASE_ANNOTATION

TITLE = "Scheduling without a control plane"
"""The heading of this benchmark's section in docs/benchmarks.md."""
BUILD = REPO / "examples" / "build"
NAMESPACE = "bench-sched"
PARTS = ("apply", "failover", "throughput")
TARGET_APPLY_P99_MS = 250.0
KUBERNETES_SLO_S = 5.0
"""Kubernetes' pod startup SLO (p99 of schedulable, image-cached pods, apply to Running)."""
TARGET_FAILOVER_S = 3.0
REFERENCE_PODS_PER_S = {"Kubernetes (kube-scheduler)": 100, "Nomad": 1500}
"""Published scheduling rates, quoted for scale, not measured here."""
REQUESTS = {"cpu": "10m", "memory": "8Mi"}
JOB_REQUESTS = {"cpu": "1m", "memory": "1Mi"}
WAIT = 60.0
LEASE_FLAG = "lease:"
"""pod_flags' prefix of the lease a pod was created under (``p2pkube.io/lease``): more than
one per Job means two schedulers created its pods (n1 can list none of the LeaderElection
events of a burst: under load they had not reached it, or were gone)."""
"""Longest wait for one step (a rep that takes longer is a failure, not a slow figure)."""
MISSED = 20.0
"""A kill not replaced within this many seconds counts as missed (target not met)."""


# --- watching -------------------------------------------------------------------------------


def running_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return (
        status.get("phase") == "Running"
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        and not pod["metadata"].get("deletionTimestamp")
    )


def pod_flags(pod: dict[str, Any]) -> tuple[str, set[str]]:
    """(app label, flags) of a pod, for the tracker's running counts."""
    app = (pod["metadata"].get("labels") or {}).get("app", "")
    flags = {"total"}
    if pod.get("spec", {}).get("nodeName"):
        flags.add("placed")
    if running_ready(pod):
        flags.add("runningReady")
    if (pod.get("status") or {}).get("phase") == "Succeeded":
        flags.add("succeeded")
    lease = (pod["metadata"].get("annotations") or {}).get(LEASE_ANNOTATION)
    if isinstance(lease, str):
        flags.add(LEASE_FLAG + lease)  # which lease (epoch/holder) created it
    return app, flags


class Tracker:
    """The objects of one kind as one agent's watch reports them, stamped on arrival.

    A reader thread applies every event; :meth:`wait` blocks until a condition over the
    tracker holds and returns the arrival time of the event after which it first held.
    ``flags`` keeps per-group counters up to date so that conditions over hundreds of pods
    cost O(1) per event.
    """

    def __init__(
        self,
        client: ApiClient,
        kind: str,
        namespace: str | None = None,
        flags: Callable[[dict[str, Any]], tuple[str, set[str]]] | None = None,
    ) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.flags = flags
        self.objects: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, Counter[str]] = {}
        self.first_seen: dict[tuple[str, str], float] = {}
        """(object name, flag) -> when the flag was first seen on it."""
        self.events = 0
        self.restarts = 0
        """Watches the agent ended with 410 Expired (then listed and watched again)."""
        self.error: str | None = None
        self.closing = False
        self._classes: dict[str, tuple[str, set[str]]] = {}
        self._cond = threading.Condition()
        self._waiters: list[list[Any]] = []
        self.thread = threading.Thread(target=self._run, name=f"watch {kind}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        """List, then watch; when the agent ends the watch with 410 Expired (its queue of
        undelivered events overflowed), list and watch again, as a Kubernetes client does."""
        while True:
            try:
                listed = (
                    self.client.list_nodes()
                    if self.kind == "Node"
                    else self.client.list_objects(self.kind, self.namespace)
                )
                now = time.monotonic()
                with self._cond:
                    self._reset(listed, now)
                for event in self.client.watch(self.kind, self.namespace, timeout_seconds=7200):
                    now = time.monotonic()  # first thing: when the event reached the bench
                    with self._cond:
                        if not self._apply(event, now):
                            break
                else:
                    raise ApiClientError("the stream ended")
            except Exception as exc:  # ApiClientError, a reset socket, a malformed event
                with self._cond:
                    if not self.closing:
                        self.error = f"{self.kind} watch: {exc}"
                    self._cond.notify_all()
                return
            with self._cond:
                self.restarts += 1
                if self.error or self.closing:
                    self._cond.notify_all()
                    return

    def _reset(self, listed: list[dict[str, Any]], now: float) -> None:
        """Take a listing as the truth (objects gone meanwhile are dropped)."""
        names = {obj["metadata"]["name"] for obj in listed}
        for name in list(self.objects):
            if name not in names:
                self._apply({"type": "DELETED", "object": self.objects[name]}, now)
        for obj in listed:
            self._apply({"type": "MODIFIED", "object": obj}, now)

    def _apply(self, event: dict[str, Any], now: float) -> bool:
        """Apply one event; False when the watch ended with an error."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") != 410:
                self.error = f"{self.kind} watch failed: {obj.get('message')}"
            self._cond.notify_all()
            return False
        name = obj["metadata"]["name"]
        self.events += 1
        if kind == "DELETED":
            self.objects.pop(name, None)
        else:
            self.objects[name] = obj
        if self.flags is not None:
            old = self._classes.pop(name, None)
            if old is not None:
                self.counts[old[0]].subtract(old[1])
            if kind != "DELETED":
                group, flags = self.flags(obj)
                self._classes[name] = (group, flags)
                self.counts.setdefault(group, Counter()).update(flags)
                for flag in flags:
                    self.first_seen.setdefault((name, flag), now)
        for waiter in self._waiters:
            if waiter[1] is None and waiter[0](self):
                waiter[1] = now
        self._cond.notify_all()
        return True

    def count(self, group: str, flag: str) -> int:
        return self.counts.get(group, Counter())[flag]

    def wait(self, condition: Callable[[Tracker], bool], timeout: float, what: str) -> float:
        """When (monotonic) ``condition`` first held after an event; now if it holds already."""
        waiter: list[Any] = [condition, None]
        with self._cond:
            if condition(self):
                return time.monotonic()
            self._waiters.append(waiter)
            try:
                done = self._cond.wait_for(
                    lambda: waiter[1] is not None or self.error is not None, timeout
                )
            finally:
                self._waiters.remove(waiter)
            if self.error:
                raise RuntimeError(self.error)
            if not done:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            return float(waiter[1])

    def snapshot(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.objects.values())

    def close(self) -> None:
        with self._cond:
            self.closing = True


# --- objects --------------------------------------------------------------------------------


def container(image: str, args: list[str], requests: dict[str, str]) -> dict[str, Any]:
    return {
        "name": "main",
        "image": image,
        "args": args,
        "resources": {"requests": requests, "limits": {"memory": "32Mi"}},
    }


def deployment(name: str, replicas: int, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container(image, ["1"], REQUESTS)]},
            },
        },
    }


def direct_pod(name: str, app: str, node: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [container(image, ["1"], REQUESTS)]},
    }


def job(name: str, pods: int, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "completions": pods,
            "parallelism": pods,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container(image, [], JOB_REQUESTS)],
                },
            },
        },
    }


def job_complete(job_obj: dict[str, Any] | None) -> bool:
    conditions = ((job_obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)


# --- the cluster and its load ---------------------------------------------------------------


class Bed:
    """One LocalCluster of ``size`` agents, with a client per agent and the module digests."""

    def __init__(self, root: Path, size: int) -> None:
        self.size = size
        self.names = [f"n{i}" for i in range(1, size + 1)]
        self.cluster = LocalCluster(root / f"cluster-{size}")
        self.ready_seconds = 0.0
        self.images: dict[str, str] = {}

    def start(self) -> None:
        print(f"starting {self.size} agents...", flush=True)
        self.ready_seconds = start_cluster(self.cluster, self.names)
        print(f"{self.size} agents Ready everywhere after {self.ready_seconds:.1f}s", flush=True)
        time.sleep(2)  # let link setup and the first anti-entropy round finish

    def client(self, name: str) -> ApiClient:
        return ApiClient.from_data_dir(self.cluster.root / name)

    def image(self, module: str) -> str:
        """Publish ``module``.wasm on n1 (once); its ``sha256:`` digest."""
        if module not in self.images:
            blob, _ = self.client("n1").publish_blob(BUILD / f"{module}.wasm")
            self.images[module] = blob["metadata"]["name"]
        return self.images[module]

    def pid(self, name: str) -> int:
        process = self.cluster.agents[name].process
        assert process is not None
        return process.pid

    def leader_of(self, key: str) -> str | None:
        """The agent whose scheduler leads workload ``key`` (``Kind/ns/name``), if one does."""
        for name in self.names:
            if not self.cluster.agents[name].running:
                continue
            with contextlib.suppress(ApiClientError):
                if key in self.client(name).status()["scheduler"]["leading"]:
                    return name
        return None

    def lease_epoch(self, key: str) -> int | None:
        """The epoch of the lease its leader holds on workload ``key``: how many times a
        lease on it was taken (each taking adds one, the first is 1)."""
        for name in self.names:
            if not self.cluster.agents[name].running:
                continue
            with contextlib.suppress(ApiClientError):
                epochs = self.client(name).status()["scheduler"]["leaseEpochs"]
                if key in epochs:
                    return int(epochs[key])
        return None

    def close(self) -> None:
        self.cluster.close()


class Load:
    """CPU over a window: the cluster's processes, this bench, and the rest of the machine."""

    def __init__(self, bed: Bed) -> None:
        self.bed = bed
        self.started = time.monotonic()
        self.machine = machine_busy_seconds()
        self.bench = time.process_time()
        self.done = 0.0
        self.live: dict[int, tuple[psutil.Process, float]] = {}
        for name in bed.names:
            self.track(name)
        if bed.cluster.signaling is not None:
            self._add(bed.cluster.signaling.pid)

    def _add(self, pid: int) -> None:
        process = psutil.Process(pid)
        self.live[pid] = (process, _cpu(process))

    def track(self, name: str) -> None:
        self._add(self.bed.pid(name))

    def retire(self, name: str) -> None:
        """Count a process about to be killed (its CPU time vanishes with it)."""
        process, start = self.live.pop(self.bed.pid(name))
        with contextlib.suppress(psutil.Error):
            self.done += _cpu(process) - start

    def result(self) -> dict[str, float]:
        seconds = time.monotonic() - self.started
        cluster = self.done
        for process, start in self.live.values():
            with contextlib.suppress(psutil.Error):
                cluster += _cpu(process) - start
        bench = time.process_time() - self.bench
        others = machine_busy_seconds() - self.machine - cluster - bench
        return {
            "seconds": round(seconds, 1),
            "clusterCores": round(cluster / seconds, 2),
            "benchCores": round(bench / seconds, 2),
            "otherCores": round(max(0.0, others) / seconds, 2),
        }


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


# --- part 1: apply -> all Running -----------------------------------------------------------


def settle_modules(bed: Bed) -> None:
    """Wait until every agent has compiled its modules with Cranelift (tiered mode compiles
    Winch code first and Cranelift in the background): warm means the steady state."""

    def optimized() -> bool:
        return all(
            bed.client(n).status()["pods"]["runtime"].get("optimizedInBackground", 0)
            >= len(bed.images)
            for n in bed.names
        )

    with contextlib.suppress(TimeoutError):
        wait_until(optimized, 30, interval=0.5, what="Cranelift code on every agent")


def apply_rep(
    bed: Bed, pods: Tracker, name: str, replicas: int, image: str, direct: bool
) -> dict[str, float]:
    """One rep: create, time to placed and to Running+Ready, delete, time to gone (seconds)."""
    client = bed.client("n1")
    started = time.monotonic()
    if direct:
        objects = [
            direct_pod(f"{name}-{i}", name, bed.names[i % bed.size], image) for i in range(replicas)
        ]
        with ThreadPoolExecutor(len(objects)) as pool:
            list(pool.map(client.put_object, objects))
    else:
        client.put_object(deployment(name, replicas, image))
    acked = time.monotonic()
    placed = pods.wait(
        lambda t: t.count(name, "placed") == replicas, WAIT, f"{name}: {replicas} pods placed"
    )
    running = pods.wait(
        lambda t: t.count(name, "runningReady") == replicas, WAIT, f"{name}: {replicas} Running"
    )
    deleting = time.monotonic()
    if direct:
        with ThreadPoolExecutor(replicas) as pool:
            names = [o["metadata"]["name"] for o in objects]
            list(pool.map(lambda pod: client.delete_object("Pod", NAMESPACE, pod), names))
    else:
        client.delete_object("Deployment", NAMESPACE, name)
    gone = pods.wait(lambda t: t.count(name, "total") == 0, WAIT, f"{name}: pods gone")
    return {
        "ack": acked - started,
        "placed": placed - started,
        "running": running - started,
        "gone": gone - deleting,
    }


def measure_apply(bed: Bed, args: argparse.Namespace) -> dict[str, Any]:
    image = bed.image("ticker")
    pods = Tracker(bed.client("n2"), "Pod", NAMESPACE, pod_flags)
    try:
        print("apply: warm-up (every node fetches and compiles ticker.wasm)...", flush=True)
        apply_rep(bed, pods, "warm-deploy", args.replicas, image, direct=False)
        apply_rep(bed, pods, "warm-direct", bed.size, image, direct=True)
        settle_modules(bed)
        healthy = health(bed)
        load = Load(bed)
        samples: dict[str, list[dict[str, float]]] = {"deployment": [], "direct": []}
        for rep in range(args.reps):
            # Interleaved, so both see the same machine and the same document size.
            for variant, direct in (("deployment", False), ("direct", True)):
                name = f"{'dep' if not direct else 'pod'}-{rep:03d}"
                samples[variant].append(apply_rep(bed, pods, name, args.replicas, image, direct))
            d, b = samples["deployment"][-1], samples["direct"][-1]
            print(
                f"  rep {rep + 1}/{args.reps}: deployment Running after {d['running'] * 1000:.0f}"
                f" ms (placed {d['placed'] * 1000:.0f}), direct pods {b['running'] * 1000:.0f} ms"
                f" (placed {b['placed'] * 1000:.0f})",
                flush=True,
            )
        figures = {
            variant: {key: summary_ms([s[key] for s in reps]) for key in reps[0]}
            for variant, reps in samples.items()
        }
        return {
            "agents": bed.size,
            "replicas": args.replicas,
            "reps": args.reps,
            "targetP99Ms": TARGET_APPLY_P99_MS,
            "kubernetesSloSeconds": KUBERNETES_SLO_S,
            **figures,
            "load": load.result(),
            "health": health_delta(healthy, health(bed)),
        }
    finally:
        pods.close()


# --- part 2: failure -> replacement Running -------------------------------------------------


def node_ready(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


def measure_failover(bed: Bed, args: argparse.Namespace) -> dict[str, Any]:
    image = bed.image("ticker")
    viewer = "n1"
    app = "ha"
    replicas = 3
    pods = Tracker(bed.client(viewer), "Pod", NAMESPACE, pod_flags)
    nodes = Tracker(bed.client(viewer), "Node")
    reps: list[dict[str, Any]] = []
    try:
        nodes.wait(lambda t: len(t.objects) == bed.size, 30, "the Node watch's listing")
        bed.client(viewer).put_object(deployment(app, replicas, image))
        pods.wait(lambda t: t.count(app, "runningReady") == replicas, WAIT, "3 replicas")
        key = f"Deployment/{NAMESPACE}/{app}"
        load = Load(bed)
        for rep in range(args.failover_reps):
            current = [p for p in pods.snapshot() if running_ready(p)]
            used = sorted({p["spec"]["nodeName"] for p in current} - {viewer})
            leader = bed.leader_of(key)
            # Every other rep kills the workload's scheduler when it runs a pod: election and
            # eviction then happen in the same pass, on the node that wins the new lease.
            if rep % 2 == 1 and leader in used:
                victim = leader
            else:
                others = [n for n in used if n != leader] or used
                victim = others[(rep // 2) % len(others)]
            load.retire(victim)
            killed = time.monotonic()
            bed.cluster.kill(victim)

            def replaced(t: Tracker, victim: str = victim) -> bool:
                ok = [p for p in t.objects.values() if running_ready(p)]
                return len(ok) == replicas and all(p["spec"]["nodeName"] != victim for p in ok)

            def placed(t: Tracker, victim: str = victim) -> bool:
                live = [
                    p
                    for p in t.objects.values()
                    if not p["metadata"].get("deletionTimestamp")
                    and p["spec"].get("nodeName") not in (None, victim)
                ]
                return len(live) == replicas

            not_ready = nodes.wait(
                lambda t, v=victim: v in t.objects and not node_ready(t.objects[v]),
                WAIT,
                f"{victim} NotReady",
            )
            sample: dict[str, Any] = {
                "victim": victim,
                "victimWasLeader": leader == victim,
                "notReady": not_ready - killed,
            }
            try:
                sample["placed"] = pods.wait(placed, MISSED, "a replacement placed") - killed
                sample["running"] = pods.wait(replaced, MISSED, "a replacement Running") - killed
            except TimeoutError as exc:  # a result, not a crash: the target is missed
                print(f"  rep {rep + 1}: {exc} after killing {victim}", flush=True)
                sample["missed"] = True
            # Back to the start: the agent rejoins from its data dir, nothing extra survives.
            restarted = time.monotonic()
            bed.cluster.start_agent(victim)
            load.track(victim)
            bed.cluster.wait_api(victim, timeout=90)
            nodes.wait(
                lambda t, v=victim: v in t.objects and node_ready(t.objects[v]),
                WAIT,
                f"{victim} Ready again",
            )
            wait_until(
                lambda v=victim: (
                    all(s == "True" for s in bed.cluster.nodes(v).values())
                    and len(bed.cluster.nodes(v)) == bed.size
                ),
                WAIT,
                interval=0.2,
                what=f"{victim} to see every node Ready",
            )
            sample["rejoin"] = time.monotonic() - restarted

            def settled(v: str = victim) -> bool:
                mine = [
                    p
                    for p in pods.snapshot()
                    if (p["metadata"].get("labels") or {}).get("app") == app
                ]
                theirs = bed.client(v).list_objects("Pod", NAMESPACE, f"app={app}")
                return (
                    len(mine) == replicas
                    and all(running_ready(p) for p in mine)
                    and len(theirs) == replicas
                )

            wait_until(settled, WAIT, interval=0.2, what="exactly 3 pods again")
            time.sleep(args.settle)
            if not settled():
                raise RuntimeError(f"more or fewer than {replicas} pods after {victim} returned")
            reps.append(sample)
            outcome = (
                f"replacement placed {sample['placed']:.2f}s, Running {sample['running']:.2f}s"
                if "running" in sample
                else f"no replacement within {MISSED:g}s"
            )
            print(
                f"  rep {rep + 1}/{args.failover_reps}: killed {victim}"
                f"{' (the leader)' if sample['victimWasLeader'] else ''}: NotReady after "
                f"{sample['notReady']:.2f}s, {outcome}; back and Ready everywhere "
                f"{sample['rejoin']:.1f}s after the restart",
                flush=True,
            )
        done = [s for s in reps if "running" in s]
        figures = {
            key: summary_ms([s[key] for s in (reps if key == "notReady" else done)])
            for key in ("notReady", "placed", "running")
        }
        missed = len(reps) - len(done)
        worst = max((s["running"] for s in done), default=float("inf"))
        return {
            "agents": bed.size,
            "replicas": replicas,
            "reps": len(reps),
            "missed": missed,
            "missedAfterSeconds": MISSED,
            "targetSeconds": TARGET_FAILOVER_S,
            "targetMet": missed == 0 and worst < TARGET_FAILOVER_S,
            **figures,
            "rejoinSeconds": summary_ms([s["rejoin"] for s in reps]),
            "leaderKilled": sum(1 for s in reps if s["victimWasLeader"]),
            "samples": [
                {k: round(v, 3) if isinstance(v, float) else v for k, v in s.items()} for s in reps
            ],
            "settings": settings_of(bed),
            "load": load.result(),
        }
    finally:
        pods.close()
        nodes.close()
        with contextlib.suppress(ApiClientError):
            bed.client(viewer).delete_object("Deployment", NAMESPACE, app)


def settings_of(bed: Bed) -> dict[str, float]:
    """The defaults that bound a replacement (the bench passes no overrides)."""
    from p2pkube.sched.manager import SchedulerSettings

    swim, s = SwimSettings(), SchedulerSettings()
    floor, ceiling = suspicion_bounds(swim, bed.size)
    return {
        "probeInterval": swim.probe_interval,
        "suspicionFloor": round(floor, 3),
        "suspicionCeiling": round(ceiling, 3),
        "detectionBound": round(detection_bound(swim, bed.size), 3),
        "podEvictionGrace": s.pod_eviction_grace,
    }


TARGET_BURST_PODS = 1000
TARGET_PODS_PER_SECOND = 1000.0
"""Issue 13: a 1,000-pod Job on 10 agents placed at 1,000 pods/s or more (from the PUT until
the watching node has seen every pod placed), creating exactly 1,000 pods."""


def stall_bound(agents: int) -> float:
    """Seconds of stall beyond which SWIM may declare an agent DEAD: the probe period plus the
    suspicion timeout's floor at this size (see `SwimSettings`)."""
    swim = SwimSettings()
    floor, _ = suspicion_bounds(swim, agents)
    return swim.probe_interval + floor


def health(bed: Bed) -> dict[str, dict[str, float]]:
    """Per agent: the sum so far of how late its membership core's ticks came (each one later
    than ``swim.stall_threshold`` counted; a saturated loop adds up, no single stall need be
    long) and the Ready/NotReady transitions it saw."""
    out = {}
    for name in bed.names:
        with contextlib.suppress(ApiClientError):
            status = bed.client(name).status()
            out[name] = {
                "stalled": status["membership"]["stalledSeconds"],
                "transitions": sum(n["transitions"] for n in status["membership"]["nodes"]),
            }
    return out


def health_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The largest summed event-loop lateness of any agent, and liveness flips seen, over a
    window."""
    common = [n for n in after if n in before]
    stalls = {n: after[n]["stalled"] - before[n]["stalled"] for n in common}
    worst = max(stalls, key=lambda n: stalls[n]) if stalls else None
    return {
        "maxStalledSeconds": round(stalls[worst], 2) if worst else 0.0,
        "mostStalled": worst,
        "livenessTransitions": sum(
            after[n]["transitions"] - before[n]["transitions"] for n in common
        ),
    }


def elections(bed: Bed, name: str) -> list[str]:
    """The LeaderElection events of workload ``name`` still kept (one per lease taken; a
    node keeps its newest ``events.max_per_node`` events, so a leader that placed a
    1,000-pod Job may have pruned it: :meth:`Bed.lease_epoch` counts the takings)."""
    events = bed.client("n1").list_objects("Event", NAMESPACE)
    return sorted(
        e.get("message", "")
        for e in events
        if e.get("reason") == "LeaderElection" and e["involvedObject"].get("name") == name
    )


# --- part 3: scheduling throughput ----------------------------------------------------------


def baseline_placement(size: int, pods: int, image: str) -> dict[str, Any]:
    """pods/s of ``placement.place`` alone, and of the Job controller's pass, in-process."""

    from p2pkube.model.resources import Resources
    from p2pkube.sched import controllers as ctl
    from p2pkube.sched.placement import NodeInfo, PodToPlace, place
    from p2pkube.sched.view import ClusterView, Plan

    memory = psutil.virtual_memory().total

    def infos() -> dict[str, NodeInfo]:
        return {
            f"n{i}": NodeInfo(f"n{i}", f"id{i}", {}, True, Resources(2000, memory))
            for i in range(1, size + 1)
        }

    spec = job("baseline", pods, image)["spec"]["template"]["spec"]
    nodes = infos()
    started = time.perf_counter()
    for _ in range(pods):
        pod = PodToPlace(spec, "owner-uid")
        placement = place(pod, nodes.values())
        assert placement.node is not None, placement.diagnosis
        placement.node.assume(pod)
    place_seconds = time.perf_counter() - started
    spread = sorted(n.pods for n in nodes.values())

    workload = job("baseline", pods, image)
    workload["metadata"].update(uid="job-uid", creationTimestamp="2026-01-01T00:00:00Z")
    view = ClusterView(infos(), {}, [], {"Job": [workload]}, "2026-01-01T00:00:00Z", 0.0)
    counter = iter(range(10**9))
    plan = Plan()
    ctx = ctl.Context(view, plan, "1/bench", 0.25, lambda: f"uid-{next(counter)}")
    started = time.perf_counter()
    ctl.reconcile_job(ctx, workload)
    pass_seconds = time.perf_counter() - started
    created = sum(1 for (m, k) in plan.puts if m == "objects" and k.startswith("Pod/"))
    return {
        "placeSeconds": round(place_seconds, 4),
        "placePodsPerSecond": round(pods / place_seconds),
        "placeSpread": [spread[0], spread[-1]],
        "controllerSeconds": round(pass_seconds, 4),
        "controllerPodsPerSecond": round(created / pass_seconds),
    }


def measure_burst(
    bed: Bed, pods: Tracker, jobs: Tracker, n: int, image: str, timeout: float, rep: int
) -> dict[str, Any]:
    """One Job of ``n`` pods (the ``rep``-th of that size): PUT to all placed, to all
    Succeeded, to Complete (all within ``timeout`` s of the PUT, else reported as not
    reached); then delete it."""
    client = bed.client("n1")
    name = f"burst-{n}-{rep}"
    before = {m: bed.client(m).status()["scheduler"] for m in bed.names}
    healthy = health(bed)
    load = Load(bed)
    print(f"throughput: a Job of {n} pods on {bed.size} agents...", flush=True)
    started = time.monotonic()
    client.put_object(job(name, n, image))
    acked = time.monotonic()
    deadline = started + timeout

    def left() -> float:
        return max(0.1, deadline - time.monotonic())

    placed = pods.wait(lambda t: t.count(name, "placed") >= n, left(), f"{n} pods placed")
    leader = bed.leader_of(f"Job/{NAMESPACE}/{name}")
    print(f"  all placed after {placed - started:.2f}s (leader {leader})", flush=True)
    succeeded: float | None = None
    complete: float | None = None
    try:
        succeeded = pods.wait(
            lambda t: t.count(name, "succeeded") >= n, left(), f"{n} pods Succeeded"
        )
        complete = jobs.wait(lambda t: job_complete(t.objects.get(name)), left(), "Complete")
    except TimeoutError as exc:
        print(f"  {exc}", flush=True)
    cpu = load.result()
    after = {m: bed.client(m).status()["scheduler"] for m in bed.names}
    sick = health_delta(healthy, health(bed))
    mine = [p for p in pods.snapshot() if (p["metadata"].get("labels") or {}).get("app") == name]
    created = sum(
        1 for (pod, flag) in pods.first_seen if flag == "total" and pod.startswith(f"{name}-")
    )
    leases = sorted(
        {
            flag.removeprefix(LEASE_FLAG)
            for (pod, flag) in pods.first_seen
            if flag.startswith(LEASE_FLAG) and pod.startswith(f"{name}-")
        }
    )
    first_placed = min(
        at
        for (pod, flag), at in pods.first_seen.items()
        if flag == "placed" and pod.startswith(f"{name}-")
    )
    spread = Counter(p["spec"].get("nodeName") for p in mine)
    passes = {m: after[m]["passes"] - before[m]["passes"] for m in bed.names if m in after}
    skipped = {
        m: after[m].get("skippedPasses", 0) - before[m].get("skippedPasses", 0)
        for m in bed.names
        if m in after
    }

    def since(at: float | None) -> float | None:
        return None if at is None else round(at - started, 3)

    result = {
        "pods": n,
        "ackSeconds": round(acked - started, 3),
        "firstPlacedSeconds": round(first_placed - started, 3),
        "placedSeconds": round(placed - started, 3),
        "podsPerSecond": round(n / (placed - started), 1),
        "succeededSeconds": since(succeeded),
        "completeSeconds": since(complete),
        "completedPodsPerSecond": None
        if succeeded is None
        else round(n / (succeeded - started), 1),
        "timeoutSeconds": timeout,
        "spread": dict(sorted(spread.items())),
        "leader": leader,
        "leaderLastPassMs": after[leader]["lastPassMs"] if leader in after else None,
        "passes": passes,
        "skippedPasses": skipped,
        "podsCreated": created,
        "podsFailed": sum(1 for p in mine if (p.get("status") or {}).get("phase") == "Failed"),
        "leaderElections": elections(bed, name),
        "leasesTaken": bed.lease_epoch(f"Job/{NAMESPACE}/{name}"),
        "creatingLeases": leases,
        "health": sick,
        "load": cpu,
    }
    print(
        f"  Succeeded: {result['succeededSeconds']}s, Complete: {result['completeSeconds']}s; "
        f"{created} pods created, {result['leasesTaken']} lease(s) taken, "
        f"pods created under {len(leases)} lease(s) {leases}, "
        f"event-loop lateness {sick['maxStalledSeconds']}s summed over the burst "
        f"({sick['mostStalled']}, the worst agent), scheduling "
        f"passes per agent {sorted(passes.values())}",
        flush=True,
    )
    client.delete_object("Job", NAMESPACE, name)
    with contextlib.suppress(TimeoutError):
        pods.wait(lambda t: t.count(name, "total") == 0, WAIT, "the Job's pods gone")
    return result


def measure_throughput(bed: Bed, args: argparse.Namespace) -> dict[str, Any]:
    image = bed.image("hello")
    pods = Tracker(bed.client("n1"), "Pod", NAMESPACE, pod_flags)
    jobs = Tracker(bed.client("n1"), "Job", NAMESPACE)
    client = bed.client("n1")
    try:
        # Warm-up: one pod per node fetches and compiles hello.wasm; confirms both watches.
        warm = f"warm-job-{bed.size}"
        client.put_object(job(warm, bed.size, image))
        pods.wait(lambda t: t.count(warm, "succeeded") == bed.size, WAIT, "the warm-up Job")
        jobs.wait(lambda t: job_complete(t.objects.get(warm)), WAIT, "the warm-up Job Complete")
        client.delete_object("Job", NAMESPACE, warm)
        pods.wait(lambda t: t.count(warm, "total") == 0, WAIT, "the warm-up pods gone")
        settle_modules(bed)
        # The baselines first, while the cluster idles (a burst leaves it busy for a while).
        baselines = {n: baseline_placement(bed.size, n, image) for n in sorted(set(args.pods))}
        runs = []
        for n in sorted(args.pods):  # a size given more than once runs that many times
            time.sleep(2)  # quiet between bursts
            rep = sum(1 for r in runs if r["pods"] == n) + 1
            run = measure_burst(bed, pods, jobs, n, image, args.burst_timeout, rep)
            runs.append({**run, "rep": rep, "baseline": baselines[n]})
        return {
            "agents": bed.size,
            "runs": runs,
            "watchRestarts": pods.restarts,
            "reference": REFERENCE_PODS_PER_S,
            "load": {
                "otherCores": round(max(r["load"]["otherCores"] for r in runs), 2),
                "clusterCores": round(max(r["load"]["clusterCores"] for r in runs), 2),
                "benchCores": round(max(r["load"]["benchCores"] for r in runs), 2),
                "seconds": round(sum(r["load"]["seconds"] for r in runs), 1),
            },
        }
    finally:
        pods.close()
        jobs.close()


# --- report ---------------------------------------------------------------------------------


def apply_table(r: dict[str, Any]) -> str:
    rows = []
    for key, label in (
        ("deployment", "p2pkube: Deployment (election, controllers, placement)"),
        ("direct", "baseline: Pods with spec.nodeName (no scheduler)"),
    ):
        for phase, what in (("placed", "placed"), ("running", "all Running+Ready")):
            f = r[key][phase]
            rows.append([label, what, f["p50"], f["p95"], f["p99"], f["max"], f["n"]])
    return markdown_table(["variant", "apply to", "p50 ms", "p95", "p99", "max", "reps"], rows)


def failover_table(r: dict[str, Any]) -> str:
    rows = [
        [
            "baseline: SWIM alone, kill to NotReady on the watcher",
            *_ms_as_s(r["notReady"]),
        ],
        ["p2pkube: kill to replacement placed", *_ms_as_s(r["placed"])],
        ["p2pkube: kill to 3 Running+Ready (replacement running)", *_ms_as_s(r["running"])],
    ]
    return markdown_table(
        ["kill -9 of a pod's node to", "p50 s", "p95", "p99", "max", "reps"], rows
    )


def _ms_as_s(f: dict[str, float]) -> list[Any]:
    return [round(f[k] / 1000, 2) for k in ("p50", "p95", "p99", "max")] + [f["n"]]


def throughput_table(r: dict[str, Any]) -> str:
    """Pods placed per second: p2pkube against the in-process baselines, per Job size."""
    rows = []
    for run in r["runs"]:
        n, b = run["pods"], run["baseline"]
        rows += [
            [
                n,
                f"p2pkube: PUT to every pod placed (n1's watch; leader {run['leader']})",
                run["placedSeconds"],
                run["podsPerSecond"],
            ],
            [
                n,
                "baseline: Job controller pass, in-process",
                b["controllerSeconds"],
                b["controllerPodsPerSecond"],
            ],
            [
                n,
                f"baseline: placement.place loop, {r['agents']} NodeInfo",
                b["placeSeconds"],
                b["placePodsPerSecond"],
            ],
        ]
    return markdown_table(["pods", "placed by", "seconds", "pods/s"], rows)


def completion_table(r: dict[str, Any]) -> str:
    """What the burst did to the cluster: completion, duplicates, elections, stalls."""

    def cell(value: Any) -> Any:
        return "not within the timeout" if value is None else value

    rows = []
    for run in r["runs"]:
        spread = list(run["spread"].values()) or [0]
        rows.append(
            [
                run["pods"],
                cell(run["succeededSeconds"]),
                cell(run["completeSeconds"]),
                run["podsCreated"],
                _leases_taken(run),
                run["health"]["maxStalledSeconds"],
                run["health"]["livenessTransitions"],
                f"{len(run['spread'])} nodes, {min(spread)}-{max(spread)} each",
            ]
        )
    return markdown_table(
        [
            "pods",
            "all Succeeded s",
            "Job Complete s",
            "pods created",
            "leases taken",
            "loop lateness s (sum)",
            "Ready flips",
            "spread",
        ],
        rows,
    )


def print_load(part: str, load: dict[str, float]) -> None:
    print(
        f"{part}: {load['seconds']:g}s; the cluster used {load['clusterCores']:g} cores, this "
        f"bench {load['benchCores']:g}, other processes {load['otherCores']:g}",
        flush=True,
    )


# --- docs/benchmarks.md ---------------------------------------------------------------------------


def render(r: dict[str, Any]) -> list[str]:
    """Each part that ran (apply, failover, throughput): its table, target and limits."""
    lines: list[str] = []
    if r.get("apply"):
        lines += _render_apply(r["apply"])
    if r.get("failover"):
        lines += _render_failover(r["failover"])
    if r.get("throughput"):
        lines += _render_throughput(r["throughput"])
    return lines


def _render_apply(apply: dict[str, Any]) -> list[str]:
    """Apply to all pods Running: the setup, the table against direct Pods, the target,
    and where the time goes."""
    d, b = apply["deployment"], apply["direct"]
    p99 = d["running"]["p99"]
    load = apply["load"]
    return [
        f"**Apply to all pods Running**: {apply['agents']} agents, `ticker.wasm` already "
        "fetched and compiled on every node. Each rep PUTs a new Deployment of "
        f"{apply['replicas']} replicas through n1 and times, on a Pod watch opened on n2 "
        "beforehand, until every pod is *placed* (seen with `spec.nodeName`) and until every "
        "pod is Running with Ready=True; then deletes it and waits until its pods are gone. "
        f"Baseline, interleaved with it ({apply['reps']} reps each): the same number of "
        "Pods PUT directly (concurrently) with `spec.nodeName` set round-robin, no election, "
        "no controller, no placement.",
        "",
        apply_table(apply),
        "",
        f"**Target** p99 < {apply['targetP99Ms']:g} ms (the Kubernetes SLO is "
        f"{apply['kubernetesSloSeconds']:g} s): {yes(p99 < apply['targetP99Ms'])} "
        f"(p99 {p99:g} ms over {d['running']['n']} reps, so p99 is about the worst rep).",
        "",
        "**What limits it**: the Deployment's PUT is acknowledged after "
        f"{d['ack']['p50']:g} ms (p50; one fsynced transaction); its pods reach the "
        f"watching agent {d['placed']['p50'] - d['ack']['p50']:g} ms later: the write "
        "replicates to the node elected for the workload, whose next scheduling pass "
        "(passes are debounced by 20 ms) takes the lease and writes the ReplicaSet and all "
        "placed pods in one transaction, which replicates to the watcher. The baseline "
        f"needs {apply['replicas']} API writes (each validated, its own transaction and "
        f"replication), {b['ack']['p50']:g} ms p50 for all of them, and its pods are all "
        f"visible after {b['placed']['p50']:g} ms (the Deployment's: "
        f"{d['placed']['p50']:g} ms). "
        "From placed to Running (the kubelets instantiate a compiled module and write "
        "Running, replicated again) takes "
        f"{d['running']['p50'] - d['placed']['p50']:g} ms for the Deployment; the "
        "baseline's first pods start while its last PUTs are still in flight. "
        + (
            f"In all the Deployment was {b['running']['p50'] - d['running']['p50']:g} ms "
            "faster than the direct Pods at the median: one transaction written by the "
            "scheduler costs less than one API write per pod, which hides what the "
            "election, the controllers and placement add. "
            if d["running"]["p50"] < b["running"]["p50"]
            else "In all, scheduling without a control plane added "
            f"{d['running']['p50'] - b['running']['p50']:g} ms at the median. "
        )
        + "Every step competes for CPU: the agents used "
        f"{load['clusterCores']:g} and other processes "
        + f"{load['otherCores']:g} of {os.cpu_count()} cores while this ran"
        + (
            ", and an agent's event loop woke up late by "
            f"{apply['health']['maxStalledSeconds']:g} s in all (summed)."
            if apply.get("health", {}).get("maxStalledSeconds", 0) >= 0.5
            else "."
        ),
        "",
    ]


def _render_failover(failover: dict[str, Any]) -> list[str]:
    """Node failure to replacement Running: the setup, the table, the target, and the
    detection, grace and start that add up to it."""
    f, cfg = failover, failover["settings"]
    detect, placed, running = f["notReady"], f["placed"], f["running"]
    return [
        f"**Node failure to replacement Running**: a Deployment of {f['replicas']} replicas "
        f"on {f['agents']} agents; each rep `kill -9`s an agent running one of its pods "
        "(never n1, which watches), and times until n1's Pod watch shows "
        f"{f['replicas']} Running+Ready pods, none on the killed node; the killed agent then "
        "restarts from its data dir and the next rep starts once it is Ready everywhere and "
        f"exactly {f['replicas']} pods exist. Baseline, the same kills: until n1's Node "
        "watch reports the killed node NotReady, SWIM alone and the floor "
        f"of any replacement. The workload's own scheduler was the victim in "
        f"{f['leaderKilled']} of {f['reps']} reps.",
        "",
        failover_table(f),
        "",
        f"**Target** replacement Running within {f['targetSeconds']:g} s of the failure: "
        f"{yes(f['targetMet'])} (worst {running['max'] / 1000:.2f} s of {f['reps']} kills"
        + (
            f"; {f['missed']} kill(s) not replaced within {f['missedAfterSeconds']:g} s, "
            "left out of the table)."
            if f.get("missed")
            else ")."
        ),
        "",
        "**What limits it**: detection. A killed node is missed by the next probe of it "
        f"(each agent probes one member every `swim.probe_interval` = "
        f"{cfg.get('probeInterval', 0):g} s), suspected, and NotReady (DEAD) when the "
        "suspicion times out: after its floor "
        f"({cfg.get('suspicionFloor', 0):g} s) once others confirm it, at most its ceiling "
        f"({cfg.get('suspicionCeiling', 0):g} s), so within "
        f"{cfg.get('detectionBound', 0):g} s at {f['agents']} agents "
        f"(measured p50 {detect['p50'] / 1000:.2f} s). Then the scheduler waits "
        f"`scheduler.pod_eviction_grace` = {cfg['podEvictionGrace']:g} s, deletes the lost "
        "pod and places a replacement in the same pass (when the victim held the lease, "
        "another node takes it in that pass): "
        f"+{(placed['p50'] - detect['p50']) / 1000:.2f} s p50 to placed. The new pod "
        f"starts warm: +{(running['p50'] - placed['p50']) / 1000:.2f} s to Running. "
        "Restarting the agent took "
        f"{f['rejoinSeconds']['p50'] / 1000:.1f} s p50 until it was Ready everywhere.",
        "",
    ]


def _render_throughput(burst: dict[str, Any]) -> list[str]:
    """Scheduling throughput: the setup, both tables, and what limits the rate."""
    runs = burst["runs"]
    reference = ", ".join(f"{k} ~{v:,} pods/s" for k, v in burst["reference"].items())
    return [
        f"**Scheduling throughput**: {burst['agents']} agents; per size, one Job with "
        "completions = parallelism = N pods of `hello.wasm` (exits at once; tiny requests) "
        "PUT once through n1, timed on n1's Pod watch until every pod has `spec.nodeName`, "
        "then until every pod Succeeded and the Job is Complete (each within "
        f"{runs[0]['timeoutSeconds']:g} s of the PUT). Baselines, same run, on the idle "
        "cluster: the Job controller's whole pass in-process (placement plus building the "
        "pod objects into a plan) and the bare `placement.place` loop over "
        f"{burst['agents']} `NodeInfo` (`assume()` after each pod): no document, fsync, "
        f"replication or kubelets. For scale, published figures (not measured here): "
        f"{reference}.",
        "",
        throughput_table(burst),
        "",
        "What each burst did to the cluster (*pods created*: every pod of the Job ever "
        "seen, more than N when pods on nodes that looked NotReady were evicted and "
        "replaced; *leases taken*: the epoch of the Job's lease, one per taking; *loop "
        "lateness*: "
        "for the worst agent, the sum over the burst of how late its membership core's "
        "ticks came (a saturated loop, not one long stall: a tick is due at least every "
        f"{SwimSettings().probe_interval:g} s, the probe period); *Ready flips*: liveness "
        "transitions "
        "seen by all agents together):",
        "",
        completion_table(burst),
        "",
        f"**Target** (issue 13): a {TARGET_BURST_PODS:,}-pod Job placed at "
        f"{TARGET_PODS_PER_SECOND:,.0f} pods/s or more, with exactly {TARGET_BURST_PODS:,} pods "
        "created; the in-process baselines are the ceiling for this Python code.",
        "",
        _burst_limits(burst),
    ]


def _leases_taken(run: dict[str, Any]) -> int:
    """Leases taken on a burst's Job: its lease's epoch (runs saved before it was measured:
    the LeaderElection events kept)."""
    taken = run.get("leasesTaken")
    return int(taken) if taken is not None else len(run["leaderElections"])


def _burst_limits(burst: dict[str, Any]) -> str:
    """Why placing and running a burst take what they took, and whether it overloaded the
    cluster."""
    runs = burst["runs"]
    text = "**What limits it**: "
    first = runs[0]
    text += (
        f"the leader (the node the Job was applied to leads it: its lease is written with "
        f"the Job) places all {first['pods']} pods in its first pass and writes them "
        f"in one transaction; n1 saw them {first['placedSeconds']:g} s after the PUT "
        f"({first['podsPerSecond']:g} pods/s), against "
        f"{first['baseline']['controllerSeconds']:g} s for the same controller pass "
        "in-process: the rest is the leader's view of the whole document, the "
        "transaction, its fsync and the replication of every pod object, on a machine "
        f"where other processes kept {burst['load']['otherCores']:g} of "
        f"{os.cpu_count()} cores busy. "
    )
    for x in runs[1:]:
        text += (
            f"With {x['pods']} pods, placing took {x['placedSeconds']:g} s "
            f"({x['podsPerSecond']:g} pods/s; in-process: "
            f"{x['baseline']['controllerSeconds']:g} s). "
        )
    passes = [sorted(x["passes"].values()) or [0] for x in runs]
    text += (
        "Running them is slower than placing them: every pod's status changes about three "
        "times, each change is a transaction replicated to every agent, and every agent "
        "runs a scheduling pass after every change ("
        + "; ".join(
            f"{x['pods']} pods: {p[0]}-{p[-1]} passes per agent, "
            f"{sum(x.get('skippedPasses', {}).values()):,} of "
            f"{sum(x['passes'].values()):,} in all skipped"
            for x, p in zip(runs, passes, strict=True)
        )
        + "; a node that leads nothing decides so from the leases alone and skips the "
        "view of every pod), and every change is replicated through every agent, whose "
        "Python WebRTC stack (DTLS, SCTP) and CRDT decoding share the same two cores. "
    )
    sick = [
        x
        for x in runs
        if x["podsCreated"] > x["pods"]
        or _leases_taken(x) > 1
        or len(x.get("creatingLeases", [])) > 1
        or x["health"]["maxStalledSeconds"] >= stall_bound(x.get("agents", 10))
    ]
    if sick:
        text += (
            "**The bursts overloaded the cluster**: "
            + "; ".join(
                f"{x['pods']} pods: an event loop ran late by {x['health']['maxStalledSeconds']:g}"
                f" s in all ({x['health']['mostStalled']}), {x['health']['livenessTransitions']} "
                f"Ready flips, {x['podsCreated']} pods created, "
                f"{_leases_taken(x)} lease(s) taken, pods created under "
                f"{len(x.get('creatingLeases', []))}"
                for x in sick
            )
            + ". Stalled agents miss probes; one stalled longer than the probe period plus "
            "the suspicion floor may be declared DEAD (NotReady) by the others"
            + (
                ", which evict their pods and create replacements"
                if any(x["podsCreated"] > x["pods"] for x in sick)
                else ""
            )
            + (" and take over their leases" if any(_leases_taken(x) > 1 for x in sick) else "")
            + "."
            + (
                " A pod evicted that way is deleted and its replacement runs too, so more "
                "pods run than the Job needed; the bursts are CPU-bound (10 agents on "
                f"{os.cpu_count()} cores), not limited by placement."
                if any(x["podsCreated"] > x["pods"] for x in sick)
                else ""
            )
        )
    return text.rstrip()


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    """This benchmark's rows of the summary table (one per part that ran)."""
    r = result
    rows = []
    if "apply" in r:
        a = r["apply"]
        p99 = a["deployment"]["running"]["p99"]
        rows.append(
            [
                f"apply to all pods Running ({a['replicas']} pods, {a['agents']} agents)",
                f"p99 {p99:g} ms (Pods with nodeName: p99 {a['direct']['running']['p99']:g} ms)",
                f"p99 < {a['targetP99Ms']:g} ms",
                yes(p99 < a["targetP99Ms"]),
            ]
        )
    if "failover" in r:
        f = r["failover"]
        rows.append(
            [
                "node killed to replacement Running",
                f"max {f['running']['max'] / 1000:.2f} s, p50 {f['running']['p50'] / 1000:.2f}"
                f" s (detector alone p50 {f['notReady']['p50'] / 1000:.2f} s)"
                + (f", {f['missed']} of {f['reps']} not replaced" if f.get("missed") else ""),
                f"< {f['targetSeconds']:g} s",
                yes(f["targetMet"]),
            ]
        )
    if "throughput" in r:
        t = r["throughput"]
        parts = [
            f"{x['podsPerSecond']:g} pods/s placing {x['pods']}"
            + (f" ({x['podsCreated']} created)" if x["podsCreated"] > x["pods"] else "")
            for x in t["runs"]
        ]
        best = max(x["baseline"]["controllerPodsPerSecond"] for x in t["runs"])
        target = [x for x in t["runs"] if x["pods"] == TARGET_BURST_PODS]
        rows.append(
            [
                f"scheduling throughput ({t['agents']} agents, one Job)",
                ", ".join(parts) + f"; in-process controller: {best:,} pods/s",
                f">= {TARGET_PODS_PER_SECOND:,.0f} pods/s placing {TARGET_BURST_PODS:,}, "
                "exactly that many created",
                yes(
                    bool(target)
                    and all(
                        x["podsPerSecond"] >= TARGET_PODS_PER_SECOND
                        and x["podsCreated"] == x["pods"]
                        for x in target
                    )
                )
                if target
                else "-",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS)
    )
    parser.add_argument("--agents", type=int, default=5, help="agents for apply and failover")
    parser.add_argument("--replicas", type=int, default=5, help="pods per apply rep")
    parser.add_argument("--reps", type=int, default=20, help="apply reps (each variant)")
    parser.add_argument("--failover-reps", type=int, default=8)
    parser.add_argument("--settle", type=float, default=1.0, help="quiet s after a rejoin")
    parser.add_argument(
        "--pods",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[100, 300],
        help="pods of each throughput Job, comma-separated (a size given twice runs twice)",
    )
    parser.add_argument(
        "--burst-timeout", type=float, default=90.0, help="longest wait for one throughput step"
    )
    parser.add_argument("--throughput-agents", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the clusters' data dirs")
    args = parser.parse_args()
    parts = [p for p in args.part.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")

    # SIGTERM (a runner giving up) tears the clusters down like an error does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    root = Path(tempfile.mkdtemp(prefix="p2pkube-bench-sched-"))
    result: dict[str, Any] = {"bench": "sched", "parts": parts}
    bed: Bed | None = None
    started = time.monotonic()

    @contextlib.contextmanager
    def cluster(size: int) -> Iterator[Bed]:
        nonlocal bed
        if bed is None or bed.size != size:
            if bed is not None:
                bed.close()
            bed = Bed(root, size)
            bed.start()
        yield bed

    try:
        for part in PARTS:
            if part not in parts:
                continue
            size = args.throughput_agents if part == "throughput" else args.agents
            with cluster(size) as b:
                if part == "apply":
                    r = measure_apply(b, args)
                    print(
                        f"\napply -> all Running, {r['replicas']} pods on {r['agents']} agents:\n"
                    )
                    print(apply_table(r))
                elif part == "failover":
                    r = measure_failover(b, args)
                    print(
                        f"\nkill -9 -> replacement, {r['replicas']} replicas on "
                        f"{r['agents']} agents:\n"
                    )
                    print(failover_table(r))
                else:
                    r = measure_throughput(b, args)
                    print(f"\nscheduling throughput on {r['agents']} agents:\n")
                    print(throughput_table(r))
                    print()
                    print(completion_table(r))
                r["clusterReadySeconds"] = round(b.ready_seconds, 1)
                print_load(part, r["load"])
                print(flush=True)
                result[part] = r
    except BaseException:
        if bed is not None:  # what the agents were doing when it failed
            for name in bed.names:
                print(f"--- {name} log ---\n{bed.cluster.log_tail(name, 25)}", file=sys.stderr)
        raise
    finally:
        if bed is not None:
            bed.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    if "apply" in result:
        p99 = result["apply"]["deployment"]["running"]["p99"]
        met = "met" if p99 < TARGET_APPLY_P99_MS else "MISSED"
        print(f"apply target p99 < {TARGET_APPLY_P99_MS:g} ms: {met} (p99 {p99:g} ms)")
    if "failover" in result:
        f = result["failover"]
        met = "met" if f["targetMet"] else "MISSED"
        print(
            f"failover target < {TARGET_FAILOVER_S:g} s: {met} "
            f"(max {f['running']['max'] / 1000:.2f} s; {f['missed']} of {f['reps']} kills not "
            f"replaced within {MISSED:g} s)"
        )
    emit(result)


if __name__ == "__main__":
    main()
