"""`make screenshots`: the pictures of docs/dashboard.md, taken from a running cluster.

Starts a local cluster on loopback (``p2pkube signal`` and three ``p2pkube join`` agents, data
in a temporary directory), one browser tab that joins it as a fourth node (so the graph shows
both kinds), a Deployment of examples/build/ticker.wasm and an echo Service with two handler
pods that a few requests go through; then opens the dashboard of agent ``a`` (the URL
``p2pkube dashboard --url`` prints) in headless Chromium, waits until everything is on the
page, hovers a node, opens a pod's log, and saves:

* ``docs/images/dashboard.png``: the whole page;
* ``docs/images/dashboard-mesh.png``: the mesh graph with a node hovered;
* ``docs/images/dashboard-tab.png``: the browser node's page with its Cluster tab open (left
  out with ``--no-browser-node``).

Everything it starts is stopped at the end. Needs the browser bundle (``make browser``), the
example modules (``make examples``) and Chromium with playwright (as the browser tests do).

Run: ``.venv/bin/python examples/screenshots.py [--out docs/images] [--no-browser-node]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from p2pkube.devcluster import LocalCluster, wait_until  # noqa: E402

BUILD = REPO / "examples" / "build"
NAMES = ["a", "b", "c"]
VIEWPORT = {"width": 1500, "height": 1250}


def manifests(tmp: Path) -> Path:
    """The Deployment and the Service, next to copies of their modules."""
    for module in ("ticker.wasm", "echo.wasm"):
        (tmp / module).write_bytes((BUILD / module).read_bytes())
    ticks = {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Deployment",
        "metadata": {"name": "ticks", "labels": {"app": "ticks"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "ticks"}},
            "template": {
                "metadata": {"labels": {"app": "ticks"}},
                "spec": {
                    "nodeSelector": {"p2pkube.io/kind": "native"},
                    "containers": [{"name": "main", "image": "ticker.wasm", "args": ["1"]}],
                },
            },
        },
    }
    echo = {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Deployment",
        "metadata": {"name": "echo", "labels": {"app": "echo"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "echo"}},
            "template": {
                "metadata": {"labels": {"app": "echo"}},
                "spec": {
                    "nodeSelector": {"p2pkube.io/kind": "native"},
                    "containers": [
                        {
                            "name": "echo",
                            "image": "echo.wasm",
                            "ports": [{"containerPort": 8080, "name": "http"}],
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    path = tmp / "app.yaml"
    path.write_text("---\n".join(json.dumps(o) + "\n" for o in (ticks, echo, service)))
    return path


def request_echo(cluster: LocalCluster, count: int) -> int:
    """Send ``count`` GETs to the echo Service through agent a's local API; how many got 200."""
    info = json.loads((cluster.root / "a" / "api.json").read_text())
    token = (cluster.root / "a" / "api.token").read_text().strip()
    url = f"{info['url']}/api/v1/namespaces/default/services/echo/proxy/hello"
    ok = 0
    for _ in range(count):
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                ok += answer.status == 200
        except OSError:
            pass
    return ok


async def until(page: Any, expression: str, seconds: float) -> None:
    """Wait until ``expression`` is true on ``page`` (polled with evaluate: the dashboard's
    Content-Security-Policy refuses the string evaluation of ``wait_for_function``)."""
    deadline = time.monotonic() + seconds
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {seconds}s: {expression}")
        await asyncio.sleep(0.5)


async def shoot(cluster: LocalCluster, out: Path, browser_node: bool) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            if browser_node:
                tab_context = await chromium.new_context(viewport=VIEWPORT)
                tab = await tab_context.new_page()
                await tab.goto(cluster.page_url())
                await tab.wait_for_function("window.p2pkubeReady", timeout=120_000)
                await tab.evaluate("window.p2pkubeReady")
                print("browser tab joined", flush=True)
            context = await chromium.new_context(viewport=VIEWPORT, device_scale_factor=1)
            page = await context.new_page()
            url = cluster.cli("a", "dashboard", "--url").stdout.strip()
            await page.goto(url)
            await until(page, "!!window.p2pkubeDashboard", 20)
            nodes = len(NAMES) + (1 if browser_node else 0)
            await until(
                page,
                f"""document.querySelectorAll('#dash-nodes tr[data-node]').length === {nodes}
                    && window.p2pkubeDashboard.cy.edges().length > 0
                    && window.p2pkubeDashboard.cy.edges().every((e) => e.data('label'))
                    && document.querySelector('tr[data-workload="Deployment/default/ticks"] .ready')
                         ?.textContent === '3/3'
                    && document.querySelector('tr[data-service="default/echo"] td.rate')
                         ?.textContent.includes('/s')""",
                90,
            )
            first = await page.evaluate(
                "document.querySelector('#dash-pods tr[data-pod^=\"ticks\"]').dataset.pod"
            )
            await page.click(f'tr[data-pod="{first}"]')
            await until(
                page, "document.getElementById('dash-log').textContent.split('\\n').length > 3", 20
            )
            await page.evaluate(
                """void window.p2pkubeDashboard.cy.nodes()
                   .filter((n) => n.data('label') === 'b').emit('mouseover')"""
            )
            await page.wait_for_timeout(300)
            await page.screenshot(path=str(out / "dashboard.png"), full_page=True)
            mesh = page.locator("#dash-mesh-section")
            await mesh.screenshot(path=str(out / "dashboard-mesh.png"))
            saved = [out / "dashboard.png", out / "dashboard-mesh.png"]
            if browser_node:
                await tab.click("#tab-cluster")
                await until(
                    tab,
                    f"""!!window.p2pkubeCluster && document.querySelectorAll(
                          '#cluster-view #dash-nodes tr[data-node]').length === {nodes}
                        && window.p2pkubeCluster.cy.edges().every((e) => e.data('label'))""",
                    60,
                )
                await tab.wait_for_timeout(300)
                await tab.screenshot(path=str(out / "dashboard-tab.png"))
                saved.append(out / "dashboard-tab.png")
            print("saved", *saved, flush=True)
        finally:
            await chromium.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument(
        "--no-browser-node", action="store_true", help="no browser tab joins (faster)"
    )
    args = parser.parse_args(argv)
    for needed in (BUILD / "ticker.wasm", BUILD / "echo.wasm", Path(CHROMIUM)):
        if not needed.is_file():
            print(f"missing {needed}: run make examples browser (and install chromium)")
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="p2pkube-screenshots-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        try:
            cluster.start_signaling()
            for name in NAMES:
                cluster.start_agent(name)
            for name in NAMES:
                cluster.wait_api(name)
            cluster.cli("b", "apply", "-f", str(manifests(Path(tmp))))
            wait_until(lambda: request_echo(cluster, 1) == 1, 90, what="the echo Service")
            started = time.monotonic()
            sent = request_echo(cluster, 20)
            print(f"{sent} requests through echo in {time.monotonic() - started:.1f}s", flush=True)

            async def run() -> Any:
                loader = asyncio.create_task(shoot(cluster, args.out, not args.no_browser_node))
                while not loader.done():  # a trickle of requests: the page shows a rate
                    await asyncio.to_thread(request_echo, cluster, 2)
                    await asyncio.sleep(0.5)
                return await loader

            asyncio.run(run())
        finally:
            cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
