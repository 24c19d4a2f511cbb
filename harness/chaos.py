"""The chaos run: agents on network hosts (harness/netlab.py), workloads and writes applied
throughout, random kills, freezes and partitions over a constant packet loss, then a heal;
afterwards what docs/guarantees.md promises is checked and measured.

Used by tests/test_chaos.py (a CI-sized run with a fixed seed, asserting) and by
bench/bench_chaos.py (the longer run, reporting the figures). Both go through
:class:`ChaosRun`: ``setup()``, ``run()`` (returns the figures), ``problems()`` (what did not
hold), ``report()`` (everything needed to debug a failure).

The fault schedule is drawn from the seed before anything starts (``plan``), so a run's
faults are reproducible; which write lands where depends on timing and is recorded instead.
Faults come one at a time, each lasting 2-5 s, with 0.5-2 s between them:

* ``kill``: kill -9 of one agent, restarted from its data dir when the fault ends;
* ``freeze``: SIGSTOP of one agent, SIGCONT when it ends;
* ``partition``: one or two hosts cut off from the others (silent DROP both ways; the
  signaling host stays reachable from everyone);

and packet loss (5% by default) on every host for the whole fault phase. Meanwhile a writer
PUTs a new ConfigMap every ``write_interval`` through a random agent that is up (a write is
*acknowledged* when the PUT returned: fsynced on that node), and a second thread applies
Deployments of ticker.wasm, Jobs of hello.wasm and scalings with ``p2pkube apply -f`` on a
random host (acknowledged when the command exited 0). At the heal every frozen agent is
thawed, every killed one restarted, cuts and loss removed; then the run waits for:

* *converged*: every node Ready on every node, every acknowledged ConfigMap on every node,
  and equal state vectors everywhere (``/v1/status`` ``state.stateVector``);
* *exact replicas*: every Deployment with exactly its last acknowledged ``replicas`` active
  pods, all Running and Ready, the same pods on every node; the DaemonSet with one Running
  pod per node; every Job Complete on every node.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.netlab import REPO, NetLab
from p2pkube.model.podspec import containers

BUILD = REPO / "examples" / "build"
NAMES = ["n1", "n2", "n3", "n4", "n5"]
KINDS = ("kill", "freeze", "partition")
CONVERGE_SECONDS = 30.0
"""Promised (docs/guarantees.md) and asserted by tests/test_chaos.py: heal to converged."""
REPLICAS_SECONDS = 45.0
"""Promised and asserted: heal to exact replicas, the DaemonSet everywhere, Jobs complete."""
CHECKED_KINDS = ("ConfigMap", "Deployment", "ReplicaSet", "Job", "DaemonSet", "Pod")
"""Kinds whose objects (uid, spec or data) must be identical on every node at the end."""


@dataclass
class Fault:
    at: float
    """Seconds after the fault phase began."""
    kind: str
    targets: list[str]
    seconds: float
    """How long it lasts (for a kill: until the agent is started again)."""


def plan(seed: int, names: list[str], seconds: float, overlap: bool = False) -> list[Fault]:
    """The fault schedule for ``seconds`` of faults, drawn from ``seed`` alone. One fault at
    a time, or with ``overlap`` a new one every 1-2.5 s on hosts no running fault holds."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    t = rng.uniform(0.5, 1.5)
    while t < seconds - 1.0:
        kind = rng.choice(KINDS)
        busy = {n for f in faults if f.at + f.seconds > t for n in f.targets}
        free = [n for n in names if n not in busy]
        size = rng.choice([1, 2]) if kind == "partition" else 1
        duration = round(min(rng.uniform(2.0, 5.0), seconds - t), 2)
        if len(free) > size:  # always leave a host no fault holds
            faults.append(Fault(round(t, 2), kind, sorted(rng.sample(free, size)), duration))
        t += rng.uniform(1.0, 2.5) if overlap else duration + rng.uniform(0.5, 2.0)
    return faults


@dataclass
class ChaosConfig:
    seed: int = 6
    fault_seconds: float = 25.0
    loss: float = 0.05
    write_interval: float = 0.3
    """Seconds between two ConfigMap writes."""
    workload_interval: float = 3.0
    """Seconds between two workload applies (a Deployment, a Job or a scaling)."""
    overlap: bool = False
    """Faults overlap (a new one every 1-2.5 s) instead of coming one at a time."""
    converge_timeout: float = 60.0
    replicas_timeout: float = 90.0
    agent_args: list[str] = field(default_factory=list)


def template(module: str, app: str, *args: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": f"{module}.wasm",
                    "args": list(args),
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "16Mi"},
                        "limits": {"memory": "64Mi"},
                    },
                }
            ],
            **spec,
        },
    }


def deployment(name: str, replicas: int, pod: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Deployment ``name`` of ``replicas`` pods labelled app=name: ``pod``'s (a pod
    template's) or, without it, ticker's."""
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod or template("ticker", name, "1"),
        },
    }


def job(name: str, completions: int, parallelism: int) -> dict[str, Any]:
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": completions,
            "parallelism": parallelism,
            "backoffLimit": 20,
            "template": template("hello", name, "chaos", restartPolicy="Never"),
        },
    }


def daemonset(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "p2pkube.io/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": template("ticker", name, "2"),
        },
    }


def write_manifest(directory: Path, *objects: dict[str, Any]) -> Path:
    """A manifest in ``directory`` next to copies of the modules it names."""
    directory.mkdir(parents=True, exist_ok=True)
    for obj in objects:
        for _path, container in containers(obj):
            if not (directory / container["image"]).exists():
                shutil.copy(BUILD / container["image"], directory / container["image"])
    path = directory / "manifest.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    return path


def is_running(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return (
        status.get("phase") == "Running"
        and any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        and not pod["metadata"].get("deletionTimestamp")
    )


def is_active(pod: dict[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not pod["metadata"].get("deletionTimestamp")


def job_complete(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)


class ChaosRun:
    """One chaos run on ``lab`` (already started, no hosts yet)."""

    def __init__(self, lab: NetLab, workdir: Path, config: ChaosConfig | None = None) -> None:
        self.lab = lab
        self.workdir = workdir
        self.config = config or ChaosConfig()
        self.faults = plan(
            self.config.seed, NAMES, self.config.fault_seconds, overlap=self.config.overlap
        )
        self.down: set[str] = set()
        """Hosts killed or frozen right now (writers avoid them)."""
        self.killed: set[str] = set()
        self.acked: dict[str, dict[str, Any]] = {}
        """ConfigMap name -> {writer, data, at}: the acknowledged writes."""
        self.unacked: dict[str, str] = {}
        self.applies: list[dict[str, Any]] = []
        """Every workload apply: {kind, name, spec, host, at, acked, error}."""
        self.deployments: dict[str, int] = {"warm-web": 2}
        """Deployment -> its last acknowledged replicas."""
        self.jobs: dict[str, int] = {"warm-job": 5}
        self.crashed: list[str] = []
        """Agents that exited without being killed (found at the heal)."""
        self.rss_before: dict[str, int] = {}
        self.rss_after: dict[str, int] = {}
        self.result: dict[str, Any] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._rng = random.Random(self.config.seed + 1)
        self._phase_start = 0.0
        self._healed = 0.0
        self._last_views: dict[str, Any] = {}

    # -- set-up --------------------------------------------------------------------------------
    def setup(self) -> None:
        lab = self.lab
        subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
        lab.add_host("sig")
        for name in NAMES:
            lab.add_host(name)
        lab.start_signaling("sig")
        for name in NAMES:
            lab.start_agent(name, *self.config.agent_args)
        for name in NAMES:
            lab.wait_api(name)
        lab.wait_ready(NAMES, timeout=60)
        # Warm up: every node runs a pod (so each has loaded wasmtime and compiled ticker
        # before the RSS baseline), and one Job and one Deployment exist before the faults.
        manifest = write_manifest(
            self.workdir / "warm",
            daemonset("warm-ds"),
            deployment("warm-web", 2),
            job("warm-job", 5, 5),
        )
        lab.cli("n1", "apply", "-f", str(manifest))
        began = time.monotonic()
        while not self.exact_replicas():
            if time.monotonic() - began > 60:
                raise TimeoutError("the warm-up workloads did not settle:\n" + self.views_text())
            time.sleep(0.5)
        lab.note(f"warm-up settled after {time.monotonic() - began:.1f}s")
        self.rss_before = self.rss()

    def rss(self) -> dict[str, int]:
        return {n: int(self.lab.api(n, "GET", "/v1/status")["process"]["rssBytes"]) for n in NAMES}

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        lab, config = self.lab, self.config
        lab.note(
            f"fault phase: {config.fault_seconds:g}s, seed {config.seed}, {len(self.faults)} "
            f"faults, loss {config.loss:.0%}"
        )
        spells_before = {n: len(lab.not_ready_spells(n)) for n in NAMES}
        dropped_before = lab.dropped()
        lab.set_loss(config.loss, NAMES)
        self._phase_start = time.monotonic()
        threads = [
            threading.Thread(target=self._writer, name="chaos-writer", daemon=True),
            threading.Thread(target=self._workloads, name="chaos-workloads", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            steps = sorted(
                [(f.at, 1, i, f) for i, f in enumerate(self.faults)]
                + [(f.at + f.seconds, 0, i, f) for i, f in enumerate(self.faults)]
            )  # at equal times an end comes before a start
            for at, start, _, fault in steps:
                self._sleep_until(at)
                (self._inject if start else self._revert)(fault)
            self._sleep_until(config.fault_seconds)
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(60)
            self._heal()
        converged_at = replicas_at = None
        while time.monotonic() - self._healed < config.replicas_timeout:
            now = time.monotonic() - self._healed
            if converged_at is None and self.converged():
                converged_at = now
                lab.note(f"converged {now:.2f}s after the heal")
            if replicas_at is None and self.exact_replicas():
                replicas_at = now
                lab.note(f"exact replicas {now:.2f}s after the heal")
            if converged_at is not None and replicas_at is not None:
                break
            if converged_at is None and now > config.converge_timeout and replicas_at:
                break
            time.sleep(0.5)
        self.rss_after = self.rss()
        spells = [
            (viewer, *spell)
            for viewer in NAMES
            for spell in lab.not_ready_spells(viewer)[spells_before[viewer] :]
        ]
        dropped = lab.dropped()
        lost = self.lost_writes()
        self.result = {
            "seed": config.seed,
            "overlap": config.overlap,
            "faultSeconds": config.fault_seconds,
            "loss": config.loss,
            "faults": dict(Counter(f.kind for f in self.faults)),
            "schedule": [asdict(f) for f in self.faults],
            "writes": {
                "acknowledged": len(self.acked),
                "unacknowledged": len(self.unacked),
                "lost": sum(len(v) for v in lost.values()),
                "lostByNode": {n: v[:20] for n, v in lost.items() if v},
            },
            "applies": {
                "acknowledged": sum(a["acked"] for a in self.applies),
                "failed": sum(not a["acked"] for a in self.applies),
                "byKind": dict(Counter(a["kind"] for a in self.applies if a["acked"])),
            },
            "convergedSeconds": converged_at,
            "exactReplicasSeconds": replicas_at,
            "convergeTimeout": config.converge_timeout,
            "replicasTimeout": config.replicas_timeout,
            "packetsDropped": {
                kind: sum(d[kind] - dropped_before[n][kind] for n, d in dropped.items())
                for kind in ("loss", "cut")
            },
            "notReadySpells": len(spells),
            "longestSpellSeconds": max((s[-1] for s in spells), default=0.0),
            "longestSpells": sorted(spells, key=lambda s: -s[-1])[:5],
            "agentsAlive": {n: lab.hosts[n].running for n in NAMES},
            "crashed": self.crashed,
            "rssMB": {
                n: [round(self.rss_before[n] / 2**20, 1), round(self.rss_after[n] / 2**20, 1)]
                for n in NAMES
            },
            "restarted": sorted({t for f in self.faults if f.kind == "kill" for t in f.targets}),
            "errorLines": {n: self._error_lines(n) for n in NAMES},
        }
        return self.result

    def _sleep_until(self, offset: float) -> None:
        delay = self._phase_start + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _inject(self, fault: Fault) -> None:
        lab = self.lab
        with self._lock:
            if fault.kind in ("kill", "freeze"):
                self.down.update(fault.targets)
        if fault.kind == "kill":
            lab.kill(fault.targets[0])
            self.killed.add(fault.targets[0])
        elif fault.kind == "freeze":
            lab.freeze(fault.targets[0])
        else:
            lab.isolate(fault.targets, [n for n in NAMES if n not in fault.targets])

    def _revert(self, fault: Fault) -> None:
        lab = self.lab
        if fault.kind == "kill":
            lab.start_agent(fault.targets[0])
            self.killed.discard(fault.targets[0])
            threading.Thread(target=self._back_up, args=(fault.targets[0],), daemon=True).start()
        elif fault.kind == "freeze":
            lab.thaw(fault.targets[0])
            with self._lock:
                self.down.discard(fault.targets[0])
        else:
            lab.isolate(fault.targets, [n for n in NAMES if n not in fault.targets], cut=False)

    def _back_up(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.lab.wait_api(name, timeout=30)
        with self._lock:
            self.down.discard(name)

    def _heal(self) -> None:
        lab = self.lab
        for name in NAMES:
            host = lab.hosts[name]
            if name not in self.killed and not host.running:
                code = host.process.returncode if host.process else None
                self.crashed.append(f"{name} exited by itself with {code}")
                lab.note(f"CRASH: {name} exited with {code}")
            if name in self.killed or not host.running:
                lab.start_agent(name)
            else:
                lab.thaw(name)
        self.killed.clear()
        lab.heal()
        lab.set_loss(0.0, NAMES)
        self._healed = time.monotonic()
        lab.note("HEAL: every agent running, no cut, no loss")
        for name in NAMES:
            lab.wait_api(name, timeout=30)
        with self._lock:
            self.down.clear()

    def _up(self) -> list[str]:
        with self._lock:
            return [n for n in NAMES if n not in self.down]

    def _writer(self) -> None:
        rng = random.Random(self.config.seed + 2)
        i = 0
        while not self._stop.is_set():
            up = self._up()
            if up:
                writer = rng.choice(up)
                name = f"cm-{i:04d}"
                data = {"i": str(i), "writer": writer}
                obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
                try:
                    self.lab.api(writer, "PUT", "/v1/objects", {**obj, "data": data}, timeout=4)
                    self.acked[name] = {"writer": writer, "data": data, "at": self._now()}
                except Exception as exc:  # the agent died, froze or was not up yet
                    self.unacked[name] = f"{writer}: {type(exc).__name__}: {exc}"[:200]
                i += 1
            self._stop.wait(self.config.write_interval)

    def _workloads(self) -> None:
        rng = self._rng
        k = 0
        while not self._stop.wait(self.config.workload_interval):
            up = self._up()
            if not up:
                continue
            host = rng.choice(up)
            action = rng.choice(["deployment", "job", "scale"])
            if action == "scale" and len(self.deployments) > 1:
                name = rng.choice(sorted(d for d in self.deployments if d != "warm-web"))
                obj, kind = deployment(name, rng.choice([1, 2, 3])), "Deployment"
            elif action == "job":
                name, kind = f"job-{k}", "Job"
                obj = job(name, rng.choice([2, 3]), rng.choice([1, 2]))
            else:
                name, kind = f"dep-{k}", "Deployment"
                obj = deployment(name, rng.choice([1, 2, 3]))
            k += 1
            manifest = write_manifest(self.workdir / f"apply-{k}", obj)
            record = {"kind": kind, "name": name, "spec": obj["spec"], "host": host}
            record.update(at=self._now(), acked=False, error="")
            try:
                result = self.lab.cli(host, "apply", "-f", str(manifest), check=False, timeout=60)
                record["acked"] = result.returncode == 0
                record["error"] = result.stderr.strip()[-300:]
            except subprocess.TimeoutExpired as exc:
                record["error"] = f"timeout: {exc}"
            self.applies.append(record)
            self.lab.note(
                f"apply {kind} {name} on {host}: {'ok' if record['acked'] else 'FAILED'}"
                + (f" (replicas {obj['spec']['replicas']})" if kind == "Deployment" else "")
            )
            if record["acked"]:
                if kind == "Deployment":
                    self.deployments[name] = obj["spec"]["replicas"]
                else:
                    self.jobs[name] = obj["spec"]["completions"]

    def _now(self) -> float:
        return round(time.monotonic() - self._phase_start, 3)

    # -- what must hold ------------------------------------------------------------------------
    def views(self) -> dict[str, dict[str, Any]]:
        """Every node's view: its objects of the checked kinds, its state vector."""
        out = {}
        for name in NAMES:
            view: dict[str, Any] = {}
            try:
                for kind in CHECKED_KINDS:
                    items = self.lab.api(name, "GET", f"/v1/objects/{kind}", timeout=10)["items"]
                    view[kind] = {o["metadata"]["name"]: o for o in items}
                view["stateVector"] = self.lab.api(name, "GET", "/v1/status")["state"][
                    "stateVector"
                ]
                view["nodes"] = self.lab.nodes(name)
            except Exception as exc:
                view["error"] = f"{type(exc).__name__}: {exc}"
            out[name] = view
        self._last_views = out
        return out

    def converged(self) -> bool:
        views = self.views()
        if any("error" in v for v in views.values()):
            return False
        for view in views.values():
            if sorted(view["nodes"]) != NAMES or any(s != "True" for s in view["nodes"].values()):
                return False
            if not set(self.acked) <= set(view["ConfigMap"]):
                return False
        vectors = [v["stateVector"] for v in views.values()]
        return all(v == vectors[0] for v in vectors) and self.identical(views)

    @staticmethod
    def digest(view: dict[str, Any]) -> str:
        """A digest of the checked objects' identities and contents (not statuses, which
        include this node's own liveness view of Nodes and are checked by state vectors)."""
        parts = []
        for kind in CHECKED_KINDS:
            for name, obj in sorted(view.get(kind, {}).items()):
                body = obj.get("data") if kind == "ConfigMap" else obj.get("spec")
                parts.append([kind, name, obj["metadata"].get("uid"), body])
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def identical(self, views: dict[str, dict[str, Any]]) -> bool:
        return len({self.digest(v) for v in views.values()}) == 1

    def exact_replicas(self) -> bool:
        views = self.views()
        if any("error" in v for v in views.values()):
            return False
        for view in views.values():
            pods = list(view["Pod"].values())
            for name, replicas in self.deployments.items():
                dep = view["Deployment"].get(name)
                if dep is None or dep["spec"]["replicas"] != replicas:
                    return False
                mine = [p for p in pods if p["metadata"].get("labels", {}).get("app") == name]
                active = [p for p in mine if is_active(p)]
                if len(active) != replicas or not all(is_running(p) for p in active):
                    return False
            daemon = [p for p in pods if p["metadata"].get("labels", {}).get("app") == "warm-ds"]
            daemon_active = [p for p in daemon if is_active(p)]
            if sorted(p["spec"].get("nodeName", "") for p in daemon_active) != NAMES:
                return False
            if not all(is_running(p) for p in daemon_active):
                return False
            for name in self.jobs:
                obj = view["Job"].get(name)
                if obj is None or not job_complete(obj):
                    return False
        active_sets = [
            sorted(n for n, p in v["Pod"].items() if is_active(p)) for v in views.values()
        ]
        return all(s == active_sets[0] for s in active_sets)

    def lost_writes(self) -> dict[str, list[str]]:
        """Per node, the acknowledged ConfigMaps it does not hold (with the right data)."""
        views = self._last_views or self.views()
        lost: dict[str, list[str]] = {}
        for name, view in views.items():
            held = view.get("ConfigMap", {})
            lost[name] = [
                cm
                for cm, w in sorted(self.acked.items())
                if held.get(cm, {}).get("data") != w["data"]
            ]
        return lost

    def _error_lines(self, name: str) -> int:
        path = self.lab.hosts[name].log_path
        text = path.read_text(errors="replace") if path.exists() else ""
        return sum(" ERROR " in line or "Traceback" in line for line in text.splitlines())

    def problems(self) -> list[str]:
        """What did not hold, one line each (empty: everything held)."""
        r, config = self.result, self.config
        out = []
        if r["writes"]["lost"]:
            out.append(
                f"{r['writes']['lost']} acknowledged writes missing: {r['writes']['lostByNode']}"
            )
        if r["convergedSeconds"] is None:
            out.append(f"not converged within {config.converge_timeout:g}s of the heal")
        elif r["convergedSeconds"] > config.converge_timeout:
            out.append(f"converged only {r['convergedSeconds']:.1f}s after the heal")
        if r["exactReplicasSeconds"] is None:
            out.append(f"replicas/jobs not exact within {config.replicas_timeout:g}s of the heal")
        dead = [n for n, alive in r["agentsAlive"].items() if not alive]
        if dead:
            out.append(f"agents not running at the end: {dead}")
        if r["crashed"]:
            out.append(f"agents crashed during the run: {r['crashed']}")
        for name in NAMES:
            if name in r["restarted"]:
                continue
            before, after = self.rss_before[name], self.rss_after[name]
            if after > before * RSS_GROWTH + RSS_SLACK:
                out.append(f"{name}: RSS grew from {before / 2**20:.0f} to {after / 2**20:.0f} MB")
        for apply in self.applies:
            if not apply["acked"] and "timeout" in apply["error"]:
                out.append(f"apply {apply['kind']} {apply['name']} hung: {apply['error']}")
        return out

    # -- reports -------------------------------------------------------------------------------
    def views_text(self) -> str:
        lines = []
        views = self._last_views or self.views()
        for name, view in views.items():
            if "error" in view:
                lines.append(f"{name}: {view['error']}")
                continue
            pods = view["Pod"]
            lines.append(
                f"{name}: nodes {view['nodes']}; {len(view['ConfigMap'])} configmaps; "
                f"digest {self.digest(view)[:12]}; state vector {view['stateVector']}"
            )
            for dep, replicas in sorted(self.deployments.items()):
                mine = [
                    p for p in pods.values() if p["metadata"].get("labels", {}).get("app") == dep
                ]
                lines.append(
                    f"  deployment {dep} want {replicas} (spec "
                    f"{view['Deployment'].get(dep, {}).get('spec', {}).get('replicas')}): "
                    + ", ".join(
                        f"{p['metadata']['name']}@{p['spec'].get('nodeName')}:"
                        f"{(p.get('status') or {}).get('phase')}"
                        + ("(deleting)" if p["metadata"].get("deletionTimestamp") else "")
                        for p in mine
                    )
                )
            for jobname in sorted(self.jobs):
                obj = view["Job"].get(jobname) or {}
                lines.append(f"  job {jobname}: {json.dumps(obj.get('status'))[:300]}")
            daemon = [
                p for p in pods.values() if p["metadata"].get("labels", {}).get("app") == "warm-ds"
            ]
            lines.append(
                "  daemonset warm-ds: "
                + ", ".join(
                    f"{p['spec'].get('nodeName')}:{(p.get('status') or {}).get('phase')}"
                    for p in daemon
                )
            )
        return "\n".join(lines)

    def report(self) -> str:
        r = self.result
        lines = ["=== chaos: fault schedule (seconds into the fault phase) ==="]
        lines += [
            f"  {f.at:6.2f}s +{f.seconds:.2f}s  {f.kind:9s} {','.join(f.targets)}"
            for f in self.faults
        ]
        lines.append("=== chaos: workload applies ===")
        lines += [
            f"  {a['at']:6.2f}s {a['kind']} {a['name']} on {a['host']}: "
            + ("acknowledged" if a["acked"] else f"not acknowledged ({a['error']})")
            for a in self.applies
        ]
        by_writer = Counter(w["writer"] for w in self.acked.values())
        lines.append(
            f"=== chaos: {len(self.acked)} acknowledged writes by writer {dict(by_writer)}; "
            f"{len(self.unacked)} not acknowledged ==="
        )
        lines += [f"  {k}: {v}" for k, v in list(self.unacked.items())[:15]]
        lines.append("=== chaos: per-node views at the end ===")
        lines.append(self.views_text())
        if r:
            lines.append("=== chaos: figures ===")
            lines.append(json.dumps({k: v for k, v in r.items() if k != "schedule"}, indent=1))
        lines.append(self.lab.report(50))
        return "\n".join(lines)


RSS_GROWTH = 1.5
RSS_SLACK = 64 * 2**20
"""Asserted for agents that were never restarted: RSS after the run <= before x RSS_GROWTH +
RSS_SLACK. Coarse on purpose: a run of seconds adds pods, events and state, so this catches
a runaway (a queue or a table that grows with every fault), not a slow leak."""


def print_figures(result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    """The figures of a run, human-readable."""
    w, a = result["writes"], result["applies"]
    faults = ", ".join(f"{n} {k}" for k, n in sorted(result["faults"].items()))
    out(
        f"chaos (seed {result['seed']}, {result['faultSeconds']:g}s of faults over "
        f"{result['loss']:.0%} loss): faults {faults}; packets dropped: "
        f"{result['packetsDropped']['loss']} by loss, {result['packetsDropped']['cut']} by cuts"
    )
    out(
        f"  writes: {w['acknowledged']} acknowledged ({w['unacknowledged']} not), "
        f"{w['lost']} lost; applies: {a['acknowledged']} acknowledged {a['byKind']} "
        f"({a['failed']} not)"
    )
    converged = result["convergedSeconds"]
    exact = result["exactReplicasSeconds"]
    out(
        "  after the heal: converged (all Ready, every write everywhere, equal state vectors) "
        + (f"in {converged:.2f}s" if converged is not None else "NOT within the timeout")
        + "; exact replicas and Jobs complete "
        + (f"in {exact:.2f}s" if exact is not None else "NOT within the timeout")
    )
    rss = ", ".join(f"{n} {b:g}->{e:g}" for n, (b, e) in result["rssMB"].items())
    out(
        f"  NotReady spells: {result['notReadySpells']} (longest "
        f"{result['longestSpellSeconds']:.2f}s); agents alive: "
        f"{sum(result['agentsAlive'].values())}/{len(result['agentsAlive'])}; RSS MB {rss} "
        f"(restarted: {', '.join(result['restarted']) or 'none'}); ERROR/Traceback log lines "
        f"{result['errorLines']}"
    )
