"""``p2pkube proxy`` and ``p2pkube port-forward``: reach Services and pods from this machine
through the local agent, as ``kubectl proxy`` and ``kubectl port-forward`` do.

Both run a :class:`~p2pkube.api.forward.Forwarder` (one implementation) until Ctrl-C: a
listener on 127.0.0.1 that forwards HTTP to the agent's proxy routes with the agent's token.
aiohttp is imported inside the commands so other commands stay fast.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import click

from p2pkube.api.client import ApiError
from p2pkube.cli.common import DEFAULT_NAMESPACE, CliError, State, data_dir_option, namespace_option

if TYPE_CHECKING:
    from aiohttp import web

    from p2pkube.api.forward import Forwarder, PathMap

PROXY_PATH = re.compile(r"/api/v1/namespaces/[^/]+/(services|pods)/[^/]+/proxy(/.*)?")
"""The paths ``p2pkube proxy`` serves (kubectl's); anything else is 404 there."""


def proxy_path_map(request: web.BaseRequest) -> str:
    """``p2pkube proxy``: the agent's own proxy path, as asked."""
    from p2pkube.services.types import HttpError

    if not PROXY_PATH.fullmatch(request.path):
        raise HttpError(
            404,
            "p2pkube proxy serves /api/v1/namespaces/NS/services/NAME[:PORT]/proxy/PATH "
            "and /api/v1/namespaces/NS/pods/NAME[:PORT]/proxy/PATH only",
        )
    return request.rel_url.raw_path_qs


def target_path_map(namespace: str, resource: str, name: str, port: str) -> PathMap:
    """``port-forward``: every path below the one target's proxy path."""
    prefix = f"/api/v1/namespaces/{quote(namespace)}/{resource}/{quote(name)}:{quote(port)}/proxy"

    def path_map(request: web.BaseRequest) -> str:
        return prefix + request.rel_url.raw_path_qs

    return path_map


async def _serve(make: Callable[[], Forwarder], banner: Callable[[Forwarder], str]) -> None:
    """Run a forwarder until SIGINT/SIGTERM; its listener and session always closed."""
    from p2pkube.api.client import ApiClientError

    forwarder = make()  # in the loop: aiohttp's server wants one

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await forwarder.start()
    except ApiClientError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot listen on {forwarder.address}: {exc.strerror or exc}") from None
    try:
        click.echo(banner(forwarder))
        sys.stdout.flush()
        await stop.wait()
    finally:
        await forwarder.stop()


def _run(
    data_dir: Path, path_map: PathMap, address: str, port: int, banner: Callable[[Forwarder], str]
) -> None:
    from p2pkube.api.forward import Forwarder

    asyncio.run(_serve(lambda: Forwarder(data_dir, path_map, address, port), banner))


@click.command()
@click.option(
    "-p",
    "--port",
    type=click.IntRange(0, 65535),
    default=8001,
    show_default=True,
    help="Port to serve on (0: any free one).",
)
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to serve on.")
@data_dir_option
@click.pass_obj
def proxy(state: State, port: int, address: str) -> None:
    """Serve Services and pods on this machine, as kubectl proxy does.

    http://ADDRESS:PORT/api/v1/namespaces/NS/services/NAME[:PORT]/proxy/PATH (and
    .../pods/NAME[:PORT]/proxy/PATH) go to the Service through the local agent, which adds
    its token: anyone who can reach ADDRESS:PORT can use it, so keep it on loopback.
    Runs until Ctrl-C.
    """
    _run(
        state.data_dir,
        proxy_path_map,
        address,
        port,
        lambda f: f"Starting to serve on {f.address}",
    )


@click.command("port-forward")
@click.argument("target", metavar="svc/NAME|pod/NAME")
@click.argument("ports", metavar="[LOCAL:]PORT", nargs=-1, required=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@namespace_option
@data_dir_option
@click.pass_obj
def port_forward(
    state: State, target: str, ports: tuple[str, ...], address: str, namespace: str | None
) -> None:
    """Forward a local port to a Service's port or a pod's, as kubectl port-forward does.

    PORT is the Service port (or the pod's containerPort), by number or name; LOCAL defaults
    to PORT when it is a number, and an empty LOCAL (:PORT) picks a free one. Requests are
    forwarded as HTTP through the local agent (handler pods speak HTTP only). Runs until
    Ctrl-C.
    """
    kind, resource, name = _target(target)
    if len(ports) != 1:
        raise click.UsageError("give one [LOCAL:]PORT (one listener per command)")
    local, remote = _ports(ports[0])
    ns = namespace or DEFAULT_NAMESPACE
    try:  # a typo is an error now, not a 404 on every request later (as kubectl does)
        state.client().get_object(kind, ns, name)
    except ApiError as exc:
        raise CliError(
            f'{resource} "{name}" not found in namespace {ns}' if exc.code == 404 else str(exc)
        ) from None
    _run(
        state.data_dir,
        target_path_map(ns, resource, name, remote),
        address,
        local,
        lambda f: f"Forwarding from {f.address} -> {remote}",
    )


def _target(text: str) -> tuple[str, str, str]:
    """``svc/NAME`` / ``service/NAME`` / ``pod/NAME`` (or a bare pod NAME, as kubectl)."""
    kind_text, slash, name = text.partition("/")
    if not slash:
        kind_text, name = "pod", text
    kinds = {
        "svc": "Service",
        "service": "Service",
        "services": "Service",
        "pod": "Pod",
        "pods": "Pod",
        "po": "Pod",
    }
    kind = kinds.get(kind_text.lower())
    if kind is None or not name:
        raise click.BadParameter(f"{text!r}: want svc/NAME or pod/NAME", param_hint="'TARGET'")
    return kind, "services" if kind == "Service" else "pods", name


def _ports(text: str) -> tuple[int, str]:
    """``[LOCAL:]PORT`` -> (local port, 0 for any; remote port number or name)."""
    local_text, colon, remote = text.rpartition(":")
    if not colon:
        local_text, remote = remote, remote
    if not remote:
        raise click.BadParameter(f"{text!r} names no PORT", param_hint="'[LOCAL:]PORT'")
    if local_text == "":
        return 0, remote
    if not local_text.isdigit() or not 0 <= int(local_text) <= 65535:
        raise click.BadParameter(
            f"{text!r}: LOCAL must be a port number (give LOCAL:NAME for a named port)",
            param_hint="'[LOCAL:]PORT'",
        )
    return int(local_text), remote
