"""The threads native instances run on, kept for the next instance when theirs has ended.

Each instance still has a thread of its own while it runs (a pod may run for months, so
instances never queue for a pool's few threads). What this saves is the thread's start:
``threading.Thread.start()`` waits until the new thread has run, and while other instances
hold the GIL that wait blocked the event loop about 1.3 ms per start (measured under load with
HTTP handler pods, one instance per request: the loop spent a sixth of its time there). Handing
a job to an idle thread is a queue put, which never waits.

At most ``max_idle`` threads wait for work, each for at most ``idle_timeout`` seconds; the
rest end. Native only (a tab runs instances in Web Workers).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Job = Callable[[threading.Thread], None]
"""Work for a thread; it is given the thread that runs it (tests read its native id)."""
IDLE_NAME = "wasm worker (idle)"


class WorkerThreads:
    """Runs each job at once on an idle thread, or on a new one when none is idle.

    Invariant, under ``_lock``: ``_idle`` is the number of threads waiting for a job minus the
    jobs queued for them, so a queued job always has a waiting thread to take it.
    """

    def __init__(self, *, max_idle: int, idle_timeout: float) -> None:
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Job, str] | None] = queue.SimpleQueue()
        self._idle = 0
        self._closed = False
        self.started = 0
        """Threads started so far (the rest of the jobs ran on kept threads)."""

    def submit(self, job: Job, name: str) -> None:
        """Run ``job`` on its own thread, named ``name`` while it runs; returns at once when
        a thread is idle."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker threads are closed")
            if self._idle > 0:
                self._idle -= 1
                self._jobs.put((job, name))
                return
            self.started += 1
        thread = threading.Thread(target=self._work, args=((job, name),), name=name, daemon=True)
        thread.start()

    def _work(self, first: tuple[Job, str]) -> None:
        current = threading.current_thread()
        item: tuple[Job, str] | None = first
        while item is not None:
            job, current.name = item
            try:
                job(current)
            except Exception:  # a job reports its own failures; this is a bug of ours
                log.exception("a job on %s failed", current.name)
            current.name = IDLE_NAME
            item = self._next()

    def _next(self) -> tuple[Job, str] | None:
        """The next job for this thread, or None when it should end."""
        with self._lock:
            if self._closed or self._idle >= self.max_idle:
                return None
            self._idle += 1
        while True:
            try:
                return self._jobs.get(timeout=self.idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody counted on this thread: it may end
                        self._idle -= 1
                        return None
                # A job was queued for this thread as it timed out: wait for it.

    def idle(self) -> int:
        """Threads waiting for a job now."""
        with self._lock:
            return self._idle

    def close(self) -> None:
        """Let every idle thread end (running jobs finish on their own)."""
        with self._lock:
            self._closed = True
            waiting, self._idle = self._idle, 0
        for _ in range(waiting):
            self._jobs.put(None)
