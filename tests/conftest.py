"""Shared fixtures: a local cluster of real processes that is always torn down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pkube.devcluster import LocalCluster


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A LocalCluster under tmp_path; on failure, the tail of every log is printed."""
    local = LocalCluster(tmp_path / "cluster")
    try:
        yield local
    finally:
        local.close()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for name in ["signaling", *local.agents]:
                print(f"--- {name} log ---\n{local.log_tail(name, 60)}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
