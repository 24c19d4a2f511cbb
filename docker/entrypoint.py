#!/usr/bin/env python3
"""The entrypoint of p2pkube's container image: one image, four roles.

    entrypoint.py signal [ARGS...]  the signaling server (p2pkube signal) on 0.0.0.0
    entrypoint.py peer [ARGS...]    an agent (p2pkube join) named after the container
    entrypoint.py client            one shot: join, apply the example manifests, wait until
                                    they run, leave
    entrypoint.py health            the HEALTHCHECK: exit 0 while this container's process
                                    answers (the agent's local API, or the signaling
                                    server's /healthz)
    entrypoint.py COMMAND [ARGS...] anything else is run as is (e.g. `p2pkube get nodes`)

ARGS are appended to the `p2pkube signal` / `p2pkube join` command line (e.g.
``--set swim.probe_interval=0.2``). The tests start the agents of their network-namespace
hosts with this same file (harness/netlab.py), so the commands the image runs are the ones the
tests run.

Environment (all optional except the token):

    P2PKUBE_TOKEN            the join token (signal, peer, client): at least 22 characters
                             (`p2pkube token` makes one); never put on a command line: join
                             reads it from the environment, signal from a 0600 file
    P2PKUBE_TOKEN_FILE       or a file holding it (e.g. a secret under /run/secrets/); wins
                             over P2PKUBE_TOKEN
    P2PKUBE_SIGNAL_URL       where peers find the signaling server (ws://signal:8787)
    P2PKUBE_SIGNAL_PORT      the port the signaling server listens on (8787)
    P2PKUBE_NAME             node name (peer-<hostname> or client-<hostname>; a compose
                             replica's hostname is its container id, so names are unique)
    P2PKUBE_DATA_DIR         the agent's data dir (~/.p2pkube; also what the CLI reads, so
                             `docker compose exec peer p2pkube get nodes` just works)
    P2PKUBE_ICE_ADDRESS      comma-separated addresses to offer as ICE host candidates. Unset:
                             aioice offers every address of every interface but loopback, which
                             in a container (or a network namespace) is its own address
    P2PKUBE_ALLOW_HOST_PATH  comma-separated PREFIX[:rw] host directories pods may mount as
                             hostPath (p2pkube join --allow-host-path), read-only unless :rw.
                             Unset: none. Paths are the container's: mount the host directory
                             into the container first. The data dir is never mountable
    P2PKUBE_ICE_SERVERS      STUN/TURN URLs (transport.ice_servers), e.g. turn:turn:3478
    P2PKUBE_ICE_USERNAME     TURN username (transport.ice_username)
    P2PKUBE_ICE_CREDENTIAL   TURN password: written to a 0600 file in the data dir and passed
                             as transport.ice_credential_file, so it is not in the process list
    P2PKUBE_ICE_CREDENTIAL_FILE  or a file holding it (e.g. a secret under /run/secrets/)
    P2PKUBE_CLIENT_MANIFESTS comma-separated manifests the client applies
                             (<image examples>/primes.yaml,<image examples>/batch.yaml)
    P2PKUBE_CLIENT_PEERS     Ready peers the client waits for before it applies (1)
    P2PKUBE_CLIENT_TIMEOUT   seconds the client may take in all (600)
    P2PKUBE_HEALTH_TIMEOUT   seconds the health check waits for an answer (5)

Standard library plus p2pkube itself (its API client, for the health check); run with the
interpreter p2pkube is installed for: every command is ``sys.executable -m p2pkube``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EXAMPLES = next(
    (p for p in (HERE / "examples", HERE.parent / "examples") if (p / "primes.yaml").exists()),
    HERE / "examples",
)
"""The examples in the image (/opt/p2pkube/examples) or in a checkout (../examples)."""
ROLE_FILE = "entrypoint.role"
"""In the data dir: which role this container runs, for the health check."""
CLIENT_LABEL = "p2pkube.io/role=client"
ROLES = ("signal", "peer", "client", "health")


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


def data_dir() -> Path:
    path = Path(env("P2PKUBE_DATA_DIR", "~/.p2pkube")).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def p2pkube(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2pkube", *args]


def fail(message: str) -> int:
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)
    return 1


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, readable by this user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    return path


def record_role(role: str, **extra: Any) -> None:
    (data_dir() / ROLE_FILE).write_text(json.dumps({"role": role, **extra}) + "\n")


def token_file() -> Path | None:
    """The file $P2PKUBE_TOKEN_FILE names (a mounted secret), if set."""
    path = env("P2PKUBE_TOKEN_FILE")
    return Path(path) if path else None


def token_problem() -> str | None:
    """Why this container has no usable join token (unset, unreadable, too short), or None.

    The same checks as ``p2pkube signal`` and ``p2pkube join`` make, done first so a
    container with a bad token says so at once instead of restarting over and over."""
    from p2pkube.net.jointoken import check_token
    from signaling.tokens import load_tokens

    try:
        if (path := token_file()) is not None:
            load_tokens(None, path)
        elif secret := env("P2PKUBE_TOKEN"):
            check_token(secret, "P2PKUBE_TOKEN")
        else:
            return "P2PKUBE_TOKEN (or P2PKUBE_TOKEN_FILE) is not set: the cluster's join token"
    except ValueError as exc:
        return str(exc)
    return None


# --- signal --------------------------------------------------------------------------------


def run_signal(args: list[str]) -> int:
    if problem := token_problem():
        return fail(problem)
    port = env("P2PKUBE_SIGNAL_PORT", "8787")
    secret = token_file() or write_private(data_dir() / "signal.token", env("P2PKUBE_TOKEN"))
    record_role("signal", port=int(port))
    command = p2pkube(
        "signal", "--host", "0.0.0.0", "--port", port, "--token-file", str(secret), *args
    )
    os.execv(command[0], command)
    return 1  # not reached


# --- peer ----------------------------------------------------------------------------------


def join_command(name: str, args: list[str]) -> list[str]:
    """``p2pkube join`` as the environment says (the token stays in the environment)."""
    command = p2pkube("join", env("P2PKUBE_SIGNAL_URL", "ws://signal:8787"), "--name", name)
    for address in filter(None, (a.strip() for a in env("P2PKUBE_ICE_ADDRESS").split(","))):
        command += ["--ice-address", address]
    for grant in filter(None, (g.strip() for g in env("P2PKUBE_ALLOW_HOST_PATH").split(","))):
        command += ["--allow-host-path", grant]
    if servers := env("P2PKUBE_ICE_SERVERS"):
        command += ["--set", f"transport.ice_servers={servers}"]
    if username := env("P2PKUBE_ICE_USERNAME"):
        command += ["--set", f"transport.ice_username={username}"]
    credential_file = env("P2PKUBE_ICE_CREDENTIAL_FILE")
    if not credential_file and (credential := env("P2PKUBE_ICE_CREDENTIAL")):
        credential_file = str(write_private(data_dir() / "ice.credential", credential))
    if credential_file:
        command += ["--set", f"transport.ice_credential_file={credential_file}"]
    if (path := token_file()) is not None:
        command += ["--token-file", str(path)]
    return [*command, *args]


def default_name(prefix: str) -> str:
    return env("P2PKUBE_NAME", f"{prefix}-{socket.gethostname().split('.')[0].lower()}")


def run_peer(args: list[str]) -> int:
    if problem := token_problem():
        return fail(problem)
    data_dir()
    record_role("peer")
    command = join_command(default_name("peer"), args)
    os.execv(command[0], command)
    return 1  # not reached


# --- client --------------------------------------------------------------------------------


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(p2pkube(*args), capture_output=True, text=True, timeout=timeout)


def wait_for(what: str, check: Any, deadline: float, interval: float = 0.5) -> Any:
    while True:
        try:
            value = check()
        except (subprocess.SubprocessError, ValueError, KeyError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def ready_peers(me: str) -> list[str]:
    result = cli("get", "nodes", "-o", "json", timeout=20)
    if result.returncode != 0:
        return []
    return [
        n["metadata"]["name"]
        for n in json.loads(result.stdout)["items"]
        if n["metadata"]["name"] != me
        and any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]


def manifest_objects(path: Path) -> list[tuple[str, str]]:
    """(kind, name) of every Deployment and Job in a manifest: what the client waits for."""
    import yaml

    found = []
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") in ("Deployment", "Job"):
            found.append((doc["kind"], doc["metadata"]["name"]))
    return found


def job_done(name: str) -> str | None:
    """'Complete' or 'Failed' once the Job has that condition, else None."""
    result = cli("get", "jobs", name, "-o", "json", timeout=20)
    if result.returncode != 0:
        return None
    for condition in (json.loads(result.stdout).get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def run_client(args: list[str]) -> int:
    """Join as a node that offers no CPU (so no pod that requests CPU is placed on it), apply
    the manifests, wait until every Deployment has rolled out and every Job has finished
    (their nodes have then fetched the modules from this one), and leave."""
    if problem := token_problem():
        return fail(problem)
    deadline = time.monotonic() + float(env("P2PKUBE_CLIENT_TIMEOUT", "600"))
    manifests = [
        Path(m)
        for m in env(
            "P2PKUBE_CLIENT_MANIFESTS", f"{EXAMPLES / 'primes.yaml'},{EXAMPLES / 'batch.yaml'}"
        ).split(",")
        if m.strip()
    ]
    for manifest in manifests:
        if not manifest.exists():
            return fail(f"manifest {manifest} does not exist")
    data_dir()
    record_role("client")
    # PID 1 in a container ignores signals it has no handler for: make `docker stop` a leave.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    name = default_name("client")
    command = join_command(name, ["--cpu", "0", "--label", CLIENT_LABEL, *args])
    agent = subprocess.Popen(command)
    try:
        wait_for("the local agent", lambda: cli("status", timeout=20).returncode == 0, deadline)
        wanted = int(env("P2PKUBE_CLIENT_PEERS", "1"))
        peers = wait_for(
            f"{wanted} Ready peer(s)", lambda: len(p := ready_peers(name)) >= wanted and p, deadline
        )
        print(f"client {name}: {len(peers)} Ready peer(s): {', '.join(sorted(peers))}", flush=True)
        waits: list[tuple[str, str]] = []
        for manifest in manifests:
            result = cli("apply", "-f", str(manifest), timeout=120)
            print(result.stdout, end="", flush=True)
            if result.returncode != 0:
                return fail(f"apply -f {manifest} failed: {result.stderr.strip()}")
            waits += manifest_objects(manifest)
        for kind, obj in waits:
            remaining = max(1, int(deadline - time.monotonic()))
            if kind == "Deployment":
                result = cli(
                    "rollout", "status", f"deployment/{obj}", "--timeout", f"{remaining}s",
                    timeout=remaining + 30,
                )  # fmt: skip
                print(result.stdout.strip().splitlines()[-1] if result.stdout else "", flush=True)
                if result.returncode != 0:
                    return fail(f"deployment {obj} did not roll out: {result.stderr.strip()}")
            else:
                outcome = wait_for(f"job {obj} to finish", lambda o=obj: job_done(o), deadline, 1)
                print(f'job "{obj}" {outcome.lower()}', flush=True)
                if outcome != "Complete":
                    return fail(f"job {obj} failed")
        print(f"client {name}: done, leaving the cluster", flush=True)
        return 0
    except TimeoutError as exc:
        return fail(str(exc))
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)  # a graceful leave: NotReady at once everywhere
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()


# --- health --------------------------------------------------------------------------------


def run_health() -> int:
    """0 when this container's process answers within P2PKUBE_HEALTH_TIMEOUT, else 1."""
    timeout = float(env("P2PKUBE_HEALTH_TIMEOUT", "5"))
    path = data_dir() / ROLE_FILE
    try:
        role = json.loads(path.read_text())
    except (OSError, ValueError):
        return fail(f"no role recorded in {path} (not started yet?)")
    try:
        if role["role"] == "signal":
            url = f"http://127.0.0.1:{role['port']}/healthz"
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=timeout) as response:
                if response.status != 200:
                    return fail(f"{url}: HTTP {response.status}")
            return 0
        from p2pkube.api.client import ApiClient

        status = ApiClient.from_data_dir(data_dir(), timeout=timeout).status()
        if not status.get("node"):
            return fail("the agent's status names no node")
        return 0
    except Exception as exc:  # any failure to answer is unhealthy
        return fail(f"{role.get('role')} is not answering: {exc}")


def main(argv: list[str]) -> int:
    role, args = (argv[0], argv[1:]) if argv else ("peer", [])
    if role == "signal":
        return run_signal(args)
    if role == "peer":
        return run_peer(args)
    if role == "client":
        return run_client(args)
    if role == "health":
        return run_health()
    os.execvp(role, [role, *args])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
