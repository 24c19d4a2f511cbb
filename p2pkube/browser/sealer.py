"""A tab's :class:`~p2pkube.model.secrets.Sealer`: opens Secrets with @noble/ciphers' AES-GCM.

Pyodide's Python has no AES (``cryptography`` is not in the bundle), and WebCrypto's is
asynchronous while the kubelet reads a Secret synchronously, so the bridge carries
@noble/ciphers (audited, pure JS, synchronous; the same author's Ed25519 fallback is bundled
already) and this calls it. A tab takes no object writes, so it never seals.
"""

from __future__ import annotations

import p2pjs  # type: ignore[import-not-found]  # bridge.js, registered by the page

from p2pkube.model.secrets import SealError, sealed_parts


class BridgeSealer:
    """Opens values sealed under the cluster's secrets key (``jointoken.secrets_key``)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        raise SealError("a browser node takes no writes, so it seals nothing")

    def open(self, sealed: bytes, context: bytes) -> bytes:
        nonce, body = sealed_parts(sealed)
        opened = p2pjs.aesGcmOpen(self._key, nonce, body, context)
        if opened is None:
            raise SealError("sealed with another key (another cluster's token?)")
        return bytes(opened.to_py())
