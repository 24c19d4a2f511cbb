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
