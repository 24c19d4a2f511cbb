"""ConfigMap volumes: a ConfigMap's keys as files in a directory the pod's containers mount.

The kubelet projects each ``configMap`` volume into ``<pod dir>/volumes/<volume>/`` before
the pod's containers start, and again whenever the ConfigMap changes while the pod runs
(``kubelet.config_map_interval``; Kubernetes' kubelet takes up to about a minute). A
running instance keeps its preopened directory, so a projection changes files in place:
each changed file is written beside its name and renamed over it (a reader sees the old
content or the new, never half of it), and files of keys that are gone are removed. Only
files the projection wrote are ever removed.

Kubernetes' rules, as a user sees them: every key becomes a file named after it, or only
the ``items`` (``key`` to ``path``); a missing ConfigMap, or an ``items`` key it lacks, holds
the pod with the reason unless the volume is ``optional``, in which case the directory is
empty (or lacks that file). Blocking file I/O: call :func:`project` in a thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

from p2pkube.fsutil import write_file_atomically

OBJECTS_PREFIX: Final = "ConfigMap"
MANIFEST_SUFFIX: Final = ".projected"
"""``<volumes>/.<volume>.projected`` lists what the last projection wrote, one relative path
per line; beside the directory, so the containers never see it."""


class NotReady(Exception):
    """The volume cannot be projected yet (its ConfigMap or a key is missing); the message is
    what the pod's event and waiting state say, as Kubernetes words it."""


def config_map_key(namespace: str, name: str) -> str:
    """The ConfigMap's key in the replicated ``objects`` map."""
    return f"{OBJECTS_PREFIX}/{namespace}/{name}"


def files(volume: dict[str, Any], config_map: dict[str, Any] | None) -> dict[str, bytes]:
    """The files ``volume`` (a pod's ``configMap`` volume source) holds, by relative path;
    NotReady when they cannot be made and the volume is not optional."""
    name = volume["name"]
    optional = bool(volume.get("optional", False))
    if config_map is None:
        if optional:
            return {}
        raise NotReady(f'configmap "{name}" not found')
    data = config_map.get("data") or {}
    items = volume.get("items")
    if items is None:
        return {key: str(value).encode() for key, value in data.items()}
    out = {}
    for item in items:
        key = item["key"]
        if key not in data:
            if optional:
                continue
            raise NotReady(f'configmap "{name}": key "{key}" not found')
        out[item["path"]] = str(data[key]).encode()
    return out


def project(target: Path, wanted: dict[str, bytes]) -> bool:
    """Make ``target`` hold exactly ``wanted`` (relative path -> bytes) of what projections
    write; True when anything changed. Blocking."""
    target.mkdir(parents=True, exist_ok=True)
    manifest = target.parent / f".{target.name}{MANIFEST_SUFFIX}"
    before = set(manifest.read_text().splitlines()) if manifest.exists() else set()
    changed = False
    for relative, data in sorted(wanted.items()):
        path = target / relative
        try:
            if path.read_bytes() == data:
                continue
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(path, data)
        changed = True
    for relative in sorted(before - set(wanted)):
        path = target / relative
        if path.is_file():
            path.unlink()
            changed = True
            _remove_empty_parents(path.parent, target)
    if changed or before != set(wanted):
        write_file_atomically(manifest, "".join(f"{p}\n" for p in sorted(wanted)).encode())
    return changed


def _remove_empty_parents(directory: Path, top: Path) -> None:
    while directory != top and directory.is_dir() and not any(directory.iterdir()):
        os.rmdir(directory)
        directory = directory.parent
