"""A local cluster on loopback: a signaling server and agents as real separate processes.

Used by ``make demo``, by the end-to-end tests and by the benchmarks, so all three start peers
exactly the way a user does (``p2pkube signal`` / ``p2pkube join`` / ``p2pkube get``). Each
cluster has a fresh random join token, handed to its processes in ``$P2PKUBE_TOKEN`` (never on
a command line, where ``ps`` would show it).

How the processes start is :attr:`LocalCluster.starter`: by default each is a new interpreter;
the test suite forks them instead from one that has imported p2pkube already
(``harness/zygote.py``), which runs the same ``main(ARGS)`` without the imports' CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol, TypeVar

from p2pkube.net.jointoken import Verifier, generate_token

T = TypeVar("T")


class ChildProcess(Protocol):
    """What the cluster needs of a started process (``subprocess.Popen`` has it)."""

    pid: int
    returncode: int | Any

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class ProcessStarter(Protocol):
    """Starts ``[sys.executable, "-m", "p2pkube", ...]`` another way than a new interpreter."""

    def popen(
        self, args: list[str], *, env: dict[str, str], stdout: IO[bytes], stderr: int
    ) -> ChildProcess: ...

    def run(
        self, args: list[str], *, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]: ...


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], T | None], timeout: float, *, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll ``check`` until it returns something truthy; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the agent may not be up yet
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what} ({last_error})")
        time.sleep(interval)


@dataclass
class AgentProcess:
    name: str
    data_dir: Path
    args: list[str]
    log_path: Path
    token: str
    """The join token it is started with (in its environment)."""
    process: ChildProcess | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalCluster:
    """Start and stop a signaling server and agents under ``root``; always call :meth:`close`."""

    root: Path
    token: str = field(default_factory=generate_token)
    """The cluster's join token: random unless given."""
    max_peers: int = 8
    extra_agent_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    signaling_port: int = 0
    listen_host: str = "127.0.0.1"
    """Where the signaling server listens: loopback unless asked otherwise (``0.0.0.0`` lets
    other machines' browsers in, and everyone who can reach this machine try to join)."""
    ice_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    """Host addresses the agents offer as ICE candidates (add a LAN address for browsers on
    other machines)."""
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "p2pkube"])
    """How its processes run the p2pkube CLI: this interpreter's package by default, or an
    installed ``p2pkube`` script (tests/test_wheel.py: a wheel installed in a fresh venv)."""
    signaling: ChildProcess | None = None
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    starter: ClassVar[ProcessStarter | None] = None
    """How ``p2pkube`` processes start: None (a new interpreter each) unless a test suite set
    one (see the module docstring)."""

    def _forks(self) -> bool:
        """Whether the starter starts this cluster's processes (only this interpreter's
        package: an installed script is started as a new process)."""
        return self.starter is not None and self.command == [sys.executable, "-m", "p2pkube"]

    def _popen(self, args: list[str], log: IO[bytes], env: dict[str, str]) -> ChildProcess:
        if self.starter is not None and self._forks():
            return self.starter.popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.signaling_port}"

    def page_url(self, host: str = "127.0.0.1") -> str:
        """The page that makes a browser tab a node of this cluster (token in the fragment)."""
        return f"http://{host}:{self.signaling_port}/#token={self.token}"

    def _env(self, token: str | None = None) -> dict[str, str]:
        """The environment of a process of the cluster; ``token`` goes in ``$P2PKUBE_TOKEN``
        (the caller's own ``$P2PKUBE_TOKEN`` never leaks into it)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("P2PKUBE_TOKEN", None)
        if token is not None:
            env["P2PKUBE_TOKEN"] = token
        return env

    # -- signaling -----------------------------------------------------------------------------
    def start_signaling(self, *, verifier_only: bool = False) -> None:
        """Start ``p2pkube signal`` with the token in its environment; with ``verifier_only``,
        with only the cluster's verifier (``--verifier-file``): that server never holds the
        token at all."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.signaling_port:
            self.signaling_port = free_port()
        credentials: list[str] = []
        if verifier_only:
            path = self.root / "signal.verifier"
            path.write_text(Verifier.from_token(self.token).line() + "\n")
            credentials = ["--verifier-file", str(path)]
        log = (self.root / "signaling.log").open("ab")
        self.signaling = self._popen(
            [
                *self.command,
                "signal",
                "--host",
                self.listen_host,
                "--port",
                str(self.signaling_port),
                *credentials,
            ],
            log,
            self._env(None if verifier_only else self.token),
        )
        wait_until(self._signaling_up, 15, what="the signaling server")

    def _signaling_up(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.signaling_port)) == 0

    def stop_signaling(self) -> None:
        if self.signaling is not None and self.signaling.poll() is None:
            self.signaling.terminate()
            try:
                self.signaling.wait(10)
            except subprocess.TimeoutExpired:
                self.signaling.kill()
        self.signaling = None

    # -- agents --------------------------------------------------------------------------------
    def node_ip(self, name: str) -> str:
        """Agent ``name``'s own loopback address (``--node-ip``), 127.0.0.2 for the first
        agent started, 127.0.0.3 for the next...: each serves its NodePorts apart (all of
        127/8 is loopback on Linux)."""
        names = list(self.agents)
        index = names.index(name) if name in names else len(names)
        return f"127.0.0.{index + 2}"

    def start_agent(self, name: str, *extra: str, token: str | None = None) -> AgentProcess:
        """Start (or restart, with the same data dir) agent ``name``, NodePorts on
        :meth:`node_ip` unless ``extra`` gives a ``--node-ip``."""
        agent = self.agents.get(name)
        if agent is None:
            data_dir = self.root / name
            given = "--node-ip" in (*extra, *self.extra_agent_args)
            node_ip = [] if given else ["--node-ip", self.node_ip(name)]
            args = [
                *self.command,
                "join",
                self.url,
                "--name",
                name,
                "--data-dir",
                str(data_dir),
                *(arg for address in self.ice_addresses for arg in ("--ice-address", address)),
                "--max-peers",
                str(self.max_peers),
                *node_ip,
                *self.extra_agent_args,
                *extra,
            ]
            log_path = self.root / f"{name}.log"
            agent = AgentProcess(name, data_dir, args, log_path, token or self.token)
            self.agents[name] = agent
        log = agent.log_path.open("ab")
        agent.process = self._popen(agent.args, log, self._env(agent.token))
        return agent

    def wait_api(self, name: str, timeout: float = 30) -> None:
        """Wait until agent ``name`` answers on its local API."""
        wait_until(lambda: self.api(name, "GET", "/v1/status"), timeout, what=f"{name}'s API")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        agent = self.agents[name]
        if agent.process is not None and agent.process.poll() is None:
            agent.process.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                agent.process.wait(20)

    def close(self) -> None:
        for agent in self.agents.values():
            if agent.process is not None and agent.process.poll() is None:
                agent.process.send_signal(signal.SIGCONT)
                agent.process.kill()
                agent.process.wait(10)
        self.stop_signaling()

    # -- talking to agents ---------------------------------------------------------------------
    def cli(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``p2pkube --data-dir <name's dir> ARGS`` like a user would."""
        command = [*self.command, "--data-dir", str(self.root / name), *args]
        if self.starter is not None and self._forks():
            result = self.starter.run(command, env=self._env(), timeout=60)
        else:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=60, env=self._env()
            )
        if check and result.returncode != 0:
            raise RuntimeError(f"p2pkube {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def api(self, name: str, method: str, path: str, body: Any = None) -> Any:
        """One local API call to agent ``name`` (what the CLI does, without a new process)."""
        from p2pkube.api.client import ApiClient

        client = ApiClient.from_data_dir(self.root / name)
        return client.request(method, path, body)

    def ready_endpoints(
        self, viewer: str, service: str, namespace: str = "default"
    ) -> dict[str, str]:
        """Pod -> node of ``service``'s ready endpoints as agent ``viewer`` computes them
        (``p2pkube get endpoints -o json``); empty while the Service is unknown there."""
        found = self.cli(
            viewer, "get", "endpoints", service, "-n", namespace, "-o", "json", check=False
        )
        if found.returncode != 0:
            return {}
        return {
            address["targetRef"]["name"]: address["nodeName"]
            for subset in json.loads(found.stdout).get("subsets", [])
            for address in subset.get("addresses", [])
        }

    def nodes(self, name: str) -> dict[str, str]:
        """Node name -> Ready condition status as agent ``name`` sees it."""
        items = self.api(name, "GET", "/v1/nodes")["items"]
        return {
            n["metadata"]["name"]: next(
                c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"
            )
            for n in items
        }

    def log_path(self, name: str) -> Path:
        """The log of agent ``name`` (or of the signaling server: ``signaling``)."""
        return self.root / ("signaling.log" if name == "signaling" else f"{name}.log")

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_path(name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def log_since(self, name: str, offset: int) -> str:
        """What ``name`` logged after its log was ``offset`` bytes long (``log_size``)."""
        return read_since(self.log_path(name), offset)

    def log_size(self, name: str) -> int:
        """How long the log of ``name`` is now, in bytes (0 before it starts)."""
        path = self.log_path(name)
        return path.stat().st_size if path.exists() else 0


def read_since(path: Path, offset: int) -> str:
    """What a log file gained after it was ``offset`` bytes long: all of it, however much was
    written meanwhile ("" when there is no file yet)."""
    with contextlib.suppress(FileNotFoundError), path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")
    return ""


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
