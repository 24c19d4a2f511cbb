"""A browser tab as a node: the real agent in Pyodide in headless Chromium, with real native
agents (separate processes) and the real signaling server serving the real bundle.

What a user checks with ``p2pkube`` on a native node: the tab listed Ready with kind and label
``browser``, a pod selected onto it Running there with its logs and exit code, a runaway pod
stopped at its deadline while the tab stays Ready, the tab's pods replaced when it is closed,
and the same node (identity and state) after a reload.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import yaml

from p2pkube.devcluster import LocalCluster
from p2pkube.model.timestamps import parse_time
from p2pkube.net.linkbase import LinkState
from tests.browser import *  # noqa: F403  (the fixtures: bundle, browser)
from tests.browser import EXAMPLES, LOAD_TIMEOUT, print_when_failed
from tests.test_kubelet import WATCH_VALUE

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(240)]

T = TypeVar("T")
NATIVES = ("n1", "n2")


async def eventually(check: Callable[[], T | None], within: float, what: str) -> T:
    """Poll a blocking ``check`` off the loop (playwright shares it) until it is truthy."""
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while True:
        try:
            value = await asyncio.to_thread(check)
            if value:
                return value
            last = value
        except Exception as exc:  # the agent may not be up yet
            last = exc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what} ({last!r})")
        await asyncio.sleep(0.25)


def get_json(cluster: LocalCluster, node: str, *args: str) -> Any:
    return json.loads(cluster.cli(node, "get", *args, "-o", "json").stdout)


def node_row(cluster: LocalCluster, viewer: str, name: str) -> dict[str, Any] | None:
    for item in get_json(cluster, viewer, "nodes")["items"]:
        if item["metadata"]["name"] == name:
            return item  # type: ignore[no-any-return]
    return None


def ready(node: dict[str, Any] | None) -> bool:
    if node is None:
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])


def apply(cluster: LocalCluster, tmp_path: Path, manifest: str) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(textwrap.dedent(manifest).replace("BUILD", str(EXAMPLES)))
    cluster.cli("n1", "apply", "-f", str(path))


def pod(cluster: LocalCluster, viewer: str, name: str) -> dict[str, Any]:
    return get_json(cluster, viewer, "pod", name)  # type: ignore[no-any-return]


async def in_phase(
    cluster: LocalCluster, viewer: str, name: str, phase: str, within: float
) -> dict[str, Any]:
    """Pod ``name`` as ``viewer`` shows it, once it is in ``phase`` (waiting up to ``within`` s)."""
    return await eventually(
        lambda: (p := pod(cluster, viewer, name))["status"].get("phase") == phase and p,
        within,
        f"{name} to be {phase} on {viewer}",
    )


def terminated(obj: dict[str, Any]) -> dict[str, Any] | None:
    statuses = obj.get("status", {}).get("containerStatuses") or [{}]
    return (statuses[0].get("state") or {}).get("terminated")


@pytest.fixture
def natives(cluster: LocalCluster, bundle: Path) -> LocalCluster:
    """Two native agents and the signaling server (which serves the bundle)."""
    cluster.start_signaling()
    for name in NATIVES:
        cluster.start_agent(name)
    for name in NATIVES:
        cluster.wait_api(name)
    return cluster


class Tab:
    """One node page in its own browser context (its own IndexedDB: its own node)."""

    def __init__(self, context: Any, page: Any) -> None:
        self.context = context
        self.page = page
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    async def open(self, cluster: LocalCluster) -> dict[str, Any]:
        """Load the page with the cluster's token; its snapshot once the node started."""
        url = cluster.url.replace("ws://", "http://") + f"/#token={cluster.token}"
        await self.page.goto(url)
        return await self.started()

    async def started(self) -> dict[str, Any]:
        await asyncio.wait_for(self.page.evaluate("window.p2pkubeReady"), LOAD_TIMEOUT)
        return await self.snapshot()

    async def snapshot(self) -> dict[str, Any]:
        return await self.page.evaluate(  # type: ignore[no-any-return]
            "JSON.parse(window.p2pkube.pyodide.pyimport('p2pkube.browser.main').snapshot())"
        )

    async def name(self) -> str:
        return str((await self.snapshot())["node"]["name"])

    async def join(self, cluster: LocalCluster) -> dict[str, Any]:
        """Open the page and wait until n1 lists the tab's node Ready; the node's identity."""
        node: dict[str, Any] = (await self.open(cluster))["node"]
        name = node["name"]
        await eventually(lambda: ready(node_row(cluster, "n1", name)), 30, f"{name} Ready")
        return node


@pytest_asyncio.fixture(loop_scope="session")
async def tab(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Tab]:
    context = await browser.new_context()
    opened = Tab(context, await context.new_page())
    mark = browser.stderr_log.mark()
    try:
        yield opened
    finally:
        print_when_failed(request, opened.console, browser.stderr_log, mark)
        await context.close()


async def test_tab_joins_runs_a_selected_pod_and_its_logs_reach_native_nodes(
    natives: LocalCluster, tab: Tab, tmp_path: Path
) -> None:
    await tab.open(natives)
    name = await tab.name()
    for viewer in NATIVES:
        row = await eventually(
            lambda viewer=viewer: (
                ready(node_row(natives, viewer, name)) and node_row(natives, viewer, name)
            ),
            30,
            f"{viewer} to list {name} Ready",
        )
        assert row["metadata"]["labels"]["p2pkube.io/kind"] == "browser"
        assert row["status"]["nodeInfo"]["kind"] == "browser"
        assert row["status"]["allowedHostPaths"] == []  # a tab has no host paths to grant
    table = natives.cli("n2", "get", "nodes").stdout
    assert any(line.split()[:3] == [name, "browser", "Ready"] for line in table.splitlines())

    apply(
        natives,
        tmp_path,
        """
        apiVersion: p2pkube.io/v1
        kind: Pod
        metadata: {name: hello-tab}
        spec:
          nodeSelector: {p2pkube.io/kind: browser}
          restartPolicy: Never
          containers:
            - name: hello
              image: BUILD/hello.wasm
              args: ["from", "a browser tab"]
              env: [{name: GREETING, value: hi}]
        ---
        apiVersion: p2pkube.io/v1
        kind: Pod
        metadata: {name: crash-tab}
        spec:
          nodeSelector: {p2pkube.io/kind: browser}
          restartPolicy: Never
          containers:
            - {name: crash, image: BUILD/crash.wasm}
        """,
    )
    hello = await in_phase(natives, "n2", "hello-tab", "Succeeded", 60)
    assert hello["spec"]["nodeName"] == name
    assert terminated(hello)["exitCode"] == 0  # type: ignore[index]
    assert terminated(hello)["reason"] == "Completed"  # type: ignore[index]
    logs = natives.cli("n2", "logs", "hello-tab").stdout
    assert "argv[2] = a browser tab" in logs and "GREETING=hi" in logs

    crash = await in_phase(natives, "n1", "crash-tab", "Failed", 60)
    assert crash["spec"]["nodeName"] == name
    assert terminated(crash)["exitCode"] == 3  # type: ignore[index]
    assert terminated(crash)["reason"] == "Error"  # type: ignore[index]
    logs = natives.cli("n1", "logs", "crash-tab").stdout
    assert "about to fail" in logs and "fatal: simulated failure" in logs

    # A Secret (sealed in the replicated state) opened by the tab for its pod: an env value
    # through secretKeyRef, and a secret volume's files.
    apply(
        natives,
        tmp_path,
        """
        apiVersion: v1
        kind: Secret
        metadata: {name: tab-secret}
        stringData: {input.txt: "hello from a Secret", token: s3cr3t-for-the-tab}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: secret-tab}
        spec:
          nodeSelector: {p2pkube.io/kind: browser}
          restartPolicy: Never
          containers:
            - name: hello
              image: BUILD/hello.wasm
              env: [{name: TOKEN, valueFrom: {secretKeyRef: {name: tab-secret, key: token}}}]
            - name: files
              image: BUILD/files.wasm
              args: ["/app"]
              volumeMounts: [{name: secret, mountPath: /app}]
          volumes: [{name: secret, secret: {secretName: tab-secret}}]
        """,
    )
    opened = await in_phase(natives, "n2", "secret-tab", "Succeeded", 60)
    assert opened["spec"]["nodeName"] == name
    assert (
        "TOKEN=s3cr3t-for-the-tab" in natives.cli("n2", "logs", "secret-tab", "-c", "hello").stdout
    )
    files = natives.cli("n1", "logs", "secret-tab", "-c", "files").stdout
    assert "read /app/input.txt: hello from a Secret" in files, files

    # A ConfigMap change reaches the files of a pod running in the tab, while it runs.
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "live"}}
    watched = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "live-tab"},
        "spec": {
            "nodeSelector": {"p2pkube.io/kind": "browser"},
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "python",
                    "image": str(EXAMPLES / "micropython.wasm"),
                    "args": ["/cfg/watch.py"],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}],
                }
            ],
            "volumes": [{"name": "cfg", "configMap": {"name": "live"}}],
        },
    }
    script = WATCH_VALUE  # test_kubelet's: prints each new value of /cfg/value until "two"
    manifest = tmp_path / "live.yaml"
    manifest.write_text(
        yaml.safe_dump_all([{**config, "data": {"watch.py": script, "value": "one"}}, watched])
    )
    natives.cli("n1", "apply", "-f", str(manifest))
    await eventually(
        lambda: natives.cli("n2", "logs", "live-tab").stdout == "value one\n",
        60,
        "live-tab to read value one",
    )
    manifest.write_text(yaml.safe_dump({**config, "data": {"watch.py": script, "value": "two"}}))
    natives.cli("n2", "apply", "-f", str(manifest))
    live = await in_phase(natives, "n1", "live-tab", "Succeeded", 30)
    assert live["spec"]["nodeName"] == name
    assert terminated(live)["reason"] == "Completed"  # type: ignore[index]
    assert natives.cli("n1", "logs", "live-tab").stdout == "value one\nvalue two\n"

    # The same hostPath rule as natively: bound to the tab, which grants none, it fails there.
    apply(
        natives,
        tmp_path,
        """
        apiVersion: p2pkube.io/v1
        kind: Pod
        metadata: {name: host-tab}
        spec:
          nodeName: TAB
          restartPolicy: Never
          containers:
            - name: files
              image: BUILD/files.wasm
              volumeMounts: [{name: host, mountPath: /data}]
          volumes: [{name: host, hostPath: {path: /}}]
        """.replace("TAB", name),
    )
    refused = await in_phase(natives, "n2", "host-tab", "Failed", 60)
    assert refused["status"]["reason"] == "HostPathNotAllowed"
    assert f"node {name} allows none" in refused["status"]["message"]

    # The page shows it: its peers, its pods and their log lines.
    await tab.page.wait_for_function(
        "document.body.innerText.includes('argv[2] = a browser tab')", timeout=10_000
    )
    text = await tab.page.inner_text("body")
    for expected in ("n1", "n2", "hello-tab", "crash-tab", "about to fail", "Scheduled"):
        assert expected in text
    # A tab is no API server: the page says which native nodes kubectl can go through.
    hint = await tab.page.inner_text("#kubectl-hint")
    assert "one of n1, n2" in hint and "kubectl --kubeconfig <(p2pkube kubeconfig)" in hint


async def test_endless_loop_is_stopped_at_its_deadline_and_the_tab_stays_healthy(
    natives: LocalCluster, tab: Tab, tmp_path: Path
) -> None:
    name = (await tab.join(natives))["name"]
    apply(
        natives,
        tmp_path,
        """
        apiVersion: p2pkube.io/v1
        kind: Pod
        metadata: {name: loop-tab}
        spec:
          nodeSelector: {p2pkube.io/kind: browser}
          restartPolicy: Never
          activeDeadlineSeconds: 8
          containers:
            - {name: loop, image: BUILD/loop.wasm}
        """,
    )
    await in_phase(natives, "n1", "loop-tab", "Running", 60)
    # While it spins, the tab's agent keeps beating and running other pods.
    apply(
        natives,
        tmp_path,
        """
        apiVersion: p2pkube.io/v1
        kind: Pod
        metadata: {name: hello-beside}
        spec:
          nodeSelector: {p2pkube.io/kind: browser}
          restartPolicy: Never
          containers:
            - {name: hello, image: BUILD/hello.wasm}
        """,
    )
    await in_phase(natives, "n2", "hello-beside", "Succeeded", 30)
    assert ready(node_row(natives, "n2", name))
    loop = await in_phase(natives, "n2", "loop-tab", "Failed", 30)
    assert terminated(loop)["reason"] == "DeadlineExceeded"  # type: ignore[index]
    assert terminated(loop)["exitCode"] == 137  # type: ignore[index]
    # The pod beside ran while the loop spun: it finished before the loop was stopped. (Read
    # from the pods' own times, not from a phase polled after the fact, which raced the
    # deadline on a loaded machine.)
    beside_ended = parse_time(
        (terminated(pod(natives, "n2", "hello-beside")) or {}).get("finishedAt")
    )
    loop_ended = parse_time(terminated(loop)["finishedAt"])  # type: ignore[index]
    assert beside_ended is not None and loop_ended is not None
    assert beside_ended <= loop_ended, (beside_ended, loop_ended)
    for viewer in NATIVES:
        row = node_row(natives, viewer, name)
        assert ready(row), f"{viewer} lost the tab while its pod looped: {row}"
        liveness = natives.api(viewer, "GET", "/v1/status")["membership"]["nodes"]
        tab_liveness = next(n for n in liveness if n["name"] == name)
        assert tab_liveness["transitions"] == 0, tab_liveness
    # The Worker is gone. The page's view is rebuilt every browser.snapshot_interval (0.5 s;
    # later on a loaded machine), so the first view built after the pod failed shows it: one
    # read right after Failed reached n2 could predate the instance's end (it failed 2 full
    # runs so).
    clock = asyncio.get_running_loop()
    deadline = clock.time() + 5
    while (snapshot := await tab.snapshot())["stats"]["runtime"]["running"]:
        if clock.time() > deadline:
            break
        await asyncio.sleep(0.25)
    assert snapshot["status"] == "running"
    assert snapshot["stats"]["runtime"]["running"] == 0, snapshot["stats"]["runtime"]


@pytest.mark.serial  # times NotReady and the pods' move
async def test_closing_the_tab_makes_it_notready_and_its_pods_move_to_native_nodes(
    natives: LocalCluster, tab: Tab, tmp_path: Path
) -> None:
    name = (await tab.join(natives))["name"]
    apply(
        natives,
        tmp_path,
        """
        apiVersion: p2pkube.io/v1
        kind: Deployment
        metadata: {name: tickers}
        spec:
          replicas: 3
          selector: {matchLabels: {app: tickers}}
          template:
            metadata: {labels: {app: tickers}}
            spec:
              containers:
                - {name: ticker, image: BUILD/ticker.wasm}
        """,
    )

    def running_on() -> list[str] | None:
        pods = get_json(natives, "n1", "pods", "-l", "app=tickers")["items"]
        nodes = [p["spec"].get("nodeName") for p in pods if p["status"].get("phase") == "Running"]
        return sorted(nodes) if len(nodes) == 3 else None

    placed = await eventually(running_on, 60, "three tickers running")
    assert name in placed, f"no replica landed on the tab: {placed}"

    await tab.context.close()  # the user closes the tab
    await eventually(
        lambda: not any(ready(node_row(natives, viewer, name)) for viewer in NATIVES),
        15,
        f"{name} NotReady on both native nodes",
    )
    moved = await eventually(
        lambda: (nodes := running_on()) and name not in nodes and nodes,
        60,
        "the tab's ticker replaced on a native node",
    )
    assert set(moved) <= set(NATIVES)


async def test_reloading_the_page_keeps_identity_and_state(
    natives: LocalCluster, tab: Tab, tmp_path: Path
) -> None:
    before = await tab.join(natives)
    name, node_id = before["name"], before["id"]
    apply(
        natives,
        tmp_path,
        "\n---\n".join(
            f"""
            apiVersion: v1
            kind: ConfigMap
            metadata: {{name: settings-{i}}}
            data: {{value: "{"x" * 2000}"}}
            """
            for i in range(20)
        ),
    )

    async def tab_holds_the_config_maps() -> bool:
        objects = await tab.page.evaluate(
            "window.p2pkube.pyodide.runPython(\"len([k for k in __import__('p2pkube.browser.main',"
            " fromlist=['x']).node().node.state.keys('objects') if k.startswith('ConfigMap/')])\")"
        )
        return int(objects) >= 20

    for _ in range(80):
        if await tab_holds_the_config_maps():
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError("the tab never received the ConfigMaps")
    await asyncio.sleep(2.5)  # > browser.sync_interval: the data dir is in IndexedDB now

    await tab.page.reload()
    after = await tab.started()
    assert after["node"]["id"] == node_id and after["node"]["name"] == name
    stats = after["stats"]
    assert stats["loadedObjects"] >= 22, stats  # 20 ConfigMaps and the nodes, from IndexedDB
    assert await tab_holds_the_config_maps()
    # Only the diff crossed the links: far less than the 40 KB of ConfigMaps it already had.
    assert stats["syncBytesReceived"] < 20_000, stats
    await eventually(lambda: ready(node_row(natives, "n2", name)), 30, f"{name} Ready again")
    names = [n["metadata"]["name"] for n in get_json(natives, "n2", "nodes")["items"]]
    assert names.count(name) == 1 and len(names) == 3, names


@pytest.mark.serial  # a stall against SWIM's bound
async def test_a_hidden_tab_stalled_for_a_while_is_not_declared_dead_and_blames_nobody(
    natives: LocalCluster, tab: Tab
) -> None:
    """A hidden tab asks for ``browser.hidden_grace``; then even its page thread blocked for
    5 s (worse than background throttling, which still runs timers once a second) flips
    nobody's Ready: not the tab on the native nodes, not the native nodes in the tab."""
    name = (await tab.join(natives))["name"]
    await tab.page.evaluate(
        """() => {
          Object.defineProperty(document, "visibilityState", {value: "hidden", configurable: true});
          document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    await asyncio.sleep(1.5)  # the signed ALIVE carrying the grace reaches both native nodes
    # Block the page's thread (the agent's event loop) for 5 s: beyond SWIM's detection bound
    # without the grace (probe period + suspicion ceiling, 4.35 s at the defaults).
    await tab.page.evaluate(
        "setTimeout(() => { const t = performance.now(); while (performance.now() - t < 5000); })"
    )
    for _ in range(12):
        await asyncio.sleep(0.5)
        for viewer in NATIVES:
            assert await asyncio.to_thread(lambda v=viewer: ready(node_row(natives, v, name)))
    await asyncio.sleep(2)
    for viewer in NATIVES:
        status = natives.api(viewer, "GET", "/v1/status")["membership"]["nodes"]
        seen = next(n for n in status if n["name"] == name)
        assert seen["ready"] and seen["transitions"] == 0, seen
    own = await tab.page.evaluate(
        'JSON.parse(window.p2pkube.pyodide.runPython("import json, p2pkube.browser.main as m;'
        " json.dumps(m.node().node.status()['membership'])\"))"
    )
    assert own["stalledSeconds"] >= 4, own  # it knew it was the one not running
    for liveness in own["nodes"]:
        assert liveness["ready"] and liveness["transitions"] == 0, own


async def test_hostile_frames_drop_the_sender_and_the_tab_keeps_serving(
    natives: LocalCluster, tab: Tab
) -> None:
    """A member sending garbage to a tab is dropped and logged; the tab's node keeps going."""
    from tests.test_hostile_peer import HOSTILE_MESSAGES, link_to

    opened = await tab.join(natives)
    name, node_id = opened["name"], opened["id"]
    for kind, message in HOSTILE_MESSAGES.items():
        link, client = await link_to(natives, node_id)
        try:
            link._channel.send(message)
            await eventually(
                lambda link=link: link.state is LinkState.CLOSED, 10, f"{kind}: link closed"
            )
            # The page's console line reaches the test over CDP, apart from the link's close
            # over SCTP: under load it can come after the close is seen here.
            await eventually(
                lambda: any("dropping peer" in line for line in tab.console),
                10,
                f"{kind}: the tab logged dropping the peer",
            )
            tab.console.clear()
        finally:
            await link.close("test over", notify=False)
            await client.close()
    natives.cli("n2", "create", "configmap", "after-hostile", "--from-literal", "a=b")

    async def tab_has_it() -> bool:
        return bool(
            await tab.page.evaluate(
                'window.p2pkube.pyodide.runPython("import p2pkube.browser.main as m;'
                " m.node().node.state.get('objects', 'ConfigMap/default/after-hostile')"
                ' is not None")'
            )
        )

    for _ in range(40):
        if await tab_has_it():
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError("the tab stopped syncing after the hostile peers")
    assert (await tab.snapshot())["status"] == "running"
    assert ready(node_row(natives, "n1", name))
