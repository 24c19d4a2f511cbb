"""``p2pkube describe``: kubectl's multi-line descriptions of pods, workloads, nodes, configmaps.

Each describer writes ``key<TAB>value`` lines through :class:`~p2pkube.cli.tabwriter.Writer`,
which aligns them the way kubectl's tabwriter does, so the output reads like kubectl's line for
line: pods in describe_pods.py, workloads in describe_workloads.py, nodes and configmaps in
describe_nodes.py, the sections they share (the Name/Namespace/Labels head, events) in
describe_sections.py. Events come last, those whose ``involvedObject.uid`` is the object's,
oldest first, with kubectl's ``AGE (xN over M)`` for repeats.

Like kubectl, ``describe pods web`` describes every pod whose name starts with ``web`` when no
pod is called exactly that (pod names end in a random suffix), and ``describe pods`` with no
name describes them all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from p2pkube.api.client import ApiClient, ApiError
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
from p2pkube.cli.describe_nodes import describe_configmap, describe_node, describe_secret
from p2pkube.cli.describe_pods import describe_pod
from p2pkube.cli.describe_sections import Lookup
from p2pkube.cli.describe_services import describe_service
from p2pkube.cli.describe_workloads import (
    describe_cronjob,
    describe_daemonset,
    describe_deployment,
    describe_job,
    describe_replicaset,
)
from p2pkube.cli.kinds import find_resource
from p2pkube.cli.output import Resource, field

DESCRIBERS: dict[str, Callable[[dict[str, Any], Lookup], str]] = {
    "Pod": describe_pod,
    "Deployment": describe_deployment,
    "ReplicaSet": describe_replicaset,
    "Job": describe_job,
    "CronJob": describe_cronjob,
    "DaemonSet": describe_daemonset,
    "Node": describe_node,
    "ConfigMap": describe_configmap,
    "Secret": describe_secret,
    "Service": describe_service,
}


# --- the command -------------------------------------------------------------------------------


def _describable(name: str) -> Resource:
    resource = find_resource(name)
    if resource is None or resource.kind not in DESCRIBERS:
        known = ", ".join(r.plural for r in (find_resource(k) for k in DESCRIBERS) if r is not None)
        what = (
            f'the server doesn\'t have a resource type "{name}"'
            if resource is None
            else (f"{resource.plural} cannot be described (use get {resource.plural} -o yaml)")
        )
        raise CliError(f"{what}; describe knows: {known}")
    return resource


def find_objects(
    client: ApiClient,
    resource: Resource,
    namespace: str | None,
    name: str | None,
    selector: str | None = None,
    *,
    prefix: bool = True,
) -> list[dict[str, Any]]:
    """The objects ``describe`` means: one by name, else (``prefix``) those whose name starts
    with it, or every one (``name`` None) matching ``selector``. ApiError(404) if none."""
    ns = namespace if resource.namespaced else ""
    missing: ApiError | None = None
    if name is not None:
        try:
            if resource.kind == "Node":
                return [client.get_node(name)]
            return [client.get_object(resource.kind, ns or DEFAULT_NAMESPACE, name)]
        except ApiError as exc:
            if exc.code != 404 or not prefix:
                raise
            missing = exc
    if resource.kind == "Node":
        items = client.list_nodes(selector)
    else:
        items = client.list_objects(resource.kind, ns, selector)
    if name is not None:
        items = [o for o in items if str(field(o, "metadata.name", "")).startswith(name)]
        if not items and missing is not None:
            raise missing
    resource.sort(items)
    return items


def split_targets(resource_name: str, names: Sequence[str]) -> list[tuple[str, str | None]]:
    """(resource, name) pairs from ``RESOURCE [NAME...]`` or ``TYPE/NAME...``."""
    if "/" in resource_name:
        pairs: list[tuple[str, str | None]] = []
        for arg in (resource_name, *names):
            kind, slash, name = arg.partition("/")
            if not slash or not kind or not name:
                raise click.UsageError(
                    f"{arg!r}: give either RESOURCE NAME... or TYPE/NAME..., not both"
                )
            pairs.append((kind, name))
        return pairs
    return [(resource_name, name) for name in names] or [(resource_name, None)]


@click.command(cls=KubectlCommand)
@click.argument("resource_name", metavar="RESOURCE", shell_complete=complete_resources)
@click.argument("names", nargs=-1, metavar="[NAME_PREFIX...]", shell_complete=complete_names)
@namespace_option
@all_namespaces_option
@selector_option
@click.option(
    "--show-events/--no-show-events",
    default=True,
    help="List the events about each object (the default; also --show-events=false).",
)
@data_dir_option
@click.pass_obj
def describe(
    state: State,
    resource_name: str,
    names: tuple[str, ...],
    namespace: str | None,
    all_namespaces: bool,
    selector: str | None,
    show_events: bool,
) -> None:
    """Show the details of objects and the events about them, like kubectl describe.

    RESOURCE is pods, deployments, replicasets, jobs, daemonsets, nodes, configmaps or
    services (or their short names: po, deploy, rs, ds, no, cm, svc), optionally as
    TYPE/NAME. A NAME_PREFIX that is no object's exact name describes every object whose
    name starts with it; no name describes them all (-l narrows them down).
    """
    targets = split_targets(resource_name, names)
    if all_namespaces and any(name is not None for _, name in targets):
        raise click.UsageError("a NAME cannot be looked up across all namespaces (drop -A)")
    client = state.client()
    lookup = Lookup(client, show_events=show_events)
    ns = None if all_namespaces else (namespace or DEFAULT_NAMESPACE)
    texts: list[str] = []
    failed = False
    for kind, name in targets:
        resource = _describable(kind)
        try:
            found = find_objects(client, resource, ns, name, selector)
        except ApiError as exc:
            if exc.code != 404:
                raise
            click.echo(str(exc), err=True)  # go on with the other names, like kubectl
            failed = True
            continue
        texts += [DESCRIBERS[resource.kind](obj, lookup) for obj in found]
        if not found:
            where = f" in {ns} namespace" if resource.namespaced and ns else ""
            click.echo(f"No resources found{where}.", err=True)
    if texts:
        click.echo("\n\n".join(texts), nl=False)
    if failed:
        sys.exit(1)
