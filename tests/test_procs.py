"""Handler request instances in worker processes (runtime/procs.py, ``runtime.request_processes``).

Real worker processes running real wasmtime: a request answers the same as on the agent's
threads (test_handler's own tests run here against such a runtime), its stdout streams back
through its pipe as written and within its window, a worker killed with SIGKILL fails only
its own requests and is replaced, and closing the runtime leaves no worker behind. The whole
of test_handler.py and test_runtime.py also runs with workers:
``P2PKUBE_TEST_REQUEST_PROCESSES=2 pytest ...``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pkube.runtime import interface as rt
from p2pkube.runtime.native import NativeRuntime
from p2pkube.runtime.procs import ProcInstance
from p2pkube.runtime.settings import RuntimeSettings
from tests import test_handler
from tests.test_handler import fetch, get, pool_of, read_all, refused
from tests.test_handler import modes as modes  # the module-scoped fixture, used here too
from tests.test_signaling import wait_until

WORKERS = 2


@pytest.fixture
async def procs(tmp_path: Path) -> AsyncIterator[NativeRuntime]:
    native = NativeRuntime(tmp_path / "data", RuntimeSettings(request_processes=WORKERS))
    await native.start_request_processes()
    try:
        yield native
    finally:
        await native.close()


def workers(runtime: NativeRuntime) -> list[dict[str, int]]:
    return runtime.stats()["requestProcesses"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes only once reaped; /proc says which it is.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def test_requests_run_in_the_workers_with_the_same_answers(
    procs: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    pool = await pool_of(procs, tmp_path, modes)
    assert len(workers(procs)) == WORKERS
    status, body = await fetch(pool, get("/hello", "a=1"), b"abc")
    assert status == 200 and "path: /hello" in body and "body: 3 bytes" in body
    assert "pod: web-1" in body
    response = await pool.handle(get("/slow", "n=2&ms=300"), b"")
    assert isinstance(response.instance, ProcInstance)
    assert sum(w["running"] for w in workers(procs)) == 1
    await read_all(response)
    for worker in workers(procs):  # an idle worker's memory (reported in the stats)
        assert worker["rssBytes"] is not None and worker["rssBytes"] < 150 << 20


async def test_streaming_failures_deadline_stop_and_logs_as_on_threads(
    procs: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    """test_handler's own checks, against workers: the body streams before the instance
    ends, a trap/garbage/exit/OOM is a 502 with its reason, the deadline a 504, aclose
    stops it, stderr of concurrent requests reaches the pod log whole."""
    for test in (
        test_handler.test_the_body_streams_as_the_handler_writes_it,
        test_handler.test_a_handler_that_fails_before_its_head_gives_502_with_the_reason,
        test_handler.test_the_request_deadline_gives_504_or_cuts_the_body,
        test_handler.test_aclose_stops_a_running_instance,
        test_handler.test_stderr_of_concurrent_requests_reaches_the_pod_log_whole,
        test_handler.test_a_writer_blocked_by_an_idle_reader_still_ends_at_its_deadline,
    ):
        directory = tmp_path / test.__name__
        directory.mkdir()
        await test(procs, directory, modes)


async def test_a_fast_writer_waits_for_a_slow_reader_across_the_process_boundary(
    procs: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    """The window holds across the process boundary: 4 MiB through a 256 KiB window, the
    agent never holding more than the window unread (the worker's writes block on the
    pipe the agent stops reading)."""
    await test_handler.test_a_fast_writer_waits_for_a_slow_reader_in_bounded_memory(
        procs, tmp_path, modes
    )


async def test_a_killed_worker_fails_only_its_requests_and_is_replaced(
    procs: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    pool = await pool_of(procs, tmp_path, modes)
    slow = [await pool.handle(get("/slow", "n=3&ms=500"), b"") for _ in range(2)]
    victims = {r.instance.worker.pid for r in slow if isinstance(r.instance, ProcInstance)}
    assert len(victims) == 2, "least-loaded: one request per worker"
    victim = slow[0].instance
    assert isinstance(victim, ProcInstance)
    os.kill(victim.worker.pid, signal.SIGKILL)
    with pytest.raises(Exception, match=r"request worker process .* died"):
        await read_all(slow[0])
    assert slow[0].termination is not None and slow[0].termination.reason == rt.KILLED
    assert await read_all(slow[1]) == b"line 0\nline 1\nline 2\n"  # the other worker's
    await wait_until(lambda: len(workers(procs)) == WORKERS, within=15)
    assert victim.worker.pid not in {w["pid"] for w in workers(procs)}
    assert procs._procs is not None and procs._procs.replaced == 1
    assert await fetch(pool, get("/status", "code=200")) == (200, "status\n")
    assert pool.stats()["failures"] == {rt.KILLED: 1}


async def test_a_request_killed_before_its_head_gets_502_with_the_reason(
    procs: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    pool = await pool_of(procs, tmp_path, modes, concurrency=1)
    waiting = asyncio.create_task(refused(pool, get("/loop")))
    await wait_until(lambda: any(w["running"] for w in workers(procs)))
    busy = next(w for w in workers(procs) if w["running"])
    os.kill(busy["pid"], signal.SIGKILL)
    error = await waiting
    assert error.status == 502 and "request worker process" in error.message


async def test_workers_start_at_the_first_request_and_close_leaves_none(
    tmp_path: Path, modes: tuple[str, Path]
) -> None:
    runtime = NativeRuntime(tmp_path / "data", RuntimeSettings(request_processes=WORKERS))
    pool = await pool_of(runtime, tmp_path, modes)
    assert workers(runtime) == [], "no worker before a handler request"
    first = await pool.handle(get("/status", "code=200"), b"")
    assert not isinstance(first.instance, ProcInstance), "the first runs on a thread"
    await read_all(first)
    await wait_until(lambda: len(workers(runtime)) == WORKERS, within=15)
    running = await pool.handle(get("/slow", "n=100&ms=500"), b"")  # runs 50 s
    pids = [w["pid"] for w in workers(runtime)]
    started = time.monotonic()
    await runtime.close()
    assert time.monotonic() - started < runtime.settings.stop_timeout
    assert running.instance is not None and running.instance.done.done()
    assert not [pid for pid in pids if alive(pid)]


async def test_without_a_worker_requests_run_on_threads(
    procs: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    pool = await pool_of(procs, tmp_path, modes)
    assert procs._procs is not None
    procs._procs.count = 0  # no replacement: as while workers are being started again
    for worker in workers(procs):
        os.kill(worker["pid"], signal.SIGKILL)
    await wait_until(lambda: not workers(procs))
    response = await pool.handle(get("/status", "code=200"), b"")
    assert not isinstance(response.instance, ProcInstance)
    assert await read_all(response) == b"status\n"
