"""The Prometheus registry of one native agent: what ``/metrics`` shows (docs/metrics.md).

Two kinds of series, so that an agent nobody scrapes computes nothing:

* most figures are counters and gauges the agent's parts already keep for ``p2pkube status``
  (links, sync, the document, membership, the scheduler, pods, blobs, the compile cache):
  :class:`NodeCollector` reads them when Prometheus scrapes, on the event loop (where they are
  kept), and builds the families then;
* what can only be measured at the event (a scheduling pass, a pod start, a container run, a
  Service request) is observed into prometheus_client histograms and counters as it happens:
  :class:`AgentMetrics` is the node's :class:`~p2pkube.observe.Observer`. So is the event-loop
  lag, measured by one small owned task.

Each agent has its own :class:`~prometheus_client.CollectorRegistry` (never the module-global
default one), so agents sharing a process (tests) keep their series apart. Labels stay of low
cardinality: a link's peer node name, a status or phase, an HTTP code; never a pod or a path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from p2pkube import __version__
from p2pkube.metrics.settings import MetricsSettings
from p2pkube.observe import Observer
from p2pkube.ticker import sleep_to_beat

if TYPE_CHECKING:
    from p2pkube.node import Node

Family = TypeVar("Family", CounterMetricFamily, GaugeMetricFamily)

# No ``*_created`` sample beside every counter and histogram: they double the series, and
# Prometheus' text format has no use for them (process-wide; this process is one agent).
disable_created_metrics()

PREFIX = "p2pkube_"

SCHEDULING_PASS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
"""A pass is ~0.1 ms when this node leads nothing, a few ms for hundreds of pods."""
POD_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""From the kubelet seeing a pod to Running: ~0.1 s from the compile cache, seconds when the
module is pulled from peers and compiled, minutes when it waits for a ConfigMap."""
RUN_BUCKETS = (0.01, 0.1, 1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
"""A container run: from a request handler's milliseconds to a daemon's days."""
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Service requests: an instance per request costs ~1-10 ms; ``services.request_deadline``
(30 s by default) ends the longest."""
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
"""A healthy loop wakes within a millisecond; 0.1 s is felt by every timer, seconds delay
membership probes (Lifeguard's "slow is not dead")."""


class AgentMetrics(Observer):
    """One agent's registry, its event-time series (the node's observer) and the event-loop
    lag task. ``watch(node)`` adds the series read from the node at scrape time."""

    def __init__(self, settings: MetricsSettings, *, node: str, cluster: str, kind: str) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        registry = self.registry
        build = Gauge(
            f"{PREFIX}build_info",
            "Always 1: the agent's version, node name, cluster id and kind as labels.",
            ["version", "node", "cluster", "kind"],
            registry=registry,
        )
        build.labels(__version__, node, cluster, kind).set(1)
        self.pass_seconds = Histogram(
            f"{PREFIX}scheduler_pass_duration_seconds",
            "Duration of this node's scheduling passes (skipped ones included).",
            buckets=SCHEDULING_PASS_BUCKETS,
            registry=registry,
        )
        self.pod_starts = Counter(
            f"{PREFIX}pod_starts",
            "Pods that went from Pending to Running on this node.",
            registry=registry,
        )
        self.pod_start_seconds = Histogram(
            f"{PREFIX}pod_start_duration_seconds",
            "Seconds from this node's kubelet first seeing a pod to the pod Running.",
            buckets=POD_START_BUCKETS,
            registry=registry,
        )
        self.container_starts = Counter(
            f"{PREFIX}container_starts",
            "Container instances started on this node (and handler containers that began serving).",
            registry=registry,
        )
        self.container_restarts = Counter(
            f"{PREFIX}container_restarts",
            "Containers started again on this node (restart counts going up).",
            registry=registry,
        )
        self.run_seconds = Histogram(
            f"{PREFIX}container_run_duration_seconds",
            "How long container runs on this node lasted, by outcome (succeeded: exit 0).",
            ["outcome"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self._outcomes = (self.run_seconds.labels("failed"), self.run_seconds.labels("succeeded"))
        self.requests = Counter(
            f"{PREFIX}service_requests",
            "Requests routed by this node's Service router, by HTTP status code.",
            ["code"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            f"{PREFIX}service_request_duration_seconds",
            "Seconds from the router taking a request to its response head (or its own "
            "error), by HTTP status code.",
            ["code"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.loop_lag = Gauge(
            f"{PREFIX}event_loop_last_lag_seconds",
            "How late the event loop woke at its last lag check (metrics.loop_lag_interval).",
            registry=registry,
        )
        self.loop_lag_seconds = Histogram(
            f"{PREFIX}event_loop_lag_seconds",
            "How late the event loop woke at each lag check: time it spent on other work.",
            buckets=LOOP_LAG_BUCKETS,
            registry=registry,
        )
        self._lag_task: asyncio.Task[None] | None = None

    def watch(self, node: Node) -> None:
        """Serve the series read from ``node``'s own counters (once its parts exist)."""
        self.registry.register(NodeCollector(node))

    async def start(self) -> None:
        """Start the event-loop lag task."""
        if self._lag_task is None:
            self._lag_task = asyncio.create_task(self._measure_lag(), name="metrics-loop-lag")

    async def close(self) -> None:
        task, self._lag_task = self._lag_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _measure_lag(self) -> None:
        """Wake on the process's beat (``p2pkube.ticker``), with the agent's other chores of
        that period, and record how late the wake-up came: a check of its own would cost an
        idle agent a wake-up of its own each time (~0.25 ms of CPU on a small VM)."""
        loop = asyncio.get_running_loop()
        interval = self.settings.loop_lag_interval
        while True:
            due = await sleep_to_beat(interval)
            lag = max(0.0, loop.time() - due)
            self.loop_lag.set(lag)
            self.loop_lag_seconds.observe(lag)

    # -- Observer --------------------------------------------------------------------------
    def scheduling_pass(self, seconds: float) -> None:
        self.pass_seconds.observe(seconds)

    def pod_started(self, seconds: float) -> None:
        self.pod_starts.inc()
        self.pod_start_seconds.observe(seconds)

    def container_started(self) -> None:
        self.container_starts.inc()

    def container_restarted(self) -> None:
        self.container_restarts.inc()

    def container_ended(self, seconds: float, succeeded: bool) -> None:
        self._outcomes[succeeded].observe(seconds)

    def service_request(self, code: int, seconds: float) -> None:
        label = str(code)
        self.requests.labels(label).inc()
        self.request_seconds.labels(label).observe(seconds)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _family(
    kind: type[Family],
    name: str,
    doc: str,
    labels: Sequence[str],
    rows: Iterable[tuple[Sequence[str], float]],
) -> Family:
    """A labelled counter or gauge family, one sample per ``(label values, value)`` row."""
    family = kind(PREFIX + name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


def _counters(
    name: str, doc: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], float]]
) -> CounterMetricFamily:
    return _family(CounterMetricFamily, name, doc, labels, rows)


def _gauges(
    name: str, doc: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], float]]
) -> GaugeMetricFamily:
    return _family(GaugeMetricFamily, name, doc, labels, rows)


class NodeCollector:
    """Reads the counters a node keeps, when scraped (a prometheus_client custom collector).

    Every family is yielded at every scrape, with no samples when there is nothing to count
    (no links yet, no runtime yet), so the set of series names is fixed (docs/metrics.md)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        yield from self._links()
        yield from self._sync()
        yield from self._membership()
        yield from self._scheduler()
        runtime = self.node.runtime  # created once the node has started its kubelet
        runtime_stats: dict[str, Any] = runtime.stats() if runtime is not None else {}
        yield from self._pods(runtime_stats)
        yield from self._compile_cache(runtime_stats)
        yield from self._blobs()
        yield from self._services()
        events = self.node.events
        yield _counter("events_written", "Events this node recorded.", events.written)
        yield _counter("events_dropped", "Events this node dropped (rate limits).", events.dropped)

    def _links(self) -> Iterator[Metric]:
        mesh = self.node.mesh
        links = [(node, mesh.link(node)) for node in mesh.neighbours()]
        rows = [(link.remote.name if link.remote else node, link) for node, link in links if link]
        yield _gauge("links", "Links (WebRTC data channels) this node has up.", len(rows))
        yield _counters(
            "link_bytes",
            "Bytes over each link of this node, by peer node and direction (per link: a link "
            "set up again starts from 0, a counter reset).",
            ["peer", "direction"],
            (
                row
                for peer, link in rows
                for row in (
                    ((peer, "sent"), link.bytes_sent),
                    ((peer, "received"), link.bytes_received),
                )
            ),
        )
        yield _counters(
            "link_frames",
            "Frames over each link of this node, by peer node and direction.",
            ["peer", "direction"],
            (
                row
                for peer, link in rows
                for row in (
                    ((peer, "sent"), link.frames_sent),
                    ((peer, "received"), link.frames_received),
                )
            ),
        )
        yield _counters(
            "mesh_routed_messages",
            "Messages routed over the mesh: sent from here, relayed for others, or dropped "
            "for want of a path.",
            ["outcome"],
            [
                (("sent",), mesh.routed_sent),
                (("relayed",), mesh.routed_relayed),
                (("no_path",), mesh.routed_no_path),
            ],
        )

    def _sync(self) -> Iterator[Metric]:
        state = self.node.state
        stats = state.stats
        both = ("direction",)
        yield _counters(
            "sync_updates",
            "State updates (one committed transaction each) sent to and received from peers.",
            both,
            [(("sent",), stats.updates_sent), (("received",), stats.updates_received)],
        )
        yield _counters(
            "sync_update_bytes",
            "Bytes of those update messages, sent and received.",
            both,
            [(("sent",), stats.update_bytes_sent), (("received",), stats.update_bytes_received)],
        )
        yield _counters(
            "sync_step2_bytes",
            "Bytes of state-vector diffs (sync step 2: catch-up and anti-entropy repairs).",
            both,
            [
                (("sent",), stats.sync_step2_bytes_sent),
                (("received",), stats.sync_step2_bytes_received),
            ],
        )
        yield _counter(
            "sync_anti_entropy_rounds",
            "Anti-entropy rounds run (a state vector sent to some peers, which answer with what "
            "this node misses).",
            stats.anti_entropy_rounds,
        )
        yield _counter(
            "sync_errors",
            "Sync messages not sent (transport full) or refused as malformed.",
            stats.send_errors + stats.protocol_errors,
        )
        yield _gauge("sync_peers", "Peers this node syncs state with.", stats.peers)
        yield _gauge(
            "state_document_bytes", "Encoded size of the replicated state document.", stats.doc_size
        )
        yield _gauge(
            "state_live_bytes",
            "Estimated size of the document a compaction would build now.",
            stats.live_size,
        )
        yield _counter(
            "state_compactions", "Document generations this node created.", stats.compactions
        )
        yield _counter(
            "state_generation_switches",
            "Switches to a new document generation (this node's compactions included).",
            stats.generation_switches,
        )
        yield _gauge(
            "state_generation", "Number of the current document generation.", stats.generation
        )
        yield _gauge("state_tombstones", "Deleted keys still held as tombstones.", stats.tombstones)
        yield _counter(
            "state_persisted_bytes", "Bytes of state written to disk.", stats.bytes_persisted
        )

    def _membership(self) -> Iterator[Metric]:
        membership = self.node.membership
        core = membership.core
        by_status = Tally(member.status.value for member in core.members().values())
        yield _gauges(
            "membership_members",
            "Members known to this node's SWIM failure detector, by status (itself included).",
            ["status"],
            [((status,), by_status[status]) for status in ("alive", "suspect", "dead", "left")],
        )
        ready = Tally("true" if n.ready else "false" for n in membership.nodes())
        yield _gauges(
            "membership_nodes",
            "Other nodes this node has heard of, by whether it sees them Ready.",
            ["ready"],
            [(("true",), ready["true"]), (("false",), ready["false"])],
        )
        stats = core.stats
        yield _counter("membership_probes", "SWIM probes this node sent.", stats.probes)
        yield _counter(
            "membership_probes_failed",
            "Probes unanswered (direct and indirect).",
            stats.probes_failed,
        )
        yield _counter(
            "membership_indirect_probes", "Indirect probes asked of others.", stats.indirect_probes
        )
        yield _counter("membership_suspicions", "Members this node suspected.", stats.suspicions)
        yield _counter(
            "membership_refutations", "Suspicions of this node it refuted.", stats.refutations
        )
        yield _counter("membership_deaths", "Members this node declared dead.", stats.deaths)
        yield _gauge(
            "membership_local_health",
            "Lifeguard's local health multiplier (0: healthy; timeouts scale by it + 1).",
            core.local_health,
        )

    def _scheduler(self) -> Iterator[Metric]:
        scheduler = self.node.scheduler
        yield _gauge(
            "scheduler_leases_held",
            "Workloads this node leads (holds the scheduling lease of) at its last pass.",
            len(scheduler.leading),
        )
        yield _counter("scheduler_passes", "Scheduling passes this node ran.", scheduler.passes)
        yield _counter(
            "scheduler_skipped_passes",
            "Passes that found nothing this node leads (no view built).",
            scheduler.skipped_passes,
        )
        yield _counter(
            "scheduler_writes", "State writes the scheduler's passes made.", scheduler.writes
        )

    def _pods(self, runtime: dict[str, Any]) -> Iterator[Metric]:
        kubelet = self.node.kubelet
        phases = Tally(worker.phase for worker in kubelet.workers.values()) if kubelet else Tally()
        yield _gauges(
            "pods",
            "Pods on this node, by phase.",
            ["phase"],
            [((phase,), n) for phase, n in sorted(phases.items())],
        )
        yield _gauge(
            "runtime_instances", "Container instances running now.", runtime.get("running", 0)
        )

    def _compile_cache(self, runtime: dict[str, Any]) -> Iterator[Metric]:
        engines = runtime.get("engines", [])
        yield _counters(
            "compile_cache_hits",
            "Module loads served by a compile cache, by compiler and tier (memory, disk).",
            ["compiler", "tier"],
            (
                row
                for e in engines
                for row in (
                    ((e["compiler"], "memory"), e.get("memoryHits", 0)),
                    ((e["compiler"], "disk"), e.get("diskHits", 0)),
                )
            ),
        )
        yield _counters(
            "compile_cache_misses",
            "Module loads that compiled the module (in no cache), by compiler.",
            ["compiler"],
            (((e["compiler"],), e.get("compiles", 0)) for e in engines),
        )
        yield _gauges(
            "compile_cache_modules",
            "Compiled modules held in memory, by compiler.",
            ["compiler"],
            (((e["compiler"],), e.get("modulesInMemory", 0)) for e in engines),
        )

    def _blobs(self) -> Iterator[Metric]:
        blobs = self.node.blobs
        fetched = blobs.fetcher.stats
        yield _counter(
            "blob_pulled_bytes", "Blob (module) bytes pulled from peers.", fetched.bytes_fetched
        )
        yield _counter("blob_served_bytes", "Blob bytes served to peers.", blobs.bytes_served)
        yield _counter("blob_pulls", "Blob pulls started.", fetched.fetches)
        yield _counter("blob_pull_failures", "Blob pulls that failed.", fetched.fetches_failed)
        sizes = blobs.store.sizes()
        yield _gauge("blobs_held", "Complete blobs held on this node.", len(sizes))
        yield _gauge(
            "blob_held_bytes", "Bytes of the blobs held on this node.", sum(sizes.values())
        )

    def _services(self) -> Iterator[Metric]:
        stats = self.node.services.stats
        yield _counters(
            "service_attempts",
            "Request attempts the Service router sent, to a handler here or over the mesh.",
            ["where"],
            [(("local",), stats.local), (("remote",), stats.remote)],
        )
        yield _counter(
            "service_retries", "Request attempts retried on another endpoint.", stats.retries
        )
