"""A raw signaling client for tests: one WebSocket, spoken to message by message.

What an honest client sends (the server's challenge answered with the signaling key's mac and
the node key's signature) and what an attacker can send instead (a peer id that is not its
key's, a key it cannot sign for, a guessed token), so tests can hold the server to the
protocol from outside, against an in-process server or a real ``p2pkube signal``.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from p2pkube.net.identity import NodeIdentity
from p2pkube.net.jointoken import b64decode, cluster_id, join_mac, join_transcript, signaling_key
from p2pkube.net.signaling_wire import Join, join_message

__all__ = ["challenge", "expect_fatal", "open_socket", "recv", "send", "signed_join"]


async def open_socket(
    http: aiohttp.ClientSession, url: str, **kwargs: Any
) -> aiohttp.ClientWebSocketResponse:
    """A WebSocket to the signaling server at ``url`` (its ``/ws`` endpoint)."""
    ws: aiohttp.ClientWebSocketResponse = await http.ws_connect(
        url, timeout=aiohttp.ClientWSTimeout(ws_close=1.0), **kwargs
    )
    return ws


async def recv(ws: aiohttp.ClientWebSocketResponse, within: float = 3.0) -> dict[str, Any]:
    """The next message, which must be a JSON text frame."""
    msg = await ws.receive(timeout=within)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def send(ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any]) -> None:
    await ws.send_str(json.dumps(message))


async def challenge(ws: aiohttp.ClientWebSocketResponse) -> bytes:
    """Read the server's first message, the challenge; return its nonce."""
    first = await recv(ws)
    assert first["type"] == "challenge", first
    nonce = b64decode(first["nonce"])
    assert nonce is not None and len(nonce) == 32
    return nonce


def signed_join(
    nonce: bytes,
    identity: NodeIdentity,
    token: str,
    name: str,
    *,
    kind: str = "native",
    signer: NodeIdentity | None = None,
    peer: str | None = None,
) -> dict[str, Any]:
    """The ``join`` answering ``nonce`` as ``identity`` with ``token``: what a client sends.

    ``signer`` and ``peer`` forge it: another key signs, or another peer id is claimed."""
    cluster = cluster_id(token)
    peer = peer or identity.node_id
    transcript = join_transcript(nonce, cluster, peer, name, kind, identity.public_key)
    return join_message(
        Join(
            cluster=cluster,
            peer=peer,
            name=name,
            kind=kind,
            pub=identity.public_key,
            mac=join_mac(signaling_key(token), transcript),
            sig=(signer or identity).private_key.sign(transcript),
        )
    )


async def expect_fatal(
    ws: aiohttp.ClientWebSocketResponse, code: str, close_code: int, within: float = 3.0
) -> str:
    """Expect error ``code`` then a close with ``close_code``; return the message."""
    error = await recv(ws, within)
    assert error["type"] == "error" and error["code"] == code, error
    assert "Traceback" not in error["message"]
    msg = await ws.receive(timeout=3.0)
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    assert msg.data == close_code
    message: str = error["message"]
    return message
