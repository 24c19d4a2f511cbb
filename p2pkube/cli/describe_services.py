"""``describe service``: kubectl's ServiceDescriber, with the endpoints every node computes.

p2pkube gives a Service no virtual IP, so the IP, IPs, IP Families and Session Affinity lines
of kubectl are left out; each port's Endpoints line lists its ready endpoints as
``node/pod:port`` (three, then ``+ N more...``).
"""

from __future__ import annotations

from typing import Any

from p2pkube.cli.describe_sections import Lookup, events, header
from p2pkube.cli.kinds import format_endpoints
from p2pkube.cli.output import field, format_selector
from p2pkube.cli.tabwriter import Writer


def _endpoints_of(svc: dict[str, Any], lookup: Lookup) -> dict[str, Any]:
    """The Service's computed Endpoints object ({} if the agent shows none)."""
    name = field(svc, "metadata.name")
    for endpoints in lookup.objects("Endpoints", field(svc, "metadata.namespace") or "default"):
        if field(endpoints, "metadata.name") == name:
            return endpoints
    return {}


def describe_service(svc: dict[str, Any], lookup: Lookup) -> str:
    """kubectl's ServiceDescriber: selector, type, each port with its target, NodePort and
    endpoints, then the events."""
    w = Writer()
    spec = svc.get("spec") or {}
    header(w, svc)
    w.line(0, "Selector:", format_selector(spec.get("selector")))
    w.line(0, "Type:", spec.get("type") or "ClusterIP")
    endpoints = _endpoints_of(svc, lookup)
    for port in spec.get("ports") or []:
        if not isinstance(port, dict):
            continue
        name = port.get("name") or "<unset>"
        protocol = port.get("protocol") or "TCP"
        w.line(0, "Port:", name, f"{port.get('port')}/{protocol}")
        w.line(0, "TargetPort:", f"{port.get('targetPort', port.get('port'))}/{protocol}")
        if port.get("nodePort"):
            w.line(0, "NodePort:", name, f"{port['nodePort']}/{protocol}")
        w.line(0, "Endpoints:", format_endpoints(endpoints, port.get("name") or ""))
    events(w, lookup.events(svc))
    return w.text()
