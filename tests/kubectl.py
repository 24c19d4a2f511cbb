"""Running the real kubectl in tests: with an agent's kubeconfig and a cache dir of its own
(kubectl caches discovery and OpenAPI documents per server; a fresh dir per test keeps one
test's server from answering for another's)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from p2pkube.api.kube.tls import certificate_pem, server_context
from p2pkube.cli.kubeconfig import kubeconfig_document

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
OLDEST_KUBECTL = (1, 28)
"""The oldest kubectl these tests expect (``wait --for=jsonpath``, aggregated discovery,
port-forward over WebSocket came later than Debian's kubectl 1.20)."""


def _kubectl_version() -> tuple[int, int] | None:
    if not Path(KUBECTL).exists():
        return None
    result = subprocess.run(
        [KUBECTL, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    try:
        client = json.loads(result.stdout)["clientVersion"]
        return int(client["major"]), int(client["minor"].rstrip("+"))
    except (ValueError, KeyError, TypeError):
        return None


_VERSION = _kubectl_version()
_MISSING = _VERSION is None or _VERSION < OLDEST_KUBECTL
_WHY = (
    f"needs kubectl >= {'.'.join(map(str, OLDEST_KUBECTL))} at {KUBECTL} (found "
    f"{'none' if _VERSION is None else '.'.join(map(str, _VERSION))}); the machine image has v1.32"
)
requires_kubectl = pytest.mark.skipif(_MISSING, reason=_WHY)
"""Mark a test (or a module, as ``pytestmark``) that runs kubectl."""


def require_kubectl() -> None:
    """Skip the calling test or fixture, saying why, unless a usable kubectl is installed."""
    if _MISSING:
        pytest.skip(_WHY)


class Kubectl:
    """kubectl for one kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.cache = kubeconfig.parent / "kube-cache"

    def argv(self, *args: str) -> list[str]:
        """kubectl ARGS with the kubeconfig and the cache (for Popen)."""
        return [
            KUBECTL,
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.cache),
            *args,
        ]

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )

    def ok(self, *args: str, **kwargs: Any) -> str:
        """kubectl's stdout; the test fails (with both outputs) unless it exits 0."""
        result = self.run(*args, **kwargs)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json"))


@contextlib.asynccontextmanager
async def https_api(
    app: web.Application, directory: Path, token: str
) -> AsyncIterator[tuple[str, Path]]:
    """``app`` served as an agent serves its Kubernetes API (HTTPS on 127.0.0.1, the
    certificate ``api.kube.tls`` makes, here in ``directory``): its URL and a kubeconfig for
    it with ``token``. For tests of one part of the API with a stand-in server around it."""
    context = await asyncio.to_thread(server_context, directory)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        url = f"https://127.0.0.1:{runner.addresses[0][1]}"
        kubeconfig = directory / "kubeconfig"
        document = kubeconfig_document(url, certificate_pem(directory), token, "test")
        kubeconfig.write_text(yaml.safe_dump(document))
        yield url, kubeconfig
    finally:
        await runner.cleanup()
