"""The chaos check, CI-sized: five agents on five network hosts (harness/netlab.py), workloads
and acknowledged writes throughout 25 s of random, overlapping kills, freezes and partitions
over 5% packet loss (fixed seed), then a heal; nothing acknowledged may be lost, all peers must end
with identical state, every Deployment with exactly its replicas Running and every Job
complete, no agent crashed or ran away with memory. harness/chaos.py describes the run;
bench/bench_chaos.py is the longer one (60 s of faults) and docs/guarantees.md the promise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.chaos import (
    CONVERGE_SECONDS,
    REPLICAS_SECONDS,
    ChaosConfig,
    ChaosRun,
    print_figures,
)
from harness.netlab import lab_or_skip

SEED = 10
FAULT_SECONDS = 25.0


def test_chaos_loses_no_acknowledged_write_and_converges_to_exact_replicas(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with lab_or_skip(tmp_path / "lab", request) as lab:
        config = ChaosConfig(
            seed=SEED,
            fault_seconds=FAULT_SECONDS,
            overlap=True,
            converge_timeout=CONVERGE_SECONDS,
            replicas_timeout=REPLICAS_SECONDS,
        )
        chaos = ChaosRun(lab, tmp_path / "work", config)
        with lab.reporting():
            chaos.setup()
        result = chaos.run()
        print_figures(result)
        problems = chaos.problems()
        if problems:
            print(chaos.report())
        assert not problems, "\n".join(problems)
