"""`make demo` is the README's first command: run the same script end to end and check what it
shows a user (it once broke on a wait that was only reached when placement took a moment), and
that it binds what it says (loopback, with a fresh random token, unless given --lan)."""

from __future__ import annotations

import importlib.util
import io
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_its_whole_story(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "demo.py"),
            "--duration",
            "0",
            "--root",
            str(tmp_path / "demo"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, f"{out[-3000:]}\n{result.stderr[-3000:]}"
    assert "configmap/greeting created" in out and "hello: world" in out
    assert "deployment/primes created" in out
    assert re.search(r"primes-batch\s+Complete\s+4/4", out), out
    assert "hello from MicroPython 1.27.0 on linux" in out, out
    assert "46 primes below 200; the last is 199" in out, out
    replaced = re.search(r"3 replicas Running again ([\d.]+)s after the kill", out)
    assert replaced, out
    assert re.search(r"primes\s+3/3\s+3\s+3", out), out  # exactly 3 after the victim returned
    # Services (issue 12): web.yaml's NodePort, curled through a peer that runs no replica,
    # answered by a replica elsewhere; then a GET load loses nothing to a replica's kill -9.
    assert "service/web created" in out and re.search(r"web\s+NodePort\s+80:30080/TCP", out), out
    empty = re.search(r"as (n\d) \(which runs no replica\) sees them", out)
    assert empty, out
    assert re.search(r"web\s+n\d/web-\S+:8080,n\d/web-\S+:8080\s", out), out
    answer = re.search(r"x-echo: hello\n.*\npod: (web-\S+)\nnode: (n\d)\n", out)
    assert answer and answer.group(2) != empty.group(1), out
    load = re.search(r"(\d+) GETs sent, (\d+) failed", out)
    assert load and int(load.group(1)) > 250 and load.group(2) == "0", out
    page = re.search(r"http://localhost:(\d+)/#token=(\S+)", out)
    assert page, out
    # A fresh random token (128 bits at least), shown only in the page's URL (not in the
    # command lines the demo prints: its processes get it in their environment).
    token = page.group(2)
    assert len(token) >= 22 and out.count(token) == 1, out
    assert "on the same network" not in out  # no LAN URL without --lan
    # It says it listens on loopback only, and that is where the server listened.
    assert "starting the signaling server on 127.0.0.1 only" in out, out
    log = (tmp_path / "demo" / "signaling.log").read_text()
    assert f"listening on ws://127.0.0.1:{page.group(1)}/ws" in log, log


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_demo_counts_its_start_up_on_a_terminal_only() -> None:
    """The demo's waits draw the CLI's bar (done/total) on a terminal and nothing elsewhere,
    so its narration stays what the test above reads."""
    spec = importlib.util.spec_from_file_location("demo", ROOT / "examples" / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    sys.modules["demo"] = demo  # its dataclasses look their module up
    try:
        spec.loader.exec_module(demo)
    finally:
        del sys.modules["demo"]
    steps = iter([0, 1, 1, 2, 3])
    terminal = Terminal()
    demo.counting("agents answering", 3, lambda: next(steps), 10, what="x", stream=terminal)
    shown = terminal.getvalue()
    assert "agents answering" in shown and "#]  3/3" in shown and "-]  1/3" in shown, shown
    piped = io.StringIO()
    demo.counting("agents answering", 2, lambda: 2, 10, what="x", stream=piped)
    assert piped.getvalue() == ""
