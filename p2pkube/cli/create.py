"""``p2pkube create configmap``, ``create secret generic`` and ``create namespace``, as
kubectl's.

Both take ``--from-literal KEY=VALUE`` and ``--from-file [KEY=]PATH`` (a file, or a directory:
each regular file in it, keyed by its name), check keys as Kubernetes does and refuse
duplicates before anything is sent, and print (``-o``) or only show (``--dry-run=client``)
the object. A ConfigMap holds text; a Secret holds base64 ``data`` (type Opaque).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from p2pkube.cli.common import (
    DEFAULT_NAMESPACE,
    CliError,
    KubectlCommand,
    State,
    data_dir_option,
    namespace_option,
)
from p2pkube.cli.printers import OutputFormat, allow_missing_keys_option, print_objects
from p2pkube.model.names import dns_label_error, dns_subdomain_error

__all__ = ["MAX_OBJECT_BYTES", "create"]

MAX_OBJECT_BYTES = 1024 * 1024
"""The agent's default ``state.max_object_bytes`` (Kubernetes' 1 MiB for a ConfigMap or a
Secret): data over it is refused here, before a file is read whole or sent."""

_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_MAX_KEY = 253


@dataclass(frozen=True)
class _Entry:
    """One key and its bytes, and where they came from (for messages)."""

    key: str
    value: bytes
    source: str


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot name a ConfigMap or Secret entry (Kubernetes' rule), or None."""
    if not key:
        return "a key must not be empty"
    if len(key) > _MAX_KEY:
        return f"key {key[:20]!r}... is longer than {_MAX_KEY} characters"
    if not _KEY.fullmatch(key) or key in (".", ".."):
        return (
            f"{key!r} is not a valid key name: a valid config key must consist of "
            "alphanumeric characters, '-', '_' or '.' (e.g. 'key.name', or 'KEY_NAME', or "
            "'key-name')"
        )
    return None


def _size_problem(path: Path, size: int) -> str | None:
    if size > MAX_OBJECT_BYTES:
        return (
            f"{path} is {size:,} bytes, over the {MAX_OBJECT_BYTES:,} bytes (1 MiB) an object "
            "may hold (the agent's state.max_object_bytes)"
        )
    return None


def _file_entries(source: str) -> list[_Entry]:
    """``--from-file [KEY=]PATH``: one file, or every regular file of a directory."""
    key, eq, name = source.partition("=")
    if not eq:
        key, name = "", source
    elif not key:
        raise click.BadParameter(f"{source!r}: the key before '=' is empty", param_hint=_FILE)
    path = Path(name).expanduser()
    if path.is_dir():
        if key:
            raise click.BadParameter(
                f"{source!r}: a key cannot be given for a directory ({name})", param_hint=_FILE
            )
        files = sorted(p for p in path.iterdir() if p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise click.BadParameter(f"{name}: no such file or directory", param_hint=_FILE)
    entries = []
    for file in files:
        if problem := _size_problem(file, file.stat().st_size):
            raise CliError(problem)
        try:
            value = file.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
        entries.append(_Entry(key or file.name, value, str(file)))
    return entries


_LITERAL, _FILE = "'--from-literal'", "'--from-file'"


def _entries(literals: tuple[str, ...], files: tuple[str, ...]) -> list[_Entry]:
    """Every entry of the command line, keys checked and unique."""
    entries: list[_Entry] = []
    for literal in literals:
        key, eq, value = literal.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{literal!r} is not KEY=VALUE", param_hint=_LITERAL)
        entries.append(_Entry(key, value.encode(), _LITERAL))
    for source in files:
        entries += _file_entries(source)
    seen: set[str] = set()
    for entry in entries:
        hint = _LITERAL if entry.source == _LITERAL else _FILE
        where = "" if entry.source == _LITERAL else f"{entry.source}: "
        if problem := key_problem(entry.key):
            raise click.BadParameter(where + problem, param_hint=hint)
        if entry.key in seen:
            raise click.BadParameter(
                f"{where}cannot add key {entry.key!r}, another key by that name already exists",
                param_hint=hint,
            )
        seen.add(entry.key)
    return entries


def _configmap_data(entries: list[_Entry]) -> dict[str, Any]:
    data = {}
    for entry in entries:
        try:
            data[entry.key] = entry.value.decode()
        except UnicodeDecodeError:
            raise CliError(
                f"{entry.source}: not UTF-8 text; a ConfigMap here holds text only "
                "(no binaryData): put binary content in a Secret"
            ) from None
    return {"data": data}


def _secret_data(entries: list[_Entry]) -> dict[str, Any]:
    return {
        "type": "Opaque",
        "data": {e.key: base64.b64encode(e.value).decode("ascii") for e in entries},
    }


def _create(
    state: State,
    kind: str,
    name: str,
    namespace: str | None,
    literals: tuple[str, ...],
    files: tuple[str, ...],
    body: Callable[[list[_Entry]], dict[str, Any]],
    output: str | None,
    dry_run: str,
    allow_missing: bool,
) -> None:
    """Build the object, check its size, then create it (or only print it)."""
    if problem := dns_subdomain_error(name):
        raise click.BadParameter(f"{name!r} {problem}", param_hint="'NAME'")
    obj = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace or DEFAULT_NAMESPACE},
        **body(_entries(literals, files)),
    }
    size = sum(len(k) + len(str(v).encode()) for k, v in (obj.get("data") or {}).items())
    if size > MAX_OBJECT_BYTES:
        raise CliError(
            f"the data of {kind} {name!r} is {size:,} bytes, over the {MAX_OBJECT_BYTES:,} "
            "bytes (1 MiB) an object may hold (the agent's state.max_object_bytes)"
        )
    _finish(state, obj, output, dry_run, allow_missing)


def _finish(
    state: State, obj: dict[str, Any], output: str | None, dry_run: str, allow_missing: bool
) -> None:
    """Create ``obj`` (unless a client dry run) and print it as ``-o`` asks, else
    ``kind/name created``."""
    if dry_run == "server":
        raise click.BadParameter(
            "the agent has no server-side dry run; use --dry-run=client", param_hint="--dry-run"
        )
    stored = obj if dry_run == "client" else state.client().create_object(obj)
    if not print_objects([stored], output, single=True, allow_missing=allow_missing):
        suffix = " (dry run)" if dry_run == "client" else ""
        click.echo(f"{str(obj['kind']).lower()}/{obj['metadata']['name']} created{suffix}")


def _create_options(func: Any) -> Any:
    """What ``create configmap`` and ``create secret generic`` share."""
    for decorator in reversed(
        (
            click.argument("name"),
            namespace_option,
            click.option(
                "--from-literal", "literals", multiple=True, metavar="KEY=VALUE", help="An entry."
            ),
            click.option(
                "--from-file",
                "files",
                multiple=True,
                metavar="[KEY=]PATH",
                help="A file's content (key: its name), or each file of a directory.",
            ),
            _dry_run_option,
            click.option(
                "-o", "--output", type=OutputFormat(("json", "yaml", "name")), default=None
            ),
            allow_missing_keys_option,
            data_dir_option,
            click.pass_obj,
        )
    ):
        func = decorator(func)
    return func


def _dry_run_option(func: Any) -> Any:
    return click.option(
        "--dry-run",
        type=click.Choice(("none", "client", "server")),
        default="none",
        is_flag=False,
        flag_value="client",
        help="client: print the object without creating it.",
    )(func)


@click.group()
def create() -> None:
    """Create an object."""


@create.command("namespace", cls=KubectlCommand)
@click.argument("name")
@_dry_run_option
@click.option("-o", "--output", type=OutputFormat(("json", "yaml", "name")), default=None)
@allow_missing_keys_option
@data_dir_option
@click.pass_obj
def create_namespace(
    state: State, name: str, dry_run: str, output: str | None, allow_missing_template_keys: bool
) -> None:
    """Create a namespace (objects need theirs to exist; "default" always does)."""
    if problem := dns_label_error(name):
        raise click.BadParameter(f"{name!r} {problem}", param_hint="'NAME'")
    obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    _finish(state, obj, output, dry_run, allow_missing_template_keys)


@create.command("configmap", cls=KubectlCommand)
@_create_options
def create_configmap(
    state: State,
    name: str,
    namespace: str | None,
    literals: tuple[str, ...],
    files: tuple[str, ...],
    dry_run: str,
    output: str | None,
    allow_missing_template_keys: bool,
) -> None:
    """Create a ConfigMap from literals and files; every agent in the cluster will see it."""
    _create(
        state, "ConfigMap", name, namespace, literals, files, _configmap_data, output, dry_run,
        allow_missing_template_keys,
    )  # fmt: skip


@create.group("secret")
def create_secret() -> None:
    """Create a Secret (generic: from literals and files)."""


@create_secret.command("generic", cls=KubectlCommand)
@_create_options
def create_secret_generic(
    state: State,
    name: str,
    namespace: str | None,
    literals: tuple[str, ...],
    files: tuple[str, ...],
    dry_run: str,
    output: str | None,
    allow_missing_template_keys: bool,
) -> None:
    """Create an Opaque Secret from literals and files (values stored base64 in data)."""
    _create(
        state, "Secret", name, namespace, literals, files, _secret_data, output, dry_run,
        allow_missing_template_keys,
    )  # fmt: skip


def _add_create_job() -> None:
    """``create job`` lives in its own module (cli/createjob.py), which imports nothing of
    this one, so the group is whole wherever ``create`` is loaded from."""
    from p2pkube.cli.createjob import create_job

    create.add_command(create_job)


_add_create_job()
