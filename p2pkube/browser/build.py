#!/usr/bin/env python3
"""Build the browser node's bundle: ``p2pkube/browser/dist/`` (``make browser``; a wheel's
build runs it too, from ``hatch_build.py``, and packs ``dist`` into the wheel).

What goes in (every step is skipped when its output is up to date, so a second run does
nothing but re-hash; the result does not depend on how often it ran):

* ``npm ci`` in ``p2pkube/browser/web`` (versions pinned in package-lock.json) when
  ``node_modules`` is missing or older than the lock file;
* ``yjs.mjs``, ``browser_wasi_shim.mjs`` and ``ed25519.mjs``: the npm libraries, each bundled
  by esbuild into one ES module (``web/esbuild.config.mjs``; ``ed25519.mjs`` is @noble/ed25519
  with @noble/hashes' sha512, which bridge.js imports only where WebCrypto has no Ed25519);
* ``bridge.js`` and ``worker.js``: ``web/bridge.js`` with its modules (``web/bridge/*.js``, one
  per concern) and ``web/worker.js``, both with ``web/ring.js`` and ``web/files.js`` (the
  output ring's and the live files' layouts they
  share), each bundled by esbuild into one file (one request instead of a chain of imports);
* the page's other sources as they are (``index.html``, ``app.css``, ``app.js``, and ``sw.js``,
  the Service Worker, which must sit at the web root to have the whole origin as its scope);
* ``dashboard/``: the cluster dashboard (``web/dashboard/``): ``view.mjs``, its view and data
  sources bundled with cytoscape by esbuild, and its page (``index.html``, ``main.js``,
  ``dashboard.css``) as it is; the native agent serves this directory at ``/dashboard/``
  and a browser node's page imports ``view.mjs`` for its Cluster tab;
* ``pyodide/<version>/``: what ``loadPyodide({indexURL})`` loads from the npm package (the
  runtime, its wasm, the standard library zip, the lock file); the version in the path makes
  these files immutable, so the server lets browsers cache them for a year;
* ``pyodide/<version>/snapshot.bin``: Pyodide's memory after its start-up and the standard
  library's imports that the agent needs (``web/snapshot.mjs``, run with Node.js): the page
  restores it instead of starting the interpreter (~0.3 s instead of ~3 s here);
* ``wheels/``: the msgpack wheel for Pyodide's platform (the npm package has no package wheels)
  and the pure-Python cronsim and tzdata wheels, the same versions as this interpreter has,
  fetched once with ``pip download`` into
  ``p2pkube/browser/.cache/wheels`` (so rebuilding ``dist`` needs no network);
* ``python/p2pkube.zip``: the Python sources the browser node imports: the ``p2pkube`` package
  (without ``browser/dist``, ``browser/web``, ``browser/.cache``, ``__pycache__``; the
  signaling wire format is in it, ``p2pkube/net/signaling_wire.py``, so no part of the
  signaling server's package goes in), with their bytecode compiled by Pyodide's own Python
  (``web/pycompile.mjs``, run with Node.js: the page then compiles none of the ~120 modules
  it imports, ~1.4 s here); fixed times, sorted entries;
* ``*.gz`` beside the larger compressible files (aiohttp's FileResponse sends them to browsers
  that accept gzip);
* ``manifest.json``: every file with its size and sha256 (the page adds hashes to URLs to bust
  caches), what the page must load, and the total size.

Files in ``dist`` that the build did not produce are removed. Errors say what is missing and
exit 1. Standard library only, plus the ``node``/``npm`` and ``pip`` commands::

    python p2pkube/browser/build.py [--quiet]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WEB = HERE / "web"
DIST = HERE / "dist"
CACHE = HERE / ".cache"
REPO = HERE.parent.parent
PACKAGE = REPO / "p2pkube"
NODE_MODULES = WEB / "node_modules"

#: The page's own files, copied as they are (sw.js at the root: a Service Worker's scope is
#: at most its script's directory).
PAGE_FILES = (
    "index.html",
    "app.css",
    "app.js",
    "sw.js",
    "dashboard/index.html",
    "dashboard/main.js",
    "dashboard/dashboard.css",
)
#: What the esbuild config writes: the npm libraries, the bridge (web/bridge.js with its
#: modules in web/bridge/) and the pod worker (web/worker.js), the last two with web/ring.js
#: and web/files.js.
LIBRARY_BUNDLES = ("yjs.mjs", "browser_wasi_shim.mjs", "ed25519.mjs")
BUNDLES = (*LIBRARY_BUNDLES, "bridge.js", "worker.js", "dashboard/view.mjs")
#: What loadPyodide() fetches from its indexURL (pyodide.mjs is the module the page imports).
PYODIDE_FILES = (
    "pyodide.mjs",
    "pyodide.asm.mjs",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "pyodide-lock.json",
)
#: Python distributions the browser node needs beyond Pyodide's standard library, as wheels
#: for Pyodide's platform (or pure-Python ones), each at the version this interpreter has
#: installed: msgpack (the state's values), cronsim (CronJob schedules: a tab may lead a
#: CronJob like any workload) and tzdata (the zones of their ``timeZone``: Pyodide has no
#: system time zone database).
WHEELS = ("msgpack", "cronsim", "tzdata")
#: Directories of the p2pkube package that are not Python sources for the browser.
EXCLUDED_DIRS = ("browser/dist", "browser/web", "browser/.cache")
ZIP_NAME = "python/p2pkube.zip"
#: Files at least this big get a .gz sibling when gzip saves at least a tenth.
GZIP_MIN_BYTES = 64 * 1024
GZIP_SUFFIXES = (".wasm", ".mjs", ".js", ".json", ".css", ".html", ".bin")
#: The memory snapshot, beside the Pyodide files it was made with.
SNAPSHOT_NAME = "snapshot.bin"
#: How snapshot.mjs and pycompile.mjs start Pyodide in Node.js (an input of both steps).
NODE_PYODIDE = "node-pyodide.mjs"


def _wheels_for(cache: Path, stem: str, platform: str) -> list[Path]:
    """The cached wheels named ``stem*`` for ``platform``, or pure-Python ones."""
    if not cache.is_dir():
        return []
    return sorted(
        p
        for p in cache.glob(f"{stem}*.whl")
        if p.name.endswith((f"{platform}.whl", "-none-any.whl"))
    )


class BuildError(Exception):
    """A step failed; the message says why and what to do."""


class Builder:
    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.produced: set[str] = set()
        self.changed: list[str] = []

    # -- output ----------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def _record(self, rel: str, changed: bool) -> None:
        self.produced.add(rel)
        if changed:
            self.changed.append(rel)

    def write_bytes(self, rel: str, data: bytes) -> bool:
        """Write dist/rel unless it already holds exactly these bytes."""
        path = DIST / rel
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            self._record(rel, False)
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self._record(rel, True)
        return True

    def copy(self, src: Path, rel: str) -> bool:
        """Copy src to dist/rel unless a copy with the same size and mtime is there."""
        if not src.is_file():
            raise BuildError(f"missing {src}")
        dst = DIST / rel
        st = src.stat()
        if dst.is_file():
            dt = dst.stat()
            if dt.st_size == st.st_size and dt.st_mtime_ns == st.st_mtime_ns:
                self._record(rel, False)
                return False
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        self._record(rel, True)
        return True

    # -- steps -----------------------------------------------------------------------------------
    def npm_ci(self) -> None:
        lock = WEB / "package-lock.json"
        stamp = NODE_MODULES / ".package-lock.json"
        if not lock.is_file():
            raise BuildError(f"{lock} is missing (it pins the npm packages)")
        if stamp.is_file() and stamp.stat().st_mtime >= lock.stat().st_mtime:
            return
        npm = shutil.which("npm")
        if npm is None:
            raise BuildError(
                "npm is not installed; the browser bundle needs Node.js and npm "
                "(e.g. apt-get install nodejs npm)"
            )
        self.say("npm ci (p2pkube/browser/web)")
        # --ignore-scripts: esbuild's postinstall only re-checks its binary, which comes in the
        # platform package @esbuild/<os>-<arch> anyway.
        run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=WEB, what="npm ci")
        stamp.touch()

    def bundles(self) -> None:
        config = WEB / "esbuild.config.mjs"
        inputs = [config, WEB / "package-lock.json", NODE_MODULES / ".package-lock.json"]
        inputs += [*WEB.glob("*.js"), *(WEB / "bridge").glob("*.js")]
        inputs += [p for p in (WEB / "dashboard").glob("*.js") if p.name != "main.js"]
        newest = max(p.stat().st_mtime for p in inputs if p.exists())
        outputs = [DIST / name for name in BUNDLES]
        if all(p.is_file() and p.stat().st_mtime >= newest for p in outputs):
            for name in BUNDLES:
                self._record(name, False)
            return
        node = node_command()
        self.say(f"esbuild: {', '.join(BUNDLES)}")
        DIST.mkdir(parents=True, exist_ok=True)
        run([node, str(config), str(DIST)], cwd=WEB, what="esbuild")
        for name in BUNDLES:
            if not (DIST / name).is_file():
                raise BuildError(f"esbuild did not write {name}")
            self._record(name, True)

    def page(self) -> None:
        for name in PAGE_FILES:
            self.copy(WEB / name, name)

    def pyodide(self) -> dict[str, str]:
        package = NODE_MODULES / "pyodide"
        try:
            version = json.loads((package / "package.json").read_text())["version"]
            info = json.loads((package / "pyodide-lock.json").read_text())["info"]
        except (OSError, ValueError, KeyError) as exc:
            raise BuildError(f"cannot read the pyodide npm package in {package}: {exc}") from None
        base = f"pyodide/{version}/"
        for name in PYODIDE_FILES:
            self.copy(package / name, base + name)
        python = ".".join(str(info["python"]).split(".")[:2])
        platform = f"pyemscripten_{info['abi_version']}_{info['arch']}"
        return {
            "version": version,
            "indexURL": base,
            "module": base + "pyodide.mjs",
            "snapshot": self.snapshot(base),
            "python": python,
            "platform": platform,
        }

    def snapshot(self, base: str) -> str:
        """Pyodide's memory snapshot (web/snapshot.mjs), remade when Pyodide or the script
        changed."""
        rel = base + SNAPSHOT_NAME
        script = WEB / "snapshot.mjs"
        inputs = [script, WEB / NODE_PYODIDE, *(DIST / (base + name) for name in PYODIDE_FILES)]
        newest = max(p.stat().st_mtime for p in inputs)
        out = DIST / rel
        if out.is_file() and out.stat().st_mtime >= newest:
            self._record(rel, False)
            return rel
        node = node_command()
        self.say("Pyodide memory snapshot (web/snapshot.mjs)")
        tmp = out.with_name(f".{out.name}.tmp")
        run([node, str(script), str(DIST / base), str(tmp)], cwd=WEB, what="snapshot.mjs")
        os.replace(tmp, out)
        self._record(rel, True)
        return rel

    def wheels(self, python: str, platform: str) -> list[str]:
        abi = "cp" + python.replace(".", "")
        cache = CACHE / "wheels"
        names = []
        for dist_name in WHEELS:
            try:
                version = importlib.metadata.version(dist_name)
            except importlib.metadata.PackageNotFoundError:
                raise BuildError(
                    f"{dist_name} is not installed in {sys.executable}; run this script with the "
                    "project's venv (.venv/bin/python), whose version is the one shipped"
                ) from None
            stem = f"{dist_name.replace('-', '_')}-{version}-"
            found = _wheels_for(cache, stem, platform)
            if not found:
                self.say(f"pip download {dist_name}=={version} for {platform}")
                cache.mkdir(parents=True, exist_ok=True)
                run(
                    [
                        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", "--platform", platform, "--python-version", python,
                        "--implementation", "cp", "--abi", abi, "--dest", str(cache),
                        f"{dist_name}=={version}",
                    ],
                    cwd=REPO,
                    what=f"pip download {dist_name}=={version}",
                )  # fmt: skip
                found = _wheels_for(cache, stem, platform)
                if not found:
                    raise BuildError(
                        f"pip download found no {platform} wheel of {dist_name}=={version}"
                    )
            wheel = found[-1]
            rel = f"wheels/{wheel.name}"
            self.copy(wheel, rel)
            names.append(rel)
        return names

    def python_zip(self, pyodide: dict[str, str]) -> None:
        entries: dict[str, bytes] = {}
        excluded = [PACKAGE / d for d in EXCLUDED_DIRS]
        for root, dirs, files in os.walk(PACKAGE):
            root_path = Path(root)
            dirs[:] = sorted(
                d
                for d in dirs
                if d != "__pycache__"
                and not d.startswith(".")
                and root_path / d not in excluded
                and not d.endswith(".egg-info")
            )
            for name in sorted(files):
                if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                    continue
                path = root_path / name
                entries[path.relative_to(REPO).as_posix()] = path.read_bytes()
        count = len(entries)
        entries.update(self.bytecode(entries, pyodide["indexURL"]))
        if self.write_bytes(ZIP_NAME, reproducible_zip(entries)):
            self.say(f"python sources: {count} files, with Pyodide's bytecode")

    def bytecode(self, sources: dict[str, bytes], base: str) -> dict[str, bytes]:
        """The .pyc files Pyodide's Python compiles from ``sources`` (web/pycompile.mjs), by
        archive name, from .cache/bytecode/ when these sources, that script and that Pyodide
        made them before (a build after no source change runs no Node.js)."""
        script = WEB / "pycompile.mjs"
        digest = hashlib.sha256(script.read_bytes() + (WEB / NODE_PYODIDE).read_bytes())
        digest.update(base.encode())
        for name in sorted(sources):
            digest.update(name.encode() + b"\0" + hashlib.sha256(sources[name]).digest())
        key = digest.hexdigest()[:24]
        cache = CACHE / "bytecode"
        cached = cache / f"{key}.zip"
        if not cached.is_file():
            node = node_command()
            self.say("bytecode of the agent's sources (web/pycompile.mjs)")
            cache.mkdir(parents=True, exist_ok=True)
            for old in cache.glob("*.zip"):
                old.unlink()  # one entry: the sources change with every commit
            plain, tmp = cache / f".{key}.sources", cache / f".{key}.tmp"
            plain.write_bytes(reproducible_zip(sources))
            try:
                command = [node, str(script), str(DIST / base), str(plain), str(tmp)]
                run(command, cwd=WEB, what="pycompile.mjs")
                os.replace(tmp, cached)
            finally:
                plain.unlink(missing_ok=True)
                tmp.unlink(missing_ok=True)
        with zipfile.ZipFile(cached) as archive:
            return {name: archive.read(name) for name in archive.namelist()}

    def gzip_siblings(self) -> None:
        for rel in sorted(self.produced):
            path = DIST / rel
            if not rel.endswith(GZIP_SUFFIXES) or path.stat().st_size < GZIP_MIN_BYTES:
                continue
            gz_rel = rel + ".gz"
            gz = DIST / gz_rel
            source_mtime = path.stat().st_mtime_ns
            if gz.is_file() and gz.stat().st_mtime_ns == source_mtime:
                self._record(gz_rel, False)
                continue
            data = path.read_bytes()
            packed = gzip.compress(data, compresslevel=6, mtime=0)
            if len(packed) > len(data) * 0.9:
                continue  # not worth it (remove_stale drops an old one)
            self.write_bytes(gz_rel, packed)
            os.utime(gz, ns=(source_mtime, source_mtime))  # marks which version it packs

    def remove_stale(self) -> None:
        keep = self.produced | {"manifest.json"}
        for path in sorted(DIST.rglob("*"), reverse=True):
            rel = path.relative_to(DIST).as_posix()
            if path.is_file() and rel not in keep:
                path.unlink()
                self.say(f"removed stale {rel}")
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()

    def manifest(self, pyodide: dict[str, str], wheels: list[str]) -> dict:
        files: dict[str, dict[str, Any]] = {}
        for rel in sorted(self.produced):
            if rel.endswith(".gz"):
                continue
            data = (DIST / rel).read_bytes()
            files[rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        manifest = {
            "format": 1,
            "pyodide": pyodide,
            "wheels": wheels,
            "python": {"zip": ZIP_NAME},
            "files": files,
            "totalBytes": sum(f["size"] for f in files.values()),
        }
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        self.write_bytes("manifest.json", text.encode())
        return manifest

    def build(self) -> dict:
        started = time.monotonic()
        self.npm_ci()
        self.bundles()
        self.page()
        pyodide = self.pyodide()
        wheels = self.wheels(pyodide["python"], pyodide["platform"])
        self.python_zip(pyodide)
        self.gzip_siblings()
        self.remove_stale()
        manifest = self.manifest(pyodide, wheels)
        self.report(manifest, time.monotonic() - started)
        return manifest

    def report(self, manifest: dict, seconds: float) -> None:
        groups: dict[str, int] = {}
        for rel, entry in manifest["files"].items():
            if rel.startswith("pyodide/"):
                group = f"Pyodide {manifest['pyodide']['version']}"
            elif rel.startswith("wheels/"):
                group = "wheels"
            elif rel.startswith("python/"):
                group = "agent Python sources (zip)"
            elif rel in LIBRARY_BUNDLES:
                group = "yjs, WASI shim, Ed25519 bundles"
            else:
                group = "page, bridge, worker"
            groups[group] = groups.get(group, 0) + entry["size"]
        gz = sum((DIST / r).stat().st_size for r in self.produced if r.endswith(".gz"))
        plain = sum((DIST / r[:-3]).stat().st_size for r in self.produced if r.endswith(".gz"))
        total = manifest["totalBytes"]
        state = f"{len(self.changed)} files updated" if self.changed else "up to date"
        self.say(f"browser bundle: {DIST.relative_to(REPO)} ({state}, {seconds:.2f} s)")
        for group, size in sorted(groups.items(), key=lambda kv: -kv[1]):
            self.say(f"  {group:<30} {mb(size):>9}")
        self.say(
            f"  {'total':<30} {mb(total):>9} in {len(manifest['files'])} files"
            + (f"; gzip sends {mb(total - plain + gz)}" if gz else "")
        )


def node_command() -> str:
    """The ``node`` executable (esbuild, the Pyodide snapshot and bytecode steps run on it)."""
    node = shutil.which("node")
    if node is None:
        raise BuildError("node is not installed; the browser bundle needs Node.js and npm")
    return node


def reproducible_zip(entries: dict[str, bytes]) -> bytes:
    """``entries`` as a zip that depends on nothing else: sorted names, fixed times and modes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name])
    return buffer.getvalue()


def mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def run(cmd: list[str], *, cwd: Path, what: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BuildError(f"{what}: cannot run {cmd[0]}: {exc}") from None
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n{output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", action="store_true", help="print nothing unless it fails")
    args = parser.parse_args(argv)
    try:
        Builder(quiet=args.quiet).build()
    except BuildError as exc:
        print(f"browser build: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
