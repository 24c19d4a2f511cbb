"""Placement, election and controllers as pure functions, driven through a simulated cluster.

The simulation stands in for the kubelets only: pods placed on a Ready node start Running and
Ready (or succeed/fail, for Job tests), pods marked for deletion go away. Everything else is the
real scheduling code deciding from a real ClusterView.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from p2pkube.model.resources import Resources
from p2pkube.model.schema import validate_object
from p2pkube.sched import controllers as ctl
from p2pkube.sched.cronjob import reconcile_cronjob
from p2pkube.sched.election import LEASE_ANNOTATION, Lease, decide, rendezvous_rank
from p2pkube.sched.placement import NodeInfo, PodToPlace, place
from p2pkube.sched.view import ClusterView, Plan, PodView, node_infos

DIGEST = "sha256:" + "ab" * 32
_uids = itertools.count(1)


def new_uid() -> str:
    return f"uid-{next(_uids)}"


def node(name: str, cpu: str = "2", memory: str = "1Gi", **labels: str) -> dict[str, Any]:
    return {
        "obj": {
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": f"id-{name}",
                "labels": {"p2pkube.io/kind": "native", **labels},
            },
        },
        "status": {"allocatable": {"cpu": cpu, "memory": memory}},
    }


def container(**resources: Any) -> dict[str, Any]:
    return {"name": "c", "image": DIGEST, **({"resources": resources} if resources else {})}


def workload(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    obj = validate_object(
        {"apiVersion": "p2pkube.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    )
    obj["metadata"].update(namespace="default", uid=new_uid(), generation=1, creationTimestamp="t0")
    return obj


def deployment(replicas: int, args: list[str], **strategy: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{**container(), "args": args}]},
        },
    }
    if strategy:
        spec["strategy"] = strategy
    return workload("Deployment", "web", spec)


@dataclass
class World:
    """A tiny cluster: node records, the objects/status maps, and fake kubelets."""

    nodes: dict[str, dict[str, Any]]
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    ready: set[str] = field(default_factory=set)
    not_ready_for: dict[str, float] = field(default_factory=dict)
    outcome: Callable[[dict[str, Any]], str] = lambda pod: "Running"
    """What a started pod does: Running (and Ready), Succeeded or Failed."""
    clock: int = 0

    def __post_init__(self) -> None:
        self.ready = set(self.nodes) if not self.ready else self.ready

    def add(self, obj: dict[str, Any]) -> str:
        meta = obj["metadata"]
        key = f"{obj['kind']}/{meta['namespace']}/{meta['name']}"
        self.objects[key] = obj
        return key

    def view(self) -> ClusterView:
        self.clock += 1
        kinds = ("Deployment", "ReplicaSet", "Job", "CronJob", "DaemonSet")
        pods, objects = [], {k: [] for k in kinds}
        for key, obj in sorted(self.objects.items()):
            status = self.status.get(key)
            if obj["kind"] == "Pod":
                live = status if status and status.get("podUID") == obj["metadata"]["uid"] else {}
                pods.append(PodView(key, obj, live))
            else:
                objects[obj["kind"]].append({**obj, "status": status} if status else obj)
        infos = node_infos(
            ((n["obj"], n["status"], name in self.ready) for name, n in self.nodes.items()),
            pods,
            110,
        )
        seconds = 1_800_000_000.0 + self.clock  # one simulated second per pass
        return ClusterView(
            infos,
            dict(self.not_ready_for),
            pods,
            objects,
            datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            seconds,
        )

    def apply(self, plan: Plan) -> None:
        for (map_name, key), value in plan.puts.items():
            if map_name == "objects":
                self.objects[key] = value
            elif map_name == "status":
                self.status[key] = value
        for map_name, key in plan.deletes:
            if map_name == "objects":
                self.objects.pop(key, None)
            elif map_name == "status":
                self.status.pop(key, None)

    def kubelets(self) -> None:
        """Start placed pods, finish deletions (nodes that are Ready only)."""
        for key, obj in list(self.objects.items()):
            if obj["kind"] != "Pod":
                continue
            node_name = obj["spec"].get("nodeName")
            if node_name not in self.ready:
                continue
            if obj["metadata"].get("deletionTimestamp"):
                del self.objects[key]
                self.status.pop(key, None)
            elif self.status.get(key, {}).get("podUID") != obj["metadata"]["uid"]:
                phase = self.outcome(obj)
                self.status[key] = {
                    "podUID": obj["metadata"]["uid"],
                    "phase": phase,
                    "conditions": [
                        {"type": "Ready", "status": "True" if phase == "Running" else "False"}
                    ],
                    "containerStatuses": [{"name": "c", "restartCount": 0}],
                }

    def pass_(self, workload_key: str, lease: str = "1/me") -> Plan:
        view = self.view()
        plan = Plan()
        ctx = ctl.Context(view, plan, lease, 0.25, new_uid)
        obj = next(
            o
            for objs in view.objects.values()
            for o in objs
            if f"{o['kind']}/default/{o['metadata']['name']}" == workload_key
        )
        {
            "Deployment": ctl.reconcile_deployment,
            "Job": ctl.reconcile_job,
            "DaemonSet": ctl.reconcile_daemonset,
            "ReplicaSet": ctl.reconcile_replicaset,
            "CronJob": reconcile_cronjob,
        }[obj["kind"]](ctx, obj)
        ctl.collect_orphans(ctx)
        self.apply(plan)
        return plan

    def pods(self, *, phase: str | None = None) -> list[dict[str, Any]]:
        found = [
            o
            for o in self.objects.values()
            if o["kind"] == "Pod" and not o["metadata"].get("deletionTimestamp")
        ]
        if phase is not None:
            found = [
                p
                for p in found
                if self.status.get(f"Pod/default/{p['metadata']['name']}", {}).get("phase") == phase
            ]
        return found


def cluster(*names: str, **kwargs: Any) -> World:
    return World({name: node(name, **kwargs) for name in names})


# -- placement ------------------------------------------------------------------------------
def test_placement_filters_explain_why_nothing_fits() -> None:
    infos = node_infos(
        [
            (node("a", memory="64Mi")["obj"], node("a", memory="64Mi")["status"], True),
            (node("b", memory="64Mi")["obj"], node("b", memory="64Mi")["status"], True),
            (node("c", zone="x")["obj"], node("c")["status"], True),
            (node("d")["obj"], node("d")["status"], False),
        ],
        [],
        110,
    )
    spec = {"containers": [container(requests={"memory": "128Mi"})], "nodeSelector": {"zone": "y"}}
    result = place(PodToPlace(spec), infos.values())
    assert result.node is None
    assert result.diagnosis == (
        "0/4 nodes are available: 3 node(s) didn't match Pod's node selector, "
        "1 node(s) were not ready."
    )
    spec = {"containers": [container(requests={"memory": "128Mi"})]}
    result = place(PodToPlace(spec), infos.values())
    assert result.node is not None and result.node.name == "c"
    spec = {"containers": [container(requests={"memory": "2Gi"})]}
    assert place(PodToPlace(spec), infos.values()).diagnosis == (
        "0/4 nodes are available: 3 Insufficient memory, 1 node(s) were not ready."
    )


def test_placement_spreads_a_workload_and_honours_node_kind() -> None:
    infos = {
        name: NodeInfo(
            name, f"id-{name}", {"p2pkube.io/kind": kind}, True, Resources(2000, 1 << 30)
        )
        for name, kind in (("a", "native"), ("b", "native"), ("c", "browser"))
    }
    spec = {"containers": [container(requests={"cpu": "100m"})]}
    chosen = []
    for _ in range(3):
        pod = PodToPlace(spec, owner="w")
        result = place(pod, infos.values())
        assert result.node is not None
        result.node.assume(pod)
        chosen.append(result.node.name)
    assert sorted(chosen) == ["a", "b", "c"]
    browser_only = {**spec, "nodeSelector": {"p2pkube.io/kind": "browser"}}
    result = place(PodToPlace(browser_only, owner="x"), infos.values())
    assert result.node is not None and result.node.name == "c"


# -- election -------------------------------------------------------------------------------
def test_election_is_sticky_and_bumps_the_epoch_on_takeover() -> None:
    nodes = {"n1", "n2", "n3"}
    ranked = rendezvous_rank("wl", nodes)
    assert ranked == rendezvous_rank("wl", reversed(sorted(nodes)))  # order-independent
    first = decide(ranked[0], "wl", None, nodes)
    assert (first.leader, first.take, first.epoch) == (ranked[0], True, 1)
    lease = Lease(ranked[2], "n?", 4, "t")
    assert decide(ranked[0], "wl", lease, nodes) == decide(ranked[0], "wl", lease, nodes)
    assert decide(ranked[0], "wl", lease, nodes).leader == ranked[2]  # the holder keeps it
    gone = decide(ranked[0], "wl", lease, nodes - {ranked[2]})
    assert (gone.leader, gone.take, gone.epoch) == (ranked[0], True, 5)
    assert decide("x", "wl", None, set()).leader is None
    # A holder this node has not heard from yet (it just started), or that is NotReady for
    # less than the grace, keeps its lease: no lease ping-pong after a restart or a blip.
    assert decide(ranked[0], "wl", lease, nodes - {ranked[2]}, alive=nodes).leader == ranked[2]
    assert Lease.from_value({"holder": "h", "holderName": "n", "epoch": True}) is None


# -- controllers --------------------------------------------------------------------------------
def test_replicaset_places_distinct_nodes_and_replaces_a_lost_node_after_the_grace() -> None:
    world = cluster("a", "b", "c", "d")
    key = world.add(deployment(3, ["1"]))
    for _ in range(3):
        world.pass_(key)
        world.kubelets()
    running = world.pods(phase="Running")
    assert len(running) == 3 and len({p["spec"]["nodeName"] for p in running}) == 3
    victim = running[0]["spec"]["nodeName"]
    world.ready.discard(victim)
    world.not_ready_for[victim] = 0.1  # within the grace: nothing moves yet
    assert world.pass_(key).deletes == set()
    world.not_ready_for[victim] = 0.3
    plan = world.pass_(key)
    assert any(k.startswith("Pod/") for _, k in plan.deletes)
    world.kubelets()
    nodes = sorted(p["spec"]["nodeName"] for p in world.pods(phase="Running"))
    assert len(nodes) == 3 and victim not in nodes
    reasons = [e.reason for e in plan.events]
    assert "NodeNotReady" in reasons and "Scheduled" in reasons


def test_surplus_pods_from_a_stale_lease_are_removed_first() -> None:
    world = cluster("a", "b", "c", "d")
    key = world.add(deployment(2, ["1"]))
    for _ in range(2):
        world.pass_(key, lease="2/winner")
        world.kubelets()
    rs_key = next(k for k in world.objects if k.startswith("ReplicaSet/"))
    rs = world.objects[rs_key]
    # The other side of a partition created two more under its own lease.
    for node_name in ("c", "d"):
        extra = ctl.pod_from_template(
            ctl.Context(world.view(), Plan(), "1/loser", 0.25, new_uid),
            rs,
            rs["spec"]["template"],
            prefix="web",
        )
        extra["spec"]["nodeName"] = node_name
        extra["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"  # older: age keeps them
        world.add(extra)
    world.kubelets()
    assert len(world.pods(phase="Running")) == 4
    world.pass_(key, lease="2/winner")
    world.kubelets()
    left = world.pods(phase="Running")
    assert len(left) == 2
    assert {p["metadata"]["annotations"][LEASE_ANNOTATION] for p in left} == {"2/winner"}


def test_rolling_update_keeps_availability_within_its_bounds() -> None:
    world = cluster("a", "b", "c", "d", "e")
    dep = deployment(
        4, ["v1"], type="RollingUpdate", rollingUpdate={"maxSurge": 1, "maxUnavailable": 1}
    )
    key = world.add(dep)
    for _ in range(4):
        world.pass_(key)
        world.kubelets()
    assert len(world.pods(phase="Running")) == 4
    updated = {
        **dep,
        "spec": {
            **dep["spec"],
            "template": {
                **dep["spec"]["template"],
                "spec": {"containers": [{**container(), "args": ["v2"]}]},
            },
        },
    }
    updated["metadata"] = {**dep["metadata"], "generation": 2}
    world.objects[key] = updated
    for _ in range(20):
        world.pass_(key)
        running = world.pods(phase="Running")
        # Between the controller's writes and the kubelets: never below 4 - 1 available,
        # never more than 4 + 1 pods.
        assert len([p for p in running if not p["metadata"].get("deletionTimestamp")]) >= 3
        assert len(world.pods()) <= 5
        world.kubelets()
    args = sorted(p["spec"]["containers"][0]["args"][0] for p in world.pods(phase="Running"))
    assert args == ["v2"] * 4
    status = world.status[key]
    assert (status["updatedReplicas"], status["availableReplicas"], status["revision"]) == (4, 4, 2)
    assert len([k for k in world.objects if k.startswith("ReplicaSet/")]) == 2  # history kept


def test_a_job_runs_its_completions_with_its_parallelism() -> None:
    world = cluster("a", "b", "c")
    world.outcome = lambda pod: "Running"
    job = workload(
        "Job",
        "batch",
        {
            "completions": 5,
            "parallelism": 2,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container()]}},
        },
    )
    key = world.add(job)
    seen_active = []
    for _ in range(12):
        world.pass_(key)
        world.kubelets()
        active = world.pods(phase="Running")
        seen_active.append(len(active))
        for pod in active:  # every pod finishes after one pass
            world.status[f"Pod/default/{pod['metadata']['name']}"]["phase"] = "Succeeded"
    assert max(seen_active) == 2
    status = world.status[key]
    assert status["succeeded"] == 5 and status["conditions"][0]["type"] == "Complete"
    assert len(world.pods(phase="Succeeded")) == 5


def test_a_failing_job_stops_after_its_backoff_limit() -> None:
    world = cluster("a", "b")
    world.outcome = lambda pod: "Failed"
    job = workload(
        "Job",
        "doomed",
        {
            "backoffLimit": 2,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container()]}},
        },
    )
    key = world.add(job)
    for _ in range(8):
        world.pass_(key)
        world.kubelets()
    status = world.status[key]
    assert status["failed"] == 3
    assert status["conditions"][0]["reason"] == "BackoffLimitExceeded"
    assert len(world.pods()) == 3  # failed pods are kept (for their logs), no more are made


def test_daemonset_runs_one_pod_per_matching_node() -> None:
    world = World({"a": node("a", disk="ssd"), "b": node("b", disk="ssd"), "c": node("c")})
    ds = workload(
        "DaemonSet",
        "agent",
        {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": {"disk": "ssd"}, "containers": [container()]},
            },
        },
    )
    key = world.add(ds)
    for _ in range(3):
        world.pass_(key)
        world.kubelets()
    assert sorted(p["spec"]["nodeName"] for p in world.pods(phase="Running")) == ["a", "b"]
    assert world.status[key]["desiredNumberScheduled"] == 2
    assert world.status[key]["numberReady"] == 2


def test_host_path_pods_go_only_where_the_node_operator_granted_them() -> None:
    """Grants as Node statuses publish them: b lets pods read /srv, c write /srv/data but
    keeps its data dir /srv/data/p2pkube; a grants nothing (like any browser tab)."""
    world = cluster("a", "b", "c")
    world.nodes["b"]["status"]["allowedHostPaths"] = [{"pathPrefix": "/srv", "readOnly": True}]
    world.nodes["c"]["status"].update(
        allowedHostPaths=[{"pathPrefix": "/srv/data", "readOnly": False}],
        protectedHostPaths=["/srv/data/p2pkube"],
    )
    infos = world.view().nodes

    def spec(path: str, writable: bool = False) -> dict[str, Any]:
        mount = {"name": "v", "mountPath": "/v", **({"readOnly": False} if writable else {})}
        return {
            "containers": [{**container(), "volumeMounts": [mount]}],
            "volumes": [{"name": "v", "hostPath": {"path": path}}],
        }

    def where(path: str, writable: bool = False) -> str:
        placed = place(PodToPlace(spec(path, writable)), infos.values())
        return placed.node.name if placed.node is not None else placed.diagnosis

    assert where("/srv/www") == "b"
    assert where("/srv/data/in", writable=True) == "c"
    assert where("/srv/www", writable=True) == (
        "0/3 nodes are available: 3 node(s) didn't allow hostPath /srv/www read-write."
    )
    assert where("/srv/data/p2pkube/state") == "b"  # inside c's data dir: b alone grants it
    assert where("/srv/data", writable=True) == (  # holds c's data dir
        "0/3 nodes are available: 3 node(s) didn't allow hostPath /srv/data read-write."
    )
    daemons = workload(
        "DaemonSet",
        "reader",
        {
            "selector": {"matchLabels": {"app": "reader"}},
            "template": {"metadata": {"labels": {"app": "reader"}}, "spec": spec("/srv/data/x")},
        },
    )
    key = world.add(daemons)
    for _ in range(3):
        world.pass_(key)
        world.kubelets()
    assert sorted(p["spec"]["nodeName"] for p in world.pods(phase="Running")) == ["b", "c"]
    assert world.status[key]["desiredNumberScheduled"] == 2


def test_deleting_a_deployment_collects_its_replicasets_and_pods() -> None:
    world = cluster("a", "b")
    key = world.add(deployment(2, ["1"]))
    for _ in range(2):
        world.pass_(key)
        world.kubelets()
    del world.objects[key]
    view = world.view()
    plan = Plan()
    ctl.collect_orphans(ctl.Context(view, plan, "", 0.25, new_uid))
    world.apply(plan)
    world.kubelets()
    view = world.view()
    plan = Plan()
    ctl.collect_orphans(ctl.Context(view, plan, "", 0.25, new_uid))
    world.apply(plan)
    world.kubelets()
    assert world.pods() == [] and not any(k.startswith("ReplicaSet/") for k in world.objects)


def test_a_node_that_refuses_daemon_pods_gets_one_attempt_per_back_off() -> None:
    world = cluster("a", "b")
    world.outcome = lambda pod: "Failed"  # e.g. its kubelet's admission: OutOfmemory
    ds = workload(
        "DaemonSet",
        "greedy",
        {
            "selector": {"matchLabels": {"app": "greedy"}},
            "template": {
                "metadata": {"labels": {"app": "greedy"}},
                "spec": {"containers": [container()]},
            },
        },
    )
    key = world.add(ds)
    created = 0
    for _ in range(12):  # 12 simulated seconds, with a 5 s back-off
        plan = world.pass_(key)
        created += sum(1 for (m, k) in plan.puts if m == "objects" and k.startswith("Pod/"))
        world.kubelets()
    assert 4 <= created <= 8, created  # 2 nodes x (the first try + one per 5 s), not 24


def test_requests_count_whole_millicores_rounded_up_as_kube_scheduler_does() -> None:
    """CPU is summed in integer millicores (kube-scheduler's MilliValue rounds up), so a
    sub-millicore request still costs a millicore and fractions never pile up."""
    from p2pkube.model.resources import container_requests, pod_requests

    tiny = {"resources": {"requests": {"cpu": "0.0001", "memory": "1.5"}}}
    assert container_requests(tiny) == Resources(1, 2)
    two = {"containers": [{"resources": {"limits": {"cpu": "1.5", "memory": "1Mi"}}}, tiny]}
    assert pod_requests(two) == Resources(1501, (1 << 20) + 2)
