"""Modules from OCI registries: ``image: REGISTRY/REPO:TAG`` (or ``@sha256:``) resolved by
``p2pkube apply -f`` against a real registry, Debian's ``docker-registry`` started on loopback
(tests/registry.py), with WebAssembly artifacts this module pushes itself, the way
wasm-to-oci lays them out. The agent is a real process; nodes never talk to the registry
(only the CLI knows its address). Checked as a user sees it: the ``blob/... published`` line,
the pod's logs and phase, the errors of ``apply`` and that a refused apply wrote nothing."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from p2pkube.devcluster import LocalCluster, free_port, wait_until
from tests.clusters import module_cluster, wait_all_ready
from tests.registry import WASM_LAYER, LocalRegistry, TokenService, sha256

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "examples" / "build"
USER, PASSWORD = "alice", "wonderland-7"
IDENTITY_TOKEN = "refresh-token-of-alice"
API_VERSION = "p2pkube.io/v1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator:
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    with module_cluster(tmp_path_factory.mktemp("oci") / "cluster", request) as local:
        local.start_signaling()
        local.start_agent("a")
        wait_all_ready(local, ["a"])
        yield local


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """An anonymous registry holding demo/hello:v1 (hello.wasm as wasm-to-oci pushes it)."""
    local = LocalRegistry(tmp_path_factory.mktemp("registry"))
    try:
        local.start()
        yield local
    finally:
        local.close()


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A registry that lets only alice pull (htpasswd: HTTP Basic with bcrypt entries)."""
    local = LocalRegistry(tmp_path_factory.mktemp("private"), users={USER: PASSWORD})
    try:
        local.start()
        yield local
    finally:
        local.close()


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenService]:
    """The token service of ``bearer``: alice's basic credentials or an identity token."""
    service = TokenService(
        tmp_path_factory.mktemp("tokens"), {USER: PASSWORD}, identity_token=IDENTITY_TOKEN
    )
    service.start()
    try:
        yield service
    finally:
        service.close()


@pytest.fixture(scope="module")
def bearer(tmp_path_factory: pytest.TempPathFactory, tokens: TokenService) -> Iterator:
    """A registry with token auth (as Docker Hub, ghcr.io...): 401 with a Bearer challenge."""
    local = LocalRegistry(tmp_path_factory.mktemp("bearer"), tokens=tokens)
    try:
        local.start()
        yield local
    finally:
        local.close()


def pod(name: str, image: str, *args: str) -> dict[str, Any]:
    """A Pod with one container (``restartPolicy: Never``)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image, "args": list(args)}],
        },
    }


def manifest(tmp_path: Path, *objects: dict[str, Any]) -> str:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    return str(path)


def get(cluster: LocalCluster, kind: str, name: str) -> dict[str, Any] | None:
    found = cluster.cli("a", "get", kind, name, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def succeeded(cluster: LocalCluster, name: str) -> None:
    wait_until(
        lambda: ((get(cluster, "pod", name) or {}).get("status") or {}).get("phase") == "Succeeded",
        30,
        what=f"pod {name} Succeeded",
    )


def blobs(cluster: LocalCluster) -> list[str]:
    return cluster.cli("a", "get", "blobs", "-o", "name").stdout.split()


def docker_config(directory: Path, host: str, user: str, password: str) -> Path:
    """A docker config as ``docker login HOST`` writes it."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return write_config(directory, {"auths": {host: {"auth": auth}}})


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_a_pod_runs_a_module_pulled_by_tag_then_by_digest(
    cluster: LocalCluster, registry: LocalRegistry, tmp_path: Path
) -> None:
    module = (BUILD / "hello.wasm").read_bytes()
    manifest_digest = registry.push_wasm("demo/hello", "v1", module)
    layer = sha256(module)
    ref = f"{registry.host}/demo/hello:v1"

    applied = cluster.cli("a", "apply", "-f", manifest(tmp_path, pod("hello", ref, "oci")))
    assert applied.stdout.strip() == "pod/hello created"
    assert f"blob/{layer} published ({ref})" in applied.stderr.splitlines()
    succeeded(cluster, "hello")
    logs = cluster.cli("a", "logs", "hello").stdout.splitlines()
    assert logs[:2] == ["hello from main", "argv[1] = oci"], logs
    stored = get(cluster, "pod", "hello")
    assert stored is not None
    assert stored["spec"]["containers"][0]["image"] == layer  # the object names the blob
    source = get(cluster, "blob", layer)
    assert source is not None
    assert source["metadata"]["annotations"]["p2pkube.io/source"] == "hello:v1"

    # By digest, in a Job: the cluster holds the layer already, so nothing is downloaded.
    pinned = f"{registry.host}/demo/hello@{manifest_digest}"
    job = {
        "apiVersion": API_VERSION,
        "kind": "Job",
        "metadata": {"name": "pinned"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": pinned, "args": ["pinned"]}],
                }
            }
        },
    }
    applied = cluster.cli("a", "apply", "-f", manifest(tmp_path, job))
    assert applied.stdout.strip() == "job/pinned created"
    assert applied.stderr.splitlines() == [f"blob/{layer} unchanged ({pinned})"]
    wait_until(
        lambda: ((get(cluster, "job", "pinned") or {}).get("status") or {}).get("succeeded") == 1,
        30,
        what="job pinned to succeed",
    )


def test_publish_takes_a_reference_too(cluster: LocalCluster, registry: LocalRegistry) -> None:
    module = (BUILD / "crash.wasm").read_bytes()
    registry.push_wasm("demo/crash", "latest", module)
    published = cluster.cli("a", "publish", f"{registry.host}/demo/crash")  # tag: latest
    size = f"{len(module) / 1000:.3g} kB"
    assert published.stdout.strip() == f"blob/{sha256(module)} published ({size}, 1 chunk)"
    source = get(cluster, "blob", sha256(module))
    assert source is not None
    assert source["metadata"]["annotations"]["p2pkube.io/source"] == "crash:latest"
    # An image index: its wasi/wasm entry is the module, whatever else it lists.
    linux = registry.push_artifact(
        "demo/multi",
        "linux",
        [("application/vnd.oci.image.layer.v1.tar+gzip", b"rootfs")],
        config=("application/vnd.oci.image.config.v1+json", b'{"os": "linux"}'),
    )
    wasm = registry.push_wasm("demo/multi", "wasm", (BUILD / "loop.wasm").read_bytes())
    registry.push_index("demo/multi", "1", [("linux", "amd64", linux), ("wasi", "wasm", wasm)])
    indexed = cluster.cli("a", "publish", f"{registry.host}/demo/multi:1", "-o", "name")
    assert indexed.stdout.strip() == f"blob/{sha256((BUILD / 'loop.wasm').read_bytes())}"
    missing = cluster.cli("a", "publish", "crash.wasm", check=False)
    assert missing.returncode == 1 and "no such file crash.wasm" in missing.stderr


def test_a_private_registry_takes_the_credentials_of_a_docker_config(
    cluster: LocalCluster, private: LocalRegistry, tmp_path: Path
) -> None:
    module = (BUILD / "ticker.wasm").read_bytes()
    private.push_wasm("team/ticker", "1.0", module)
    ref = f"{private.host}/team/ticker:1.0"
    path = manifest(tmp_path, pod("ticker", ref, "0.01", "2"))
    before = blobs(cluster)

    # Anonymous: refused, nothing applied, and the error says where credentials come from.
    denied = cluster.cli("a", "apply", "-f", path, check=False)
    assert denied.returncode == 1
    assert "1 problem, nothing was applied" in denied.stderr
    assert f"{ref}: the registry {private.host} asks for a user name and password" in (
        denied.stderr
    )
    assert "docker login, or --registry-config" in denied.stderr
    # A wrong password from --registry-config.
    wrong = docker_config(tmp_path / "wrong", private.host, USER, "guess")
    refused = cluster.cli("a", "apply", "-f", path, "--registry-config", str(wrong), check=False)
    assert refused.returncode == 1
    assert f"{ref}: unauthorized (UNAUTHORIZED: authentication required): the credentials for " in (
        refused.stderr
    )
    assert f"{private.host} in {wrong} were refused" in refused.stderr
    assert get(cluster, "pod", "ticker") is None and blobs(cluster) == before

    # The right ones, from $DOCKER_CONFIG as docker reads it.
    good = docker_config(tmp_path / "docker", private.host, USER, PASSWORD)
    cluster.env["DOCKER_CONFIG"] = str(good.parent)
    try:
        applied = cluster.cli("a", "apply", "-f", path)
    finally:
        del cluster.env["DOCKER_CONFIG"]
    assert applied.stdout.strip() == "pod/ticker created"
    assert f"blob/{sha256(module)} published ({ref})" in applied.stderr
    succeeded(cluster, "ticker")
    assert cluster.cli("a", "logs", "ticker").stdout.splitlines() == ["tick 1", "tick 2"]


def test_what_is_not_a_runnable_module_is_refused_before_anything_is_written(
    cluster: LocalCluster, registry: LocalRegistry, tmp_path: Path
) -> None:
    # A Linux container image: an OCI image config and a tar+gzip layer.
    registry.push_artifact(
        "library/nginx",
        "1.27",
        [("application/vnd.oci.image.layer.v1.tar+gzip", b"x")],
        config=("application/vnd.oci.image.config.v1+json", b'{"os": "linux"}'),
    )
    # Two wasm layers (an application of several components, as Spin pushes one).
    registry.push_artifact(
        "demo/app", "1", [(WASM_LAYER, b"\0asm\1\0\0\0"), (WASM_LAYER, b"\0asm\1\0\0\0\0")]
    )
    # ... and a multi-platform image of Linux builds only.
    amd64 = registry.push_artifact(
        "library/nginx",
        "amd64",
        [("application/vnd.oci.image.layer.v1.tar+gzip", b"y")],
        config=("application/vnd.oci.image.config.v1+json", b'{"os": "linux"}'),
    )
    registry.push_index("library/nginx", "multi", [("linux", "amd64", amd64)])
    objects = [
        pod("linux", f"{registry.host}/library/nginx:1.27"),
        pod("multi", f"{registry.host}/library/nginx:multi"),
        pod("unknown-tag", f"{registry.host}/demo/hello:no-such-tag"),
        pod("spin", f"{registry.host}/demo/app:1"),
        pod("hello-ok", str(BUILD / "hello.wasm")),
    ]
    before = blobs(cluster)
    result = cluster.cli("a", "apply", "-f", manifest(tmp_path, *objects), check=False)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error: 4 problems, nothing was applied:", lines
    linux, multi, unknown, spin = lines[1:]
    assert linux.startswith(
        f"* {tmp_path}/manifest.yaml (document 1, Pod linux): spec.containers[0].image: "
        f"{registry.host}/library/nginx:1.27: a container image, not a WebAssembly module "
        "(config application/vnd.oci.image.config.v1+json, layers "
        "application/vnd.oci.image.layer.v1.tar+gzip)"
    ), linux
    assert "An image is a module digest (sha256:<64 hex digits>), a .wasm path, an http(s) URL" in (
        linux
    )
    assert "application/vnd.wasm.content.layer.v1+wasm" in linux
    assert (
        f"{registry.host}/library/nginx:multi: a multi-platform image for linux/amd64, not a "
        "WebAssembly module (no wasi/wasm entry). An image is"
    ) in multi
    assert unknown.endswith(
        f"{registry.host}/demo/hello:no-such-tag: not found: no tag 'no-such-tag' in "
        f"{registry.host}/demo/hello (MANIFEST_UNKNOWN: manifest unknown)"
    ), unknown
    assert "2 WebAssembly layers" in spin and "push that module alone" in spin
    for name in ("linux", "multi", "unknown-tag", "spin", "hello-ok"):
        assert get(cluster, "pod", name) is None
    assert blobs(cluster) == before

    # Neither a path nor a reference: refused by validation, before any registry is asked.
    invalid = cluster.cli(
        "a", "apply", "-f", manifest(tmp_path, pod("bad", "Hello World")), check=False
    )
    assert invalid.returncode == 1
    assert "spec.containers[0].image: 'Hello World' is not a module p2pkube can run" in (
        invalid.stderr
    )
    assert "an OCI reference to a WebAssembly artifact" in invalid.stderr
    # A registry nobody listens on: the error names the reference and the registry.
    closed = f"127.0.0.1:{free_port()}/demo/hello:v1"
    unreachable = cluster.cli(
        "a", "apply", "-f", manifest(tmp_path, pod("nowhere", closed)), check=False
    )
    assert unreachable.returncode == 1
    assert f"{closed}: cannot reach the registry" in unreachable.stderr


def test_a_token_registry_gives_a_bearer_token_for_basic_credentials_or_an_identity_token(
    cluster: LocalCluster, bearer: LocalRegistry, tokens: TokenService, tmp_path: Path
) -> None:
    module = (BUILD / "primes.wasm").read_bytes()
    bearer.push_wasm("team/primes", "2", module)
    ref = f"{bearer.host}/team/primes:2"
    path = manifest(tmp_path, pod("bearer", ref, "1000"))

    # Anonymous: the registry's challenge sends us to the token service, which refuses.
    denied = cluster.cli("a", "apply", "-f", path, check=False)
    assert denied.returncode == 1
    assert f"{ref}: the token service {tokens.realm} refused a pull token (401" in denied.stderr
    assert f"anonymously: no credentials for {bearer.host}" in denied.stderr
    assert get(cluster, "pod", "bearer") is None

    # User and password (docker login's auth): a token for them, then the pull.
    basic = docker_config(tmp_path / "basic", bearer.host, USER, PASSWORD)
    tokens.issued.clear()
    applied = cluster.cli("a", "apply", "-f", path, "--registry-config", str(basic))
    assert applied.stdout.strip() == "pod/bearer created"
    assert applied.stderr.splitlines() == [f"blob/{sha256(module)} published ({ref})"]
    assert tokens.issued == ["basic alice"]  # one token for the manifest and the layer
    succeeded(cluster, "bearer")
    assert cluster.cli("a", "logs", "bearer").stdout.splitlines() == ["primes below 1000: 168"]

    # An identity token (what docker login writes for an OAuth2 registry): the refresh grant.
    identity = write_config(
        tmp_path / "identity",
        {"auths": {f"https://{bearer.host}/v2/": {"identitytoken": IDENTITY_TOKEN}}},
    )
    tokens.issued.clear()
    path = manifest(tmp_path, pod("bearer-again", ref, "1000"))
    again = cluster.cli("a", "apply", "-f", path, "--registry-config", str(identity))
    assert again.stdout.strip() == "pod/bearer-again created"
    assert again.stderr.splitlines() == [f"blob/{sha256(module)} unchanged ({ref})"]
    assert tokens.issued == ["refresh"]

    # A registry token in the config is sent as it is: the token service is not asked.
    given = tokens.token("repository:team/primes:pull", "ci")
    registrytoken = write_config(
        tmp_path / "registrytoken", {"auths": {bearer.host: {"registrytoken": given}}}
    )
    tokens.issued.clear()
    path = manifest(tmp_path, pod("bearer-given", ref, "1000"))
    third = cluster.cli("a", "apply", "-f", path, "--registry-config", str(registrytoken))
    assert third.stdout.strip() == "pod/bearer-given created"
    assert tokens.issued == []
