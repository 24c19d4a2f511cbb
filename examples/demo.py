"""`make demo`: a local 3-peer cluster on loopback doing real work, narrated step by step.

Starts `p2pkube signal` and three `p2pkube join` agents as separate processes (data under
./demo-data), shows `p2pkube get nodes` from different peers, writes a ConfigMap on one peer and
reads it on another, applies examples/pods.yaml (WebAssembly pods placed on other peers, their
modules fetched peer to peer) and shows their status and logs from a peer that did not run them,
kills a peer with SIGKILL, watches the others mark it NotReady, restarts it with the same data
dir and shows it Ready again with all its state and its pods taken back. Then it keeps the
cluster running until Ctrl-C (or --duration seconds) so you can try the CLI yourself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from pathlib import Path

from p2pkube.devcluster import LocalCluster, wait_until

NAMES = ["n1", "n2", "n3"]
PODS = Path(__file__).resolve().parent / "pods.yaml"
ZONES = {"n1": "a", "n2": "b", "n3": "a"}


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(cluster: LocalCluster, peer: str, *args: str) -> None:
    print(f"$ p2pkube --data-dir {cluster.root / peer} {' '.join(args)}", flush=True)
    print(cluster.cli(peer, *args).stdout.rstrip(), flush=True)


def phase(cluster: LocalCluster, peer: str, pod: str) -> str | None:
    result = cluster.cli(peer, "get", "pod", pod, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    return (json.loads(result.stdout).get("status") or {}).get("phase")


def all_ready(cluster: LocalCluster, peer: str, names: list[str]) -> bool:
    nodes = cluster.nodes(peer)
    return all(nodes.get(n) == "True" for n in names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, help="exit after N seconds")
    parser.add_argument("--root", type=Path, default=Path("demo-data"))
    args = parser.parse_args()
    shutil.rmtree(args.root, ignore_errors=True)
    cluster = LocalCluster(args.root)
    started = time.monotonic()
    try:
        step(f"starting the signaling server on 127.0.0.1 (logs in {args.root}/)")
        cluster.start_signaling()
        print(f"signaling at {cluster.url}, join token {cluster.token}")
        for name in NAMES:
            step(f"p2pkube join {cluster.url} --name {name} --label zone={ZONES[name]}")
            cluster.start_agent(name, "--label", f"zone={ZONES[name]}")
        for name in NAMES:
            cluster.wait_api(name)
        step("waiting until every peer sees three Ready nodes")
        for name in NAMES:
            wait_until(lambda name=name: all_ready(cluster, name, NAMES), 30, what="3 Ready nodes")
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

        step("apply examples/pods.yaml on n1: wasm pods for n2 and n3, modules shared peer to peer")
        show(cluster, "n1", "apply", "-f", str(PODS))
        for pod, done in (("hello", "Succeeded"), ("primes", "Succeeded"), ("ticker", "Running")):
            wait_until(lambda p=pod, d=done: phase(cluster, "n1", p) == d, 60, what=f"{pod} {done}")
        show(cluster, "n2", "get", "pods", "-o", "wide")
        step("their logs, read on n1, served by the nodes that ran them (over the mesh)")
        show(cluster, "n1", "logs", "hello")
        show(cluster, "n1", "logs", "primes")
        show(cluster, "n1", "logs", "ticker", "--tail", "2", "--timestamps")

        step("kill -9 n3: the others mark it NotReady after the heartbeat timeout")
        killed = time.monotonic()
        cluster.kill("n3")
        wait_until(lambda: cluster.nodes("n1").get("n3") == "False", 15, what="n3 NotReady")
        print(f"n1 saw n3 NotReady {time.monotonic() - killed:.1f}s after the kill")
        show(cluster, "n1", "get", "nodes")

        step("write while n3 is down, then restart n3 with the same data dir")
        show(cluster, "n2", "create", "configmap", "while-n3-was-down", "--from-literal", "x=1")
        cluster.start_agent("n3")
        cluster.wait_api("n3")
        wait_until(lambda: all_ready(cluster, "n1", NAMES), 30, what="n3 Ready again")
        wait_until(
            lambda: (
                cluster.cli("n3", "get", "configmap", "while-n3-was-down", check=False).returncode
                == 0
            ),
            15,
            what="resync on n3",
        )
        show(cluster, "n3", "get", "configmaps")
        show(cluster, "n1", "get", "nodes")
        step("n3 took its pods back: the ticker died with the agent and was restarted")
        wait_until(lambda: phase(cluster, "n2", "ticker") == "Running", 30, what="ticker again")
        show(cluster, "n2", "get", "pods")

        step("the cluster keeps running; try it from another terminal, Ctrl-C to stop:")
        for name in NAMES:
            print(f"  .venv/bin/p2pkube --data-dir {cluster.root / name} get nodes")
        print(f"  .venv/bin/p2pkube --data-dir {cluster.root / 'n1'} logs -f ticker")
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
