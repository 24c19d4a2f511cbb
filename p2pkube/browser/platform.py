"""What a tab lacks that the shared code assumes: threads, and a durable file system.

* Pyodide has no threads, so ``asyncio.to_thread`` (which the shared code uses to keep file
  work off the event loop) runs the function inline: the data directory lives in memory
  (Emscripten's file system), so that work takes microseconds, not a disk's milliseconds.
* The data directory is Emscripten's IDBFS: files live in memory and are copied to IndexedDB
  by ``FS.syncfs``. :class:`DataDirSync` does that every ``sync_interval`` and when the page
  is hidden, so a reload finds the node's state (writes of the last interval may be lost; its
  peers have them and send them back as part of the diff).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import js  # type: ignore[import-not-found]  # Pyodide's JS globals, only in a tab
import pyodide_js  # type: ignore[import-not-found]  # Pyodide's JS API, in a tab only
from pyodide.ffi import create_once_callable, create_proxy  # type: ignore[import-not-found]  # Pyodide only

log = logging.getLogger(__name__)

T = TypeVar("T")


async def _inline(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``asyncio.to_thread`` where there are no threads: run it now."""
    return func(*args, **kwargs)


def install() -> None:
    """Make the shared code's thread offloading run inline (idempotent)."""
    asyncio.to_thread = _inline


SYNC_TIMEOUT = 30.0
"""Seconds one ``FS.syncfs`` may take (IndexedDB is slow on a busy disk, never stuck)."""


async def syncfs(populate: bool) -> None:
    """``FS.syncfs``: IndexedDB → memory (``populate``) or memory → IndexedDB."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finished(error: Any = None) -> None:
        if done.done():
            return
        if error:
            done.set_exception(OSError(f"IndexedDB sync failed: {error}"))
        else:
            done.set_result(None)

    pyodide_js.FS.syncfs(populate, create_once_callable(finished))
    async with asyncio.timeout(SYNC_TIMEOUT):
        await done


async def mount_data_dir(path: str) -> None:
    """Mount IDBFS at ``path`` and load what the last page of this origin left there."""
    fs = pyodide_js.FS
    fs.mkdirTree(path)
    fs.mount(fs.filesystems.IDBFS, js.Object.new(), path)
    await syncfs(populate=True)


class DataDirSync:
    """Copies the data directory to IndexedDB every ``interval`` and when the page hides."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.syncs = 0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._listener = create_proxy(self._on_hide)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        js.document.addEventListener("visibilitychange", self._listener)
        js.window.addEventListener("pagehide", self._listener)

    async def flush(self) -> None:
        """One sync now (skipped when one is already running)."""
        if self._running:
            return
        self._running = True
        try:
            await syncfs(populate=False)
            self.syncs += 1
        except (OSError, TimeoutError) as exc:
            self.failures += 1
            log.warning("data dir not saved: %s", exc)
        finally:
            self._running = False

    def _on_hide(self, *_: Any) -> None:
        if js.document.visibilityState == "hidden":
            asyncio.get_running_loop().create_task(self.flush())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def close(self) -> None:
        js.document.removeEventListener("visibilitychange", self._listener)
        js.window.removeEventListener("pagehide", self._listener)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
