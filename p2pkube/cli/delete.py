"""``p2pkube delete``: objects by name, by label selector (``-l``), ``--all`` of a kind, or
what manifests name (``-f``), as kubectl deletes them: one ``kind "name" deleted`` line each,
going on after a failure (exit 1 at the end)."""

from __future__ import annotations

import sys

import click

from p2pkube.api.client import ApiError
from p2pkube.cli.common import (
    DEFAULT_NAMESPACE,
    CliError,
    KubectlCommand,
    State,
    all_namespaces_option,
    data_dir_option,
    namespace_option,
    selector_option,
)
from p2pkube.cli.completion import complete_names, complete_resources
from p2pkube.cli.get import lookup_resource, lookup_resources, namespace_scope
from p2pkube.cli.output import Resource, field, name_of
from p2pkube.cli.workloads import delete_targets

__all__ = ["delete"]


@click.command(cls=KubectlCommand)
@click.argument(
    "resource_name", metavar="RESOURCE", required=False, shell_complete=complete_resources
)
@click.argument("names", nargs=-1, metavar="NAME...", shell_complete=complete_names)
@click.option("-f", "--filename", "files", multiple=True, help="Delete what these manifests name.")
@selector_option
@click.option("--all", "delete_all", is_flag=True, help="Every object of RESOURCE (in -n).")
@click.option("--force", is_flag=True, help="Remove running pods at once, without waiting.")
@namespace_option
@all_namespaces_option
@data_dir_option
@click.pass_obj
def delete(
    state: State,
    resource_name: str | None,
    names: tuple[str, ...],
    files: tuple[str, ...],
    selector: str | None,
    delete_all: bool,
    force: bool,
    namespace: str | None,
    all_namespaces: bool,
) -> None:
    """Delete objects by name, label selector (-l), --all or manifest (on every agent).

    RESOURCE may name several kinds (pods,services). -l and --all delete in the namespace
    (-n, default "default"), or in every namespace with -A.

    A pod running on a Ready node is stopped by that node, which then removes it (kubectl
    shows it Terminating meanwhile); --force removes it at once.
    """
    targets: list[tuple[Resource, str, str]] = []
    if files:
        if resource_name or names or selector is not None or delete_all:
            raise click.UsageError("give either -f FILE or RESOURCE NAME|-l|--all, not both")
        for kind, ns, name in delete_targets(files):
            resource = lookup_resource(kind)
            scope = namespace_scope(resource, ns or namespace, all_namespaces=False)
            targets.append((resource, scope or "", name))
    elif selector is not None or delete_all:
        if not resource_name:
            raise click.UsageError("give the RESOURCE to delete with -l/--all (e.g. pods)")
        if names:
            raise click.UsageError("names cannot be given with -l/--selector or --all")
        if selector is not None and delete_all:
            raise click.UsageError("cannot set --all and -l/--selector at the same time")
        targets = _matching(state, resource_name, namespace, all_namespaces, selector)
        if not targets:
            where = "" if all_namespaces else f" in {namespace or DEFAULT_NAMESPACE} namespace"
            click.echo(f"No resources found{where}.", err=True)
            return
    else:
        if all_namespaces:
            raise click.UsageError("-A/--all-namespaces goes with -l/--selector or --all")
        if not resource_name:
            raise click.UsageError("give RESOURCE NAME..., RESOURCE -l SELECTOR or -f FILE")
        if "/" in resource_name:  # kubectl's TYPE/NAME form
            resource_name, _, first = resource_name.partition("/")
            names = (first, *names)
        if not names:
            raise click.UsageError("give RESOURCE NAME..., RESOURCE -l SELECTOR or -f FILE")
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


def _matching(
    state: State,
    resource_names: str,
    namespace: str | None,
    all_namespaces: bool,
    selector: str | None,
) -> list[tuple[Resource, str, str]]:
    """(kind, namespace, name) of every object ``delete -l|--all`` deletes, kind by kind in
    the order given, each kind's objects in ``get``'s order. A kind that cannot be deleted
    is refused before anything is."""
    client = state.client()
    targets = []
    for resource in lookup_resources(resource_names):
        if resource.undeletable:
            raise CliError(f"{resource.plural} cannot be deleted: {resource.undeletable}")
        ns = namespace_scope(resource, namespace, all_namespaces)
        items = client.list_objects(resource.kind, ns, selector)
        resource.sort(items)
        targets += [(resource, field(o, "metadata.namespace", ""), name_of(o)) for o in items]
    return targets
