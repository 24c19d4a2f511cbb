"""A real OCI registry on loopback for the tests: Debian's ``docker-registry`` (the CNCF
distribution registry, .ci/run installs it), with its storage under a temporary directory,
and a client that pushes to it with plain HTTP calls of the distribution API (blob uploads
POST then PUT, manifest PUT), as ``wasm-to-oci``, ``oras`` or ``docker push`` do."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from p2pkube.devcluster import free_port

BINARY = "docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
WASM_CONFIG = "application/vnd.wasm.config.v0+json"
WASM_LAYER = "application/vnd.wasm.content.layer.v1+wasm"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class LocalRegistry:
    """``docker-registry serve`` on 127.0.0.1 at a free port; ``users`` (name -> password)
    turns on its htpasswd auth (HTTP Basic, bcrypt entries), else pulls are anonymous."""

    def __init__(self, root: Path, users: dict[str, str] | None = None) -> None:
        self.root = root
        self.users = dict(users or {})
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "registry.log"

    # -- the process ---------------------------------------------------------------------------
    def start(self, timeout: float = 15) -> None:
        binary = shutil.which(BINARY)
        if binary is None:
            raise RuntimeError(f"{BINARY} is not installed (apt-get install docker-registry)")
        self.root.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "storage")}},
            "http": {"addr": self.host, "secret": "p2pkube-test"},
        }
        if self.users:
            import bcrypt

            lines = [
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}"
                for user, password in self.users.items()
            ]
            (self.root / "htpasswd").write_text("\n".join(lines) + "\n")
            config["auth"] = {
                "htpasswd": {"realm": "p2pkube-test", "path": str(self.root / "htpasswd")}
            }
        (self.root / "config.yml").write_text(yaml.safe_dump(config))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, "serve", str(self.root / "config.yml")], stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{BINARY} exited: {self.log.read_text()[-2000:]}")
            try:
                status = self._call("GET", "/v2/", auth=False)[0]
                if status in (200, 401):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{BINARY} did not answer on {self.host} in {timeout}s")
            time.sleep(0.05)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- pushing -------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        auth: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        url = path if path.startswith("http") else f"http://{self.host}{path}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if auth and self.users:
            user, password = next(iter(self.users.items()))
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def push_blob(self, repo: str, data: bytes) -> str:
        """A monolithic upload (POST, then PUT with the digest); the blob's digest."""
        digest = sha256(data)
        status, headers, body = self._call("POST", f"/v2/{repo}/blobs/uploads/", b"")
        assert status == 202, (status, body)
        location = headers["Location"]
        if location.startswith("/"):
            location = f"http://{self.host}{location}"
        sep = "&" if "?" in location else "?"
        status, _, body = self._call(
            "PUT",
            f"{location}{sep}digest={digest}",
            data,
            {"Content-Type": "application/octet-stream"},
        )
        assert status == 201, (status, body)
        return digest

    def push_manifest(self, repo: str, reference: str, manifest: dict[str, Any]) -> str:
        """PUT a manifest under a tag (or its digest); the manifest's digest."""
        data = json.dumps(manifest).encode()
        media_type = str(manifest.get("mediaType") or OCI_MANIFEST)
        status, headers, body = self._call(
            "PUT", f"/v2/{repo}/manifests/{reference}", data, {"Content-Type": media_type}
        )
        assert status == 201, (status, body)
        assert headers.get("Docker-Content-Digest") in (None, sha256(data))
        return sha256(data)

    def push_artifact(
        self,
        repo: str,
        tag: str,
        layers: list[tuple[str, bytes]],
        config: tuple[str, bytes] = (WASM_CONFIG, b"{}"),
    ) -> str:
        """An OCI image manifest with this config and these (media type, bytes) layers, as
        wasm-to-oci writes one; the manifest's digest."""
        descriptors = []
        for media_type, data in [config, *layers]:
            descriptors.append(
                {"mediaType": media_type, "digest": self.push_blob(repo, data), "size": len(data)}
            )
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptors[0],
            "layers": descriptors[1:],
        }
        return self.push_manifest(repo, tag, manifest)

    def push_wasm(self, repo: str, tag: str, module: bytes) -> str:
        """A WebAssembly module as wasm-to-oci pushes it (one wasm layer); the manifest's digest."""
        return self.push_artifact(repo, tag, [(WASM_LAYER, module)])
