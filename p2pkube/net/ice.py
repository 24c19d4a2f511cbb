"""The one place that decides which host addresses aioice offers as ICE candidates.

aioice gathers host candidates from ``aioice.ice.get_host_addresses`` and always skips
127.0.0.1, so two agents on a loopback-only machine could never connect. Rather than patch
call sites, the agent calls :func:`use_host_addresses` once at start with the
``ice_host_addresses`` setting; an empty list keeps aioice's own behaviour.
"""

from __future__ import annotations

import aioice.ice

_original = aioice.ice.get_host_addresses


def use_host_addresses(addresses: list[str]) -> None:
    """Offer exactly ``addresses`` (IPv4/IPv6 strings) as host candidates from now on."""
    if not addresses:
        aioice.ice.get_host_addresses = _original
        return
    fixed = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses
