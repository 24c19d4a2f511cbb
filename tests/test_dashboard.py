"""The live cluster dashboard (docs/dashboard.md) on three real agents, in headless Chromium.

One cluster (a, b, c in a full mesh) and one dashboard page, opened from the URL that
``p2pkube dashboard --url`` prints on a, are shared by the module's tests, which run in order:
the page lists every node; its graph has one edge per link, each with a round trip; a new
Deployment's pods appear on the page (no reload) within 2 s of the agent listing them, with
the workload's elected scheduler and lease epoch as the agent holds them; a pod's log follows
live; events filter; a Service shows its endpoint and the requests sent to it; and last, a
killed node turns NotReady on the page. No request the page makes carries the token in its
URL, and the agent's log never shows it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import yaml

from p2pkube.devcluster import LocalCluster
from tests.browser import *  # noqa: F403  (the fixtures: bundle, browser, browser_context)
from tests.browser import EXAMPLES, LOAD_TIMEOUT
from tests.clusters import module_cluster, wait_all_ready

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

NAMES = ["a", "b", "c"]
REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


async def eventually(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, bundle: Path
) -> Iterator[LocalCluster]:
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    with module_cluster(tmp_path_factory.mktemp("dashboard") / "cluster", request) as cluster:
        cluster.start_signaling()
        cluster.extra_agent_args = ["--set", "kubelet.backoff_initial=0.2", "--memory", "1Gi"]
        for name in NAMES:
            cluster.start_agent(name)
        wait_all_ready(cluster, NAMES)
        yield cluster


class Dashboard:
    """The page, and every URL it requested."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.urls: list[str] = []
        self.console: list[str] = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    async def js(self, expression: str) -> Any:
        return await self.page.evaluate(expression)

    async def node_rows(self) -> dict[str, str]:
        return await self.js(  # type: ignore[no-any-return]
            """Object.fromEntries([...document.querySelectorAll('#dash-nodes tr[data-node]')]
               .map((r) => [r.dataset.node, r.querySelector('.status').textContent]))"""
        )

    async def pods(self) -> list[str]:
        return await self.js(  # type: ignore[no-any-return]
            "[...document.querySelectorAll('#dash-pods tr[data-pod]')].map((r) => r.dataset.pod)"
        )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dash(cluster: LocalCluster, browser_context: Any) -> AsyncIterator[Dashboard]:
    url = cluster.cli("a", "dashboard", "--url").stdout.strip()
    page = await browser_context.new_page()
    dashboard = Dashboard(page)
    try:
        await page.goto(url)
        await page.wait_for_function("window.p2pkubeDashboard", timeout=20_000)
        await dashboard.js("window.loadedOnce = true")  # gone if the page ever reloads
        yield dashboard
    finally:
        print("--- dashboard console ---", *dashboard.console[-50:], sep="\n")
        await page.close()


def token_of(cluster: LocalCluster, name: str) -> str:
    return (cluster.root / name / "api.token").read_text().strip()


async def test_dashboard_url_cli(cluster: LocalCluster) -> None:
    """``dashboard --url`` prints the page's URL on 127.0.0.1 with the token in the fragment
    (and without --url, off a terminal, prints the same and exits)."""
    url = cluster.cli("a", "dashboard", "--url").stdout.strip()
    info = json.loads((cluster.root / "a" / "api.json").read_text())
    assert url == f"{info['url']}/dashboard/#token={token_of(cluster, 'a')}"
    assert url.startswith("http://127.0.0.1:")
    assert cluster.cli("a", "dashboard").stdout.strip() == url
    # The page itself is public code; no data without the token.
    assert b'src="main.js"' in await asyncio.to_thread(fetch, url.split("#")[0])
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(fetch, info["url"] + "/v1/dashboard")
    assert refused.value.code == 401


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return bytes(answer.read())


async def test_lists_every_node(dash: Dashboard) -> None:
    rows = await eventually(
        lambda: _rows_if(dash, lambda r: sorted(r) == NAMES), 10, "every node on the page"
    )
    assert set(rows.values()) == {"Ready"}, rows
    kinds = await dash.js(
        "[...document.querySelectorAll('#dash-nodes tr[data-node]')]"
        ".map((r) => r.children[1].textContent)"
    )
    assert kinds == ["native"] * 3


async def _rows_if(dash: Dashboard, ok: Callable[[dict[str, str]], bool]) -> Any:
    rows = await dash.node_rows()
    return rows if ok(rows) else None


def links(cluster: LocalCluster) -> set[frozenset[str]]:
    """Every link of the mesh, from each agent's own mesh status (node ids)."""
    found = set()
    for name in cluster.agents:
        agent = cluster.agents[name]
        if agent.process is None or agent.process.poll() is not None:
            continue
        status = cluster.api(name, "GET", "/v1/status")
        for neighbour in status["mesh"]["neighbours"]:
            peer = neighbour if isinstance(neighbour, str) else neighbour.get("node")
            found.add(frozenset((status["nodeID"], peer)))
    return found


async def graph_edges(dash: Dashboard) -> list[dict[str, Any]]:
    return await dash.js(  # type: ignore[no-any-return]
        """window.p2pkubeDashboard.cy.edges().map((e) =>
             ({source: e.source().id(), target: e.target().id(), label: e.data('label')}))"""
    )


async def test_graph_has_one_edge_per_link(dash: Dashboard, cluster: LocalCluster) -> None:
    expected = await asyncio.to_thread(links, cluster)
    assert len(expected) == 3  # a full mesh of three

    async def edges_match() -> list[dict[str, Any]] | None:
        edges = await graph_edges(dash)
        pairs = [frozenset((e["source"], e["target"])) for e in edges]
        done = len(pairs) == len(set(pairs)) and set(pairs) == expected
        return edges if done and all(e["label"].endswith(" ms") for e in edges) else None

    edges = await eventually(edges_match, 15, "one edge per link, each with its RTT")
    nodes = await dash.js("window.p2pkubeDashboard.cy.nodes().map((n) => n.data('label'))")
    assert sorted(nodes) == NAMES
    # Hovering a node names its neighbours.
    await dash.js(
        "void window.p2pkubeDashboard.cy.nodes().filter((n) => n.data('label') === 'b')"
        ".emit('mouseover')"
    )
    hover = await dash.js("document.getElementById('dash-hover').textContent")
    assert "Neighbours: " in hover and "a (" in hover and "c (" in hover, (hover, edges)


def deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Deployment",
        "metadata": {"name": "ticks", "namespace": "default", "labels": {"app": "ticks"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "ticks"}},
            "template": {
                "metadata": {"labels": {"app": "ticks"}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "ticker.wasm",
                            "args": ["0.5"],
                            "resources": {"requests": {"cpu": "50m", "memory": "16Mi"}},
                        }
                    ]
                },
            },
        },
    }


def apply(cluster: LocalCluster, tmp_path: Path, *objects: dict[str, Any]) -> None:
    for module in ("ticker.wasm", "echo.wasm"):
        shutil.copy(EXAMPLES / module, tmp_path / module)
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    cluster.cli("b", "apply", "-f", str(path))


async def test_new_deployment_pods_appear_live(
    dash: Dashboard, cluster: LocalCluster, tmp_path: Path
) -> None:
    """Each pod is on the page within 2 s of agent a (the page's agent) listing it. (On a
    starved machine a suspicion may make two schedulers and surplus pods, which the lease's
    winner removes: a pod the agent listed only briefly need not reach the page.)"""
    first_listed: dict[str, float] = {}
    last_listed: dict[str, float] = {}
    shown: dict[str, float] = {}
    apply(cluster, tmp_path, deployment(3))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = time.monotonic()
        items = cluster.api("a", "GET", "/v1/objects/Pod?namespace=default")["items"]
        current = {pod["metadata"]["name"] for pod in items}
        for name in current:
            first_listed.setdefault(name, now)
            last_listed[name] = now
        on_page = set(await dash.pods())
        for name in on_page:
            shown.setdefault(name, time.monotonic())
        if len(current) == 3 and current <= on_page:
            break
        await asyncio.sleep(0.05)
    assert len(current) == 3 and current <= set(shown), (first_listed, shown)
    lags = {name: shown[name] - first_listed[name] for name in shown if name in first_listed}
    assert max(lags.values()) <= 2.0, lags
    never = {n: last_listed[n] - first_listed[n] for n in first_listed if n not in shown}
    assert all(listed_for < 2.0 for listed_for in never.values()), never
    assert await dash.js("window.loadedOnce === true"), "the page was reloaded"

    # The workload row: desired against ready, its scheduler and lease epoch as the agent has them.
    async def workload_row() -> tuple[list[str], dict[str, Any]] | None:
        cells = await dash.js(
            """[...(document.querySelector('tr[data-workload="Deployment/default/ticks"]')
                ?.children || [])].map((c) => c.textContent)"""
        )
        leases = {x["workload"]: x for x in cluster.api("a", "GET", "/v1/dashboard")["leases"]}
        lease = leases.get("Deployment/default/ticks")
        if not cells or cells[2] != "3/3" or lease is None:
            return None
        same = cells[3] == lease["holderName"] and cells[4] == str(lease["epoch"])
        return (cells, lease) if same else None

    cells, lease = await eventually(workload_row, 60, "deployment ticks 3/3 with its lease")
    assert cells[0] == "deployment/ticks" and lease["holderName"] in NAMES
    # Grouped by node: every pod sits under the node the agent says it runs on.
    for pod in cluster.api("a", "GET", "/v1/objects/Pod?namespace=default")["items"]:
        group = await dash.js(
            f"""document.querySelector('tr[data-pod="{pod["metadata"]["name"]}"]')
                 .closest('[data-pod-node]').dataset.podNode"""
        )
        assert group == pod["spec"]["nodeName"]


async def test_pod_log_follows_live(dash: Dashboard) -> None:
    name = (await dash.pods())[0]
    await dash.page.click(f'tr[data-pod="{name}"]')
    first = await eventually(
        lambda: dash.js("document.getElementById('dash-log').textContent"), 20, "log lines"
    )
    lines = len(first.splitlines())
    await eventually(
        lambda: _longer(dash, lines), 10, "new log lines while the page follows the log"
    )
    title = await dash.js("document.getElementById('dash-log-title').textContent")
    assert title == f"default/{name} (following)"


async def _longer(dash: Dashboard, lines: int) -> bool:
    text = await dash.js("document.getElementById('dash-log').textContent")
    return len(text.splitlines()) > lines


async def test_events_stream_filters(dash: Dashboard) -> None:
    await dash.page.fill("#dash-event-filter", "Scheduled")

    async def rows() -> list[str] | None:
        found = await dash.js(
            "[...document.querySelectorAll('#dash-events tbody tr')].map((r) => r.textContent)"
        )
        return found if found and all("Scheduled" in row for row in found) else None

    await eventually(rows, 10, "only Scheduled events")
    await dash.page.fill("#dash-event-filter", "no-such-event-text")
    await eventually(lambda: _no_rows(dash), 5, "an empty filtered list")
    await dash.page.fill("#dash-event-filter", "")


async def _no_rows(dash: Dashboard) -> bool:
    return await dash.js("document.querySelectorAll('#dash-events tbody tr').length === 0")  # type: ignore[no-any-return]


def echo_service() -> list[dict[str, Any]]:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo", "namespace": "default"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    pod = {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Pod",
        "metadata": {"name": "echo-1", "namespace": "default", "labels": {"app": "echo"}},
        "spec": {
            "nodeName": "c",
            "containers": [
                {
                    "name": "echo",
                    "image": "echo.wasm",
                    "ports": [{"containerPort": 8080, "name": "http"}],
                }
            ],
        },
    }
    return [service, pod]


async def test_service_endpoints_and_requests(
    dash: Dashboard, cluster: LocalCluster, tmp_path: Path
) -> None:
    apply(cluster, tmp_path, *echo_service())
    info = json.loads((cluster.root / "a" / "api.json").read_text())
    proxy = f"{info['url']}/api/v1/namespaces/default/services/echo/proxy/hi"
    headers = {"Authorization": f"Bearer {token_of(cluster, 'a')}"}

    def answered() -> bool:
        request = urllib.request.Request(proxy, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    for n in range(5):  # each counted by a's router, answered or not
        await eventually(lambda: asyncio.to_thread(answered), 60, f"echo answer {n + 1}")

    async def row() -> list[str] | None:
        cells = await dash.js(
            """[...(document.querySelector('tr[data-service="default/echo"]')?.children || [])]
               .map((c) => c.textContent)"""
        )
        return cells if cells and cells[4].startswith("1 ready") else None

    cells = await eventually(row, 15, "the echo Service with its endpoint")
    assert "echo-1@c" in cells[4]
    requests = await eventually(
        lambda: _requests(dash), 15, "the Service's request count on the page"
    )
    assert requests >= 5


async def _requests(dash: Dashboard) -> int:
    text = await dash.js(
        """document.querySelector('tr[data-service="default/echo"] td.rate')?.textContent || '0'"""
    )
    total = int(str(text).split()[0])
    return total if total >= 5 else 0


async def test_browser_node_has_the_cluster_tab(
    dash: Dashboard, cluster: LocalCluster, browser: Any
) -> None:
    """A tab that joins gets the same view, fed by its own node, as a tab beside its own; the
    agent's page shows it as a browser node."""
    context = await browser.new_context()  # its own IndexedDB: its own node
    tab = await context.new_page()
    console: list[str] = []
    tab.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    tab.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    try:
        await tab.goto(cluster.page_url())
        await asyncio.wait_for(tab.evaluate("window.p2pkubeReady"), LOAD_TIMEOUT)
        # Snapshots come every 0.5 s: the last one may be from before the node started.
        me = await eventually(
            lambda: tab.evaluate("window.p2pkubeSnapshot()?.node?.name"), 5, "the tab's name"
        )
        assert await tab.is_visible("#node-view") and not await tab.is_visible("#cluster-view")
        await tab.click("#tab-cluster")
        await eventually(lambda: tab.evaluate("!!window.p2pkubeCluster"), 10, "the Cluster tab")
        assert not await tab.is_visible("#node-view")

        async def nodes_in_tab() -> dict[str, str] | None:
            rows = await tab.evaluate(
                """Object.fromEntries([...document.querySelectorAll('#dash-nodes tr[data-node]')]
                   .map((r) => [r.dataset.node, r.querySelector('.status').textContent]))"""
            )
            return rows if sorted(rows) == sorted([*NAMES, me]) else None

        rows = await eventually(nodes_in_tab, 20, "every node in the tab's Cluster view")
        assert set(rows.values()) == {"Ready"}, rows
        pods = await tab.evaluate(
            "[...document.querySelectorAll('#dash-pods tr[data-pod]')].map((r) => r.dataset.pod)"
        )
        assert sorted(pods) == sorted(await dash.pods()), pods
        await eventually(
            lambda: tab.evaluate(
                """window.p2pkubeCluster.cy.edges().length >= 4
                   && window.p2pkubeCluster.cy.nodes().filter('.browser.self').length === 1"""
            ),
            20,
            "the tab's graph with the tab itself and its links",
        )
        # The agent's page shows the tab as a browser node.
        await eventually(
            lambda: dash.js(
                f"""document.querySelector('#dash-nodes tr[data-node="{me}"]')
                      ?.children[1].textContent === 'browser'"""
            ),
            10,
            "the tab as a browser node on the agent's page",
        )
    except BaseException:
        print("--- tab console ---", *console[-80:], sep="\n")
        raise
    finally:
        await context.close()
    # A closed tab says it leaves: NotReady on the agent's page at once, its links undrawn.
    await eventually(
        lambda: _rows_if(dash, lambda r: r.get(me, "").startswith("NotReady")),
        15,
        "the closed tab NotReady on the agent's page",
    )
    await eventually(lambda: _edge_count(dash, 3), 15, "only the links among a, b and c")


async def test_no_token_in_any_request_line_or_log(dash: Dashboard, cluster: LocalCluster) -> None:
    token = token_of(cluster, "a")
    assert dash.urls, "the page made no request?"
    assert any("/v1/watch/" in url for url in dash.urls)
    assert not [url for url in dash.urls if token in url]
    assert token not in cluster.log_path("a").read_text()


async def test_killed_node_turns_not_ready(dash: Dashboard, cluster: LocalCluster) -> None:
    cluster.kill("c")
    rows = await eventually(
        lambda: _rows_if(dash, lambda r: r.get("c", "").startswith("NotReady")),
        40,
        "c NotReady on the page",
    )
    assert rows["a"] == rows["b"] == "Ready", rows
    await eventually(
        lambda: dash.js(
            """window.p2pkubeDashboard.cy.nodes().filter((n) => n.data('label') === 'c')
               .hasClass('notready')"""
        ),
        15,
        "c drawn NotReady in the graph",
    )
    await eventually(lambda: _edge_count(dash, 1), 15, "only the a-b link left in the graph")
    assert await dash.js("window.loadedOnce === true"), "the page was reloaded"


async def _edge_count(dash: Dashboard, count: int) -> bool:
    return len(await graph_edges(dash)) == count
