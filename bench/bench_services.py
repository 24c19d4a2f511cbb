"""Services: HTTP requests through a NodePort to wasm handler pods, against plain HTTP.

A real cluster on loopback (signaling and agents as processes, started as ``p2pkube join``),
each agent on its own ``--node-ip`` (127.0.0.x). Agent ``n1`` is labelled ``place=a``, ``n2`` and
``n3`` ``place=b``. Two Deployments of ``examples/build/echo.wasm`` (the CGI echo handler of
examples/web.yaml), each behind a NodePort Service:

* ``local``: 2 replicas on n1 (nodeSelector ``place=a``), NodePort 30081;
* ``remote``: 2 replicas on n2 and n3 (nodeSelector ``place=b``), NodePort 30082.

The client (this process, aiohttp, keep-alive) always talks to n1's NodePort, so ``local``
measures the front door plus a handler instance on the same node, and ``remote`` adds one mesh
hop (the request rpc over a WebRTC data channel) each way. With ``--browser``, a headless
Chromium tab joins as a node and a third Service, ``tab`` (NodePort 30083), has its replica in
the tab.

Measured: latency of sequential GETs (p50/p99), requests/s at concurrency 32 for a few
seconds, and failover: a steady 50 GET/s through n1 to ``remote`` while ``n3`` (one of its
two replicas) is killed with SIGKILL; every GET that fails counts, and p99 latency is taken
over the requests sent from the kill on.

Baselines, same run, same client code: the same handler run in-process (only the warm
instance start and run of echo.wasm through the native runtime, no HTTP), and a plain aiohttp
"hello" server on loopback in its own process (what the client and HTTP alone cost here).

Run: ``.venv/bin python -m bench.bench_services [--requests 400] [--seconds 5] [--browser]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.benchlib import REPO, emit, markdown_table, summary_ms, yes
from harness import chaos
from p2pkube.devcluster import LocalCluster, free_port, wait_until

TITLE = "Services: requests through a NodePort to wasm handler pods"
"""The heading of this benchmark's section in docs/benchmarks.md."""
ECHO = REPO / "examples" / "build" / "echo.wasm"
NATIVES = ["n1", "n2", "n3"]
PLACES = {"n1": "a", "n2": "b", "n3": "b"}
PORTS = {"local": 30081, "remote": 30082, "tab": 30083}
CONCURRENCY = 32
FAILOVER_RATE = 50
TARGET_LOCAL_P99_MS = 5.0
TARGET_HOP_P99_MS = 15.0
TARGET_RPS = 1000.0
TARGET_FAILOVER_P99_MS = 1000.0

HELLO_SERVER = textwrap.dedent(
    """
    import sys
    from aiohttp import web

    async def hello(request):
        return web.Response(text="hello\\n")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)


def manifest(name: str, place: str | None, kind: str | None, replicas: int) -> str:
    """A Deployment of echo.wasm and its NodePort Service, as YAML text."""
    selector = {"place": place} if place else {"p2pkube.io/kind": kind}
    echo = {
        "name": "echo",
        "image": str(ECHO),
        "ports": [{"name": "http", "containerPort": 8080}],
        "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
    }
    pod = {
        "metadata": {"labels": {"app": name}},
        "spec": {"nodeSelector": selector, "containers": [echo]},
    }
    deployment = chaos.deployment(name, replicas, pod)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "NodePort",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": PORTS[name]}],
        },
    }
    return "\n---\n".join(json.dumps(doc) for doc in (deployment, service))


def node_ip(cluster: LocalCluster, name: str) -> str:
    """The InternalIP a node publishes (its ``--node-ip``), else 127.0.0.1."""
    node = json.loads(cluster.cli(name, "get", "node", name, "-o", "json").stdout)
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP" and address.get("address") not in ("", "0.0.0.0"):
            return str(address["address"])
    return "127.0.0.1"


def wait_for(check: Any, seconds: float, what: str) -> None:
    """``wait_until`` polling every 0.2 s (callable through ``asyncio.to_thread``)."""
    wait_until(check, seconds, interval=0.2, what=what)


def apply(cluster: LocalCluster, work: Path, name: str, text: str) -> None:
    path = work / f"{name}.yaml"
    path.write_text(text)
    cluster.cli("n1", "apply", "-f", str(path))


# -- the client ------------------------------------------------------------------------------------


async def get_once(session: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    """(seconds, status) of one GET whose body is read to the end; status 0: it failed."""
    started = time.perf_counter()
    try:
        async with session.get(url) as response:
            await response.read()
            status = response.status
    except (TimeoutError, aiohttp.ClientError):
        status = 0
    return time.perf_counter() - started, status


async def latency(url: str, requests: int) -> dict[str, Any]:
    """Sequential GETs on one keep-alive connection, after a warm-up."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(max(20, requests // 10)):
            await get_once(session, url)
        results = [await get_once(session, url) for _ in range(requests)]
    failed = sum(1 for _, status in results if status != 200)
    return {**summary_ms([t for t, _ in results]), "failed": failed}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) used so far by each process, and by this one as "client";
    an agent's request worker processes (``runtime.request_processes``) as "NAME workers"."""
    used = {"client": time.process_time()}
    for name, pid in pids.items():
        process = psutil.Process(pid)
        times = process.cpu_times()
        used[name] = times.user + times.system
        children = process.children()
        if children:
            used[f"{name} workers"] = sum(sum(c.cpu_times()[:2]) for c in children)
    return used


async def throughput(
    url: str,
    seconds: float,
    concurrency: int = CONCURRENCY,
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Requests/s with ``concurrency`` clients looping for ``seconds``; with ``pids``, also the
    CPU ms per answered request of each of those processes and of the client (what limits
    the rate on this 2-core machine)."""
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    done: list[tuple[float, int]] = []
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for _ in range(concurrency):  # open the connections first
            await get_once(session, url)
        stop = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < stop:
                done.append(await get_once(session, url))

        started = time.monotonic()
        before = cpu_seconds(pids or {})
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        after = cpu_seconds(pids or {})
        took = time.monotonic() - started
    ok = [t for t, status in done if status == 200]
    result = {
        "rps": round(len(ok) / took, 1),
        "failed": len(done) - len(ok),
        "latency": summary_ms(ok),
    }
    if pids and ok:
        result["cpuMsPerRequest"] = {
            name: round((after[name] - before.get(name, 0.0)) / len(ok) * 1000, 2) for name in after
        }
    return result


async def failover(
    cluster: LocalCluster, url: str, victim: str, before: float, after: float
) -> dict[str, Any]:
    """A steady ``FAILOVER_RATE`` GET/s; ``victim`` is killed with SIGKILL after ``before`` s."""
    timeout = aiohttp.ClientTimeout(total=10)
    results: list[tuple[float, float, int]] = []  # (sent at, seconds, status)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(sent: float) -> None:
            took, status = await get_once(session, url)
            results.append((sent, took, status))

        started = time.monotonic()
        killed_at: float | None = None
        n = 0
        while time.monotonic() - started < before + after:
            if killed_at is None and time.monotonic() - started >= before:
                killed_at = time.monotonic()
                await asyncio.to_thread(cluster.kill, victim)
            sent = started + n / FAILOVER_RATE
            await asyncio.sleep(max(0.0, sent - time.monotonic()))
            task = asyncio.create_task(one(time.monotonic()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.wait(tasks, timeout=15)
    assert killed_at is not None
    during = [took for sent, took, _ in results if sent >= killed_at]
    failures = [status for _, _, status in results if status != 200]
    return {
        "requests": len(results),
        "failed": len(failures),
        "failedStatuses": sorted(set(failures)),
        "afterKill": summary_ms(during),
        "rate": FAILOVER_RATE,
    }


# -- baselines -------------------------------------------------------------------------------------


async def in_process(work: Path, reps: int) -> dict[str, Any]:
    """echo.wasm as one CGI request, in this process: the warm instance start and run only."""
    from p2pkube.runtime import interface as rt
    from p2pkube.runtime.cgi import CgiRequest, cgi_environ
    from p2pkube.runtime.native import NativeRuntime
    from p2pkube.runtime.settings import RuntimeSettings

    digest = "sha256:" + hashlib.sha256(ECHO.read_bytes()).hexdigest()
    env = cgi_environ(
        CgiRequest(method="GET", path="/hello", query="x=1"),
        container_env={},
        pod_name="bench",
        pod_namespace="default",
        node_name="bench",
    )
    runtime = NativeRuntime(work / "in-process", RuntimeSettings())
    times = []
    try:
        await runtime.prepare(digest, ECHO)
        await asyncio.to_thread(runtime.loader.wait_optimized, 60)
        for n in range(reps + 20):
            out = bytearray()
            launch = rt.Launch(
                pod="bench/echo",
                container="echo",
                image=digest,
                module_path=ECHO,
                argv=["echo"],
                env=sorted(env.items()),
                limits=rt.Limits(memory_bytes=32 << 20),
                log_path=work / "in-process" / "logs" / f"{n}.log",
                stdin=b"",
                stdout=out.extend,
            )
            started = time.perf_counter()
            termination = await runtime.start(launch).done
            if termination.reason != rt.COMPLETED:
                raise RuntimeError(f"echo.wasm ended {termination.reason}: {termination.message}")
            if n >= 20:
                times.append(time.perf_counter() - started)
    finally:
        await runtime.close()
    return summary_ms(times)


@contextlib.asynccontextmanager
async def hello_server() -> Any:
    """A plain aiohttp hello server on loopback, in its own process."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", HELLO_SERVER, str(port)])  # noqa: ASYNC220 - returns at once
    url = f"http://127.0.0.1:{port}/hello"
    try:
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise TimeoutError("the hello server did not start")
                await asyncio.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


# -- the run ---------------------------------------------------------------------------------------


async def tab_latency(cluster: LocalCluster, work: Path, url: str, requests: int) -> dict[str, Any]:
    """Start a Chromium tab node, place the ``tab`` Service's replica in it, measure."""
    from playwright.async_api import async_playwright

    from harness.chromium import CHROMIUM, CHROMIUM_ARGS

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            await page.goto(cluster.page_url())
            await page.wait_for_function("window.p2pkubeSnapshot()?.node?.name", timeout=60_000)
            await asyncio.to_thread(
                apply, cluster, work, "tab", manifest("tab", None, "browser", 1)
            )
            await asyncio.to_thread(
                wait_for, lambda: len(cluster.ready_endpoints("n1", "tab")) == 1, 90, "tab endpoint"
            )
            return await latency(url, requests)
        finally:
            await browser.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "services", "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-services-") as tmp:
        work = Path(tmp)
        result["inProcess"] = await in_process(work, args.requests)
        async with hello_server() as hello:
            result["aiohttp"] = {
                "latency": await latency(hello, args.requests),
                "throughput": await throughput(hello, args.seconds),
            }
        cluster = LocalCluster(work / "cluster")
        try:
            cluster.start_signaling()
            for name in NATIVES:
                settings = [word for value in args.set for word in ("--set", value)]
                cluster.start_agent(name, "--label", f"place={PLACES[name]}", *settings)
            await asyncio.to_thread(start_cluster_ready, cluster)
            for name, place in (("local", "a"), ("remote", "b")):
                await asyncio.to_thread(apply, cluster, work, name, manifest(name, place, None, 2))
            for name in ("local", "remote"):
                await asyncio.to_thread(
                    wait_for,
                    lambda n=name: len(cluster.ready_endpoints("n1", n)) == 2,
                    90,
                    f"{name} endpoints",
                )
            ip = await asyncio.to_thread(node_ip, cluster, "n1")
            url = {name: f"http://{ip}:{port}/hello?x=1" for name, port in PORTS.items()}
            result["nodeIp"] = ip
            pids = {
                name: agent.process.pid
                for name, agent in cluster.agents.items()
                if agent.process is not None
            }
            result["local"] = {
                "latency": await latency(url["local"], args.requests),
                "throughput": await throughput(url["local"], args.seconds, pids=pids),
            }
            result["remote"] = {
                "latency": await latency(url["remote"], args.requests),
                "throughput": await throughput(url["remote"], args.seconds, pids=pids),
            }
            if args.browser:
                result["tab"] = {
                    "latency": await tab_latency(cluster, work, url["tab"], args.requests)
                }
            result["failover"] = await failover(cluster, url["remote"], "n3", 5.0, 10.0)
        finally:
            await asyncio.to_thread(cluster.close)
    return result


def start_cluster_ready(cluster: LocalCluster) -> None:
    """Wait until every agent answers and sees every node Ready (agents already started)."""
    for name in NATIVES:
        cluster.wait_api(name, timeout=90)
    wait_for(
        lambda: all(
            set(view := cluster.nodes(n)) == set(NATIVES)
            and all(v == "True" for v in view.values())
            for n in NATIVES
        ),
        120,
        "every node Ready on every agent",
    )


# -- the report ------------------------------------------------------------------------------------


def _lat(entry: dict[str, Any]) -> tuple[float, float]:
    return entry["p50"], entry["p99"]


def latency_table(result: dict[str, Any]) -> str:
    rows = [
        ["NodePort, endpoint on the same node", *_lat(result["local"]["latency"])],
        ["NodePort, endpoint one hop away", *_lat(result["remote"]["latency"])],
    ]
    if "tab" in result:
        rows.append(["NodePort, endpoint in a browser tab", *_lat(result["tab"]["latency"])])
    rows += [
        ["baseline: echo.wasm in-process (warm instance start)", *_lat(result["inProcess"])],
        ["baseline: plain aiohttp hello server", *_lat(result["aiohttp"]["latency"])],
    ]
    return markdown_table(["path", "p50 ms", "p99 ms"], rows)


def _cpu(run: dict[str, Any]) -> str:
    """CPU ms per request of each agent and of the client, as measured in ``run``."""
    cpu = run.get("cpuMsPerRequest")
    return " / ".join(f"{name} {ms}" for name, ms in cpu.items()) if cpu else "-"


def throughput_table(result: dict[str, Any]) -> str:
    rows = [
        [label, run["rps"], run["failed"], _cpu(run)]
        for label, run in (
            ("NodePort, local endpoints", result["local"]["throughput"]),
            ("NodePort, remote endpoints", result["remote"]["throughput"]),
            ("baseline: plain aiohttp hello server", result["aiohttp"]["throughput"]),
        )
    ]
    return markdown_table(
        ["path (concurrency 32)", "requests/s", "failed", "CPU ms per request"], rows
    )


def cpu_bound(result: dict[str, Any]) -> str:
    """What bounds the c=32 rows: the CPU every process used per request, times the rate,
    against this machine's cores (all the agents, their workers and the client share them)."""
    cores = result.get("cores") or os.cpu_count() or 1
    parts = []
    for label in ("local", "remote"):
        run = result[label]["throughput"]
        cpu = run.get("cpuMsPerRequest")
        if not cpu:
            return ""
        total = sum(cpu.values())
        parts.append(f"{label} {total:.2f} ms per request, {total * run['rps'] / 1000:.2f} cores")
    remote = result["remote"]["throughput"]["cpuMsPerRequest"]
    endpoint_nodes = [ms for name, ms in remote.items() if name in ("n2", "n3")]
    return (
        f"What bounds the concurrency-32 rows is this machine's {cores} cores: all processes "
        f"together used {'; '.join(parts)} at the rates measured. A remote request adds the "
        f"mesh hop (the request rpc over aiortc's DTLS and SCTP, in Python, signed): "
        f"{remote.get('n1', 0):.2f} ms of n1's CPU with no wasm run there, and about "
        f"{sum(endpoint_nodes):.2f} ms in the endpoint nodes' agents besides their workers."
    )


def render(result: dict[str, Any]) -> list[str]:
    fo = result["failover"]
    after = fo["afterKill"]
    return [
        "Three agents on loopback, each on its own --node-ip; the client talks to n1's NodePort "
        f"({result['nodeIp']}). Handler: examples/build/echo.wasm, one instance per request.",
        "",
        latency_table(result),
        "",
        throughput_table(result),
        "",
        cpu_bound(result),
        "",
        f"Failover: {fo['rate']} GET/s through n1 to `remote` (replicas on n2 and n3), n3 killed "
        f"with SIGKILL after 5 s: {fo['failed']} of {fo['requests']} GETs failed"
        + (f" (statuses {fo['failedStatuses']})" if fo["failed"] else "")
        + f"; latency from the kill on: p50 {after['p50']} ms, p99 {after['p99']} ms, "
        f"max {after['max']} ms.",
    ]


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    local, remote, fo = result["local"], result["remote"], result["failover"]
    hello = result["aiohttp"]
    return [
        [
            "Service via NodePort, local endpoint, p99",
            f"{local['latency']['p99']} ms (aiohttp hello {hello['latency']['p99']} ms)",
            f"< {TARGET_LOCAL_P99_MS:g} ms",
            yes(local["latency"]["p99"] < TARGET_LOCAL_P99_MS),
        ],
        [
            "Service via NodePort, one hop, p99",
            f"{remote['latency']['p99']} ms",
            f"< {TARGET_HOP_P99_MS:g} ms",
            yes(remote["latency"]["p99"] < TARGET_HOP_P99_MS),
        ],
        [
            "Service requests/s at c=32, local endpoints",
            f"{local['throughput']['rps']:,.0f} (aiohttp hello {hello['throughput']['rps']:,.0f})",
            f">= {TARGET_RPS:,.0f}",
            yes(local["throughput"]["rps"] >= TARGET_RPS),
        ],
        [
            "Service failover: failed GETs; p99 after the kill",
            f"{fo['failed']}; {fo['afterKill']['p99']} ms",
            f"0; < {TARGET_FAILOVER_P99_MS:g} ms",
            yes(fo["failed"] == 0 and fo["afterKill"]["p99"] < TARGET_FAILOVER_P99_MS),
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="sequential GETs per latency row")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run")
    parser.add_argument("--browser", action="store_true", help="also measure an endpoint in a tab")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an agent setting for every agent, e.g. runtime.request_processes=2 (repeatable)",
    )
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print("\n".join(render(result)))
    emit(result)


if __name__ == "__main__":
    main()
