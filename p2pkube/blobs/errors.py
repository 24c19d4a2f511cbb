"""Exceptions of the blob layer; the local API turns each into a Kubernetes Status."""

from __future__ import annotations


class BlobError(Exception):
    """Base of every blob failure."""


class BlobNotFound(BlobError):
    """No Blob object (manifest) for this digest in the cluster state."""


class AmbiguousBlob(BlobError):
    """A digest prefix that matches several blobs."""


class InvalidBlob(BlobError):
    """An upload that is not a WebAssembly module, or a manifest that does not add up."""


class BlobTooLarge(BlobError):
    """An upload over ``blobs.max_upload_bytes``."""


class NoHolderError(BlobError):
    """No Ready node holds the blob (or every holder failed during this fetch)."""


class BlobFetchError(BlobError):
    """A fetch that could not complete (a chunk failed too often, no progress, bad digest)."""


class BlobCorrupt(BlobFetchError):
    """Every chunk matched its digest but the whole file does not match the blob's digest."""
