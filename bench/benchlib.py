"""Helpers shared by the benchmark scripts (not a benchmark itself).

Every ``bench_*.py`` prints human-readable tables and, as its last stdout line, one JSON object
``{"bench": NAME, ...}`` holding the same figures; ``run_all.py`` collects those lines into
docs/benchmarks.md. Keeping that contract in one place lets each script also run alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from p2pkube.devcluster import LocalCluster

REPO = Path(__file__).resolve().parent.parent
"""The repository root: benchmarks run as ``python -m bench.<name>`` from here, and so do the
child processes they start (``cwd=REPO``)."""


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation, as numpy's default does."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds, rounded for tables."""
    ms = [s * 1000 for s in seconds]
    return {
        "p50": round(percentile(ms, 50), 2),
        "p95": round(percentile(ms, 95), 2),
        "p99": round(percentile(ms, 99), 2),
        "max": round(max(ms), 2) if ms else math.nan,
        "n": len(ms),
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table; numbers right-aligned. Readable on a terminal too."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        all(_is_number(row[i]) for row in rows) if rows else False for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "| "
        + " | ".join(
            ("-" * (w - 1) + ":") if num else "-" * w
            for w, num in zip(widths, numeric, strict=True)
        )
        + " |"
    )
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def yes(met: bool) -> str:
    """A target's verdict, as docs/benchmarks.md prints it."""
    return "**met**" if met else "**not met**"


def span(values: Sequence[float]) -> str:
    """``3`` or ``3-6``: a range of ratios, without repeating equal ends."""
    low, high = f"{min(values):.0f}", f"{max(values):.0f}"
    return low if low == high else f"{low}-{high}"


class Benchmark(Protocol):
    """What run_all.py needs of a benchmark module to write its part of docs/benchmarks.md.

    Each ``bench_*.py`` module is one (modules satisfy protocols): run_all.py runs the script
    as a child process, reads the result it printed last, and hands that result back to the
    module, which alone knows what its figures mean. run_all.py itself writes only what is
    common to every section: the heading (``TITLE``), the command, how long it took and how
    busy the machine was, or the failure.
    """

    __name__: str
    """The module's name, ``bench.bench_<what>``: run_all.py runs it with ``python -m``."""
    TITLE: str
    """The heading of the section."""

    def render(self, result: dict[str, Any]) -> list[str]:
        """The section's lines below its command: the setup, the tables, the targets, what
        limits the figures."""
        ...

    def summary_rows(self, result: dict[str, Any]) -> list[list[str]]:
        """Rows ``[what, measured, target, met]`` of the document's summary table."""
        ...


def emit(result: dict[str, Any]) -> None:
    """Print the result line run_all.py reads (must be the last line on stdout)."""
    print(json.dumps(result, separators=(",", ":")), flush=True)


def last_json_line(text: str) -> dict[str, Any]:
    """The ``{"bench": ...}`` object a benchmark printed last."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and '"bench"' in line:
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    raise ValueError("the benchmark printed no result line")


def read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """One line from a child's stdout within ``timeout`` s (TimeoutError otherwise)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    fd = process.stdout.fileno()
    buffer = b""
    while not buffer.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no line from pid {process.pid} within {timeout:.0f}s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise EOFError(f"pid {process.pid} closed its output ({buffer!r})")
            buffer += chunk
    return buffer


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """What the figures were measured on (benchmarks are only comparable on one machine)."""
    cpu = platform.processor() or "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            cpu = match.group(1).strip()
    except OSError:
        pass
    try:
        import psutil

        ram = psutil.virtual_memory().total
        tmp = os.path.realpath(tempfile.gettempdir())
        mounts = [p for p in psutil.disk_partitions(all=True) if tmp.startswith(p.mountpoint)]
        filesystem = max(mounts, key=lambda p: len(p.mountpoint)).fstype if mounts else "?"
    except ImportError:
        ram, filesystem = 0, "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "ramGiB": round(ram / 2**30, 1),
        "kernel": platform.release(),
        "tmpFilesystem": filesystem,
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "aiortc": _version("aiortc"),
        "aioice": _version("aioice"),
        "pycrdt": _version("pycrdt"),
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
    }


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used so far (every core, user + system).

    Benchmarks read it around a window and subtract what their own processes used: the rest is
    load from elsewhere (other test runs share this machine), reported next to the figures so a
    slow run on a busy machine is recognisable as such.
    """
    import psutil

    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


def uvloop_available() -> bool:
    """uvloop is optional (not a dependency): benchmarks add its rows only when it is there."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def launch(
    cluster: LocalCluster,
    names: list[str],
    settings: Sequence[str] = (),
    extra: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Start signaling and agents ``names``, and wait until each one's API answers.
    ``settings``: ``KEY=VALUE`` agent settings given to every agent (``--set``); ``extra``:
    more ``join`` arguments for some agents, by name."""
    cluster.start_signaling()
    flags = [word for setting in settings for word in ("--set", setting)]
    for name in names:
        cluster.start_agent(name, *flags, *(extra or {}).get(name, ()))
    for name in names:
        cluster.wait_api(name, timeout=90)


def start_cluster(
    cluster: LocalCluster,
    names: list[str],
    timeout: float = 120,
    extra: Mapping[str, Sequence[str]] | None = None,
) -> float:
    """Start signaling and agents ``names`` (``extra``: more ``join`` arguments for some, by
    name); return the seconds until every agent saw every node Ready. On timeout, print who
    sees what and each log's tail before raising."""
    from p2pkube.devcluster import wait_until

    started = time.monotonic()
    launch(cluster, names, extra=extra)

    def all_ready() -> bool:
        for name in names:
            view = cluster.nodes(name)
            if set(view) != set(names) or any(v != "True" for v in view.values()):
                return False
        return True

    try:
        wait_until(all_ready, timeout, interval=0.25, what="every node Ready on every agent")
    except TimeoutError:
        for name in names:
            with contextlib.suppress(Exception):
                print(f"{name} sees {cluster.nodes(name)}", file=sys.stderr)
            print(f"--- {name} log ---\n{cluster.log_tail(name, 20)}", file=sys.stderr)
        raise
    return time.monotonic() - started


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric counter under ``value`` (a ``/v1/status`` section) as dotted name ->
    number, so a benchmark can read counters whose layout changes between versions. A dict
    whose values are all numbers (counters by kind, like SWIM's ``sent``) also counts as its
    total under its own name (``sent`` and ``sent.Ping``...); lists (the node table) and
    booleans are skipped."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, int | float):
        return {prefix: float(value)}
    if not isinstance(value, dict):
        return {}
    counts = all(isinstance(v, int | float) and not isinstance(v, bool) for v in value.values())
    if prefix and value and counts:
        kinds = {f"{prefix}.{key}": float(v) for key, v in value.items()}
        return {prefix: sum(kinds.values()), **kinds}
    out: dict[str, float] = {}
    for key, item in value.items():
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def spread(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    """Median and max of a per-agent figure (the busiest agent matters as much as the
    typical one)."""
    return {
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }
