"""``p2pkube completion bash|zsh|fish``, and what the shells complete.

The script is click's own shell completion (the shell calls ``p2pkube`` back with
``_P2PKUBE_COMPLETE=<shell>_complete``); this module prints it and gives the RESOURCE and NAME
arguments their candidates: kinds from cli/kinds.py, and the names of the objects of that kind
the local agent holds, asked with a short timeout. Completion must never get in the way of
typing, so any failure (no agent, a slow one, a bad data dir) completes nothing, silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

from p2pkube.api.client import ApiClient
from p2pkube.cli.common import DEFAULT_NAMESPACE, State
from p2pkube.cli.kinds import RESOURCES, find_resource
from p2pkube.cli.output import Resource, name_of

__all__ = [
    "complete_names",
    "complete_objects",
    "complete_pods",
    "complete_resources",
    "completion",
]

COMPLETION_TIMEOUT = 1.0
"""Seconds a completion waits for the local agent before offering nothing."""

SHELLS = ("bash", "zsh", "fish")


def _data_dir(ctx: click.Context) -> Path | None:
    """The data dir the command line names: the subcommand's ``--data-dir`` (kept on the
    context object when it was parsed), else the global one (or its default)."""
    state = ctx.find_object(State)
    if state is not None:
        return state.data_dir
    root = ctx.find_root()
    value = root.params.get("data_dir")
    return Path(value).expanduser() if value else None


def _names(ctx: click.Context, resource: Resource) -> list[str]:
    """Names of ``resource``'s objects in the namespace the command line names; [] on any
    failure (completion stays silent)."""
    try:
        data_dir = _data_dir(ctx)
        if data_dir is None:
            return []
        client = ApiClient.from_data_dir(data_dir, timeout=COMPLETION_TIMEOUT)
        if resource.kind == "Node":
            items = client.list_nodes()
        elif resource.kind == "Blob":
            items = client.list_blobs()
        else:
            all_namespaces = bool(ctx.params.get("all_namespaces"))
            namespace = None if all_namespaces else ctx.params.get("namespace")
            ns = (namespace or DEFAULT_NAMESPACE) if resource.namespaced else ""
            items = client.list_objects(resource.kind, None if all_namespaces else ns)
        return sorted({name_of(o) for o in items})
    except Exception:  # whatever went wrong, a completion offers nothing rather than fail
        return []


def complete_resources(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """RESOURCE: a kind (its plural and short names), the last of a comma list
    (``deploy,s`` -> ``deploy,svc``), or after ``TYPE/`` the objects of that type."""
    if "/" in incomplete:
        kind, _, partial = incomplete.partition("/")
        resource = find_resource(kind)
        if resource is None:
            return []
        return [
            CompletionItem(f"{kind}/{name}")
            for name in _names(ctx, resource)
            if name.startswith(partial)
        ]
    done, _, partial = incomplete.rpartition(",")
    prefix = done + "," if done else ""
    return [
        CompletionItem(prefix + name)
        for resource in RESOURCES
        for name in resource.names
        if name.startswith(partial)
    ]


def complete_names(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """NAME: the objects of the kind given as RESOURCE (a lone kind, not ``a,b``), less
    those already on the command line."""
    resource_name = str(ctx.params.get("resource_name") or "")
    resource = find_resource(resource_name) if resource_name else None
    if resource is None:
        return []
    given = ctx.params.get("names") or ()
    return [
        CompletionItem(name)
        for name in _names(ctx, resource)
        if name.startswith(incomplete) and name not in given
    ]


def complete_objects(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """``TYPE/NAME... | TYPE [NAME...]`` (``wait``): first a kind or a TYPE/NAME; after a lone
    kind, the names of its objects not given yet; after a TYPE/NAME, more TYPE/NAMEs."""
    given = [str(arg) for arg in ctx.params.get(param.name or "") or ()]
    if not given or "/" in given[0] or "/" in incomplete:
        return complete_resources(ctx, param, incomplete)
    resource = find_resource(given[0])
    if resource is None:
        return []
    return [
        CompletionItem(name)
        for name in _names(ctx, resource)
        if name.startswith(incomplete) and name not in given[1:]
    ]


def complete_pods(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """POD (``logs``): the pods of the namespace given."""
    pods = find_resource("pods")
    assert pods is not None
    return [CompletionItem(n) for n in _names(ctx, pods) if n.startswith(incomplete)]


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    \b
    bash:  source <(p2pkube completion bash)        # in ~/.bashrc
    zsh:   source <(p2pkube completion zsh)         # in ~/.zshrc
    fish:  p2pkube completion fish > ~/.config/fish/completions/p2pkube.fish

    Commands, options, resource kinds and the names of the local agent's objects complete
    (`p2pkube get pods <TAB>`); names are asked of the agent with a 1 s timeout.
    """
    root = ctx.find_root()
    cls: Any = get_completion_class(shell)
    script = cls(root.command, {}, "p2pkube", "_P2PKUBE_COMPLETE").source()
    click.echo(script)
