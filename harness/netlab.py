"""A multi-host lab on Linux network namespaces: real agents on separate network hosts, with
fault injection (kill -9, SIGSTOP, silent partitions, random packet loss).

Topology. One namespace holds a bridge (``<prefix>-br``); each host is a namespace of its own
(``<prefix>-<host>``) whose only interface besides loopback is ``eth0``, a veth plugged into
that bridge, with one address in ``10.77.0.0/24``. Both ends of every veth are created
directly inside lab namespaces, so the machine's own namespace gets no interface and no
address; the hosts have no default route, so the only addresses they can reach are each
other's. Two labs (two test runs at once) never collide: each has its own bridge namespace,
and its names carry the creating process id and a random suffix.

Processes. Each host runs its program with ``ip netns exec <ns> ...``, which execs it (the
pid we hold is the program's). Agents and the signaling server are started through
docker/entrypoint.py, the container image's entrypoint, so the commands the image runs are
the ones tested here. The test process talks to an agent's local API (127.0.0.1 inside the
agent's namespace) from worker threads that entered that namespace with setns(2), one small
pool per host: no process per call. The CLI runs as a user would, with ``ip netns exec``.

Faults. ``kill`` (-9 by default) and ``start_agent`` again (same data dir: a restart);
``freeze``/``thaw`` (SIGSTOP/SIGCONT); ``partition(groups)`` and ``cut(a, b)`` drop every
packet between hosts in both directions, silently (no RST, no ICMP: nftables DROP rules in
the hosts' namespaces); ``set_loss(p)`` drops each packet a host receives with probability p
(nftables ``numgen random``, the same as iptables' ``statistic --mode random``). No delay:
this kernel has no netem, and a user-space delay path would need a proxy on every path that
rewrites ICE candidates, which is not built (docs/harness.md).

Cleanup. ``close()`` (also at interpreter exit) kills every process in the lab's namespaces
and deletes them, which removes the veths and the bridge. ``NetLab.start()`` first sweeps the
namespaces of labs whose creating process is gone (a crashed or killed run) the same way.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from p2pkube.devcluster import read_since, wait_until

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO / "docker" / "entrypoint.py"
LAB_PREFIX = "p2pklab"
SUBNET = "10.77.0"
"""The lab's /24: every address the lab uses or targets is SUBNET.x inside its namespaces."""
FIRST_HOST = 10
SIGNAL_PORT = 8787
NETNS_ETC = Path("/etc/netns")
"""Per-namespace configuration files that ``ip netns exec`` bind-mounts over /etc."""
_NAME = re.compile(rf"^{LAB_PREFIX}-(\d+)-[0-9a-f]{{4}}-[a-z0-9-]+$")
_LIVENESS = re.compile(
    r"^(?P<restart>=== start .*)$|"
    r"^(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO p2pkube\.membership\.swim_host: "
    r"node (?P<node>\S+) \(\w+\) is (?P<state>NotReady|Ready): (?P<reason>\w+)",
    re.MULTILINE,
)
"""The membership host's log line for a liveness change (swim_host.SwimMembership._set)."""
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def available() -> str | None:
    """Why the lab cannot run here (the tests skip with this reason), or None."""
    if os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.geteuid()})"
    try:
        ip = tool("ip")
    except RuntimeError as exc:
        return str(exc)
    probe = f"{LAB_PREFIX}-{os.getpid()}-0000-probe"
    made = subprocess.run([ip, "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run([ip, "netns", "del", probe], capture_output=True)
    return None


def tool(name: str) -> str:
    """The path of a system tool, also when /usr/sbin is not on PATH (a minimal CI shell)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        packages = {"nft": "nftables", "ip": "iproute2", "ping": "iputils-ping"}
        package = {**packages, "turnserver": "coturn"}.get(name, name)
        raise RuntimeError(f"`{name}` is not installed (apt-get install {package})")
    return found


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([tool("ip"), *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _namespaces() -> list[str]:
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace(ns: str) -> None:
    """Kill every process in namespace ``ns`` (by pid), then delete it."""
    for _ in range(3):
        pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    _ip("netns", "del", ns, check=False)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


def sweep() -> list[str]:
    """Delete the namespaces (and kill the processes) of labs whose creator is gone."""
    removed = []
    for ns in _namespaces():
        match = _NAME.match(ns)
        if match and not _pid_alive(int(match.group(1))):
            _kill_namespace(ns)
            removed.append(ns)
    if NETNS_ETC.is_dir():  # name files of labs whose namespace is already gone
        for directory in NETNS_ETC.iterdir():
            match = _NAME.match(directory.name)
            if match and not _pid_alive(int(match.group(1))):
                shutil.rmtree(directory, ignore_errors=True)
    return removed


def _enter_netns(ns: str) -> None:
    """Move the calling thread into network namespace ``ns`` (setns is per thread)."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({ns}): {os.strerror(errno)}")
    finally:
        os.close(fd)


@dataclass
class Host:
    """One network host: a namespace, its address, and the program it runs (if any)."""

    name: str
    ns: str
    ip: str
    root: Path
    process: subprocess.Popen[bytes] | None = None
    role: str = ""
    extra: list[str] = field(default_factory=list)
    starts: int = 0
    pool: ThreadPoolExecutor | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / self.name

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NetLab:
    """Hosts on one bridge, each a network namespace; always call :meth:`close`."""

    def __init__(self, root: Path, token: str = "netlab-cluster-token-0123456789") -> None:
        self.root = root
        self.token = token
        self.id = f"{os.getpid()}-{secrets.token_hex(2)}"
        self.prefix = f"{LAB_PREFIX}-{self.id}"
        self.bridge_ns = f"{self.prefix}-br"
        self.hosts: dict[str, Host] = {}
        self.signal_host: Host | None = None
        self.started = time.monotonic()
        self.timeline: list[tuple[float, str]] = []
        """(seconds since start, what happened): every fault and start, for failure reports."""
        self._cuts: Counter[frozenset[str]] = Counter()
        """Host pairs that cannot exchange packets, with how many isolations cut each."""
        self._loss: dict[str, float] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._nft = "nft"
        self.swept: list[str] = []

    # -- the lab -------------------------------------------------------------------------------
    def start(self) -> NetLab:
        self.root.mkdir(parents=True, exist_ok=True)
        self._nft = tool("nft")  # needed for every fault; fail now, with the package to install
        self.swept = sweep()
        atexit.register(self.close)
        _ip("netns", "add", self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        self.note(f"lab {self.prefix} up (swept {len(self.swept)} stale namespaces)")
        return self

    def __enter__(self) -> NetLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def note(self, what: str) -> None:
        with self._lock:
            self.timeline.append((time.monotonic() - self.started, what))

    def add_host(self, name: str) -> Host:
        """A new host on the bridge, with the next address of the lab's /24."""
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,20}", name) or name in self.hosts:
            raise ValueError(f"bad or duplicate host name {name!r}")
        index = FIRST_HOST + len(self.hosts)
        ns = f"{self.prefix}-{name}"
        host = Host(name, ns, f"{SUBNET}.{index}", self.root)
        _ip("netns", "add", ns)
        self.hosts[name] = host  # from here on, close() removes it
        port = f"v{index}"
        _ip("link", "add", port, "netns", self.bridge_ns, "type", "veth", "peer", "name", "eth0",
            "netns", ns)  # fmt: skip
        _ip("-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        host.pool = ThreadPoolExecutor(4, f"netns-{name}", initializer=_enter_netns, initargs=(ns,))
        host.data_dir.mkdir(parents=True, exist_ok=True)
        return host

    def resolve(self, names: dict[str, str]) -> None:
        """Let programs on every host resolve ``names`` (name -> host name of the lab), as a
        compose network's DNS resolves service names: ``ip netns exec`` bind-mounts
        /etc/netns/<namespace>/hosts over /etc/hosts. (The test process's own namespace
        threads do not see it; they only talk to 127.0.0.1.)"""
        lines = ["127.0.0.1 localhost"]
        lines += [f"{self.hosts[host].ip} {name}" for name, host in sorted(names.items())]
        for host in self.hosts.values():
            directory = NETNS_ETC / host.ns
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "hosts").write_text("\n".join(lines) + "\n")
        self.note("names: " + ", ".join(f"{n}={h}" for n, h in sorted(names.items())))

    def close(self) -> None:
        """Kill every process of the lab and delete its namespaces (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            process = host.process
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                    process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
        for host in self.hosts.values():
            if host.pool is not None:
                host.pool.shutdown(wait=True, cancel_futures=True)
        for host in self.hosts.values():
            _kill_namespace(host.ns)
        _kill_namespace(self.bridge_ns)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    def leftovers(self) -> list[str]:
        """This lab's namespaces and name files that still exist (empty after close())."""
        mine = [ns for ns in _namespaces() if ns.startswith(self.prefix + "-")]
        if NETNS_ETC.is_dir():
            mine += [str(d) for d in NETNS_ETC.iterdir() if d.name.startswith(self.prefix + "-")]
        return mine

    # -- processes -----------------------------------------------------------------------------
    def _env(self, host: Host, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2PKUBE_")}
        return {
            **env,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]),
            "P2PKUBE_DATA_DIR": str(host.data_dir),
            "P2PKUBE_TOKEN": self.token,
            **extra,
        }

    def run(
        self,
        host: Host | str,
        *argv: str,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on ``host`` to completion (``ip netns exec``)."""
        h = self._host(host)
        result = subprocess.run(
            [tool("ip"), "netns", "exec", h.ns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env(h, env or {}),
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"on {h.name}: {' '.join(argv)} exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result

    def spawn(self, host: Host | str, argv: Sequence[str], env: dict[str, str]) -> Host:
        """Start ``argv`` on ``host`` in the background, output appended to its log."""
        h = self._host(host)
        if h.running:
            raise RuntimeError(f"{h.name} already runs pid {h.process.pid}")  # type: ignore[union-attr]
        with h.log_path.open("ab") as log:
            log.write(f"=== start {h.starts + 1}: {' '.join(argv)}\n".encode())
            log.flush()
            h.process = subprocess.Popen(
                [tool("ip"), "netns", "exec", h.ns, *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(h, env),
                cwd=REPO,
            )
        h.starts += 1
        return h

    def entrypoint(self, role: str, *args: str) -> list[str]:
        return [sys.executable, str(ENTRYPOINT), role, *args]

    @property
    def signal_url(self) -> str:
        assert self.signal_host is not None, "start_signaling() first"
        return f"ws://{self.signal_host.ip}:{SIGNAL_PORT}"

    def start_signaling(self, host: Host | str) -> Host:
        h = self._host(host)
        h.role = "signal"
        self.signal_host = h
        self.spawn(h, self.entrypoint("signal"), {"P2PKUBE_SIGNAL_PORT": str(SIGNAL_PORT)})
        self.note(f"signal started on {h.name} ({h.ip})")
        wait_until(lambda: self.call(h, lambda: _connects(h.ip, SIGNAL_PORT)), 20, what="signaling")
        return h

    def agent_env(self, host: Host, ice_address: bool = True) -> dict[str, str]:
        env = {"P2PKUBE_SIGNAL_URL": self.signal_url, "P2PKUBE_NAME": host.name}
        if ice_address:
            env["P2PKUBE_ICE_ADDRESS"] = host.ip
        return env

    def start_agent(self, host: Host | str, *extra: str, ice_address: bool = True) -> Host:
        """Start (or restart, same data dir and extra args) the agent of ``host``."""
        h = self._host(host)
        if extra or not h.role:
            h.extra = list(extra)
        h.role = "peer"
        self.spawn(h, self.entrypoint("peer", *h.extra), self.agent_env(h, ice_address))
        self.note(f"agent {h.name} started (start {h.starts}, pid {h.process.pid})")  # type: ignore[union-attr]
        return h

    def wait_api(self, host: Host | str, timeout: float = 40) -> None:
        h = self._host(host)

        def up() -> bool:
            if not h.running:
                raise RuntimeError(f"{h.name} exited with {h.process.returncode}")  # type: ignore[union-attr]
            return bool(self.api(h, "GET", "/v1/status", timeout=5))

        wait_until(up, timeout, interval=0.2, what=f"{h.name}'s API")

    def kill(self, host: Host | str, sig: int = signal.SIGKILL) -> None:
        h = self._host(host)
        if h.process is None or h.process.poll() is not None:
            return
        h.process.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            if sig == signal.SIGKILL:
                h.process.send_signal(signal.SIGCONT)  # a frozen process dies too
            h.process.wait(20)
        self.note(f"{h.name}: {signal.Signals(sig).name}")

    def freeze(self, host: Host | str) -> None:
        self.kill(host, signal.SIGSTOP)

    def thaw(self, host: Host | str) -> None:
        self.kill(host, signal.SIGCONT)

    # -- network faults ------------------------------------------------------------------------
    def partition(self, *groups: Iterable[str]) -> None:
        """Hosts in different groups cannot exchange a packet; hosts in no group (the
        signaling server, a TURN server) still reach everyone. Replaces any previous cuts."""
        sets = [sorted(set(g)) for g in groups]
        self._cuts.clear()
        for i, group in enumerate(sets):
            for other in sets[i + 1 :]:
                self._cuts.update(frozenset((a, b)) for a in group for b in other)
        self._apply_all()
        self.note("partition " + " | ".join(",".join(g) for g in sets))

    def isolate(self, group: Iterable[str], others: Iterable[str], cut: bool = True) -> None:
        """Add (``cut``) or remove one set of cuts between every host of ``group`` and every
        host of ``others``. Cuts are counted per pair, so overlapping isolations undo
        cleanly: a pair is open again once every isolation that cut it was removed."""
        group, others = sorted(set(group)), sorted(set(others) - set(group))
        pairs = [frozenset((a, b)) for a in group for b in others]
        for pair in pairs:
            self._cuts[pair] += 1 if cut else -1
            if self._cuts[pair] <= 0:
                del self._cuts[pair]
        for name in {*group, *others}:
            self._apply(self.hosts[name])
        self.note(f"{'isolate' if cut else 'rejoin'} {','.join(group)} from {','.join(others)}")

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between ``a`` and ``b`` (both directions), adding to the cuts."""
        self.isolate([a], [b])

    def heal(self) -> None:
        """Remove every partition and cut (loss stays as set)."""
        self._cuts.clear()
        self._apply_all()
        self.note("healed")

    def set_loss(self, probability: float, hosts: Iterable[str] | None = None) -> None:
        """Each packet the given hosts (default: all) receive is dropped with ``probability``."""
        names = list(hosts) if hosts is not None else list(self.hosts)
        for name in names:
            self._loss[name] = probability
        self._apply_all()
        self.note(f"loss {probability:.0%} on {','.join(names)}")

    def dropped(self) -> dict[str, dict[str, int]]:
        """Packets each host's rules dropped since it was added: {host: {"cut": n, "loss": n}}."""
        out: dict[str, dict[str, int]] = {}
        for name, host in self.hosts.items():
            listing = self.run(
                host, self._nft, "-j", "list", "counters", "table", "inet", "p2pklab", check=False
            ).stdout
            counts = {"cut": 0, "loss": 0}
            with contextlib.suppress(ValueError):
                for item in json.loads(listing or "{}").get("nftables", []):
                    counter = item.get("counter")
                    if counter and counter.get("name") in counts:
                        counts[counter["name"]] = int(counter["packets"])
            out[name] = counts
        return out

    def _apply_all(self) -> None:
        for host in self.hosts.values():
            self._apply(host)

    def _apply(self, host: Host) -> None:
        """Set the host's rules to what the lab's state says, in one nft transaction. The
        table and its named counters stay; only the chains' rules are replaced."""
        peers = {n for pair in self._cuts if host.name in pair for n in pair} - {host.name}
        blocked = sorted(self.hosts[b].ip for b in peers)
        loss = self._loss.get(host.name, 0.0)
        rules = [
            "table inet p2pklab {",
            "  counter cut {}",
            "  counter loss {}",
            "  chain input { type filter hook input priority filter; policy accept; }",
            "  chain output { type filter hook output priority filter; policy accept; }",
            "}",
            "flush chain inet p2pklab input",
            "flush chain inet p2pklab output",
            'add rule inet p2pklab input iifname "lo" accept',
            'add rule inet p2pklab output oifname "lo" accept',
        ]
        if blocked:
            addresses = ", ".join(blocked)
            rules.append(
                f'add rule inet p2pklab input ip saddr {{ {addresses} }} counter name "cut" drop'
            )
            rules.append(
                f'add rule inet p2pklab output ip daddr {{ {addresses} }} counter name "cut" drop'
            )
        if loss > 0:
            threshold = round(loss * 1_000_000)
            rules.append(
                f"add rule inet p2pklab input numgen random mod 1000000 < {threshold} "
                'counter name "loss" drop'
            )
        text = "\n".join(rules) + "\n"
        result = subprocess.run(
            [tool("ip"), "netns", "exec", host.ns, self._nft, "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"nft on {host.name} failed: {result.stderr.strip()}\n{text}")

    # -- talking to hosts ----------------------------------------------------------------------
    def _host(self, host: Host | str) -> Host:
        return host if isinstance(host, Host) else self.hosts[host]

    def call(self, host: Host | str, fn: Callable[[], T], timeout: float = 60) -> T:
        """Run ``fn`` on a thread inside ``host``'s network namespace."""
        h = self._host(host)
        assert h.pool is not None
        return h.pool.submit(fn).result(timeout)

    def api(
        self, host: Host | str, method: str, path: str, body: Any = None, timeout: float = 15
    ) -> Any:
        """One local API call to ``host``'s agent (its 127.0.0.1, inside its namespace)."""
        from p2pkube.api.client import ApiClient

        h = self._host(host)

        def request() -> Any:
            client = ApiClient.from_data_dir(h.data_dir, timeout=timeout)
            return client.request(method, path, body)

        return self.call(h, request, timeout + 5)

    def cli(self, host: Host | str, *args: str, check: bool = True, timeout: float = 60) -> Any:
        """``p2pkube ARGS`` on ``host``, as a user there would type it."""
        h = self._host(host)
        return self.run(h, sys.executable, "-m", "p2pkube", *args, check=check, timeout=timeout)

    def nodes(self, viewer: Host | str, timeout: float = 10) -> dict[str, str]:
        """Node name -> Ready condition status as ``viewer``'s agent sees it."""
        items = self.api(viewer, "GET", "/v1/nodes", timeout=timeout)["items"]
        return {
            n["metadata"]["name"]: next(
                c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"
            )
            for n in items
        }

    def all_ready(self, viewers: Iterable[str], names: Iterable[str]) -> bool:
        wanted = sorted(names)
        for viewer in viewers:
            seen = self.nodes(viewer)
            if sorted(seen) != wanted or any(v != "True" for v in seen.values()):
                return False
        return True

    def wait_ready(self, names: Sequence[str], timeout: float = 60) -> float:
        """Wait until every agent in ``names`` sees exactly ``names`` Ready; the seconds."""
        began = time.monotonic()
        wait_until(lambda: self.all_ready(names, names), timeout, interval=0.25, what="all Ready")
        return time.monotonic() - began

    # -- reports -------------------------------------------------------------------------------
    def log_tail(self, host: Host | str, lines: int = 40) -> str:
        path = self._host(host).log_path
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def log_since(self, host: Host | str, mark: int) -> str:
        """What ``host``'s log gained after it was ``mark`` bytes long (its size then, from
        ``log_path.stat().st_size``): all of it, however much the agent logged meanwhile."""
        return read_since(self._host(host).log_path, mark)

    @contextlib.contextmanager
    def reporting(self, lines: int = 60) -> Iterator[None]:
        """Print :meth:`report` if the block raises (inside a test: pytest shows it)."""
        try:
            yield
        except BaseException:
            print(self.report(lines))
            raise

    def not_ready_spells(self, host: Host | str) -> list[tuple[str, str, float]]:
        """Every time ``host``'s agent saw a node NotReady and then Ready again, from its log:
        (node, reason, seconds NotReady)."""
        spells: list[tuple[str, str, float]] = []
        since: dict[str, tuple[float, str]] = {}  # node -> (NotReady at, reason)
        path = self._host(host).log_path
        text = path.read_text(errors="replace") if path.exists() else ""
        for match in _LIVENESS.finditer(text):
            if match["restart"]:
                since = {}  # a new process: what the old one saw ends with it
                continue
            stamp = datetime.datetime.strptime(match["when"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            node, state, reason = match["node"], match["state"], match["reason"]
            if state == "NotReady":
                since.setdefault(node, (stamp, reason))
            elif node in since:
                began, why = since.pop(node)
                spells.append((node, why, round(stamp - began, 3)))
        return spells

    def history(self) -> str:
        return "\n".join(f"{t:8.2f}s  {what}" for t, what in self.timeline)

    def report(self, lines: int = 40) -> str:
        """The timeline and every host's log tail: what a failed test prints."""
        parts = [f"=== lab {self.prefix} timeline ===", self.history()]
        for name in self.hosts:
            parts += [f"=== {name} log (last {lines} lines) ===", self.log_tail(name, lines)]
        return "\n".join(parts)


def _connects(ip: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((ip, port)) == 0


@contextlib.contextmanager
def lab_or_skip(root: Path, request: Any) -> Iterator[NetLab]:
    """A started lab, closed afterwards (its report printed when a test failed); skips the
    test, with the reason printed in pytest's warnings summary, when the lab cannot run."""
    import warnings

    import pytest

    reason = available()
    if reason is not None:
        message = f"network-namespace tests skipped: {reason}"
        warnings.warn(message, pytest.PytestWarning, stacklevel=2)
        print(message, file=sys.stderr)
        pytest.skip(message)
    lab = NetLab(root)
    failed_before = request.session.testsfailed
    try:
        lab.start()
        yield lab
    finally:
        failed = request.session.testsfailed > failed_before
        if failed:
            print(lab.report(60))
        lab.close()
        left = lab.leftovers()
        assert not left, f"namespaces left behind: {left}"
