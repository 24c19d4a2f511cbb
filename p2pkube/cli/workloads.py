"""``p2pkube apply``: manifests in, like kubectl (``logs`` is in cli/logs.py).

``apply -f`` reads YAML or JSON files (several documents each, ``---``), a directory of them,
or ``-`` (stdin). A container ``image`` may be a module digest (``sha256:...``), a ``.wasm``
path relative to the manifest, an ``http(s)://`` URL, or an OCI reference to a WebAssembly
artifact (``REGISTRY/REPO:TAG``, ``@sha256:...``; ``oci.py``): paths, URLs and artifacts are
published into the cluster first (``p2pkube publish``) and the stored object names the
digest. Every document is validated, and every OCI reference resolved, before anything is
published or written; an invalid manifest changes nothing and every problem is printed, each
with its file, document and field.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from p2pkube.api.client import ApiClient, ApiError
from p2pkube.blobs.manifest import WASM_MAGIC, wasm_magic_problem
from p2pkube.cli.common import (
    DEFAULT_NAMESPACE,
    CliError,
    ServerError,
    State,
    data_dir_option,
    namespace_option,
)
from p2pkube.cli.kinds import find_resource
from p2pkube.cli.oci import (
    OciError,
    Reference,
    Registry,
    Resolved,
    looks_like_path,
    module_problem,
    parse_reference,
)
from p2pkube.cli.printers import OutputFormat, print_objects
from p2pkube.cli.progress import UPLOAD_BAR_BYTES, progress
from p2pkube.model.apiversions import CLUSTER_SCOPED_KINDS
from p2pkube.model.images import IMAGE_FORMS
from p2pkube.model.podspec import containers

PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
"""Stands in for a file, URL or OCI image while validating, before anything is published."""
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
"""Largest module apply downloads from a URL or a registry."""
SERVER_FIELDS = ("uid", "creationTimestamp", "deletionTimestamp")
SERVER_MANAGED = ("generation", "resourceVersion", "managedFields")
"""Metadata only the agent writes: dropped from applied documents, so that the output of
``get -o yaml`` can be applied again (the agent's models refuse these fields)."""


def strip_server_fields(obj: dict[str, Any]) -> None:
    """Drop what the agent alone writes (``status``, ``metadata.generation``...) from a
    document, as kubectl apply ignores them."""
    obj.pop("status", None)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in SERVER_MANAGED:
            meta.pop(key, None)


@dataclass
class Document:
    """One object of a manifest, with where it came from."""

    obj: dict[str, Any]
    source: str
    index: int
    base: Path
    """Directory that relative image paths start from."""

    @property
    def label(self) -> str:
        kind = self.obj.get("kind", "?")
        name = (self.obj.get("metadata") or {}).get("name", "?")
        return f"{self.source} (document {self.index + 1}, {kind} {name})"


def load_documents(paths: tuple[str, ...]) -> list[Document]:
    """Every document of the given files/directories/stdin, in order; CliError on bad YAML."""
    documents: list[Document] = []
    for given in paths:
        if given == "-":
            sources = [("<stdin>", sys.stdin.read(), Path.cwd())]
        else:
            path = Path(given)
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
            elif path.exists():
                files = [path]
            else:
                raise CliError(f'the path "{given}" does not exist')
            sources = [(str(f), f.read_text(), f.resolve().parent) for f in files]
        for source, text, base in sources:
            try:
                parsed = list(yaml.safe_load_all(io.StringIO(text)))
            except yaml.YAMLError as exc:
                raise CliError(f"{source}: not valid YAML: {exc}") from None
            for index, obj in enumerate(parsed):
                if obj is None:
                    continue
                if not isinstance(obj, dict):
                    raise CliError(f"{source} (document {index + 1}): not an object")
                documents.append(Document(obj, source, index, base))
    if not documents:
        raise CliError("no objects passed to apply")
    return documents


def _image_problem(image: Any, base: Path) -> str | None:
    """Why a container's image cannot be used (None: it can, or it is an OCI reference
    that is resolved later)."""
    if not isinstance(image, str) or not image:
        return f"must be {IMAGE_FORMS}"
    if image.startswith("sha256:") or image.startswith(("http://", "https://")):
        return None
    if not looks_like_path(image, base):
        try:
            parse_reference(image)
        except ValueError as exc:
            return f"{image!r} is not a module p2pkube can run ({exc}); an image is {IMAGE_FORMS}"
        return None
    path = (base / image).expanduser().resolve()
    if not path.is_file():
        return f"no such file {path}"
    with path.open("rb") as fh:
        return module_problem(fh.read(len(WASM_MAGIC) + 4))


def _reference(image: str, base: Path) -> Reference | None:
    """The OCI reference an (already validated) image names; None for a digest, URL or path."""
    if image.startswith("sha256:") or image.startswith(("http://", "https://")):
        return None
    if looks_like_path(image, base):
        return None
    return parse_reference(image)


def _problems(problems: list[str]) -> CliError:
    return CliError(
        f"{len(problems)} problem{'s' if len(problems) != 1 else ''}, nothing was applied:\n"
        + "\n".join(f"* {p}" for p in problems)
    )


def validate(documents: list[Document], namespace: str | None) -> list[str]:
    """Every problem of every document (images stood in for), without calling the agent."""
    from p2pkube.model.errors import ValidationFailed
    from p2pkube.model.schema import validate_object

    problems = []
    for doc in documents:
        candidate = json.loads(json.dumps(doc.obj))
        meta = candidate.get("metadata")
        cluster_scoped = doc.obj.get("kind") in CLUSTER_SCOPED_KINDS
        if (
            namespace
            and isinstance(meta, dict)
            and not meta.get("namespace")
            and not cluster_scoped
        ):
            meta["namespace"] = namespace
        for path, container in containers(candidate):
            problem = _image_problem(container.get("image"), doc.base)
            if problem:
                problems.append(f"{doc.label}: {path}.image: {problem}")
            if problem or not str(container.get("image")).startswith("sha256:"):
                container["image"] = PLACEHOLDER_DIGEST  # one message per image problem
        try:
            validate_object(candidate)
        except ValidationFailed as exc:
            problems += [f"{doc.label}: {error}" for error in exc.errors]
    return problems


def _download(url: str) -> Path:
    """A module from a URL into a temporary file (size-capped)."""
    target = Path(tempfile.mkdtemp(prefix="p2pkube-image-")) / (
        url.rstrip("/").rsplit("/", 1)[-1] or "module.wasm"
    )
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
                copied = 0
                while chunk := response.read(1 << 20):
                    copied += len(chunk)
                    if copied > MAX_DOWNLOAD_BYTES:
                        raise CliError(f"{url}: larger than {MAX_DOWNLOAD_BYTES} bytes")
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(f"cannot download {url}: {exc}") from None
        with target.open("rb") as fh:
            problem = wasm_magic_problem(fh.read(len(WASM_MAGIC)), complete=True)
        if problem:
            raise CliError(f"{url}: {problem}")
    except BaseException:
        shutil.rmtree(target.parent, ignore_errors=True)
        raise
    return target


def resolve_images(documents: list[Document], registry: Registry) -> list[str]:
    """Resolve every OCI reference (each once) to its WebAssembly layer; the problems, each
    with its document and field (a reference that is not a module p2pkube can run, an unknown
    tag, a registry that refuses)."""
    problems: list[str] = []
    failed: dict[str, str] = {}
    for doc in documents:
        for path, container in containers(doc.obj):
            ref = _reference(str(container["image"]), doc.base)
            if ref is None:
                continue
            if ref.given not in failed:
                try:
                    registry.resolve(ref)
                    continue
                except OciError as exc:
                    failed[ref.given] = exc.message
            problems.append(f"{doc.label}: {path}.image: {failed[ref.given]}")
    return problems


def publish_images(
    client: ApiClient, documents: list[Document], registry: Registry | None = None
) -> None:
    """Replace every path/URL/OCI image with the digest of the module published for it."""
    published: dict[str, str] = {}
    for doc in documents:
        for _path, container in containers(doc.obj):
            image = str(container["image"])
            if image.startswith("sha256:"):
                continue
            ref = _reference(image, doc.base)
            if ref is not None:
                if registry is None:
                    raise CliError(f"{image}: an OCI reference, and no registry client")
                if image not in published:
                    published[image] = _publish_layer(client, registry, registry.resolve(ref))
                container["image"] = published[image]
                continue
            if image.startswith(("http://", "https://")):
                key = image
                if key not in published:
                    path = _download(image)
                    try:
                        published[key] = _publish(client, path)
                    finally:
                        shutil.rmtree(path.parent, ignore_errors=True)
            else:
                path = (doc.base / image).resolve()
                key = str(path)
                if key not in published:
                    published[key] = _publish(client, path)
            container["image"] = published[key]


def upload_module(client: ApiClient, path: Path) -> tuple[dict[str, Any], bool]:
    """``client.publish_blob`` with the bytes sent shown (stderr) for a module of
    ``UPLOAD_BAR_BYTES`` or more: a bar on a terminal, else a line now and then."""
    size = path.stat().st_size
    if size < UPLOAD_BAR_BYTES:
        return client.publish_blob(path)
    with progress(f"uploading {path.name}", size) as step:
        return client.publish_blob(path, on_progress=step)


def _publish(client: ApiClient, path: Path, shown: str | None = None) -> str:
    obj, created = upload_module(client, path)
    digest = str(obj["metadata"]["name"])
    verb = "published" if created else "unchanged"
    click.echo(f"blob/{digest} {verb} ({shown or path.name})", err=True)
    return digest


@contextmanager
def downloaded(registry: Registry, resolved: Resolved) -> Iterator[Path]:
    """The module layer of an OCI artifact in a temporary file named after the reference
    (the blob's source), with progress on stderr; removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="p2pkube-image-"))
    try:
        target = directory / resolved.reference.source_name
        with progress(f"pulling {resolved.reference}", resolved.size) as step:
            registry.download(resolved, target, MAX_DOWNLOAD_BYTES, step)
        yield target
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def module_source(source: str, registry_config: Path | None = None) -> Iterator[Path]:
    """The file ``p2pkube publish SOURCE`` uploads: SOURCE itself, or the module layer of
    the OCI artifact it names (pulled into a temporary file). A SOURCE without '/' is a file:
    publish names an artifact with its registry or repository path (``docker.io/library/x``),
    so a mistyped file name never sends the CLI to Docker Hub."""
    if looks_like_path(source, Path.cwd()) or "/" not in source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise CliError(f"no such file {source}")
        yield path
        return
    try:
        ref = parse_reference(source)
    except ValueError as exc:
        raise CliError(
            f"{source!r} is neither a file nor an OCI reference ({exc}); give a .wasm file or "
            "REGISTRY/REPOSITORY:TAG (or @sha256:<hex>)"
        ) from None
    registry = Registry(registry_config)
    with downloaded(registry, registry.resolve(ref)) as path:
        yield path


def _publish_layer(client: ApiClient, registry: Registry, resolved: Resolved) -> str:
    """The module layer of an OCI artifact, published (downloaded only when no Ready node
    of the cluster holds that digest already: a module layer's digest is the blob's)."""
    ref = resolved.reference
    try:
        held = client.get_blob(resolved.digest)
    except ApiError as exc:
        if exc.code != 404:
            raise
    else:
        if (held.get("status") or {}).get("holders"):
            click.echo(f"blob/{resolved.digest} unchanged ({ref})", err=True)
            return resolved.digest
    with downloaded(registry, resolved) as target:
        digest = _publish(client, target, str(ref))
    if digest != resolved.digest:  # the agent hashes what it stored: it cannot differ
        raise CliError(f"{ref}: the agent stored {digest}, the registry named {resolved.digest}")
    return digest


def _comparable(obj: dict[str, Any] | None) -> Any:
    """An object without what the agent sets, to tell 'unchanged' from 'configured'."""
    if obj is None:
        return None
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_FIELDS}
    return {**{k: v for k, v in obj.items() if k not in ("status", "metadata")}, "metadata": meta}


@click.command()
@click.option(
    "-f", "--filename", "files", multiple=True, required=True, help="File, directory or '-'."
)
@namespace_option
@click.option("-o", "--output", type=OutputFormat(("json", "yaml", "name")), default=None)
@click.option("--dry-run", is_flag=True, help="Validate only: publish and write nothing.")
@click.option(
    "--registry-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Docker config with registry credentials (default: $DOCKER_CONFIG/config.json, "
    "else ~/.docker/config.json).",
)
@data_dir_option
@click.pass_obj
def apply(
    state: State,
    files: tuple[str, ...],
    namespace: str | None,
    output: str | None,
    dry_run: bool,
    registry_config: Path | None,
) -> None:
    """Create or update objects from manifests (publishing the .wasm files, URLs and OCI
    WebAssembly artifacts they name)."""
    documents = load_documents(files)
    for doc in documents:
        strip_server_fields(doc.obj)
    problems = validate(documents, namespace)
    if problems:
        raise _problems(problems)
    if dry_run:
        for doc in documents:
            click.echo(f"{_ref(doc.obj)} valid (dry run)")
        return
    client = state.client()
    registry = Registry(registry_config)
    problems = resolve_images(documents, registry)
    if problems:
        raise _problems(problems)
    publish_images(client, documents, registry)
    failed = False
    results = []
    for doc in documents:
        obj = doc.obj
        meta = obj.setdefault("metadata", {})
        if obj.get("kind") in CLUSTER_SCOPED_KINDS:
            meta.pop("namespace", None)  # as Kubernetes ignores it on a cluster-scoped kind
        else:
            meta.setdefault("namespace", namespace or DEFAULT_NAMESPACE)
        try:
            previous = client.get_object(obj["kind"], meta.get("namespace", ""), meta["name"])
        except ApiError as exc:
            if exc.code != 404:
                raise
            previous = None
        verb = "created" if previous is None else "configured"
        try:
            stored = client.put_object(obj)
        except ApiError as exc:
            click.echo(f"{doc.label}: {exc}", err=True)
            failed = True
            continue
        if previous is not None and _comparable(previous) == _comparable(stored):
            verb = "unchanged"
        results.append(stored)
        if output == "name":
            click.echo(_ref(stored))
        elif output is None:
            click.echo(f"{_ref(stored)} {verb}")
    if output not in (None, "name"):  # json, yaml or a template: what was stored, at once
        print_objects(results, output, single=len(results) == 1)
    if failed:
        raise ServerError("some objects were not applied (see above)")


def _ref(obj: dict[str, Any]) -> str:
    resource = find_resource(str(obj.get("kind", "")))
    kind = resource.singular if resource else str(obj.get("kind", "")).lower()
    return f"{kind}/{(obj.get('metadata') or {}).get('name', '?')}"


def delete_targets(files: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    """(kind, namespace, name) of every object in the manifests (``delete -f``)."""
    for doc in load_documents(files):
        meta = doc.obj.get("metadata") or {}
        yield str(doc.obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name"))
