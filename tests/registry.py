"""A real OCI registry on loopback for the tests: Debian's ``docker-registry`` (the CNCF
distribution registry, .ci/run installs it), with its storage under a temporary directory,
and a client that pushes to it with plain HTTP calls of the distribution API (blob uploads
POST then PUT, manifest PUT), as ``wasm-to-oci``, ``oras`` or ``docker push`` do.

Three ways to let a client pull: anonymous; ``users`` (htpasswd: the registry asks for HTTP
Basic); ``TokenService`` (the registry's ``auth: token``: it answers 401 with a ``Bearer``
challenge naming this service's realm, which hands out JWTs signed with a key whose
self-signed certificate the registry trusts, as Docker Hub's auth.docker.io does).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import json
import secrets
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from p2pkube.devcluster import free_port

BINARY = "docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
WASM_CONFIG = "application/vnd.wasm.config.v0+json"
WASM_LAYER = "application/vnd.wasm.content.layer.v1+wasm"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """A registry token service (the distribution "token authentication" spec) on loopback:
    ``GET /token?service=&scope=`` with HTTP Basic credentials, or ``POST /token`` with the
    OAuth2 refresh-token grant (``identity_token``), answers with a JWT granting the scope
    asked for. Anonymous requests and wrong credentials get 401."""

    SERVICE = "p2pkube-test-registry"
    ISSUER = "p2pkube-test-tokens"

    def __init__(self, root: Path, users: dict[str, str], identity_token: str = "") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.users = dict(users)
        self.identity_token = identity_token
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        root.mkdir(parents=True, exist_ok=True)
        self.cert_path = root / "token-signer.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.issued: list[str] = []
        """How each token was asked for: "basic USER", "refresh", or "anonymous" (refused)."""
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token(self, scope: str, subject: str = "test") -> str:
        """A JWT (ES256, the signing certificate in ``x5c``) granting ``scope``
        (``repository:NAME:ACTIONS``; several separated by spaces)."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for item in scope.split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        claims = {
            "iss": self.ISSUER,
            "sub": subject,
            "aud": self.SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signed = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        der_signature = self.key.sign(signed.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der_signature)
        return f"{signed}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = service._basic_user(self.headers.get("Authorization", ""))
                if user is None:
                    service.issued.append("anonymous")
                    self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "who?"}]})
                    return
                service.issued.append(f"basic {user}")
                token = service.token(" ".join(query.get("scope", [])), user)
                self._answer(200, {"token": token, "expires_in": 300})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                grant = form.get("grant_type", [""])[0]
                refresh = form.get("refresh_token", [""])[0]
                if grant != "refresh_token" or not refresh or refresh != service.identity_token:
                    self._answer(401, {"error": "invalid_grant"})
                    return
                service.issued.append("refresh")
                token = service.token(" ".join(form.get("scope", [])), "refreshed")
                self._answer(200, {"access_token": token, "expires_in": 300})

        return Handler

    def _basic_user(self, header: str) -> str | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user if self.users.get(user) == password else None


class LocalRegistry:
    """``docker-registry serve`` on 127.0.0.1 at a free port; ``users`` (name -> password)
    turns on its htpasswd auth (HTTP Basic, bcrypt entries), ``tokens`` its token auth
    (Bearer, from that service); else pulls are anonymous."""

    def __init__(
        self, root: Path, users: dict[str, str] | None = None, tokens: TokenService | None = None
    ) -> None:
        self.root = root
        self.users = dict(users or {})
        self.tokens = tokens
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
        elif self.tokens is not None:
            config["auth"] = {
                "token": {
                    "realm": self.tokens.realm,
                    "service": self.tokens.SERVICE,
                    "issuer": self.tokens.ISSUER,
                    "rootcertbundle": str(self.tokens.cert_path),
                }
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
        elif auth and self.tokens is not None and "/v2/" in url:
            repo = url.split("/v2/", 1)[1].split("/blobs/")[0].split("/manifests/")[0]
            token = self.tokens.token(f"repository:{repo}:pull,push", "pusher")
            request.add_header("Authorization", f"Bearer {token}")
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

    def push_index(self, repo: str, tag: str, entries: list[tuple[str, str, str]]) -> str:
        """An OCI image index of (os, architecture, manifest digest) entries, the manifests
        pushed to ``repo`` already; its digest."""
        manifests = []
        for os_name, architecture, digest in entries:
            status, headers, body = self._call(
                "HEAD", f"/v2/{repo}/manifests/{digest}", headers={"Accept": OCI_MANIFEST}
            )
            assert status == 200, (status, body)
            manifests.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": int(headers["Content-Length"]),
                    "platform": {"os": os_name, "architecture": architecture},
                }
            )
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return self.push_manifest(repo, tag, index)

    def push_wasm(self, repo: str, tag: str, module: bytes) -> str:
        """A WebAssembly module as wasm-to-oci pushes it (one wasm layer); the manifest's digest."""
        return self.push_artifact(repo, tag, [(WASM_LAYER, module)])
