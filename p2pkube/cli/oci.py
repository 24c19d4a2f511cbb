"""WebAssembly modules from OCI registries, resolved by the CLI (nodes never reach out).

``image: REGISTRY/REPO:TAG`` or ``REGISTRY/REPO@sha256:<hex>`` names an OCI artifact holding
one WebAssembly module: an image manifest with a single layer of a WebAssembly media type,
as ``wasm-to-oci`` pushes it and Spin, wasmCloud and runwasi read it
(``application/vnd.wasm.content.layer.v1+wasm``), or as the CNCF TAG Runtime's Wasm OCI
artifact layout does (``application/wasm``, config ``application/vnd.wasm.config.v0+json``).
``apply -f`` resolves the reference (manifest, then the layer), downloads the layer with its
digest checked and publishes it as a blob, like a local ``.wasm`` file.

The client speaks the distribution API's pull side (``GET /v2/<repo>/manifests/<ref>``,
``GET /v2/<repo>/blobs/<digest>``) with the standard library: anonymous first; on a 401 it
follows the challenge, ``Bearer`` (a token from the realm, with the docker config's
credentials if any: basic, or an identity token through the OAuth2 refresh grant) or
``Basic``. Credentials come from a docker-style config (``--registry-config``,
``$DOCKER_CONFIG/config.json``, ``~/.docker/config.json``): ``auths[registry].auth``,
``identitytoken``, ``registrytoken``, and the ``credHelpers``/``credsStore`` helper programs.
Reference names follow docker's rules: no registry means Docker Hub, a single name there
means ``library/NAME``, no tag means ``latest``. Registries on loopback are spoken to over
plain HTTP, as docker allows; others over HTTPS unless listed in
``$P2PKUBE_INSECURE_REGISTRIES`` (comma-separated ``host[:port]``).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pkube.blobs.manifest import WASM_MAGIC, wasm_magic_problem
from p2pkube.cli.common import CliError
from p2pkube.cli.output import format_size
from p2pkube.model.images import IMAGE_FORMS

WASM_LAYER_TYPES = (
    # wasm-to-oci's layer: what Spin, wasmCloud and runwasi push and pull.
    "application/vnd.wasm.content.layer.v1+wasm",
    # The CNCF TAG Runtime Wasm OCI artifact layout (config application/vnd.wasm.config.v0+json).
    "application/wasm",
    # solo.io's Wasm image specification ("oci" variant).
    "application/vnd.module.wasm.content.layer.v1+wasm",
)
"""Layer media types that hold a WebAssembly binary as is."""
WASM_CONFIG_TYPES = (
    "application/vnd.wasm.config.v0+json",
    "application/vnd.wasm.config.v1+json",
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
CONTAINER_CONFIG_TYPES = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)
ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST))
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""Largest manifest read (the distribution spec lets registries refuse more than 4 MiB)."""
DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
"""The key ``docker login`` writes Docker Hub's credentials under."""
INSECURE_ENV = "P2PKUBE_INSECURE_REGISTRIES"
TIMEOUT = 60.0

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_DOMAIN_RE = re.compile(_DOMAIN)
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class OciError(CliError):
    """A reference that cannot be resolved or pulled; the message names it."""


# --- references ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A parsed image reference, with docker's defaults filled in."""

    given: str
    registry: str
    """As written (``ghcr.io``, ``localhost:5000``), or ``docker.io``."""
    repository: str
    tag: str | None
    digest: str | None

    @property
    def endpoint(self) -> str:
        """host[:port] that serves the registry's API."""
        return DOCKER_HUB_ENDPOINT if self.registry == DOCKER_HUB else self.registry

    @property
    def pinned(self) -> str:
        """What the manifest is fetched by: the digest when given, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def source_name(self) -> str:
        """The blob's source annotation: the repository's last part and its tag or digest."""
        last = self.repository.rsplit("/", 1)[-1]
        return f"{last}@{self.digest}" if self.digest else f"{last}:{self.tag or 'latest'}"

    def __str__(self) -> str:
        return self.given


def parse_reference(text: str) -> Reference:
    """``[REGISTRY/]REPO[:TAG][@sha256:HEX]`` as docker reads it; ValueError says why not."""
    rest, at, digest = text.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise ValueError(f"{digest!r} after '@' is not a digest sha256:<64 lower-case hex digits>")
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"{tag!r} is not a valid tag")
    first, sep, remainder = rest.partition("/")
    domain = first if sep and _is_registry(first) else None
    path = remainder if domain is not None else rest
    if domain is not None and not _DOMAIN_RE.fullmatch(domain):
        raise ValueError(f"{domain!r} is not a valid registry host[:port]")
    if not _PATH.fullmatch(path):
        raise ValueError(
            "not a valid reference: [REGISTRY/]REPOSITORY[:TAG][@sha256:<hex>], the repository "
            "in lower case"
        )
    registry = domain or DOCKER_HUB
    if registry in ("index.docker.io", DOCKER_HUB_ENDPOINT):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if len(path) > 255:
        raise ValueError("the repository name is longer than 255 characters")
    return Reference(text, registry, path, tag or (None if at else "latest"), digest or None)


def _is_registry(domain: str) -> bool:
    return "." in domain or ":" in domain or domain == "localhost" or domain.startswith("[")


def looks_like_path(image: str, base: Path) -> bool:
    """Whether ``image`` names a local file rather than a registry reference: it ends in
    ``.wasm``, starts like a path (``/``, ``./``, ``../``, ``~``), or is a file next to the
    manifest."""
    if image.endswith(".wasm") or image.startswith(("/", "./", "../", "~")):
        return True
    try:
        return (base / image).is_file()
    except OSError:
        return False


# --- credentials -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    """An OAuth2 refresh token (``docker login`` to an OAuth2 registry writes one)."""
    registry_token: str = ""
    """A bearer token sent to the registry as is."""

    @property
    def basic(self) -> str | None:
        if not self.username and not self.password:
            return None
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def docker_config_path(explicit: Path | None = None) -> Path:
    """The docker config the CLI reads: ``--registry-config``, ``$DOCKER_CONFIG/config.json``
    or ``~/.docker/config.json``."""
    if explicit is not None:
        return explicit
    if directory := os.environ.get("DOCKER_CONFIG"):
        return Path(directory) / "config.json"
    return Path.home() / ".docker" / "config.json"


def _config_host(key: str) -> str:
    """The registry a docker config key is about (``https://ghcr.io/v2/`` -> ``ghcr.io``)."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return DOCKER_HUB if host in ("index.docker.io", DOCKER_HUB_ENDPOINT) else host


@dataclass
class DockerConfig:
    """Registry credentials from a docker-style ``config.json``."""

    path: Path | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, explicit: Path | None = None) -> DockerConfig:
        path = docker_config_path(explicit)
        try:
            text = path.read_text()
        except FileNotFoundError:
            if explicit is not None:
                raise CliError(f"--registry-config: no such file {path}") from None
            return cls(None, {})
        except OSError as exc:
            raise CliError(f"cannot read the docker config {path}: {exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CliError(f"the docker config {path} is not JSON: {exc}") from None
        return cls(path, data if isinstance(data, dict) else {})

    def credentials(self, registry: str) -> Credentials | None:
        """Credentials for ``registry`` (as a Reference names it), or None."""
        helpers = self.data.get("credHelpers")
        helper = None
        if isinstance(helpers, dict):
            helper = next((v for k, v in helpers.items() if _config_host(str(k)) == registry), None)
        auths = self.data.get("auths")
        entry = None
        if isinstance(auths, dict):
            for key, value in auths.items():
                if _config_host(str(key)) == registry and isinstance(value, dict) and value:
                    entry = value
                    break
        if entry is not None:
            return self._from_entry(registry, entry)
        store = helper or self.data.get("credsStore")
        if isinstance(store, str) and store:
            return self._from_helper(registry, store)
        return None

    def _from_entry(self, registry: str, entry: dict[str, Any]) -> Credentials:
        username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(str(entry["auth"]), validate=False).decode()
            except (ValueError, UnicodeDecodeError):
                raise CliError(
                    f"the docker config {self.path}: auths[{registry}].auth is not "
                    "base64 of user:password"
                ) from None
            username, _, password = decoded.partition(":")
        return Credentials(
            username,
            password,
            identity_token=str(entry.get("identitytoken") or ""),
            registry_token=str(entry.get("registrytoken") or ""),
        )

    def _from_helper(self, registry: str, name: str) -> Credentials | None:
        """``docker-credential-NAME get``, as docker runs a credential helper."""
        program = f"docker-credential-{name}"
        if shutil.which(program) is None:
            raise CliError(
                f"the docker config {self.path} names the credential helper {program}, which is "
                "not on PATH"
            )
        server = DOCKER_HUB_CONFIG_KEY if registry == DOCKER_HUB else registry
        try:
            done = subprocess.run(
                [program, "get"], input=server, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CliError(f"{program} get failed: {exc}") from None
        if done.returncode != 0:
            if "credentials not found" in (done.stdout + done.stderr).lower():
                return None
            raise CliError(f"{program} get failed: {(done.stderr or done.stdout).strip()}")
        try:
            answer = json.loads(done.stdout)
            username, secret = str(answer.get("Username") or ""), str(answer.get("Secret") or "")
        except (ValueError, AttributeError):
            raise CliError(f"{program} get did not answer JSON") from None
        if username == "<token>":
            return Credentials(identity_token=secret)
        return Credentials(username, secret)


# --- the registry client ---------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """The module layer a reference names."""

    reference: Reference
    digest: str
    size: int
    media_type: str
    manifest_digest: str


def _host(endpoint: str) -> str:
    """host[:port] -> host (``[::1]:5000`` -> ``::1``)."""
    if endpoint.startswith("["):
        return endpoint[1:].split("]", 1)[0]
    return endpoint.rsplit(":", 1)[0] if ":" in endpoint else endpoint


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _insecure_registries() -> set[str]:
    return {h.strip() for h in os.environ.get(INSECURE_ENV, "").split(",") if h.strip()}


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {realm:..., service:...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    for k, v in re.findall(r'(\w+)=([^",\s]+)', rest):
        params.setdefault(k.lower(), v)
    return scheme.lower(), params


def _registry_error(body: bytes) -> str:
    """The distribution API's ``{"errors": [{code, message, detail}]}`` as one line."""
    try:
        errors = json.loads(body).get("errors") or []
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errors]
        return "; ".join(parts)
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace").strip()


class Registry:
    """Resolves references and downloads module layers, keeping tokens per repository and
    what each reference resolved to (one ``apply`` asks each registry once per reference)."""

    def __init__(self, config_path: Path | None = None, timeout: float = TIMEOUT) -> None:
        self.config_path = config_path
        self._config: DockerConfig | None = None
        self.timeout = timeout
        self._auth: dict[tuple[str, str], str] = {}
        self._resolved: dict[str, Resolved] = {}
        self._insecure = _insecure_registries()
        self._credentials: dict[str, Credentials | None] = {}

    def scheme(self, endpoint: str) -> str:
        """http for loopback and ``$P2PKUBE_INSECURE_REGISTRIES`` (host or host:port)."""
        host = _host(endpoint)
        insecure = endpoint in self._insecure or host in self._insecure
        return "http" if insecure or _loopback(host) else "https"

    @property
    def config(self) -> DockerConfig:
        """The docker config, read when a registry first asks for credentials."""
        if self._config is None:
            self._config = DockerConfig.load(self.config_path)
        return self._config

    def _creds(self, registry: str) -> Credentials | None:
        if registry not in self._credentials:
            self._credentials[registry] = self.config.credentials(registry)
        return self._credentials[registry]

    # -- HTTP ----------------------------------------------------------------------------------
    def _send(
        self, url: str, headers: dict[str, str], auth: str | None, data: bytes | None = None
    ) -> Any:
        """One request; the response (an HTTPError is a response too). Authorization is not
        carried over a redirect (a blob's storage URL is often another host's, signed)."""
        request = urllib.request.Request(url, data=data, headers=headers)
        if auth:
            request.add_unredirected_header("Authorization", auth)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            return exc

    def _open(self, ref: Reference, path: str, accept: str) -> Any:
        """GET ``/v2/<repo>/<path>``, authenticating when challenged; the response."""
        url = f"{self.scheme(ref.endpoint)}://{ref.endpoint}/v2/{ref.repository}/{path}"
        key = (ref.endpoint, ref.repository)
        headers = {"Accept": accept, "User-Agent": "p2pkube"}
        try:
            response = self._send(url, headers, self._auth.get(key))
            if response.status == 401:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                self._auth[key] = self._authorize(ref, challenge)
                response = self._send(url, headers, self._auth[key])
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError):  # urllib wraps it in a URLError
                raise OciError(
                    f"{ref}: TLS with {ref.endpoint} failed ({reason}); for a registry that "
                    f"speaks plain HTTP, list it in ${INSECURE_ENV}"
                ) from None
            raise OciError(f"{ref}: cannot reach the registry {ref.endpoint}: {reason}") from None
        if response.status in (401, 403):
            detail = _registry_error(response.read(4096))
            creds = self._creds(ref.registry)
            denied = response.status == 403
            hint = (
                f"the credentials for {ref.registry} in {self._config_name()} "
                + ("do not allow pulling it" if denied else "were refused")
                if creds is not None
                else f"no credentials for {ref.registry} in {self._config_name()} "
                "(docker login, or --registry-config)"
            )
            what = "denied" if denied else "unauthorized"
            raise OciError(f"{ref}: {what} ({detail or response.status}): {hint}")
        return response

    def _authorize(self, ref: Reference, header: str) -> str:
        """The Authorization answering a 401's challenge."""
        scheme, params = _challenge(header)
        creds = self._creds(ref.registry)
        if scheme == "basic":
            if creds is None or creds.basic is None:
                raise OciError(
                    f"{ref}: the registry {ref.registry} asks for a user name and password and "
                    f"{self._config_name()} has none for it (docker login, or --registry-config)"
                )
            return creds.basic
        if scheme != "bearer":
            raise OciError(
                f"{ref}: the registry asks for {scheme or 'an unknown'} authentication, "
                "which p2pkube does not support (Basic and Bearer tokens only)"
            )
        if creds is not None and creds.registry_token:
            return f"Bearer {creds.registry_token}"
        realm = params.get("realm")
        if not realm:
            raise OciError(f"{ref}: the registry's Bearer challenge names no realm: {header!r}")
        scope = params.get("scope") or f"repository:{ref.repository}:pull"
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        try:
            if creds is not None and creds.identity_token:
                form = {
                    **query,
                    "grant_type": "refresh_token",
                    "client_id": "p2pkube",
                    "refresh_token": creds.identity_token,
                }
                response = self._send(
                    realm,
                    {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "p2pkube"},
                    None,
                    urllib.parse.urlencode(form).encode(),
                )
            else:
                sep = "&" if "?" in realm else "?"
                response = self._send(
                    f"{realm}{sep}{urllib.parse.urlencode(query)}",
                    {"User-Agent": "p2pkube"},
                    creds.basic if creds is not None else None,
                )
            with response:
                body = response.read(1 << 20)
                status = response.status
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OciError(f"{ref}: cannot reach the token service {realm}: {reason}") from None
        if status != 200:
            who = (
                f"with the credentials of {self._config_name()}"
                if creds is not None
                else f"anonymously: no credentials for {ref.registry} in {self._config_name()} "
                "(docker login, or --registry-config)"
            )
            raise OciError(
                f"{ref}: the token service {realm} refused a pull token "
                f"({status}: {_registry_error(body) or 'no reason given'}) {who}"
            )
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise OciError(f"{ref}: the token service {realm} answered no token")
        return f"Bearer {token}"

    def _config_name(self) -> str:
        return str(self.config.path or docker_config_path())

    # -- manifests -----------------------------------------------------------------------------
    def _manifest(self, ref: Reference, pinned: str) -> tuple[dict[str, Any], str, str]:
        """(the manifest, its media type, its digest) for a tag or digest of ``ref``."""
        with self._open(ref, f"manifests/{pinned}", ACCEPT) as response:
            body = response.read(MAX_MANIFEST_BYTES + 1)
            status = response.status
            content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        if status == 404:
            what = f"tag {pinned!r}" if not pinned.startswith("sha256:") else f"manifest {pinned}"
            raise OciError(
                f"{ref}: not found: no {what} in {ref.registry}/{ref.repository} "
                f"({_registry_error(body) or 404})"
            )
        if status != 200:
            raise OciError(f"{ref}: the registry answered {status}: {_registry_error(body)}")
        if len(body) > MAX_MANIFEST_BYTES:
            raise OciError(f"{ref}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if pinned.startswith("sha256:") and digest != pinned:
            raise OciError(f"{ref}: the registry sent a manifest whose digest is {digest}")
        try:
            manifest = json.loads(body)
        except ValueError:
            raise OciError(f"{ref}: the registry sent a manifest that is not JSON") from None
        if not isinstance(manifest, dict):
            raise OciError(f"{ref}: the registry sent a manifest that is not a JSON object")
        media_type = str(manifest.get("mediaType") or content_type)
        return manifest, media_type, digest

    def resolve(self, ref: Reference) -> Resolved:
        """The one WebAssembly layer ``ref`` names; OciError saying what is wrong otherwise."""
        if ref.given in self._resolved:
            return self._resolved[ref.given]
        manifest, media_type, digest = self._manifest(ref, ref.pinned)
        if media_type in INDEX_TYPES or "manifests" in manifest:
            entries = [m for m in manifest.get("manifests") or [] if isinstance(m, dict)]
            chosen = [m for m in entries if _is_wasm_platform(m.get("platform"))]
            if not chosen:
                platforms = sorted({_platform(m.get("platform")) for m in entries})
                raise OciError(
                    f"{ref}: a multi-platform image for {', '.join(platforms) or 'no platform'}, "
                    f"not a WebAssembly module (no wasi/wasm entry). {_accepted()}"
                )
            manifest, media_type, digest = self._manifest(ref, str(chosen[0].get("digest")))
        layers = [layer for layer in manifest.get("layers") or [] if isinstance(layer, dict)]
        wasm = [layer for layer in layers if layer.get("mediaType") in WASM_LAYER_TYPES]
        if len(wasm) != 1:
            config = manifest.get("config") or {}
            config_type = config.get("mediaType") if isinstance(config, dict) else None
            kinds = sorted({str(layer.get("mediaType")) for layer in layers}) or ["none"]
            if not wasm:
                what = (
                    "a container image, not a WebAssembly module"
                    if config_type in CONTAINER_CONFIG_TYPES
                    else "a WebAssembly component (WASI 0.2), not a core module"
                    if any("component" in kind for kind in kinds)
                    else "not a WebAssembly artifact"
                )
                raise OciError(
                    f"{ref}: {what} (config {config_type}, layers {', '.join(kinds)}). "
                    f"{_accepted()}"
                )
            raise OciError(
                f"{ref}: {len(wasm)} WebAssembly layers (an application of several components, "
                "as Spin pushes one?); a p2pkube container runs one module: push that module "
                f"alone. {_accepted()}"
            )
        layer = wasm[0]
        layer_digest, size = str(layer.get("digest")), layer.get("size")
        if not _DIGEST.fullmatch(layer_digest):
            raise OciError(f"{ref}: the WebAssembly layer's digest {layer_digest!r} is not sha256")
        if not isinstance(size, int) or size < 0:
            raise OciError(f"{ref}: the WebAssembly layer has no size")
        resolved = Resolved(ref, layer_digest, size, str(layer.get("mediaType")), digest)
        self._resolved[ref.given] = resolved
        return resolved

    # -- blobs ---------------------------------------------------------------------------------
    def download(
        self, resolved: Resolved, target: Path, limit: int, progress: Callable[[int], None]
    ) -> None:
        """The module layer into ``target``, its size and digest checked, and that it is a
        WebAssembly binary; ``progress(bytes)`` as it comes."""
        ref = resolved.reference
        if resolved.size > limit:
            raise OciError(
                f"{ref}: the module is {format_size(resolved.size, ' ')}, over the "
                f"{format_size(limit, ' ')} apply downloads"
            )
        hasher = hashlib.sha256()
        copied = 0
        try:
            with (
                self._open(ref, f"blobs/{resolved.digest}", "*/*") as response,
                target.open("wb") as out,
            ):
                if response.status != 200:
                    raise OciError(
                        f"{ref}: the registry answered {response.status} for the layer "
                        f"{resolved.digest}: {_registry_error(response.read(4096))}"
                    )
                while chunk := response.read(1 << 20):
                    copied += len(chunk)
                    if copied > resolved.size:
                        raise OciError(f"{ref}: the layer is larger than its manifest says")
                    hasher.update(chunk)
                    out.write(chunk)
                    progress(copied)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OciError(f"{ref}: downloading the layer failed: {reason}") from None
        got = "sha256:" + hasher.hexdigest()
        if copied != resolved.size or got != resolved.digest:
            raise OciError(
                f"{ref}: the layer downloaded ({copied} bytes, {got}) is not the one the "
                f"manifest names ({resolved.size} bytes, {resolved.digest})"
            )
        with target.open("rb") as fh:
            problem = module_problem(fh.read(len(WASM_MAGIC) + 4))
        if problem:
            raise OciError(f"{ref}: the layer is {problem}")


CORE_VERSION = b"\x01\x00\x00\x00"
"""The version field of a core WebAssembly module; a component has another (layer 1)."""


def module_problem(head: bytes) -> str | None:
    """Why a file starting with ``head`` (its first 8 bytes, or all of it) is not a module
    p2pkube runs: not WebAssembly, or a component rather than a core module."""
    problem = wasm_magic_problem(head[: len(WASM_MAGIC)], complete=True)
    if problem is None and len(head) >= 8 and head[4:8] != CORE_VERSION:
        return (
            "a WebAssembly component (the component model, WASI 0.2), not a core module: p2pkube "
            "runs core modules that are WASI preview 1 commands"
        )
    return problem


def _is_wasm_platform(platform: Any) -> bool:
    return isinstance(platform, dict) and (
        platform.get("os") == "wasi" or platform.get("architecture") in ("wasm", "wasm32")
    )


def _platform(platform: Any) -> str:
    if not isinstance(platform, dict):
        return "unknown"
    return f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"


def _accepted() -> str:
    return (
        f"An image is {IMAGE_FORMS}; an OCI artifact must have one layer of "
        f"{WASM_LAYER_TYPES[0]} (wasm-to-oci) or {WASM_LAYER_TYPES[1]}"
    )
