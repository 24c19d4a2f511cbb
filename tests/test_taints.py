"""Cordons, taints and tolerations without agents: the model's validation, matching,
placement's filters and score, the controllers' NoExecute eviction (through
tests/test_sched.py's simulated cluster), the object service's Node writes and the CLI's
taint arithmetic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import click
import pytest

from p2pkube.cli.common import CliError
from p2pkube.cli.describe_pods import toleration_text
from p2pkube.cli.nodes import parse_taint, retaint
from p2pkube.model.errors import ValidationFailed
from p2pkube.model.objects import ObjectService
from p2pkube.model.schema import validate_object
from p2pkube.model.taints import noexecute_deadline, tolerates
from p2pkube.sched import controllers as ctl
from p2pkube.sched.placement import PodToPlace, place
from p2pkube.sched.view import Plan, node_infos
from p2pkube.state import ClusterState
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.store import OBJECTS
from tests.test_sched import DIGEST, World, container, deployment, node, workload


def when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tainted(name: str, *taints: dict[str, Any], cordoned: bool = False) -> dict[str, Any]:
    record = node(name)
    record["obj"]["spec"] = {
        **({"unschedulable": True} if cordoned else {}),
        **({"taints": list(taints)} if taints else {}),
    }
    return record


def infos(*records: dict[str, Any]) -> dict[str, Any]:
    return node_infos(((r["obj"], r["status"], True) for r in records), [], 110)


def pod_spec(*tolerations: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [container()]}
    if tolerations:
        spec["tolerations"] = list(tolerations)
    return spec


def pod_errors(tolerations: list[dict[str, Any]]) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        validate_object(
            {
                "apiVersion": "p2pkube.io/v1",
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {
                    "containers": [{"name": "c", "image": DIGEST}],
                    "tolerations": tolerations,
                },
            }
        )
    return caught.value.errors


# -- the model ----------------------------------------------------------------------------------
def test_tolerations_are_validated_as_kubernetes_does_with_their_paths() -> None:
    assert pod_errors(
        [
            {"operator": "Equal", "value": "x"},
            {"key": "a", "operator": "Exists", "value": "x"},
            {"key": "a", "effect": "NoSchedule", "tolerationSeconds": 30},
            {"key": "a", "operator": "In"},
            {"key": "a", "effect": "Sometimes"},
            {"key": "-bad-"},
        ]
    ) == [
        "spec.tolerations[0].operator: Invalid value: 'Equal': operator must be Exists when "
        '`key` is empty, which means "match all values and all keys"',
        "spec.tolerations[1].value: Invalid value: 'x': value must be empty when `operator` "
        "is 'Exists'",
        "spec.tolerations[2].effect: Invalid value: 'NoSchedule': effect must be 'NoExecute' "
        "when `tolerationSeconds` is set",
        "spec.tolerations[3].operator: Unsupported value: 'In': supported values: \"Equal\", "
        '"Exists"',
        "spec.tolerations[4].effect: Unsupported value: 'Sometimes': supported values: "
        '"NoSchedule", "PreferNoSchedule", "NoExecute"',
        "spec.tolerations[5].key: Invalid value: '-bad-': name part must consist of "
        "alphanumeric characters, '-', '_' or '.', and must start and end with an "
        "alphanumeric character (e.g. 'MyName' or 'my.name')",
    ]
    valid = validate_object(
        {
            "apiVersion": "p2pkube.io/v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": pod_spec(
                {"operator": "Exists"},
                {"key": "k", "value": "v", "effect": "NoExecute", "tolerationSeconds": 60},
            ),
        }
    )
    assert valid["spec"]["tolerations"] == [
        {"operator": "Exists"},
        {"key": "k", "value": "v", "effect": "NoExecute", "tolerationSeconds": 60},
    ]


def test_a_node_spec_is_validated_and_nothing_else_of_it_is_writable() -> None:
    def errors(spec: dict[str, Any], **meta: Any) -> list[str]:
        with pytest.raises(ValidationFailed) as caught:
            validate_object(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": "n1", **meta},
                    "spec": spec,
                }
            )
        return caught.value.errors

    assert errors(
        {
            "taints": [
                {"key": "a", "effect": "NoSchedule"},
                {"key": "a", "value": "x", "effect": "NoSchedule"},
                {"key": "b", "effect": "Never"},
                {"effect": "NoExecute"},
                {"key": "c", "effect": "NoExecute", "timeAdded": "yesterday"},
            ]
        }
    ) == [
        "spec.taints[2].effect: Unsupported value: 'Never': supported values: \"NoSchedule\", "
        '"PreferNoSchedule", "NoExecute"',
        "spec.taints[3].key: Field required",
        "spec.taints[4].timeAdded: must be an RFC 3339 time",
    ]
    assert errors(
        {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}]}
    ) == ["spec.taints[1]: Duplicate value: 'a': taints must be unique by key and effect pair"]
    assert errors({"podCidr": "10.0.0.0/24"}) == ["spec.podCidr: unknown field"]
    warnings: list[str] = []
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    validate_object({**node, "spec": {"podCIDR": "10.0.0.0/24"}}, warnings.append)
    assert warnings == ["spec.podCIDR: ignored: p2pkube does not implement this Kubernetes field"]


def test_toleration_matching_is_kubernetes() -> None:
    taint = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    assert tolerates({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}, taint)
    assert tolerates({"key": "dedicated", "operator": "Equal", "value": "gpu"}, taint)
    assert not tolerates({"key": "dedicated", "value": "cpu"}, taint)
    assert tolerates({"key": "dedicated", "operator": "Exists"}, taint)  # any value
    assert not tolerates({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}, taint)
    assert tolerates({"operator": "Exists"}, taint)  # empty key + Exists: everything
    assert not tolerates({"key": "other", "operator": "Exists"}, taint)
    assert not tolerates({"key": "dedicated"}, taint)  # Equal with no value: value ""
    assert tolerates({"key": "k"}, {"key": "k", "effect": "NoExecute"})


def test_noexecute_deadlines_count_from_the_taint_or_the_pods_creation() -> None:
    added = 1_000.0
    taint = {"key": "k", "effect": "NoExecute", "timeAdded": when(added)}
    five = {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
    assert noexecute_deadline([taint], []) == 0.0  # not tolerated: now
    assert noexecute_deadline([taint], [{"key": "k", "operator": "Exists"}]) is None  # for good
    assert noexecute_deadline([taint], [five]) == added + 5
    assert noexecute_deadline([taint], [five], since=added + 100) == added + 105
    assert noexecute_deadline([taint], [{**five, "tolerationSeconds": 0}]) == 0.0
    assert noexecute_deadline([{**taint, "effect": "NoSchedule"}], []) is None


# -- placement ----------------------------------------------------------------------------------
def test_a_cordoned_node_is_filtered_out_with_kubectls_diagnosis() -> None:
    nodes = infos(tainted("a", cordoned=True), node("b"))
    nodes["b"].ready = False
    result = place(PodToPlace(pod_spec()), nodes.values())
    assert result.node is None
    assert result.diagnosis == (
        "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable."
    )
    unschedulable_ok = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}
    chosen = place(PodToPlace(pod_spec(unschedulable_ok)), nodes.values()).node
    assert chosen is not None and chosen.name == "a"


def test_noschedule_and_noexecute_taints_filter_and_name_the_taint() -> None:
    nodes = infos(
        tainted("a", {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}),
        tainted("b", {"key": "maintenance", "effect": "NoExecute", "timeAdded": when(0)}),
        tainted("c", {"key": "maintenance", "effect": "NoExecute", "timeAdded": when(0)}),
        tainted("d", {"key": "slow", "effect": "PreferNoSchedule"}),
    )
    nodes["d"].ready = False
    assert place(PodToPlace(pod_spec()), nodes.values()).diagnosis == (
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, "
        "2 node(s) had untolerated taint {maintenance: }, 1 node(s) were not ready."
    )
    for toleration, expected in (
        ({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}, "a"),
        ({"key": "dedicated", "operator": "Exists"}, "a"),
        ({"key": "maintenance", "operator": "Exists", "effect": "NoExecute"}, "b"),
        ({"operator": "Exists"}, "a"),
    ):
        chosen = place(PodToPlace(pod_spec(toleration)), nodes.values()).node
        assert chosen is not None and chosen.name == expected, toleration
    wrong_effect = {"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}
    wrong_value = {"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}
    for toleration in (wrong_effect, wrong_value):
        assert place(PodToPlace(pod_spec(toleration)), nodes.values()).node is None


def test_prefer_no_schedule_is_avoided_while_another_node_fits() -> None:
    prefer = {"key": "slow", "effect": "PreferNoSchedule"}
    nodes = infos(tainted("a", prefer), node("b", cpu="1"))  # a has more room: still b
    chosen = place(PodToPlace(pod_spec()), nodes.values()).node
    assert chosen is not None and chosen.name == "b"
    tolerant = pod_spec({"key": "slow", "operator": "Exists", "effect": "PreferNoSchedule"})
    chosen = place(PodToPlace(tolerant), nodes.values()).node
    assert chosen is not None and chosen.name == "a"  # tolerated: the emptier node wins
    nodes["b"].ready = False
    chosen = place(PodToPlace(pod_spec()), nodes.values()).node
    assert chosen is not None and chosen.name == "a"  # a preference, not a filter


# -- controllers --------------------------------------------------------------------------------
def settle(world: World, key: str, passes: int = 3) -> None:
    for _ in range(passes):
        world.pass_(key)
        world.kubelets()


def on(world: World, node_name: str) -> list[dict[str, Any]]:
    return [p for p in world.pods(phase="Running") if p["spec"]["nodeName"] == node_name]


def test_cordoning_keeps_running_pods_and_places_new_ones_elsewhere() -> None:
    world = World({name: node(name) for name in ("a", "b", "c")})
    key = world.add(deployment(3, ["1"]))
    settle(world, key)
    assert len(on(world, "c")) == 1
    world.nodes["c"] = tainted("c", cordoned=True)
    rs_key = next(k for k in world.objects if k.startswith("ReplicaSet/"))
    world.objects[key]["spec"]["replicas"] = 6
    settle(world, key)
    assert len(on(world, "c")) == 1  # still running, nothing new
    assert sorted(len(on(world, n)) for n in ("a", "b")) == [2, 3]
    assert world.status[rs_key]["replicas"] == 6


def test_noexecute_evicts_at_once_or_after_toleration_seconds_and_replaces() -> None:
    world = World({name: node(name) for name in ("a", "b", "c", "d")})
    spec = deployment(3, ["1"])
    tolerate = {"key": "drain", "operator": "Exists", "effect": "NoExecute"}
    spec["spec"]["template"]["spec"]["tolerations"] = [{**tolerate, "tolerationSeconds": 30}]
    key = world.add(spec)
    settle(world, key)
    taken = {p["spec"]["nodeName"] for p in world.pods(phase="Running")}
    victim = sorted(taken)[0]
    # An untolerated NoExecute taint: the pod goes at once, and its replacement elsewhere.
    world.nodes[victim] = tainted(victim, {"key": "gone", "effect": "NoExecute"})
    evicted = on(world, victim)[0]["metadata"]["name"]
    plan = world.pass_(key)
    assert [e.message for e in plan.events if e.reason == "TaintManagerEviction"] == [
        f"Marking for deletion Pod default/{evicted}"
    ]
    world.kubelets()
    settle(world, key)
    assert on(world, victim) == [] and len(world.pods(phase="Running")) == 3
    # A tolerated one, for 30 s from its timeAdded: the pods stay, a pass is asked for then.
    target = sorted({p["spec"]["nodeName"] for p in world.pods(phase="Running")})[0]
    added = world.view().now_seconds
    world.nodes[target] = tainted(
        target, {"key": "drain", "effect": "NoExecute", "timeAdded": when(added)}
    )
    plan = world.pass_(key)
    assert not plan.deletes and plan.wake is not None and 27 <= plan.wake <= 30
    before = on(world, target)[0]["metadata"]["name"]
    world.clock += 30
    plan = world.pass_(key)
    assert any(e.reason == "TaintManagerEviction" for e in plan.events)
    world.kubelets()
    settle(world, key)
    running = world.pods(phase="Running")
    assert len(running) == 3 and before not in {p["metadata"]["name"] for p in running}
    # As in Kubernetes the taint is tolerated, so a replacement may land there again; it
    # gets its own 30 s (counted from its creation), not an eviction at once.
    assert not any(e.reason == "TaintManagerEviction" for e in world.pass_(key).events)


def test_a_lost_nodes_pods_honour_an_unreachable_toleration() -> None:
    """A lost node is Kubernetes' unreachable taint: pods that tolerate it for 30 s go 30 s
    after the node went NotReady (not after scheduler.pod_eviction_grace), pods that
    tolerate it for good stay, the others go after the grace as before."""
    world = World({name: node(name) for name in ("a", "b", "c", "d")})
    keys = {}
    for app, toleration in (
        ("grace", None),
        (
            "thirty",
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 30,
            },
        ),
        (
            "forever",
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
        ),
    ):
        spec = deployment(1, ["1"])
        spec["metadata"]["name"] = app
        template = spec["spec"]["template"]
        template["metadata"]["labels"] = spec["spec"]["selector"]["matchLabels"] = {"app": app}
        if toleration:
            template["spec"]["tolerations"] = [toleration]
        template["spec"]["nodeSelector"] = {"p2pkube.io/kind": "native", "zone": "x"}
        keys[app] = world.add(spec)
    world.nodes["a"] = node("a", zone="x")
    world.nodes["b"] = node("b", zone="x")
    for key in keys.values():
        settle(world, key)

    def where(app: str) -> list[str]:
        return [
            p["spec"]["nodeName"] for p in world.pods() if p["metadata"]["labels"]["app"] == app
        ]

    assert [where(app) for app in keys] == [["a"], ["a"], ["a"]]
    world.ready.discard("a")
    world.not_ready_for["a"] = 0.3  # past the grace
    plans = {app: world.pass_(key) for app, key in keys.items()}
    assert where("grace") == ["b"]
    assert where("thirty") == ["a"] and 29 < (plans["thirty"].wake or 0) <= 29.7
    assert where("forever") == ["a"] and plans["forever"].wake is None
    world.not_ready_for["a"] = 30.0
    world.pass_(keys["thirty"])
    assert where("thirty") == ["b"]
    world.not_ready_for["a"] = 3600.0
    world.pass_(keys["forever"])
    assert where("forever") == ["a"]


def test_a_job_pod_is_evicted_and_run_again_elsewhere() -> None:
    world = World({name: node(name) for name in ("a", "b")})
    job = workload(
        "Job",
        "batch",
        {"template": {"spec": {"containers": [container()], "restartPolicy": "Never"}}},
    )
    key = world.add(job)
    world.pass_(key)
    first = world.pods()[0]
    world.nodes[first["spec"]["nodeName"]] = tainted(
        first["spec"]["nodeName"], {"key": "k", "effect": "NoExecute"}
    )
    plan = world.pass_(key)
    assert any(e.reason == "TaintManagerEviction" for e in plan.events)
    others = [p for p in world.pods() if p["metadata"]["uid"] != first["metadata"]["uid"]]
    assert len(others) == 1 and others[0]["spec"]["nodeName"] != first["spec"]["nodeName"]


def test_daemon_pods_tolerate_a_cordon_but_not_a_noexecute_taint() -> None:
    world = World({"a": tainted("a", cordoned=True), "b": node("b"), "c": node("c")})
    ds = workload(
        "DaemonSet",
        "agent",
        {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": pod_spec()},
        },
    )
    key = world.add(ds)
    settle(world, key)
    assert sorted(p["spec"]["nodeName"] for p in world.pods(phase="Running")) == ["a", "b", "c"]
    tolerations = world.pods()[0]["spec"]["tolerations"]
    assert {
        "key": "node.kubernetes.io/unschedulable",
        "operator": "Exists",
        "effect": "NoSchedule",
    } in tolerations
    # A NoSchedule taint keeps the daemon that runs there, a NoExecute one evicts it.
    world.nodes["b"] = tainted("b", {"key": "k", "effect": "NoSchedule"})
    world.nodes["c"] = tainted("c", {"key": "k", "effect": "NoExecute"})
    settle(world, key)
    assert sorted(p["spec"]["nodeName"] for p in world.pods(phase="Running")) == ["a", "b"]
    assert world.status[key]["desiredNumberScheduled"] == 1
    assert world.status[key]["numberMisscheduled"] == 1


def test_the_collector_evicts_pods_no_controller_owns() -> None:
    world = World({"a": node("a"), "b": node("b")})
    for name, node_name in (("mine", "a"), ("other", "b")):
        world.add(
            {
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": "default",
                    "uid": f"u-{name}",
                    "creationTimestamp": "t0",
                },
                "spec": {**pod_spec(), "nodeName": node_name},
            }
        )
    world.kubelets()
    world.nodes["a"] = tainted("a", {"key": "k", "effect": "NoExecute"})
    view, plan = world.view(), Plan()
    ctl.evict_tainted_unowned(ctl.Context(view, plan, "", 0.25, lambda: "x"))
    assert [k for _, k in plan.puts] == ["Pod/default/mine"]
    assert plan.puts[("objects", "Pod/default/mine")]["metadata"]["deletionTimestamp"]


# -- the object service: a user's Node write ----------------------------------------------------
@pytest.fixture
async def objects() -> AsyncIterator[ObjectService]:
    state = ClusterState(None, store_factory=PycrdtStore)
    await state.open()
    await state.put(
        OBJECTS,
        "Node//n1",
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "n1",
                "uid": "id-n1",
                "labels": {"p2pkube.io/kind": "native", "zone": "a"},
                "annotations": {"p2pkube.io/agent-labels": "p2pkube.io/kind,zone"},
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {},
        },
    )
    try:
        yield ObjectService(state, node_ready=lambda name: True, validate=validate_object)
    finally:
        await state.close()


def node_write(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", **meta}, "spec": spec}


async def test_a_node_write_keeps_the_agents_part_and_mirrors_the_cordon(
    objects: ObjectService,
) -> None:
    stored = await objects.put(
        node_write(
            {"unschedulable": True, "taints": [{"key": "drain", "effect": "NoExecute"}]},
            labels={"disk": "ssd"},
        )
    )
    assert stored["metadata"]["uid"] == "id-n1"
    assert stored["metadata"]["labels"] == {"disk": "ssd", "p2pkube.io/kind": "native"}
    assert stored["metadata"]["annotations"] == {"p2pkube.io/agent-labels": "p2pkube.io/kind,zone"}
    taints = stored["spec"]["taints"]
    assert [(t["key"], t["effect"]) for t in taints] == [
        ("drain", "NoExecute"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
    assert all(t.get("timeAdded") for t in taints)
    again = await objects.put(node_write(stored["spec"] | {"unschedulable": False}))
    assert "unschedulable" not in again["spec"]
    assert again["spec"]["taints"] == taints[:1]  # the same timeAdded, the cordon's taint gone
    assert again["metadata"]["labels"] == stored["metadata"]["labels"]  # labels not given: kept
    applied = await objects.put(node_write({}, namespace="default"))  # as `apply` sends it
    assert "namespace" not in applied["metadata"] and applied["spec"] == {}


async def test_a_node_write_refuses_what_is_the_agents(objects: ObjectService) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await objects.put(
            node_write({}, labels={"p2pkube.io/kind": "browser"}, annotations={"a": "b"})
        )
    assert caught.value.errors == [
        "metadata.annotations: Forbidden: a node's annotations are its agent's (write "
        "spec.unschedulable, spec.taints or metadata.labels)",
        "metadata.labels: Forbidden: p2pkube.io/kind is set by the node's agent (native)",
    ]
    with pytest.raises(ValidationFailed) as caught:
        await objects.put({**node_write({}), "metadata": {"name": "n9"}})
    assert caught.value.errors == [
        "metadata.name: Not found: 'n9': nodes are created by their agents (p2pkube join), "
        "not written"
    ]


# -- the CLI's taint arithmetic (kubectl's) ----------------------------------------------------
def test_taint_specs_parse_and_combine_as_kubectl_does() -> None:
    assert parse_taint("dedicated=gpu:NoSchedule") == (
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        False,
    )
    assert parse_taint("dedicated:NoSchedule-") == (
        {"key": "dedicated", "effect": "NoSchedule"},
        True,
    )
    assert parse_taint("dedicated-") == ({"key": "dedicated"}, True)
    with pytest.raises(click.BadParameter, match="unknown taint effect 'Never'"):
        parse_taint("a=b:Never")
    with pytest.raises(click.BadParameter, match="expected key"):
        parse_taint("a=b")
    gpu = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    assert retaint("n1", [], [gpu], [], False) == ("tainted", [gpu])
    with pytest.raises(CliError, match="already has dedicated taint"):
        retaint("n1", [gpu], [{**gpu, "value": "cpu"}], [], False)
    assert retaint("n1", [gpu], [{**gpu, "value": "cpu"}], [], True) == (
        "modified",
        [{**gpu, "value": "cpu"}],
    )
    assert retaint("n1", [gpu], [], [{"key": "dedicated"}], False) == ("untainted", [])
    with pytest.raises(CliError, match='taint "dedicated:NoExecute" not found'):
        retaint("n1", [gpu], [], [{"key": "dedicated", "effect": "NoExecute"}], False)


def test_describe_pod_writes_tolerations_as_kubectl_does() -> None:
    unreachable = {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    }
    assert toleration_text(unreachable) == (
        "node.kubernetes.io/unreachable:NoExecute op=Exists for 300s"
    )
    assert toleration_text({"operator": "Exists"}) == "op=Exists"
    assert toleration_text({"key": "k", "value": "v", "effect": "NoSchedule"}) == "k=v:NoSchedule"
