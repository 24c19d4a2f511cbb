"""The ``p2pkube`` command.

``signal`` and ``join`` start long-running processes (the rendezvous server, an agent); every
other command is a short kubectl-like client of the local agent found through the data dir.
Heavy or concurrently written modules (the agent, the signaling server) are imported inside
their commands, so ``p2pkube get`` stays fast and works whatever state those modules are in.

Exit codes: 0 success, 1 errors (``error: ...`` or kubectl's ``Error from server (...)`` on
stderr), 2 usage errors (click names the bad option). No tracebacks unless P2PKUBE_DEBUG=1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from p2pkube.api.client import ApiClient, ApiClientError, ApiError
from p2pkube.blobs.manifest import WASM_MAGIC, wasm_magic_problem
from p2pkube.cli.common import (
    DEFAULT_NAMESPACE,
    CliError,
    Duration,
    KubectlCommand,
    ServerError,
    State,
    all_namespaces_option,
    data_dir_option,
    namespace_option,
    selector_option,
)
from p2pkube.cli.describe import describe
from p2pkube.cli.output import (
    NAMESPACE_COLUMN,
    OUTPUT_FORMATS,
    RESOURCES,
    Column,
    Resource,
    RowPrinter,
    dump,
    field,
    find_resource,
    format_size,
    object_name,
    render,
    render_status,
    short_digest,
    shown_columns,
    table,
)
from p2pkube.cli.rollout import rollout, scale
from p2pkube.cli.workloads import apply, delete_targets, logs
from p2pkube.model.names import (
    dns_label_error,
    dns_subdomain_error,
    label_key_error,
    label_value_error,
)
from p2pkube.model.quantity import parse_quantity

DEFAULT_DATA_DIR = "~/.p2pkube"
MAX_WATCH_SECONDS = 24 * 3600
"""The longest watch the agent serves (its own bound on timeoutSeconds)."""
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


# --- signal ----------------------------------------------------------------------------------


LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8787,
    show_default=True,
    help="TCP port (0: any free one).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="File with join tokens, one per line ('#' comments); merged with $P2PKUBE_TOKEN.",
)
@click.option(
    "--token",
    envvar="P2PKUBE_TOKEN",
    default=None,
    help="A join token agents must present (also $P2PKUBE_TOKEN; on the command line, "
    "other users see it in ps).",
)
@click.option(
    "--verifier-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="File with cluster verifiers (p2pkube token --verifier), one per line: serve "
    "those clusters without ever holding their tokens.",
)
@click.option(
    "--web-root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Serve the browser node's page and bundle from this directory "
    "[default: p2pkube/browser/dist when built (make browser)].",
)
@click.option("--no-web", is_flag=True, help="Serve only the WebSocket, no browser page.")
@click.option("--log-level", type=LOG_LEVELS, default="info", show_default=True)
@click.pass_context
def signal(
    ctx: click.Context,
    host: str,
    port: int,
    token_file: Path | None,
    token: str | None,
    verifier_file: Path | None,
    web_root: Path | None,
    no_web: bool,
    log_level: str,
) -> None:
    """Run the signaling server agents use to find each other.

    Without a token (--token-file, $P2PKUBE_TOKEN) or --verifier-file a fresh token is
    generated and printed. The server keeps only each cluster's verifier, never a token:
    agents prove they hold the token without sending it. It also serves the page that
    makes a browser tab a node: http://HOST:PORT/#token=TOKEN (the token stays in the URL
    fragment, which browsers never send to the server).
    """
    import logging

    from signaling.protocol import Verifier, load_tokens, load_verifiers
    from signaling.server import SignalingServer, run_server

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    warn_token_in_argv(ctx)
    try:
        verifiers = load_verifiers(verifier_file) if verifier_file is not None else []
        if token is None and token_file is None and verifiers:
            tokens, generated = [], False
        else:
            tokens, generated = load_tokens(token, token_file)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    page_token = tokens[0] if generated else "TOKEN"
    # From here on only the verifiers: what the server needs, and not enough to join links.
    verifiers += [Verifier.from_token(t) for t in tokens]
    del tokens, token
    if generated:
        click.echo(f"join token: {page_token}")
        click.echo(f"cluster: {verifiers[0].cluster}")
        sys.stdout.flush()
    if no_web:
        web_root = None
    elif web_root is None:
        built = Path(__file__).resolve().parent.parent / "browser" / "dist"
        web_root = built if (built / "index.html").is_file() else None
    elif not (web_root / "index.html").is_file():
        raise CliError(f"--web-root {web_root} has no index.html (build it: make browser)")

    def ready(server: SignalingServer) -> None:
        click.echo(f"signaling server: {server.url}")
        if web_root is not None:
            page = server.url.replace("ws", "http", 1).removesuffix("/ws")
            click.echo(f"browser node page: {page}/#token={page_token}")
        sys.stdout.flush()

    try:
        # returns on SIGINT/SIGTERM
        run_server(host, port, verifiers, on_ready=ready, web_root=web_root)
    except OSError as exc:  # typically: address already in use
        raise CliError(f"cannot listen on {host}:{port}: {exc}") from None


def warn_token_in_argv(ctx: click.Context) -> None:
    """Warn on stderr when --token was given on the command line, where ps shows it."""
    if ctx.get_parameter_source("token") is click.core.ParameterSource.COMMANDLINE:
        click.echo(
            "warning: --token on the command line is visible to every user of this machine "
            "(ps, /proc); use --token-file FILE or $P2PKUBE_TOKEN",
            err=True,
        )


# --- token -----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--verifier",
    is_flag=True,
    help="Print the verifier of the token in --token-file or $P2PKUBE_TOKEN instead, for "
    "p2pkube signal --verifier-file.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="With --verifier: the file holding the token.",
)
def token(verifier: bool, token_file: Path | None) -> None:
    """Print a new random join token (192 bits), or with --verifier the verifier of a token.

    \b
    Keep a token in a file only you can read:
      (umask 077; p2pkube token > cluster.token)
      p2pkube signal --token-file cluster.token
      p2pkube join ws://HOST:8787 --token-file cluster.token --name n1
    or run the server without the token at all:
      P2PKUBE_TOKEN=$(cat cluster.token) p2pkube token --verifier > cluster.verifier
      p2pkube signal --verifier-file cluster.verifier
    """
    from signaling.protocol import Verifier, check_token, generate_token

    if not verifier:
        click.echo(generate_token())
        return
    secret = read_token_file(token_file) if token_file else os.environ.get("P2PKUBE_TOKEN")
    if not secret:
        raise click.UsageError("--verifier needs the token: give --token-file or $P2PKUBE_TOKEN")
    try:
        click.echo(Verifier.from_token(check_token(secret.strip())).line())
    except ValueError as exc:
        raise CliError(str(exc)) from None


# --- join ------------------------------------------------------------------------------------


def _check_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    parsed = urllib.parse.urlparse(value)
    if parsed.scheme not in ("ws", "wss", "http", "https") or not parsed.hostname:
        raise click.BadParameter(
            f"{value!r} is not a signaling URL (expected ws://HOST:PORT or wss://...)"
        )
    return value


def _check_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if problem := dns_label_error(value):
        raise click.BadParameter(f"{value!r} is not a valid node name: it {problem}")
    return value


def _check_labels(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> dict[str, str]:
    labels: dict[str, str] = {}
    for raw in value:
        key, eq, val = raw.partition("=")
        if not eq:
            raise click.BadParameter(f"{raw!r} is not key=value")
        if problem := label_key_error(key):
            raise click.BadParameter(f"{raw!r}: key {key!r} {problem}")
        if problem := label_value_error(val):
            raise click.BadParameter(f"{raw!r}: value {val!r} {problem}")
        if labels.get(key, val) != val:
            raise click.BadParameter(f"label {key!r} given twice with different values")
        labels[key] = val
    return labels


def _check_quantity(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is not None:
        try:
            parse_quantity(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _check_host_path_grants(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> list[str]:
    from p2pkube.runtime.hostpaths import parse_grants

    try:
        parse_grants(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return list(value)


def _check_addresses(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> list[str]:
    for address in value:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise click.BadParameter(f"{address!r} is not an IP address") from None
    return list(value)


def join_token(ctx: click.Context, token: str | None, token_file: Path | None) -> str:
    """The join token of ``p2pkube join``: --token-file, else --token or $P2PKUBE_TOKEN
    (a file given on the command line wins over the environment); checked for strength."""
    from signaling.protocol import token_problem

    warn_token_in_argv(ctx)
    from_argv = ctx.get_parameter_source("token") is click.core.ParameterSource.COMMANDLINE
    if token_file is not None and token is not None and from_argv:
        raise click.UsageError("give either --token or --token-file, not both")
    hint = "'--token'" if from_argv else "'$P2PKUBE_TOKEN'"
    if token_file is not None:
        token, hint = read_token_file(token_file), f"'--token-file' ({token_file})"
    if not token:
        raise click.UsageError(
            "a join token is required: give --token-file FILE or set $P2PKUBE_TOKEN"
        )
    if problem := token_problem(token):
        raise click.BadParameter(problem, param_hint=hint)
    return token


def read_token_file(path: Path) -> str:
    """The first line of ``path`` that is neither blank nor a ``#`` comment."""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped
    raise click.BadParameter(f"{path} holds no token", param_hint="'--token-file'")


@cli.command()
@click.argument("url", callback=_check_url)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="File whose first non-comment line is the join token.",
)
@click.option(
    "--token",
    envvar="P2PKUBE_TOKEN",
    default=None,
    help="Join token (also $P2PKUBE_TOKEN; on the command line, other users see it in ps).",
)
@click.option("--name", required=True, callback=_check_name, help="Node name (a DNS label).")
@data_dir_option
@click.option(
    "--label", "labels", multiple=True, callback=_check_labels, help="Node label k=v (repeat)."
)
@click.option(
    "--max-peers",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Most direct neighbours.",
)
@click.option(
    "--ice-address",
    "ice_addresses",
    multiple=True,
    callback=_check_addresses,
    help="Extra address to offer as an ICE host candidate, e.g. 127.0.0.1 (repeat).",
)
@click.option("--cpu", default=None, callback=_check_quantity, help="CPU to offer (e.g. 2).")
@click.option(
    "--memory", default=None, callback=_check_quantity, help="Memory to offer (e.g. 4Gi)."
)
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Local API port (0: any free port).",
)
@click.option(
    "--allow-host-path",
    "allowed_host_paths",
    multiple=True,
    metavar="PREFIX[:rw]",
    callback=_check_host_path_grants,
    help="Let pods mount hostPath directories under PREFIX, read-only unless :rw (repeat; "
    "default: none). The data dir is never mountable.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.FIELD=VALUE",
    help="Override an agent setting, e.g. membership.node_timeout=1.5 (repeat).",
)
@click.option("--log-level", type=LOG_LEVELS, default="info", show_default=True)
@click.pass_context
def join(
    ctx: click.Context,
    url: str,
    token_file: Path | None,
    token: str | None,
    name: str,
    labels: dict[str, str],
    max_peers: int,
    ice_addresses: list[str],
    cpu: str | None,
    memory: str | None,
    api_port: int,
    allowed_host_paths: list[str],
    overrides: tuple[str, ...],
    log_level: str,
) -> None:
    """Run an agent here and join the cluster.

    URL is the signaling server, e.g. ws://127.0.0.1:8787.
    """
    token = join_token(ctx, token, token_file)
    from p2pkube.agent import JoinOptions, run_agent
    from p2pkube.settings import AgentSettings

    probe = AgentSettings()  # reject a bad --set now, as a usage error, not from inside the agent
    try:
        for assignment in overrides:
            probe.override(assignment)
        probe.check()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--set'") from None
    state: State = ctx.obj
    options = JoinOptions(
        signaling_url=url,
        token=token,
        name=name,
        data_dir=state.data_dir,
        labels=labels,
        max_peers=max_peers,
        ice_addresses=ice_addresses,
        cpu=cpu,
        memory=memory,
        api_port=api_port,
        overrides=list(overrides),
        allowed_host_paths=allowed_host_paths,
        log_level=log_level.lower(),
    )
    ctx.exit(int(run_agent(options)))


# --- get / create / delete -------------------------------------------------------------------


def _resource(name: str) -> Resource:
    resource = find_resource(name)
    if resource is None:
        known = ", ".join(r.plural for r in RESOURCES)
        raise CliError(f'the server doesn\'t have a resource type "{name}" (known: {known})')
    return resource


@cli.command(cls=KubectlCommand)
@click.argument("resource_name", metavar="RESOURCE")
@click.argument("name", required=False)
@namespace_option
@all_namespaces_option
@selector_option
@click.option(
    "-o", "--output", type=click.Choice(OUTPUT_FORMATS), default=None, help="Output format."
)
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
      configmaps (cm)           events (ev)
      blobs (blob)
    or TYPE/NAME (deployment/web).

    -w/--watch lists the objects, then prints a row for every change the agent's watch
    stream reports (a DELETED object's last row too) until Ctrl-C or --request-timeout;
    --watch-only skips the list. Every kind but blobs can be watched.
    """
    if name is None and "/" in resource_name:
        resource_name, _, name = resource_name.partition("/")
        if not name:
            raise click.UsageError(f"{resource_name}/ names no object")
    resource = _resource(resource_name)
    if resource.kind == "Blob" and selector is not None:
        raise click.UsageError("blobs have no labels: -l/--selector does not apply")
    if name is not None and selector is not None:
        raise click.UsageError("a NAME and -l/--selector cannot be used together")
    if name is not None and all_namespaces:
        raise click.UsageError("a resource cannot be retrieved by name across all namespaces")
    watching = watch or watch_only
    if watching and not resource.watchable:
        raise click.UsageError(f"{resource.plural} cannot be watched (-w/--watch)")
    if not watching and (output_watch_events or request_timeout is not None):
        raise click.UsageError("--output-watch-events and --request-timeout go with -w/--watch")
    client = state.client()
    ns = _scope(resource, namespace, all_namespaces)
    columns = resource.columns
    if resource.namespaced and ns is None:
        columns = (NAMESPACE_COLUMN, *columns)
    if watching:
        _watch(
            client,
            resource,
            ns,
            name,
            selector,
            columns,
            output or "",
            list_first=not watch_only,
            with_events=output_watch_events,
            timeout=request_timeout or 0,
        )
        return
    items = _list(client, resource, ns, name, selector)
    text = render(items, columns, output or "", single=name is not None)
    if text:
        click.echo(text)
    else:
        click.echo(_nothing(resource, ns), err=True)


def _nothing(resource: Resource, ns: str | None) -> str:
    where = f" in {ns} namespace" if resource.namespaced and ns else ""
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


def _watch(
    client: ApiClient,
    resource: Resource,
    ns: str | None,
    name: str | None,
    selector: str | None,
    columns: Sequence[Column],
    output: str,
    *,
    list_first: bool,
    with_events: bool,
    timeout: float,
) -> None:
    """``get -w``: the list (unless --watch-only), then one row (or object, or name) per
    watch event, until Ctrl-C (exit 0), the timeout (exit 0) or a failed watch (exit 1).

    The watch stream starts with every current object as ADDED; those already printed by the
    list, unchanged, are skipped, so each object shows up once and then at every change. A
    table skips a MODIFIED object whose row would read as the last one printed for it (its
    change is in a field no column shows); -o json|yaml|name print every event.
    """
    items = _list(client, resource, ns, name, selector)
    known = {_object_key(o): _comparable(o) for o in items}
    shown = shown_columns(columns, output)
    headers = [c.header for c in shown]
    if with_events:
        headers = ["EVENT", *headers]
    printer = RowPrinter(headers)
    count = 0
    last_rows: dict[tuple[str, str], list[Any]] = {
        _object_key(o): [c.value(o) for c in shown] for o in items
    }

    def emit(event_type: str, obj: dict[str, Any]) -> None:
        nonlocal count
        if output in ("json", "yaml"):
            value = {"type": event_type, "object": obj} if with_events else obj
            if output == "yaml" and count:
                click.echo("---")
            click.echo(dump(value, output).rstrip("\n"))
        elif output == "name":
            click.echo(object_name(obj))
        else:
            row = [c.value(obj) for c in shown]
            for line in printer.lines([event_type, *row] if with_events else row):
                click.echo(line)
        count += 1

    if list_first:
        if output in ("", "wide") and items:
            rows = [[c.value(o) for c in shown] for o in items]
            if with_events:
                rows = [["ADDED", *row] for row in rows]
            click.echo(table(headers, rows))
            printer.seed(rows)
            count = len(items)
        elif items:
            for obj in items:
                emit("ADDED", obj)
        else:
            click.echo(_nothing(resource, ns), err=True)
    seconds = min(MAX_WATCH_SECONDS, math.ceil(timeout)) if timeout > 0 else MAX_WATCH_SECONDS
    events = client.watch(resource.kind, ns, selector, timeout_seconds=max(1, seconds))
    try:
        for event in events:
            event_type = str(event.get("type", ""))
            obj = event.get("object") or {}
            if event_type == "ERROR":
                raise CliError(f"the watch ended: {obj.get('message', obj)}")
            if name is not None and field(obj, "metadata.name") != name:
                continue
            key = _object_key(obj)
            listed = known.pop(key, None)
            if event_type == "ADDED" and listed is not None and listed == _comparable(obj):
                continue  # the list showed it as it is
            if output in ("", "wide"):
                row = [c.value(obj) for c in shown]
                if event_type == "MODIFIED" and last_rows.get(key) == row:
                    continue  # a change the table does not show (a DELETED row always shows)
                last_rows[key] = row
            emit(event_type, obj)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends
    finally:
        events.close()


def _object_key(obj: dict[str, Any]) -> tuple[str, str]:
    return (str(field(obj, "metadata.namespace", "")), str(field(obj, "metadata.name", "")))


def _scope(resource: Resource, namespace: str | None, all_namespaces: bool) -> str | None:
    """The namespace to ask for: None for all, "" for cluster-scoped kinds."""
    if not resource.namespaced:
        return ""
    if all_namespaces:
        return None
    return namespace or DEFAULT_NAMESPACE


@cli.group()
def create() -> None:
    """Create an object."""


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
            resource = _resource(kind)
            targets.append((resource, _scope(resource, ns or namespace, False) or "", name))
    else:
        if not resource_name or not names:
            raise click.UsageError("give RESOURCE NAME... or -f FILE")
        resource = _resource(resource_name)
        ns = _scope(resource, namespace, all_namespaces=False) or ""
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


cli.add_command(apply)
cli.add_command(logs)
cli.add_command(describe)
cli.add_command(scale)
cli.add_command(rollout)


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
