"""Fixtures for tests in a real headless Chromium (Debian's /usr/bin/chromium driven by Python
playwright; playwright never downloads a browser here) against the real signaling server
serving the real browser bundle (``p2pkube/browser/dist``, built by ``build.py`` when missing
or stale: incremental, a tenth of a second when up to date).

Use from a test module::

    from tests.browser import *  # noqa: F403  (the fixtures, in __all__)
    from tests.browser import open_node_page
    pytestmark = pytest.mark.asyncio(loop_scope="session")

* ``bundle`` (session): the dist directory, built.
* ``web_server`` (session): a :class:`signaling.server.SignalingServer` on a free loopback port
  with token :data:`TOKEN` and the bundle as web root (``web_server.http_url``).
* ``browser`` (session): one Chromium for the whole run; ``browser_context`` (session): one
  context, so the HTTP cache (Pyodide, 14 MB) is shared by the tests' pages.
* ``page``: a new tab per test; every console message and page error is collected in
  ``page.console`` (a list of strings) and printed when the test fails.
* :func:`open_node_page` loads the page (without a join token by default, so no node starts)
  and waits until Pyodide and the agent's sources are loaded.

Tests are skipped, saying why, when Chromium, Node.js/npm or playwright are missing.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from harness.chromium import CHROMIUM, CHROMIUM_ARGS, ChromiumLog
from signaling.server import SignalingServer

__all__ = ["browser", "browser_context", "bundle", "page", "web_server"]

REPO = Path(__file__).resolve().parent.parent
DIST = REPO / "p2pkube" / "browser" / "dist"
BUILD = REPO / "p2pkube" / "browser" / "build.py"
EXAMPLES = REPO / "examples" / "build"
TOKEN = "browser-test-token-0123456789"

#: Seconds the page may take to load Pyodide, the wheels and the agent's sources.
LOAD_TIMEOUT = 60.0


def _require_tools() -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are needed to build the browser bundle")
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="session")
def bundle() -> Path:
    """The browser bundle, built (incrementally) by p2pkube/browser/build.py."""
    _require_tools()
    # One build at a time: pytest-xdist's workers each call this, and two builds writing the
    # same dist files at once after a source change left a tab a half-written bundle.
    cache = REPO / "p2pkube" / "browser" / ".cache"  # build.py's own scratch (not packaged)
    cache.mkdir(exist_ok=True)
    with (cache / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(
            [sys.executable, str(BUILD), "--quiet"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    if proc.returncode != 0:
        pytest.fail(f"the browser bundle does not build:\n{proc.stdout}{proc.stderr}")
    return DIST


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def web_server(bundle: Path) -> AsyncIterator[SignalingServer]:
    server = SignalingServer([TOKEN], host="127.0.0.1", port=0, web_root=bundle)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """One Chromium for the run; its stderr goes to ``browser.stderr_log`` (a ChromiumLog)."""
    from playwright.async_api import async_playwright

    log = ChromiumLog(tmp_path_factory.mktemp("chromium") / "stderr.log")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=log.launcher(), args=CHROMIUM_ARGS)
        chromium.stderr_log = log
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser_context(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context()
    try:
        yield context
    finally:
        await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(
    browser: Any, browser_context: Any, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    tab = await browser_context.new_page()
    messages: list[str] = []
    tab.console = messages
    tab.on("console", lambda m: messages.append(f"console.{m.type}: {m.text}"))
    tab.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    tab.on("crash", lambda _p: messages.append("page crashed"))
    tab.on("worker", lambda w: w.on("console", lambda m: messages.append(f"worker: {m.text}")))
    mark = browser.stderr_log.mark()
    try:
        yield tab
    finally:
        print_when_failed(request, messages, browser.stderr_log, mark)
        await tab.close()


def print_when_failed(
    request: pytest.FixtureRequest, console: list[str], log: ChromiumLog, mark: int
) -> None:
    """After a failed test: what its page said (console, errors, crashes) and what Chromium
    itself wrote to stderr meanwhile (why a renderer crashed is only said there)."""
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    print(f"--- browser console ({len(console)} messages) ---")
    print("\n".join(console[-150:]))
    said = log.since(mark)
    print(f"--- chromium stderr ({len(said)} lines, D-Bus noise left out) ---")
    print("\n".join(said))


async def open_node_page(
    page: Any, server: SignalingServer, *, token: str | None = None
) -> dict[str, int]:
    """Open the node page and wait until Python is loaded; returns the page's timings (ms)."""
    url = server.http_url + (f"#token={token}" if token else "")
    await page.goto(url)
    timings: dict[str, int] = await asyncio.wait_for(
        page.evaluate("window.p2pkubeLoaded"), LOAD_TIMEOUT
    )
    return timings


def wasm_b64(name: str) -> str:
    """An example pod module (examples/build/NAME.wasm) as base64, for page.evaluate."""
    path = EXAMPLES / f"{name}.wasm"
    if not path.is_file():
        subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], cwd=REPO, check=True)
    return base64.b64encode(path.read_bytes()).decode()


#: Page-side helpers for the runtime tests: window.t.run(name, options) compiles an example
#: module given as base64 (once per page) and runs it, collecting output per stream.
RUNTIME_HELPERS = """
window.t = {
  bytes(b64) { return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)); },
  async compile(name, b64) {
    const bridge = window.p2pkube.bridge;
    if (!bridge.hasModule(name)) await bridge.compileModule(name, this.bytes(b64));
  },
  start(name, options) {
    const out = { stdout: "", stderr: "", chunks: 0, times: [], t0: performance.now() };
    const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    const instance = window.p2pkube.bridge.startInstance(name, options, {
      onOutput(stream, data) {
        out.chunks += 1;
        out[stream] += decoders[stream].decode(data, { stream: true });
        out.times.push([stream, performance.now() - out.t0, data.length]);
      },
      onExit(result) { out.result = result; out.ms = performance.now() - out.t0; },
    });
    return { instance, out };
  },
};
"""
