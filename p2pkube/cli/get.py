"""``p2pkube get``: a table (or objects, or names) of nodes, objects or blobs, and with
``-w`` every change after it, the way kubectl get shows them."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Sequence
from typing import Any

import click

from p2pkube.api.client import ApiClient, ApiError
from p2pkube.cli.common import (
    DEFAULT_NAMESPACE,
    CliError,
    Duration,
    KubectlCommand,
    State,
    all_namespaces_option,
    data_dir_option,
    namespace_option,
    selector_option,
)
from p2pkube.cli.completion import complete_names, complete_resources
from p2pkube.cli.kinds import NAMESPACE_COLUMN, RESOURCES, find_resource
from p2pkube.cli.output import (
    OUTPUT_FORMATS,
    Column,
    Resource,
    RowPrinter,
    dump,
    field,
    object_name,
    render,
    shown_columns,
    table,
    to_list,
)
from p2pkube.cli.printers import (
    Output,
    OutputFormat,
    allow_missing_keys_option,
    parse_output_or_fail,
)

MAX_WATCH_SECONDS = 24 * 3600
"""The longest watch the agent serves (its own bound on timeoutSeconds)."""


def lookup_resource(name: str) -> Resource:
    """The resource a command line names (``pods``, ``po``, ``deployment``...); CliError,
    listing the known ones, if there is none."""
    resource = find_resource(name)
    if resource is None:
        known = ", ".join(r.plural for r in RESOURCES)
        raise CliError(f'the server doesn\'t have a resource type "{name}" (known: {known})')
    return resource


def namespace_scope(resource: Resource, namespace: str | None, all_namespaces: bool) -> str | None:
    """The namespace to ask for: None for all, "" for cluster-scoped kinds."""
    if not resource.namespaced:
        return ""
    if all_namespaces:
        return None
    return namespace or DEFAULT_NAMESPACE


@click.command(cls=KubectlCommand)
@click.argument("resource_name", metavar="RESOURCE", shell_complete=complete_resources)
@click.argument("name", required=False, shell_complete=complete_names)
@namespace_option
@all_namespaces_option
@selector_option
@click.option(
    "-o", "--output", type=OutputFormat(OUTPUT_FORMATS), default=None, help="Output format."
)
@allow_missing_keys_option
@click.option(
    "-w", "--watch", is_flag=True, help="After the list, print each change as it happens."
)
@click.option("--watch-only", is_flag=True, help="Print only the changes, not the list first.")
@click.option(
    "--output-watch-events",
    is_flag=True,
    help="With -w: an EVENT column (ADDED, MODIFIED, DELETED); -o json|yaml print the events.",
)
@click.option(
    "--request-timeout",
    type=Duration(),
    default=None,
    metavar="DURATION",
    help="With -w: stop watching after this long (e.g. 30s, 5m) and exit 0.",
)
@data_dir_option
@click.pass_obj
def get(
    state: State,
    resource_name: str,
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    selector: str | None,
    output: str | None,
    allow_missing_template_keys: bool,
    watch: bool,
    watch_only: bool,
    output_watch_events: bool,
    request_timeout: float | None,
) -> None:
    """Show nodes, objects or blobs, like kubectl get.

    \b
    RESOURCE is one of (short names in brackets):
      nodes (node, no)          pods (pod, po)
      deployments (deploy)      replicasets (rs)
      jobs (job)                daemonsets (ds)
      configmaps (cm)           secrets (secret)
      namespaces (ns)           services (svc)
      endpoints (ep)            events (ev)
      blobs (blob)
    or several, comma-separated (deploy,svc), or TYPE/NAME (deployment/web).

    -o jsonpath=TEMPLATE and -o custom-columns=HEADER:PATH,... take kubectl's syntax
    (e.g. -o jsonpath='{range .items[*]}{.metadata.name}{"\\n"}{end}').

    -w/--watch lists the objects, then prints a row for every change the agent's watch
    stream reports (a DELETED object's last row too) until Ctrl-C or --request-timeout;
    --watch-only skips the list. Every kind but blobs and endpoints (computed, never
    stored) can be watched.
    """
    if name is None and "/" in resource_name:
        resource_name, _, name = resource_name.partition("/")
        if not name:
            raise click.UsageError(f"{resource_name}/ names no object")
    resources = lookup_resources(resource_name)
    if selector is not None and any(r.kind == "Blob" for r in resources):
        raise click.UsageError("blobs have no labels: -l/--selector does not apply")
    if name is not None and selector is not None:
        raise click.UsageError("a NAME and -l/--selector cannot be used together")
    if name is not None and all_namespaces:
        raise click.UsageError("a resource cannot be retrieved by name across all namespaces")
    watching = watch or watch_only
    if watching and len(resources) > 1:
        raise click.UsageError("-w/--watch follows one kind at a time")
    if watching and not resources[0].watchable:
        raise click.UsageError(f"{resources[0].plural} cannot be watched (-w/--watch)")
    if not watching and (output_watch_events or request_timeout is not None):
        raise click.UsageError("--output-watch-events and --request-timeout go with -w/--watch")
    spec = parse_output_or_fail(output)
    client = state.client()
    if watching:
        resource = resources[0]
        ns = namespace_scope(resource, namespace, all_namespaces)
        _watch(
            client,
            resource,
            ns,
            name,
            selector,
            _table_columns(resource, ns, spec),
            spec,
            list_first=not watch_only,
            with_events=output_watch_events,
            timeout=request_timeout or 0,
            allow_missing=allow_missing_template_keys,
        )
        return
    listed: list[tuple[Resource, str | None, list[dict[str, Any]]]] = []
    failed = False
    for resource in resources:
        ns = namespace_scope(resource, namespace, all_namespaces)
        try:
            listed.append((resource, ns, _list(client, resource, ns, name, selector)))
        except ApiError as exc:
            if len(resources) == 1:
                raise
            click.echo(str(exc), err=True)  # kubectl shows what it found of the other kinds
            failed = True
    if len(resources) == 1:
        nothing = _nothing(resources[0], listed[0][1])
    else:  # kubectl names the namespace asked for, whatever the kinds
        nothing = _nothing(None, None if all_namespaces else namespace or DEFAULT_NAMESPACE)
    _print(
        listed,
        spec,
        nothing,
        single=name is not None and len(resources) == 1,
        allow_missing=allow_missing_template_keys,
    )
    if failed:
        sys.exit(1)


def lookup_resources(names: str) -> list[Resource]:
    """The kinds of ``get``'s or ``delete``'s RESOURCE: one, or several comma-separated
    (``deploy,svc``), each once."""
    resources: list[Resource] = []
    for part in names.split(","):
        if not part:
            raise click.UsageError(f"{names!r}: an empty resource type between commas")
        resource = lookup_resource(part)
        if resource not in resources:
            resources.append(resource)
    return resources


def _table_columns(resource: Resource, ns: str | None, spec: Output) -> tuple[Column, ...]:
    """The columns of ``resource``'s table: custom columns as given; else its own, with
    NAMESPACE first across namespaces, those ``-o wide`` (or not) shows."""
    if spec.columns is not None:
        return spec.columns
    columns = resource.columns
    if resource.namespaced and ns is None:
        columns = (NAMESPACE_COLUMN, *columns)
    return tuple(shown_columns(columns, spec.format if spec.is_table else ""))


def _kind_named(resource: Resource, columns: Sequence[Column]) -> list[Column]:
    """``columns`` with NAME cells written ``kind/name``, as kubectl shows several kinds."""

    def prefixed(column: Column) -> Column:
        def cell(obj: dict[str, Any]) -> str:
            return f"{resource.singular}/{column.value(obj)}"

        return Column(column.header, cell, column.wide, column.narrow)

    return [prefixed(c) if c.header == "NAME" else c for c in columns]


def _print(
    listed: Sequence[tuple[Resource, str | None, list[dict[str, Any]]]],
    spec: Output,
    nothing: str,
    *,
    single: bool,
    allow_missing: bool,
) -> None:
    """What ``get`` prints for the objects of one or several kinds.

    A table per kind (kubectl's: separated by a blank line, names as ``kind/name`` when
    several kinds were asked for), or one custom-columns table; every other format sees one
    List of them all (or the object itself when one was named), as kubectl's do.
    """
    items = [obj for _resource, _ns, objs in listed for obj in objs]
    if spec.format in ("", "wide"):
        tables = []
        for resource, ns, objs in listed:
            columns = _table_columns(resource, ns, spec)
            if len(listed) > 1:
                columns = tuple(_kind_named(resource, columns))
            if objs:
                tables.append(table([c.header for c in columns], [_row(columns, o) for o in objs]))
        click.echo("\n\n".join(tables) if tables else nothing, err=not tables)
    elif spec.columns is not None:  # kubectl prints the header even when nothing matched
        rows = [_row(spec.columns, o) for o in items]
        click.echo(table([c.header for c in spec.columns], rows))
    elif spec.is_template:
        data = items[0] if single and len(items) == 1 else to_list(items)
        click.echo(spec.execute(data, allow_missing=allow_missing), nl=False)
    else:
        text = render(items, (), spec.format, single=single)
        click.echo(text or nothing, err=not text)


def _row(columns: Sequence[Column], obj: dict[str, Any]) -> list[Any]:
    return [c.value(obj) for c in columns]


def _nothing(resource: Resource | None, ns: str | None) -> str:
    """kubectl's message for an empty list (``resource`` None: several kinds)."""
    namespaced = resource is None or resource.namespaced
    where = f" in {ns} namespace" if namespaced and ns else ""
    return f"No resources found{where}."


def _list(
    client: ApiClient, resource: Resource, ns: str | None, name: str | None, selector: str | None
) -> list[dict[str, Any]]:
    """What ``get`` shows, in its order."""
    if resource.kind == "Node":
        items = [client.get_node(name)] if name else client.list_nodes(selector)
    elif resource.kind == "Blob":
        items = [client.get_blob(name)] if name else client.list_blobs()
    elif name is not None:
        items = [client.get_object(resource.kind, ns or "", name)]
    else:
        items = client.list_objects(resource.kind, ns, selector)
    resource.sort(items)
    return items


# --- get -w ----------------------------------------------------------------------------------


def _watch(
    client: ApiClient,
    resource: Resource,
    ns: str | None,
    name: str | None,
    selector: str | None,
    columns: Sequence[Column],
    spec: Output,
    *,
    list_first: bool,
    with_events: bool,
    timeout: float,
    allow_missing: bool,
) -> None:
    """``get -w``: the list (unless --watch-only), then one row (or object, or name) per
    watch event, until Ctrl-C (exit 0), the timeout (exit 0) or a failed watch (exit 1).

    The watch stream starts with every current object as ADDED; those already printed by the
    list, unchanged, are skipped, so each object shows up once and then at every change. A
    table skips a MODIFIED object whose row would read as the last one printed for it (its
    change is in a field no column shows); -o json|yaml|name print every event.
    """
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends
        items = _list(client, resource, ns, name, selector)
        listed = {_object_key(o): _comparable(o) for o in items}
        out = _WatchOutput(columns, spec, with_events, items, allow_missing=allow_missing)
        if list_first:
            out.print_list(items, _nothing(resource, ns))
        seconds = _watch_seconds(timeout)
        with contextlib.closing(
            client.watch(resource.kind, ns, selector, timeout_seconds=seconds)
        ) as events:
            for event in events:
                event_type, obj = _read_event(event)
                if name is not None and field(obj, "metadata.name") != name:
                    continue
                if not _listed_as_is(listed, event_type, obj):
                    out.show(event_type, obj)


def _watch_seconds(timeout: float) -> int:
    """The timeoutSeconds to ask for: --request-timeout rounded up, else the longest watch."""
    seconds = min(MAX_WATCH_SECONDS, math.ceil(timeout)) if timeout > 0 else MAX_WATCH_SECONDS
    return max(1, seconds)


def _read_event(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The type and object of one watch event; CliError when the agent ended the watch."""
    event_type = str(event.get("type", ""))
    obj = event.get("object") or {}
    if event_type == "ERROR":
        raise CliError(f"the watch ended: {obj.get('message', obj)}")
    return event_type, obj


def _listed_as_is(listed: dict[tuple[str, str], Any], event_type: str, obj: dict[str, Any]) -> bool:
    """Whether the event is the watch's first view of an object the list already showed as it
    is. Each object is looked up once: its later events are always changes."""
    before = listed.pop(_object_key(obj), None)
    return event_type == "ADDED" and before is not None and before == _comparable(obj)


def _comparable(obj: dict[str, Any]) -> Any:
    """An object as `get -w` compares a listed one with the watch's first view of it: without
    heartbeat times, which a node's Ready condition renews on every read."""
    status = obj.get("status")
    if not isinstance(status, dict) or not isinstance(status.get("conditions"), list):
        return obj
    conditions = [
        {k: v for k, v in c.items() if k != "lastHeartbeatTime"} if isinstance(c, dict) else c
        for c in status["conditions"]
    ]
    return {**obj, "status": {**status, "conditions": conditions}}


def _object_key(obj: dict[str, Any]) -> tuple[str, str]:
    return (str(field(obj, "metadata.namespace", "")), str(field(obj, "metadata.name", "")))


class _WatchOutput:
    """How ``get -w`` prints: a table whose later rows line up with the first ones (with an
    EVENT column for --output-watch-events), or each object (``---`` between YAML documents),
    or each name, or a jsonpath template applied to each object."""

    def __init__(
        self,
        columns: Sequence[Column],
        spec: Output,
        with_events: bool,
        listed: Sequence[dict[str, Any]],
        *,
        allow_missing: bool,
    ) -> None:
        self.columns = columns
        self.spec = spec
        self.output = spec.format
        self.allow_missing = allow_missing
        self.with_events = with_events
        self.is_table = spec.is_table
        headers = [c.header for c in columns]
        self.headers = ["EVENT", *headers] if with_events else headers
        self.printer = RowPrinter(self.headers)
        self.count = 0
        """How many objects were printed: the YAML separator goes before all but the first."""
        self.last_rows = {_object_key(o): self._row(o) for o in listed}
        """The row last printed (or listed) for each object."""

    def _row(self, obj: dict[str, Any]) -> list[Any]:
        return [c.value(obj) for c in self.columns]

    def print_list(self, items: Sequence[dict[str, Any]], nothing: str) -> None:
        """The list before the changes: one table, or an ADDED event per object, or
        ``nothing`` on stderr."""
        if self.is_table and items:
            rows = [self._row(o) for o in items]
            if self.with_events:
                rows = [["ADDED", *row] for row in rows]
            click.echo(table(self.headers, rows))
            self.printer.seed(rows)
            self.count = len(items)
        elif items:
            for obj in items:
                self._emit("ADDED", obj)
        else:
            click.echo(nothing, err=True)

    def show(self, event_type: str, obj: dict[str, Any]) -> None:
        """One change, unless a table would print a MODIFIED object's row as it last printed
        it (the change is in a field no column shows; a DELETED row always shows)."""
        if self.is_table:
            key = _object_key(obj)
            row = self._row(obj)
            if event_type == "MODIFIED" and self.last_rows.get(key) == row:
                return
            self.last_rows[key] = row
        self._emit(event_type, obj)

    def _emit(self, event_type: str, obj: dict[str, Any]) -> None:
        if self.spec.is_template:
            value = {"type": event_type, "object": obj} if self.with_events else obj
            click.echo(self.spec.execute(value, allow_missing=self.allow_missing), nl=False)
        elif self.output in ("json", "yaml"):
            value = {"type": event_type, "object": obj} if self.with_events else obj
            if self.output == "yaml" and self.count:
                click.echo("---")
            click.echo(dump(value, self.output).rstrip("\n"))
        elif self.output == "name":
            click.echo(object_name(obj))
        else:
            row = self._row(obj)
            for line in self.printer.lines([event_type, *row] if self.with_events else row):
                click.echo(line)
        self.count += 1
