"""Every runtime timing and limit as a named setting with its default (memberlist style)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RuntimeSettings:
    epoch_tick: float = 0.01
    """Seconds between ticks of the engine's epoch clock. Every running instance is checked at
    each tick (stop requested? deadline passed? CPU quota used up?), so this bounds how long a
    kill, a deadline or a throttle takes to bite. One ticker thread serves all instances and
    runs only while at least one does."""
    cpu_period: float = 0.1
    """The CPU throttling period (a CFS period): an instance limited to ``500m`` may use 50 ms
    of CPU in every 100 ms, then sleeps until the period ends."""
    default_memory_limit: str = "256Mi"
    """Memory cap of a container that sets no ``resources.limits.memory``: every instance
    always has one, so a memory bomb cannot take the node's memory."""
    max_wasm_stack: int = 512 * 1024
    """Bytes of native stack wasm code may use (wasmtime's default); deeper recursion traps
    with StackOverflow instead of crashing the agent."""
    max_table_elements: int = 1_000_000
    """Elements per wasm table (function pointers); a C program needs a few hundred."""
    max_instances: int = 10
    """Module instances one container may create (a WASI command needs one)."""
    max_tables: int = 10
    """Tables one container may create."""
    max_memories: int = 2
    """Linear memories one container may create (a C program has one)."""
    compiler: str = "tiered"
    """wasmtime's code generator: ``cranelift`` (optimising: ~1 s for a 1 MB module here),
    ``winch`` (a baseline compiler: ~7x faster to compile, ~1.6x slower code) or ``tiered``:
    Winch for a module's first start while Cranelift compiles it in the background for every
    later start (docs/benchmarks.md measures all three)."""
    module_cache_entries: int = 32
    """Compiled modules kept in memory (ready to instantiate); more are reloaded from the
    on-disk cache (~1 ms) rather than recompiled (~300 ms)."""
    log_max_bytes: int = 10 * 1024 * 1024
    """A container's log file is rotated when it reaches this size (kubelet's
    containerLogMaxSize)."""
    log_max_files: int = 3
    """Log files kept per container instance, the current one included (kubelet's
    containerLogMaxFiles): disk use per instance is at most ``log_max_bytes`` times this."""
    log_max_line_bytes: int = 16 * 1024
    """Longer lines are split into parts (marked partial, as the CRI log format does)."""
    log_rate_bytes: int = 1024 * 1024
    """Sustained output a container may write, in bytes per second, on average..."""
    log_burst_bytes: int = 16 * 1024 * 1024
    """...with bursts up to this many bytes. A container that writes faster for longer is
    stopped with reason OutputFlood: its output would otherwise cost the node CPU and disk
    without end (old lines are rotated away anyway)."""
    idle_threads: int = 16
    """Threads kept, once their instance has ended, to run the next one (natively): starting
    a thread waits for it under the GIL and blocked the event loop ~1.3 ms per instance under
    load, which HTTP handler pods (one instance per request) pay on every request."""
    idle_thread_timeout: float = 30.0
    """Seconds a kept thread waits for another instance before it ends."""
    request_processes: int = 4
    """Worker processes that run the instances of HTTP handler requests (natively;
    ``runtime/procs.py``), each with its own wasmtime engines and GIL, loading the modules the
    agent compiled from the disk cache; 0 runs them on the agent's threads like every other
    instance. Pods' own instances always run in the agent. The workers start when a handler
    pod starts on the node (a request that comes first runs on a thread), so a node that
    serves none pays nothing; each costs ~40 MB of memory (4: ~160 MB on a node serving
    handlers; 2 is within the noise below for half of it). Through one node's NodePort at
    concurrency 32 (bench_services on this shared 2-core machine, alternated runs): 0 (the
    agent's threads): 417-522 req/s, 1: 511, 2: 744-986, 4: 694-1005 (the last two rounds,
    with the workers started at the pod's start: 0: 433-467, 2: 789-894, 4: 918-1005)."""
    request_process_start_timeout: float = 10.0
    """How long the agent waits for a request worker process to start (or to exit when the
    agent stops) before it gives up on it (and kills it)."""
    stop_timeout: float = 5.0
    """How long a stop waits for the instance's thread to end. wasm is stopped at its next
    epoch check, so this only matters when it is inside a slow host call."""

    def check(self) -> None:
        """ValueError for values the engine cannot take (checked before it is built)."""
        if not 0 < self.max_wasm_stack <= 2 * 1024 * 1024:
            # Above its async stack size wasmtime panics, aborting the whole process.
            raise ValueError("runtime.max_wasm_stack must be between 1 and 2097152 bytes")
        if self.compiler not in ("tiered", "cranelift", "winch"):
            raise ValueError("runtime.compiler must be tiered, cranelift or winch")
        if self.epoch_tick <= 0 or self.cpu_period <= 0:
            raise ValueError("runtime.epoch_tick and runtime.cpu_period must be positive")


@dataclass
class KubeletSettings:
    """The pod lifecycle on a node (shared by native and browser nodes)."""

    backoff_initial: float = 1.0
    """Seconds before the first restart of a container that ended and must restart; doubles at
    each further restart (Kubernetes starts at 10 s; wasm restarts cost ~1 ms, so p2pkube
    retries sooner)."""
    backoff_max: float = 60.0
    """Longest wait between restarts (CrashLoopBackOff); Kubernetes uses 300 s."""
    backoff_reset_after: float = 60.0
    """A container that ran this long before ending restarts after ``backoff_initial`` again."""
    image_pull_timeout: float = 120.0
    """How long fetching a module from peers may take before it is retried (ImagePullBackOff)."""
    pull_progress_interval: float = 1.0
    """While a pod waits for its module to come from peers, how often at most its container's
    waiting message is rewritten with how far the pull is (``Pulling module sha256:…: 3.1 MiB
    of 8 MiB from 2 peers``, what ``describe pod`` shows on any node). Each rewrite is a status
    write replicated to every node, so it is coarse: once a second, and only when the line
    changed."""
    resync_interval: float = 10.0
    """The kubelet re-reads all pods assigned to it at least this often, besides reacting to
    every state change at once (a safety net, not the normal path)."""
    config_map_interval: float = 1.0
    """Seconds between two looks at the ConfigMaps a pod uses: while it waits for a missing
    one (a configMap volume, an env ``configMapKeyRef`` or ``envFrom``), and while it runs
    (a changed ConfigMap or Secret reaches its volumes' files within about this long;
    Kubernetes' kubelet takes up to a minute). Environment variables are read once, at each
    start of a container, as in Kubernetes."""
    secret_volume_dir: str = "/dev/shm"
    """A memory-backed directory (tmpfs) secret volumes are projected under, one directory
    per agent and pod, as Kubernetes' kubelet mounts a tmpfs per secret volume: Secret values
    never reach the data dir, which keeps them sealed. When it is not a directory, the agent
    logs a warning and uses ``<data dir>/secret-volumes`` (on disk) instead."""
    max_pods: int = 110
    """Pods this node runs at most (kubelet's maxPods); beyond it new pods fail ``OutOfpods``."""
    initial_sync_timeout: float = 3.0
    """At start, pods wait until the state was synced with a peer once (at most this long):
    a node back from a crash must first learn which of its pods were deleted or moved
    meanwhile, or it would restart them for a moment."""
    status_batch_interval: float = 0.02
    """While pod statuses keep changing, they are written together at most this often (one
    transaction for a burst: 300 pods starting cost a few writes, not 900)."""
    status_retry_delay: float = 1.0
    """Pause before retrying a status write that failed (the disk was slow or full)."""
    allowed_host_paths: list[str] = field(default_factory=list)
    """Host directories pods may mount as ``hostPath``, each ``PREFIX`` (read-only) or
    ``PREFIX:rw``; none by default, since anyone holding the join token may write a Pod.
    ``p2pkube join --allow-host-path PREFIX[:rw]`` (repeatable) adds to this list (with
    ``--set``, comma-separated). The agent's data dir is never mountable, even under a
    granted prefix. Native nodes only: a browser node has no host paths and grants none."""

    max_refused_host_paths: int = 64
    """hostPaths a node remembers refusing although its published grants allow them as
    written (a symlink in them leads out of the grants); its Node status lists them so that
    placement does not send them to it again. Oldest forgotten first; all at a restart."""

    usage_interval: float = 10.0
    """Seconds between two readings of this node's measured usage (its process's CPU and
    memory, each container's CPU time and memory; ``runtime/usage.py``): ``kubectl top``
    shows the CPU used between the last two, so this is also the ``window`` of its
    NodeMetrics and PodMetrics (metrics-server's resolution is 15 s)."""
    usage_timeout: float = 5.0
    """How long ``kubectl top`` / ``p2pkube top`` wait for another node's usage over the
    mesh; a node that does not answer in time is shown as unknown."""

    def check(self) -> None:
        """ValueError for a malformed host path grant or usage interval (before the agent
        starts)."""
        from p2pkube.runtime.hostpaths import parse_grants

        if self.usage_interval <= 0 or self.usage_timeout <= 0:
            raise ValueError("kubelet.usage_interval and kubelet.usage_timeout must be positive")

        try:
            parse_grants(self.allowed_host_paths)
        except ValueError as exc:
            raise ValueError(f"kubelet.allowed_host_paths: {exc}") from None
