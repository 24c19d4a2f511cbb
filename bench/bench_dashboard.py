"""What watching an idle cluster costs its agents: Prometheus scraping and the dashboard.

A LocalCluster of three agents, every one serving metrics (``--metrics-address``, which costs
nothing until scraped), starts and settles; then each agent's CPU time is read with psutil
from outside, in ``--rounds`` rounds of three windows of ``--seconds`` s each:

1. *alone*: nobody watches (the baseline);
2. *scraped*: a Prometheus-like scraper reads every agent's ``/metrics`` every 5 s;
3. *scraped + dashboard*: the same, and agent ``a``'s dashboard is open in headless
   Chromium (its watch stream of every kind open, its poll of ``/v1/dashboard`` every
   ``dashboard.poll_interval``, which asks ``b`` and ``c`` for their link RTTs and Service
   counters through the ``dashboard.report`` rpc).

Why rounds: an idle agent's own cost drifts by tenths of a point between windows (a fresh
cluster keeps settling, the machine's speed varies), as much as what is measured; the windows
are interleaved and each figure is the median of its rounds, and the spread of the *alone*
windows is reported beside it. The figures are % of one core. Issue 16: metrics and the
dashboard must not push an idle agent over 1 % of a core.

Run: ``.venv/bin/python -m bench.bench_dashboard [--rounds 3] [--seconds 20] [--settle 10]``.
Prints a table, then the result as JSON on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_idle import Scraper, metrics_url, sample
from bench.benchlib import emit, markdown_table, yes
from harness.chromium import CHROMIUM, CHROMIUM_ARGS
from p2pkube.devcluster import LocalCluster, wait_until

TITLE = "Idle cost of watching the cluster: Prometheus scrapes and the dashboard"
NAMES = ["a", "b", "c"]
SCRAPE_INTERVAL = 5.0
TARGET_PERCENT = 1.0
"""Issue 16: an idle agent stays under 1 % of a core with a scraper and the dashboard."""
WINDOWS = ("alone", "scraped", "dashboard")


async def cpu_percent(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Each process's CPU (user + system) over the next ``seconds``, in % of one core."""
    before = sample(pids)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    after = sample(pids)
    elapsed = time.monotonic() - started
    return {name: round(100 * (after[name][1] - before[name][1]) / elapsed, 3) for name in pids}


async def measure(cluster: LocalCluster, pids: dict[str, int], args: Any) -> dict[str, Any]:
    """``args.rounds`` rounds of the three windows; every window's figures, per round."""
    from playwright.async_api import async_playwright

    url = cluster.cli("a", "dashboard", "--url").stdout.strip()
    metrics = [metrics_url(cluster, name) for name in NAMES]
    windows: dict[str, list[dict[str, float]]] = {window: [] for window in WINDOWS}
    scrapes = scraped_bytes = 0
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for _ in range(args.rounds):
                windows["alone"].append(await cpu_percent(pids, args.seconds))
                with Scraper(metrics, SCRAPE_INTERVAL) as scraper:
                    windows["scraped"].append(await cpu_percent(pids, args.seconds))
                    page = await chromium.new_page()
                    await page.goto(url)
                    await asyncio.sleep(args.page_settle)
                    rows = await page.evaluate(
                        "document.querySelectorAll('#dash-nodes tr[data-node]').length"
                    )
                    if rows != len(NAMES):
                        raise RuntimeError(f"the page lists {rows} nodes, not {len(NAMES)}")
                    windows["dashboard"].append(await cpu_percent(pids, args.seconds))
                    await page.close()
                if scraper.errors:
                    raise RuntimeError(f"scrapes failed: {scraper.errors[:3]}")
                scrapes += scraper.scrapes
                scraped_bytes += scraper.bytes
                await asyncio.sleep(args.page_settle)  # the closed page's streams wind down
        finally:
            await chromium.close()
    return {"windows": windows, "scrapes": scrapes, "scrapedBytes": scraped_bytes}


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        cluster.extra_agent_args = ["--metrics-address", "127.0.0.1:0"]
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
            measured = asyncio.run(measure(cluster, pids, args))
        finally:
            cluster.close()
    return {
        "bench": "dashboard",
        "rounds": args.rounds,
        "seconds": args.seconds,
        "scrapeInterval": SCRAPE_INTERVAL,
        **measured,
    }


def median(result: dict[str, Any], window: str, name: str) -> float:
    """An agent's median over the rounds of one window."""
    return statistics.median(r[name] for r in result["windows"][window])


def spread(result: dict[str, Any], name: str) -> float:
    """How far an agent's windows alone lay apart: its own drift, the noise floor."""
    alone = [r[name] for r in result["windows"]["alone"]]
    return max(alone) - min(alone)


def added(result: dict[str, Any], window: str) -> float:
    """What a window adds to the agents' cost, median over the agents."""
    return statistics.median(
        median(result, window, n) - median(result, "alone", n) for n in NAMES
    )


def render(result: dict[str, Any]) -> list[str]:
    rows = []
    for name in NAMES:
        alone = median(result, "alone", name)
        scraped = median(result, "scraped", name)
        dashboard = median(result, "dashboard", name)
        rows.append(
            [
                name,
                f"{alone:.2f} (spread {spread(result, name):.2f})",
                f"{scraped:.2f} ({scraped - alone:+.2f})",
                f"{dashboard:.2f} ({dashboard - alone:+.2f})",
            ]
        )
    noise = statistics.median(spread(result, n) for n in NAMES)
    scraped, dashboard = added(result, "scraped"), added(result, "dashboard")
    within = max(abs(scraped), abs(dashboard)) <= noise
    scrapes = max(1, result["scrapes"])
    return [
        f"Three idle agents, each serving metrics; CPU of each agent (% of one core) read from "
        f"outside with psutil, {result['rounds']} rounds of three {result['seconds']:g} s "
        "windows, interleaved: nobody watching; a scraper reading every agent's `/metrics` "
        f"every {result['scrapeInterval']:g} s ({result['scrapedBytes'] / scrapes / 1024:.1f} "
        "KiB a scrape); the same with agent a's dashboard open in headless Chromium (one watch "
        "stream of every kind, a poll of `/v1/dashboard` every 3 s that asks b and c for their "
        "link RTTs through the `dashboard.report` rpc). Each figure is the median of its "
        "rounds; *spread*: how far the agent's own windows alone lay apart; in brackets, the "
        "difference to alone.",
        "",
        markdown_table(["agent", "alone", "scraped every 5 s", "scraped + dashboard open"], rows),
        "",
        f"**What limits it**: the idle agent itself. Scraping adds {scraped:+.2f} points and "
        f"scraping with the dashboard open {dashboard:+.2f} (medians over the agents), "
        + (
            f"within the {noise:.2f} points an idle agent's own windows lie apart. "
            if within
            else f"beyond the {noise:.2f} points an idle agent's own windows lie apart. "
        )
        + "The idle agent is above 1 % of a core before either (see *Idle CPU and memory per "
        "agent*: SWIM's probes every 0.15 s through aiortc's pure-Python DTLS and SCTP), so "
        "the bound on the total is not met.",
    ]


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    noise = statistics.median(spread(result, n) for n in NAMES)
    total = max(median(result, "dashboard", n) for n in NAMES)
    return [
        [
            "idle agent CPU added by a scraper every 5 s, median",
            f"{added(result, 'scraped'):+.2f} points (alone spreads {noise:.2f})",
            "small against 1%",
            yes(added(result, "scraped") < TARGET_PERCENT / 4),
        ],
        [
            "idle agent CPU added by a scraper and the dashboard, median",
            f"{added(result, 'dashboard'):+.2f} points (alone spreads {noise:.2f})",
            "small against 1%",
            yes(added(result, "dashboard") < TARGET_PERCENT / 4),
        ],
        [
            "idle agent CPU with a scraper and the dashboard open, busiest",
            f"{total:.2f}% of a core",
            f"< {TARGET_PERCENT:g}%",
            yes(total < TARGET_PERCENT),
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=10.0, help="after the mesh is whole")
    parser.add_argument("--page-settle", type=float, default=5.0, help="after a page opens")
    args = parser.parse_args()
    result = run_benchmark(args)
    print("\n".join(render(result)))
    emit(result)


if __name__ == "__main__":
    main()
