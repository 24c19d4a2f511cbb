"""The join token and everything derived from it: the cluster's identity, shared by the
signaling server, the agent and the browser node.

The token *is* the cluster. Both ends of the signaling protocol and both ends of a link
derive what they need from it here, with the standard library only (``hmac``, ``hashlib``),
so the browser node (Pyodide, without ``cryptography``) computes the very same values:

* the token itself: :func:`generate_token`, :func:`token_problem`, :func:`check_token`;
* the public room id :func:`cluster_id`, and the node id of a public key
  (:func:`node_id_from_public_key`);
* the keys derived with :func:`hkdf_sha256`: :func:`signaling_key` (what the signaling server
  keeps, as a :class:`Verifier`) and :func:`link_key` (the link handshake's, never sent);
* the join proof: :func:`join_transcript`, :func:`join_mac`;
* how binary fields travel in JSON: :func:`b64encode`, :func:`b64decode`.

The messages that carry them are :mod:`p2pkube.net.signaling_wire`'s; ``docs/protocol.md``
(section Signaling) describes both field by field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Final

__all__ = [
    "CLUSTER_ID_RE",
    "JOIN_DOMAIN",
    "KEY_BYTES",
    "MAX_TOKEN_LENGTH",
    "MIN_TOKEN_LENGTH",
    "NODE_ID_BYTES",
    "TOKEN_HOWTO",
    "VERIFIER_PREFIX",
    "Verifier",
    "b64decode",
    "b64encode",
    "check_token",
    "cluster_id",
    "generate_token",
    "hkdf_sha256",
    "join_mac",
    "join_transcript",
    "link_key",
    "node_id_from_public_key",
    "secrets_key",
    "signaling_key",
    "token_problem",
]

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

#: Bytes of each key derived from a token (and of a join's mac).
KEY_BYTES: Final = 32

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
_SECRETS_INFO: Final = b"p2pkube secrets v1"

#: First element of every join transcript (:func:`join_transcript`).
JOIN_DOMAIN: Final = "p2pkube-signaling-join-v1"

#: First field of a verifier line (:class:`Verifier`).
VERIFIER_PREFIX: Final = "p2pkube-verifier-v1"

CLUSTER_ID_RE: Final = re.compile(r"[0-9a-f]{16}")
"""A cluster id (:func:`cluster_id`): 16 lowercase hex characters."""
_B64_RE: Final = re.compile(r"[A-Za-z0-9_-]*")


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


def secrets_key(token: str) -> bytes:
    """The key Secret values are sealed with in the replicated state (and so on disk).

    ``HKDF-SHA256(token, salt="p2pkube-token-v1", info="p2pkube secrets v1")``. Every
    member holds the token and so this key; a data dir copied without the token holds only
    ciphertext (docs/guarantees.md says what this does and does not protect).
    """
    return _derive(token, _SECRETS_INFO)


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
        if prefix != VERIFIER_PREFIX or not CLUSTER_ID_RE.fullmatch(cluster):
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
