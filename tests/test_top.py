"""Measured usage, piece by piece: quantities as metrics-server writes them and kubectl top
prints them, the wasm runtime's own measurements (checked against the kernel's per-thread
clock), the meter's rates and its asks over rpc, and the metrics documents the API serves
(``tests/test_top_cluster.py`` runs it all on real agents)."""

from __future__ import annotations

import asyncio
import json
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from p2pkube.cli.main import cli
from p2pkube.cli.topkinds import (
    cpu_millicores,
    mebibytes_cell,
    memory_bytes,
    millicores_cell,
    percent_cell,
)
from p2pkube.model.quantity import format_binary, format_nanocores, parse_quantity
from p2pkube.runtime import interface as rt
from p2pkube.runtime.native import NativeRuntime
from p2pkube.runtime.settings import RuntimeSettings
from p2pkube.runtime.usage import UsageMeter, UsageReport, UsageUnavailable
from tests import test_runtime
from tests.memorybackend import MemoryBackend, serving
from tests.test_cli_workloads import seed
from tests.test_rpc import pair
from tests.test_runtime import launch

modules = test_runtime.modules
"""The example modules, built (test_runtime's session fixture)."""

# --- quantities -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nanocores", "text"),
    [
        (0, "0"),
        (12_345_678, "12345678n"),
        (15_000_000, "15m"),
        (2_000_000_000, "2"),
        (1_500_000_000, "1500m"),
        (5_000, "5u"),
        (1, "1n"),
    ],
)
def test_cpu_usage_is_written_as_metrics_server_writes_it(nanocores: int, text: str) -> None:
    assert format_nanocores(nanocores) == text
    assert parse_quantity(text) == Fraction(nanocores, 10**9)


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0"), (123_456 * 1024, "123456Ki"), (64 << 20, "64Mi"), (3 << 30, "3Gi"), (1000, "1000")],
)
def test_memory_usage_is_exact_binary_si(size: int, text: str) -> None:
    assert format_binary(size) == text
    assert parse_quantity(text) == size


def test_negative_usage_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_nanocores(-1)
    with pytest.raises(ValueError, match="negative"):
        format_binary(-1)


def test_cells_round_as_kubectl_top() -> None:
    assert millicores_cell("12345678n") == "13m"  # MilliValue rounds up
    assert millicores_cell("0") == "0m"
    assert mebibytes_cell("123456Ki") == "120Mi"  # whole MiB, rounded down
    assert cpu_millicores("1") == 1000 and memory_bytes("2Ki") == 2048
    assert percent_cell(500, 2000) == "25%"
    assert percent_cell(1, 3) == "33%"
    assert percent_cell(5, 0) == "<unknown>"


# --- the runtime's measurements -------------------------------------------------------------------


async def test_an_instance_reports_the_cpu_its_thread_used_and_its_memory(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    spec = launch(modules, tmp_path, "loop", cpu=0.25, seconds=3.0)
    await runtime.prepare(spec.image, spec.module_path)
    instance = runtime.start(spec)
    await asyncio.sleep(1.2)
    assert instance.thread is not None
    thread = instance.thread.native_id
    kernel = {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}[thread]
    cpu, memory = instance.usage()
    # The kernel counts this thread's whole life (it may have run earlier instances): the
    # instance's own figure is at most that, and near the 0.25 core it was throttled to.
    assert 0.15 < cpu <= kernel + 0.02, (cpu, kernel)
    assert memory >= 65536 and memory % 65536 == 0
    [usage] = [u for u in runtime.usage() if u.pod == spec.pod]
    assert (usage.container, usage.memory_bytes) == ("main", memory)
    assert usage.cpu_seconds >= cpu
    instance.stop()
    termination = await asyncio.wait_for(instance.done, 5)
    assert termination.cpu_seconds >= cpu
    # Ended: its CPU stays counted (a rate needs the total), its memory is gone.
    [usage] = [u for u in runtime.usage() if u.pod == spec.pod]
    assert usage.memory_bytes == 0 and usage.cpu_seconds == termination.cpu_seconds
    await runtime.remove_pod_files(Path(usage.pod_dir))
    assert not [u for u in runtime.usage() if u.pod == spec.pod]


async def test_a_sleeping_instance_uses_next_to_no_cpu(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    spec = launch(modules, tmp_path, "ticker", "0.2")
    await runtime.prepare(spec.image, spec.module_path)
    instance = runtime.start(spec)
    await asyncio.sleep(1.0)
    cpu, memory = instance.usage()
    assert 0 < cpu < 0.1 and memory >= 65536, (cpu, memory)
    instance.stop()
    await asyncio.wait_for(instance.done, 5)


# --- the meter ------------------------------------------------------------------------------------


class Measured:
    """What a runtime and a process would report, advanced by the test."""

    def __init__(self) -> None:
        self.containers: list[rt.ContainerUsage] = []
        self.process = (10.0, 50 << 20)

    def use(self, pod: str, cpu: float, memory: int, pod_dir: str = "/pods/x") -> None:
        self.containers = [c for c in self.containers if c.pod != pod]
        self.containers.append(rt.ContainerUsage(pod, "main", pod_dir, cpu, memory))


async def test_the_meter_gives_rates_over_its_window_and_answers_over_rpc() -> None:
    network, rpc_a, rpc_b = pair()
    here, there = Measured(), Measured()
    meter_a = UsageMeter(rpc_a, lambda: here.containers, None, interval=60, timeout=0.5)
    meter_b = UsageMeter(
        rpc_b, lambda: there.containers, lambda: there.process, interval=60, timeout=0.5
    )
    there.use("default/busy", 1.0, 2 << 20)
    here.use("default/tab", 0.0, 1 << 20)
    meter_a.start()
    meter_b.start()
    try:
        started = time.monotonic()
        await asyncio.sleep(0.5)
        there.use("default/busy", 1.25, 3 << 20)  # 0.25 s of CPU over the window
        there.process = (10.4, 60 << 20)
        here.use("default/tab", 0.05, 1 << 20)
        await meter_a.take()
        await meter_b.take()
        window = time.monotonic() - started
        answers = await meter_a.read({"a": "a", "b": "b", "gone": None}, local="a")
        report = answers["b"]
        assert isinstance(report, UsageReport)
        assert report.window == pytest.approx(window, abs=0.05)
        busy_cpu, busy_memory = report.pods["default/busy"]["main"]
        assert busy_cpu == pytest.approx(0.25 / report.window * 1e9, rel=0.02)
        assert busy_memory == 3 << 20
        assert report.cpu_nanocores == pytest.approx(0.4 / report.window * 1e9, rel=0.02)
        assert report.memory_bytes == 60 << 20
        # A node without process figures (a tab) counts its pods.
        own = answers["a"]
        assert isinstance(own, UsageReport)
        assert own.cpu_nanocores == own.pods["default/tab"]["main"][0] > 0
        assert own.memory_bytes == 1 << 20
        assert isinstance(answers["gone"], UsageUnavailable)
        # A node that takes the ask and never answers is reported, after the timeout.
        network.silent.add("b")
        asked = time.monotonic()
        silent = (await meter_a.read({"b": "b"}, local="a"))["b"]
        assert isinstance(silent, UsageUnavailable) and "cannot be asked" in str(silent)
        assert time.monotonic() - asked < 2
    finally:
        await meter_a.close()
        await meter_b.close()


async def test_a_container_new_since_the_last_reading_counts_from_zero() -> None:
    _, rpc_a, _ = pair()
    measured = Measured()
    meter = UsageMeter(rpc_a, lambda: measured.containers, None, interval=60, timeout=0.5)
    meter.start()
    try:
        await asyncio.sleep(0.2)
        measured.use("default/new", 0.1, 65536)
        await meter.take()
        [(cpu, memory)] = (await meter.report()).pods["default/new"].values()
        assert cpu == pytest.approx(0.1 / (await meter.report()).window * 1e9, rel=0.01)
        assert memory == 65536
    finally:
        await meter.close()


# --- the documents --------------------------------------------------------------------------------


def _report(pods: dict[str, dict[str, tuple[int, int]]]) -> UsageReport:
    return UsageReport("2026-12-07T16:00:00Z", 10.0, 250_000_000, 300 << 20, pods)


def test_metrics_documents_through_the_api_and_the_cli(tmp_path: Path) -> None:
    backend = MemoryBackend("n1")
    backend.usage_reports["n1"] = _report(
        {"default/web-58b4f7c9d2-bxk2q": {"main": (15_000_000, 4 << 20)}}
    )
    data_dir = tmp_path / "data"
    with serving(backend, seed(), data_dir):
        runner = CliRunner()

        def run(*args: str) -> Any:
            return runner.invoke(cli, [*args, "--data-dir", str(data_dir)])

        result = run("top", "nodes", "-o", "json")
        assert result.exit_code == 0, result.output
        listed = json.loads(result.stdout)
        [node] = listed["items"]
        assert node["kind"] == "NodeMetrics" and node["apiVersion"] == "metrics.k8s.io/v1beta1"
        assert node["metadata"]["name"] == "n1"
        assert node["metadata"]["labels"]["zone"] == "a"
        assert (node["window"], node["timestamp"]) == ("10s", "2026-12-07T16:00:00Z")
        assert node["usage"] == {"cpu": "250m", "memory": "300Mi"}
        # n2 did not answer: said on stderr, shown unknown in the table.
        assert "no metrics from node n2" in result.stderr
        table = run("top", "node").stdout.splitlines()  # kubectl's alias
        assert table[1].split() == ["n1", "250m", "12%", "300Mi", "7%"]
        assert table[2].split() == ["n2"] + ["<unknown>"] * 4
        # Pods: only the Running ones whose node answered; selectors apply to the Pod.
        result = run("top", "pods", "-o", "json", "-l", "app=web")
        [pod] = json.loads(result.stdout)["items"]
        assert pod["metadata"]["name"] == "web-58b4f7c9d2-bxk2q"
        assert pod["metadata"]["labels"]["app"] == "web"
        assert pod["containers"] == [{"name": "main", "usage": {"cpu": "15m", "memory": "4Mi"}}]
        assert run("top", "pods", "-l", "app=nothing").stderr.strip() == (
            "No resources found in default namespace."
        )
        # One pod: its metrics, or why there are none.
        table = run("top", "po", "web-58b4f7c9d2-bxk2q", "--containers").stdout.splitlines()
        assert table[1].split() == ["web-58b4f7c9d2-bxk2q", "main", "15m", "4Mi"]
        missing = run("top", "pods", "web-58b4f7c9d2-zzzzz")
        assert missing.exit_code != 0
        assert "Metrics not available for pod default/web-58b4f7c9d2-zzzzz" in missing.output
        absent = run("top", "pods", "nope")
        assert absent.exit_code != 0 and 'pods "nope" not found' in absent.output


@pytest.mark.parametrize("processes", [0, 2], ids=["threads", "workers"])
async def test_a_handlers_requests_add_their_cpu_to_its_container(
    tmp_path: Path, processes: int
) -> None:
    """Each HTTP request runs an instance of its own, on an agent thread or in a request
    worker process: the CPU each used is added to the container's total when it ends (a
    rate needs it), while its memory goes with it."""
    from tests.handlers import build
    from tests.test_handler import get, pool_of, refused

    runtime = NativeRuntime(tmp_path / "data", RuntimeSettings(request_processes=processes))
    await runtime.start_request_processes()
    try:
        pool = await pool_of(runtime, tmp_path, build("modes"), request_deadline=0.6)
        for _ in range(2):  # each spins until the request's deadline
            assert (await refused(pool, get("/loop"))).status == 504
        await pool.close()  # waits for the instances still ending (bounded)
        assert runtime.stats()["running"] == 0
        [usage] = [u for u in runtime.usage() if u.pod == "default/web-1"]
        assert usage.container == "web" and usage.memory_bytes == 0
        assert 0.4 < usage.cpu_seconds < 3.0, usage  # two spins of about 0.6 s each
    finally:
        await runtime.close()
