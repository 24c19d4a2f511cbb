"""kubectl's proxy paths into a Service or a pod, parsed without a web framework:

    /api/v1/namespaces/NS/services/[http:]NAME[:PORT]/proxy/PATH
    /api/v1/namespaces/NS/pods/[http:]NAME[:PORT]/proxy/PATH

The browser tab's Service Worker front door (``p2pkube/browser/proxy.py``) parses the URLs it is
handed with this; the same rules as the local API's routes (``api/proxyroutes.py``), which match
with aiohttp's router. Pure standard library: the browser node imports it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from p2pkube.services.types import HttpError, ServiceTarget

PROXY_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/([^/]+)/([^/]+)/proxy(/.*)?")
"""A proxy path, percent-encoded as it came: namespace, resource, ``[http:]NAME[:PORT]``, PATH."""

RESOURCES = {"services": False, "pods": True}
"""URL resource -> whether the target is one pod."""


def is_proxy_path(path: str) -> bool:
    """Whether a (percent-encoded) URL path is a proxy path at all."""
    return PROXY_PATH.fullmatch(path) is not None


def proxy_target(namespace: str, resource: str, spec: str) -> ServiceTarget:
    """The target of ``[http:]NAME[:PORT]``; HttpError 404/400 for what cannot be one."""
    if resource not in RESOURCES:
        raise HttpError(404, f"no proxy for {resource!r}: only services and pods")
    parts = spec.split(":")
    if len(parts) == 3:
        scheme, name, port = parts
        if scheme not in ("", "http"):
            raise HttpError(400, f"scheme {scheme!r}: handlers speak plain http")
    elif len(parts) == 2:
        name, port = parts
    elif len(parts) == 1:
        name, port = parts[0], ""
    else:
        raise HttpError(400, f"{spec!r} is not [http:]NAME[:PORT]")
    if not name:
        raise HttpError(400, f"{spec!r} names no {resource[:-1]}")
    return ServiceTarget(namespace, name, port, pod=RESOURCES[resource])


def parse_proxy_path(path: str) -> tuple[ServiceTarget, str]:
    """The target and the handler's PATH_INFO (percent-decoded, "/" when empty) of a
    percent-encoded proxy path; HttpError 404 when it is no proxy path, 400 when malformed.

    The path is split before it is decoded, so an encoded "/" in PATH stays inside PATH_INFO
    and cannot move the namespace or the name."""
    match = PROXY_PATH.fullmatch(path)
    if match is None:
        raise HttpError(
            404, f"{path!r} is no proxy path (/api/v1/namespaces/NS/services/NAME/proxy/)"
        )
    namespace, resource, spec, rest = (unquote(part or "") for part in match.groups())
    if not namespace or "/" in namespace or "/" in spec:
        raise HttpError(400, f"{path!r}: a namespace or name with a '/' in it")
    return proxy_target(namespace, resource, spec), rest or "/"
