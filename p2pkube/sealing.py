"""The native agent's :class:`~p2pkube.model.secrets.Sealer`: AES-256-GCM from ``cryptography``.

AES-GCM because it is the AEAD every platform has (``cryptography`` natively, @noble/ciphers
in a tab, which opens what this seals) and needs a 96-bit nonce only, drawn at random per
seal: a cluster seals few values, far below GCM's 2^32 random-nonce bound per key.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pkube.model.secrets import NONCE_BYTES, SEALED_FORMAT, SealError, sealed_parts


class AesGcmSealer:
    """Seals with one 32-byte key (:func:`p2pkube.net.jointoken.secrets_key`)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return SEALED_FORMAT + nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        nonce, body = sealed_parts(sealed)
        try:
            return self._aead.decrypt(nonce, body, context)
        except InvalidTag:
            raise SealError("sealed with another key (another cluster's token?)") from None
