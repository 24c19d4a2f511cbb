"""HandlerPool (runtime/handler.py): HTTP requests to a handler container, one wasm instance
per request, through the real native runtime (wasmtime) and real C handlers.

What a client of the Services path sees: the status, headers and body; the 502/503/504 it
gets and their reasons; a body that streams as the handler writes it; limits per request;
and the handler's stderr in the pod's log (``p2pkube logs``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from p2pkube.runtime import interface as rt
from p2pkube.runtime.cgi import CgiRequest
from p2pkube.runtime.handler import HandlerPool, HandlerResponse, container_concurrency
from p2pkube.runtime.native import NativeRuntime
from p2pkube.runtime.probe import HttpGetProbe, probe_once
from p2pkube.runtime.settings import RuntimeSettings
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import HttpError, StreamBroken
from tests.handlers import build
from tests.test_echo_handler import echo_module

__all__ = ["echo_module"]  # test_echo_handler's module-scoped fixture, used here too


@pytest.fixture(scope="module")
def modes() -> tuple[str, Path]:
    return build("modes")


async def pool_of(
    runtime: NativeRuntime,
    tmp_path: Path,
    module: tuple[str, Path],
    *,
    pod: str = "web-1",
    node: str = "n1",
    memory: int = 64 << 20,
    concurrency: int | None = None,
    env: list[tuple[str, str]] | None = None,
    **settings: Any,
) -> HandlerPool:
    digest, path = module
    template = rt.Launch(
        pod=f"default/{pod}",
        container="web",
        image=digest,
        module_path=path,
        argv=["web"],
        env=env or [],
        limits=rt.Limits(memory_bytes=memory),
        log_path=tmp_path / "pods" / pod / "web" / "0.log",
    )
    await runtime.prepare(digest, path)
    return HandlerPool(
        runtime,
        template,
        pod_name=pod,
        pod_namespace="default",
        node_name=node,
        settings=replace(ServiceSettings(), **settings),
        concurrency=concurrency,
    )


def get(path: str, query: str = "", **kwargs: Any) -> CgiRequest:
    return CgiRequest("GET", path, query, remote_addr="10.0.0.9", server_port=30080, **kwargs)


async def read_all(response: HandlerResponse) -> bytes:
    chunks = []
    async with asyncio.timeout(20):
        while chunk := await response.read():
            chunks.append(chunk)
    return b"".join(chunks)


async def fetch(pool: HandlerPool, request: CgiRequest, body: bytes = b"") -> tuple[int, str]:
    response = await pool.handle(request, body)
    return response.head.status, (await read_all(response)).decode()


async def refused(pool: HandlerPool, request: CgiRequest) -> HttpError:
    with pytest.raises(HttpError) as caught:
        async with asyncio.timeout(20):
            await pool.handle(request, b"")
    return caught.value


async def test_get_and_post_reach_the_echo_example_with_its_env(
    runtime: NativeRuntime, tmp_path: Path, echo_module: tuple[str, Path], modes: tuple[str, Path]
) -> None:
    pool = await pool_of(runtime, tmp_path, echo_module, env=[("POD_NAME", "forged")])
    request = get("/hello/world", "a=1&b=two", headers=[("X-Echo", "ping pong")])
    response = await pool.handle(request, b"")
    assert (response.head.status, response.head.reason) == (200, "OK")
    assert response.head.headers == (("Content-Type", "text/plain"),)
    assert response.endpoint == "n1/web-1"
    assert (await read_all(response)).decode().splitlines() == [
        "method: GET",
        "path: /hello/world",
        "query: a=1&b=two",
        "x-echo: ping pong",
        "body: 0 bytes",
        "pod: web-1",  # the Downward API's value wins over the container's env
        "node: n1",
    ]
    body = bytes(range(256)) * 400
    post = CgiRequest("POST", "/upload", content_length=len(body))
    status, text = await fetch(pool, post, body)
    assert status == 200 and "body: 102400 bytes" in text.splitlines()

    other = await pool_of(runtime, tmp_path, modes, pod="modes-1")
    status, text = await fetch(other, get("/", "x=1"))
    assert "namespace: default" in text and "port: 30080" in text
    assert pool.stats()["requests"] == 2 and pool.stats()["inFlight"] == 0


async def test_the_body_streams_as_the_handler_writes_it(
    runtime: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    pool = await pool_of(runtime, tmp_path, modes)
    started = time.monotonic()
    response = await pool.handle(get("/slow", "n=4&ms=400"), b"")
    assert time.monotonic() - started < 1.0, "the head waited for the instance to end"
    assert await response.read() == b"line 0\n"
    assert response.instance is not None and not response.instance.done.done()
    assert await read_all(response) == b"line 1\nline 2\nline 3\n"
    assert await response.read() == b""
    assert response.termination is not None and response.termination.reason == rt.COMPLETED


async def test_a_handler_that_fails_before_its_head_gives_502_with_the_reason(
    runtime: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    pool = await pool_of(runtime, tmp_path, modes, memory=32 << 20)
    cases = {
        "/trap": "handler trapped: ",
        "/garbage": "malformed response header line 'this is not a header'",
        "/exit": "handler exited with code 1 before the end of its response headers",
        "/mem": "handler ran out of memory: memory limit 32Mi reached",
    }
    for path, reason in cases.items():
        error = await refused(pool, get(path, "mb=64"))
        assert error.status == 502, path
        assert error.message.startswith(reason), (path, error.message)
        assert error.reached_handler, path
    assert pool.stats()["failures"] == {
        "Trapped": 1,
        "MalformedResponse": 1,
        "Error": 1,
        "OOMKilled": 1,
    }
    assert await fetch(pool, get("/status", "code=201")) == (201, "status\n")


async def test_the_memory_limit_holds_per_request(
    runtime: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    pool = await pool_of(runtime, tmp_path, modes, memory=16 << 20)
    # Two requests of 8 MiB at once: each instance has the container's limit of its own.
    answers = await asyncio.gather(*(fetch(pool, get("/mem", "mb=8")) for _ in range(2)))
    assert answers == [(200, "allocated 8 MiB\n")] * 2
    error = await refused(pool, get("/mem", "mb=20"))
    assert (error.status, error.message[:31]) == (502, "handler ran out of memory: memo")


async def test_the_request_deadline_gives_504_or_cuts_the_body(
    runtime: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    pool = await pool_of(runtime, tmp_path, modes, request_deadline=1.0)
    started = time.monotonic()
    error = await refused(pool, get("/loop"))
    assert error.status == 504 and "request deadline (1 s)" in error.message
    assert time.monotonic() - started < 2.5

    response = await pool.handle(get("/slow", "n=50&ms=100"), b"")
    with pytest.raises(StreamBroken, match=r"request deadline .* body cut short after"):
        await read_all(response)
    assert pool.stats()["failures"] == {"DeadlineExceeded": 2}

    response = await pool.handle(get("/trap-late"), b"")
    with pytest.raises(StreamBroken, match="handler trapped"):
        assert await response.read() == b"about to trap\n"
        await response.read()


async def test_concurrency_and_the_queue_are_bounded(
    runtime: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    busy = await pool_of(runtime, tmp_path, modes, concurrency=2, queue_size=1)
    other = await pool_of(runtime, tmp_path, modes, pod="web-2")
    running = [await busy.handle(get("/slow", "n=1&ms=1000"), b"") for _ in range(2)]
    queued = asyncio.create_task(fetch(busy, get("/status", "code=200")))
    await asyncio.sleep(0.1)
    assert busy.stats()["inFlight"] == 2 and busy.stats()["queued"] == 1
    error = await refused(busy, get("/status"))
    assert (error.status, error.retry_after, error.reached_handler) == (503, 1, False)
    assert "busy: 2 requests running, 1 queued" in error.message
    # Another pod is not held up by this one.
    assert await fetch(other, get("/status", "code=200")) == (200, "status\n")
    assert not queued.done()
    for response in running:
        assert await read_all(response) == b"line 0\n"
    assert await asyncio.wait_for(queued, 5) == (200, "status\n")
    assert busy.stats()["failures"] == {"Overloaded": 1} and busy.stats()["inFlight"] == 0

    # A request that waits past its deadline in the queue never reached a handler.
    short = await pool_of(runtime, tmp_path, modes, concurrency=1)
    blocker = await short.handle(get("/slow", "n=1&ms=2000"), b"")
    short.settings = replace(short.settings, request_deadline=0.5)  # for the next request
    error = await refused(short, get("/status"))
    assert (error.status, error.reached_handler) == (504, False)
    await blocker.aclose()


async def test_stderr_of_concurrent_requests_reaches_the_pod_log_whole(
    runtime: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    pool = await pool_of(runtime, tmp_path, modes)
    answers = await asyncio.gather(
        *(fetch(pool, get("/stderr", f"{n:03d}{'x' * 200}")) for n in range(40))
    )
    assert answers == [(200, "ok\n")] * 40
    lines = await runtime.read_log(pool.template.log_path)
    assert {line.stream for line in lines} == {"stderr"}  # stdout is the response, not the log
    texts = [line.text for line in lines]
    kinds = ("handler error", "done")
    expected = {f"{kind} {n:03d}{'x' * 200}" for n in range(40) for kind in kinds}
    assert sorted(texts) == sorted(expected)


@pytest.mark.parametrize("processes", [0, 2], ids=["threads", "workers"])
async def test_a_stderr_flood_stops_its_request_within_the_output_budget(
    tmp_path: Path, modes: tuple[str, Path], processes: int
) -> None:
    """A request instance's stderr is read by the agent (from a pipe, whether the instance
    runs on the agent's thread or in a worker process) against the output budget as any
    instance's: a handler that floods it is stopped with OutputFlood, a 502 naming it, its
    log holds about the burst, and the next request is answered."""
    burst = 256 * 1024
    settings = RuntimeSettings(
        log_burst_bytes=burst, log_rate_bytes=64 * 1024, request_processes=processes
    )
    runtime = NativeRuntime(tmp_path / "data", settings)
    await runtime.start_request_processes()
    try:
        pool = await pool_of(runtime, tmp_path, modes)
        error = await refused(pool, get("/stderr-flood"))
        assert error.status == 502 and "OutputFlood" in error.message, error.message
        assert pool.stats()["failures"] == {rt.OUTPUT_FLOOD: 1}
        logged = sum(path.stat().st_size for path in pool.template.log_path.parent.iterdir())
        assert burst // 2 < logged < 2 * burst + 256 * 1024, logged
        assert await fetch(pool, get("/status", "code=200")) == (200, "status\n")
    finally:
        await runtime.close()


async def test_a_writer_blocked_by_an_idle_reader_still_ends_at_its_deadline(
    runtime: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    """A client that stops reading holds the handler's writes back (its window, then a
    full pipe: the write blocks where no epoch check runs); the request deadline still
    ends the instance, on time."""
    pool = await pool_of(
        runtime, tmp_path, modes, request_deadline=1.0, response_buffer_bytes=64 * 1024
    )
    started = time.monotonic()
    response = await pool.handle(get("/big", "kb=8192"), b"")
    assert response.instance is not None
    termination = await asyncio.wait_for(response.instance.done, 3)
    assert termination.reason == rt.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.8
    assert response.peak_unread <= 64 * 1024
    with pytest.raises(StreamBroken, match="request deadline"):
        await read_all(response)


async def test_aclose_stops_a_running_instance(
    runtime: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    pool = await pool_of(runtime, tmp_path, modes)
    response = await pool.handle(get("/slow", "n=100&ms=100"), b"")
    assert await response.read() == b"line 0\n"
    closed = time.monotonic()
    await response.aclose()
    assert response.instance is not None
    # Stopped: its sleep ends early and it ends at its next epoch check or call (it would
    # otherwise write 99 more lines over 10 s).
    await asyncio.wait_for(response.instance.done, 2)
    assert time.monotonic() - closed < 1.5
    assert await response.read() == b""
    assert pool.stats()["inFlight"] == 0 and runtime.stats()["running"] == 0


async def test_a_fast_writer_waits_for_a_slow_reader_in_bounded_memory(
    runtime: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    limit = 256 * 1024
    pool = await pool_of(runtime, tmp_path, modes, response_buffer_bytes=limit)
    response = await pool.handle(get("/big", "kb=4096"), b"")
    await asyncio.sleep(0.5)  # the handler could write all 4 MiB by now: it waits instead
    assert response.instance is not None and not response.instance.done.done()
    total = 0
    async with asyncio.timeout(20):
        while chunk := await response.read():
            total += len(chunk)
            await asyncio.sleep(0.001)
    assert total == 4096 * 1024
    assert response.peak_unread <= limit + 64 * 1024  # the bound, plus one write at most


async def test_a_write_on_the_loop_past_the_buffer_breaks_the_stream(
    runtime: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    """In a browser tab the instance's stdout arrives on the event loop, which must not wait
    for the reader: past the buffer the stream breaks and the instance is stopped. The
    native instance's own writes come from its thread, so the test writes as the tab's
    runtime would, from the loop, into a real request's response."""
    limit = 64 * 1024
    pool = await pool_of(runtime, tmp_path, modes, response_buffer_bytes=limit)
    response = await pool.handle(get("/slow", "n=1&ms=3000"), b"")
    assert await response.read() == b"line 0\n"  # then it sleeps 3 s
    written = time.monotonic()
    response.write(b"y" * (limit // 2))
    response.write(b"y" * limit)  # returns at once: over the bound, dropped
    await asyncio.sleep(0.1)
    assert await response.read() == b"y" * (limit // 2)
    with pytest.raises(StreamBroken, match="faster than the client reads"):
        await response.read()
    assert response.instance is not None
    await asyncio.wait_for(response.instance.done, 2)
    assert time.monotonic() - written < 1.5, "the instance slept on: it was not stopped"
    assert pool.stats()["failures"] == {"ResponseBufferFull": 1}


async def test_pool_close_fails_the_queue_and_stops_the_instances(
    runtime: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    pool = await pool_of(runtime, tmp_path, modes, concurrency=1)
    running = await pool.handle(get("/slow", "n=100&ms=100"), b"")
    queued = asyncio.create_task(pool.handle(get("/status"), b""))
    await asyncio.sleep(0.1)
    await asyncio.wait_for(pool.close(), 5)
    with pytest.raises(HttpError, match="is stopping"):
        await queued
    with pytest.raises(StreamBroken, match="the pod is stopping"):
        await read_all(running)
    error = await refused(pool, get("/status"))
    assert (error.status, error.reached_handler) == (503, False)
    assert runtime.stats()["running"] == 0


def test_the_concurrency_annotation() -> None:
    key = "p2pkube.io/container-concurrency"
    assert container_concurrency({key: "3"}, 8) == 3
    assert container_concurrency({}, 8) == 8
    assert container_concurrency(None, 8) == 8
    for bad in ("0", "-1", "x", "1001", ""):
        assert container_concurrency({key: bad}, 8) == 8, bad


async def test_a_readiness_probe_reads_as_kubernetes_reports_it(
    runtime: NativeRuntime, tmp_path: Path, modes: tuple[str, Path]
) -> None:
    pool = await pool_of(runtime, tmp_path, modes)
    container = {
        "ports": [{"containerPort": 8080, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/status?code=302", "port": "http"}},
    }
    probe = HttpGetProbe.of(container, ServiceSettings(probe_period=7.0))
    assert probe is not None
    assert (probe.path, probe.query, probe.port, probe.period, probe.timeout) == (
        "/status",
        "code=302",
        "http",
        7.0,
        1.0,
    )
    assert (probe.success_threshold, probe.failure_threshold, probe.initial_delay) == (1, 3, 0)
    assert await probe_once(probe, 8080, pool) == (True, "")  # 200-399 is a success

    def at(path: str, timeout: float = 1.0) -> HttpGetProbe:
        return replace(probe, path=path, query="code=404", timeout=timeout)

    assert await probe_once(at("/status"), 8080, pool) == (
        False,
        "HTTP probe failed with statuscode: 404",
    )
    ok, why = await probe_once(at("/trap"), 8080, pool)
    assert not ok and why.startswith("HTTP probe failed with statuscode: 502 (handler trapped")
    started = time.monotonic()
    assert await probe_once(at("/loop", timeout=0.3), 8080, pool) == (
        False,
        'Get "http://127.0.0.1:8080/loop?code=404": context deadline exceeded '
        "(Client.Timeout exceeded while awaiting headers)",
    )
    assert time.monotonic() - started < 1.0
    assert await probe_once(probe, 8080, None) == (
        False,
        'Get "http://127.0.0.1:8080/status?code=302": dial tcp 127.0.0.1:8080: connect: '
        "connection refused",
    )
    await asyncio.sleep(0.2)
    assert pool.stats()["inFlight"] == 0  # the timed-out probe's instance was stopped
