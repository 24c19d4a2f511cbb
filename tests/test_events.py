"""Events as Kubernetes aggregates them: repeats bump a count, and beyond ten similar events
of one object (same reason, other messages) the rest are combined into one."""

from __future__ import annotations

from p2pkube.sched.events import COMBINED, EventRecorder
from p2pkube.sched.settings import EventSettings
from p2pkube.state import ClusterState
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.store import EVENTS

JOB = {"kind": "Job", "namespace": "default", "name": "big", "uid": "u-job"}


async def test_a_thousand_creates_on_one_job_are_ten_events_and_one_combined() -> None:
    state = ClusterState(None, store_factory=PycrdtStore)
    await state.open()
    recorder = EventRecorder(state, "n1", EventSettings())
    try:
        for i in range(1000):
            recorder.record(JOB, "SuccessfulCreate", f"Created pod: big-{i}", component="job")
        recorder.record(JOB, "SuccessfulCreate", "Created pod: big-3", component="job")  # again
        other = {**JOB, "name": "small", "uid": "u-small"}
        recorder.record(other, "SuccessfulCreate", "Created pod: small-0", component="job")
        await recorder.flush()
        events = [e for _, e in state.items(EVENTS)]
        mine = [e for e in events if e["involvedObject"]["name"] == "big"]
        single = [e for e in mine if not e["message"].startswith(COMBINED)]
        combined = [e for e in mine if e["message"].startswith(COMBINED)]
        assert len(single) == 10 and len(combined) == 1, [e["message"] for e in mine]
        assert combined[0]["count"] == 990
        assert combined[0]["message"] == COMBINED + "Created pod: big-999"
        assert next(e for e in single if e["message"] == "Created pod: big-3")["count"] == 2
        assert sum(e["count"] for e in mine) == 1001  # nothing is lost, only folded
        assert [e["message"] for e in events if e["involvedObject"]["name"] == "small"] == [
            "Created pod: small-0"
        ]
    finally:
        await recorder.close()
        await state.close()


def _pod(i: int) -> dict[str, str]:
    return {"kind": "Pod", "namespace": "default", "name": f"p{i}", "uid": f"u-p{i}"}


async def test_pruning_keeps_each_nodes_newest_and_the_collector_ends_the_expired() -> None:
    """Each node keeps at most ``max_per_node`` of its own events (the newest) and deletes
    its own past ``ttl``; the collector also deletes anyone's past ``ttl``, which a node
    that left for good never does; a node that is not the collector leaves others' alone."""
    import time

    state = ClusterState(None, store_factory=PycrdtStore)
    await state.open()
    settings = EventSettings(max_per_node=3, ttl=60.0)
    n1 = EventRecorder(state, "n1", settings)
    gone = EventRecorder(state, "gone", settings)
    collector = EventRecorder(state, "n2", settings, is_collector=lambda: True)
    try:
        await n1.start()
        for i in range(5):
            n1.record(_pod(i), "Started", "Started container main", component="kubelet")
            await n1.flush()  # one write each: p0 is the oldest
        gone.record(_pod(9), "Started", "Started container main", component="kubelet")
        await gone.flush()

        def names(host: str) -> set[str]:
            return {
                e["involvedObject"]["name"]
                for _, e in state.items(EVENTS)
                if e["source"]["host"] == host
            }

        assert await n1.prune() == 2
        assert names("n1") == {"p2", "p3", "p4"}
        assert await n1.prune() == 0 and names("gone") == {"p9"}  # not its own, not collector
        later = time.time() + 61
        restarted = EventRecorder(state, "n1", settings)
        await restarted.start()  # knows its events from before the restart
        assert await restarted.prune(now=later) == 3 and names("n1") == set()
        await restarted.close()
        assert await n1.prune(now=later) == 0 and names("gone") == {"p9"}
        assert await collector.prune(now=later) == 1 and names("gone") == set()
    finally:
        for recorder in (n1, gone, collector):
            await recorder.close()
        await state.close()
