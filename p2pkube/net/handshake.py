"""The link handshake: each side proves its node identity and its cluster membership.

Both peers send HELLO (node id, public key, name, kind, a fresh 32-byte nonce, cluster id) as
soon as the data channel opens. When a peer has both HELLOs it sends AUTH:

* ``sig`` — Ed25519 signature, with its node key, of the transcript below;
* ``mac`` — HMAC-SHA256 of the same transcript keyed with the cluster's link key,
  ``HKDF-SHA256(token, info="p2pkube link auth v1")`` (:func:`p2pkube.net.jointoken.link_key`).
  The signaling server holds only the signaling key, derived from the token with another
  ``info``, so it cannot forge this: knowing the token is what makes a peer a member.

The transcript binds both nonces (no replay), both node ids (no reflection) and both DTLS
certificate fingerprints from the SDP (no relaying the handshake into another DTLS session)::

    msgpack(["p2pkube-auth-v1", cluster, signer_id, verifier_id,
             signer_nonce, verifier_nonce, signer_fingerprint, verifier_fingerprint])
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import msgpack

from p2pkube.net.frames import FrameError
from p2pkube.net.jointoken import link_key
from p2pkube.net.keys import NodeKey, SignatureCheck, node_id_from_public_key

NONCE_BYTES = 32
_FINGERPRINT = re.compile(r"^a=fingerprint:(\S+ \S+)\s*$", re.MULTILINE)


def sdp_fingerprint(sdp: str) -> str:
    """The first DTLS fingerprint line of an SDP blob (``"sha-256 AB:CD:..."``)."""
    match = _FINGERPRINT.search(sdp)
    return match.group(1).lower() if match else ""


@dataclass(frozen=True)
class Hello:
    node: str
    pub: bytes
    name: str
    kind: str
    nonce: bytes
    cluster: str

    def to_body(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "pub": self.pub,
            "name": self.name,
            "kind": self.kind,
            "nonce": self.nonce,
            "cluster": self.cluster,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Hello:
        return cls(
            node=body["node"],
            pub=body["pub"],
            name=body["name"],
            kind=body["kind"],
            nonce=body["nonce"],
            cluster=body["cluster"],
        )


def _transcript(signer: Hello, verifier: Hello, signer_fp: str, verifier_fp: str) -> bytes:
    return msgpack.packb(
        [
            "p2pkube-auth-v1",
            signer.cluster,
            signer.node,
            verifier.node,
            signer.nonce,
            verifier.nonce,
            signer_fp,
            verifier_fp,
        ],
        use_bin_type=True,
    )


class Handshake:
    """One side of the handshake on one link. Signing and checking are async (WebCrypto is, in
    the browser), so the link runs them in a task of its own (``linkbase.py``)."""

    def __init__(
        self,
        identity: NodeKey,
        name: str,
        kind: str,
        cluster: str,
        token: str | bytes,
        *,
        check_signature: SignatureCheck,
    ) -> None:
        """``token`` is the join token, or the link key already derived from it
        (:func:`~p2pkube.net.jointoken.link_key`: a node need not keep the token itself)."""
        self._identity = identity
        self._check_signature = check_signature
        self._key = token if isinstance(token, bytes) else link_key(token)
        self.local = Hello(
            node=identity.node_id,
            pub=identity.public_key,
            name=name,
            kind=kind,
            nonce=secrets.token_bytes(NONCE_BYTES),
            cluster=cluster,
        )
        self.remote: Hello | None = None

    def accept_hello(self, body: dict[str, Any], expected_node: str | None) -> Hello:
        """Check the peer's HELLO; raises FrameError when it cannot be the peer we meant."""
        hello = Hello.from_body(body)
        if len(hello.nonce) != NONCE_BYTES:
            raise FrameError("hello nonce must be 32 bytes")
        if node_id_from_public_key(hello.pub) != hello.node:
            raise FrameError("hello node id does not match its public key")
        if expected_node is not None and hello.node != expected_node:
            raise FrameError(f"expected node {expected_node}, got {hello.node}")
        if hello.cluster != self.local.cluster:
            raise FrameError(f"peer belongs to cluster {hello.cluster!r}")
        if hello.node == self.local.node:
            raise FrameError("peer claims our own node id")
        self.remote = hello
        return hello

    async def make_auth(self, local_fp: str, remote_fp: str) -> dict[str, bytes]:
        assert self.remote is not None
        transcript = _transcript(self.local, self.remote, local_fp, remote_fp)
        return {
            "sig": await self._identity.sign(transcript),
            "mac": hmac.new(self._key, transcript, hashlib.sha256).digest(),
        }

    async def verify_auth(self, body: dict[str, bytes], local_fp: str, remote_fp: str) -> Hello:
        """The peer's HELLO, now proven; raises FrameError unless the peer holds its node key
        and the cluster token."""
        if self.remote is None:
            raise FrameError("auth before hello")
        transcript = _transcript(self.remote, self.local, remote_fp, local_fp)
        expected_mac = hmac.new(self._key, transcript, hashlib.sha256).digest()
        if not hmac.compare_digest(expected_mac, body["mac"]):
            raise FrameError("peer failed the cluster membership proof (wrong join token)")
        if not await self._check_signature(self.remote.pub, body["sig"], transcript):
            raise FrameError("peer failed the node identity proof (bad signature)")
        return self.remote
