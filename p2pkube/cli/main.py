"""The ``p2pkube`` command.

``signal`` and ``join`` start long-running processes (the rendezvous server, an agent;
cli/daemons.py); every other command is a short kubectl-like client of the local agent found
through the data dir (``get`` in cli/get.py, ``create``, ``delete``, ``describe``, ``apply``,
``logs``, ``rollout``/``scale``, ``wait``, ``completion`` in their own modules, the small verbs
here; progress bars, on stderr and only on a terminal, in cli/progress.py;
``-o`` templates in cli/printers.py). Heavy or concurrently written modules
(the agent, the signaling server) are imported inside their commands, so ``p2pkube get`` stays
fast and works whatever state those modules are in.

Exit codes: 0 success, 1 errors (``error: ...`` or kubectl's ``Error from server (...)`` on
stderr), 2 usage errors (click names the bad option). No tracebacks unless P2PKUBE_DEBUG=1.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from p2pkube.api.client import ApiClientError, ApiError
from p2pkube.blobs.manifest import WASM_MAGIC, wasm_magic_problem
from p2pkube.cli.common import (
    CliError,
    ServerError,
    State,
    data_dir_option,
)
from p2pkube.cli.output import (
    field,
    format_size,
    render_status,
    short_digest,
)
from p2pkube.cli.printers import OutputFormat, print_objects
from p2pkube.cli.progress import Bar, bar, bytes_of

DEFAULT_DATA_DIR = "~/.p2pkube"


LAZY_COMMANDS: dict[str, str] = {
    "signal": "p2pkube.cli.daemons:signal",
    "token": "p2pkube.cli.daemons:token",
    "join": "p2pkube.cli.daemons:join",
    "get": "p2pkube.cli.get:get",
    "create": "p2pkube.cli.create:create",
    "delete": "p2pkube.cli.delete:delete",
    "completion": "p2pkube.cli.completion:completion",
    "apply": "p2pkube.cli.workloads:apply",
    "logs": "p2pkube.cli.logs:logs",
    "describe": "p2pkube.cli.describe:describe",
    "scale": "p2pkube.cli.rollout:scale",
    "rollout": "p2pkube.cli.rollout:rollout",
    "proxy": "p2pkube.cli.forward:proxy",
    "port-forward": "p2pkube.cli.forward:port_forward",
    "kubeconfig": "p2pkube.cli.kubeconfig:kubeconfig",
    "dashboard": "p2pkube.cli.dashboard:dashboard",
    "wait": "p2pkube.cli.wait:wait",
    "cordon": "p2pkube.cli.nodes:cordon",
    "uncordon": "p2pkube.cli.nodes:uncordon",
    "taint": "p2pkube.cli.nodes:taint",
    "top": "p2pkube.cli.top:top",
}
"""The commands kept in their own modules: name -> ``module:attribute``. A command's module is
imported when that command runs (or when help or completion lists them all), so ``p2pkube
get`` loads what ``get`` needs, not every command's dependencies: each CLI call is a new
process, and imports were most of its start-up (see docs/benchmarks.md, CLI start-up)."""


class _Group(click.Group):
    """The top-level group: loads its commands lazily (``LAZY_COMMANDS``) and turns client
    errors from any subcommand into clean exits instead of tracebacks."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):  # a wrong table entry, caught by the tests
            raise TypeError(f"{target} is not a click command")
        return command

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


# --- blobs -----------------------------------------------------------------------------------


@cli.command()
@click.argument("source", metavar="FILE|REF")
@click.option("-o", "--output", type=OutputFormat(("json", "yaml", "name")), default=None)
@click.option(
    "--registry-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Docker config with registry credentials (for a REF).",
)
@data_dir_option
@click.pass_obj
def publish(state: State, source: str, output: str | None, registry_config: Path | None) -> None:
    """Share a WebAssembly module with the cluster; prints its digest.

    The local agent stores the file, computes its sha256 digest and publishes its manifest;
    any node can then pull it. Publishing the same bytes again changes nothing. REF is an
    OCI reference to a WebAssembly artifact (REGISTRY/REPO:TAG or @sha256:...): the CLI
    pulls its module layer and publishes that.
    """
    from p2pkube.cli.workloads import module_source  # apply's module: loaded by publish only

    with module_source(source, registry_config) as file:
        _publish_file(state, file, output)


def _publish_file(state: State, file: Path, output: str | None) -> None:
    with file.open("rb") as fh:
        problem = wasm_magic_problem(fh.read(len(WASM_MAGIC)), complete=True)
    if problem is not None:  # the agent checks too; this spares uploading a wrong file
        raise CliError(f"{file}: {problem}")
    from p2pkube.cli.workloads import upload_module

    obj, created = upload_module(state.client(), file)
    digest = field(obj, "metadata.name", "")
    if not print_objects([obj], output, single=True):
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

    DIGEST is sha256:<hex> or a unique prefix of it (as `get blobs` shows). Progress goes to
    stderr: a bar on a terminal, else one line per chunk count reached; the summary line goes
    to stdout. Exit 1 when the fetch fails.
    """
    client = state.client()
    with contextlib.ExitStack() as stack:
        drawn: Bar | None = None
        shown, size = -1, 0
        for event in client.pull_blob(ref):
            progress = event.get("progress") or {}
            chunks, total = int(progress.get("chunks", 0)), int(progress.get("totalChunks", 0))
            done = int(progress.get("bytes", 0))
            if event.get("type") == "COMPLETE":
                if drawn is not None:
                    drawn.show(done, item=f"{bytes_of(done, size)}, {total}/{total} chunks")
                    stack.close()  # finish the bar before the summary line
                click.echo(_pulled(event.get("object") or {}, event.get("progress")))
                return
            if event.get("type") != "PROGRESS":
                continue
            if shown < 0:
                label = f"pulling {short_digest(str(progress.get('digest', ref)))}"
                size = int(progress.get("sizeBytes", 0))
                drawn = stack.enter_context(bar(label, size, unit_bytes=True))
            if drawn is not None:
                drawn.show(done, item=f"{bytes_of(done, size)}, {chunks}/{total} chunks")
            elif chunks != shown:
                click.echo(
                    f"pulling {progress.get('digest', ref)}: {chunks}/{total} chunks, "
                    f"{format_size(done, ' ')} of {format_size(progress.get('sizeBytes'), ' ')}",
                    err=True,
                )
            shown = chunks
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
@click.option("-o", "--output", type=OutputFormat(("json", "yaml")), default=None)
@data_dir_option
@click.pass_obj
def status(state: State, output: str | None) -> None:
    """Show the local agent's own view of itself and its neighbours."""
    info = state.client().status()
    if not print_objects([info], output, single=True):
        click.echo(render_status(info))


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
