"""``p2pkube top`` of a browser tab's node and pods, read on a native node: the tab's Workers
measure their instances (time awake, linear memory) and the tab answers for them over the
mesh, as a native node does (real Pyodide in headless Chromium, real native agents)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from p2pkube.cli.topkinds import cpu_millicores, memory_bytes
from p2pkube.devcluster import LocalCluster
from tests.browser import *  # noqa: F403  (the fixtures: bundle, browser)
from tests.test_browser_node import Tab, apply, eventually, in_phase, natives, tab

__all__ = ["natives", "tab"]  # the fixtures, used by name

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(240)]


def _pods(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    out = cluster.cli("n2", "top", "pods", "-o", "json").stdout
    return {m["metadata"]["name"]: m for m in json.loads(out)["items"]}


def _usage(metrics: dict[str, Any]) -> tuple[int, int]:
    usage = metrics["containers"][0]["usage"] if "containers" in metrics else metrics["usage"]
    return cpu_millicores(usage["cpu"]), memory_bytes(usage["memory"])


async def test_top_shows_what_the_tabs_workers_measured(
    natives: LocalCluster, tab: Tab, tmp_path: Path
) -> None:
    name = (await tab.join(natives))["name"]
    apply(
        natives,
        tmp_path,
        """
        apiVersion: p2pkube.io/v1
        kind: Pod
        metadata: {name: busy-tab}
        spec:
          nodeSelector: {p2pkube.io/kind: browser}
          containers:
            - {name: main, image: BUILD/primes.wasm, args: ["3000000", "0.3"]}
        ---
        apiVersion: p2pkube.io/v1
        kind: Pod
        metadata: {name: idle-tab}
        spec:
          nodeSelector: {p2pkube.io/kind: browser}
          containers:
            - {name: main, image: BUILD/ticker.wasm, args: ["5"]}
        """,
    )
    for pod in ("busy-tab", "idle-tab"):
        await in_phase(natives, "n2", pod, "Running", 60)

    def measured() -> dict[str, dict[str, Any]] | None:
        found = _pods(natives)
        both = {"busy-tab", "idle-tab"} <= set(found)
        return found if both and _usage(found["busy-tab"])[0] > 0 else None

    found = await eventually(measured, 40, "the tab's pods measured")
    busy_cpu, busy_memory = _usage(found["busy-tab"])
    idle_cpu, idle_memory = _usage(found["idle-tab"])
    assert idle_cpu < busy_cpu, found
    assert busy_memory >= 65536 and busy_memory % 65536 == 0, found
    assert idle_memory >= 65536 and idle_memory % 65536 == 0, found
    out = natives.cli("n2", "top", "nodes", "-o", "json").stdout
    nodes = {m["metadata"]["name"]: m for m in json.loads(out)["items"]}
    assert set(nodes) == {"n1", "n2", name}
    # A tab has no process figures: its usage is its pods' (the same window).
    tab_cpu, tab_memory = _usage(nodes[name])
    assert tab_cpu > 0 and tab_memory >= busy_memory, nodes[name]
