"""A browser tab as a node from an insecure origin: the page over plain http from an address
that is not loopback, as a browser on another machine opens the LAN URL ``make demo`` prints.

A second machine: Chromium (headless, driven by playwright) runs in a network namespace of
its own whose only way out is a veth pair to this namespace (``10.77.S.2`` inside,
``10.77.S.1`` here, S a free /24 chosen per run). The signaling server and two native agents
run here as real processes (``LocalCluster`` listening on every interface and offering
``127.0.0.1`` and ``10.77.S.1`` as ICE addresses), and the tab opens
``http://10.77.S.1:PORT/#token=T``. That page is not a secure context: no ``crypto.subtle``
(the node's Ed25519 is bridge.js's @noble/ed25519 fallback), no Web Locks, no cross-origin
isolation (no SharedArrayBuffer: pod output comes by postMessage, WASI sleeps busy-wait).
Checked as a user would: the tab starts, both native agents list it Ready, pods selected onto
it run there (output and a sleeping ticker), and a reload is the same node (its key, made
by the fallback and kept in IndexedDB, still proves its identity to ``cryptography``).

Skipped, saying why, when not root or when ``ip netns`` does not work here (and when
Chromium, Node.js or playwright are missing, like every browser test).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from harness.chromium import CHROMIUM_ARGS, ChromiumLog
from harness.netlab import LAB_PREFIX, _kill_namespace, available, sweep, tool
from p2pkube.devcluster import LocalCluster
from tests.browser import *  # noqa: F403  (the fixtures: bundle)
from tests.browser import LOAD_TIMEOUT, print_when_failed
from tests.test_browser_node import (
    NATIVES,
    Tab,
    apply,
    eventually,
    get_json,
    in_phase,
    node_row,
    ready,
    terminated,
)

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(300)]


@dataclass
class SecondMachine:
    """A network namespace reached from here over one veth pair."""

    ns: str
    veth: str
    host_ip: str
    """This namespace's end: where the page is served from."""
    peer_ip: str
    """The namespace's end: the browser's address."""
    chromium: ChromiumLog
    """Chromium's stderr; its ``launcher()`` execs Chromium inside the namespace."""


def _ip(*args: str) -> str:
    result = subprocess.run([tool("ip"), *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _free_subnet() -> str:
    """A 10.77.S.0/24 no interface of this namespace has an address in (S from 128 up)."""
    used = set()
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        fields = line.split()
        if "inet" in fields:
            used.add(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    for s in secrets.SystemRandom().sample(range(128, 255), 127):
        subnet = ipaddress.ip_network(f"10.77.{s}.0/24")
        if not any(subnet.overlaps(net) for net in used):
            return f"10.77.{s}"
    raise RuntimeError("no free 10.77.S.0/24 subnet")


@contextlib.contextmanager
def second_machine(root: Path) -> Iterator[SecondMachine]:
    """The namespace, named like harness/netlab.py's (so its sweep removes a crashed run's)."""
    sweep()
    suffix = secrets.token_hex(2)
    ns = f"{LAB_PREFIX}-{os.getpid()}-{suffix}-tab"
    veth = f"p2pk{suffix}"
    subnet = _free_subnet()
    chromium = ChromiumLog(root / "chromium-in-netns.log")
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("addr", "add", f"{subnet}.1/24", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("-n", ns, "addr", "add", f"{subnet}.2/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield SecondMachine(ns, veth, f"{subnet}.1", f"{subnet}.2", chromium)
    finally:
        _kill_namespace(ns)  # its processes (Chromium), then eth0 and with it our veth end
        subprocess.run([tool("ip"), "link", "del", veth], capture_output=True, timeout=30)


@pytest.fixture
def machine(bundle: Path, tmp_path: Path) -> Iterator[SecondMachine]:
    """The second machine (after the bundle: a run without Chromium skips before this)."""
    reason = available()
    if reason is not None:
        pytest.skip(f"a second machine needs a network namespace: {reason}")
    with second_machine(tmp_path) as made:
        yield made


@pytest.fixture
def natives(cluster: LocalCluster, bundle: Path, machine: SecondMachine) -> LocalCluster:
    """The signaling server (serving the bundle) and two native agents, reachable from the
    second machine: listening on every interface, offering the veth address to ICE."""
    cluster.listen_host = "0.0.0.0"
    cluster.ice_addresses = ["127.0.0.1", machine.host_ip]
    cluster.start_signaling()
    for name in NATIVES:
        cluster.start_agent(name)
    for name in NATIVES:
        cluster.wait_api(name)
    return cluster


@pytest_asyncio.fixture(loop_scope="session")
async def tab(
    machine: SecondMachine, bundle: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Tab]:
    """A node page in a Chromium that runs on the second machine."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launcher = machine.chromium.launcher(tool("ip"), "netns", "exec", machine.ns)
        chromium = await pw.chromium.launch(executable_path=launcher, args=CHROMIUM_ARGS)
        try:
            context = await chromium.new_context()
            opened = Tab(context, await context.new_page())
            opened.page.on(
                "worker",
                lambda w: w.on("console", lambda m: opened.console.append(f"worker: {m.text}")),
            )
            try:
                yield opened
            finally:
                print_when_failed(request, opened.console, machine.chromium, 0)
        finally:
            await chromium.close()


async def linked(tab: Tab, links: int) -> dict[str, Any] | None:
    snapshot = await tab.snapshot()
    return snapshot if snapshot["stats"]["links"] >= links else None


async def test_tab_on_an_insecure_origin_is_a_whole_node(
    machine: SecondMachine, natives: LocalCluster, tab: Tab, tmp_path: Path
) -> None:
    url = natives.page_url(machine.host_ip)
    await tab.page.goto(url)
    page = await tab.page.evaluate(
        """() => ({
            origin: location.origin,
            secure: window.isSecureContext,
            isolated: window.crossOriginIsolated,
            subtle: typeof crypto.subtle,
            random: typeof crypto.getRandomValues,
            locks: typeof navigator.locks,
            sharedArrayBuffer: typeof SharedArrayBuffer,
        })"""
    )
    assert page == {
        "origin": f"http://{machine.host_ip}:{natives.signaling_port}",
        "secure": False,
        "isolated": False,
        "subtle": "undefined",
        "random": "function",
        "locks": "undefined",
        "sharedArrayBuffer": "undefined",
    }, page

    started = await tab.started()  # window.p2pkubeReady resolved: the node runs
    name, node_id = started["node"]["name"], started["node"]["id"]
    crypto = await tab.page.evaluate("window.p2pkube.bridge.cryptoInfo()")
    assert crypto["ed25519"] == "noble", crypto
    assert "not a secure context" in crypto["reason"], crypto
    runtime = await tab.page.evaluate("window.p2pkube.bridge.runtimeInfo()")
    assert runtime["crossOriginIsolated"] is False and runtime["sleepMode"] == "busy-wait"

    for viewer in NATIVES:
        row = await eventually(
            lambda viewer=viewer: (
                ready(node_row(natives, viewer, name)) and node_row(natives, viewer, name)
            ),
            30,
            f"{viewer} to list {name} Ready",
        )
        assert row["metadata"]["labels"]["p2pkube.io/kind"] == "browser"
    table = natives.cli("n1", "get", "nodes").stdout
    assert any(line.split()[:3] == [name, "browser", "Ready"] for line in table.splitlines())
    # Both links are up: the handshakes passed both ways (the tab's noble signature checked by
    # cryptography on each native agent, theirs checked by the tab's noble).
    for _ in range(120):
        if await linked(tab, 2):
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError(f"the tab did not link to both native agents: {await tab.snapshot()}")
    # Across the veth, from the second machine: Chromium runs in its namespace, and the native
    # agents' links to the tab go between the two ends' addresses.
    assert _ip("netns", "pids", machine.ns).split(), "no process in the second machine"
    for viewer in NATIVES:
        pair = await eventually(
            lambda viewer=viewer: next(
                (
                    n["candidatePair"]
                    for n in natives.api(viewer, "GET", "/v1/status")["mesh"]["neighbours"]
                    if n["name"] == name
                ),
                None,
            ),
            10,
            f"{viewer}'s link to {name}",
        )
        assert pair["localAddress"].startswith(f"{machine.host_ip}:"), pair
        assert pair["remoteAddress"].startswith(f"{machine.peer_ip}:"), pair

    apply(
        natives,
        tmp_path,
        """
        apiVersion: p2pkube.io/v1
        kind: Pod
        metadata: {name: hello-insecure}
        spec:
          nodeSelector: {p2pkube.io/kind: browser}
          restartPolicy: Never
          containers:
            - name: hello
              image: BUILD/hello.wasm
              args: ["from", "an insecure origin"]
        ---
        apiVersion: p2pkube.io/v1
        kind: Pod
        metadata: {name: ticker-insecure}
        spec:
          nodeSelector: {p2pkube.io/kind: browser}
          restartPolicy: Never
          containers:
            - name: ticker
              image: BUILD/ticker.wasm
              args: ["0.2", "5"]
        """,
    )
    hello = await in_phase(natives, "n2", "hello-insecure", "Succeeded", 60)
    assert hello["spec"]["nodeName"] == name
    assert terminated(hello)["exitCode"] == 0  # type: ignore[index]
    assert "argv[2] = an insecure origin" in natives.cli("n2", "logs", "hello-insecure").stdout

    ticker = await in_phase(natives, "n1", "ticker-insecure", "Succeeded", 60)
    assert ticker["spec"]["nodeName"] == name
    ticks = natives.cli("n1", "logs", "ticker-insecure").stdout
    assert [line for line in ticks.splitlines() if line.startswith("tick")] == [
        f"tick {i}" for i in range(1, 6)
    ], ticks
    # Its four sleeps ran, by spinning (the worker says so: no SharedArrayBuffer to wait on).
    assert any("busy-waiting" in line for line in tab.console), tab.console[-20:]

    # A reload is the same node: the key the fallback made, read back from IndexedDB, still
    # signs handshakes the native agents accept.
    await tab.page.reload()
    after = await tab.started()
    assert after["node"]["id"] == node_id and after["node"]["name"] == name
    for _ in range(120):
        if await linked(tab, 2):
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError(f"the reloaded tab did not link again: {await tab.snapshot()}")
    await eventually(lambda: ready(node_row(natives, "n2", name)), 30, f"{name} Ready again")
    names = [n["metadata"]["name"] for n in get_json(natives, "n2", "nodes")["items"]]
    assert names.count(name) == 1 and len(names) == 3, names
    timings = await asyncio.wait_for(tab.page.evaluate("window.p2pkubeReady"), LOAD_TIMEOUT)
    print(f"insecure tab: Ed25519 {crypto}, page timings {timings}")
