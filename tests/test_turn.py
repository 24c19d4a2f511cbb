"""TURN: two peers that cannot reach each other directly link through a real coturn server.

The network test runs four hosts (harness/netlab.py): the signaling server, a TURN server
(Debian's coturn, started with the compose file's own `turn` command plus the lab's address),
and two agents p1 and p2 with every packet between them dropped (silently, both ways), while
both reach the TURN and the signaling host. The agents get the TURN URL and credentials the
way docker/docker-compose.yml gives them (the entrypoint's environment). The unit tests check
how `transport.ice_servers` and the TURN credentials are read and refused.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.netlab import REPO, NetLab, lab_or_skip, tool
from p2pkube.devcluster import wait_until
from p2pkube.net import ice
from p2pkube.net.settings import TransportSettings
from p2pkube.settings import AgentSettings

COMPOSE = REPO / "docker" / "docker-compose.yml"
TURN_USER, TURN_PASSWORD = "p2pkube", "lab-turn-password-1234"
TURN_PORT = 3478


def test_ice_servers_take_turn_credentials_and_refuse_what_aiortc_cannot_use(
    tmp_path: Path,
) -> None:
    settings = AgentSettings()
    settings.override("transport.ice_servers=stun:10.0.0.1:3478,turn:10.0.0.2:3478?transport=tcp")
    settings.override("transport.ice_username=alice")
    secret = tmp_path / "turn.password"
    secret.write_text("s3cret\n# not read\n")
    settings.override(f"transport.ice_credential_file={secret}")
    stun, turn = ice.ice_servers(settings.transport)
    assert (stun.urls, stun.username, stun.credential) == ("stun:10.0.0.1:3478", None, None)
    assert (turn.urls, turn.username, turn.credential) == (
        "turn:10.0.0.2:3478?transport=tcp",
        "alice",
        "s3cret",
    )
    plain = TransportSettings(ice_servers=["turn:h:1"], ice_username="a", ice_credential="b")
    assert ice.ice_servers(plain)[0].credential == "b"
    for bad, expected in [
        (TransportSettings(ice_servers=["turn:h:1"]), "needs transport.ice_username"),
        (TransportSettings(ice_servers=["http://h:1"]), "is not a STUN/TURN URL"),
        (TransportSettings(ice_servers=["turns:h:1?transport=udp"]), "turns: over tcp only"),
        (
            TransportSettings(
                ice_servers=["turn:h:1"], ice_username="a", ice_credential_file=str(tmp_path / "x")
            ),
            "cannot read",
        ),
    ]:
        with pytest.raises(ValueError, match=expected):
            ice.ice_servers(bad)


def test_join_with_a_turn_url_but_no_credentials_fails_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "p2pkube", "join", "ws://127.0.0.1:9", "--token", "t" * 24,
            "--name", "lonely", "--data-dir", str(tmp_path / "d"),
            "--set", "transport.ice_servers=turn:127.0.0.1:3478",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "transport.ice_servers: 'turn:127.0.0.1:3478' needs transport.ice_username" in (
        result.stderr
    )


def stun_answers(ip: str, port: int = TURN_PORT) -> bool:
    """A STUN binding request (RFC 8489) gets a success response: the server is up."""
    transaction = os.urandom(12)
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.sendto(request, (ip, port))
        try:
            answer = sock.recv(2048)
        except TimeoutError:
            return False
    return answer[:2] == b"\x01\x01" and answer[8:20] == transaction


def turn_command(lab: NetLab, host_ip: str, run_dir: Path) -> str:
    """The compose file's `turn` command (its `$$` unescaped, as compose does), bound to the
    lab's TURN host, with its pid file and user database in this test's directory."""
    service = yaml.safe_load(COMPOSE.read_text())["services"]["turn"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    command = service["command"][0].replace("$$", "$")
    return (
        f"{command} --listening-ip={host_ip} --relay-ip={host_ip} "
        f"--pidfile={run_dir / 'turn.pid'} --userdb={run_dir / 'turndb'}"
    )


def test_peers_that_cannot_reach_each_other_link_through_turn(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with lab_or_skip(tmp_path / "lab", request) as lab, lab.reporting():
        lab.add_host("sig")
        turn = lab.add_host("turn")
        p1, p2 = lab.add_host("p1"), lab.add_host("p2")
        lab.start_signaling("sig")
        tool("turnserver")  # coturn is installed (.ci/run installs it), or say which package
        lab.spawn(
            turn,
            ["/bin/sh", "-c", turn_command(lab, turn.ip, turn.data_dir)],
            {"TURN_USER": TURN_USER, "TURN_PASSWORD": TURN_PASSWORD},
        )
        wait_until(lambda: lab.call(turn, lambda: stun_answers(turn.ip)), 15, what="coturn up")
        lab.cut("p1", "p2")
        direct = lab.run(p1, tool("ping"), "-c", "1", "-W", "1", p2.ip, check=False)
        assert direct.returncode != 0, "p1 still reaches p2 directly"
        for target in (turn, lab.hosts["sig"]):
            reach = lab.run(p1, tool("ping"), "-c", "1", "-W", "1", target.ip, check=False)
            assert reach.returncode == 0, f"p1 cannot reach {target.name}: {reach.stdout}"
        began = time.monotonic()
        turn_env = {
            "P2PKUBE_ICE_SERVERS": f"turn:{turn.ip}:{TURN_PORT}?transport=udp",
            "P2PKUBE_ICE_USERNAME": TURN_USER,
            "P2PKUBE_ICE_CREDENTIAL": TURN_PASSWORD,
        }
        for peer in (p1, p2):
            env = {**lab.agent_env(peer), **turn_env}
            peer.role = "peer"
            lab.spawn(peer, lab.entrypoint("peer"), env)
        for peer in (p1, p2):
            lab.wait_api(peer)
        lab.wait_ready(["p1", "p2"], timeout=60)
        joined = time.monotonic() - began
        status = lab.api(p1, "GET", "/v1/status")
        links = status["mesh"]["neighbours"]
        assert [x["name"] for x in links] == ["p2"]
        pair = links[0]["candidatePair"]
        assert "relay" in (pair["local"], pair["remote"]), f"not relayed: {pair}"
        relayed = pair["localAddress"] if pair["local"] == "relay" else pair["remoteAddress"]
        assert relayed.startswith(f"{turn.ip}:"), f"relayed through {relayed}, not {turn.ip}"
        # The password went to the agent in a file, not on its command line.
        cmdline = Path(f"/proc/{p1.process.pid}/cmdline").read_bytes()  # type: ignore[union-attr]
        assert TURN_PASSWORD.encode() not in cmdline
        assert b"transport.ice_credential_file=" in cmdline
        # State crosses the relay both ways.
        lab.cli("p1", "create", "configmap", "over-turn", "--from-literal", "via=relay")
        lab.cli("p2", "create", "configmap", "back", "--from-literal", "via=relay")
        for viewer, name in (("p2", "over-turn"), ("p1", "back")):
            wait_until(
                lambda v=viewer, n=name: n in lab.cli(v, "get", "configmaps", "-o", "name").stdout,
                15,
                what=f"{name} on {viewer}",
            )
        assert lab.dropped()["p1"]["cut"] > 0, "nothing was dropped between p1 and p2"
        print(f"TURN: p1 and p2 linked through {relayed} ({pair}), Ready {joined:.1f}s after start")
