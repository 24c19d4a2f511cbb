"""The join token is never given away, and nobody takes another node's place (issue 10, part 2
and the signaling part of part 3), shown against a real ``p2pkube signal`` and real agents:

* what a real ``p2pkube join`` sends to the signaling server holds neither the token nor
  anything derived from it but macs, and what the server does hold (its verifier) fails the
  link handshake of a real agent;
* ``signal`` and ``join`` refuse short tokens and say how to make one;
* guessing the token from one address gets a few tries a second, each logged with the
  address, while an agent elsewhere joins;
* a member cannot take another node's peer id, and a node replaced by a holder of its own key
  comes back by itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp import web

from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.net.identity import NodeIdentity
from p2pkube.net.jointoken import b64decode, generate_token, link_key, signaling_key, token_problem
from p2pkube.net.link import LinkState
from signaling.settings import SignalingSettings
from tests.clusters import all_ready
from tests.rawsignal import challenge, expect_fatal, open_socket, recv, send, signed_join
from tests.test_hostile_peer import join_as_member


class RecordingProxy:
    """A WebSocket proxy in front of the real signaling server: it passes every frame both
    ways and keeps each text frame the clients sent, i.e. everything the server received."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.sent: list[str] = []
        self._runner: web.AppRunner | None = None
        self._clients: set[web.WebSocketResponse] = set()

    async def start(self) -> int:
        """Listen on a free loopback port; return it."""
        app = web.Application()
        app.router.add_get("/ws", self._proxy)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Close every proxied socket (going away), then stop listening."""
        for client in list(self._clients):
            await client.close(code=aiohttp.WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _proxy(self, request: web.Request) -> web.WebSocketResponse:
        client = web.WebSocketResponse(autoping=True)
        await client.prepare(request)
        self._clients.add(client)
        async with aiohttp.ClientSession() as http, http.ws_connect(self.upstream) as server:

            async def downstream() -> None:
                async for msg in server:
                    await client.send_str(msg.data)
                await client.close()

            task = asyncio.create_task(downstream())
            try:
                async for msg in client:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        self.sent.append(msg.data)
                        await server.send_str(msg.data)
            finally:
                task.cancel()
                self._clients.discard(client)
        return client


def encodings(secret: bytes) -> list[str]:
    """The ways ``secret`` could appear in a JSON text frame."""
    b64 = base64.b64encode(secret).decode()
    url = base64.urlsafe_b64encode(secret).decode()
    return [secret.hex(), b64, b64.rstrip("="), url, url.rstrip("="), secret.decode("latin-1")]


def node_id(cluster: LocalCluster, name: str) -> str:
    return str(cluster.api(name, "GET", "/v1/status")["nodeID"])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_the_signaling_server_never_receives_the_token_nor_what_passes_the_link_proof(
    cluster: LocalCluster,
) -> None:
    """The server runs from the cluster's verifier alone; two real agents join it through a
    recording proxy and link up. Nothing they sent carries the token, the link key or the
    signaling key, and a peer holding what the server holds fails a real agent's handshake."""
    token = cluster.token
    await asyncio.to_thread(cluster.start_signaling, verifier_only=True)
    server = psutil.Process(cluster.signaling.pid)  # type: ignore[union-attr]
    assert token not in " ".join(server.cmdline()) and token not in server.environ().values()
    proxy = RecordingProxy(f"{cluster.url}/ws")
    cluster.signaling_port = await proxy.start()  # from here on, everyone joins through it
    try:
        for name in ("n1", "n2"):
            cluster.start_agent(name)
        for name in ("n1", "n2"):
            await asyncio.to_thread(cluster.wait_api, name)
        for name in ("n1", "n2"):
            await asyncio.to_thread(
                wait_until, lambda n=name: all_ready(cluster, n, ["n1", "n2"]), 30, what="Ready"
            )
        messages = [json.loads(text) for text in proxy.sent]
        joins = [m for m in messages if m["type"] == "join"]
        assert len(joins) >= 2 and all("token" not in m for m in joins), joins
        assert any(m["type"] == "signal" for m in messages)  # the offers went through it too
        forbidden = [token, *encodings(token.encode())]
        for secret in (link_key(token), signaling_key(token)):
            forbidden += encodings(secret)
        for text in proxy.sent:
            assert not [f for f in forbidden if f in text], text
        # What the server knows (the signaling key) as the link key: a real agent refuses it.
        n1 = await asyncio.to_thread(node_id, cluster, "n1")
        member = await join_as_member(cluster, n1, link_secret=signaling_key(token))
        try:
            assert member.link.state is LinkState.CLOSED
            await asyncio.to_thread(
                wait_until,
                lambda: "failed the cluster membership proof" in cluster.log_tail("n1", 100),
                10,
                what="n1 to refuse the handshake",
            )
        finally:
            await member.close()
        assert cluster.agents["n1"].running
        assert await asyncio.to_thread(all_ready, cluster, "n2", ["n1", "n2"])
    finally:
        await proxy.stop()


def p2pkube(*args: str, token: str | None = None, tmp: Path) -> subprocess.CompletedProcess[str]:
    """``p2pkube ARGS`` as a user runs it, with ``token`` in ``$P2PKUBE_TOKEN`` if given."""
    env = {k: v for k, v in os.environ.items() if k != "P2PKUBE_TOKEN"}
    if token is not None:
        env["P2PKUBE_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "p2pkube", "--data-dir", str(tmp / "data"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_signal_and_join_refuse_short_tokens_and_say_how_to_make_one(tmp_path: Path) -> None:
    short = "s3cret-but-short"  # 16 characters: 96 bits at most
    (tmp_path / "short.token").write_text(f"{short}\n")
    file = str(tmp_path / "short.token")
    join = ("join", "ws://127.0.0.1:9", "--name", "n1")
    signal = ("signal", "--port", "0")
    runs = {
        "join --token": p2pkube(*join, "--token", short, tmp=tmp_path),
        "join $P2PKUBE_TOKEN": p2pkube(*join, token=short, tmp=tmp_path),
        "join --token-file": p2pkube(*join, "--token-file", file, tmp=tmp_path),
        "signal --token-file": p2pkube(*signal, "--token-file", file, tmp=tmp_path),
        "signal $P2PKUBE_TOKEN": p2pkube(*signal, token=short, tmp=tmp_path),
    }
    for how, result in runs.items():
        assert result.returncode != 0, how
        assert "at least 22 characters" in result.stderr, (how, result.stderr)
        assert "p2pkube token" in result.stderr and "token_urlsafe" in result.stderr, how
        assert "Traceback" not in result.stderr and "listening" not in result.stderr, how
    assert not (tmp_path / "data").exists()  # no agent ever started
    # --token on the command line warns (ps shows it); the environment and a file do not.
    assert "warning: --token on the command line" in runs["join --token"].stderr
    assert "warning" not in runs["join $P2PKUBE_TOKEN"].stderr
    assert "warning" not in runs["signal --token-file"].stderr
    made = p2pkube("token", tmp=tmp_path).stdout.strip()
    assert len(made) >= 32 and token_problem(made) is None and re.fullmatch(r"[\w-]+", made)
    verifier = p2pkube("token", "--verifier", token=made, tmp=tmp_path).stdout.strip()
    assert verifier.startswith("p2pkube-verifier-v1:") and made not in verifier


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real ``p2pkube signal`` and two agents, n1 and n2, linked and Ready."""
    cluster = LocalCluster(tmp_path_factory.mktemp("trust") / "cluster")
    try:
        cluster.start_signaling()
        for name in ("n1", "n2"):
            cluster.start_agent(name)
        for name in ("n1", "n2"):
            cluster.wait_api(name)
            wait_until(lambda n=name: all_ready(cluster, n, ["n1", "n2"]), 30, what="Ready")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def logs_on_failure(pair: LocalCluster, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    failed_before = request.session.testsfailed
    yield pair
    if request.session.testsfailed > failed_before:
        for name in ["signaling", *pair.agents]:
            print(f"--- {name} log ---\n{pair.log_tail(name, 60)}")


async def test_a_member_cannot_take_a_nodes_peer_id_and_a_replaced_node_comes_back(
    logs_on_failure: LocalCluster, http: aiohttp.ClientSession
) -> None:
    """A member (it holds the token) joins the real server under n1's peer id: with its own
    key, and with n1's public key but its own signature. Both are refused and n1 stays. Then
    someone with n1's real key (a copy of its data dir) does get n1 replaced: n1 reconnects by
    itself and replaces it back."""
    cluster = logs_on_failure
    url, token = f"{cluster.url}/ws", cluster.token
    victim = NodeIdentity.load_or_create(cluster.root / "n1")  # read from n1's data dir
    n2 = await asyncio.to_thread(node_id, cluster, "n2")
    assert victim.node_id == await asyncio.to_thread(node_id, cluster, "n1")
    mallory = NodeIdentity.generate()

    async def attempt(join: Any) -> aiohttp.ClientWebSocketResponse:
        ws = await open_socket(http, url)
        await send(ws, join(await challenge(ws)))
        return ws

    own_key = await attempt(
        lambda nonce: signed_join(nonce, mallory, token, "n1", peer=victim.node_id)
    )
    assert "not the id of the public key" in await expect_fatal(own_key, "bad-identity", 4008)
    no_key = await attempt(lambda nonce: signed_join(nonce, victim, token, "n1", signer=mallory))
    assert "signature" in await expect_fatal(no_key, "bad-identity", 4008)
    watcher = await attempt(lambda nonce: signed_join(nonce, NodeIdentity.generate(), token, "w"))
    welcome = await recv(watcher)
    assert {p["peer"] for p in welcome["peers"]} == {victim.node_id, n2}  # n1 never left
    await watcher.close()
    assert "replaced" not in cluster.log_tail("n1", 200)

    usurper = await attempt(lambda nonce: signed_join(nonce, victim, token, "usurper"))
    assert (await recv(usurper))["type"] == "welcome"
    # n1 is replaced, backs off, reconnects, and the usurper is replaced in turn.
    await expect_fatal(usurper, "replaced", 4006, within=15)
    await asyncio.to_thread(
        wait_until,
        lambda: "reconnected" in cluster.log_tail("n1", 200),
        10,
        what="n1 to log its reconnection",
    )
    assert "another connection joined with our node key" in cluster.log_tail("n1", 200)
    watcher = await attempt(lambda nonce: signed_join(nonce, NodeIdentity.generate(), token, "w"))
    welcome = await recv(watcher)
    assert {"peer": victim.node_id, "name": "n1", "kind": "native"} in welcome["peers"]
    await watcher.close()
    assert await asyncio.to_thread(all_ready, cluster, "n2", ["n1", "n2"])


@pytest.mark.serial  # counts tries per second
async def test_guessing_the_token_gets_a_few_tries_a_second_each_logged_and_agents_still_join(
    logs_on_failure: LocalCluster,
) -> None:
    """20 parallel connections from 127.0.0.2 guess the token of the real server for 4 s,
    while agent n3 starts and joins from 127.0.0.1. The server checks at most its burst plus
    its rate per second of the guesses (the defaults: 5 + 2/s), refuses the rest unchecked,
    and logs each failure with the address; n3 joins without ever being throttled."""
    cluster = logs_on_failure
    settings = SignalingSettings()  # what `p2pkube signal` runs with
    counts = {"bad-token": 0, "rate-limited": 0}
    guesses: list[str] = []
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=0)
    began = time.monotonic()
    stop = began + 4.0

    async def guesser(http: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop:
            ws = await open_socket(http, f"{cluster.url}/ws")
            first = await recv(ws, within=10)
            if first["type"] == "challenge":
                nonce = b64decode(first["nonce"])
                assert nonce is not None
                guesses.append(generate_token())
                await send(ws, signed_join(nonce, NodeIdentity.generate(), guesses[-1], "g"))
                first = await recv(ws, within=10)
            counts[first["code"]] += 1
            await ws.close()

    async with aiohttp.ClientSession(connector=connector) as http:
        attack = [asyncio.create_task(guesser(http)) for _ in range(20)]
        cluster.start_agent("n3")
        await asyncio.gather(*attack)
    elapsed = time.monotonic() - began
    allowed = settings.join_failure_burst + settings.join_failures_per_second * elapsed
    assert 0 < counts["bad-token"] <= allowed, (counts, elapsed)
    assert counts["rate-limited"] > counts["bad-token"], counts
    await asyncio.to_thread(cluster.wait_api, "n3")
    everyone = ["n1", "n2", "n3"]
    await asyncio.to_thread(
        wait_until, lambda: all_ready(cluster, "n1", everyone), 30, what="n3 Ready"
    )
    assert "throttles joins" not in cluster.log_tail("n3", 200)
    log = (cluster.root / "signaling.log").read_text()
    failures = re.findall(r"failed join from 127\.0\.0\.2: bad-token", log)
    assert len(failures) == counts["bad-token"], log[-3000:]
    assert re.search(r"refused \d+ join\(s\) from 127\.0\.0\.2 unchecked", log), log[-3000:]
    assert cluster.token not in log and not any(guess in log for guess in guesses)
