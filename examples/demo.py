"""`make demo`: a local 3-peer cluster on loopback doing real work, narrated step by step.

Starts `p2pkube signal` and three `p2pkube join` agents as separate processes (data under
./demo-data), shows `p2pkube get nodes` from different peers, writes a ConfigMap on one peer and
reads it on another, applies the Deployment of examples/primes.yaml and the Job of
examples/batch.yaml (WebAssembly pods, placed across the peers by the node elected for each
workload, their module fetched peer to peer), shows them and their logs from a peer that did not
run them, runs the Python script of examples/python.yaml (a ConfigMap volume, MicroPython),
kills a peer running a replica with SIGKILL, shows the replica replaced on another peer,
restarts the killed peer with the same data dir and shows the cluster whole again with
exactly three replicas. Then the HTTP app of examples/web.yaml (echo handlers behind a NodePort
Service): its Service and endpoints, a curl through the --node-ip of a peer that runs no
replica, and a steady GET load through that peer while a replica's peer is killed with
SIGKILL, counting the GETs that failed. Then it keeps the cluster running until Ctrl-C (or
--duration seconds) so you can try the CLI yourself, and prints the URL that makes any browser
tab a fourth node.

While it waits (agents answering, nodes Ready on every peer, replicas Running, Job runs,
endpoints), a bar on stderr counts what is there, when stderr is a terminal; elsewhere the
narration is all.

The cluster gets a fresh random join token and the signaling server listens on 127.0.0.1 only.
``--lan`` makes it listen on every interface, and the agents also offer this machine's LAN
address, so browsers on the same network can join; so can anyone on that network who is
given the page's URL (it carries the token). A browser elsewhere than on this machine gets
the page over plain http: see docs/guarantees.md, "Browser nodes", for what that changes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import psutil

from p2pkube.cli.progress import bar
from p2pkube.devcluster import LocalCluster, wait_until

NAMES = ["n1", "n2", "n3"]
EXAMPLES = Path(__file__).resolve().parent
DEPLOYMENT = EXAMPLES / "primes.yaml"
JOB = EXAMPLES / "batch.yaml"
WEB = EXAMPLES / "web.yaml"
PYTHON = EXAMPLES / "python.yaml"
LOAD_RATE = 50
"""GETs per second of the demo's load loop through a NodePort (issue 12's failover promise)."""
LOAD_BEFORE_KILL = 2.0
LOAD_AFTER_KILL = 5.0
"""Seconds of load before the kill, and after it (the failover takes ~3 s: the link's idle
timeout)."""
ZONES = {"n1": "a", "n2": "b", "n3": "a"}


def counting(
    label: str,
    total: int,
    count: Callable[[], int],
    timeout: float,
    *,
    what: str,
    stream: TextIO | None = None,
) -> None:
    """Wait until ``count()`` reaches ``total`` (TimeoutError naming ``what`` after
    ``timeout`` seconds). While it climbs, a bar on stderr when that is a terminal (the CLI's
    own, ``p2pkube.cli.progress``); elsewhere (CI, tests/test_demo.py) as quiet as before."""
    with bar(label, total, stream=stream) as drawn:

        def reached() -> bool:
            done = count()
            if drawn is not None:
                drawn.show(done)
            return done >= total

        wait_until(reached, timeout, what=what)


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(cluster: LocalCluster, peer: str, *args: str, tail: int | None = None) -> None:
    """Run a p2pkube command as a user would and print it with its output (the header and
    the last ``tail`` lines only, if given)."""
    print(f"$ p2pkube --data-dir {cluster.root / peer} {' '.join(args)}", flush=True)
    lines = cluster.cli(peer, *args).stdout.rstrip().splitlines()
    if tail is not None and len(lines) > tail + 1:
        lines = [lines[0], "...", *lines[-tail:]]
    print("\n".join(lines), flush=True)


def pods(cluster: LocalCluster, peer: str, app: str) -> list[dict[str, Any]]:
    """The pods of ``app`` that are Running and Ready, as ``peer`` sees them."""
    out = cluster.cli(peer, "get", "pods", "-l", f"app={app}", "-o", "json").stdout
    return [
        p
        for p in json.loads(out)["items"]
        if (p.get("status") or {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])
    ]


def job_complete(cluster: LocalCluster, peer: str, name: str) -> bool:
    result = cluster.cli(peer, "get", "job", name, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = (json.loads(result.stdout).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Complete" for c in conditions)


def job_succeeded(cluster: LocalCluster, peer: str, name: str) -> int:
    """The runs of Job ``name`` that succeeded so far, as ``peer`` sees them."""
    result = cluster.cli(peer, "get", "job", name, "-o", "json", check=False)
    if result.returncode != 0:
        return 0
    return int((json.loads(result.stdout).get("status") or {}).get("succeeded") or 0)


def answering(cluster: LocalCluster) -> int:
    """How many of the demo's agents answer on their local API."""
    up = 0
    for name in NAMES:
        with contextlib.suppress(Exception):  # not up yet: no api.json, or refused
            cluster.api(name, "GET", "/v1/status")
            up += 1
    return up


def ready_count(cluster: LocalCluster, peer: str) -> int:
    """How many of the demo's nodes ``peer`` sees Ready (0 while it does not answer)."""
    try:
        nodes = cluster.nodes(peer)
    except Exception:
        return 0
    return sum(nodes.get(n) == "True" for n in NAMES)


def all_ready(cluster: LocalCluster, peer: str, names: list[str]) -> bool:
    nodes = cluster.nodes(peer)
    return all(nodes.get(n) == "True" for n in names)


def http_get(url: str) -> tuple[int, str]:
    """(status, X-P2pkube-Endpoint) of one GET, status 0 when the connection failed."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=15) as response:
            response.read()
            return response.status, response.headers.get("X-P2pkube-Endpoint", "")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def curl(url: str, *headers: str) -> None:
    """GET ``url`` as a user would, with curl when this machine has it, and print it."""
    options = [arg for header in headers for arg in ("-H", header)]
    print(f"$ curl -sS {' '.join(repr(o) if ' ' in o else o for o in options)} '{url}'", flush=True)
    if shutil.which("curl"):
        done = subprocess.run(
            ["curl", "-sS", "--noproxy", "*", "--max-time", "15", *options, url],
            capture_output=True,
            text=True,
            check=False,
        )
        print((done.stdout + done.stderr).rstrip(), flush=True)
    else:
        request = urllib.request.Request(url, headers=dict(h.split(": ", 1) for h in headers))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=15) as response:
            print(response.read().decode().rstrip(), flush=True)


@dataclass
class Get:
    """One GET of the load loop."""

    sent: float
    """When it was sent, in seconds after the kill (negative: before it)."""
    took: float
    status: int
    """The HTTP status; 0 when the connection failed."""
    node: str
    """The node of the pod that answered (from X-P2pkube-Endpoint), "" when none did."""


def load_while(url: str, action: Callable[[], None]) -> list[Get]:
    """Every GET of a loop that sends ``LOAD_RATE`` GETs a second to ``url`` (each on a thread
    of a pool, so a slow answer does not slow the rate), running ``action`` after
    ``LOAD_BEFORE_KILL`` seconds and going on ``LOAD_AFTER_KILL`` seconds more."""
    results: list[Get] = []
    stop = threading.Event()
    acted = time.monotonic() + LOAD_BEFORE_KILL

    def timed() -> None:
        began = time.monotonic()
        status, endpoint = http_get(url)
        took = time.monotonic() - began
        results.append(Get(began - acted, took, status, endpoint.split("/")[0]))

    def load() -> None:
        began = time.monotonic()
        while not stop.is_set():
            sent.append(pool.submit(timed))
            time.sleep(max(0.0, began + len(sent) / LOAD_RATE - time.monotonic()))

    with ThreadPoolExecutor(max_workers=32) as pool:
        sent: list[Future[None]] = []
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(max(0.0, acted - time.monotonic()))
        action()
        time.sleep(LOAD_AFTER_KILL)
        stop.set()
        loader.join(timeout=5)
        for future in sent:
            future.result(timeout=30)
    return results


def report_load(results: list[Get]) -> None:
    """How many GETs were sent and failed, their latency, and which nodes answered them."""
    failed = [r for r in results if r.status != 200]
    took = sorted(r.took for r in results)
    p99 = took[max(0, int(len(took) * 0.99) - 1)]
    why = f" (statuses {sorted({r.status for r in failed})}; 0: no answer)" if failed else ""
    print(
        f"{len(results)} GETs sent, {len(failed)} failed{why}; latency p50 "
        f"{took[len(took) // 2] * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms, max {took[-1] * 1e3:.0f} ms"
    )
    for what, chosen in (
        ("sent before the kill", [r for r in results if r.sent < 0]),
        ("sent in the last second", [r for r in results if r.sent > LOAD_AFTER_KILL - 1]),
    ):
        counts = Counter(r.node for r in chosen if r.node)
        served = ", ".join(f"{node} {n}" for node, n in sorted(counts.items())) or "none"
        print(f"  answered by, of the GETs {what}: {served}")


def serve_web(cluster: LocalCluster) -> tuple[dict[str, str], int]:
    """Apply examples/web.yaml, then scale it to 2 replicas: returns where its 2 ready
    endpoints are (pod -> node) and its NodePort."""
    step("apply examples/web.yaml on n1: 3 echo handlers (HTTP, CGI) behind a NodePort Service")
    applied = time.monotonic()
    show(cluster, "n1", "apply", "-f", str(WEB))
    counting(
        "web endpoints ready",
        3,
        lambda: len(cluster.ready_endpoints("n1", "web")),
        60,
        what="3 endpoints",
    )
    print(f"3 ready endpoints {time.monotonic() - applied:.1f}s after the apply")
    step("scale web to 2 replicas, so that one peer runs none")
    show(cluster, "n1", "scale", "deployment", "web", "--replicas", "2")

    def two_on_two_peers() -> dict[str, str] | None:
        endpoints = cluster.ready_endpoints("n1", "web")
        spread = len(set(endpoints.values())) == 2 and len(pods(cluster, "n1", "web")) == 2
        return endpoints if spread else None

    placed = wait_until(two_on_two_peers, 60, what="2 ready endpoints on 2 peers")
    service = cluster.api("n1", "GET", "/v1/objects/Service/default/web")
    return placed, int(service["spec"]["ports"][0]["nodePort"])


def services_story(cluster: LocalCluster) -> tuple[str, int]:
    """examples/web.yaml: its Service and endpoints, a curl through a peer that runs no
    replica, then a GET load through that peer while a replica's peer is killed. Returns the
    peer curled through and the NodePort."""
    placed, port = serve_web(cluster)
    holders = set(placed.values())
    empty = next(n for n in NAMES if n not in holders)
    url = f"http://{cluster.node_ip(empty)}:{port}/hello?x=1"
    step(f"the Service and its ready endpoints, as {empty} (which runs no replica) sees them")
    show(cluster, empty, "get", "svc")
    show(cluster, empty, "get", "endpoints")
    step(f"curl the NodePort on {empty}'s --node-ip: a replica on another peer answers")
    curl(url, "X-Echo: hello")

    victim = sorted(holders - {"n1"})[0]
    step(
        f"{LOAD_RATE} GET/s through {empty}'s NodePort; after {LOAD_BEFORE_KILL:.0f}s, kill -9"
        f" {victim} (it holds a replica), then {LOAD_AFTER_KILL:.0f}s more"
    )
    report_load(load_while(url, lambda: cluster.kill(victim)))
    cluster.start_agent(victim)
    cluster.wait_api(victim)
    wait_until(lambda: all_ready(cluster, "n1", NAMES), 30, what=f"{victim} Ready again")
    step(f"{victim} is back; web's endpoints now (its replacement replica stays where it went)")
    show(cluster, empty, "get", "endpoints")
    return empty, port


DEMO_PORT = 8787


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def lan_address() -> str | None:
    """This machine's first IPv4 address on an interface that is up, other than loopback."""
    stats = psutil.net_if_stats()
    for interface, addresses in psutil.net_if_addrs().items():
        if interface == "lo" or not stats.get(interface, None) or not stats[interface].isup:
            continue
        for address in addresses:
            if address.family.name == "AF_INET" and not address.address.startswith("127."):
                return str(address.address)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, help="exit after N seconds")
    parser.add_argument("--root", type=Path, default=Path("demo-data"))
    parser.add_argument(
        "--lan",
        action="store_true",
        help="listen on every interface and offer this machine's LAN address, so browsers on "
        "the same network can join (default: 127.0.0.1 only)",
    )
    args = parser.parse_args()
    shutil.rmtree(args.root, ignore_errors=True)
    lan = lan_address() if args.lan else None
    if args.lan and lan is None:
        print("--lan: this machine has no LAN address; staying on 127.0.0.1", file=sys.stderr)
    cluster = LocalCluster(args.root, signaling_port=DEMO_PORT if port_free(DEMO_PORT) else 0)
    if lan is not None:
        cluster.listen_host = "0.0.0.0"
        cluster.ice_addresses = ["127.0.0.1", lan]
    where = "every interface (0.0.0.0)" if lan is not None else "127.0.0.1 only"
    started = time.monotonic()
    try:
        step(f"starting the signaling server on {where} (logs in {args.root}/)")
        cluster.start_signaling()
        print(f"signaling at {cluster.url}, a fresh random join token (in $P2PKUBE_TOKEN)")
        for name in NAMES:
            step(f"p2pkube join {cluster.url} --name {name} --label zone={ZONES[name]}")
            cluster.start_agent(name, "--label", f"zone={ZONES[name]}")
        # 30 s for each agent, as the waits one after the other gave before (a loaded machine)
        up = 30 * len(NAMES)
        counting("agents answering", len(NAMES), lambda: answering(cluster), up, what="APIs")
        step("waiting until every peer sees three Ready nodes")
        counting(
            "nodes Ready, as each peer sees them",
            len(NAMES) ** 2,
            lambda: sum(ready_count(cluster, name) for name in NAMES),
            30 * len(NAMES),
            what="3 Ready nodes on every peer",
        )
        show(cluster, "n2", "get", "nodes")
        show(cluster, "n1", "get", "nodes", "-o", "wide")

        step("write a ConfigMap on n1, read it on n3 (CRDT state over WebRTC)")
        show(cluster, "n1", "create", "configmap", "greeting", "--from-literal", "hello=world")
        wait_until(
            lambda: cluster.cli("n3", "get", "configmap", "greeting", check=False).returncode == 0,
            10,
            what="the ConfigMap on n3",
        )
        show(cluster, "n3", "get", "configmap", "greeting", "-o", "yaml")

        step("apply a Deployment on n1: 3 wasm replicas placed across the peers")
        show(cluster, "n1", "apply", "-f", str(DEPLOYMENT))
        running: list[list[dict[str, Any]]] = [[]]

        def replicas_running() -> int:
            running[0] = pods(cluster, "n2", "primes")
            return len(running[0])

        counting("primes replicas Running", 3, replicas_running, 60, what="3 replicas")
        replicas = running[0]
        show(cluster, "n2", "get", "deployments")
        show(cluster, "n2", "get", "pods", "-o", "wide")
        remote = next(p for p in replicas if p["spec"]["nodeName"] != "n3")
        first, where = remote["metadata"]["name"], remote["spec"]["nodeName"]
        step(f"the logs of {first}, read on n3, served by {where} over the mesh")
        wait_until(lambda: cluster.cli("n3", "logs", first).stdout.strip(), 20, what="a round")
        show(cluster, "n3", "logs", first)

        step("apply a Job on n2: 4 runs, 2 at a time, to completion")
        show(cluster, "n2", "apply", "-f", str(JOB))
        counting(
            "primes-batch runs succeeded",
            4,
            lambda: job_succeeded(cluster, "n1", "primes-batch"),
            120,
            what="the Job",
        )
        wait_until(lambda: job_complete(cluster, "n1", "primes-batch"), 30, what="the Job")
        show(cluster, "n1", "get", "jobs")
        show(cluster, "n1", "get", "pods", "-l", "app=primes-batch", "-o", "wide")

        step("apply a Python pod on n3: a script from a ConfigMap, run by MicroPython (wasm)")
        show(cluster, "n3", "apply", "-f", str(PYTHON))
        wait_until(lambda: job_complete(cluster, "n3", "python-hello"), 60, what="the Python Job")
        listed = cluster.cli("n3", "get", "pods", "-l", "app=python-hello", "-o", "json").stdout
        show(cluster, "n3", "logs", json.loads(listed)["items"][0]["metadata"]["name"])

        victim = next(p["spec"]["nodeName"] for p in replicas if p["spec"]["nodeName"] != "n1")
        step(f"kill -9 {victim}: its replica is replaced on another peer")
        killed = time.monotonic()
        cluster.kill(victim)

        def replaced() -> bool:
            now = pods(cluster, "n1", "primes")
            return len(now) == 3 and victim not in {p["spec"]["nodeName"] for p in now}

        wait_until(replaced, 30, interval=0.05, what="a replacement replica")
        print(f"3 replicas Running again {time.monotonic() - killed:.1f}s after the kill")
        show(cluster, "n1", "get", "nodes")
        show(cluster, "n1", "get", "pods", "-l", "app=primes", "-o", "wide")
        cluster.start_agent(victim)
        cluster.wait_api(victim)
        wait_until(lambda: all_ready(cluster, "n1", NAMES), 30, what=f"{victim} Ready again")
        step(f"{victim} is back: the cluster still runs exactly 3 replicas")
        show(cluster, "n1", "get", "deployments")
        show(cluster, "n1", "get", "events", tail=8)

        web_peer, web_port = services_story(cluster)

        step("make a browser tab a node: open this page (in Chrome or Firefox)")
        print(f"  on this machine:       {cluster.page_url('localhost')}")
        if lan is not None:
            print(f"  on the same network:   {cluster.page_url(lan)}")
        print("  then: p2pkube get nodes lists it (kind browser), and pods with")
        print("  nodeSelector {p2pkube.io/kind: browser} run in the tab (examples/browser.yaml);")
        print("  its Services section fetch()es web through the tab's Service Worker")
        print("  (/api/v1/namespaces/default/services/web/proxy/hello?x=1)")

        step("the cluster keeps running; try it from another terminal, Ctrl-C to stop:")
        n1 = f".venv/bin/p2pkube --data-dir {cluster.root / 'n1'}"
        for command in (
            "get nodes",
            "get pods -o wide -w",
            "scale deployment primes --replicas 5",
            "describe deployment primes",
            f"logs -f {first}",
        ):
            print(f"  {n1} {command}")
        print(f"  curl 'http://{cluster.node_ip(web_peer)}:{web_port}/hello?x=1'")
        print(f"  {n1} port-forward svc/web 8080:80    # then: curl http://127.0.0.1:8080/hello")
        stop = False

        def on_signal(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stop:
            if args.duration is not None and time.monotonic() - started > args.duration:
                break
            time.sleep(0.2)
        return 0
    except Exception as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        traceback.print_exc()
        for name in ["signaling", *NAMES]:
            print(f"--- {name} log ---\n{cluster.log_tail(name)}", file=sys.stderr)
        return 1
    finally:
        step("stopping the cluster")
        for name in NAMES:
            if name in cluster.agents:
                cluster.kill(name, signal.SIGTERM)
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
