"""Pod start latency and CPU-bound pod speed, against a fresh Python process and native code.

**Start latency**: the time from asking the native runtime to start a container until it has
exited, for ``sqlite.wasm`` (1.09 MB: SQLite compiled to wasm32-wasi, examples/pods/sqlite)
running the query ``select 1``, so the time is mostly start-up. Variants:

* *warm*: the compiled module is in memory (``InstancePre``): instantiate and run;
* *disk cache*: a new engine on the same data dir (as after an agent restart): deserialize
  the cached machine code, then instantiate and run;
* *cold*: nothing cached: compile, then run, once per compiler (``cranelift``, ``winch``) and
  with p2pkube's default ``tiered`` (Winch first, Cranelift in the background).

Baseline, same run: a fresh Python subprocess doing the same work
(``python -c "import sqlite3; sqlite3.connect(':memory:').execute('select 1')"``), the
cost of starting a pod as a process.

**CPU-bound speed**: ``primes.wasm`` counting primes below N (examples/pods/primes.c) in the
runtime (Cranelift code, the steady state, and Winch code, a first start), against the same C
compiled natively with ``cc -O2`` and the same algorithm in pure Python
(examples/pods/primes.py); median of ``--reps`` runs each.

Run: ``.venv/bin/python -m bench.bench_pods [--warm 200] [--cold 5] [--primes 5000000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.benchlib import REPO, emit, markdown_table, summary_ms, yes
from p2pkube.runtime import interface as rt
from p2pkube.runtime.native import NativeRuntime
from p2pkube.runtime.settings import RuntimeSettings

TITLE = "Pod start latency and CPU-bound pod speed"
"""The heading of this benchmark's section in docs/benchmarks.md."""
BUILD = REPO / "examples" / "build"
TARGET_WARM_P99_MS = 5.0
TARGET_COLD_MS = 300.0
PYTHON_SQLITE = "import sqlite3; sqlite3.connect(':memory:').execute('select 1').fetchall()"


def module(name: str) -> tuple[str, Path]:
    path = BUILD / f"{name}.wasm"
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(), path


def launch(name: str, args: list[str], logs: Path, n: int) -> rt.Launch:
    digest, path = module(name)
    return rt.Launch(
        pod=f"bench/{name}-{n}",
        container="main",
        image=digest,
        module_path=path,
        argv=[name, *args],
        env=[],
        limits=rt.Limits(memory_bytes=256 << 20),
        log_path=logs / f"{name}-{n}.log",
    )


async def timed_run(runtime: NativeRuntime, spec: rt.Launch) -> float:
    """Seconds from start() until the instance has ended; checks that it succeeded."""
    started = time.perf_counter()
    termination = await runtime.start(spec).done
    took = time.perf_counter() - started
    if termination.reason != rt.COMPLETED:
        raise RuntimeError(f"{spec.pod} ended {termination.reason}: {termination.message}")
    return took


async def start_latency(work: Path, warm_reps: int, cold_reps: int) -> dict[str, Any]:
    sql = ["select 1"]
    results: dict[str, Any] = {}
    # cold: a fresh data dir per rep, so nothing is cached
    for compiler in ("cranelift", "winch", "tiered"):
        times = []
        for rep in range(cold_reps):
            data = work / f"cold-{compiler}-{rep}"
            runtime = NativeRuntime(data, replace(RuntimeSettings(), compiler=compiler))
            try:
                times.append(await timed_run(runtime, launch("sqlite", sql, data, rep)))
            finally:
                await runtime.close()
        results[f"cold-{compiler}"] = summary_ms(times)
    # warm and disk cache, with the default (tiered) settings, after the background compile
    data = work / "warm"
    runtime = NativeRuntime(data, RuntimeSettings())
    try:
        await timed_run(runtime, launch("sqlite", sql, data, 0))
        await asyncio.to_thread(runtime.loader.wait_optimized, 60)
        for n in range(10):  # settle: threads, page cache
            await timed_run(runtime, launch("sqlite", sql, data, n))
        warm = [await timed_run(runtime, launch("sqlite", sql, data, n)) for n in range(warm_reps)]
    finally:
        await runtime.close()
    results["warm"] = summary_ms(warm)
    disk = []
    for rep in range(max(cold_reps * 4, 10)):
        runtime = NativeRuntime(data, RuntimeSettings())
        try:
            disk.append(await timed_run(runtime, launch("sqlite", sql, data, 1000 + rep)))
        finally:
            await runtime.close()
    results["disk-cache"] = summary_ms(disk)
    python = await asyncio.to_thread(
        _process_times, [sys.executable, "-c", PYTHON_SQLITE], max(cold_reps * 4, 10)
    )
    results["python-subprocess"] = summary_ms(python)
    return results


async def cpu_speed(work: Path, n: int, reps: int) -> dict[str, Any]:
    args = [str(n)]
    speeds: dict[str, Any] = {}
    for compiler in ("cranelift", "winch"):
        data = work / f"cpu-{compiler}"
        runtime = NativeRuntime(data, replace(RuntimeSettings(), compiler=compiler))
        try:
            digest, path = module("primes")
            await runtime.prepare(digest, path)
            times = [await timed_run(runtime, launch("primes", args, data, r)) for r in range(reps)]
        finally:
            await runtime.close()
        speeds[f"wasm-{compiler}"] = statistics.median(times)
    native = BUILD / "native" / "primes"
    if native.exists():
        native_times = await asyncio.to_thread(_process_times, [str(native), *args], reps)
        speeds["native"] = statistics.median(native_times)
    python_reps = max(1, reps // 3)
    python_times = await asyncio.to_thread(
        _process_times, [sys.executable, str(REPO / "examples/pods/primes.py"), *args], python_reps
    )
    speeds["python"] = statistics.median(python_times)
    return {"n": n, "seconds": {k: round(v, 4) for k, v in speeds.items()}}


def _process_times(argv: list[str], reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


START_ROWS = [
    ("warm", "warm: compiled module in memory (InstancePre)"),
    ("disk-cache", "disk cache: new engine, cached machine code"),
    ("cold-tiered", "cold, tiered (default): Winch now, Cranelift later"),
    ("cold-winch", "cold, Winch only"),
    ("cold-cranelift", "cold, Cranelift only"),
    ("python-subprocess", "baseline: fresh Python subprocess, same SQL"),
]


def start_table(result: dict[str, Any]) -> str:
    start = result["start"]
    python = start["python-subprocess"]["p50"]
    rows = [
        [
            label,
            start[key]["p50"],
            start[key]["p99"],
            start[key]["max"],
            start[key]["n"],
            round(python / start[key]["p50"], 2),
        ]
        for key, label in START_ROWS
    ]
    return markdown_table(
        ["start to exit", "p50 ms", "p99 ms", "max ms", "runs", "x faster than python"], rows
    )


def cpu_table(result: dict[str, Any]) -> str:
    seconds = result["cpu"]["seconds"]
    native = seconds.get("native")
    labels = {
        "wasm-cranelift": "wasm pod, Cranelift code (steady state)",
        "wasm-winch": "wasm pod, Winch code (first start)",
        "native": "native, cc -O2",
        "python": "pure Python (CPython)",
    }
    rows = [
        [
            labels[key],
            value,
            round(value / native, 2) if native else float("nan"),
            round(seconds["python"] / value, 1),
        ]
        for key, value in seconds.items()
    ]
    return markdown_table(
        ["primes below N", "seconds", "x native time", "x faster than python"], rows
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-pods-"))
    try:
        start = await start_latency(work, args.warm, args.cold)
        cpu = await cpu_speed(work, args.primes, args.reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = (BUILD / "sqlite.wasm").stat().st_size
    return {
        "bench": "pods",
        "moduleBytes": size,
        "start": start,
        "cpu": cpu,
        "targetWarmP99Ms": TARGET_WARM_P99_MS,
        "targetColdMs": TARGET_COLD_MS,
    }


# --- docs/benchmarks.md ---------------------------------------------------------------------------


def render(r: dict[str, Any]) -> list[str]:
    """Warm, disk-cached and cold starts, the CPU-bound speed, and the compilers' share."""
    start, cpu = r["start"], r["cpu"]["seconds"]
    warm, tiered, cranelift = start["warm"], start["cold-tiered"], start["cold-cranelift"]
    python = start["python-subprocess"]
    lines = [
        f"**Start latency**: `sqlite.wasm` ({r['moduleBytes']:,} bytes, SQLite compiled to "
        "wasm32-wasi by `make examples`) running `select 1`, timed from the runtime's "
        "`start()` until the instance has exited (a worker thread, the store, WASI, the "
        "instantiation, the run, the log file). *warm*: the compiled module in memory; *disk "
        "cache*: a new engine on the same data dir, as after an agent restart; *cold*: nothing "
        "cached, per compiler. Baseline, same run: a fresh Python subprocess running the same "
        "query with `sqlite3`, the cost of a pod as a process.",
        "",
        start_table(r),
        "",
        f"**Targets** warm p99 < {r['targetWarmP99Ms']:g} ms: "
        f"{yes(warm['p99'] < r['targetWarmP99Ms'])} (p99 {warm['p99']:g} ms); cold under "
        f"{r['targetColdMs']:g} ms: {yes(tiered['p50'] < r['targetColdMs'])} with the default "
        f"tiered compiler (p50 {tiered['p50']:g} ms; Cranelift alone: p50 {cranelift['p50']:g} "
        "ms).",
        "",
        f"**CPU-bound speed**: counting primes below {r['cpu']['n']:,} "
        "(examples/pods/primes.c), median of a few runs; the wasm rows include starting the "
        "instance.",
        "",
        cpu_table(r),
        "",
        "**What limits it**: a warm start is a thread start plus an instantiation from the "
        "cached `InstancePre` and the run itself; "
        f"{python['p50'] / warm['p50']:.0f}x faster than a Python process, which pays the "
        "interpreter's start-up. A cold start is compilation: Cranelift optimises and takes "
        "about a second for a 1 MB module on this machine, Winch (a baseline compiler) a "
        "fraction of that, so the first start of a module uses Winch code while Cranelift "
        "compiles it on one niced background thread; every later start, also after a restart "
        "(disk cache), uses Cranelift's code. "
        + (
            f"Winch's code is {cpu['wasm-winch'] / cpu['wasm-cranelift']:.2f}x slower than "
            "Cranelift's on the CPU job; "
            if "wasm-winch" in cpu and "wasm-cranelift" in cpu
            else ""
        )
        + (
            f"Cranelift's is {cpu['wasm-cranelift'] / cpu['native']:.2f}x the native time "
            "(sandbox cost: bounds-checked memory behind guard pages, epoch checks on loop "
            "back-edges) and "
            f"{cpu['python'] / cpu['wasm-cranelift']:.0f}x faster than CPython."
            if "native" in cpu and "wasm-cranelift" in cpu
            else ""
        ),
    ]
    return lines


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    """This benchmark's rows of the summary table."""
    r = result
    warm, cold = r["start"]["warm"], r["start"]["cold-tiered"]
    rows = [
        [
            "pod start, warm (1.09 MB module)",
            f"p99 {warm['p99']:g} ms (Python subprocess p50 "
            f"{r['start']['python-subprocess']['p50']:g} ms)",
            f"p99 < {r['targetWarmP99Ms']:g} ms",
            yes(warm["p99"] < r["targetWarmP99Ms"]),
        ],
        [
            "pod start, cold (compile)",
            f"p50 {cold['p50']:g} ms tiered, {r['start']['cold-cranelift']['p50']:g} ms "
            "Cranelift alone",
            f"< {r['targetColdMs']:g} ms",
            yes(cold["p50"] < r["targetColdMs"]),
        ],
    ]
    cpu = r["cpu"]["seconds"]
    if "native" in cpu:
        rows.append(
            [
                "CPU-bound pod speed",
                f"x{cpu['wasm-cranelift'] / cpu['native']:.2f} native time, "
                f"{cpu['python'] / cpu['wasm-cranelift']:.0f}x faster than CPython",
                "-",
                "-",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warm", type=int, default=200, help="warm starts measured")
    parser.add_argument("--cold", type=int, default=5, help="cold starts per compiler")
    parser.add_argument("--primes", type=int, default=5_000_000, help="N of the CPU job")
    parser.add_argument("--reps", type=int, default=3, help="runs of the CPU job per variant")
    args = parser.parse_args()
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    result = asyncio.run(main_async(args))
    print(f"\nstart latency of sqlite.wasm ({result['moduleBytes']:,} bytes):\n")
    print(start_table(result))
    print(f"\nCPU-bound: primes below {result['cpu']['n']:,}:\n")
    print(cpu_table(result))
    emit(result)


if __name__ == "__main__":
    main()
