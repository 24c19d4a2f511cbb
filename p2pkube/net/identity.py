"""The native node's identity: an Ed25519 key pair kept in the data dir (``cryptography``).

A node's id is derived from its public key (:mod:`p2pkube.net.keys`), so nobody can claim
another node's id without its private key: the handshake (``handshake.py``) makes each peer
sign a transcript that includes the other side's fresh nonce. The id survives restarts because
the key file does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2pkube.fsutil import write_file_atomically
from p2pkube.net.keys import node_id_from_public_key

KEY_FILE = "identity.key"


async def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``
    (a :data:`~p2pkube.net.keys.SignatureCheck`; ~0.1 ms, so it runs inline)."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class NodeIdentity:
    """A node's key pair and the id derived from it (a :class:`~p2pkube.net.keys.NodeKey`)."""

    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def node_id(self) -> str:
        return node_id_from_public_key(self.public_key)

    async def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    @classmethod
    def generate(cls) -> NodeIdentity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, data_dir: Path) -> NodeIdentity:
        """Load ``identity.key`` from ``data_dir``, creating it (mode 0600) on first start."""
        path = data_dir / KEY_FILE
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} does not hold an Ed25519 private key")
            return cls(key)
        data_dir.mkdir(parents=True, exist_ok=True)
        identity = cls.generate()
        pem = identity.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_file_atomically(path, pem)
        return identity
