"""A native instance's stdout and stderr as pipes, read by the agent's event loop.

Why pipes: wasmtime's C API gives a WASI stream to a host callback only through an
asynchronous writer that hands every write to a tokio thread and waits for it; measured here,
an echo handler's instance cost 1.0 ms with its stdout and stderr on callbacks against 0.45 ms
with both on pipes, 16 context switches against one, and an unused stderr callback alone cost
more than the whole instance. A program writing flat out through stdio (1 KiB writes) got
4.2 MB/s through a callback, less on a busy machine, against 96 MB/s through a pipe: with a
callback, how long a flood took to overdraw its budget measured the host, not the sandbox. A
pipe is a plain blocking ``write`` in wasmtime's thread and no Python at all in the
instance's process.

**How**: the agent makes two pipes per instance and hands their write ends to whoever runs
it (a thread of its own, or a request worker process over ``SCM_RIGHTS``,
``runtime/procs.py``); wasmtime opens them by path (``/proc/self/fd/N``: its C API takes stdout
and stderr only as paths) and the runner closes its own copies once the instance has ended,
so the agent reads end of file when the instance is gone. The agent reads both read ends with
``loop.add_reader`` (non-blocking, never a thread):

* **a request instance's stdout** goes to ``Launch.stdout``, in order, and never more than
  ``Launch.stdout_buffer`` bytes ahead of what the receiver has consumed
  (:meth:`InstanceOutput.consumed`): past that the agent stops reading, the pipe fills and the
  instance's next write blocks in the kernel (its backpressure, the same across a process
  boundary as within the agent). A stop closes the read ends, so a writer blocked on a full
  pipe gets ``EPIPE`` and goes on to its stop; a paused reader also stops the instance at its
  deadline (the epoch checks that enforce it run only in wasm code, not in a blocked write).
* **everything else** (a pod instance's stdout and stderr, a request instance's stderr) goes
  to the container's log, against the instance's output budget (``runtime.log_rate_bytes``
  and ``log_burst_bytes``): past it the instance is stopped with ``OutputFlood`` and the rest
  of its output is dropped. A pod's log is read on after any other stop, to its end, so the
  lines it wrote just before a kill stay in ``logs --previous``; the agent always reads it,
  so its writer never blocks where a stop cannot reach it.

The instance counts as ended only once its runner has reported its Termination and both pipes
have reached their end (or were closed by a stop), so the receiver and the log have all the
output before anyone learns the end.

Native only (Linux ``/proc``): the browser never imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from p2pkube.runtime import interface as rt
from p2pkube.runtime.base import BaseInstance
from p2pkube.runtime.budget import OutputBudget

if TYPE_CHECKING:
    from p2pkube.runtime import logs

READ_SIZE: Final = 256 * 1024
"""Most bytes taken from a pipe per read (fewer when the receiver's window has less room)."""


def close_fds(fds: tuple[int, ...]) -> None:
    """Close each of ``fds`` (already closed ones are skipped silently)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def fd_path(fd: int) -> str:
    """The path by which wasmtime opens this process's file descriptor ``fd``."""
    return f"/proc/self/fd/{fd}"


class PipedInstance(BaseInstance):
    """A native instance, whose output comes through the pipes of ``output`` (the agent's
    threads' and the request workers' instances alike)."""

    def __init__(self, launch: rt.Launch) -> None:
        super().__init__(launch)
        self.output: InstanceOutput | None = None

    def stop_output(self) -> None:
        """A stop: see :meth:`InstanceOutput.stopped`."""
        if self.output is not None:
            self.output.stopped()

    def stdout_read(self, size: int) -> None:
        if self.output is not None:
            self.output.consumed(size)


class InstanceOutput:
    """The agent's side of one instance's output: the read ends of its pipes.

    Made and used on the event loop. ``stop(reason, message)`` stops the instance (a flood
    of output, the deadline reached while the request's receiver is paused)."""

    def __init__(
        self,
        launch: rt.Launch,
        *,
        log_writer: Callable[[rt.Launch], logs.LogWriter],
        budget: OutputBudget,
        stop: Callable[[str, str], None],
    ) -> None:
        self.launch = launch
        self._receiver = launch.stdout
        """A request instance's stdout receiver; None for a pod's instance (stdout logged)."""
        self._log_writer = log_writer
        self._log: logs.LogWriter | None = None
        self._budget = budget
        self._stop = stop
        self._loop = asyncio.get_running_loop()
        self.window = max(1, launch.stdout_buffer)
        self.delivered = 0
        """Stdout bytes handed to the receiver."""
        self._consumed = 0
        self._paused = False
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._on_end: Callable[[], None] | None = None
        stdout_read, stdout_write = os.pipe()
        try:
            stderr_read, stderr_write = os.pipe()
        except OSError:
            close_fds((stdout_read, stdout_write))
            raise
        self._write_fds: tuple[int, int] | None = (stdout_write, stderr_write)
        self._stdout: int | None = stdout_read
        self._stderr: int | None = stderr_read
        for fd in (stdout_read, stderr_read):
            os.set_blocking(fd, False)
        self._loop.add_reader(stdout_read, self._read_stdout)
        self._loop.add_reader(stderr_read, self._read_stderr)

    # -- the runner's ends -------------------------------------------------------------------------
    def take_write_fds(self) -> tuple[int, int]:
        """The write ends (stdout, stderr), once: the caller owns them from now on and closes
        them (:func:`close_fds`) when the runner has its own copies or the instance has ended,
        so that only the instance keeps the pipes open."""
        fds, self._write_fds = self._write_fds, None
        if fds is None:
            raise RuntimeError("the write ends were taken already")
        return fds

    # -- stdout ------------------------------------------------------------------------------------
    def _room(self) -> int:
        return self.window - (self.delivered - self._consumed)

    def _read_stdout(self) -> bool:
        """Read once (the loop says it is readable); whether that got data or the end."""
        fd = self._stdout
        if fd is None or self._paused:
            return False
        if self._receiver is None:
            return self._read_logged(fd, "stdout")
        room = self._room()
        if room <= 0:
            self._pause()
            return False
        try:
            data = os.read(fd, min(room, READ_SIZE))
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._close_stdout()
            return True
        self.delivered += len(data)
        self._receiver(data)  # may stop the instance, closing the pipes
        if self._stdout is not None and self._room() <= 0:
            self._pause()
        return True

    def consumed(self, size: int) -> None:
        """The receiver consumed ``size`` more stdout bytes: read on when it has room."""
        self._consumed += size
        if self._paused and self._stdout is not None and self._room() > 0:
            self._paused = False
            self._cancel_deadline_timer()
            self._loop.add_reader(self._stdout, self._read_stdout)

    def _pause(self) -> None:
        """The receiver holds its window unread: stop reading until it consumes. A writer
        that fills the pipe meanwhile blocks in the kernel, where no epoch check reaches it:
        the deadline is enforced from here then."""
        if self._paused or self._stdout is None:
            return
        self._paused = True
        self._loop.remove_reader(self._stdout)
        deadline = self.launch.limits.deadline
        if deadline is not None:
            # loop.time() is time.monotonic(), the clock of Limits.deadline.
            self._deadline_timer = self._loop.call_at(deadline, self._deadline_reached)

    def _deadline_reached(self) -> None:
        self._deadline_timer = None
        self._stop(rt.DEADLINE_EXCEEDED, "active deadline reached")

    def _cancel_deadline_timer(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    # -- the log -----------------------------------------------------------------------------------
    def _read_stderr(self) -> bool:
        """Read once (the loop says it is readable); whether that got data or the end."""
        fd = self._stderr
        if fd is None:
            return False
        return self._read_logged(fd, "stderr")

    def _read_logged(self, fd: int, stream: str) -> bool:
        """Read once from ``stream``'s pipe into the log, against the output budget; whether
        that got data or the end. Overdrawn: the instance is stopped and both pipes closed."""
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            if stream == "stdout":
                self._close_stdout()
            else:
                self._close_stderr()
            return True
        if not self._budget.spend(len(data)):
            self._stop(rt.OUTPUT_FLOOD, self._budget.message())
            self.close()  # the rest is dropped; a writer blocked on a full pipe gets EPIPE
            return True
        if self._log is None:
            self._log = self._log_writer(self.launch)
        self._log.write(stream, data)
        return True

    # -- the end -----------------------------------------------------------------------------------
    def stopped(self) -> None:
        """The instance is being stopped. A request's pipes are closed (what is unread is
        dropped, and a writer blocked on a full pipe gets EPIPE); a pod's are read on to
        their end, so its log keeps its last lines: nothing blocks its writer, since its
        output is always read."""
        if self._receiver is not None:
            self.close()

    def close(self) -> None:
        """Stop reading and close the read ends (a stop: what is left is dropped, and a writer
        blocked on a full pipe gets EPIPE)."""
        if self._write_fds is not None:
            close_fds(self._write_fds)
            self._write_fds = None
        self._close_stdout()
        self._close_stderr()

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once both pipes have reached their end or were closed. The
        runner has reported the instance's end, so its write ends are closed.

        A request instance's output is read now, to the end (stdout as far as the
        receiver's window allows; the rest when it consumes), rather than over more turns
        of the loop: its two streams go to different places. A pod's two streams go to one
        log, so they are left to the loop's readers, which run in the order the pipes
        became readable (epoll's ready list is first come, first served): a line a program
        wrote to stdout before one to stderr is logged first, even when the loop reads
        both only after the instance ended. Reading stderr first here logged a crash's
        "fatal" line before the line it printed on the way there. Across two pipes the
        order is the order of their first unread bytes, as with the two FIFOs a container
        runtime copies into a Kubernetes log."""
        if self._stdout is None and self._stderr is None:
            callback()
            return
        self._on_end = callback
        if self._receiver is None:
            return
        while self._read_stderr():
            pass
        while self._read_stdout():
            pass

    def _close_stdout(self) -> None:
        fd, self._stdout = self._stdout, None
        if fd is not None:
            self._paused = False
            self._cancel_deadline_timer()
            self._forget(fd)

    def _close_stderr(self) -> None:
        fd, self._stderr = self._stderr, None
        if fd is not None:
            self._forget(fd)

    def _forget(self, fd: int) -> None:
        """Stop watching ``fd`` and close it; when it was the last, the output has ended."""
        self._loop.remove_reader(fd)
        os.close(fd)
        if self._stdout is None and self._stderr is None:
            if self._log is not None:
                self._log.close()
                self._log = None
            callback, self._on_end = self._on_end, None
            if callback is not None:
                callback()
