"""``p2pkube top nodes|pods``: measured CPU and memory, as ``kubectl top`` prints them.

Both read the same NodeMetrics and PodMetrics from the local agent (``metrics.k8s.io``, which
the agent answers for every node, asking the others over the mesh), so the two never
disagree. The columns and their rounding are kubectl's (``cli/topkinds.py``); ``-o json|yaml``
prints the metrics objects themselves.
"""

from __future__ import annotations

from typing import Any

import click

from p2pkube.api.client import ApiClient, ApiError
from p2pkube.cli.common import (
    DEFAULT_NAMESPACE,
    CliError,
    State,
    all_namespaces_option,
    data_dir_option,
    namespace_option,
    selector_option,
)
from p2pkube.cli.output import dump, field, format_age, name_of, table, to_list
from p2pkube.cli.topkinds import (
    UNKNOWN,
    cpu_millicores,
    mebibytes_cell,
    memory_bytes,
    millicores_cell,
    percent_cell,
    usage_total,
)

__all__ = ["top"]

_SORTS = ("cpu", "memory")


def _sort_option(func: Any) -> Any:
    return click.option(
        "--sort-by",
        type=click.Choice(_SORTS),
        default=None,
        help="Sort by cpu or memory, highest first.",
    )(func)


def _no_headers_option(func: Any) -> Any:
    return click.option("--no-headers", is_flag=True, help="Print no header line.")(func)


def _output_option(func: Any) -> Any:
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["json", "yaml"]),
        default=None,
        help="Print the NodeMetrics/PodMetrics objects instead of the table.",
    )(func)


def _print(headers: list[str], rows: list[list[str]], no_headers: bool) -> None:
    text = table(headers, rows)
    click.echo("\n".join(text.splitlines()[1:]) if no_headers else text)


def _sorted(items: list[dict[str, Any]], sort_by: str | None) -> list[dict[str, Any]]:
    if sort_by is None:
        return items
    return sorted(items, key=lambda o: usage_total(o, sort_by), reverse=True)


class _Aliased(click.Group):
    """kubectl's names for the two subcommands (``top node``, ``top po``...), accepted
    without being listed twice in the help."""

    ALIASES = {"node": "nodes", "no": "nodes", "pod": "pods", "po": "pods"}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.ALIASES.get(cmd_name, cmd_name))


@click.group(cls=_Aliased)
def top() -> None:
    """Show measured CPU and memory of nodes or pods (as kubectl top)."""


@top.command("nodes")
@click.argument("name", required=False)
@selector_option
@_sort_option
@_no_headers_option
@click.option(
    "--show-capacity", is_flag=True, help="Percentages of the capacity, not the allocatable."
)
@_output_option
@data_dir_option
@click.pass_obj
def top_nodes(
    state: State,
    name: str | None,
    selector: str | None,
    sort_by: str | None,
    no_headers: bool,
    show_capacity: bool,
    output: str | None,
) -> None:
    """CPU and memory each node uses now (its agent's process, pods included)."""
    client = state.client()
    if name is not None:
        nodes = [client.get_node(name)]
    else:
        nodes = client.list_nodes(selector)
    metrics = {name_of(m): m for m in client.metrics("nodes", name=name, label_selector=selector)}
    if output is not None:
        items = _sorted(list(metrics.values()), sort_by)
        click.echo(dump(items[0] if name and items else to_list(items), output), nl=False)
        return
    if not metrics and not nodes:
        raise CliError("no nodes found")
    basis = "capacity" if show_capacity else "allocatable"
    measured = _sorted([metrics[name_of(n)] for n in nodes if name_of(n) in metrics], sort_by)
    order = [name_of(m) for m in measured] + sorted(
        name_of(n) for n in nodes if name_of(n) not in metrics
    )
    by_name = {name_of(n): n for n in nodes}
    rows = []
    for node_name in order:
        usage = metrics.get(node_name)
        if usage is None:
            rows.append([node_name, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN])
            continue
        offered = field(by_name[node_name], f"status.{basis}", {}) or {}
        cpu, memory = field(usage, "usage.cpu", "0"), field(usage, "usage.memory", "0")
        rows.append(
            [
                node_name,
                millicores_cell(cpu),
                percent_cell(cpu_millicores(cpu), cpu_millicores(offered.get("cpu", "0"))),
                mebibytes_cell(memory),
                percent_cell(memory_bytes(memory), memory_bytes(offered.get("memory", "0"))),
            ]
        )
    _print(["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"], rows, no_headers)


def _pod_missing(client: ApiClient, namespace: str, name: str) -> CliError:
    """Why pod ``name`` has no metrics: it does not exist (the server's NotFound), or it
    has not run a full window yet, or does not run (kubectl's message)."""
    pod = client.get_object("Pod", namespace, name)  # ApiError(404) when there is no pod
    age = format_age(field(pod, "metadata.creationTimestamp"))
    phase = field(pod, "status.phase", "Pending")
    return CliError(f"Metrics not available for pod {namespace}/{name}, age: {age} (phase {phase})")


@top.command("pods")
@click.argument("name", required=False)
@namespace_option
@all_namespaces_option
@selector_option
@click.option("--containers", is_flag=True, help="One line per container.")
@_sort_option
@_no_headers_option
@_output_option
@data_dir_option
@click.pass_obj
def top_pods(
    state: State,
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    selector: str | None,
    containers: bool,
    sort_by: str | None,
    no_headers: bool,
    output: str | None,
) -> None:
    """CPU and memory each running pod uses now (its instances' CPU time and memory)."""
    if name is not None and all_namespaces:
        raise click.UsageError("a pod NAME cannot be given with -A/--all-namespaces")
    client = state.client()
    scope = None if all_namespaces else namespace or DEFAULT_NAMESPACE
    try:
        items = client.metrics("pods", namespace=scope, name=name, label_selector=selector)
    except ApiError as exc:
        if name is None or exc.code != 404:
            raise
        raise _pod_missing(client, scope or DEFAULT_NAMESPACE, name) from None
    items = _sorted(items, sort_by)
    if output is not None:
        click.echo(dump(items[0] if name and items else to_list(items), output), nl=False)
        return
    if not items:
        where = "" if all_namespaces else f" in {scope} namespace"
        click.echo(f"No resources found{where}.", err=True)
        return
    prefix = ["NAMESPACE"] if all_namespaces else []
    rows = []
    for pod in items:
        first = [field(pod, "metadata.namespace", "")] if all_namespaces else []
        if not containers:
            cpu, memory = usage_total(pod, "cpu"), usage_total(pod, "memory")
            rows.append([*first, name_of(pod), millicores_cell(cpu), mebibytes_cell(memory)])
            continue
        for container in pod.get("containers") or []:
            cpu = field(container, "usage.cpu", "0")
            memory = field(container, "usage.memory", "0")
            rows.append(
                [
                    *first,
                    name_of(pod),
                    container.get("name", ""),
                    millicores_cell(cpu),
                    mebibytes_cell(memory),
                ]
            )
    headers = ["POD", "NAME"] if containers else ["NAME"]
    _print([*prefix, *headers, "CPU(cores)", "MEMORY(bytes)"], rows, no_headers)
