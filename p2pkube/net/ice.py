"""The one place that decides how ICE is configured: host addresses and STUN/TURN servers.

aioice gathers host candidates from ``aioice.ice.get_host_addresses`` and always skips
127.0.0.1, so two agents on a loopback-only machine could never connect. Rather than patch
call sites, the agent calls :func:`use_host_addresses` once at start with the
``ice_host_addresses`` setting; an empty list keeps aioice's own behaviour (every address of
every interface but loopback, which in a container or a network namespace is its own).

:func:`ice_servers` turns ``transport.ice_servers`` and the TURN credentials into aiortc's
``RTCIceServer`` list, refusing at start what aiortc would otherwise reject (or silently
ignore) at every link.
"""

from __future__ import annotations

import math
from pathlib import Path

import aioice.ice
from aiortc import RTCIceServer
from aiortc.rtcicetransport import parse_stun_turn_uri

from p2pkube.net.settings import TransportSettings

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


def use_consent_timeout(seconds: float) -> None:
    """Let aioice close a connection only after ``seconds`` of failed consent checks.

    aioice checks consent (RFC 7675) every ~5 s with one STUN request that must be answered
    within 0.5 s, no retransmission, and closes the connection after six failures in a row.
    On a loaded machine an answer often takes longer than 0.5 s (the peer's loop or the
    scheduler is busy): with 40 agents on 2 cores nearly every check failed, so every link
    died ~30 s after it was made, and re-linking (a DTLS handshake each) kept the machine
    loaded: 2,000 links rebuilt in three minutes, and a live node declared dead over and
    over. The link's own watchdog (``link_idle_timeout``) already closes a link whose peer
    went silent, on authenticated frames rather than on a STUN answer's timing, so aioice's
    check is only a backstop here."""
    aioice.ice.CONSENT_FAILURES = max(1, math.ceil(seconds / aioice.ice.CONSENT_INTERVAL))


def ice_servers(settings: TransportSettings) -> list[RTCIceServer]:
    """The STUN/TURN servers for every RTCPeerConnection; ValueError naming the setting when
    a URL is malformed or uses a transport aiortc ignores, a TURN URL has no credentials, or
    the credential file is unreadable.

    aiortc takes the first ``stun:`` and the first ``turn:``/``turns:`` URL it can use and
    ignores the rest; each TURN URL gets ``ice_username`` and the credential."""
    credential = settings.ice_credential
    if settings.ice_credential_file:
        path = Path(settings.ice_credential_file).expanduser()
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"transport.ice_credential_file: cannot read {path}: {exc}") from None
        credential = lines[0].strip() if lines else ""
        if not credential:
            raise ValueError(f"transport.ice_credential_file: {path} is empty")
    servers = []
    for url in settings.ice_servers:
        try:
            parsed = parse_stun_turn_uri(url)
        except ValueError as exc:
            raise ValueError(
                f"transport.ice_servers: {url!r} is not a STUN/TURN URL ({exc}); expected "
                "stun:HOST:PORT, turn:HOST:PORT[?transport=udp|tcp] or "
                "turns:HOST:PORT?transport=tcp"
            ) from None
        scheme, transport = parsed["scheme"], parsed.get("transport")
        if (scheme == "turn" and transport not in ("udp", "tcp")) or (
            scheme == "turns" and transport != "tcp"
        ):
            raise ValueError(
                f"transport.ice_servers: {url!r}: aiortc supports turn: over udp or tcp and "
                "turns: over tcp only"
            )
        if scheme in ("turn", "turns"):
            if not settings.ice_username or not credential:
                raise ValueError(
                    f"transport.ice_servers: {url!r} needs transport.ice_username and "
                    "transport.ice_credential (or transport.ice_credential_file)"
                )
            servers.append(
                RTCIceServer(urls=url, username=settings.ice_username, credential=credential)
            )
        else:
            servers.append(RTCIceServer(urls=url))
    return servers
