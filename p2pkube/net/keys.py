"""Node ids and the key interface each platform implements.

A node's id is derived from its Ed25519 public key, so nobody can claim another node's id
without the private key. The native node keeps its key with ``cryptography``
(:mod:`p2pkube.net.identity`), the browser node with WebCrypto (``p2pkube.browser.identity``);
the handshake sees only :class:`NodeKey` and a :data:`SignatureCheck`, both async because
WebCrypto is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

# One definition of the node id, which the signaling server checks too (and it does not
# import p2pkube): hex of the first 16 bytes of sha256("p2pkube-node:" + raw public key).
from p2pkube.net.jointoken import NODE_ID_BYTES, node_id_from_public_key

__all__ = ["NODE_ID_BYTES", "NodeKey", "SignatureCheck", "node_id_from_public_key"]


class NodeKey(Protocol):
    """A node's Ed25519 key pair, as the link handshake uses it."""

    @property
    def node_id(self) -> str: ...

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        ...

    async def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        ...


SignatureCheck = Callable[[bytes, bytes, bytes], Awaitable[bool]]
"""``(public_key, signature, message)``: True when the signature is valid; False (never an
exception) for a wrong or malformed key or signature."""
