"""The wheel's build hook (hatchling, ``[tool.hatch.build.targets.wheel.hooks.custom]``): build
the browser node's bundle, ``p2pkube/browser/dist``, before the wheel is packed, so that a
wheel (``pip wheel .``, ``python -m build``, ``pip install .``) carries the page ``p2pkube
signal`` serves and ``pip install p2pkube-*.whl`` needs neither Node.js nor a checkout.

The bundle is built by ``p2pkube/browser/build.py``, the script ``make browser`` runs, in a
child process of this build's interpreter (whose environment has the msgpack, cronsim and
tzdata versions the bundle ships: pyproject.toml's build requirements). It is incremental: from
a checkout whose bundle is up to date it re-hashes and changes nothing; from an sdist it runs
``npm ci`` and esbuild (Node.js and npm needed here, at build time only) and fetches the Pyodide
wheels with pip. A bundle that does not build fails the wheel, saying why: a wheel without its
page would serve 404 where a user expects a node.

An editable install (``pip install -e .``, ``make venv``) builds no bundle: it serves the
sources' own ``dist``, which ``make browser`` builds and keeps current.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: The bundle's build script and its output, relative to the project root.
BUILD_SCRIPT = Path("p2pkube/browser/build.py")
DIST = Path("p2pkube/browser/dist")


class BrowserBundleHook(BuildHookInterface):
    """Runs ``p2pkube/browser/build.py`` before a (non-editable) wheel is packed."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        root = Path(self.root)
        script = root / BUILD_SCRIPT
        self.app.display_info(f"building the browser bundle ({BUILD_SCRIPT})")
        try:
            proc = subprocess.run([sys.executable, str(script)], cwd=root, check=False)
        except OSError as exc:
            raise RuntimeError(f"cannot run {script}: {exc}") from None
        if proc.returncode != 0:
            raise RuntimeError(
                f"the browser bundle did not build ({BUILD_SCRIPT} exited {proc.returncode}, "
                "its error is above); a wheel needs Node.js and npm at build time"
            )
        if not (root / DIST / "index.html").is_file():
            raise RuntimeError(f"{BUILD_SCRIPT} succeeded but wrote no {DIST}/index.html")
