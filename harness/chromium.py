"""How headless Chromium is started, for the browser tests (tests/browser.py) and the browser
benchmark (bench/bench_browser.py): one set of flags, so both measure the same browser."""

from __future__ import annotations

import os

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
