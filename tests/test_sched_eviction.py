"""Eviction rate limits (issue 13): the limiter alone, and the controllers deciding through it.

The controller tests drive tests/test_sched.py's simulated cluster (fake kubelets, the real
controllers and view) with a real ``EvictionLimiter`` on its simulated clock: one second per
pass, default settings (0.1 nodes/s, a burst of 1, 0.01 nodes/s from 40% of the nodes lost,
none beyond half).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from p2pkube.model.timestamps import utc_now
from p2pkube.sched.election import Lease
from p2pkube.sched.events import EventRecorder
from p2pkube.sched.eviction import (
    FULL_DISRUPTION,
    NORMAL,
    PARTIAL_DISRUPTION,
    EvictionLimiter,
    holds_evictable_pods,
)
from p2pkube.sched.manager import NodeState, Scheduler
from p2pkube.sched.settings import EventSettings, SchedulerSettings
from p2pkube.sched.view import ClusterView, Plan
from p2pkube.settings import AgentSettings
from p2pkube.state import ClusterState
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.store import EVENTS, LEASES, OBJECTS
from tests.test_sched import World, container, deployment, node, workload

GRACE = SchedulerSettings().pod_eviction_grace
RATES = SchedulerSettings(node_eviction_rate=0.1)
"""The rates these tests count in: Kubernetes' --node-eviction-rate (a token every 10 s; the
default here is faster, see SchedulerSettings.node_eviction_rate) and its secondary rate."""
TEN = [f"n{i}" for i in range(10)]


@dataclass
class LimitedWorld(World):
    """The simulated cluster, its passes gated by one scheduler's real limiter."""

    limiter: EvictionLimiter = field(default_factory=lambda: EvictionLimiter(RATES))
    lost_at: dict[str, int] = field(default_factory=dict)
    events: list[tuple[int, str, str]] = field(default_factory=list)
    """(clock, reason, message) of every event the passes planned."""
    evicted_at: dict[str, int] = field(default_factory=dict)
    """Lost node: the clock of the pass that first deleted a pod of it."""

    def lose(self, *names: str) -> None:
        for name in names:
            self.ready.discard(name)
            self.lost_at[name] = self.clock

    def back(self, *names: str) -> None:
        for name in names:
            self.ready.add(name)
            self.lost_at.pop(name, None)
            self.not_ready_for.pop(name, None)
            self.evicted_at.pop(name, None)

    def view(self) -> ClusterView:
        for name, since in self.lost_at.items():  # NotReady since the pass after lose()
            self.not_ready_for[name] = float(self.clock + 1 - since)
        view = super().view()
        lost = {n: s for n, s in self.not_ready_for.items() if n in self.lost_at and s >= GRACE}
        view.evictions = self.limiter.update(lost, len(self.nodes), self.clock, self.holding)
        return view

    def holding(self, names: set[str]) -> set[str]:
        pods = ((o, self.status.get(k)) for k, o in self.objects.items() if o["kind"] == "Pod")
        return holds_evictable_pods(pods, names)

    def pass_(self, workload_key: str, lease: str = "1/me") -> Plan:
        on_node = {k: o["spec"].get("nodeName") for k, o in self.objects.items()}
        plan = super().pass_(workload_key, lease)
        self.limiter.reported(plan.deferred)
        self.events += [(self.clock, e.reason, e.message) for e in plan.events]
        for map_name, key in plan.deletes:
            name = on_node.get(key)
            if map_name == "objects" and name in self.lost_at:
                self.evicted_at.setdefault(name, self.clock)
        return plan

    def run(self, key: str, passes: int) -> None:
        for _ in range(passes):
            self.pass_(key)
            self.kubelets()

    def reasons(self, reason: str) -> list[str]:
        return [message for _, r, message in self.events if r == reason]


def spread(replicas: int = 10) -> tuple[LimitedWorld, str]:
    """Ten nodes, a Deployment with one Running replica on each of ``replicas`` of them."""
    world = LimitedWorld({name: node(name) for name in TEN})
    key = world.add(deployment(replicas, ["1"]))
    world.run(key, 3)
    nodes = {p["spec"]["nodeName"] for p in world.pods(phase="Running")}
    assert len(nodes) == replicas and len(world.pods()) == replicas
    world.events.clear()
    return world, key


def test_one_lost_node_among_ten_is_evicted_at_once() -> None:
    world, key = spread()
    world.lose("n3")
    world.run(key, 1)
    assert world.evicted_at == {"n3": world.clock}
    assert world.reasons("EvictionDeferred") == []
    nodes = [p["spec"]["nodeName"] for p in world.pods(phase="Running")]
    assert len(nodes) == 10 and "n3" not in nodes
    assert world.limiter.stats()["admittedTotal"] == 1


def test_three_lost_at_once_are_evicted_one_per_token_after_the_burst() -> None:
    world, key = spread()
    world.lose("n1", "n2", "n3")
    world.run(key, 25)
    start = min(world.evicted_at.values())
    # The burst takes n1 at once (first lost, then by name); 1 / 0.1 s apart the others.
    assert {n: t - start for n, t in world.evicted_at.items()} == {"n1": 0, "n2": 10, "n3": 20}
    deferred = world.reasons("EvictionDeferred")
    assert len(deferred) == 2, deferred  # n2 and n3, once each, not at every pass
    assert any(
        "lost node n2 is deferred: 3 of 10 nodes look lost (Normal), nodes are admitted for "
        "eviction at 0.1 per second" in message
        for message in deferred
    ), deferred
    stats = world.limiter.stats()
    assert (stats["admittedTotal"], stats["deferredTotal"], stats["waiting"]) == (3, 2, [])
    assert len(world.pods(phase="Running")) == 10


def test_a_node_admitted_stays_admitted_and_one_that_comes_back_is_forgotten() -> None:
    limiter = EvictionLimiter(RATES)
    everything = lambda names: names  # noqa: E731 - every lost node holds evictable pods
    assert limiter.update({"a": 1.0}, 10, 100.0, everything).admitted == {"a"}
    # A second loss waits for the token; "a" needs none for the pods it still has.
    gate = limiter.update({"a": 3.0, "b": 1.0}, 10, 102.0, everything)
    assert gate.allows("a") and not gate.allows("b") and limiter.waiting == ["b"]
    assert limiter.next_token_in() == pytest.approx(8.0)
    # "a" comes back, then is lost again: a new loss, which needs a token of its own.
    assert limiter.update({"b": 2.0}, 10, 103.0, everything).admitted == set()
    gate = limiter.update({"a": 1.0, "b": 4.0}, 10, 105.0, everything)
    assert gate.admitted == set() and limiter.waiting == ["b", "a"]  # in the order lost
    assert limiter.update({"a": 6.0, "b": 9.0}, 10, 110.0, everything).admitted == {"b"}
    assert limiter.update({"a": 16.0, "b": 19.0}, 10, 120.0, everything).admitted == {"a", "b"}
    # Missing a Ready in between is seen too: lost since a later moment is a new loss.
    assert limiter.update({"a": 1.0, "b": 20.0}, 10, 121.0, everything).admitted == {"b"}
    # Deleted Node objects are not rate limited (Kubernetes' pod GC).
    assert limiter.gate().allows("gone", known=False)


def test_a_lost_node_with_nothing_to_evict_spends_no_token() -> None:
    limiter = EvictionLimiter(RATES)
    gate = limiter.update({"idle": 5.0, "busy": 1.0}, 10, 10.0, lambda names: {"busy"} & names)
    assert gate.admitted == {"busy"} and limiter.waiting == []
    world, key = spread(replicas=9)  # one of the ten nodes runs nothing
    idle = next(n for n in TEN if n not in {p["spec"]["nodeName"] for p in world.pods()})
    busy = next(n for n in TEN if n != idle)
    world.lose(idle)
    world.run(key, 2)
    world.lose(busy)
    world.run(key, 1)
    assert world.evicted_at == {busy: world.clock}


def test_four_of_ten_lost_use_the_secondary_rate() -> None:
    world, key = spread()
    world.lose("n1", "n2", "n3", "n4")
    world.run(key, 1)
    assert world.limiter.state == PARTIAL_DISRUPTION
    assert set(world.evicted_at) == {"n1"}
    world.run(key, 99)
    assert set(world.evicted_at) == {"n1"}
    world.run(key, 1)  # 1 / 0.01 s after the first
    assert set(world.evicted_at) == {"n1", "n2"}
    assert world.evicted_at["n2"] - world.evicted_at["n1"] == 100
    assert "4 of 10 nodes look lost (PartialDisruption)" in world.reasons("EvictionDeferred")[0]
    # Two come back: 2 of 10 is Normal again, and the normal rate applies (the token n2
    # took refills at 0.1 per second from then: n3 10 s later, n4 10 s after it).
    world.back("n1", "n2")
    world.run(key, 25)
    assert world.limiter.state == NORMAL
    assert world.evicted_at["n4"] - world.evicted_at["n3"] == 10


def test_more_than_half_lost_evicts_nothing_and_says_so() -> None:
    world, key = spread()
    lost = ["n0", "n1", "n2", "n3", "n4", "n5"]
    world.lose(*lost)
    world.run(key, 30)
    assert world.limiter.state == FULL_DISRUPTION
    assert world.evicted_at == {} and len(world.pods()) == 10
    deferred = world.reasons("EvictionDeferred")
    assert len(deferred) == 6
    assert all("6 of 10 nodes look lost, more than half (FullDisruption)" in m for m in deferred)
    assert world.limiter.stats()["waiting"] == lost
    # Half of them come back: 3 of 10 lost, evicted at the normal rate, the first at once.
    world.back("n0", "n1", "n2")
    world.run(key, 1)
    assert list(world.evicted_at) == ["n3"]


def test_an_admitted_node_is_dropped_when_more_than_half_look_lost() -> None:
    limiter = EvictionLimiter(RATES)
    everything = lambda names: names  # noqa: E731
    assert limiter.update({"a": 1.0}, 4, 0.0, everything).admitted == {"a"}
    gate = limiter.update({"a": 2.0, "b": 1.0, "c": 1.0}, 4, 1.0, everything)
    assert gate.state == FULL_DISRUPTION and not gate.allows("a") and limiter.admitted == set()


def job_world(world: World) -> tuple[World, str]:
    key = world.add(
        workload(
            "Job",
            "batch",
            {
                "completions": 10,
                "parallelism": 10,
                "template": {"spec": {"restartPolicy": "Never", "containers": [container()]}},
            },
        )
    )
    return world, key


def stalls_then_finishes(world: World, key: str, lose: Any, back: Any) -> int:
    """Run the Job on 10 nodes; three stall for 5 s (NotReady, then back); every pod
    Running then succeeds. Returns the pods the Job made."""
    made: set[str] = set()

    def step(passes: int) -> None:
        for _ in range(passes):
            world.pass_(key)
            world.kubelets()
            made.update(k for k, o in world.objects.items() if o["kind"] == "Pod")

    step(3)
    assert sorted(p["spec"]["nodeName"] for p in world.pods(phase="Running")) == TEN
    lose("n1", "n2", "n3")
    step(5)
    back("n1", "n2", "n3")
    step(2)
    for pod in world.pods(phase="Running"):
        world.status[f"Pod/default/{pod['metadata']['name']}"]["phase"] = "Succeeded"
    step(2)
    assert world.status[key]["conditions"][0]["type"] == "Complete"
    return len(made)


def test_a_job_makes_one_extra_pod_not_three_when_three_nodes_stall() -> None:
    limited, key = job_world(LimitedWorld({name: node(name) for name in TEN}))
    assert isinstance(limited, LimitedWorld)
    assert stalls_then_finishes(limited, key, limited.lose, limited.back) == 11
    assert limited.reasons("EvictionDeferred") and limited.limiter.stats()["deferredTotal"] == 2

    # The same stall without the limiter (the gate of a view built without one).
    unlimited, key = job_world(World({name: node(name) for name in TEN}))

    def lose(*names: str) -> None:
        for name in names:
            unlimited.ready.discard(name)
            unlimited.not_ready_for[name] = 1.0

    def back(*names: str) -> None:
        for name in names:
            unlimited.ready.add(name)
            unlimited.not_ready_for.pop(name)

    assert stalls_then_finishes(unlimited, key, lose, back) == 13


def test_eviction_settings_that_cannot_work_are_refused() -> None:
    for assignment, words in (
        ("scheduler.node_eviction_burst=0", "node_eviction_burst must be at least 1"),
        ("scheduler.node_eviction_rate=0", "node_eviction_rate must be above 0"),
        ("scheduler.unhealthy_zone_threshold=0.55", "at most 0.5: with more than half"),
        ("scheduler.partial_disruption_min_nodes=0", "partial_disruption_min_nodes must be"),
    ):
        settings = AgentSettings()
        settings.override(assignment)
        with pytest.raises(ValueError, match=words):
            settings.check()


async def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {within} s"
        await asyncio.sleep(0.02)


async def test_a_scheduler_defers_its_second_lost_node_and_says_so() -> None:
    """The real Scheduler over an in-memory state: its pod index, limiter, events, stats."""
    state = ClusterState(None, store_factory=PycrdtStore)
    await state.open()
    names = ["n1", "n2", "n3", "n4", "n5", "n6"]
    records = {name: node(name) for name in names}
    lost_at: dict[str, float] = {}

    def states() -> list[NodeState]:
        now = time.monotonic()
        return [
            NodeState(r["obj"], r["status"], n not in lost_at, now - lost_at.get(n, now))
            for n, r in records.items()
        ]

    events = EventRecorder(state, "n1", EventSettings())
    scheduler = Scheduler(
        "id-n1",
        "n1",
        state,
        nodes=states,
        is_collector=lambda: False,
        events=events,
        settings=RATES,
    )
    rs = workload(
        "ReplicaSet",
        "web",
        {
            "replicas": 6,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [container()]},
            },
        },
    )
    key = "ReplicaSet/default/web"
    await state.put(LEASES, key, Lease("id-n1", "n1", 1, utc_now()).to_value())
    await state.put(OBJECTS, key, rs)

    def pods_on() -> dict[str, list[str]]:
        placed: dict[str, list[str]] = {}
        for pod_key, pod in state.items(OBJECTS, "Pod/"):
            placed.setdefault(pod["spec"]["nodeName"], []).append(pod_key)
        return placed

    await scheduler.start()
    try:
        await wait_for(lambda: sorted(pods_on()) == names, 10, "pod on each node")
        before = pods_on()
        lost_at.update(n5=time.monotonic() - 1.0, n6=time.monotonic() - 1.0)
        scheduler.wake()
        # n5 goes at once (lost at the same moment: by name); n6 waits 1 / 0.1 s.
        await wait_for(
            lambda: "n5" not in pods_on() and len(state.keys(OBJECTS, "Pod/")) == 6, 5, "n5 evicted"
        )
        await asyncio.sleep(0.3)  # more passes: n6 still waits, and is reported once
        assert pods_on()["n6"] == before["n6"]
        stats = scheduler.stats()["evictions"]
        assert stats == {
            "state": "Normal",
            "admitted": ["n5"],
            "waiting": ["n6"],
            "admittedTotal": 1,
            "deferredTotal": 1,
        }
        await events.flush()
        deferred = [e for _, e in state.items(EVENTS) if e["reason"] == "EvictionDeferred"]
        assert [(e["involvedObject"]["name"], e["type"], e["count"]) for e in deferred] == [
            ("web", "Warning", 1)
        ]
        assert "lost node n6 is deferred: 2 of 6 nodes look lost (Normal)" in deferred[0]["message"]
        del lost_at["n6"]  # back before its turn: it keeps its pod, and is forgotten
        scheduler.wake()
        await wait_for(lambda: scheduler.stats()["evictions"]["waiting"] == [], 5, "n6 forgotten")
        assert pods_on()["n6"] == before["n6"]
    finally:
        await scheduler.close()
        await state.close()


def test_only_live_replicaset_and_job_pods_hold_a_node_and_garbage_holds_nothing() -> None:
    def pod(kind: str = "Job", **meta: Any) -> dict[str, Any]:
        owner = {"kind": kind, "name": "w", "uid": "w", "controller": True}
        return {
            "metadata": {"uid": "p", "ownerReferences": [owner], **meta},
            "spec": {"nodeName": "a"},
        }

    ended = {"podUID": "p", "phase": "Succeeded"}
    others = [
        (pod("DaemonSet"), None),  # DaemonSet pods are not evicted
        (pod(deletionTimestamp="2026-12-06T00:00:00Z"), None),
        (pod(), ended),
        ({"metadata": {"uid": "p"}, "spec": {"nodeName": "a"}}, None),  # a bare pod
        # What a hostile or buggy peer may have written: skipped, never raised on.
        ({"metadata": {}, "spec": ["a"]}, None),
        ({"metadata": "m", "spec": {"nodeName": "a"}}, None),
        ({"metadata": {"ownerReferences": "Job"}, "spec": {"nodeName": "a"}}, None),
        ({"metadata": {"ownerReferences": [None, 3]}, "spec": {"nodeName": 7}}, None),
    ]
    assert holds_evictable_pods(others, {"a"}) == set()
    assert holds_evictable_pods(
        [*others, (pod(), {"podUID": "old", "phase": "Failed"})], {"a"}
    ) == {"a"}  # a status of an earlier pod under that name is not this one's
    assert holds_evictable_pods([(pod("ReplicaSet"), None)], {"b"}) == set()
