"""Wire format of the p2pkube signaling protocol, shared by server and agents.

The signaling server only introduces peers: it relays WebRTC offers, answers
and ICE candidates between two named peers of one cluster and nothing else.
Everything that both ends must agree on lives here, free of any I/O framework
(standard library only, so it runs in the browser node's Pyodide too), so that
the server (:mod:`signaling.server`), the agent's client
(:mod:`p2pkube.net.signaling_client`) and the CLI all use one definition:

* cluster identity: :func:`generate_token`, :func:`token_problem`,
  :func:`cluster_id`, the keys derived from a token (:func:`signaling_key`,
  :func:`link_key`, with :func:`hkdf_sha256`), what a server keeps of a token
  (:class:`Verifier`), :func:`load_tokens`, :func:`load_verifiers`,
  :func:`node_id_from_public_key`;
* the join proof: :func:`join_transcript`, :func:`join_mac`;
* message validation: :func:`parse_client_message` (server side) and
  :func:`parse_server_message` (client side), which raise
  :class:`ProtocolError` with a message that names the offending field;
* message construction: the ``*_message`` helpers and :func:`encode`.

See ``docs/protocol.md`` (section Signaling) for the field-by-field description.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
from dataclasses import dataclass
from dataclasses import field as dc_field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeAlias

__all__ = [
    "FATAL_CLOSE_CODES",
    "KEY_BYTES",
    "MAX_TOKEN_LENGTH",
    "MIN_TOKEN_LENGTH",
    "NONCE_BYTES",
    "PEER_KINDS",
    "SIGNAL_KINDS",
    "TOKEN_HOWTO",
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
    "Verifier",
    "Welcome",
    "b64decode",
    "b64encode",
    "challenge_message",
    "check_token",
    "cluster_id",
    "encode",
    "error_message",
    "generate_token",
    "hkdf_sha256",
    "join_mac",
    "join_message",
    "join_transcript",
    "link_key",
    "load_tokens",
    "load_verifiers",
    "node_id_from_public_key",
    "parse_client_message",
    "parse_server_message",
    "peer_joined_message",
    "peer_left_message",
    "signal_from_message",
    "signal_message",
    "signaling_key",
    "token_problem",
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

#: Fewest characters a join token may have: 22 base64url characters are 128
#: bits, the least that keeps a token (and the keys derived from it, which the
#: signaling server's verifier is one of) out of reach of offline guessing.
MIN_TOKEN_LENGTH: Final = 22

#: How to make a good token, appended to every "weak token" message.
TOKEN_HOWTO: Final = (
    "make one with `p2pkube token` "
    "(or: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
)

#: Bytes of the server's challenge nonce, of derived keys and of a join's mac.
NONCE_BYTES: Final = 32
KEY_BYTES: Final = 32
_PUBLIC_KEY_BYTES: Final = 32
_SIGNATURE_BYTES: Final = 64

#: Bytes of a node id (hex-encoded: twice as many characters).
NODE_ID_BYTES: Final = 16

#: Domain separation for :func:`cluster_id`, so a room id can never be mistaken
#: for (or turned into) one of the keys derived from the token.
_CLUSTER_ID_PREFIX: Final = b"p2pkube-cluster:"
_NODE_ID_PREFIX: Final = b"p2pkube-node:"

#: HKDF salt and the ``info`` of each key derived from a token: one key per
#: purpose, so knowing one (the server knows the signaling key) says nothing
#: about the others.
_HKDF_SALT: Final = b"p2pkube-token-v1"
_SIGNALING_INFO: Final = b"p2pkube signaling join v1"
_LINK_INFO: Final = b"p2pkube link auth v1"

#: First element of every join transcript (:func:`join_transcript`).
JOIN_DOMAIN: Final = "p2pkube-signaling-join-v1"

#: First field of a verifier line (:class:`Verifier`).
VERIFIER_PREFIX: Final = "p2pkube-verifier-v1"

_CLUSTER_ID_RE: Final = re.compile(r"[0-9a-f]{16}")
_B64_RE: Final = re.compile(r"[A-Za-z0-9_-]*")

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
# Cluster identity
# --------------------------------------------------------------------------


def generate_token() -> str:
    """Return a fresh join token (192 random bits, URL-safe, 32 characters).

    The token *is* the cluster: whoever holds it may join, and every key of the
    cluster is derived from it, so it must be unguessable (at least 128 bits;
    see :data:`MIN_TOKEN_LENGTH`).
    """
    return secrets.token_urlsafe(24)


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a join token, or None if it can.

    A token must be :data:`MIN_TOKEN_LENGTH`..:data:`MAX_TOKEN_LENGTH` printable,
    non-space ASCII characters.  The lower bound is what keeps the keys derived
    from it (and the verifier a signaling server holds) from being guessed
    offline: 22 base64url characters carry 128 bits.  The message says how to
    make a good one.
    """
    if not all("!" <= ch <= "~" for ch in token):
        return f"a join token must be printable ASCII characters without spaces; {TOKEN_HOWTO}"
    if len(token) < MIN_TOKEN_LENGTH:
        return (
            f"a join token must be at least {MIN_TOKEN_LENGTH} characters (128 random bits), "
            f"this one has {len(token)}; {TOKEN_HOWTO}"
        )
    if len(token) > MAX_TOKEN_LENGTH:
        return f"a join token must be at most {MAX_TOKEN_LENGTH} characters"
    return None


def check_token(token: str, where: str = "join token") -> str:
    """Return ``token`` if it is a good join token, else raise ``ValueError``
    naming ``where`` it came from and how to make one (:func:`token_problem`)."""
    problem = token_problem(token)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")
    return token


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 (RFC 5869): extract with ``salt``, expand to ``length`` bytes with ``info``.

    Written with :mod:`hmac` alone so that the browser node (Pyodide, without
    ``cryptography``) derives the very same keys.
    """
    if not 0 < length <= 255 * hashlib.sha256().digest_size:
        raise ValueError("HKDF-SHA256 can expand to 1..8160 bytes")
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _derive(token: str, info: bytes) -> bytes:
    return hkdf_sha256(token.encode("utf-8"), salt=_HKDF_SALT, info=info)


def signaling_key(token: str) -> bytes:
    """The key a client proves to the signaling server that it holds the token with.

    ``HKDF-SHA256(token, salt="p2pkube-token-v1", info="p2pkube signaling join v1")``.
    The server keeps this (its verifier, :class:`Verifier`) and nothing else of
    the token; it is independent of :func:`link_key`, so holding it does not
    let the server pass the link handshake.
    """
    return _derive(token, _SIGNALING_INFO)


def link_key(token: str) -> bytes:
    """The key of the link handshake's membership proof (AUTH ``mac``).

    ``HKDF-SHA256(token, salt="p2pkube-token-v1", info="p2pkube link auth v1")``.
    Only nodes holding the token have it; it never travels and the signaling
    server never sees it.
    """
    return _derive(token, _LINK_INFO)


def cluster_id(token: str) -> str:
    """Return the public room id of the cluster that ``token`` admits to.

    First 16 hex characters of ``sha256(b"p2pkube-cluster:" + token)``: short
    enough for logs and UIs, and none of the keys.
    """
    return hashlib.sha256(_CLUSTER_ID_PREFIX + token.encode("utf-8")).hexdigest()[:16]


def node_id_from_public_key(public_key: bytes) -> str:
    """A node's id: hex of the first 16 bytes of ``sha256("p2pkube-node:" + raw public key)``.

    The one definition, shared by the link handshake (:mod:`p2pkube.net.keys`
    re-exports it) and the signaling server, which checks that a ``join``'s
    peer id belongs to the key that signed it.
    """
    return hashlib.sha256(_NODE_ID_PREFIX + public_key).digest()[:NODE_ID_BYTES].hex()


@dataclass(frozen=True, slots=True)
class Verifier:
    """What a signaling server keeps of one cluster: its room id and :func:`signaling_key`.

    Written as one line, ``p2pkube-verifier-v1:<cluster id>:<key, base64url>``
    (``p2pkube token --verifier``), so a server can be run from a verifier
    file and never see the token at all.
    """

    cluster: str
    key: bytes = dc_field(repr=False)

    @classmethod
    def from_token(cls, token: str) -> Verifier:
        """The verifier of ``token``'s cluster (the token itself is not kept)."""
        return cls(cluster_id(token), signaling_key(token))

    @classmethod
    def parse(cls, line: str) -> Verifier:
        """Read a verifier line; ``ValueError`` if it is not one."""
        prefix, _, rest = line.strip().partition(":")
        cluster, _, key = rest.partition(":")
        if prefix != VERIFIER_PREFIX or not _CLUSTER_ID_RE.fullmatch(cluster):
            raise ValueError(f"not a verifier line (expected {VERIFIER_PREFIX}:CLUSTER:KEY)")
        decoded = b64decode(key)
        if decoded is None or len(decoded) != KEY_BYTES:
            raise ValueError(f"the key of a verifier must be {KEY_BYTES} bytes in base64url")
        return cls(cluster, decoded)

    def line(self) -> str:
        """The verifier as one line of a verifier file."""
        return f"{VERIFIER_PREFIX}:{self.cluster}:{b64encode(self.key)}"


def b64encode(data: bytes) -> str:
    """URL-safe base64 without padding: how binary fields travel in JSON."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: object) -> bytes | None:
    """The bytes of unpadded URL-safe base64 ``text``; None if it is not that."""
    if not isinstance(text, str) or not _B64_RE.fullmatch(text) or len(text) % 4 == 1:
        return None
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def validate_token(token: object, *, field: str = "token") -> str:
    """Return ``token`` if it is 1..256 printable, non-space ASCII characters.

    The shape only (the strength check is :func:`token_problem`): tokens live
    in command lines, files and URL fragments, so whitespace and control
    characters would only cause confusion.
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

    ``token`` is a single token (``--token`` or ``$P2PKUBE_TOKEN``); ``token_file``
    holds one token per line, blank lines and lines starting with ``#`` ignored
    (``--token-file``).  Both may be given; their tokens are merged.  With
    neither, one token is generated and ``generated`` is True so the caller
    prints it: a server that silently admits nobody would be useless.

    Raises ``ValueError`` (with a message fit for the command line) on an
    unreadable or empty file or a token that is malformed or too short
    (:func:`check_token`).
    """
    tokens: list[str] = []
    if token is not None:
        tokens.append(check_token(token, "--token"))
    if token_file is not None:
        lines = _read_lines(token_file, "token")
        tokens += [check_token(text, where) for where, text in lines]
    if not tokens:
        return [generate_token()], True
    # Keep order (first token first) but drop duplicates.
    return list(dict.fromkeys(tokens)), False


def load_verifiers(path: str | Path) -> list[Verifier]:
    """The verifiers in a verifier file (``p2pkube signal --verifier-file``).

    One :meth:`Verifier.line` per line, blank lines and ``#`` comments ignored;
    ``ValueError`` naming the file and line otherwise.
    """
    verifiers = []
    for where, text in _read_lines(path, "verifier"):
        try:
            verifiers.append(Verifier.parse(text))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return verifiers


def _read_lines(path: str | Path, what: str) -> list[tuple[str, str]]:
    """The ``(file:line, text)`` of each line of ``path`` that is not blank or a comment."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {what} file {path}: {exc}") from None
    found = [
        (f"{path}:{lineno}", line.strip())
        for lineno, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if not found:
        raise ValueError(f"{what} file {path} holds no {what}s")
    return found


# --------------------------------------------------------------------------
# The join proof
# --------------------------------------------------------------------------


def join_transcript(
    nonce: bytes, cluster: str, peer: str, name: str, kind: str, public_key: bytes
) -> bytes:
    """What a ``join`` proves: the server's challenge and everything the join claims.

    Canonical JSON (no spaces, ASCII) of
    ``["p2pkube-signaling-join-v1", b64(nonce), cluster, peer, name, kind, b64(pub)]``;
    every element is a restricted ASCII string, so the encoding is unambiguous.
    The domain string keeps this from ever being confused with a link
    handshake transcript (msgpack) signed by the same node key.
    """
    items = [JOIN_DOMAIN, b64encode(nonce), cluster, peer, name, kind, b64encode(public_key)]
    return json.dumps(items, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def join_mac(key: bytes, transcript: bytes) -> bytes:
    """``HMAC-SHA256(signaling key, transcript)``: the proof that the joiner holds the token."""
    return hmac.new(key, transcript, hashlib.sha256).digest()


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
    if not isinstance(cluster, str) or not _CLUSTER_ID_RE.fullmatch(cluster):
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
