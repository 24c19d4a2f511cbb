"""The long-running commands and their secret: ``signal`` (the rendezvous server), ``join``
(an agent here) and ``token`` (the join token they share).

The agent and the signaling server are imported inside their commands, so loading the CLI
for ``p2pkube get`` does not load them (nor depend on the state of their modules).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from p2pkube.cli.common import CliError, State, data_dir_option
from p2pkube.logformat import LOG_FORMATS, JsonFormatter, configure_logging
from p2pkube.membership.settings import LIVENESS_PROFILES
from p2pkube.model.names import dns_label_error, label_key_error, label_value_error
from p2pkube.model.quantity import parse_quantity

if TYPE_CHECKING:
    from signaling.server import SignalingServer

# --- signal ----------------------------------------------------------------------------------


LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)


def log_format_option(func: Any) -> Any:
    """``--log-format text|json`` of the long-running commands (``p2pkube.logformat``)."""
    return click.option(
        "--log-format",
        type=click.Choice(LOG_FORMATS),
        default="text",
        show_default=True,
        help="text: one line per record; json: one JSON object per line on stderr (time, "
        "level, logger, message, exception), for log collectors.",
    )(func)


@click.command()
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
@log_format_option
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
    log_format: str,
) -> None:
    """Run the signaling server agents use to find each other.

    Without a token (--token-file, $P2PKUBE_TOKEN) or --verifier-file a fresh token is
    generated and printed. The server keeps only each cluster's verifier, never a token:
    agents prove they hold the token without sending it. It also serves the page that
    makes a browser tab a node: http://HOST:PORT/#token=TOKEN (the token stays in the URL
    fragment, which browsers never send to the server).
    """
    from p2pkube.net.jointoken import Verifier
    from signaling.server import run_server
    from signaling.tokens import load_tokens, load_verifiers

    configure_logging(log_level, log_format)
    warn_token_in_argv(ctx, log_format)
    try:
        verifiers = load_verifiers(verifier_file) if verifier_file is not None else []
        if token is None and token_file is None and verifiers:
            tokens: list[str] = []
            generated = False
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
    no_page = ""  # why there is no page, said once the server listens
    if no_web:
        web_root = None
    elif web_root is None:
        # The bundle beside the installed package: a wheel carries it, make browser builds it.
        built = Path(__file__).resolve().parent.parent / "browser" / "dist"
        web_root = built if (built / "index.html").is_file() else None
        if web_root is None:
            no_page = (
                f"no browser bundle in {built}: build it with `make browser` "
                "or install a wheel that carries it"
            )
    elif not (web_root / "index.html").is_file():
        raise CliError(f"--web-root {web_root} has no index.html (build it: make browser)")

    def ready(server: SignalingServer) -> None:
        click.echo(f"signaling server: {server.url}")
        if web_root is not None:
            click.echo(f"browser node page: {page_url(server)}#token={page_token}")
        elif no_page:
            click.echo(no_page)
        sys.stdout.flush()

    try:
        # returns on SIGINT/SIGTERM
        run_server(host, port, verifiers, on_ready=ready, web_root=web_root)
    except OSError as exc:  # typically: address already in use
        raise CliError(f"cannot listen on {host}:{port}: {exc}") from None


def page_url(server: SignalingServer) -> str:
    """The browser node page's ``http://HOST:PORT/`` as a browser on this machine opens it: a
    wildcard listen address (``--host 0.0.0.0`` or ``::``) is no address to open, so the
    loopback stands in (browsers elsewhere use this machine's address)."""
    try:
        wildcard = ipaddress.ip_address(server.host).is_unspecified
    except ValueError:  # a host name
        wildcard = False
    if not wildcard:
        return server.http_url
    loopback = "[::1]" if ":" in server.host else "127.0.0.1"
    return f"http://{loopback}:{server.port}/"


def warn_token_in_argv(ctx: click.Context, log_format: str = "text") -> None:
    """Warn on stderr when --token was given on the command line, where ps shows it."""
    if ctx.get_parameter_source("token") is click.core.ParameterSource.COMMANDLINE:
        warning = (
            "--token on the command line is visible to every user of this machine "
            "(ps, /proc); use --token-file FILE or $P2PKUBE_TOKEN"
        )
        if log_format == "json":  # stderr carries JSON only
            record = logging.makeLogRecord(
                {"name": "p2pkube.cli", "levelno": logging.WARNING, "levelname": "WARNING",
                 "msg": warning}
            )  # fmt: skip
            click.echo(JsonFormatter().format(record), err=True)
        else:
            click.echo(f"warning: {warning}", err=True)


# --- token -----------------------------------------------------------------------------------


@click.command()
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
    from p2pkube.net.jointoken import Verifier, check_token, generate_token

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


def _check_optional(parse: Callable[[str], object]) -> Callable[..., str | None]:
    """A click callback that checks an optional value with ``parse`` (ValueError: a bad
    parameter, with the parser's message)."""

    def check(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            try:
                parse(value)
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None
        return value

    return check


def _parse_metrics_address(value: str) -> object:
    from p2pkube.metrics.settings import parse_address  # loaded by join only

    return parse_address(value)


_check_quantity = _check_optional(parse_quantity)
_check_metrics_address = _check_optional(_parse_metrics_address)


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


def _check_node_ip(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an IP address") from None
    return value


def join_token(
    ctx: click.Context, token: str | None, token_file: Path | None, log_format: str = "text"
) -> str:
    """The join token of ``p2pkube join``: --token-file, else --token or $P2PKUBE_TOKEN
    (a file given on the command line wins over the environment); checked for strength."""
    from p2pkube.net.jointoken import token_problem

    warn_token_in_argv(ctx, log_format)
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


@click.command()
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
    "--kube-api-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of the Kubernetes API on 127.0.0.1, over HTTPS (0: any free port; fix it, "
    "e.g. 6443, to keep a kubeconfig valid across restarts but the token). See p2pkube "
    "kubeconfig.",
)
@click.option(
    "--node-ip",
    default="0.0.0.0",
    show_default=True,
    callback=_check_node_ip,
    help="Address this node's NodePorts listen on (as the kubelet's flag), published as the "
    "Node's InternalIP; 0.0.0.0: all interfaces.",
)
@click.option(
    "--metrics-address",
    default=None,
    metavar="HOST:PORT",
    callback=_check_metrics_address,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any free one, see "
    "api.json); off by default. No token: use loopback or a trusted network. See "
    "docs/metrics.md.",
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
    "--liveness",
    type=click.Choice(list(LIVENESS_PROFILES)),
    default="fast",
    show_default=True,
    help="SWIM's timings: fast finds a crash in ~2.5 s (p99 < 3 s); frugal in ~2.8 s (p99 "
    "~4-5 s) for about half an idle agent's CPU (docs/settings.md; --set wins over it).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.FIELD=VALUE",
    help="Override an agent setting, e.g. swim.probe_interval=0.2 (repeat).",
)
@click.option("--log-level", type=LOG_LEVELS, default="info", show_default=True)
@log_format_option
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
    kube_api_port: int,
    node_ip: str,
    metrics_address: str | None,
    allowed_host_paths: list[str],
    liveness: str,
    overrides: tuple[str, ...],
    log_level: str,
    log_format: str,
) -> None:
    """Run an agent here and join the cluster.

    URL is the signaling server, e.g. ws://127.0.0.1:8787.
    """
    token = join_token(ctx, token, token_file, log_format)
    from p2pkube.agent import JoinOptions, run_agent
    from p2pkube.settings import AgentSettings

    overrides = (*LIVENESS_PROFILES[liveness], *overrides)
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
        kube_api_port=kube_api_port,
        overrides=list(overrides),
        allowed_host_paths=allowed_host_paths,
        node_ip=node_ip,
        metrics_address=metrics_address,
        log_level=log_level.lower(),
        log_format=log_format,
    )
    ctx.exit(int(run_agent(options)))
