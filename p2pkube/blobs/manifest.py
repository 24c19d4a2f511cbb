"""Digests, the Blob object that carries a blob's manifest, and references to blobs.

The manifest is what lets a node verify bytes it received from anyone: the blob's size, its
chunk size and the sha256 of every chunk, under the digest of the whole. It is replicated as
``objects["Blob//sha256:<hex>"]`` (apiVersion ``p2pkube.io/v1``, kind ``Blob``); a manifest
from the state is validated before use, since any member can write the state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

BLOB_KIND = "Blob"
BLOB_API_VERSION = "p2pkube.io/v1"
SOURCE_ANNOTATION = "p2pkube.io/source"
DIGEST_PREFIX = "sha256:"
WASM_MAGIC = b"\0asm"

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def is_digest(value: object) -> TypeGuard[str]:
    """``sha256:`` and 64 lower-case hex digits."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def digest_hex(digest: str) -> str:
    return digest.removeprefix(DIGEST_PREFIX)


def blob_key(digest: str) -> str:
    """The state key of a Blob object (cluster-scoped, named by its digest)."""
    return f"{BLOB_KIND}//{digest}"


@dataclass(frozen=True)
class Manifest:
    """A blob's digest, size and chunking, with the sha256 (hex) of each chunk."""

    digest: str
    size: int
    chunk_size: int
    chunks: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.chunks)

    def offset(self, index: int) -> int:
        return index * self.chunk_size

    def length(self, index: int) -> int:
        """Bytes in chunk ``index`` (the last one may be short)."""
        return min(self.chunk_size, self.size - self.offset(index))

    def to_spec(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "chunkSize": self.chunk_size,
            "chunks": list(self.chunks),
        }

    @classmethod
    def from_spec(cls, spec: Any, max_chunk_size: int) -> Manifest:
        """Parse and check a Blob's spec; ValueError saying what is wrong."""
        if not isinstance(spec, dict):
            raise ValueError("spec must be a map")
        digest, size, chunk_size, chunks = (
            spec.get("digest"),
            spec.get("size"),
            spec.get("chunkSize"),
            spec.get("chunks"),
        )
        if not is_digest(digest):
            raise ValueError("spec.digest must be sha256:<64 hex>")
        for name, value in (("size", size), ("chunkSize", chunk_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"spec.{name} must be a non-negative integer")
        assert isinstance(size, int) and isinstance(chunk_size, int)
        if not 0 < chunk_size <= max_chunk_size:
            raise ValueError(f"spec.chunkSize must be 1..{max_chunk_size}")
        if not isinstance(chunks, list) or not all(
            isinstance(c, str) and _HEX64.fullmatch(c) for c in chunks
        ):
            raise ValueError("spec.chunks must be a list of sha256 hex digests")
        if len(chunks) != -(-size // chunk_size):
            raise ValueError(f"{len(chunks)} chunks do not cover {size} bytes of {chunk_size}")
        return cls(digest, size, chunk_size, tuple(chunks))


def blob_object(manifest: Manifest, source: str, created: str) -> dict[str, Any]:
    """The Blob object written into the state when a node publishes a blob."""
    metadata: dict[str, Any] = {"name": manifest.digest, "creationTimestamp": created}
    if source:
        metadata["annotations"] = {SOURCE_ANNOTATION: source}
    return {
        "apiVersion": BLOB_API_VERSION,
        "kind": BLOB_KIND,
        "metadata": metadata,
        "spec": manifest.to_spec(),
    }


def manifest_of(obj: Any, max_chunk_size: int) -> Manifest | None:
    """The manifest of a Blob object, or None when the object is not a valid Blob."""
    if not isinstance(obj, dict) or obj.get("kind") != BLOB_KIND:
        return None
    try:
        manifest = Manifest.from_spec(obj.get("spec"), max_chunk_size)
    except ValueError:
        return None
    name = (obj.get("metadata") or {}).get("name")
    return manifest if name == manifest.digest else None


def wasm_magic_problem(head: bytes, *, complete: bool) -> str | None:
    """Why bytes starting with ``head`` are not a WebAssembly binary, or None when they may be
    one. ``complete``: ``head`` is the whole start there is (a shorter file is too short)."""
    if head == WASM_MAGIC[: len(head)] and (len(head) >= len(WASM_MAGIC) or not complete):
        return None
    shown = " ".join(f"{b:02x}" for b in head[: len(WASM_MAGIC)]) or "nothing"
    return (
        f"not a WebAssembly module: it starts with {shown}, a WebAssembly binary starts with "
        '00 61 73 6d ("\\0asm")'
    )


def image_digest(value: object) -> str | None:
    """The digest an ``image`` field names: ``sha256:<hex>`` or ``anything@sha256:<hex>``."""
    if not isinstance(value, str):
        return None
    candidate = value.rpartition("@")[2]
    return candidate if is_digest(candidate) else None


def image_references(obj: Any) -> set[str]:
    """Digests named by an ``image`` key anywhere inside ``obj["spec"]``.

    Covers pods (``spec.containers[].image``), workloads
    (``spec.template.spec.containers[].image``) and any kind added later without knowing
    their shape. Iterative, so a deeply nested (hostile) object cannot exhaust the stack.
    """
    found: set[str] = set()
    if not isinstance(obj, dict):
        return found
    stack: list[Any] = [obj.get("spec")]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "image" and (digest := image_digest(value)) is not None:
                    found.add(digest)
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return found


def referenced_digests(objects: Iterable[Any]) -> set[str]:
    """Every digest some object's spec refers to (the GC's notion of "in use")."""
    found: set[str] = set()
    for obj in objects:
        found |= image_references(obj)
    return found
