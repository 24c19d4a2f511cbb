"""Secrets in the replicated state: their values sealed, so neither disk nor wire shows them.

A Secret is stored with its ``data`` replaced by ``sealedData``: the JSON of ``data``
encrypted with an AEAD under a key derived from the join token
(:func:`p2pkube.net.jointoken.secrets_key`), bound to the Secret's document key, so a
sealed value cannot be moved to another Secret. Every member holds the token, so every
member's object service opens it again when a client or a kubelet reads the Secret. A Secret
a node cannot open (no :class:`Sealer`, or one sealed under another key) is shown without
``data`` and its kubelet says it cannot read it.

No platform library here: the sealer is injected (:mod:`p2pkube.sealing` natively,
:mod:`p2pkube.browser.sealer` in a tab).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)

SECRET_KIND = "Secret"
SEALED_FIELD = "sealedData"
"""Where a stored Secret keeps its sealed ``data`` (never shown by a node that can open it)."""


SEALED_FORMAT = b"\x01"
"""First byte of every sealed value: its format, AES-256-GCM with a random 12-byte nonce
(then the nonce, then the ciphertext with its 16-byte tag). Every node's sealer reads it:
``p2pkube.sealing`` natively (``cryptography``), ``p2pkube.browser.sealer`` in a tab
(@noble/ciphers)."""
NONCE_BYTES = 12
TAG_BYTES = 16


def sealed_parts(blob: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext with tag) of a sealed value; SealError if it is not one."""
    if not blob.startswith(SEALED_FORMAT) or len(blob) < 1 + NONCE_BYTES + TAG_BYTES:
        raise SealError("not a sealed value of this format")
    return blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]


class SealError(Exception):
    """A sealed value could not be opened (another cluster's key, or damaged)."""


class Sealer(Protocol):
    """Authenticated encryption under the cluster's secrets key."""

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """``plaintext`` encrypted and authenticated together with ``context``."""
        ...

    def open(self, sealed: bytes, context: bytes) -> bytes:
        """The plaintext; SealError unless sealed by this key with this ``context``."""
        ...


def sealed(key: str, secret: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    """The stored form of a validated Secret under document key ``key``."""
    data = secret.get("data") or {}
    blob = sealer.seal(json.dumps(data, sort_keys=True).encode(), key.encode())
    stored = {k: v for k, v in secret.items() if k != "data"}
    stored[SEALED_FIELD] = base64.b64encode(blob).decode()
    return stored


def opened(key: str, stored: dict[str, Any], sealer: Sealer | None) -> dict[str, Any]:
    """The Secret as clients see it (``data`` again); as stored when it cannot be opened
    here (no sealer, or not sealed by this cluster's key: logged, without any value)."""
    blob = stored.get(SEALED_FIELD)
    if sealer is None or not isinstance(blob, str):
        return stored
    try:
        data = json.loads(sealer.open(base64.b64decode(blob, validate=True), key.encode()))
    except (SealError, binascii.Error, ValueError) as exc:
        log.warning("secret %s cannot be opened with this cluster's key: %s", key, exc)
        return stored
    shown = {k: v for k, v in stored.items() if k != SEALED_FIELD}
    shown["data"] = data if isinstance(data, dict) else {}
    return shown


def readable(secret: dict[str, Any]) -> bool:
    """Whether this node could open the Secret (a sealed one was left as stored)."""
    return SEALED_FIELD not in secret
