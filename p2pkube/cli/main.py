"""The ``p2pkube`` command.

``signal`` and ``join`` start long-running processes (the rendezvous server, an agent;
cli/daemons.py); every other command is a short kubectl-like client of the local agent found
through the data dir (``get`` in cli/get.py, ``describe``, ``apply``/``logs``, ``rollout``/
``scale`` in their own modules, the small verbs here). Heavy or concurrently written modules
(the agent, the signaling server) are imported inside their commands, so ``p2pkube get`` stays
fast and works whatever state those modules are in.

Exit codes: 0 success, 1 errors (``error: ...`` or kubectl's ``Error from server (...)`` on
stderr), 2 usage errors (click names the bad option). No tracebacks unless P2PKUBE_DEBUG=1.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from p2pkube.api.client import ApiClientError, ApiError
from p2pkube.blobs.manifest import WASM_MAGIC, wasm_magic_problem
from p2pkube.cli.common import (
    DEFAULT_NAMESPACE,
    CliError,
    ServerError,
    State,
    data_dir_option,
    namespace_option,
)
from p2pkube.cli.createjob import create_job
from p2pkube.cli.daemons import join, signal, token
from p2pkube.cli.describe import describe
from p2pkube.cli.forward import port_forward, proxy
from p2pkube.cli.get import get, lookup_resource, namespace_scope
from p2pkube.cli.output import (
    Resource,
    dump,
    field,
    format_size,
    render_status,
    short_digest,
)
from p2pkube.cli.rollout import rollout, scale
from p2pkube.cli.workloads import apply, delete_targets, logs
from p2pkube.model.names import dns_subdomain_error

DEFAULT_DATA_DIR = "~/.p2pkube"
_CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")


class _Group(click.Group):
    """Turns client errors from any subcommand into clean exits instead of tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise ServerError(str(exc)) from None
        except ApiClientError as exc:
            raise CliError(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    envvar="P2PKUBE_DATA_DIR",
    show_default=True,
    show_envvar=True,
    help="Where the local agent keeps its state, api.json and api.token.",
)
@click.version_option(package_name="p2pkube", prog_name="p2pkube")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path) -> None:
    """Kubernetes without a control plane: every node runs the same agent."""
    ctx.obj = State(data_dir.expanduser())


# --- create / delete -------------------------------------------------------------------------


@cli.group()
def create() -> None:
    """Create an object."""


create.add_command(create_job)


@create.command("configmap")
@click.argument("name")
@namespace_option
@click.option(
    "--from-literal", "literals", multiple=True, metavar="KEY=VALUE", help="A data entry."
)
@click.option("-o", "--output", type=click.Choice(("json", "yaml", "name")), default=None)
@data_dir_option
@click.pass_obj
def create_configmap(
    state: State, name: str, namespace: str | None, literals: tuple[str, ...], output: str | None
) -> None:
    """Create a ConfigMap; every agent in the cluster will see it."""
    if problem := dns_subdomain_error(name):
        raise click.BadParameter(f"{name!r} {problem}", param_hint="'NAME'")
    data: dict[str, str] = {}
    for literal in literals:
        key, eq, value = literal.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{literal!r} is not KEY=VALUE", param_hint="'--from-literal'")
        if len(key) > 253 or not _CONFIGMAP_KEY.fullmatch(key):
            raise click.BadParameter(
                f"key {key!r} must consist of alphanumeric characters, '-', '_' or '.'",
                param_hint="'--from-literal'",
            )
        if key in data:
            raise click.BadParameter(
                f"cannot add key {key!r}, another key by that name already exists",
                param_hint="'--from-literal'",
            )
        data[key] = value
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace or DEFAULT_NAMESPACE},
        "data": data,
    }
    stored = state.client().create_object(obj)
    if output in ("json", "yaml"):
        click.echo(dump(stored, output))
    elif output == "name":
        click.echo(f"configmap/{name}")
    else:
        click.echo(f"configmap/{name} created")


@cli.command()
@click.argument("resource_name", metavar="RESOURCE", required=False)
@click.argument("names", nargs=-1, metavar="NAME...")
@click.option("-f", "--filename", "files", multiple=True, help="Delete what these manifests name.")
@click.option("--force", is_flag=True, help="Remove running pods at once, without waiting.")
@namespace_option
@data_dir_option
@click.pass_obj
def delete(
    state: State,
    resource_name: str | None,
    names: tuple[str, ...],
    files: tuple[str, ...],
    force: bool,
    namespace: str | None,
) -> None:
    """Delete objects by name or by manifest (on every agent).

    A pod running on a Ready node is stopped by that node, which then removes it (kubectl
    shows it Terminating meanwhile); --force removes it at once.
    """
    targets: list[tuple[Resource, str, str]] = []
    if files:
        if resource_name or names:
            raise click.UsageError("give either -f FILE or RESOURCE NAME..., not both")
        for kind, ns, name in delete_targets(files):
            resource = lookup_resource(kind)
            scope = namespace_scope(resource, ns or namespace, all_namespaces=False)
            targets.append((resource, scope or "", name))
    else:
        if not resource_name or not names:
            raise click.UsageError("give RESOURCE NAME... or -f FILE")
        resource = lookup_resource(resource_name)
        ns = namespace_scope(resource, namespace, all_namespaces=False) or ""
        targets = [(resource, ns, name) for name in names]
    client = state.client()
    failed = False
    for resource, ns, name in targets:
        if resource.undeletable:
            raise CliError(f"{resource.plural} cannot be deleted: {resource.undeletable}")
        try:
            client.delete_object(resource.kind, ns, name, force=force)
        except ApiError as exc:
            click.echo(str(exc), err=True)  # go on with the other names, like kubectl
            failed = True
            continue
        click.echo(f'{resource.singular} "{name}" deleted')
    if failed:
        sys.exit(1)


cli.add_command(signal)
cli.add_command(token)
cli.add_command(join)
cli.add_command(get)
cli.add_command(apply)
cli.add_command(logs)
cli.add_command(describe)
cli.add_command(scale)
cli.add_command(rollout)
cli.add_command(proxy)
cli.add_command(port_forward)


# --- blobs -----------------------------------------------------------------------------------


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Choice(("json", "yaml", "name")), default=None)
@data_dir_option
@click.pass_obj
def publish(state: State, file: Path, output: str | None) -> None:
    """Share a WebAssembly module with the cluster; prints its digest.

    The local agent stores the file, computes its sha256 digest and publishes its manifest;
    any node can then pull it. Publishing the same bytes again changes nothing.
    """
    with file.open("rb") as fh:
        problem = wasm_magic_problem(fh.read(len(WASM_MAGIC)), complete=True)
    if problem is not None:  # the agent checks too; this spares uploading a wrong file
        raise CliError(f"{file}: {problem}")
    obj, created = state.client().publish_blob(file)
    digest = field(obj, "metadata.name", "")
    if output in ("json", "yaml"):
        click.echo(dump(obj, output))
    elif output == "name":
        click.echo(f"blob/{digest}")
    else:
        size = format_size(field(obj, "spec.size"), " ")
        chunks = len(field(obj, "spec.chunks") or [])
        verb = "published" if created else "unchanged"
        click.echo(f"blob/{digest} {verb} ({size}, {chunks} chunk{'s' if chunks != 1 else ''})")


@cli.command()
@click.argument("ref", metavar="DIGEST")
@data_dir_option
@click.pass_obj
def pull(state: State, ref: str) -> None:
    """Fetch a blob to the local agent from the nodes that hold it.

    DIGEST is sha256:<hex> or a unique prefix of it (as `get blobs` shows). Progress is a bar
    on a terminal and one line per step otherwise; exit 1 when the fetch fails.
    """
    client = state.client()
    tty = sys.stdout.isatty()
    with contextlib.ExitStack() as stack:
        bar: Any = None
        shown = -1
        for event in client.pull_blob(ref):
            progress = event.get("progress") or {}
            if event.get("type") == "COMPLETE":
                if bar is not None:
                    total = progress.get("totalChunks", 0)
                    bar.update(
                        int(progress.get("bytes", 0)) - bar.pos,
                        current_item=f"{total}/{total} chunks",
                    )
                    stack.close()  # finish the bar before the summary line
                click.echo(_pulled(event.get("object") or {}, event.get("progress")))
                return
            if event.get("type") != "PROGRESS":
                continue
            chunks, total = int(progress.get("chunks", 0)), int(progress.get("totalChunks", 0))
            if tty:
                if bar is None:
                    bar = stack.enter_context(
                        click.progressbar(
                            length=max(1, int(progress.get("sizeBytes", 0))),
                            label=f"pulling {short_digest(str(progress.get('digest', ref)))}",
                            item_show_func=lambda item: item,
                            file=sys.stdout,
                        )
                    )
                bar.update(
                    int(progress.get("bytes", 0)) - bar.pos, current_item=f"{chunks}/{total} chunks"
                )
            elif chunks != shown:
                shown = chunks
                click.echo(
                    f"pulling {progress.get('digest', ref)}: {chunks}/{total} chunks, "
                    f"{format_size(progress.get('bytes'), ' ')} of "
                    f"{format_size(progress.get('sizeBytes'), ' ')}"
                )
    raise CliError(f"the agent ended the pull of {ref} without saying how it went")


def _pulled(obj: dict[str, Any], progress: dict[str, Any] | None) -> str:
    """The summary line of a finished pull."""
    digest = field(obj, "metadata.name", "")
    size = format_size(field(obj, "spec.size"), " ")
    if progress is None:
        return f"blob/{digest} is already here ({size})"
    sources = progress.get("sources") or {}
    line = (
        f"blob/{digest} pulled ({size}, {progress.get('totalChunks', 0)} chunks in "
        f"{float(progress.get('seconds', 0)):.1f}s"
    )
    if sources:
        line += " from " + ", ".join(f"{name} ({n})" for name, n in sorted(sources.items()))
    line += ")"
    dropped = progress.get("dropped") or {}
    if dropped:
        line += "; not asked again: " + "; ".join(f"{k}: {v}" for k, v in sorted(dropped.items()))
    return line


# --- status ----------------------------------------------------------------------------------


@cli.command()
@click.option("-o", "--output", type=click.Choice(("json", "yaml")), default=None)
@data_dir_option
@click.pass_obj
def status(state: State, output: str | None) -> None:
    """Show the local agent's own view of itself and its neighbours."""
    info = state.client().status()
    click.echo(dump(info, output) if output else render_status(info))


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI, never letting a traceback reach the user."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="p2pkube")
    except Exception as exc:  # click already handled its own errors and exits
        if os.environ.get("P2PKUBE_DEBUG"):
            raise
        click.echo(
            f"error: unexpected {type(exc).__name__}: {exc} (set P2PKUBE_DEBUG=1 for a traceback)",
            err=True,
        )
        sys.exit(1)
