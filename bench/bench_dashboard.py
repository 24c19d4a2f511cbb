"""Idle cost of the dashboard: an idle agent's CPU with its dashboard page closed, then open.

A LocalCluster of three agents starts and settles; then agent ``a``'s CPU time (and ``b``'s
and ``c``'s, which answer ``a``'s ``dashboard.report`` rpcs) is read with psutil from outside
over ``--seconds`` s without any page, then over the same time with ``a``'s dashboard open
in headless Chromium (its watch stream open, its poll of ``/v1/dashboard`` every
``dashboard.poll_interval``), after ``--settle`` s for the page to load. The figures are % of
one core; issue 16 bounds what the dashboard adds to an idle agent at 1 %.

Run: ``.venv/bin/python -m bench.bench_dashboard [--seconds 60] [--settle 15]``. Prints a
table, then the result as JSON on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_idle import sample
from harness.chromium import CHROMIUM, CHROMIUM_ARGS
from p2pkube.devcluster import LocalCluster, wait_until

NAMES = ["a", "b", "c"]


def cpu_percent(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Each process's CPU (user + system) over the next ``seconds``, in % of one core."""
    before = sample(pids)
    started = time.monotonic()
    time.sleep(seconds)
    after = sample(pids)
    elapsed = time.monotonic() - started
    return {name: round(100 * (after[name][1] - before[name][1]) / elapsed, 3) for name in pids}


async def measure_open(cluster: LocalCluster, pids: dict[str, int], args: Any) -> Any:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await chromium.new_page()
            await page.goto(cluster.cli("a", "dashboard", "--url").stdout.strip())
            await asyncio.sleep(args.settle)
            rows = await page.evaluate(
                "document.querySelectorAll('#dash-nodes tr[data-node]').length"
            )
            if rows != len(NAMES):
                raise RuntimeError(f"the page lists {rows} nodes, not {len(NAMES)}")
            return await asyncio.to_thread(cpu_percent, pids, args.seconds)
        finally:
            await chromium.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        try:
            cluster.start_signaling()
            for name in NAMES:
                cluster.start_agent(name)
            for name in NAMES:
                cluster.wait_api(name)
            wait_until(
                lambda: all(
                    len(cluster.api(n, "GET", "/v1/status")["mesh"]["neighbours"]) == 2
                    for n in NAMES
                ),
                30,
                what="a full mesh",
            )
            pids = {}
            for name in NAMES:
                process = cluster.agents[name].process
                assert process is not None
                pids[name] = process.pid
            time.sleep(args.settle)
            closed = cpu_percent(pids, args.seconds)
            opened = asyncio.run(measure_open(cluster, pids, args))
        finally:
            cluster.close()
    print(f"agent CPU, % of one core, over {args.seconds:g} s idle")
    print(f"{'agent':<8}{'page closed':>14}{'page open':>12}{'added':>10}")
    for name in NAMES:
        added = opened[name] - closed[name]
        print(f"{name:<8}{closed[name]:>14.2f}{opened[name]:>12.2f}{added:>+10.2f}")
    print(json.dumps({"seconds": args.seconds, "closed": closed, "open": opened}))


if __name__ == "__main__":
    main()
