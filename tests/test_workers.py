"""The threads native instances run on (runtime/workers.py): kept and reused, bounded, closed."""

from __future__ import annotations

import threading
import time

import pytest

from p2pkube.runtime.workers import IDLE_NAME, WorkerThreads


def run_and_wait(pool: WorkerThreads, name: str) -> threading.Thread:
    """Submit one job and return the thread that ran it (under ``name``)."""
    ran = threading.Event()
    seen: list[tuple[threading.Thread, str]] = []

    def job(thread: threading.Thread) -> None:
        seen.append((thread, threading.current_thread().name))
        ran.set()

    pool.submit(job, name)
    assert ran.wait(5)
    thread, running_name = seen[0]
    assert running_name == name
    return thread


def wait_idle(pool: WorkerThreads, count: int) -> None:
    deadline = time.monotonic() + 5
    while pool.idle() != count:
        assert time.monotonic() < deadline, f"{pool.idle()} idle threads, expected {count}"
        time.sleep(0.005)


def test_a_thread_runs_one_job_after_another() -> None:
    pool = WorkerThreads(max_idle=4, idle_timeout=10)
    threads = []
    for n in range(20):
        threads.append(run_and_wait(pool, f"job {n}"))
        wait_idle(pool, 1)
    assert pool.started == 1
    assert len({t.ident for t in threads}) == 1
    assert threads[0].name == IDLE_NAME
    pool.close()
    threads[0].join(5)
    assert not threads[0].is_alive()


def test_concurrent_jobs_each_get_a_thread_and_at_most_max_idle_stay() -> None:
    pool = WorkerThreads(max_idle=2, idle_timeout=10)
    release = threading.Event()
    running = threading.Semaphore(0)

    def block(_thread: threading.Thread) -> None:
        running.release()
        release.wait(5)

    for n in range(5):
        pool.submit(block, f"blocked {n}")
    for _ in range(5):  # all five run at once: none waits for another's thread
        assert running.acquire(timeout=5)
    release.set()
    wait_idle(pool, 2)
    time.sleep(0.1)
    assert pool.idle() == 2
    pool.close()
    with pytest.raises(RuntimeError):
        pool.submit(block, "after close")


def test_idle_threads_end_after_the_timeout() -> None:
    pool = WorkerThreads(max_idle=4, idle_timeout=0.1)
    thread = run_and_wait(pool, "once")
    thread.join(5)
    assert not thread.is_alive()
    assert pool.idle() == 0
    run_and_wait(pool, "again")  # a new thread is started for the next job
    assert pool.started == 2
    pool.close()
