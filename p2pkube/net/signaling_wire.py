"""The signaling protocol's messages, shared by the signaling server and every node.

The signaling server only introduces peers: it relays WebRTC offers, answers
and ICE candidates between two named peers of one cluster and nothing else.
Every message both ends must agree on is defined here, once, free of any I/O
framework (standard library only, so it runs in the browser node's Pyodide
too): the server (:mod:`signaling.server`), the node's client
(:mod:`p2pkube.net.signaling_client`) and the tests all use this definition.
What the messages prove (the join token, the keys derived from it, the join
transcript) is :mod:`p2pkube.net.jointoken`'s.

* message validation: :func:`parse_client_message` (server side) and
  :func:`parse_server_message` (client side), which raise
  :class:`ProtocolError` with a message that names the offending field;
* message construction: the ``*_message`` helpers and :func:`encode`.

See ``docs/protocol.md`` (section Signaling) for the field-by-field description.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from enum import StrEnum
from typing import Any, Final, TypeAlias

from p2pkube.net.jointoken import (
    CLUSTER_ID_RE,
    KEY_BYTES,
    b64decode,
    b64encode,
    join_transcript,
)

__all__ = [
    "FATAL_CLOSE_CODES",
    "NONCE_BYTES",
    "PEER_KINDS",
    "SIGNAL_KINDS",
    "WS_PATH",
    "Challenge",
    "ErrorCode",
    "ErrorMessage",
    "FlatValue",
    "Join",
    "PeerJoined",
    "PeerLeft",
    "PeerRecord",
    "ProtocolError",
    "ServerMessage",
    "Signal",
    "SignalFrom",
    "Welcome",
    "challenge_message",
    "encode",
    "error_message",
    "join_message",
    "parse_client_message",
    "parse_server_message",
    "peer_joined_message",
    "peer_left_message",
    "signal_from_message",
    "signal_message",
    "validate_name",
    "validate_peer_id",
    "validate_peer_kind",
    "validate_signal_data",
    "welcome_message",
]

#: HTTP path of the WebSocket endpoint.
WS_PATH: Final = "/ws"

#: Values of ``join.kind``: a Python agent or a browser tab.
PEER_KINDS: Final = ("native", "browser")

#: Values of ``signal.data.kind``: the only things the server will relay.
SIGNAL_KINDS: Final = ("offer", "answer", "candidate", "bye")

#: Bytes of the server's challenge nonce, and of the public key and signature of a join.
NONCE_BYTES: Final = 32
_PUBLIC_KEY_BYTES: Final = 32
_SIGNATURE_BYTES: Final = 64

_PEER_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NAME_MAX: Final = 63

#: A value allowed inside ``signal.data``: flat JSON scalars only.
FlatValue: TypeAlias = str | int | float | bool | None


class ErrorCode(StrEnum):
    """Values of ``error.code``.

    Fatal codes are followed by a WebSocket close with the code in
    :data:`FATAL_CLOSE_CODES`; ``unknown-peer`` and a ``rate-limited`` warning
    are not fatal.  ``bad-token`` means the join's mac was wrong (the joiner
    does not hold the cluster's token), ``bad-identity`` that its peer id is
    not its key's or its signature is wrong.
    """

    BAD_TOKEN = "bad-token"
    BAD_IDENTITY = "bad-identity"
    ROOM_FULL = "room-full"
    MALFORMED = "malformed"
    TOO_LARGE = "too-large"
    RATE_LIMITED = "rate-limited"
    REPLACED = "replaced"
    JOIN_TIMEOUT = "join-timeout"
    UNKNOWN_PEER = "unknown-peer"


#: WebSocket close code sent after each fatal error (private-use range 4000+).
FATAL_CLOSE_CODES: Final[dict[ErrorCode, int]] = {
    ErrorCode.BAD_TOKEN: 4001,
    ErrorCode.ROOM_FULL: 4002,
    ErrorCode.MALFORMED: 4003,
    ErrorCode.TOO_LARGE: 4004,
    ErrorCode.RATE_LIMITED: 4005,
    ErrorCode.REPLACED: 4006,
    ErrorCode.JOIN_TIMEOUT: 4007,
    ErrorCode.BAD_IDENTITY: 4008,
}


class ProtocolError(Exception):
    """A message broke the protocol; ``code`` and ``message`` go to the peer.

    The message is written for humans on the other end (it names the field and
    the rule), and never contains a stack trace or the token.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _malformed(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.MALFORMED, message)


# --------------------------------------------------------------------------
# Field validation
# --------------------------------------------------------------------------


def validate_peer_id(value: object, *, field: str = "peer") -> str:
    """Return ``value`` if it is a valid peer id (1-64 of ``[A-Za-z0-9_-]``)."""
    if not isinstance(value, str) or not _PEER_ID_RE.fullmatch(value):
        raise _malformed(f"field '{field}' must be 1-64 characters of [A-Za-z0-9_-]")
    return value


def validate_name(value: object, *, field: str = "name") -> str:
    """Return ``value`` if it is a DNS label (the node name shown by the CLI).

    Uppercase is rejected rather than folded: names end up in DNS-like places
    and silently changing them would surprise the operator.
    """
    if not isinstance(value, str) or len(value) > _NAME_MAX or not _NAME_RE.fullmatch(value):
        raise _malformed(
            f"field '{field}' must be a DNS label: 1-63 characters of [a-z0-9-], "
            "lowercase, starting and ending with a letter or digit"
        )
    return value


def validate_peer_kind(value: object, *, field: str = "kind") -> str:
    """Return ``value`` if it is ``"native"`` or ``"browser"``."""
    if value not in PEER_KINDS:
        raise _malformed(f"field '{field}' must be 'native' or 'browser'")
    assert isinstance(value, str)
    return value


def validate_signal_data(value: object, *, field: str = "data") -> dict[str, FlatValue]:
    """Return ``value`` if it is a relayable signal payload.

    It must be an object with ``kind`` in :data:`SIGNAL_KINDS` and only flat
    scalar values: the server relays session descriptions and candidates,
    never arbitrary documents, so nesting is refused outright.
    """
    if not isinstance(value, dict):
        raise _malformed(f"field '{field}' must be an object")
    kind = value.get("kind")
    if kind not in SIGNAL_KINDS:
        raise _malformed(f"field '{field}.kind' must be one of {', '.join(SIGNAL_KINDS)}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise _malformed(f"field '{field}' must have string keys")
        if item is not None and not isinstance(item, str | int | float | bool):
            raise _malformed(
                f"field '{field}.{key}' must be a string, number, boolean or null "
                "(no nested objects or arrays)"
            )
        if isinstance(item, float) and not math.isfinite(item):
            raise _malformed(f"field '{field}.{key}' must be a finite number")
    return value


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A peer as the server describes it: id, node name and kind."""

    peer: str
    name: str
    kind: str

    def to_json(self) -> dict[str, str]:
        """Return the ``{"peer","name","kind"}`` object used on the wire."""
        return {"peer": self.peer, "name": self.name, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class Join:
    """C→S ``join``: the answer to the server's challenge, the first message on every socket.

    ``pub`` is the node's raw Ed25519 public key (``peer`` must be its id),
    ``mac`` the :func:`join_mac` and ``sig`` the node key's signature, both of
    :meth:`transcript`.
    """

    cluster: str
    peer: str
    name: str
    kind: str
    pub: bytes
    mac: bytes = dc_field(repr=False)
    sig: bytes = dc_field(repr=False)

    def transcript(self, nonce: bytes) -> bytes:
        """The :func:`join_transcript` this join must prove, for the challenge ``nonce``."""
        return join_transcript(nonce, self.cluster, self.peer, self.name, self.kind, self.pub)


@dataclass(frozen=True, slots=True)
class Signal:
    """C→S ``signal``: relay ``data`` to peer ``to`` of the same room."""

    to: str
    data: dict[str, FlatValue]


@dataclass(frozen=True, slots=True)
class Challenge:
    """S→C ``challenge``: the first message of the server, a fresh nonce for the join proof."""

    nonce: bytes


@dataclass(frozen=True, slots=True)
class Welcome:
    """S→C ``welcome``: admitted to ``cluster``; ``peers`` were already there."""

    cluster: str
    peer: str
    peers: tuple[PeerRecord, ...]


@dataclass(frozen=True, slots=True)
class PeerJoined:
    """S→C ``peer-joined``: someone entered the room."""

    peer: PeerRecord


@dataclass(frozen=True, slots=True)
class PeerLeft:
    """S→C ``peer-left``: a peer's socket went away."""

    peer: str


@dataclass(frozen=True, slots=True)
class SignalFrom:
    """S→C ``signal``: ``data`` relayed from peer ``sender`` (wire field ``from``)."""

    sender: str
    data: dict[str, FlatValue]


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """S→C ``error``.  ``to`` is set on ``unknown-peer`` errors only."""

    code: str
    message: str
    to: str | None = None

    @property
    def fatal(self) -> bool:
        """True if the server closes the socket after this error.

        ``rate-limited`` is ambiguous on its own (warning or final); the close
        code tells, so callers should treat it as fatal only when it is
        followed by close code 4005.
        """
        return self.code in FATAL_CLOSE_CODES and self.code != ErrorCode.RATE_LIMITED


ServerMessage: TypeAlias = Challenge | Welcome | PeerJoined | PeerLeft | SignalFrom | ErrorMessage


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_object(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise _malformed(f"message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _malformed("message must be a JSON object")
    return obj


def _field(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise _malformed(f"missing field '{name}'")
    return obj[name]


def parse_client_message(text: str) -> Join | Signal:
    """Parse and validate one client→server message.

    Raises :class:`ProtocolError` (code ``malformed``) naming the first
    problem found.  Unknown extra fields are ignored, so clients may add
    fields in later versions without breaking older servers.
    """
    obj = _load_object(text)
    kind = _field(obj, "type")
    if kind == "join":
        return _parse_join(obj)
    if kind == "signal":
        return Signal(
            to=validate_peer_id(_field(obj, "to"), field="to"),
            data=validate_signal_data(_field(obj, "data")),
        )
    if not isinstance(kind, str):
        raise _malformed("field 'type' must be a string")
    raise _malformed(f"unknown message type {kind[:40]!r} (expected 'join' or 'signal')")


def _parse_join(obj: dict[str, Any]) -> Join:
    if "token" in obj and "mac" not in obj:
        # An old client sent its token in the clear; say why it is refused (without it).
        raise _malformed(
            "this server admits by challenge-response and never takes a token; "
            "upgrade the client (its 'join' must carry cluster, pub, mac and sig)"
        )
    cluster = _field(obj, "cluster")
    if not isinstance(cluster, str) or not CLUSTER_ID_RE.fullmatch(cluster):
        raise _malformed("field 'cluster' must be 16 lowercase hex characters")
    return Join(
        cluster=cluster,
        peer=validate_peer_id(_field(obj, "peer")),
        name=validate_name(_field(obj, "name")),
        kind=validate_peer_kind(_field(obj, "kind")),
        pub=_binary(obj, "pub", _PUBLIC_KEY_BYTES),
        mac=_binary(obj, "mac", KEY_BYTES),
        sig=_binary(obj, "sig", _SIGNATURE_BYTES),
    )


def _binary(obj: dict[str, Any], name: str, size: int) -> bytes:
    """Field ``name``: ``size`` bytes in unpadded base64url."""
    value = b64decode(_field(obj, name))
    if value is None or len(value) != size:
        raise _malformed(f"field '{name}' must be {size} bytes in unpadded base64url")
    return value


def _peer_record(value: object, field: str) -> PeerRecord:
    if not isinstance(value, dict):
        raise _malformed(f"field '{field}' must be an object")
    return PeerRecord(
        peer=validate_peer_id(_field(value, "peer"), field=f"{field}.peer"),
        name=validate_name(_field(value, "name"), field=f"{field}.name"),
        kind=validate_peer_kind(_field(value, "kind"), field=f"{field}.kind"),
    )


def parse_server_message(text: str) -> ServerMessage:
    """Parse and validate one server→client message (used by agents).

    A client must not trust the server any more than the server trusts it:
    everything handed to the agent's callbacks has been checked here.
    """
    obj = _load_object(text)
    kind = _field(obj, "type")
    if kind == "challenge":
        return Challenge(nonce=_binary(obj, "nonce", NONCE_BYTES))
    if kind == "welcome":
        peers = _field(obj, "peers")
        if not isinstance(peers, list):
            raise _malformed("field 'peers' must be an array")
        cluster = _field(obj, "cluster")
        if not isinstance(cluster, str):
            raise _malformed("field 'cluster' must be a string")
        return Welcome(
            cluster=cluster,
            peer=validate_peer_id(_field(obj, "peer")),
            peers=tuple(_peer_record(p, f"peers[{i}]") for i, p in enumerate(peers)),
        )
    if kind == "peer-joined":
        return PeerJoined(peer=_peer_record(_field(obj, "peer"), "peer"))
    if kind == "peer-left":
        return PeerLeft(peer=validate_peer_id(_field(obj, "peer")))
    if kind == "signal":
        return SignalFrom(
            sender=validate_peer_id(_field(obj, "from"), field="from"),
            data=validate_signal_data(_field(obj, "data")),
        )
    if kind == "error":
        code = _field(obj, "code")
        message = _field(obj, "message")
        to = obj.get("to")
        if not isinstance(code, str) or not isinstance(message, str):
            raise _malformed("fields 'code' and 'message' must be strings")
        if to is not None and not isinstance(to, str):
            raise _malformed("field 'to' must be a string")
        return ErrorMessage(code=code, message=message, to=to)
    raise _malformed(f"unknown message type {str(kind)[:40]!r}")


def encode(message: dict[str, Any]) -> str:
    """Serialise a message compactly; NaN/Infinity are refused (not JSON)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def join_message(join: Join) -> dict[str, Any]:
    """Build a C→S ``join`` message."""
    return {
        "type": "join",
        "cluster": join.cluster,
        "peer": join.peer,
        "name": join.name,
        "kind": join.kind,
        "pub": b64encode(join.pub),
        "mac": b64encode(join.mac),
        "sig": b64encode(join.sig),
    }


def challenge_message(nonce: bytes) -> dict[str, Any]:
    """Build the S→C ``challenge`` message (the server's first)."""
    return {"type": "challenge", "nonce": b64encode(nonce)}


def signal_message(to: str, data: dict[str, FlatValue]) -> dict[str, Any]:
    """Build a C→S ``signal`` message."""
    return {"type": "signal", "to": to, "data": data}


def welcome_message(cluster: str, peer: str, peers: list[PeerRecord]) -> dict[str, Any]:
    """Build a S→C ``welcome`` message."""
    return {
        "type": "welcome",
        "cluster": cluster,
        "peer": peer,
        "peers": [p.to_json() for p in peers],
    }


def peer_joined_message(peer: PeerRecord) -> dict[str, Any]:
    """Build a S→C ``peer-joined`` message."""
    return {"type": "peer-joined", "peer": peer.to_json()}


def peer_left_message(peer: str) -> dict[str, Any]:
    """Build a S→C ``peer-left`` message."""
    return {"type": "peer-left", "peer": peer}


def signal_from_message(sender: str, data: dict[str, FlatValue]) -> dict[str, Any]:
    """Build a S→C relayed ``signal`` message."""
    return {"type": "signal", "from": sender, "data": data}


def error_message(code: ErrorCode, message: str, *, to: str | None = None) -> dict[str, Any]:
    """Build a S→C ``error`` message."""
    out: dict[str, Any] = {"type": "error", "code": str(code), "message": message}
    if to is not None:
        out["to"] = to
    return out
