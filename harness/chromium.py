"""How headless Chromium is started, for the browser tests (tests/browser.py) and the browser
benchmark (bench/bench_browser.py): one set of flags, so both measure the same browser."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

CHROMIUM = os.environ.get("P2PKUBE_CHROMIUM", "/usr/bin/chromium")
"""Debian's Chromium; playwright drives it and never downloads a browser of its own."""

#: Headless Chromium as root on a loopback-only machine (see ../shared notes, "Browser node").
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


class ChromiumLog:
    """Chromium's own stderr, kept in a file, so that a test can show what the browser said when
    a page of it failed or crashed ("Target crashed" says nothing about why: an out-of-memory
    renderer, a V8 fatal error or a signal is only written to the browser's stderr).

    :meth:`launcher` writes a shell script that starts Chromium (or ``command``, a prefix such as
    ``ip netns exec NS``) with its stderr appended to the log; launch that instead of
    :data:`CHROMIUM`. :meth:`mark` and :meth:`since` cut out what was written during one test.
    """

    #: Lines Debian's Chromium writes at every start on a machine with no D-Bus: noise.
    NOISE = ("dbus/", "Failed to connect to the bus", "object_proxy.cc")

    def __init__(self, path: Path) -> None:
        self.path = path

    def launcher(self, *command: str) -> Path:
        """The script playwright launches in place of Chromium."""
        script = self.path.with_suffix(".sh")
        prefix = " ".join(shlex.quote(word) for word in (*command, CHROMIUM))
        script.write_text(f'#!/bin/sh\nexec {prefix} "$@" 2>>{shlex.quote(str(self.path))}\n')
        script.chmod(0o755)
        return script

    def mark(self) -> int:
        """Where the log ends now."""
        return self.path.stat().st_size if self.path.exists() else 0

    def since(self, mark: int, limit: int = 80) -> list[str]:
        """The last ``limit`` lines written after ``mark``, without the D-Bus noise."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(mark)
            text = log.read().decode(errors="replace")
        lines = [line for line in text.splitlines() if not any(n in line for n in self.NOISE)]
        return lines[-limit:]
