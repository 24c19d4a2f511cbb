"""ConfigMap and Secret volumes: their keys as files in a directory the pod's containers mount.

A secret volume is projected like a configMap volume, into the kubelet's in-memory directory
(``kubelet.secret_volume_dir``) instead of the pod's directory, so Secret values never reach
the data dir.

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
from p2pkube.runtime.configsources import (
    CONFIG_MAP_KIND,
    SECRET_KIND,
    ObjectLookup,
    SourceMissing,
    source_data,
    what,
)

MANIFEST_SUFFIX: Final = ".projected"
"""``<volumes>/.<volume>.projected`` lists what the last projection wrote, one relative path
per line; beside the directory, so the containers never see it."""
VOLUME_KINDS: Final = {"configMap": CONFIG_MAP_KIND, "secret": SECRET_KIND}
"""The volume sources projected from an object, and that object's kind."""


def projected_source(volume: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(kind, source) of a pod volume projected from a ConfigMap or Secret; None otherwise."""
    for field, kind in VOLUME_KINDS.items():
        if field in volume:
            return kind, volume[field]
    return None


def files(
    kind: str, source: dict[str, Any], namespace: str, lookup: ObjectLookup
) -> dict[str, bytes]:
    """The files a ``configMap`` or ``secret`` volume ``source`` holds, by relative path;
    SourceMissing when they cannot be made and the volume is not optional."""
    name = source["secretName"] if kind == SECRET_KIND else source["name"]
    optional = bool(source.get("optional", False))
    data = source_data(lookup, kind, namespace, name, optional=optional)
    if data is None:
        return {}
    items = source.get("items")
    if items is None:
        return dict(data)
    out = {}
    for item in items:
        key = item["key"]
        if key not in data:
            if optional:
                continue
            raise SourceMissing(f'{what(kind, name)}: key "{key}" not found')
        out[item["path"]] = data[key]
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
