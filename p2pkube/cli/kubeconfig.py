"""``p2pkube kubeconfig``: a kubeconfig for the local agent's Kubernetes API.

Every native agent serves the Kubernetes API (docs/kubectl.md), over HTTPS with a certificate
of its own data dir. The kubeconfig names that address, trusts that certificate and carries
the agent's bearer token, with a context named after the node, so that
``kubectl --kubeconfig <(p2pkube kubeconfig) get nodes`` works, or the output can be merged
into ``~/.kube/config``. The token is the agent's current one: a restarted agent has a new
token (and, unless ``join --kube-api-port`` fixes it, a new port), so write the kubeconfig
again after a restart.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import click
import yaml

from p2pkube.api import KUBE_CERT_FILE
from p2pkube.api.client import agent_info
from p2pkube.cli.common import CliError, State, data_dir_option

__all__ = ["kubeconfig", "kubeconfig_document", "kubeconfig_for"]


def kubeconfig_for(data_dir: Path, namespace: str = "default") -> dict[str, Any]:
    """The kubeconfig of the agent owning ``data_dir`` (CliError when it serves no
    Kubernetes API)."""
    info, token = agent_info(data_dir)
    server = info.get("kubeUrl")
    if not isinstance(server, str):
        raise CliError(
            f"the agent of {data_dir} serves no Kubernetes API (an older agent, or started "
            "without one); restart it with this version of p2pkube join"
        )
    try:
        certificate = (Path(data_dir).expanduser() / KUBE_CERT_FILE).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the Kubernetes API's certificate: {exc}") from None
    return kubeconfig_document(
        server, certificate, token, str(info.get("node") or "p2pkube"), namespace
    )


def kubeconfig_document(
    server: str, certificate: bytes, token: str, node: str, namespace: str = "default"
) -> dict[str, Any]:
    """A kubeconfig with one context, ``node``: ``server`` trusted through ``certificate``
    (PEM) and a user with ``token``."""
    name = f"p2pkube-{node}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(certificate).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {"name": node, "context": {"cluster": name, "user": name, "namespace": namespace}}
        ],
        "current-context": node,
        "preferences": {},
    }


@click.command()
@click.option(
    "-n", "--namespace", default="default", show_default=True, help="The context's namespace."
)
@click.option(
    "-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
@data_dir_option
@click.pass_obj
def kubeconfig(state: State, namespace: str, output: str) -> None:
    """Print a kubeconfig for the local agent's Kubernetes API.

    \b
    kubectl --kubeconfig <(p2pkube kubeconfig) get nodes
    p2pkube kubeconfig > ~/.kube/p2pkube && KUBECONFIG=~/.kube/p2pkube kubectl get pods
    """
    config = kubeconfig_for(state.data_dir, namespace)
    if output == "json":
        click.echo(json.dumps(config, indent=2))
    else:
        click.echo(yaml.safe_dump(config, sort_keys=False), nl=False)
