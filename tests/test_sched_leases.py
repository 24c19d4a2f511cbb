"""The node a workload is created through leads it: its lease is stored with the workload.

Two real Schedulers over one in-memory state (what two nodes see once their documents have
converged), a real ObjectService wired as the agent wires it, and the real Job controller.
"""

from __future__ import annotations

from typing import Any

from p2pkube.model.objects import ObjectService
from p2pkube.model.schema import validate_object
from p2pkube.model.timestamps import utc_now
from p2pkube.sched.election import LEASE_ANNOTATION, Lease, rendezvous_rank
from p2pkube.sched.events import EventRecorder
from p2pkube.sched.manager import NodeState, Scheduler
from p2pkube.sched.settings import EventSettings, SchedulerSettings
from p2pkube.state import ClusterState, object_key
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.store import EVENTS, LEASES, OBJECTS
from tests.memorybackend import blob
from tests.test_sched import DIGEST, node
from tests.test_sched_eviction import wait_for

NAMES = ["n1", "n2"]


def job(name: str, completions: int) -> dict[str, Any]:
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": completions,
            "parallelism": completions,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": DIGEST}],
                }
            },
        },
    }


async def test_a_workload_created_through_a_node_is_led_by_that_node() -> None:
    state = ClusterState(None, store_factory=PycrdtStore)
    await state.open()
    records = {name: node(name) for name in NAMES}

    def states() -> list[NodeState]:
        return [NodeState(r["obj"], r["status"], True, 0.0) for r in records.values()]

    schedulers = {
        name: Scheduler(
            f"id-{name}",
            name,
            state,
            nodes=states,
            is_collector=lambda: False,
            events=EventRecorder(state, name, EventSettings()),
            settings=SchedulerSettings(),
        )
        for name in NAMES
    }
    objects = {
        name: ObjectService(
            state,
            node_ready=lambda _name: True,
            validate=validate_object,
            creation_writes=scheduler.creation_writes,
        )
        for name, scheduler in schedulers.items()
    }
    await state.put(OBJECTS, object_key("Blob", "", DIGEST), blob(DIGEST))
    # A Job through n2, and Jobs through n1 until rendezvous hashing ranks n2 first for one:
    # that one shows the creator leading where the election would have picked another node.
    through = {"from-n2": "n2"}
    await objects["n2"].put(job("from-n2", 10))
    for attempt in range(40):
        name = f"from-n1-{attempt}"
        through[name] = "n1"
        uid = (await objects["n1"].put(job(name, 2)))["metadata"]["uid"]
        if rendezvous_rank(uid, [f"id-{n}" for n in NAMES])[0] == "id-n2":
            break
    leases = {name: Lease.from_value(state.get(LEASES, job_key(name))) for name in through}
    try:
        for name, lease in leases.items():
            assert lease is not None, "the lease is written with the Job, before any pass"
            creator = through[name]
            assert (lease.holder, lease.holder_name, lease.epoch) == (f"id-{creator}", creator, 1)
        for scheduler in schedulers.values():
            await scheduler.start()
        wanted = 10 + 2 * (len(through) - 1)
        await wait_for(lambda: len(state.keys(OBJECTS, "Pod/")) == wanted, 10, "every pod")
        for _, pod in state.items(OBJECTS, "Pod/"):
            owner = pod["metadata"]["ownerReferences"][0]["name"]
            tag = pod["metadata"]["annotations"][LEASE_ANNOTATION]
            assert tag == f"1/id-{through[owner]}", f"{owner}'s pods under its creator's lease"
        for scheduler in schedulers.values():
            await scheduler.events.flush()
        elections = sorted(
            (e["source"]["host"], e["message"])
            for _, e in state.items(EVENTS)
            if e["reason"] == "LeaderElection"
        )
        assert elections == sorted(
            (creator, f"{creator} schedules job {name} (lease epoch 1)")
            for name, creator in through.items()
        )

        # A replace is not a creation: the lease stays as it is.
        before = state.get(OBJECTS, job_key("from-n2"))
        again = await objects["n1"].put(job("from-n2", 10))
        assert again["metadata"]["uid"] == before["metadata"]["uid"]
        assert Lease.from_value(state.get(LEASES, job_key("from-n2"))) == leases["from-n2"]
        # A lease left for a name (its workload deleted, the lease not yet collected) is not
        # overwritten by a new workload of that name: the election decides, as before.
        stale = Lease("id-n9", "n9", 4, utc_now())
        await state.put(LEASES, job_key("again"), stale.to_value())
        await objects["n1"].put(job("again", 1))
        assert Lease.from_value(state.get(LEASES, job_key("again"))) == stale
        # An object no scheduler leads gets no lease: a Pod bound to a node, a ConfigMap.
        bound = {
            "apiVersion": "p2pkube.io/v1",
            "kind": "Pod",
            "metadata": {"name": "bound"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": DIGEST}]},
        }
        await objects["n1"].put(bound)
        config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}
        await objects["n1"].put(config)
        assert state.get(LEASES, object_key("Pod", "default", "bound")) is None
        assert state.get(LEASES, object_key("ConfigMap", "default", "cm")) is None
    finally:
        for scheduler in schedulers.values():
            await scheduler.close()
        await state.close()


def job_key(name: str) -> str:
    return object_key("Job", "default", name)
