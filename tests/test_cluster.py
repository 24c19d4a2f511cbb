"""End to end: a real signaling server and real agents as separate processes on loopback."""

from __future__ import annotations

import json
import signal
import time

import pytest

from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.membership.liveness import detection_bound
from p2pkube.membership.settings import SwimSettings

DETECTION = detection_bound(SwimSettings(), 4)
"""SWIM's bound, at the default settings, on a stopped member of a cluster of 4 (or fewer)
declared DEAD everywhere: a probe period plus the suspicion ceiling."""


def start(cluster: LocalCluster, names: list[str], *extra: str) -> None:
    cluster.start_signaling()
    for name in names:
        cluster.start_agent(name, *extra)
    for name in names:
        cluster.wait_api(name)


def all_ready(cluster: LocalCluster, viewer: str, names: list[str]) -> bool:
    nodes = cluster.nodes(viewer)
    return sorted(nodes) == sorted(names) and all(v == "True" for v in nodes.values())


def configmap_value(cluster: LocalCluster, viewer: str, name: str, key: str) -> str | None:
    obj = cluster.api(viewer, "GET", f"/v1/objects/ConfigMap/default/{name}")
    return obj["data"].get(key)


def put_configmap(cluster: LocalCluster, writer: str, name: str, data: dict[str, str]) -> None:
    cluster.api(
        writer,
        "PUT",
        "/v1/objects",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data},
    )


def test_five_agents_see_five_ready_nodes_and_share_writes(cluster: LocalCluster) -> None:
    names = [f"n{i}" for i in range(1, 6)]
    start(cluster, names, "--label", "zone=a")
    for name in names:
        wait_until(lambda name=name: all_ready(cluster, name, names), 30, what=f"{name} view")

    # What a user sees: kubectl-shaped JSON from the CLI of any peer.
    listing = json.loads(cluster.cli("n4", "get", "nodes", "-o", "json").stdout)
    assert listing["kind"] == "List" and listing["apiVersion"] == "v1"
    assert sorted(i["metadata"]["name"] for i in listing["items"]) == names
    for item in listing["items"]:
        assert item["kind"] == "Node"
        assert item["metadata"]["labels"]["zone"] == "a"
        assert item["metadata"]["labels"]["p2pkube.io/kind"] == "native"
        ready = [c for c in item["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"
    table = cluster.cli("n1", "get", "nodes").stdout.splitlines()
    assert table[0].split() == ["NAME", "KIND", "STATUS", "PEERS", "CPU", "MEMORY", "AGE"]
    assert [line.split()[2] for line in table[1:]] == ["Ready"] * 5

    cluster.cli("n2", "create", "configmap", "shared", "--from-literal", "answer=42")
    for name in names:
        wait_until(
            lambda name=name: configmap_value(cluster, name, "shared", "answer") == "42",
            10,
            what=f"the write on {name}",
        )


def test_partial_mesh_relays_state(cluster: LocalCluster) -> None:
    """max-peers 2 (no jitter, little slack): not everyone is linked, yet all converge."""
    names = [f"n{i}" for i in range(1, 7)]
    start(
        cluster,
        names,
        "--max-peers",
        "2",
        "--set",
        "transport.max_peers_jitter=0",
        "--set",
        "transport.inbound_slack=1",
    )
    for name in names:
        wait_until(lambda name=name: all_ready(cluster, name, names), 40, what=f"{name} view")
    put_configmap(cluster, "n1", "relayed", {"v": "from-n1"})
    put_configmap(cluster, "n6", "relayed-back", {"v": "from-n6"})
    for name in names:
        wait_until(
            lambda name=name: (
                configmap_value(cluster, name, "relayed", "v") == "from-n1"
                and configmap_value(cluster, name, "relayed-back", "v") == "from-n6"
            ),
            15,
            what=f"relayed writes on {name}",
        )
    degrees = {
        name: len(cluster.api(name, "GET", "/v1/status")["mesh"]["neighbours"]) for name in names
    }
    assert max(degrees.values()) <= 3, degrees
    # A full mesh of 6 needs degree 5: some pairs are not linked, so state was relayed.
    assert sum(degrees.values()) / 2 < 15


@pytest.mark.serial  # times detection of a kill -9
def test_kill9_notready_then_restart_syncs_only_the_diff(cluster: LocalCluster) -> None:
    names = ["n1", "n2", "n3", "n4"]
    start(cluster, names)
    for name in names:
        wait_until(lambda name=name: all_ready(cluster, name, names), 30, what=f"{name} view")
    big = {f"k{i}": "x" * 1000 for i in range(300)}  # ~300 kB of state
    persisted = cluster.api("n4", "GET", "/v1/status")["state"]["bytesPersisted"]
    put_configmap(cluster, "n1", "big", big)
    wait_until(lambda: configmap_value(cluster, "n4", "big", "k299"), 15, what="big on n4")
    # An update is visible on n4 as soon as it is applied, and durable there a group commit
    # later: a kill -9 in between loses it from n4's disk (peers send it again, which this
    # test would count as more than the diff). Kill once n4 has written it.
    wait_until(
        lambda: (
            cluster.api("n4", "GET", "/v1/status")["state"]["bytesPersisted"] >= persisted + 300_000
        ),
        10,
        what="big durable on n4",
    )

    killed = time.monotonic()
    cluster.kill("n4")
    for viewer in ["n1", "n2", "n3"]:
        wait_until(
            lambda viewer=viewer: cluster.nodes(viewer).get("n4") == "False",
            DETECTION + 3,
            interval=0.05,
            what=f"{viewer} marking n4 NotReady",
        )
    detected = time.monotonic() - killed
    assert detected < DETECTION + 1.0, detected

    put_configmap(cluster, "n2", "while-down", {"v": "1"})
    cluster.start_agent("n4")
    cluster.wait_api("n4")
    wait_until(lambda: all_ready(cluster, "n1", names), 30, what="n4 Ready again on n1")
    wait_until(lambda: configmap_value(cluster, "n4", "while-down", "v") == "1", 15, what="diff")
    assert configmap_value(cluster, "n4", "big", "k299") == "x" * 1000
    state = cluster.api("n4", "GET", "/v1/status")["state"]
    # It loaded ~300 kB from its own disk and fetched only what it missed.
    assert state["docSize"] > 250_000, state
    assert state["syncStep2BytesReceived"] < 30_000, state


@pytest.mark.serial  # asserts no node is declared dead within SWIM's bound
def test_signaling_outage_does_not_stop_the_cluster(cluster: LocalCluster) -> None:
    names = ["n1", "n2", "n3"]
    start(cluster, names)
    for name in names:
        wait_until(lambda name=name: all_ready(cluster, name, names), 30, what=f"{name} view")
    cluster.stop_signaling()
    put_configmap(cluster, "n1", "during-outage", {"v": "ok"})
    for name in names:
        wait_until(
            lambda name=name: configmap_value(cluster, name, "during-outage", "v") == "ok",
            10,
            what=f"sync without signaling on {name}",
        )
    time.sleep(DETECTION + 0.5)  # a node wrongly declared DEAD would be NotReady by now
    assert all_ready(cluster, "n3", names)

    cluster.start_signaling()  # same port: agents reconnect by themselves
    cluster.start_agent("n4")
    cluster.wait_api("n4")
    everyone = [*names, "n4"]
    for name in everyone:
        wait_until(lambda name=name: all_ready(cluster, name, everyone), 30, what=f"{name} view")
    wait_until(lambda: configmap_value(cluster, "n4", "during-outage", "v") == "ok", 10)


def test_join_with_wrong_token_fails_clearly(cluster: LocalCluster) -> None:
    cluster.start_signaling()
    agent = cluster.start_agent("intruder", token="not-the-token-at-all-but-long-enough")
    assert agent.process is not None
    assert agent.process.wait(30) == 1
    log = cluster.log_tail("intruder")
    assert "bad-token" in log, log
    assert "Traceback" not in log


@pytest.mark.serial  # times a SIGSTOP against SWIM's bound
def test_a_frozen_peer_does_not_blame_the_others(cluster: LocalCluster) -> None:
    """SIGSTOP one agent until the others see it NotReady (AgentDead): it is Ready again once
    it runs, never declares the others dead, and the healthy ones never flap."""
    names = ["n1", "n2", "n3"]
    start(cluster, names)
    for name in names:
        wait_until(lambda name=name: all_ready(cluster, name, names), 30, what=f"{name} view")

    def transitions(viewer: str) -> dict[str, int]:
        nodes = cluster.api(viewer, "GET", "/v1/status")["membership"]["nodes"]
        return {n["name"]: n["transitions"] for n in nodes}

    before = {viewer: transitions(viewer) for viewer in names}
    cluster.kill("n3", signal.SIGSTOP)
    try:
        wait_until(lambda: cluster.nodes("n1").get("n3") == "False", DETECTION + 3)
        time.sleep(1.5)
    finally:
        cluster.kill("n3", signal.SIGCONT)
    for name in names:
        wait_until(lambda name=name: all_ready(cluster, name, names), 20, what=f"{name} view")
    time.sleep(DETECTION)  # give a wrongly blamed node time to show up as NotReady

    flips = {
        viewer: {node: count - before[viewer].get(node, 0) for node, count in seen.items()}
        for viewer, seen in ((viewer, transitions(viewer)) for viewer in names)
    }
    assert flips["n3"] == {"n1": 0, "n2": 0}, flips
    assert flips["n1"]["n2"] == 0 and flips["n2"]["n1"] == 0, flips
    assert flips["n1"]["n3"] == 2, flips  # NotReady while frozen, Ready after
    assert cluster.api("n3", "GET", "/v1/status")["membership"]["stalledSeconds"] > 2
    assert all_ready(cluster, "n3", names)
