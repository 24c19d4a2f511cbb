"""Crash-safe file writes shared by every part of the agent that keeps files in the data dir."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or creation inside ``path`` durable (POSIX needs the directory fsynced)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_PARTIAL_SUFFIX = ".tmp"


def is_partial_write(path: Path) -> bool:
    """Whether ``path`` is the temp file of a :func:`write_file_atomically` in progress (or
    left by a crash): a reader listing a directory skips it."""
    return path.name.startswith(".") and path.name.endswith(_PARTIAL_SUFFIX)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` via a 0600 temp file + fsync + rename, so readers never see half a file.

    mkstemp creates the file with mode 0600 whatever the umask, so a secret (a key, a token) is
    never readable by others, not even for an instant. Blocking: call it off the event loop.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_PARTIAL_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


PRIVATE_UMASK = 0o077
"""The native agent's umask: whatever it creates in its data dir (state, logs, blobs,
compiled modules, stdin files, emptyDirs) is its user's alone: files 0600, dirs 0700."""


def make_private(data_dir: Path) -> list[Path]:
    """Create ``data_dir`` 0700, or take group and other bits off it and everything in it
    (files left by an older version or another umask); returns what was tightened.

    Symlinks are neither followed nor changed. Blocking (walks the tree): call it off the
    event loop.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tightened = []
    if _tighten(data_dir):
        tightened.append(data_dir)
    for root, dirs, files in os.walk(data_dir):
        for name in [*dirs, *files]:
            path = Path(root) / name
            if _tighten(path):
                tightened.append(path)
    return tightened


def _tighten(path: Path) -> bool:
    """Clear the group and other bits of ``path`` (not a symlink); True if it had any."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:  # removed meanwhile (a pod's log rotated)
        return False
    if stat.S_ISLNK(mode) or not mode & 0o077:
        return False
    os.chmod(path, stat.S_IMODE(mode) & ~0o077)
    return True
