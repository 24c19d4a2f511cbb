"""The native agent's :class:`~p2pkube.model.secrets.Sealer`: AES-256-GCM from ``cryptography``.

AES-GCM because it is the AEAD every platform has (``cryptography`` natively, WebCrypto in a
browser, should a tab open Secrets one day) and needs a 96-bit nonce only, drawn at random per
seal: a cluster seals few values, far below GCM's 2^32 random-nonce bound per key.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pkube.model.secrets import SealError

FORMAT_VERSION = b"\x01"
"""First byte of every sealed value: the format (AES-256-GCM, 12-byte nonce, 16-byte tag)."""
NONCE_BYTES = 12


class AesGcmSealer:
    """Seals with one 32-byte key (:func:`p2pkube.net.jointoken.secrets_key`)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_VERSION + nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        if not sealed.startswith(FORMAT_VERSION) or len(sealed) < 1 + NONCE_BYTES + 16:
            raise SealError("not a sealed value of this format")
        nonce = sealed[1 : 1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + NONCE_BYTES :], context)
        except InvalidTag:
            raise SealError("sealed with another key (another cluster's token?)") from None
