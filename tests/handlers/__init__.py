"""C handlers the handler tests build (zig cc, wasm32-wasi), beside the examples' modules.

They are test fixtures, not examples: ``make examples`` does not build them; the tests do,
incrementally, into examples/build/test-handlers/ (not committed).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent.parent / "examples" / "build" / "test-handlers"
FLAGS = ["--target=wasm32-wasi", "-O2", "-s", "-Wl,-z,stack-size=1048576"]


def build(name: str) -> tuple[str, Path]:
    """(digest, path) of tests/handlers/<name>.c compiled, rebuilt only when the source is
    newer. Written to a temporary name first, so parallel test workers never read half a
    module."""
    source = HERE / f"{name}.c"
    target = OUT / f"{name}.wasm"
    if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
        OUT.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{name}.{os.getpid()}.wasm")
        subprocess.run(
            [sys.executable, "-m", "ziglang", "cc", *FLAGS, str(source), "-o", str(partial)],
            check=True,
        )
        os.replace(partial, target)
    return "sha256:" + hashlib.sha256(target.read_bytes()).hexdigest(), target
