"""The native node (``p2pkube join``): a :class:`~p2pkube.node.Node` over aiortc links, with
wasmtime pods, its identity and state on disk, and the local API for the CLI.

It runs in the foreground until SIGINT or SIGTERM, then leaves gracefully (see Node.stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psutil

from p2pkube.api.nodeport import NodePorts, node_addresses
from p2pkube.api.server import MAX_BODY_BYTES, ApiServer
from p2pkube.fsutil import PRIVATE_UMASK, make_private
from p2pkube.logformat import configure_logging, json_logging
from p2pkube.metrics.settings import parse_address
from p2pkube.model.quantity import format_bytes, format_cpu, parse_quantity
from p2pkube.net import ice
from p2pkube.net.aiohttp_websocket import aiohttp_connect
from p2pkube.net.identity import NodeIdentity, verify_signature
from p2pkube.net.jointoken import cluster_id, secrets_key
from p2pkube.net.link import peer_link_factory
from p2pkube.net.mesh import Mesh
from p2pkube.net.signaling_client import SignalingRejected
from p2pkube.node import KIND_LABEL, Node, NodeConfig
from p2pkube.observe import NO_OBSERVER
from p2pkube.runtime.hostpaths import HostPathPolicy
from p2pkube.runtime.native import NativeRuntime
from p2pkube.sched.view import involved
from p2pkube.sealing import AesGcmSealer
from p2pkube.settings import AgentSettings
from p2pkube.state.pycrdt_store import PycrdtStore

if TYPE_CHECKING:  # prometheus_client (~3 MB) is loaded only when metrics are on
    from p2pkube.metrics.exporter import AgentMetrics
    from p2pkube.metrics.server import MetricsServer

log = logging.getLogger("p2pkube.agent")

__all__ = ["KIND_LABEL", "Agent", "JoinOptions", "run_agent", "websocket_url"]


@dataclass
class JoinOptions:
    """Everything ``p2pkube join`` passes to the agent."""

    signaling_url: str
    token: str
    name: str
    data_dir: Path
    labels: dict[str, str] = field(default_factory=dict)
    max_peers: int = 8
    ice_addresses: list[str] = field(default_factory=list)
    cpu: str | None = None
    memory: str | None = None
    api_port: int = 0
    kube_api_port: int = 0
    """The Kubernetes API's port (HTTPS on 127.0.0.1; 0: any free port)."""
    log_level: str = "info"
    log_format: str = "text"
    """``text`` or ``json`` (one object per line on stderr; ``p2pkube.logformat``)."""
    kind: str = "native"
    overrides: list[str] = field(default_factory=list)
    """``SECTION.FIELD=VALUE`` settings overrides (``p2pkube join --set``)."""
    allowed_host_paths: list[str] = field(default_factory=list)
    """``PREFIX[:rw]`` host directories pods may mount (``p2pkube join --allow-host-path``),
    added to ``kubelet.allowed_host_paths``."""
    node_ip: str = "0.0.0.0"
    """Where this node's NodePorts listen (``p2pkube join --node-ip``, as the kubelet's flag);
    all interfaces by default. Published as the Node's InternalIP."""
    metrics_address: str | None = None
    """``HOST:PORT`` of the Prometheus endpoint (``p2pkube join --metrics-address``, the
    setting ``metrics.address``); None: the setting decides (off by default)."""


def websocket_url(url: str) -> str:
    """``ws://HOST:PORT`` as users type it, completed with the server's ``/ws`` endpoint."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
        raise ValueError(f"signaling URL {url!r} must look like ws://HOST:PORT")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def settings_for(options: JoinOptions) -> AgentSettings:
    """The settings of a native node: defaults, the join flags, then every ``--set``."""
    settings = AgentSettings()
    settings.transport.max_peers = options.max_peers
    if options.ice_addresses:
        settings.transport.ice_host_addresses = list(options.ice_addresses)
    if options.metrics_address is not None:
        settings.metrics.address = options.metrics_address
    for assignment in options.overrides:
        settings.override(assignment)
    kubelet = settings.kubelet  # grants add up, whichever way they were given
    kubelet.allowed_host_paths = [*kubelet.allowed_host_paths, *options.allowed_host_paths]
    settings.check()
    return settings


def capacity_of(options: JoinOptions) -> dict[str, str]:
    """CPU and memory this node offers: the flags if given, else what the machine has."""
    cpu = parse_quantity(options.cpu) if options.cpu else Fraction(os.cpu_count() or 1)
    memory = (
        int(parse_quantity(options.memory)) if options.memory else psutil.virtual_memory().total
    )
    return {"cpu": format_cpu(cpu), "memory": format_bytes(memory)}


class ProcessMeter:
    """The CPU seconds and resident bytes of the agent's process and its request workers
    (``runtime/procs.py``): the node's measured usage (``runtime/usage.py``; called off the
    loop). The workers are the runtime's own pids, not ``psutil.Process.children()``, which
    reads every process's ``/proc`` entry at each call. A worker that ends between two
    readings takes its seconds with it (that window then reads low)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.process = psutil.Process()
        self._children: dict[int, psutil.Process] = {}

    def __call__(self) -> tuple[float, int]:
        with self.process.oneshot():
            times = self.process.cpu_times()
            cpu, memory = times.user + times.system, self.process.memory_info().rss
        pids = set(self.pids())
        self._children = {pid: self._children.get(pid) or psutil.Process(pid) for pid in pids}
        for child in self._children.values():
            with contextlib.suppress(psutil.Error):  # it may end meanwhile
                with child.oneshot():
                    times = child.cpu_times()
                    cpu, memory = cpu + times.user + times.system, memory + child.memory_info().rss
        return cpu, memory


def validate_on_first_use(
    obj: dict[str, Any], warn: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """``model.schema.validate_object``, imported at the first write: pydantic and the models
    add ~8 MB to an agent's RSS, which an agent nobody writes through never needs."""
    from p2pkube.model.schema import validate_object

    return validate_object(obj, warn)


class Agent(Node):
    """A native node; also the backend of the local API (``p2pkube.api.backend``)."""

    def __init__(self, options: JoinOptions) -> None:
        self.options = options
        settings = settings_for(options)
        self.identity = NodeIdentity.load_or_create(options.data_dir)
        self.metrics: AgentMetrics | None = None
        """The Prometheus series (``--metrics-address``); None, and nothing measured, when off."""
        self.metrics_server: MetricsServer | None = None
        if settings.metrics.address:
            from p2pkube.metrics.exporter import AgentMetrics

            self.metrics = AgentMetrics(
                settings.metrics,
                node=options.name,
                cluster=cluster_id(options.token),
                kind=options.kind,
            )

        mesh = Mesh(
            identity=self.identity,
            name=options.name,
            kind=options.kind,
            cluster=cluster_id(options.token),
            token=options.token,
            signaling_url=websocket_url(options.signaling_url),
            settings=settings.transport,
            # The native platform: aiortc links (a bad STUN/TURN setting is a ValueError
            # here), an aiohttp WebSocket to signaling, cryptography's Ed25519.
            link_factory=peer_link_factory(settings.transport),
            connect=aiohttp_connect,
            check_signature=verify_signature,
        )
        super().__init__(
            NodeConfig(
                name=options.name,
                kind=options.kind,
                token=options.token,
                data_dir=options.data_dir,
                settings=settings,
                capacity=capacity_of(options),
                labels=dict(options.labels),
                host_paths=HostPathPolicy.for_node(
                    settings.kubelet.allowed_host_paths, options.data_dir
                ),
                addresses=node_addresses(options.node_ip, options.name),
                process_usage=ProcessMeter(self._request_pids),
            ),
            mesh=mesh,
            runtime_factory=lambda: NativeRuntime(options.data_dir, settings.runtime),
            store_factory=PycrdtStore,
            validate=validate_on_first_use,
            sealer=AesGcmSealer(secrets_key(options.token)),
            observer=self.metrics or NO_OBSERVER,
        )
        self.api = ApiServer(
            self,
            options.data_dir,
            port=options.api_port,
            kube_port=options.kube_api_port,
            kube_settings=self.settings.kubeapi,
            blobs=self.blobs,
            # JSON can be a few times the stored encoding (escapes): room above the object cap.
            max_body_bytes=max(MAX_BODY_BYTES, 4 * self.settings.state.max_object_bytes),
            services=self.services,  # the router behind the proxy routes
            service_settings=self.settings.services,
        )
        self.node_ports: NodePorts | None = None
        self._process = psutil.Process()

    def _request_pids(self) -> list[int]:
        runtime = self.runtime
        return runtime.request_pids() if isinstance(runtime, NativeRuntime) else []

    async def start(self) -> None:
        ice.use_host_addresses(self.mesh.settings.ice_host_addresses)
        ice.use_consent_timeout(self.mesh.settings.ice_consent_timeout)
        tightened = await asyncio.to_thread(make_private, self.options.data_dir)
        if tightened:
            log.warning(
                "data dir %s: removed group/other access from %d entries (now 0700, files 0600)",
                self.options.data_dir,
                len(tightened),
            )
        log.info("host paths pods may mount here: %s", self.config.host_paths.describe())
        await self._start_metrics()  # a taken address fails here, before the node joins
        await super().start()
        if self.metrics is not None:  # the node's own series, once its parts run
            self.metrics.watch(self)
        await self.api.start()
        self.node_ports = NodePorts(
            self.state,
            self.services,
            self.options.node_ip,
            self.settings.services,
            record=lambda obj, reason, message: self.events.record(
                involved(obj), reason, message, component="nodeport", warning=True
            ),
        )
        await self.node_ports.start()
        log.info(
            "node %s (%s) joined cluster %s; API at %s",
            self.node_name,
            self.node_id,
            self.cluster,
            self.api.url,
        )

    async def _start_metrics(self) -> None:
        """Serve ``/metrics`` (when asked), published in api.json as ``metricsUrl``; from the
        start, so the event-loop lag and the process series cover the join too."""
        if self.metrics is None:
            return
        from p2pkube.metrics.server import MetricsServer

        host, port = parse_address(self.settings.metrics.address)
        self.metrics_server = MetricsServer(self.metrics, host, port)
        try:
            await self.metrics_server.start()
        except OSError as exc:
            address = self.settings.metrics.address
            raise OSError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from None
        await self.metrics.start()
        self.api.published["metricsUrl"] = self.metrics_server.url

    async def stop(self) -> None:
        if self.metrics_server is not None:
            with contextlib.suppress(Exception):
                await self.metrics_server.stop()
        if self.metrics is not None:
            await self.metrics.close()
        if self.node_ports is not None:
            with contextlib.suppress(Exception):
                await self.node_ports.close()
        with contextlib.suppress(Exception):
            await self.api.stop()
        await super().stop()

    def status(self) -> dict[str, Any]:
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_times()
        return {
            **super().status(),
            "process": {
                "pid": os.getpid(),
                "rssBytes": rss,
                "cpuSeconds": round(cpu.user + cpu.system, 3),
            },
        }


def _configure_logging(level: str, log_format: str) -> None:
    configure_logging(level, log_format)
    logging.getLogger("aioice").setLevel(logging.WARNING)
    logging.getLogger("aiortc").setLevel(logging.WARNING)


def _say(line: str, level: int = logging.INFO) -> None:
    """A line for the person who ran ``join`` (the banner, a refusal): plain on stderr, or a
    log record when the logs are JSON, so that stderr stays one JSON object per line."""
    if json_logging():
        log.log(level, "%s", line)
    else:
        print(line, file=sys.stderr, flush=True)


async def _run(options: JoinOptions) -> int:
    agent = Agent(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await agent.start()
    except SignalingRejected as exc:
        _say(f"error: the signaling server refused to admit this node: {exc}", logging.ERROR)
        await agent.stop()
        return 1
    except OSError as exc:  # e.g. a listener's address (--metrics-address) is taken
        _say(f"error: the agent could not start: {exc}", logging.ERROR)
        await agent.stop()
        return 1
    if not json_logging():  # in JSON, Agent.start's record of the join is the banner
        _say(f"node {agent.node_name} ({agent.node_id}) joined cluster {agent.cluster}")
    await stop.wait()
    log.info("leaving the cluster")
    try:
        async with asyncio.timeout(15):  # not wait_for: on 3.11 it can drop a cancel
            await agent.stop()
    except TimeoutError:
        log.warning("graceful leave did not finish within 15 s")
    return 0


def run_agent(options: JoinOptions) -> int:
    """Run a node in the foreground until SIGINT/SIGTERM; returns the process exit code."""
    os.umask(PRIVATE_UMASK)  # before anything is created: the data dir is the agent's alone
    _configure_logging(options.log_level, options.log_format)
    return asyncio.run(_run(options))
