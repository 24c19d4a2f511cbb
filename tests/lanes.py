"""``make test``: the whole suite in two lanes that run at the same time.

* **serial**: the tests that time liveness, failover or a stall against the protocol's bounds
  (``-m serial``; tests/conftest.py says which), one at a time, at normal priority. Their
  bounds assume the agents get the CPU they ask for, and they do: the other lane is niced.
* **rest**: every other test, over two pytest-xdist workers, at ``nice 19``. The serial
  tests wait on timers most of the time; this lane uses the CPU they leave idle, and gives it
  back the moment they want it (the kernel's scheduler weighs a nice-0 task about 70 times a
  nice-19 one). At nice 10 the serial lane's demo and hostile-pod tests missed their bounds;
  at 19 they hold. Everything of this lane must be at 19, its browsers' renderers included
  (harness/chromium.py): a renderer Chromium raised to nice 5 starved the lane's own agents.

Running them one after the other took over 17 minutes here, mostly the serial lane's waits.
The two lanes share nothing they could race for: each has its own pytest base temp dir, and
the serial lane's local clusters put their agents' NodePorts on 127.0.1.x
(``$P2PKUBE_DEVCLUSTER_NET``) while the other lane's use 127.0.0.x. The network-lab tests
(fixed namespace names and subnet) are all in the serial lane.

Each lane's output is printed as it comes, every line prefixed with its lane's name; the exit
status is non-zero when either lane failed. Run it as ``python -m tests.lanes [PYTEST ARGS]``
(extra arguments go to both lanes, e.g. ``-x``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from p2pkube.devcluster import LOOPBACK_NET_ENV

BASE_TEMP = Path(os.environ.get("TMPDIR", "/tmp")) / "p2pkube-tests"
SERIAL_LOOPBACK_NET = "127.0.1"
REST_NICENESS = 19
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=15"]


def _lanes(extra: list[str]) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each lane's command and environment."""
    serial_env = {**os.environ, LOOPBACK_NET_ENV: SERIAL_LOOPBACK_NET}
    rest = ["nice", "-n", str(REST_NICENESS), *PYTEST, "-m", "not serial", "-n", "2"]
    rest += ["--dist", "loadgroup", "--basetemp", str(BASE_TEMP / "rest"), *extra]
    serial = [*PYTEST, "-m", "serial", "--basetemp", str(BASE_TEMP / "serial"), *extra]
    return {"serial": (serial, serial_env), "rest": (rest, dict(os.environ))}


def _relay(name: str, stream: IO[str], lock: threading.Lock) -> None:
    """Copy a lane's output to ours, line by line, each line prefixed with the lane."""
    for line in stream:
        with lock:
            sys.stdout.write(f"[{name}] {line}")
            sys.stdout.flush()


def main(extra: list[str]) -> int:
    if shutil.which("nice") is None:
        print("tests/lanes.py needs nice (coreutils)", file=sys.stderr)
        return 2
    BASE_TEMP.mkdir(parents=True, exist_ok=True)  # pytest makes --basetemp, not its parents
    lock = threading.Lock()
    started = time.monotonic()
    processes: dict[str, subprocess.Popen[str]] = {}
    relays = []
    for name, (command, env) in _lanes(extra).items():
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        processes[name] = process
        assert process.stdout is not None
        relay = threading.Thread(target=_relay, args=(name, process.stdout, lock), daemon=True)
        relay.start()
        relays.append(relay)
    codes = {name: process.wait() for name, process in processes.items()}
    for relay in relays:
        relay.join(timeout=10)
    minutes = (time.monotonic() - started) / 60
    outcome = ", ".join(f"{name} lane exit {code}" for name, code in codes.items())
    print(f"make test: {outcome}; {minutes:.1f} min", flush=True)
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
