"""Five agents on five network hosts (Linux network namespaces, harness/netlab.py): joining,
a silent partition that only the agents' own SWIM probes can notice, and 5% packet loss.

One module-wide lab: a signaling host and n1..n5, each agent started by the container
entrypoint with its host's address as its only ICE candidate. Every test leaves the network
healed and loss-free, and the lab is removed at the end, also when a test fails (the lab's
timeline and every log tail are printed then).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.netlab import SUBNET, NetLab, lab_or_skip
from p2pkube.devcluster import wait_until
from p2pkube.membership.liveness import detection_bound
from p2pkube.membership.settings import SwimSettings
from p2pkube.net.settings import TransportSettings

NAMES = ["n1", "n2", "n3", "n4", "n5"]
DETECTION = detection_bound(SwimSettings(), len(NAMES))
"""SWIM's bound on a stopped member DEAD everywhere at this size: a probe period plus the
suspicion ceiling."""
DETECT_SLACK = 2.0
"""Slack for polling the agents' APIs and for a busy 2-core machine."""


def cut_detection_bound(swim: SwimSettings, members: int) -> float:
    """Seconds until both sides of a silent cut see every member across it DEAD, by the
    protocol's design. A cut slows the probers themselves (Lifeguard): the indirect probes they
    send through members across it neither ack nor nack, so each failed probe raises their
    local health multiplier, up to ``awareness_max_multiplier`` times the probe period. A
    member across is first suspected when a node of its own side's view probes it; with probes
    round-robin over a list shuffled anew each round, that is at most 2 (N - 1) - 1 periods
    after the cut, each at most the slowest period. Then the suspicion times out, at most its
    ceiling (detection_bound's). The simulator (`harness.swimscenarios.partition`, 1,000 seeds
    of 5 members cut 2 + 3, no CPU load) saw 3.69-6.51 s, p99 6.18 s: above DETECTION + 2
    (6.35 s), the bound this test used to assert and failed once (6.59 s)."""
    slowest_period = swim.probe_interval * swim.awareness_max_multiplier
    return (2 * (members - 1) - 1) * slowest_period + detection_bound(swim, members)


CUT_DETECTION = cut_detection_bound(SwimSettings(), len(NAMES))


LOSS_SECONDS = 15.0
"""How long the loss test writes under 5% loss."""
HEAL_SECONDS = 30.0
"""Asserted: heal to every node Ready everywhere with every write everywhere."""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator:
    with lab_or_skip(tmp_path_factory.mktemp("netns"), request) as lab:
        lab.add_host("sig")
        for name in NAMES:
            lab.add_host(name)
        lab.start_signaling("sig")
        for name in NAMES:
            lab.start_agent(name)
        for name in NAMES:
            lab.wait_api(name)
        lab.note(f"all Ready after {lab.wait_ready(NAMES):.1f}s")
        yield lab


@pytest.fixture
def healthy(lab: NetLab) -> Iterator[NetLab]:
    """The lab, with partitions and loss removed afterwards whatever happened."""
    try:
        with lab.reporting():
            yield lab
    finally:
        lab.heal()
        lab.set_loss(0.0)


def put_configmap(lab: NetLab, writer: str, name: str, **data: str) -> dict[str, Any]:
    """An acknowledged write: PUT /v1/objects returns once the update is fsynced there."""
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    return dict(lab.api(writer, "PUT", "/v1/objects", obj))


def configmaps(lab: NetLab, viewer: str) -> dict[str, dict[str, str]]:
    items = lab.api(viewer, "GET", "/v1/objects/ConfigMap")["items"]
    return {c["metadata"]["name"]: c.get("data", {}) for c in items}


def state_vectors(lab: NetLab, names: list[str]) -> dict[str, dict[str, int]]:
    return {n: lab.api(n, "GET", "/v1/status")["state"]["stateVector"] for n in names}


def converged(lab: NetLab, names: list[str]) -> bool:
    vectors = list(state_vectors(lab, names).values())
    return all(v == vectors[0] for v in vectors)


def crossing_neighbours(
    lab: NetLab, name: str, left: list[str], right: list[str]
) -> dict[str, str]:
    """``name``'s linked neighbours on the other side of a cut between ``left`` and ``right``:
    node id -> name."""
    others = right if name in left else left
    neighbours = lab.api(name, "GET", "/v1/status")["mesh"]["neighbours"]
    return {x["node"]: x["name"] for x in neighbours if x["name"] in others}


def close_reasons(log: str, node_id: str) -> list[str]:
    """The reasons of every close of a link to ``node_id`` in an agent's ``log``, in order."""
    return re.findall(rf" link {re.escape(node_id)} closed: (.*)", log)


def not_ready_seen(lab: NetLab, viewer: str, others: list[str]) -> bool:
    view = lab.nodes(viewer, timeout=5)
    return all(view.get(o) == "False" for o in others)


def test_five_hosts_join_and_a_write_on_one_is_read_on_all(healthy: NetLab) -> None:
    lab = healthy
    for name in NAMES:
        status = lab.api(name, "GET", "/v1/status")
        # The pid the lab holds is the agent itself (ip netns exec and the entrypoint exec):
        # the signals the fault injection sends reach the agent, not a wrapper.
        assert status["process"]["pid"] == lab.hosts[name].process.pid  # type: ignore[union-attr]
        for neighbour in status["mesh"]["neighbours"]:
            pair = neighbour["candidatePair"]
            assert pair["local"] == pair["remote"] == "host"
            assert pair["localAddress"].startswith(f"{lab.hosts[name].ip}:")
            assert pair["remoteAddress"].startswith(f"{SUBNET}.")
        # The links' SCTP delays a lone SACK and sends it with the answer (net/sctp.py).
        bundled = sum(n["carrier"]["sacksBundled"] for n in status["mesh"]["neighbours"])
        assert bundled > 0, f"{name} bundled no SACK with its answers"
    created = lab.cli("n3", "create", "configmap", "greeting", "--from-literal", "hello=world")
    assert created.stdout.strip() == "configmap/greeting created"
    for name in NAMES:
        wait_until(
            lambda n=name: configmaps(lab, n).get("greeting") == {"hello": "world"},
            10,
            what=f"the write on {name}",
        )
    wait_until(lambda: converged(lab, NAMES), 10, what="equal state vectors")


def test_a_silent_partition_is_seen_by_swim_and_heals_with_new_links(
    healthy: NetLab,
) -> None:
    lab = healthy
    left, right = ["n1", "n2"], ["n3", "n4", "n5"]
    wait_until(lambda: lab.all_ready(NAMES, NAMES), 30, what="all Ready before the cut")
    # Each end of each link across the cut, by the neighbour's node id (as its close is logged),
    # and where each log stands: its close reasons are read from what is logged after the cut.
    across = {name: crossing_neighbours(lab, name, left, right) for name in NAMES}
    assert any(across.values()), "no link across the cut to watch"
    marks = {name: lab.hosts[name].log_path.stat().st_size for name in NAMES}
    lab.partition(left, right)
    cut = time.monotonic()
    seen: dict[str, float] = {}
    while len(seen) < len(NAMES) and time.monotonic() - cut < 15:
        for name in NAMES:
            others = right if name in left else left
            if name not in seen and not_ready_seen(lab, name, others):
                seen[name] = time.monotonic() - cut
        time.sleep(0.05)
    lab.note("NotReady seen after " + ", ".join(f"{n} {t:.2f}s" for n, t in seen.items()))
    assert len(seen) == len(NAMES), f"not every side saw the other NotReady: {seen}"
    worst = max(seen.values())
    assert worst < CUT_DETECTION + DETECT_SLACK, (
        f"the cut was seen after {worst:.2f}s (bound {CUT_DETECTION:.2f}s)"
    )
    # Each side still sees its own nodes Ready, and keeps taking writes.
    assert all(lab.nodes("n1")[n] == "True" for n in left)
    assert all(lab.nodes("n4")[n] == "True" for n in right)
    put_configmap(lab, "n1", "left-side", side="left")
    put_configmap(lab, "n4", "right-side", side="right")
    wait_until(lambda: "left-side" in configmaps(lab, "n2"), 10, what="left write on n2")
    wait_until(lambda: "right-side" in configmaps(lab, "n5"), 10, what="right write on n5")
    assert "right-side" not in configmaps(lab, "n1")

    # The links across the cut are closed by the link idle timeout, not by aiortc (whose ICE
    # consent check gives up only after ~30 s): the cut is silent.
    def crossing_links() -> list[tuple[str, str]]:
        return [
            (name, x["name"])
            for name in NAMES
            for x in lab.api(name, "GET", "/v1/status")["mesh"]["neighbours"]
            if (x["name"] in right) == (name in left)
        ]

    idle_timeout = TransportSettings().link_idle_timeout
    wait_until(lambda: not crossing_links(), idle_timeout + 5, what="the links across closed")
    closed = time.monotonic() - cut
    # A link leaves the status as its close begins, but its "closed: <reason>" line is logged
    # when the close ends: after its BYE had close_drain_timeout to drain (across the cut it
    # may not) and the connection up to 5 s to close (LinkBase.close). So wait that long for
    # the line of every link end across the cut; each must give the idle timeout as its reason
    # (only an established link's watchdog logs it, and a link logs one close).
    idle = f"no frame for {idle_timeout:.1f}s"
    deadline = time.monotonic() + TransportSettings().close_drain_timeout + 5 + DETECT_SLACK
    while True:
        reasons = {
            (name, peer): close_reasons(lab.log_since(name, marks[name]), node_id)
            for name, neighbours in across.items()
            for node_id, peer in neighbours.items()
        }
        not_idle = {end: r for end, r in reasons.items() if idle not in r}
        if not not_idle or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not not_idle, (
        "a link across the silent cut did not close by its idle timeout; (node, neighbour): "
        f"the close reasons it logged for that neighbour since the cut: {not_idle}"
    )
    lab.note(f"links across the cut closed after {closed:.2f}s")
    time.sleep(2)  # let the failed dials across the cut back off for a while
    lab.heal()
    healed = time.monotonic()

    def whole() -> bool:
        if not lab.all_ready(NAMES, NAMES):
            return False
        return all({"left-side", "right-side"} <= set(configmaps(lab, n)) for n in NAMES)

    wait_until(whole, HEAL_SECONDS + 30, interval=0.2, what="the cluster whole again")
    took = time.monotonic() - healed
    wait_until(lambda: converged(lab, NAMES), 15, what="equal state vectors after the heal")
    lab.note(f"whole {took:.2f}s after the heal")
    assert took < HEAL_SECONDS, f"whole again {took:.1f}s after the heal"
    # New links across the former cut: aiortc has no ICE restart, these are new connections.
    crossing = crossing_links()
    assert crossing, "no link across the former cut"
    print(
        f"silent partition: NotReady seen after {min(seen.values()):.2f}-{worst:.2f}s "
        f"(detection bound {DETECTION:.2f}s), links across closed after {closed:.2f}s; whole "
        f"again {took:.2f}s after the heal, over new links {sorted(crossing)}"
    )


def test_five_percent_loss_keeps_the_cluster_converged(healthy: NetLab) -> None:
    lab = healthy
    wait_until(lambda: lab.all_ready(NAMES, NAMES), 30, what="all Ready before the loss")
    spells_before = {n: len(lab.not_ready_spells(n)) for n in NAMES}
    dropped_before = sum(d["loss"] for d in lab.dropped().values())
    lab.set_loss(0.05)
    written: dict[str, str] = {}
    began = time.monotonic()
    i = 0
    while time.monotonic() - began < LOSS_SECONDS:
        writer = NAMES[i % len(NAMES)]
        put_configmap(lab, writer, f"lossy-{i}", i=str(i))
        written[f"lossy-{i}"] = writer
        i += 1
        time.sleep(0.25)
    # Still lossy: every acknowledged write reaches every node, and the documents converge.
    for name in NAMES:
        wait_until(
            lambda n=name: set(written) <= set(configmaps(lab, n)),
            20,
            what=f"every write on {name}",
        )
    wait_until(lambda: converged(lab, NAMES), 20, what="equal state vectors under loss")
    wait_until(lambda: lab.all_ready(NAMES, NAMES), 10, what="all Ready under loss")
    delivered = time.monotonic() - began
    dropped = sum(d["loss"] for d in lab.dropped().values()) - dropped_before
    lab.set_loss(0.0)
    spells = [
        (viewer, *spell)
        for viewer in NAMES
        for spell in lab.not_ready_spells(viewer)[spells_before[viewer] :]
    ]
    lab.note(f"loss: {len(written)} writes, {dropped} packets dropped, NotReady spells {spells}")
    print(
        f"5% loss for {LOSS_SECONDS:g}s: {len(written)} acknowledged writes all delivered and "
        f"converged {delivered:.1f}s after the loss began; {dropped} packets dropped; "
        f"{len(spells)} NotReady spell(s) (viewer, node, reason, seconds): {spells}"
    )
    assert dropped > 0, "the loss rules dropped nothing"
    # A probe lost on the wire is retransmitted by SCTP after its minimum RTO (1 s), and the
    # ordered channel holds the next one behind it; the indirect probes and the suspicion
    # timeout absorb that, so a spell (a false DEAD, refuted) is possible, but short.
    longest = max((s[-1] for s in spells), default=0.0)
    assert longest < DETECTION, f"a node looked NotReady for {longest:.1f}s under loss"
