"""The metrics section of the agent settings (``--set metrics.FIELD=VALUE``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass
class MetricsSettings:
    address: str = ""
    """``HOST:PORT`` where the agent serves ``/metrics`` for Prometheus (``p2pkube join
    --metrics-address``; port 0: any free port, published as ``metricsUrl`` in api.json);
    empty: no metrics at all, nothing measured. Served without the local API's token, as
    Prometheus scrapes: bind it to loopback or a trusted network (it carries no secrets)."""
    loop_lag_interval: float = 0.5
    """Seconds between the event-loop lag checks (while metrics are on): a task sleeps this
    long and records how much later than asked it woke, which is how long the loop was busy
    with something else. It wakes on the process's beat of this period (``p2pkube.ticker``),
    with the agent's other chores, so it adds no wake-up of its own; it catches stalls of a
    few milliseconds up."""

    def check(self) -> None:
        """ValueError when a setting is unusable."""
        if self.address:
            parse_address(self.address)
        if not self.loop_lag_interval > 0:
            raise ValueError("metrics.loop_lag_interval must be above 0")


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets: ``[::1]:9100``) as (host, port); ValueError
    saying what is wrong otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"metrics address {text!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"metrics address {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"metrics address {text!r}: put an IPv6 host in brackets ([::1]:9464)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics address {text!r}: port {port!r} is not 0..65535")
    return host, int(port)
