"""Kubelet admission under a burst: what a node refuses, and what admitting costs.

A 1,000-pod Job puts about a hundred pods on each of 10 nodes within seconds. Admission sums
the requests of every active pod on the node for each new one; parsing those quantities again
at every admission made the burst cost N² parses, the largest CPU cost of the agents in
``bench.bench_sched --part throughput --pods 1000`` (py-spy: Kubelet.admit 26% of all samples
of the 10 agents), starving their event loops into missed probes. In-process: no wasm runs,
only the admission decision is exercised. The same burst made every node's kubelet decode
every pod of the document at every change to find its own (``Kubelet.desired`` now reads
only the keys that changed); that is checked on a real ClusterState.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import pytest

from p2pkube.model import resources
from p2pkube.model.resources import Resources
from p2pkube.runtime.kubelet import Kubelet
from p2pkube.runtime.pod import PodWorker
from p2pkube.runtime.settings import KubeletSettings, RuntimeSettings
from p2pkube.state.cluster import ClusterState
from p2pkube.state.pycrdt_store import PycrdtStore

NODE = "n1"


def kubelet(tmp_path: Path, cpu: Fraction, max_pods: int = 500) -> Kubelet:
    """A kubelet that is never started: admission reads only its workers and allocatable."""
    return Kubelet(
        NODE,
        cast(ClusterState, None),
        cast(Any, None),
        cast(Any, None),
        tmp_path / "pods",
        allocatable=lambda: Resources.of(cpu, 1 << 30),
        settings=KubeletSettings(max_pods=max_pods),
        runtime_settings=RuntimeSettings(),
    )


def job_pod(i: int, cpu: str = "30m", memory: str = "1Mi") -> dict[str, Any]:
    return {
        "metadata": {"name": f"burst-{i}", "namespace": "default", "uid": f"uid-{i}"},
        "spec": {
            "nodeName": NODE,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "sha256:" + "0" * 64,
                    "resources": {"requests": {"cpu": cpu, "memory": memory}},
                }
            ],
        },
    }


def admit_burst(k: Kubelet, pods: int, **requests: str) -> list[tuple[str, str] | None]:
    """Admit ``pods`` new pods one after the other, as their workers start in a burst."""
    verdicts = []
    for i in range(pods):
        worker = PodWorker(k, f"Pod/default/burst-{i}", job_pod(i, **requests))
        k.workers[worker.key] = worker
        verdict = k.admit(worker)
        if verdict is not None:
            worker.phase = "Failed"  # what the worker does with a refusal: it is terminal
        verdicts.append(verdict)
    return verdicts


async def test_a_burst_is_admitted_until_the_cpu_is_used_up(tmp_path: Path) -> None:
    k = kubelet(tmp_path, Fraction(2))
    verdicts = admit_burst(k, 100)
    # 66 pods of 30m fit in 2 cores (1.98); every later one is refused with the reason.
    assert verdicts[:66] == [None] * 66
    assert all(v is not None and v[0] == "OutOfcpu" for v in verdicts[66:])


async def test_admitting_a_burst_parses_each_pods_requests_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = 0
    real = resources.container_requests

    def counting(container: dict[str, Any]) -> Resources:
        nonlocal parsed
        parsed += 1
        return real(container)

    monkeypatch.setattr(resources, "container_requests", counting)
    k = kubelet(tmp_path, Fraction(64))
    assert admit_burst(k, 300) == [None] * 300
    # Linear in the burst (each pod's one container once), not 300²/2 = 45,000.
    assert parsed == 300


async def test_a_malformed_request_refuses_that_pod_only(tmp_path: Path) -> None:
    k = kubelet(tmp_path, Fraction(2))
    assert admit_burst(k, 3) == [None] * 3
    bad = PodWorker(k, "Pod/default/bad", job_pod(99, cpu="lots"))
    with pytest.raises(ValueError, match="not a quantity"):
        k.admit(bad)  # the worker fails with this reason (Kubelet._run_worker logs it)
    good = PodWorker(k, "Pod/default/good", job_pod(100))
    k.workers[good.key] = good
    assert k.admit(good) is None


async def test_the_pods_assigned_here_are_read_again_only_where_they_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = ClusterState(tmp_path / "data", store_factory=PycrdtStore)
    await state.open()
    try:
        k = kubelet(tmp_path, Fraction(2))
        k.state = state
        unsubscribe = state.on_change(k._on_change)  # what Kubelet.start subscribes
        async with state.batch() as batch:  # a burst: 500 pods, 50 of them for this node
            for i in range(500):
                obj = job_pod(i)
                obj["spec"]["nodeName"] = NODE if i % 10 == 0 else "n2"
                batch.put("objects", f"Pod/default/burst-{i}", obj)
        assert len(k.desired()) == 50  # the first read reads them all

        decoded = 0
        real = ClusterState._decode

        def counting(map_name: str, key: str, blob: bytes) -> Any:
            nonlocal decoded
            decoded += 1
            return real(map_name, key, blob)

        monkeypatch.setattr(ClusterState, "_decode", staticmethod(counting))
        moved = job_pod(0)
        moved["spec"]["nodeName"] = "n2"  # one pod leaves, one arrives, one is deleted
        await state.put("objects", "Pod/default/burst-0", moved)
        await state.put("objects", "Pod/default/burst-1", job_pod(1))
        await state.delete("objects", "Pod/default/burst-10")
        desired = k.desired()
        assert "Pod/default/burst-0" not in desired
        assert desired["Pod/default/burst-1"]["metadata"]["uid"] == "uid-1"
        assert "Pod/default/burst-10" not in desired
        assert len(desired) == 49
        assert decoded <= 10, decoded  # the 3 changed keys, not the 500 pods
        unsubscribe()
    finally:
        await state.close()
