"""The CLI against a real local API server.

The server is the real ``ApiServer`` on 127.0.0.1:0, running in a background thread with its
own event loop (CliRunner is synchronous and would deadlock against a server on the same loop).
Behind it sits the in-memory backend (tests/memorybackend.py: the agent's real object service
over an in-memory state, with three nodes written by the test): the multi-agent end-to-end
tests with real agents live elsewhere; here we check the HTTP surface, auth and what the CLI
prints.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from p2pkube.api.client import ApiClient, ApiClientError, ApiError
from p2pkube.api.server import ApiServer
from p2pkube.cli.main import cli
from p2pkube.cli.output import format_age, human_duration, render_status, table
from p2pkube.model.selectors import match_labels, parse_selector
from tests.memorybackend import MemoryBackend, serving

REPO = Path(__file__).resolve().parent.parent


def _ts(ago: timedelta) -> str:
    return (datetime.now(UTC) - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node(
    name: str, ready: str | None, *, zone: str, kind: str = "native", peers: int = 3
) -> dict[str, Any]:
    node_id = (name.encode().hex() * 16)[:64]
    conditions = []
    if ready is not None:
        reason = {"True": "AgentReady", "False": "AgentDead"}.get(ready, "Starting")
        conditions.append(
            {
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "lastHeartbeatTime": _ts(timedelta(seconds=1)),
                "lastTransitionTime": _ts(timedelta(minutes=1)),
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": node_id,
            "labels": {"zone": zone, "p2pkube.io/kind": kind},
            "creationTimestamp": _ts(timedelta(days=2, minutes=30)),
        },
        "status": {
            "conditions": conditions,
            "capacity": {"cpu": "2", "memory": "24Gi"},
            "allocatable": {"cpu": "2", "memory": "23Gi"},
            "nodeInfo": {"kind": kind, "agentVersion": "0.1.0", "nodeID": node_id},
            "peers": peers,
        },
    }


def _nodes() -> list[dict[str, Any]]:
    """Three nodes as the agent shows them: Ready, NotReady, and never heard from."""
    return [
        _node("n1", "True", zone="a"),
        _node("n2", "False", zone="b", peers=1),
        _node("n3", None, zone="a", kind="browser", peers=2),
    ]


STATUS = {
    "node": "n1",
    "nodeID": "ab" * 32,
    "uptimeSeconds": 12.5,
    "neighbours": [
        {"name": "n2", "rttMs": 0.2, "state": "connected"},
        {"name": "n3", "rttMs": 0.4, "state": "connected"},
    ],
    "counters": {"updatesSent": 10, "updatesReceived": 12},
}
"""What ``status`` answers here (the agent's own view is free-form JSON)."""


def memory_backend() -> MemoryBackend:
    return MemoryBackend("n1", status=STATUS)


@dataclass
class Agent:
    server: ApiServer
    backend: MemoryBackend
    data_dir: Path
    nodes: list[dict[str, Any]]

    def client(self) -> ApiClient:
        return ApiClient.from_data_dir(self.data_dir)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    """A real ApiServer on 127.0.0.1:0 in a thread of its own."""
    backend, nodes = memory_backend(), _nodes()
    data_dir = tmp_path / "data"
    with serving(backend, nodes, data_dir) as (server, _loop):
        yield Agent(server, backend, data_dir, nodes)


def run(agent_or_dir: Agent | Path, *args: str) -> Result:
    """Run the CLI in-process against the agent's data dir."""
    data_dir = agent_or_dir.data_dir if isinstance(agent_or_dir, Agent) else agent_or_dir
    return CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args], catch_exceptions=False)


def ok(agent: Agent, *args: str) -> str:
    result = run(agent, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def _raw_get(url: str, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --- the server's files and auth -------------------------------------------------------------


def test_start_publishes_token_0600_and_api_json_and_stop_removes_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = ApiServer(memory_backend(), tmp_path / "d")
        await server.start()
        token_path = tmp_path / "d" / "api.token"
        assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
        assert token_path.read_text().strip() == server.token
        assert len(server.token) >= 43  # token_urlsafe(32)
        info = json.loads((tmp_path / "d" / "api.json").read_text())
        assert info == {
            "url": server.url,
            "pid": os.getpid(),
            "node": "n1",
            "kubeUrl": server.kube_url,
        }
        assert server.kube_url != server.url.replace("http:", "https:")
        assert server.url.startswith("http://127.0.0.1:")
        assert not list((tmp_path / "d").glob(".*.tmp"))
        first_token = server.token
        await server.stop()
        assert not (tmp_path / "d" / "api.json").exists()
        await server.start()  # a restart gets a fresh token
        assert server.token != first_token
        await server.stop()

    asyncio.run(scenario())


def test_server_refuses_a_non_loopback_host(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        ApiServer(memory_backend(), tmp_path, host="0.0.0.0")


def test_requests_without_the_right_token_get_a_401_status(agent: Agent) -> None:
    for token in (None, "wrong", agent.server.token + "x"):
        code, body = _raw_get(f"{agent.server.url}/v1/nodes", token)
        assert code == 401
        assert body["kind"] == "Status" and body["status"] == "Failure"
        assert body["reason"] == "Unauthorized" and body["code"] == 401
    # Unknown paths are not revealed without a token either.
    assert _raw_get(f"{agent.server.url}/nope", None)[0] == 401
    code, body = _raw_get(f"{agent.server.url}/v1/nodes", agent.server.token)
    assert code == 200 and body["kind"] == "NodeList" and len(body["items"]) == 3


def test_cli_with_a_wrong_token_says_so(agent: Agent) -> None:
    (agent.data_dir / "api.token").write_text("not-the-token\n")
    result = run(agent, "get", "nodes")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "401" in result.stderr and "token" in result.stderr
    assert "Traceback" not in result.stderr


def test_errors_are_kubernetes_status_objects(agent: Agent) -> None:
    token = agent.server.token
    code, body = _raw_get(f"{agent.server.url}/v1/nothing-here", token)
    assert (code, body["reason"], body["kind"]) == (404, "NotFound", "Status")
    code, body = _raw_get(f"{agent.server.url}/v1/objects/ConfigMap?labelSelector=a+in+(b)", token)
    assert (code, body["reason"]) == (400, "BadRequest")
    assert "not supported" in body["message"]
    with pytest.raises(ApiError) as info:
        agent.client().put_object(
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "s"}}
        )
    assert (info.value.code, info.value.reason) == (422, "Invalid")
    assert 'PersistentVolumeClaim "s" is invalid' in info.value.message
    with pytest.raises(ApiError) as info:
        agent.client().put_object({"kind": "ConfigMap", "metadata": {"name": "x"}})
    assert (info.value.code, info.value.reason) == (400, "BadRequest")


# --- client discovery errors -----------------------------------------------------------------


def test_missing_data_dir_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    """Through the real entry point (python -m p2pkube): no traceback, exit 1."""
    missing = tmp_path / "nowhere"
    proc = subprocess.run(
        [sys.executable, "-m", "p2pkube", "--data-dir", str(missing), "get", "nodes"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: no agent is running with data dir {missing} (no api.json); "
        "start one with `p2pkube join`"
    )
    assert proc.stdout == ""


def test_data_dir_from_environment_and_after_the_subcommand(agent: Agent, tmp_path: Path) -> None:
    env_result = CliRunner(env={"P2PKUBE_DATA_DIR": str(agent.data_dir)}).invoke(
        cli, ["get", "nodes", "-o", "name"]
    )
    assert env_result.exit_code == 0 and "node/n1" in env_result.stdout
    late = CliRunner().invoke(
        cli,
        ["--data-dir", str(tmp_path / "other"), "get", "nodes", "--data-dir", str(agent.data_dir)],
    )
    assert late.exit_code == 0 and "n1" in late.stdout


def test_agent_not_answering(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port that is certainly closed once we let go of it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "api.json").write_text(json.dumps({"url": f"http://127.0.0.1:{port}", "pid": 1}))
    (tmp_path / "api.token").write_text("t\n")
    result = run(tmp_path, "status")
    assert result.exit_code == 1
    assert f"error: agent at http://127.0.0.1:{port} is not answering" in result.stderr
    with pytest.raises(ApiClientError, match="not answering"):
        ApiClient.from_data_dir(tmp_path).status()


# --- get nodes -------------------------------------------------------------------------------


def test_get_nodes_table(agent: Agent) -> None:
    lines = ok(agent, "get", "nodes").splitlines()
    assert lines[0].split() == ["NAME", "KIND", "STATUS", "PEERS", "CPU", "MEMORY", "AGE"]
    assert lines[0].startswith("NAME   KIND      STATUS")  # 3-space gaps, left aligned
    rows = [line.split() for line in lines[1:]]
    assert rows == [
        ["n1", "native", "Ready", "3", "2", "24Gi", "2d"],
        ["n2", "native", "NotReady", "1", "2", "24Gi", "2d"],
        ["n3", "browser", "Unknown", "2", "2", "24Gi", "2d"],
    ]
    assert all(line == line.rstrip() for line in lines)
    # Columns line up: every row's STATUS starts where the header's does.
    col = lines[0].index("STATUS")
    assert [line[col:].split()[0] for line in lines[1:]] == ["Ready", "NotReady", "Unknown"]
    # The aliases reach the same table.
    assert ok(agent, "get", "node") == ok(agent, "get", "no") == "\n".join(lines) + "\n"


def test_get_nodes_wide(agent: Agent) -> None:
    lines = ok(agent, "get", "nodes", "-o", "wide").splitlines()
    assert lines[0].split() == [
        "NAME",
        "KIND",
        "STATUS",
        "PEERS",
        "CPU",
        "MEMORY",
        "AGE",
        "INTERNAL-IP",
        "NODE-ID",
        "VERSION",
        "LABELS",
    ]
    n1 = lines[1].split()
    assert n1[7] == "<none>"  # the test nodes publish no status.addresses
    assert n1[8] == agent.nodes[0]["status"]["nodeInfo"]["nodeID"][:12]
    assert n1[9] == "0.1.0"
    assert n1[10] == "p2pkube.io/kind=native,zone=a"


def test_get_nodes_json_yaml_name(agent: Agent) -> None:
    listing = json.loads(ok(agent, "get", "nodes", "-o", "json"))
    assert listing["apiVersion"] == "v1" and listing["kind"] == "List"
    assert listing["metadata"] == {"resourceVersion": ""}
    assert [n["metadata"]["name"] for n in listing["items"]] == ["n1", "n2", "n3"]
    assert listing["items"][0] == agent.nodes[0]

    one = json.loads(ok(agent, "get", "nodes", "n2", "-o", "json"))
    assert one["kind"] == "Node" and one["metadata"]["name"] == "n2"

    assert yaml.safe_load(ok(agent, "get", "nodes", "-o", "yaml")) == listing
    assert yaml.safe_load(ok(agent, "get", "nodes", "n2", "-o", "yaml")) == one

    assert ok(agent, "get", "nodes", "-o", "name") == "node/n1\nnode/n2\nnode/n3\n"
    assert ok(agent, "get", "nodes", "n1").splitlines()[1].split()[0] == "n1"


def test_get_unknown_node_and_unknown_resource(agent: Agent) -> None:
    result = run(agent, "get", "nodes", "zz")
    assert result.exit_code == 1
    assert result.stderr.strip() == 'Error from server (NotFound): nodes "zz" not found'
    result = run(agent, "get", "widgets")
    assert result.exit_code == 1
    assert 'doesn\'t have a resource type "widgets"' in result.stderr
    result = run(agent, "get", "nodes", "-o", "table")
    assert result.exit_code == 2 and "'-o'" in result.stderr


def test_get_nodes_by_label_selector(agent: Agent) -> None:
    assert ok(agent, "get", "nodes", "-l", "zone=a", "-o", "name") == "node/n1\nnode/n3\n"
    assert ok(agent, "get", "nodes", "-l", "zone!=a", "-o", "name") == "node/n2\n"
    browser = ok(agent, "get", "nodes", "-l", "p2pkube.io/kind==browser,zone", "-o", "name")
    assert browser == "node/n3\n"
    result = run(agent, "get", "nodes", "-l", "zone=nowhere")
    assert result.exit_code == 0 and result.stdout == ""
    assert "No resources found" in result.stderr


# --- configmaps ------------------------------------------------------------------------------


def test_configmap_create_get_delete_round_trip(agent: Agent) -> None:
    out = ok(agent, "create", "configmap", "web", "--from-literal", "color=blue",
             "--from-literal", "greeting=hello=world")  # fmt: skip
    assert out == "configmap/web created\n"
    stored = agent.backend.get_object("ConfigMap", "default", "web")
    assert stored is not None
    assert stored["data"] == {"color": "blue", "greeting": "hello=world"}
    assert stored["metadata"]["uid"] and stored["metadata"]["creationTimestamp"].endswith("Z")

    lines = ok(agent, "get", "configmaps").splitlines()
    assert lines[0].split() == ["NAME", "DATA", "AGE"]
    assert lines[1].split()[:2] == ["web", "2"]
    assert lines[1].split()[2].endswith("s")  # just created: "0s", "1s"...

    # The aliases reach the same table (AGE left out: a second may tick between the calls).
    def without_age(table: str) -> list[list[str]]:
        return [line.split()[:2] for line in table.splitlines()]

    assert without_age(ok(agent, "get", "cm")) == without_age(ok(agent, "get", "configmap"))
    assert without_age(ok(agent, "get", "cm")) == [line.split()[:2] for line in lines]

    obj = json.loads(ok(agent, "get", "cm", "web", "-o", "json"))
    assert obj["kind"] == "ConfigMap" and obj["data"]["greeting"] == "hello=world"
    assert obj["metadata"]["namespace"] == "default"

    again = run(agent, "create", "configmap", "web", "--from-literal", "color=red")
    assert again.exit_code == 1
    assert again.stderr.strip() == (
        'Error from server (AlreadyExists): configmaps "web" already exists'
    )
    kept = agent.backend.get_object("ConfigMap", "default", "web")
    assert kept is not None and kept["data"]["color"] == "blue"

    assert ok(agent, "delete", "configmap", "web") == 'configmap "web" deleted\n'
    gone = run(agent, "delete", "configmap", "web")
    assert gone.exit_code == 1
    assert gone.stderr.strip() == 'Error from server (NotFound): configmaps "web" not found'
    empty = run(agent, "get", "cm")
    assert empty.exit_code == 0 and empty.stdout == ""
    assert empty.stderr.strip() == "No resources found in default namespace."
    missing = run(agent, "get", "cm", "web")
    assert missing.exit_code == 1 and "NotFound" in missing.stderr


def test_configmaps_across_namespaces(agent: Agent) -> None:
    missing = run(agent, "create", "configmap", "a", "-n", "team-1")
    assert missing.exit_code == 1
    assert missing.stderr == 'Error from server (NotFound): namespaces "team-1" not found\n'
    for name in ("team-1", "team-2"):
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        agent.client().put_object(namespace)
    ok(agent, "create", "configmap", "a", "-n", "team-1")
    ok(agent, "create", "configmap", "b", "-n", "team-2", "--from-literal", "k=v")
    ok(agent, "create", "configmap", "c")
    assert ok(agent, "get", "cm", "-n", "team-1", "-o", "name") == "configmap/a\n"
    lines = ok(agent, "get", "cm", "-A").splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "DATA", "AGE"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["default", "c", "0"],
        ["team-1", "a", "0"],
        ["team-2", "b", "1"],
    ]
    listing = json.loads(ok(agent, "get", "cm", "-A", "-o", "json"))
    assert listing["kind"] == "List" and len(listing["items"]) == 3
    assert ok(agent, "delete", "cm", "b", "-n", "team-2") == 'configmap "b" deleted\n'


def test_configmap_label_selectors(agent: Agent) -> None:
    client = agent.client()
    for name, labels in (
        ("web", {"app": "x", "tier": "web"}),
        ("db", {"app": "x", "tier": "db"}),
        ("plain", {}),
    ):
        client.put_object(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default", "labels": labels},
                "data": {},
            }
        )

    def names(selector: str) -> list[str]:
        out = ok(agent, "get", "cm", "-l", selector, "-o", "name")
        return [line.removeprefix("configmap/") for line in out.splitlines()]

    assert names("app=x") == ["db", "web"]
    assert names("app==x,tier!=db") == ["web"]
    assert names("tier!=db") == ["plain", "web"]  # != also matches objects without the label
    assert names("tier") == ["db", "web"]
    assert names("!tier") == ["plain"]
    bad = run(agent, "get", "cm", "-l", "tier in (db)")
    assert bad.exit_code == 1 and "not supported" in bad.stderr
    both = run(agent, "get", "cm", "web", "-l", "app=x")
    assert both.exit_code == 2 and "selector" in both.stderr


def test_create_configmap_rejects_bad_input_before_calling_the_agent(tmp_path: Path) -> None:
    # No agent exists in tmp_path: a usage error must come first.
    for args, needle in (
        (["Bad_Name"], "NAME"),
        (["ok", "--from-literal", "novalue"], "--from-literal"),
        (["ok", "--from-literal", "k=1", "--from-literal", "k=2"], "already exists"),
        (["ok", "-n", "Not_A_Namespace"], "--namespace"),
    ):
        result = run(tmp_path, "create", "configmap", *args)
        assert result.exit_code == 2, args
        assert needle in result.stderr, (args, result.stderr)


def test_nodes_cannot_be_deleted(agent: Agent) -> None:
    result = run(agent, "delete", "node", "n2")
    assert result.exit_code == 1 and "cannot be deleted" in result.stderr


# --- status ----------------------------------------------------------------------------------


def test_status_text_and_json(agent: Agent) -> None:
    text = ok(agent, "status")
    lines = text.splitlines()
    assert lines[:3] == ["node:          n1", "nodeID:        " + "ab" * 32, "uptimeSeconds: 12.5"]
    assert "counters:" in lines and "  updatesSent:     10" in lines
    assert "neighbours (2):" in lines
    header = lines[lines.index("neighbours (2):") + 1]
    assert header.split() == ["NAME", "RTTMS", "STATE"]
    assert json.loads(ok(agent, "status", "-o", "json")) == agent.backend.status()
    assert yaml.safe_load(ok(agent, "status", "-o", "yaml")) == agent.backend.status()


# --- join and signal (the agent and the signaling server are replaced by recorders) ----------

JOIN_TOKEN = "s3cret-s3cret-s3cret-0123456789"


@pytest.fixture
def fake_agent_module(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Install a stand-in ``p2pkube.agent`` that records the options run_agent receives."""
    calls: list[Any] = []

    @dataclass
    class JoinOptions:
        signaling_url: str
        token: str
        name: str
        data_dir: Path
        labels: dict[str, str]
        max_peers: int
        ice_addresses: list[str]
        cpu: str | None
        memory: str | None
        api_port: int
        kube_api_port: int
        overrides: list[str]
        allowed_host_paths: list[str]
        log_level: str
        node_ip: str = "0.0.0.0"
        metrics_address: str | None = None
        log_format: str = "text"

    def run_agent(options: JoinOptions) -> int:
        calls.append(options)
        return 3

    module = types.ModuleType("p2pkube.agent")
    module.JoinOptions = JoinOptions  # type: ignore[attr-defined]
    module.run_agent = run_agent  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "p2pkube.agent", module)
    return calls


def test_join_builds_options_and_exits_with_the_agents_code(
    fake_agent_module: list[Any], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"# the join token\n\n  {JOIN_TOKEN}  \nignored\n")
    result = CliRunner().invoke(
        cli,
        ["join", "ws://127.0.0.1:8787", "--token-file", str(token_file), "--name", "n1",
         "--data-dir", str(tmp_path / "d1"), "--label", "zone=a", "--label", "example.com/tier=",
         "--ice-address", "127.0.0.1", "--cpu", "500m", "--memory", "4Gi", "--max-peers", "4",
         "--api-port", "9000", "--kube-api-port", "6443", "--set", "transport.max_peers=5",
         "--log-level", "DEBUG", "--log-format", "json",
         "--allow-host-path", "/srv/models", "--allow-host-path", "/var/out:rw",
         "--node-ip", "127.0.0.7", "--metrics-address", "[::1]:9464"],
    )  # fmt: skip
    assert result.exit_code == 3, result.stderr
    (options,) = fake_agent_module
    assert options.signaling_url == "ws://127.0.0.1:8787"
    assert options.token == JOIN_TOKEN
    assert options.name == "n1"
    assert options.data_dir == tmp_path / "d1"
    assert options.labels == {"zone": "a", "example.com/tier": ""}
    assert options.ice_addresses == ["127.0.0.1"]
    assert (options.cpu, options.memory, options.max_peers) == ("500m", "4Gi", 4)
    assert (options.api_port, options.kube_api_port, options.log_level) == (9000, 6443, "debug")
    assert options.overrides == ["transport.max_peers=5"]
    assert options.allowed_host_paths == ["/srv/models", "/var/out:rw"]
    assert options.node_ip == "127.0.0.7"
    assert options.metrics_address == "[::1]:9464"
    assert options.log_format == "json"


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--name", "Node_1"], "--name"),
        (["--name", "n" * 64], "--name"),
        (["--name", "n1", "--label", "zone"], "--label"),
        (["--name", "n1", "--label", "-bad=x"], "--label"),
        (["--name", "n1", "--label", "zone=a b"], "--label"),
        (["--name", "n1", "--cpu", "two"], "--cpu"),
        (["--name", "n1", "--ice-address", "localhost:1"], "--ice-address"),
        (["--name", "n1", "--token-file", "/nonexistent/token"], "--token-file"),
        (["--name", "n1", "--set", "no-equals-sign"], "--set"),
        (["--name", "n1", "--set", "nosuchsection.x=1"], "--set"),
        (["--name", "n1", "--allow-host-path", "srv/models"], "--allow-host-path"),
        (["--name", "n1", "--set", "kubelet.allowed_host_paths=/srv,data"], "--set"),
        (["--name", "n1", "--node-ip", "my-host"], "--node-ip"),
    ],
)
def test_join_rejects_bad_options_before_starting(
    fake_agent_module: list[Any], args: list[str], option: str
) -> None:
    result = CliRunner().invoke(
        cli, ["join", "ws://127.0.0.1:8787", *args], env={"P2PKUBE_TOKEN": JOIN_TOKEN}
    )
    assert result.exit_code == 2, result.stderr
    assert option in result.stderr
    assert "Traceback" not in result.stderr
    assert fake_agent_module == []


def test_join_needs_exactly_one_token_and_a_signaling_url(fake_agent_module: list[Any]) -> None:
    result = CliRunner().invoke(
        cli, ["join", "ws://h:1", "--name", "n1"], env={"P2PKUBE_TOKEN": ""}
    )
    assert result.exit_code == 2 and "--token-file" in result.stderr
    assert "$P2PKUBE_TOKEN" in result.stderr
    result = CliRunner().invoke(cli, ["join", "not a url", "--name", "n1", "--token", "t"])
    assert result.exit_code == 2 and "URL" in result.stderr
    assert fake_agent_module == []


def test_signal_prints_a_generated_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real load_tokens, a recording run_server (no socket is opened): the server is given
    verifiers, never tokens."""
    import signaling.server
    from p2pkube.net.jointoken import Verifier

    calls: list[tuple[Any, ...]] = []

    def run_server(
        host: str, port: int, tokens: list[str], settings: Any = None, **kw: Any
    ) -> None:
        calls.append((host, port, tokens, settings))
        kw["on_ready"](
            types.SimpleNamespace(
                url=f"ws://{host}:{port}/ws",
                http_url=f"http://{host}:{port}/",
                host=host,
                port=port,
            )
        )

    monkeypatch.setattr(signaling.server, "run_server", run_server)
    result = CliRunner().invoke(cli, ["signal", "--port", "9999"], env={"P2PKUBE_TOKEN": ""})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("join token: ")
    token = lines[0].removeprefix("join token: ")
    assert len(token) >= 22
    assert lines[2] == "signaling server: ws://127.0.0.1:9999/ws"
    assert calls == [("127.0.0.1", 9999, [Verifier.from_token(token)], None)]

    calls.clear()
    given = "a-given-token-of-decent-length"
    result = CliRunner().invoke(cli, ["signal", "--token", given])
    assert result.exit_code == 0, result.stderr
    assert "join token" not in result.stdout
    assert calls[0][2] == [Verifier.from_token(given)]
    assert "warning: --token on the command line" in result.stderr  # ps shows argv


# --- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "age"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (45, "45s"),
        (119, "119s"),
        (192, "3m12s"),
        (300, "5m"),
        (900, "15m"),
        (5 * 3600, "5h"),
        (5 * 3600 + 600, "5h10m"),
        (20 * 3600, "20h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (40 * 86400, "40d"),
        (3 * 365 * 86400 + 30 * 86400, "3y30d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, age: str) -> None:
    assert human_duration(seconds) == age


def test_format_age() -> None:
    now = datetime(2026, 11, 27, 7, 3, 12, tzinfo=UTC)
    assert format_age("2026-11-27T07:00:00Z", now) == "3m12s"
    assert format_age("2026-11-27T07:00:00+00:00", now) == "3m12s"
    assert format_age(None, now) == format_age("garbage", now) == "<unknown>"


def test_match_labels() -> None:
    labels = {"app": "x", "tier": "web"}
    assert match_labels("", labels)
    assert match_labels("app=x,tier!=db", labels)
    assert match_labels("app==x", labels)
    assert not match_labels("app=y", labels)
    assert match_labels("app", labels) and not match_labels("!app", labels)
    assert match_labels("!gpu", None) and match_labels("gpu!=yes", None)
    assert match_labels(parse_selector("app=x"), labels)
    for bad in ("app in (x)", "a=b,,c", "=x", "-a=b", "a=b c"):
        with pytest.raises(ValueError, match="invalid label selector"):
            parse_selector(bad)


def test_table_and_status_rendering() -> None:
    assert table(["NAME", "N"], [["a", 10], ["bbbb", None]]) == "NAME   N\na      10\nbbbb"
    node_id = "0123456789abcdef" * 4
    text = render_status(
        {
            "node": "n1",
            "up": True,
            "flags": ["a", "b"],
            "empty": [],
            "mesh": {"pending": 0, "neighbours": [{"node": node_id, "bytesSent": 5}]},
        }
    )
    assert text.splitlines() == [
        "node:  n1",
        "up:    true",
        "flags: a, b",
        "empty: <none>",
        "mesh:",
        "  pending: 0",
        "",
        "mesh.neighbours (1):",
        "NODE           BYTESSENT",
        "0123456789ab   5",
    ]
