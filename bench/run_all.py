"""Run every benchmark, print each table, and rewrite docs/benchmarks.md with the figures.

``make bench`` runs this. Each benchmark is a separate script (runnable alone, with flags for
its size) that prints its tables and, as its last line, a JSON result; this runner starts them
one after the other as child processes (so a crash or a leaked process in one cannot skew the
next), streams their output, and writes the document: the machine, the date, the summary, and
one section per benchmark with the exact command behind it. What a benchmark's figures mean is
its own module's business (the :class:`benchlib.Benchmark` protocol: ``TITLE``, ``render``,
``summary_rows``); this runner only orchestrates. A benchmark that fails is reported as failed
in the document instead of stopping the others.

Run: ``.venv/bin/python -m bench.run_all [--quick] [--only latency,idle] [--output PATH]``.
``--quick`` uses small sizes (a smoke test of the harness, figures not meaningful).
``--save-results PATH`` keeps what every benchmark returned; ``--from-results PATH`` writes
the document again from such a file without running anything (to check a change of wording).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import (
    bench_blobs,
    bench_browser,
    bench_chaos,
    bench_dashboard,
    bench_doc_growth,
    bench_idle,
    bench_kubectl,
    bench_latency,
    bench_pods,
    bench_scale,
    bench_sched,
    bench_services,
    bench_swim_sim,
    bench_throughput,
)
from bench.benchlib import (
    REPO,
    Benchmark,
    last_json_line,
    machine,
    machine_busy_seconds,
    markdown_table,
)

DOC = REPO / "docs" / "benchmarks.md"
BENCH_TIMEOUT = 900
"""Seconds one benchmark may run before it is killed and reported as failed."""
UNSIGNED_COMMIT = "c7e244c"
"""The last commit before membership and routed messages were signed (issue 10; it flooded
unsigned heartbeats, before SWIM): the idle benchmark measures its cluster too, in the same
window as ours."""
SIGNING = ["--baseline-commit", UNSIGNED_COMMIT, "--microbench", "2000"]
SIGNING_QUICK = ["--baseline-commit", UNSIGNED_COMMIT, "--microbench", "200"]


@dataclass
class Bench:
    """One benchmark script with its full-size and quick arguments, and what its run gave."""

    key: str
    module: Benchmark
    """The benchmark's module: run as ``python -m bench.<name>``, and it renders its section."""
    args: list[str]
    quick_args: list[str]
    attach_to: tuple[str, str] | None = None
    """``(key, name)``: this run is no section of its own but a diagnostic of benchmark ``key``,
    whose result gets ``{"command": ..., "result": ...}`` under ``name`` before it renders."""
    command: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0
    other_cores: float = 0.0
    """Average cores busy with processes outside this benchmark while it ran."""

    @property
    def module_name(self) -> str:
        return self.module.__name__


BENCHES = [
    Bench(
        "latency",
        bench_latency,
        ["--sizes", "3,5,10", "--writes", "100", "--interval", "0.05"],
        ["--sizes", "3", "--writes", "20"],
    ),
    Bench(
        "throughput",
        bench_throughput,
        ["--mib", "20", "--message-kib", "64", "--reps", "3", "--profile"],
        ["--mib", "2", "--reps", "1", "--loops", "asyncio", "--profile", "--profile-mib", "1"],
    ),
    Bench(
        "idle",
        bench_idle,
        # Two of the five serve metrics, scraped every 5 s: their rows beside the others'.
        ["--agents", "5", "--seconds", "30", "--scraped", "2", *SIGNING],
        ["--seconds", "5", "--scraped", "1", *SIGNING_QUICK],
    ),
    Bench(
        "idle-probes-doubled",
        bench_idle,
        ["--agents", "5", "--seconds", "30", *bench_idle.PROBES_DOUBLED],
        ["--seconds", "5", *bench_idle.PROBES_DOUBLED],
        attach_to=("idle", bench_idle.DIAGNOSTIC),
    ),
    Bench(
        "dashboard",
        bench_dashboard,
        ["--rounds", "3", "--seconds", "20", "--settle", "10"],
        ["--rounds", "1", "--seconds", "5", "--settle", "5"],
    ),
    Bench(
        "scale",
        bench_scale,
        # one size at a time; 40 agents on 2 cores take minutes to join (see its section)
        ["--sizes", "5,10,20,40", "--seconds", "20", "--settle", "5", "--writes", "50"],
        ["--quick"],
    ),
    Bench("doc_growth", bench_doc_growth, ["--cycles", "10000"], ["--cycles", "1000"]),
    Bench(
        "swim_sim",
        bench_swim_sim,
        # 10,000 is projected from 1,000 and reported as skipped when its N² entries would
        # not fit in memory; --time-limit keeps the whole run inside BENCH_TIMEOUT (the
        # longest scenario, N = 1,000 cut in halves, took 306 s of a 767 s run here)
        ["--sizes", "40,100,1000,10000", "--time-limit", "540"],
        ["--sizes", "40", "--crashes", "1", "--loss-seconds", "20"],
    ),
    Bench(
        "blobs",
        bench_blobs,
        ["--mib", "32", "--reps", "3"],
        ["--mib", "4", "--reps", "1", "--baselines", "peerlink"],
    ),
    Bench(
        "pods",
        bench_pods,
        ["--warm", "200", "--cold", "5", "--primes", "5000000", "--reps", "3"],
        ["--warm", "20", "--cold", "1", "--primes", "500000", "--reps", "1"],
    ),
    Bench(
        "sched",
        bench_sched,
        # issue 13: the 1,000-pod Job on 10 agents, several times (exactly 1,000 pods?)
        ["--reps", "20", "--failover-reps", "8", "--pods", "100,300,1000,1000,1000"],
        ["--reps", "5", "--failover-reps", "2", "--pods", "50", "--throughput-agents", "5"],
    ),
    Bench(
        "browser",
        bench_browser,
        ["--opens", "3", "--warm", "20", "--cold", "3", "--primes", "5000000", "--reps", "3"],
        ["--opens", "1", "--warm", "3", "--cold", "1", "--primes", "500000", "--reps", "1"],
    ),
    Bench(
        "services",
        bench_services,
        ["--requests", "400", "--seconds", "5", "--browser"],
        ["--requests", "50", "--seconds", "1"],
    ),
    Bench(
        "kubectl",
        bench_kubectl,
        ["--gets", "20", "--watch-writes", "50", "--rollouts", "3"],
        ["--gets", "3", "--watch-writes", "5", "--rollouts", "1"],
    ),
    Bench(
        "chaos",
        bench_chaos,
        ["--seconds", "60", "--overlap"],
        ["--seconds", "20", "--overlap", "--no-baseline"],
    ),
]
"""Every benchmark, in the order they run and their sections appear."""


def display_command(argv: list[str]) -> str:
    """The command as a user would type it from the repository root."""
    python = argv[0]
    try:
        python = os.path.relpath(python, REPO) if Path(python).is_relative_to(REPO) else python
    except ValueError:
        pass
    rel = [python, *(os.path.relpath(a, REPO) if a.startswith(str(REPO)) else a for a in argv[1:])]
    return shlex.join(rel)


def run(bench: Bench, quick: bool) -> None:
    """Run one benchmark, echoing its output; keep its JSON result or its error."""
    argv = [sys.executable, "-m", bench.module_name]
    argv += bench.quick_args if quick else bench.args
    bench.command = argv
    print(f"\n=== {bench.key}: {display_command(argv)}", flush=True)
    started = time.monotonic()
    busy = machine_busy_seconds()
    children = _children_cpu()
    lines: list[str] = []
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        # The child's own timeouts bound each step; this bounds the whole run.
        deadline = started + BENCH_TIMEOUT
        for line in process.stdout:
            lines.append(line)
            print(line, end="", flush=True)
            if time.monotonic() > deadline:
                raise TimeoutError(f"still running after {BENCH_TIMEOUT}s")
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except (TimeoutError, subprocess.TimeoutExpired) as exc:
        process.kill()
        process.wait(10)
        bench.error = f"killed: {exc}"
    bench.seconds = time.monotonic() - started
    ours = _children_cpu() - children
    bench.other_cores = max(0.0, machine_busy_seconds() - busy - ours) / bench.seconds
    if bench.error is None and process.returncode != 0:
        bench.error = f"exited with status {process.returncode} (its stderr is above)"
    if bench.error is None:
        try:
            bench.result = last_json_line("".join(lines))
        except ValueError as exc:
            bench.error = str(exc)
    if bench.error:
        print(f"=== {bench.key} FAILED: {bench.error}", flush=True)


def _children_cpu() -> float:
    """CPU seconds of every finished descendant (each level waits for its own children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def git_revision() -> str:
    """The commit measured, and whether the tree had changes on top of it."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + uncommitted changes" if dirty else head


def _git(*args: str) -> str:
    """What ``git ARGS`` prints in the repository (CalledProcessError when it fails)."""
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def results_of(benches: dict[str, Bench]) -> dict[str, dict[str, Any]]:
    """Each section's result as its module renders it: with its diagnostic runs attached."""
    results = {key: dict(b.result) for key, b in benches.items() if b.result is not None}
    for bench in benches.values():
        if bench.attach_to and bench.result is not None:
            key, name = bench.attach_to
            if key in results:
                results[key][name] = {
                    "command": display_command(bench.command),
                    "result": bench.result,
                }
    return results


def render(
    benches: dict[str, Bench], quick: bool, total_seconds: float, origins: list[str] | None = None
) -> str:
    """The whole document: the machine, the summary, then each benchmark's own section."""
    sections = [b for b in benches.values() if b.attach_to is None]
    results = results_of(benches)
    summary = [
        row for b in sections if b.key in results for row in b.module.summary_rows(results[b.key])
    ]
    m = machine()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run_all.py`); do not edit by hand, rerun it. Every "
        "figure below was measured in one run on the machine described here, each next to a "
        "baseline measured in the same run. Benchmarks measure and report; they are not tests "
        "and do not fail on a missed target.",
        "",
    ]
    if quick:
        out += ["> **Quick run** (`--quick`): sizes too small for the figures to mean much.", ""]
    out += [
        f"* Date: {now}; commit {git_revision()}; whole run {total_seconds / 60:.1f} min",
        *(
            [
                "* Sections from separate runs, each section's figures and baselines from one: "
                + "; ".join(origins)
            ]
            if origins and len(origins) > 1
            else []
        ),
        f"* CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ramGiB']:g} GiB; "
        f"kernel {m['kernel']}; temp/data dirs on {m['tmpFilesystem']}",
        f"* Python {m['python']}; aiortc {m['aiortc']}, aioice {m['aioice']}, "
        f"pycrdt {m['pycrdt']}, aiohttp {m['aiohttp']}, uvloop {m['uvloop']}",
        "",
        "## Summary",
        "",
        markdown_table(["what", "measured", "target", "met"], summary),
        "",
    ]
    for bench in sections:
        out += [
            f"## {bench.module.TITLE}",
            "",
            f"Command: `{display_command(bench.command)}` ({bench.seconds:.0f} s; other "
            f"processes kept {bench.other_cores:.2f} of {os.cpu_count()} cores busy meanwhile)",
            "",
        ]
        if bench.key not in results:
            out += [f"**Failed**: {bench.error}", ""]
            continue
        out += bench.module.render(results[bench.key])
        out.append("")
    return "\n".join(out).rstrip() + "\n"


SAVED = ("command", "result", "error", "seconds", "other_cores")
"""What ``--save-results`` keeps of each run (the rest is in :data:`BENCHES`)."""


def save_results(path: Path, benches: dict[str, Bench], quick: bool, total: float) -> None:
    """Every run's outcome as JSON, for ``--from-results``."""
    runs = {key: {name: getattr(b, name) for name in SAVED} for key, b in benches.items()}
    path.write_text(json.dumps({"quick": quick, "totalSeconds": total, "runs": runs}, indent=1))


def load_results(paths: list[Path]) -> tuple[dict[str, Bench], bool, float, list[str]]:
    """The runs ``--save-results`` wrote, on the benchmarks of :data:`BENCHES`; with several
    files, a benchmark's run from a later file replaces an earlier one (a section run again).
    Also: what each file contributed, for the document's header."""
    known = {b.key: b for b in BENCHES}
    benches: dict[str, Bench] = {}
    quick, total, origins = False, 0.0, []
    for path in paths:
        saved = json.loads(path.read_text())
        quick = quick or saved["quick"]
        taken = []
        for key, outcome in saved["runs"].items():
            bench = known.get(key)
            if bench is None:  # a benchmark since removed (idle-heartbeat-doubled: issue 13)
                print(f"skipping saved run {key!r}: no such benchmark now", file=sys.stderr)
                continue
            for name in SAVED:
                setattr(bench, name, outcome[name])
            benches[key] = bench
            taken.append(key)
        total += saved["totalSeconds"]
        when = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("%H:%M UTC")
        origins.append(
            f"{', '.join(taken)} (run saved {when}, {saved['totalSeconds'] / 60:.1f} min)"
        )
    return benches, quick, total, origins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (harness smoke test)")
    parser.add_argument(
        "--only", default="", help="comma-separated keys: " + ", ".join(b.key for b in BENCHES)
    )
    parser.add_argument("--output", type=Path, default=DOC, help="document to (re)write")
    parser.add_argument("--no-write", action="store_true", help="print only, keep the document")
    parser.add_argument("--save-results", type=Path, help="also write every result to this file")
    parser.add_argument(
        "--from-results",
        type=Path,
        nargs="+",
        help="run nothing: render the results saved in these files (a later file's run of a "
        "benchmark replaces an earlier one's)",
    )
    args = parser.parse_args()
    only = {k for k in args.only.split(",") if k}
    unknown = only - {b.key for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    origins: list[str] = []
    if args.from_results:
        benches, quick, total, origins = load_results(args.from_results)
    else:
        quick, started, benches = args.quick, time.monotonic(), {}
        for bench in BENCHES:
            if only and bench.key not in only:
                continue
            run(bench, quick)
            benches[bench.key] = bench
        total = time.monotonic() - started
        if args.save_results:
            save_results(args.save_results, benches, quick, total)
    document = render(benches, quick, total, origins)
    print("\n" + "=" * 80)
    print(document)
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(document)
        print(f"wrote {args.output} ({total / 60:.1f} min)")
    failed = [b.key for b in benches.values() if b.error]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
