"""Wire format of the p2pkube signaling protocol, shared by server and agents.

The signaling server only introduces peers: it relays WebRTC offers, answers
and ICE candidates between two named peers of one cluster and nothing else.
Everything that both ends must agree on lives here, free of any I/O framework,
so that the server (:mod:`signaling.server`), the agent's client
(:mod:`p2pkube.net.signaling_client`) and the CLI all use one definition:

* cluster identity: :func:`generate_token`, :func:`token_digest`,
  :func:`cluster_id`, :func:`load_tokens`;
* message validation: :func:`parse_client_message` (server side) and
  :func:`parse_server_message` (client side), which raise
  :class:`ProtocolError` with a message that names the offending field;
* message construction: the ``*_message`` helpers and :func:`encode`.

See ``docs/protocol.md`` (section Signaling) for the field-by-field description.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeAlias

__all__ = [
    "FATAL_CLOSE_CODES",
    "MAX_TOKEN_LENGTH",
    "PEER_KINDS",
    "SIGNAL_KINDS",
    "WS_PATH",
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
    "cluster_id",
    "encode",
    "error_message",
    "generate_token",
    "join_message",
    "load_tokens",
    "parse_client_message",
    "parse_server_message",
    "peer_joined_message",
    "peer_left_message",
    "signal_from_message",
    "signal_message",
    "token_digest",
    "validate_name",
    "validate_peer_id",
    "validate_peer_kind",
    "validate_signal_data",
    "validate_token",
    "welcome_message",
]

#: HTTP path of the WebSocket endpoint.
WS_PATH: Final = "/ws"

#: Values of ``join.kind``: a Python agent or a browser tab.
PEER_KINDS: Final = ("native", "browser")

#: Values of ``signal.data.kind``: the only things the server will relay.
SIGNAL_KINDS: Final = ("offer", "answer", "candidate", "bye")

#: Upper bound on a join token's length; tokens are short random strings and a
#: bound keeps a hostile client from making the server hash megabytes.
MAX_TOKEN_LENGTH: Final = 256

#: Domain separation for :func:`cluster_id`, so a room id can never be mistaken
#: for (or turned into) the token digest the server stores.
_CLUSTER_ID_PREFIX: Final = b"p2pkube-cluster:"

_PEER_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NAME_MAX: Final = 63

#: A value allowed inside ``signal.data``: flat JSON scalars only.
FlatValue: TypeAlias = str | int | float | bool | None


class ErrorCode(StrEnum):
    """Values of ``error.code``.

    Fatal codes are followed by a WebSocket close with the code in
    :data:`FATAL_CLOSE_CODES`; ``unknown-peer`` and a ``rate-limited`` warning
    are not fatal.
    """

    BAD_TOKEN = "bad-token"
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
# Cluster identity
# --------------------------------------------------------------------------


def generate_token() -> str:
    """Return a fresh join token (192 random bits, URL-safe, 32 characters).

    The token *is* the cluster: whoever holds it may join, and the room id is
    derived from it, so it must be unguessable.
    """
    return secrets.token_urlsafe(24)


def token_digest(token: str) -> bytes:
    """Return ``sha256(token)``: all the server keeps of a token.

    Storing only the digest means a memory dump or a log of the server's state
    does not hand out a way into the cluster.
    """
    return hashlib.sha256(token.encode("utf-8")).digest()


def cluster_id(token: str) -> str:
    """Return the public room id of the cluster that ``token`` admits to.

    First 16 hex characters of ``sha256(b"p2pkube-cluster:" + token)``: short
    enough for logs and UIs, and not the digest used to check tokens.
    """
    return hashlib.sha256(_CLUSTER_ID_PREFIX + token.encode("utf-8")).hexdigest()[:16]


def validate_token(token: object, *, field: str = "token") -> str:
    """Return ``token`` if it is 1..256 printable, non-space ASCII characters.

    Tokens travel in JSON, command lines and files with one token per line, so
    whitespace and control characters would only cause confusion.
    """
    if (
        not isinstance(token, str)
        or not 1 <= len(token) <= MAX_TOKEN_LENGTH
        or not all("!" <= ch <= "~" for ch in token)
    ):
        raise _malformed(
            f"field '{field}' must be a string of 1-{MAX_TOKEN_LENGTH} printable "
            "ASCII characters without spaces"
        )
    return token


def load_tokens(
    token: str | None = None, token_file: str | Path | None = None
) -> tuple[list[str], bool]:
    """Collect the join tokens a server should accept; return ``(tokens, generated)``.

    ``token`` is a single token (``--token``); ``token_file`` holds one token
    per line, blank lines and lines starting with ``#`` ignored (``--token-file``).
    Both may be given; their tokens are merged.  With neither, one token is
    generated and ``generated`` is True so the caller prints it: a server that
    silently admits nobody would be useless.

    Raises ``ValueError`` (with a message fit for the command line) on an
    unreadable or empty file or an invalid token; ``OSError`` is turned into
    ``ValueError`` too so callers handle one exception type.
    """
    tokens: list[str] = []
    if token is not None:
        tokens.append(_checked_token(token, "--token"))
    if token_file is not None:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read token file {path}: {exc}") from None
        found = 0
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            tokens.append(_checked_token(stripped, f"{path}:{lineno}"))
            found += 1
        if not found:
            raise ValueError(f"token file {path} holds no tokens")
    if not tokens:
        return [generate_token()], True
    # Keep order (first token first) but drop duplicates.
    return list(dict.fromkeys(tokens)), False


def _checked_token(token: str, where: str) -> str:
    try:
        return validate_token(token)
    except ProtocolError:
        raise ValueError(
            f"{where}: a token must be 1-{MAX_TOKEN_LENGTH} printable ASCII "
            "characters without spaces"
        ) from None


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
    """C→S ``join``: the first message on every socket."""

    token: str
    peer: str
    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class Signal:
    """C→S ``signal``: relay ``data`` to peer ``to`` of the same room."""

    to: str
    data: dict[str, FlatValue]


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


ServerMessage: TypeAlias = Welcome | PeerJoined | PeerLeft | SignalFrom | ErrorMessage


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
        return Join(
            token=validate_token(_field(obj, "token")),
            peer=validate_peer_id(_field(obj, "peer")),
            name=validate_name(_field(obj, "name")),
            kind=validate_peer_kind(_field(obj, "kind")),
        )
    if kind == "signal":
        return Signal(
            to=validate_peer_id(_field(obj, "to"), field="to"),
            data=validate_signal_data(_field(obj, "data")),
        )
    if not isinstance(kind, str):
        raise _malformed("field 'type' must be a string")
    raise _malformed(f"unknown message type {kind[:40]!r} (expected 'join' or 'signal')")


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


def join_message(token: str, peer: str, name: str, kind: str) -> dict[str, Any]:
    """Build a C→S ``join`` message."""
    return {"type": "join", "token": token, "peer": peer, "name": name, "kind": kind}


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
