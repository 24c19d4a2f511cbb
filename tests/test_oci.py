"""The OCI side of ``apply -f`` without a registry: references read as docker reads them,
paths told from references, credentials found in a docker config (also through a credential
helper program), the scheme each registry is spoken to with. tests/test_oci_cluster.py pulls
from a real registry."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest

from p2pkube.cli import progress as progress_module
from p2pkube.cli.common import CliError
from p2pkube.cli.oci import (
    DOCKER_HUB,
    INSECURE_ENV,
    Credentials,
    DockerConfig,
    Registry,
    _challenge,
    looks_like_path,
    module_problem,
    parse_reference,
)
from p2pkube.cli.progress import progress
from p2pkube.model.fields import module_image

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("given", "registry", "repository", "tag", "digest"),
    [
        ("nginx", DOCKER_HUB, "library/nginx", "latest", None),
        ("nginx:1.27", DOCKER_HUB, "library/nginx", "1.27", None),
        ("user/app", DOCKER_HUB, "user/app", "latest", None),
        ("docker.io/nginx", DOCKER_HUB, "library/nginx", "latest", None),
        ("index.docker.io/user/app:v2", DOCKER_HUB, "user/app", "v2", None),
        ("ghcr.io/org/team/mod:v1.0", "ghcr.io", "org/team/mod", "v1.0", None),
        ("localhost/mod", "localhost", "mod", "latest", None),
        ("localhost:5000/mod:x", "localhost:5000", "mod", "x", None),
        (f"127.0.0.1:5000/a/b@{DIGEST}", "127.0.0.1:5000", "a/b", None, DIGEST),
        (f"ghcr.io/a/b:v1@{DIGEST}", "ghcr.io", "a/b", "v1", DIGEST),
        ("[::1]:5000/mod:1", "[::1]:5000", "mod", "1", None),
    ],
)
def test_references_take_dockers_defaults(
    given: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(given)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert str(ref) == given
    assert ref.pinned == (digest or tag)
    assert ref.endpoint == ("registry-1.docker.io" if registry == DOCKER_HUB else registry)


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("Hello World", "not a valid reference"),
        ("ghcr.io/Org/mod:1", "not a valid reference"),
        ("mod@sha256:abc", "is not a digest"),
        ("mod:bad tag", "is not a valid tag"),
        ("bad_host.io:x/y", "not a valid"),
    ],
)
def test_what_is_not_a_reference_says_why(given: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_reference(given)


def test_paths_are_told_from_references(tmp_path: Path) -> None:
    (tmp_path / "module").write_bytes(b"\0asm\1\0\0\0")
    for path in ("hello.wasm", "build/x.wasm", "./mod", "../mod", "/abs/mod", "~/mod", "module"):
        assert looks_like_path(path, tmp_path), path
    for ref in ("ghcr.io/a/b:1", "nginx", "localhost:5000/x", "mod:1"):
        assert not looks_like_path(ref, tmp_path), ref


def test_the_api_names_every_image_form() -> None:
    with pytest.raises(ValueError) as caught:
        module_image("ghcr.io/a/b:1")
    message = str(caught.value)
    assert "the API takes digests only" in message
    assert "an OCI reference to a WebAssembly artifact" in message and ".wasm path" in message


def write(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_credentials_come_from_the_auths_of_a_docker_config(tmp_path: Path) -> None:
    auth = base64.b64encode(b"alice:pa:ss").decode()
    config = DockerConfig.load(
        write(
            tmp_path,
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": auth},
                    "https://ghcr.io/v2/": {"identitytoken": "refresh"},
                    "quay.io": {"registrytoken": "bearer-token"},
                    "localhost:5000": {"username": "bob", "password": "pw"},
                }
            },
        )
    )
    assert config.credentials(DOCKER_HUB) == Credentials("alice", "pa:ss")
    assert config.credentials("ghcr.io") == Credentials(identity_token="refresh")
    assert config.credentials("quay.io") == Credentials(registry_token="bearer-token")
    assert config.credentials("localhost:5000") == Credentials("bob", "pw")
    assert config.credentials("example.com") is None
    hub = config.credentials(DOCKER_HUB)
    assert hub is not None and hub.basic == "Basic " + auth


def test_the_docker_config_is_found_like_docker_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert DockerConfig.load().credentials("ghcr.io") is None  # none there: anonymous
    write(tmp_path, {"auths": {"ghcr.io": {"auth": base64.b64encode(b"u:p").decode()}}})
    assert DockerConfig.load().credentials("ghcr.io") == Credentials("u", "p")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CliError, match="is not JSON"):
        DockerConfig.load()


def test_a_credential_helper_is_asked_as_docker_asks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``credsStore``/``credHelpers`` name a ``docker-credential-NAME`` program: ``get``
    with the server on stdin answers ``{"Username", "Secret"}``."""
    helper = tmp_path / "bin" / "docker-credential-test"
    helper.parent.mkdir()
    helper.write_text(
        "#!/bin/sh\n"
        "read server\n"
        'case "$server" in\n'
        '  ghcr.io) echo \'{"Username": "carol", "Secret": "s3"}\' ;;\n'
        '  https://index.docker.io/v1/) echo \'{"Username": "<token>", "Secret": "id"}\' ;;\n'
        "  *) echo 'credentials not found in native keychain'; exit 1 ;;\n"
        "esac\n"
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    config = DockerConfig.load(write(tmp_path, {"credsStore": "test"}))
    assert config.credentials("ghcr.io") == Credentials("carol", "s3")
    assert config.credentials(DOCKER_HUB) == Credentials(identity_token="id")
    assert config.credentials("quay.io") is None
    config = DockerConfig.load(write(tmp_path, {"credHelpers": {"https://ghcr.io": "test"}}))
    assert config.credentials("ghcr.io") == Credentials("carol", "s3")
    assert config.credentials("quay.io") is None  # no helper for it, no credsStore
    config = DockerConfig.load(write(tmp_path, {"credHelpers": {"quay.io": "missing"}}))
    with pytest.raises(CliError, match="docker-credential-missing, which is not on PATH"):
        config.credentials("quay.io")


def test_loopback_registries_are_spoken_to_over_plain_http(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(INSECURE_ENV, raising=False)
    registry = Registry()
    for endpoint in ("localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"):
        assert registry.scheme(endpoint) == "http", endpoint
    for endpoint in ("ghcr.io", "registry-1.docker.io", "10.0.0.5:5000"):
        assert registry.scheme(endpoint) == "https", endpoint
    monkeypatch.setenv(INSECURE_ENV, "10.0.0.5:5000, lab.internal")
    registry = Registry()
    assert registry.scheme("10.0.0.5:5000") == "http"
    assert registry.scheme("lab.internal:443") == "http"
    assert registry.scheme("10.0.0.5:6000") == "https"


def test_challenges_are_parsed() -> None:
    assert _challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"'
    ) == (
        "bearer",
        {
            "realm": "https://auth.docker.io/token",
            "service": "registry.docker.io",
            "scope": "repository:library/nginx:pull",
        },
    )
    assert _challenge('Basic realm="registry"') == ("basic", {"realm": "registry"})


def test_components_and_non_wasm_are_told_apart() -> None:
    assert module_problem(b"\0asm\x01\0\0\0") is None
    component = module_problem(b"\0asm\x0d\0\x01\0")
    assert component is not None and "a WebAssembly component" in component
    elf = module_problem(b"\x7fELF\x02\x01\x01\0")
    assert elf is not None and elf.startswith("not a WebAssembly module: it starts with 7f 45")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_download_shows_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bar on a terminal (click's, as ``pull`` draws it); elsewhere a line now and then."""
    terminal = Terminal()
    with progress("pulling ghcr.io/a/b:1", 2_000_000, terminal) as step:
        step(1_000_000)
        step(2_000_000)
    assert "pulling ghcr.io/a/b:1" in terminal.getvalue()
    assert "100%" in terminal.getvalue()

    monkeypatch.setattr(progress_module, "PROGRESS_EVERY", 0.0)
    log = io.StringIO()
    with progress("pulling ghcr.io/a/b:1", 2_000_000, log) as step:
        step(1_000_000)
        step(2_000_000)  # the end: the published line says it
    assert log.getvalue().splitlines() == ["pulling ghcr.io/a/b:1: 1 MB of 2 MB"]
