"""The browser node's identity: an Ed25519 key in WebCrypto, kept in IndexedDB.

The same keys, signatures and node ids as natively (``p2pkube.net.identity``): the id is
derived from the public key, so a reloaded tab that finds its key is the same node.
"""

from __future__ import annotations

from dataclasses import dataclass

import p2pjs  # type: ignore[import-not-found]  # bridge.js, registered by the page
from pyodide.ffi import jsnull  # type: ignore[import-not-found]  # Pyodide, in a tab only

from p2pkube.net.keys import node_id_from_public_key

_STORE = "identity"


@dataclass(frozen=True)
class BrowserIdentity:
    """A :class:`~p2pkube.net.keys.NodeKey` whose private half never leaves WebCrypto calls."""

    public_key: bytes
    pkcs8: bytes

    @property
    def node_id(self) -> str:
        return node_id_from_public_key(self.public_key)

    async def sign(self, message: bytes) -> bytes:
        return bytes((await p2pjs.ed25519Sign(self.pkcs8, message)).to_bytes())

    @classmethod
    async def load_or_create(cls) -> BrowserIdentity:
        """The key this origin's IndexedDB holds, or a new one stored (durably) first."""
        public_key = await p2pjs.kvGet(_STORE, "public")
        pkcs8 = await p2pjs.kvGet(_STORE, "pkcs8")
        if all(value is not None and value is not jsnull for value in (public_key, pkcs8)):
            return cls(bytes(public_key.to_bytes()), bytes(pkcs8.to_bytes()))
        keys = await p2pjs.ed25519Generate()
        identity = cls(bytes(keys.pub.to_bytes()), bytes(keys.pkcs8.to_bytes()))
        await p2pjs.kvPutMany(_STORE, [["public", identity.public_key], ["pkcs8", identity.pkcs8]])
        return identity


async def check_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """A :data:`~p2pkube.net.keys.SignatureCheck` with WebCrypto."""
    return bool(await p2pjs.ed25519Verify(public_key, signature, message))
