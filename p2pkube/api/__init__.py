"""The agent's local API: the HTTP surface the ``p2pkube`` CLI talks to.

``server.ApiServer`` serves it from inside the agent, ``client.ApiClient`` calls it from the
CLI, and ``backend.AgentBackend`` is the narrow interface between the server and the agent.

This package is HTTP only: the object model (names, selectors, validation, the object service)
is ``p2pkube.model``. ``ApiServer`` and ``ApiClient`` are re-exported lazily so that importing
the package does not import aiohttp, which would add ~0.3 s to every CLI command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2pkube.api.client import ApiClient, ApiClientError, ApiError
    from p2pkube.api.server import ApiServer

__all__ = [
    "EMPTY_NAMESPACE",
    "INFO_FILE",
    "KUBE_CERT_FILE",
    "KUBE_KEY_FILE",
    "TOKEN_FILE",
    "ApiClient",
    "ApiClientError",
    "ApiError",
    "ApiServer",
]

# What the server publishes in the data dir and how URLs spell namespace "" (cluster-scoped).
TOKEN_FILE = "api.token"
INFO_FILE = "api.json"
KUBE_CERT_FILE = "kube-apiserver.crt"
"""The Kubernetes API's certificate (``api.kube.tls``), which a kubeconfig trusts."""
KUBE_KEY_FILE = "kube-apiserver.key"
EMPTY_NAMESPACE = "_"

_LAZY = {
    "ApiServer": "p2pkube.api.server",
    "ApiClient": "p2pkube.api.client",
    "ApiClientError": "p2pkube.api.client",
    "ApiError": "p2pkube.api.client",
}


def __getattr__(name: str) -> Any:
    """Import ``ApiServer``/``ApiClient`` on first use so the package import stays cheap."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
