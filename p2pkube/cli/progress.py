"""Progress where people wait, one way for every command: click's progress bar, on stderr.

A bar is drawn only when its stream (stderr, unless a caller names another) is a terminal;
anywhere else (a pipe, a CI log, a test) the commands keep printing their plain lines, which
scripts read. Progress never goes to stdout, which carries results only.

Two shapes:

* :func:`bar` for anything counted (bytes pulled, replicas ready, objects meeting a
  condition): a :class:`Bar` told where it stands (``show(done, total, item)``) rather than
  how far it moved, or None off a terminal, where the caller prints its own lines;
* :func:`progress` for a transfer of known size (``apply``/``publish`` uploads, OCI
  downloads): a callback taking the bytes done so far, a bar on a terminal, else a line every
  ``PROGRESS_EVERY`` seconds while it lasts.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import click

from p2pkube.cli.output import format_size

PROGRESS_EVERY = 2.0
"""Seconds between two progress lines of a transfer when stderr is not a terminal."""
REDRAW_EVERY = 0.1
"""Seconds between two redraws of a bar (a transfer reports every few KiB; the terminal
need not hear each)."""
UPLOAD_BAR_BYTES = 1024 * 1024
"""Uploads (``apply``/``publish`` of a module) from this size on show their progress: a
smaller one takes a blink on loopback."""


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr) is a terminal, where bars are drawn."""
    out = stream or sys.stderr
    try:
        return out.isatty()
    except ValueError:  # a closed stream
        return False


class Bar:
    """A click progress bar set to a position, so a count that goes down (a replica that
    stopped being ready) moves it back."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._drawn = 0.0

    def echo(self, line: str) -> None:
        """Print ``line`` on stdout without tearing the bar: the bar's line is cleared first
        (both streams may be the same terminal) and drawn again below it."""
        self._bar.file.write("\r\033[K")
        self._bar.file.flush()
        click.echo(line)
        self._bar.render_progress()

    def show(self, done: int, total: int | None = None, item: str | None = None) -> None:
        """Draw ``done`` of ``total`` (unchanged when None), with ``item`` after the bar."""
        if total is not None:
            self._bar.length = max(1, total)
        if item is not None:
            self._bar.current_item = item
        moved = done - self._bar.pos
        if moved > 0:
            self._bar.make_step(moved)  # click's own step: it keeps the ETA's average
        else:
            self._bar.pos = max(0, done)
            self._bar.finished = self._bar.pos >= self._bar.length
        now = time.monotonic()
        if now - self._drawn >= REDRAW_EVERY or self._bar.finished:
            self._drawn = now
            self._bar.render_progress()


@contextmanager
def bar(
    label: str, total: int, *, unit_bytes: bool = False, stream: TextIO | None = None
) -> Iterator[Bar | None]:
    """A :class:`Bar` on ``stream`` (default stderr) when it is a terminal, else None: the
    caller prints its line-based output then. With ``unit_bytes`` the bar counts bytes (and
    shows an ETA); otherwise it shows ``done/total`` items."""
    out = stream or sys.stderr
    if not on_terminal(out):
        yield None
        return
    with click.progressbar(
        length=max(1, total),
        label=label,
        file=out,
        show_pos=not unit_bytes,
        show_eta=unit_bytes,
        item_show_func=lambda item: item,
    ) as drawn:
        yield Bar(drawn)


def bytes_of(done: int, size: int) -> str:
    """``3.15 MB/8.39 MB``: what a byte bar shows beside its percentage."""
    return f"{format_size(done)}/{format_size(size)}"


@contextmanager
def progress(
    label: str, size: int, stream: TextIO | None = None
) -> Iterator[Callable[[int], None]]:
    """A callback taking the bytes done so far: a bar on a terminal (like ``p2pkube pull``),
    else a line every ``PROGRESS_EVERY`` seconds while a transfer lasts."""
    out = stream or sys.stderr
    with bar(label, size, unit_bytes=True, stream=out) as drawn:
        if drawn is not None:
            yield lambda done: drawn.show(done, item=bytes_of(done, size))
            return
        last = time.monotonic()

        def line(done: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY and done < size:
                last = now
                click.echo(
                    f"{label}: {format_size(done, ' ')} of {format_size(size, ' ')}", file=out
                )

        yield line
