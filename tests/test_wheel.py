"""One install carries everything: a wheel built from the repository holds the browser bundle,
and once it is installed in a fresh venv, its ``p2pkube signal`` serves the page that turns a
tab into a node, which a native agent from the same venv then lists Ready.

* The wheel is built as a user builds it: ``pip wheel --no-deps .`` (build isolation, the
  hatchling backend, whose hook runs p2pkube/browser/build.py). The bundle the other browser
  tests use is up to date, so the hook only re-hashes it; ``--build-constraint`` pins the
  bundle's Pyodide wheels (msgpack, cronsim, tzdata) to this venv's versions, so the build
  leaves that shared ``dist`` exactly as it was.
* The fresh venv has no site-packages but its own. Its dependencies, pinned to this venv's
  versions, come from uv's cache as hard links (offline once the cache holds them); pip
  installs the wheel itself. Its processes run its ``p2pkube`` script, without
  ``$PYTHONPATH`` and outside the checkout, so nothing of the repository is imported.
* ``p2pkube signal`` without a bundle says so in one line and how to get one (a copy of the
  packages without ``dist``: fast, no wheel).
* The sdist holds what building the wheel needs (the bundle's sources and package-lock.json,
  the hook) and nothing built.

Building a wheel from the sdist runs ``npm ci`` and fetches the Pyodide wheels: minutes and
the network, so it is not repeated here (docs/contributing.md says how to check it).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from p2pkube.browser import build as bundle_build
from p2pkube.devcluster import LocalCluster, wait_until
from p2pkube.net.jointoken import generate_token
from tests.browser import *  # noqa: F403  (the fixtures: bundle, browser)
from tests.browser import DIST, LOAD_TIMEOUT, REPO
from tests.test_browser_node import Tab, eventually, node_row, ready

DIST_IN_WHEEL = "p2pkube/browser/dist/"
#: What pip, uv and the installed commands may take (a cold uv cache downloads ~100 MB).
INSTALL_TIMEOUT = 600


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on failure, fail the test with its output."""
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False, **kwargs
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def uv_bin() -> str:
    from uv import find_uv_bin  # the test extra's uv package

    return str(find_uv_bin())


def pins() -> str:
    """``name==version`` of every distribution in this venv but p2pkube, one a line."""
    lines = {
        f"{d.metadata['Name']}=={d.version}"
        for d in importlib.metadata.distributions()
        if d.metadata["Name"] and d.metadata["Name"].lower() != "p2pkube"
    }
    return "\n".join(sorted(lines)) + "\n"


def clean_env() -> dict[str, str]:
    """This environment without what would make a process import the checkout's sources."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def wheel(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from the repository the way a user builds one."""
    out = tmp_path_factory.mktemp("wheel")
    constraints = out / "build-constraints.txt"
    constraints.write_text(
        "".join(f"{n}=={importlib.metadata.version(n)}\n" for n in bundle_build.WHEELS)
    )
    run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--build-constraint", str(constraints), "--wheel-dir", str(out), str(REPO),
        ],
        cwd=out,
    )  # fmt: skip
    (built,) = out.glob("p2pkube-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed: its root."""
    root = tmp_path_factory.mktemp("venv")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    python = str(venv / "bin" / "python")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = (n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    requirements = [
        line.removeprefix("Requires-Dist: ")
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist: ") and "extra ==" not in line
    ]
    assert requirements, metadata
    (root / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (root / "constraints.txt").write_text(pins())
    deps = [
        uv_bin(), "pip", "install", "--quiet", "--python", python, "--link-mode", "hardlink",
        "-r", str(root / "requirements.txt"), "-c", str(root / "constraints.txt"),
    ]  # fmt: skip
    env = clean_env()
    offline = subprocess.run(
        [*deps, "--offline"],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        env=env,
        check=False,
    )
    if offline.returncode != 0:  # a cold cache: fill it (PyPI) once
        run(deps, cwd=root, env=env)
    run(
        [
            sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index",
            "--no-compile", str(wheel),
        ],
        cwd=root,
        env=env,
    )  # fmt: skip
    where = run(
        [python, "-c", "import p2pkube, signaling; print(p2pkube.__file__, signaling.__file__)"],
        cwd=root,
        env=env,
    ).stdout.split()
    assert all(Path(path).is_relative_to(venv) for path in where), where
    return venv


@pytest.mark.slow
def test_the_wheel_carries_the_bundle_and_the_license(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read(DIST_IN_WHEEL + "manifest.json"))
        license_name = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        license_text = archive.read(license_name)
    # Every file of the bundle's manifest, as built (the page, Pyodide, the wheels, the zip).
    assert manifest == json.loads((DIST / "manifest.json").read_text())
    for rel in manifest["files"]:
        assert DIST_IN_WHEEL + rel in names, rel
    assert DIST_IN_WHEEL + "index.html" in names
    assert any(n.startswith(DIST_IN_WHEEL + "pyodide/") for n in names)
    # The two packages, not the bundle's sources, the build cache, tests or tools.
    tops = {n.split("/")[0] for n in names}
    assert tops == {"p2pkube", "signaling", wheel.name.rsplit("-", 3)[0] + ".dist-info"}, tops
    for part in ("p2pkube/browser/web/", "node_modules/", "p2pkube/browser/.cache/"):
        assert not any(part in n for n in names), part
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert license_text == (REPO / "LICENSE").read_bytes()


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_an_installed_wheel_serves_a_page_that_makes_a_tab_a_node(
    installed: Path, browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outside the checkout and without $PYTHONPATH: only the venv's package can be imported
    # (a pod runner is started as `python -m`, which would look in the current directory).
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.chdir(tmp_path)
    cluster = LocalCluster(tmp_path / "cluster", command=[str(installed / "bin" / "p2pkube")])
    context = await browser.new_context()
    tab = Tab(context, await context.new_page())
    try:
        await asyncio.to_thread(cluster.start_signaling)
        cluster.start_agent("native")  # starts while the tab loads Pyodide
        # The page it prints: a given token is not echoed, the user puts theirs in.
        page_line = await eventually(
            lambda: next(
                (
                    line
                    for line in cluster.log_tail("signaling").splitlines()
                    if line.startswith("browser node page: ")
                ),
                None,
            ),
            15,
            "the browser node page line",
        )
        url = page_line.removeprefix("browser node page: ")
        assert url == cluster.page_url().replace(cluster.token, "TOKEN")
        await tab.page.goto(url.replace("#token=TOKEN", f"#token={cluster.token}"))
        await asyncio.wait_for(tab.page.evaluate("window.p2pkubeReady"), LOAD_TIMEOUT)
        name = await tab.name()
        row = await eventually(
            lambda: (r := node_row(cluster, "native", name)) and ready(r) and r,
            30,
            f"the tab's node {name} Ready on the native agent",
        )
        assert row["metadata"]["labels"]["p2pkube.io/kind"] == "browser"
    except BaseException:
        print("--- browser console ---\n" + "\n".join(tab.console[-100:]))
        for process in ("signaling", "native"):
            print(f"--- {process} log ---\n{cluster.log_tail(process)}")
        raise
    finally:
        await context.close()
        await asyncio.to_thread(cluster.close)


def signal_lines(src: Path, *args: str) -> list[str]:
    """The first two lines ``p2pkube signal --port 0 ARGS`` prints (the server's URL and what
    it says of the page), with ``src``'s packages; then it is stopped."""
    out = src.parent / "signal.out"
    env = {**clean_env(), "PYTHONPATH": str(src), "P2PKUBE_TOKEN": generate_token()}
    command = [sys.executable, "-m", "p2pkube", "signal", "--port", "0", "--log-level", "warning"]
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [*command, *args], cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        lines: list[str] = wait_until(
            lambda: len(text := out.read_text().splitlines()) >= 2 and text,
            15,
            what="p2pkube signal's two lines",
        )
    finally:
        proc.terminate()
        proc.wait(10)
    return lines


def test_signal_says_why_there_is_no_page_or_prints_one_a_browser_opens(tmp_path: Path) -> None:
    """Packages without a built bundle (a checkout before make browser, a wheel without one):
    ``p2pkube signal`` serves no page and says in one line why and how to get one. With a
    bundle it prints the page; listening on every address, the page on the loopback."""
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("dist", ".cache", "node_modules", "__pycache__")
    for package in ("p2pkube", "signaling"):
        shutil.copytree(REPO / package, src / package, ignore=skip)
    lines = signal_lines(src)
    dist = src / "p2pkube" / "browser" / "dist"
    assert lines[0].startswith("signaling server: ws://127.0.0.1:"), lines
    assert lines[1] == (
        f"no browser bundle in {dist}: build it with `make browser` "
        "or install a wheel that carries it"
    ), lines
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html><title>p2pkube</title>")
    lines = signal_lines(src, "--host", "0.0.0.0", "--web-root", str(web))
    port = lines[0].removeprefix("signaling server: ws://0.0.0.0:").removesuffix("/ws")
    assert port.isdigit(), lines
    assert lines[1] == f"browser node page: http://127.0.0.1:{port}/#token=TOKEN", lines


@pytest.mark.slow
def test_the_sdist_holds_what_building_the_wheel_needs(tmp_path: Path) -> None:
    run([uv_bin(), "build", "--sdist", "--quiet", "--out-dir", str(tmp_path), str(REPO)],
        cwd=tmp_path, env=clean_env())  # fmt: skip
    (sdist,) = tmp_path.glob("p2pkube-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    web = "p2pkube/browser/web/"
    for needed in (
        "pyproject.toml", "hatch_build.py", "LICENSE", "README.md", "p2pkube/browser/build.py",
        web + "package.json", web + "package-lock.json", web + "esbuild.config.mjs",
        web + "index.html", web + "bridge.js", "signaling/server.py",
    ):  # fmt: skip
        assert needed in names, needed
    tracked = run(["git", "ls-files", "p2pkube/browser/web"], cwd=REPO).stdout.split()
    assert set(tracked) <= names, set(tracked) - names
    for built in ("p2pkube/browser/dist/", "node_modules/", "p2pkube/browser/.cache/"):
        assert not any(built in n for n in names), built
    assert not any(n.startswith(("tests/", "bench/", "harness/", "examples/")) for n in names)


def test_the_bundles_python_wheels_are_build_requirements_with_the_runtime_bounds() -> None:
    """build.py ships msgpack, cronsim and tzdata at the versions installed where it runs: in an
    isolated wheel build that is the build environment, which must hold them with the bounds
    an install of the wheel resolves."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    requires = pyproject["build-system"]["requires"]
    dependencies = pyproject["project"]["dependencies"]
    for name in bundle_build.WHEELS:
        runtime = [r for r in dependencies if Requirement(r).name == name]
        build = [r for r in requires if Requirement(r).name == name]
        assert runtime and build == runtime, (name, build, runtime)
    assert "pip" in requires  # build.py runs `python -m pip download`
    assert pyproject["project"]["license-files"] == ["LICENSE"]
