"""Exceptions of the blob layer; the local API turns each into a Kubernetes Status."""

from __future__ import annotations


class BlobError(Exception):
    """Base of every blob failure."""

    retryable = True
    """Whether the same pull may succeed later; the kubelet retries a failed pull (with
    back-off) only when it may (see ``ImageSource`` in ``p2pkube.runtime.kubelet``)."""


class BlobNotFound(BlobError):
    """No Blob object (manifest) for this digest in the cluster state."""


class AmbiguousBlob(BlobError):
    """A digest prefix that matches several blobs."""


class InvalidBlob(BlobError):
    """An upload that is not a WebAssembly module, or a manifest that does not add up."""


class BlobTooLarge(BlobError):
    """A blob over this node's ``blobs.max_blob_bytes``: an upload, or a pull whose manifest
    declares more. Not retryable: a module does not shrink (the operator raises the limit and
    restarts the agent, whose kubelet then pulls again)."""

    retryable = False


class InsufficientStorage(BlobError):
    """A pull that would leave less than ``blobs.min_free_bytes`` free on the blob store's
    filesystem. Retryable: space may free up (pods end, blobs are collected)."""


class NoHolderError(BlobError):
    """No Ready node holds the blob (or every holder failed during this fetch)."""


class BlobFetchError(BlobError):
    """A fetch that could not complete (a chunk failed too often, no progress, bad digest)."""


class BlobCorrupt(BlobFetchError):
    """Every chunk matched its digest but the whole file does not match the blob's digest."""
