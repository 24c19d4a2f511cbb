"""The two quotas that keep blobs from filling a node: a size cap and a free-space reserve.

Any member can write a Blob manifest declaring any size, and a pull writes what its manifest
declares (each chunk checked against the manifest, so a member holding a file of zeros can
serve a "valid" 64 GiB blob). So each node decides for itself what it accepts:

* ``blobs.max_blob_bytes``: no blob larger than this is published here or pulled here; a pull
  is refused from the manifest alone, before any file is created or any chunk asked for.
  Permanent (``BlobTooLarge.retryable`` is False): the module will not shrink.
* ``blobs.min_free_bytes``: a pull that would leave less than this free on the filesystem of
  the blob store is refused (``InsufficientStorage``); checked before the pull starts and
  again every ``blobs.disk_check_interval`` while chunks land. Space may free up, so this one
  is retried (the kubelet backs off).

Shared with the browser node (pure Python): there the blob store is the tab's memory
(Emscripten's file system, copied to IndexedDB), whose ``statvfs`` reports fixed, made-up
numbers (Pyodide 314: 4.096 GB total, 2.048 GB free, whatever is stored), so :func:`disk_free`
says "unknown" and only the size cap applies. ``navigator.storage.estimate()`` is not used: it
reports the origin's IndexedDB quota, while the blobs' bytes live in the tab's memory.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from p2pkube.blobs.errors import BlobTooLarge, InsufficientStorage
from p2pkube.blobs.settings import BlobSettings

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def size_text(size: int) -> str:
    """Bytes for a person: ``812 B``, ``25.3 KiB``, ``256 MiB``, ``16 GiB``."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}".replace(".0 ", " ")
    raise AssertionError("unreachable")


def check_size(what: str, size: int, settings: BlobSettings, *, at_least: bool = False) -> None:
    """BlobTooLarge naming the limit when ``what`` (``size`` bytes, or more with ``at_least``:
    an upload still streaming) is over the cap."""
    if size > settings.max_blob_bytes:
        raise BlobTooLarge(
            f"{what} is {'at least ' if at_least else ''}{size_text(size)}, over this node's "
            f"blobs.max_blob_bytes ({size_text(settings.max_blob_bytes)})"
        )


def disk_free(path: Path) -> int | None:
    """Bytes this process may still write on ``path``'s filesystem (``statvfs``' f_bavail);
    None where that is unknown: in a browser tab the "disk" is memory and Emscripten's
    ``statvfs`` answers fixed, made-up numbers. Blocking: call it in a worker thread."""
    if sys.platform == "emscripten":
        return None
    return shutil.disk_usage(path).free


def check_space(
    what: str, needed: int, free: int, promised: int, where: Path, settings: BlobSettings
) -> None:
    """InsufficientStorage naming the limit when writing ``needed`` more bytes, on top of the
    ``promised`` bytes that pulls already running will still write, would leave less than
    ``blobs.min_free_bytes`` of the ``free`` bytes on ``where``'s filesystem."""
    left = free - needed - promised
    if left >= settings.min_free_bytes:
        return
    others = f", plus {size_text(promised)} that running pulls still write" if promised else ""
    raise InsufficientStorage(
        f"pulling {what} needs {size_text(needed)} more{others}; {where} has "
        f"{size_text(free)} free, which would leave less than this node's "
        f"blobs.min_free_bytes ({size_text(settings.min_free_bytes)})"
    )
