"""What importing a module loads: the layering rules import-linter cannot state.

import-linter checks which modules may import which; it cannot say "this import loads only
settings". Each check runs in a fresh interpreter, so what the test process already imported
does not hide anything.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROJECT = ("p2pkube", "signaling")

SETTINGS_HELPERS = {
    "p2pkube.net.frames": "the wire's frame cap (MAX_FRAME_BYTES), the default of "
    "transport.max_frame_bytes: a codec, not controller, store or runtime code",
}
"""Modules other than settings that importing ``p2pkube.settings`` may load, each with why it
is neither controller, store nor runtime code."""


def loaded_by(module: str) -> list[str]:
    """The project modules loaded by importing ``module`` in a fresh interpreter."""
    code = (
        f"import json, sys, {module}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {PROJECT!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return list(json.loads(done.stdout))


def test_importing_the_settings_loads_no_controller_store_or_runtime_code() -> None:
    """``p2pkube.settings`` (the ``--set`` names, docs/settings.md) loads each package's
    ``settings`` module and nothing else: the packages that hold them, and the allowed
    helpers."""
    loaded = loaded_by("p2pkube.settings")
    settings = [m for m in loaded if m.endswith(".settings")]
    packages = {m.rsplit(".", i)[0] for m in settings for i in range(1, m.count(".") + 1)}
    extra = [m for m in loaded if m not in settings and m not in packages]
    assert [m for m in extra if m not in SETTINGS_HELPERS] == []
    assert "p2pkube.settings" in settings and len(settings) > 5
