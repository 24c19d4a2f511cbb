"""Admission control of the signaling server: how much one socket and one address may ask.

* the per-socket message rate limit and each address's failed-join budget are
  :class:`p2pkube.pacing.TokenBucket` s of one token per message or failure;
* :func:`throttle_key` and :class:`JoinThrottle`: failed joins per client
  address (an IPv6 host per /64), in a table of bounded size;
* :func:`signature_valid`: the synchronous Ed25519 check of a join's signature.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from p2pkube.pacing import TokenBucket

from .settings import SignalingSettings

__all__ = ["JoinThrottle", "signature_valid", "throttle_key"]


def throttle_key(remote: str) -> str:
    """The unit failed joins are counted per: the IPv4 address, or the IPv6 /64.

    One IPv6 host usually has a whole /64 to pick addresses from, so counting
    per address would give it billions of buckets.
    """
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class _Failures:
    """One address's failed joins: its bucket, and its refusals not logged yet."""

    bucket: TokenBucket
    refused: int = 0
    logged: float = float("-inf")


class JoinThrottle:
    """Failed joins per client address, in a table of bounded size.

    Each address (:func:`throttle_key`) that failed a join has a
    :class:`TokenBucket` of ``join_failure_burst`` tokens refilled at
    ``join_failures_per_second``; each failure spends one.  An address without
    a token is refused before its join is checked.  Addresses that never failed
    have no entry, so honest clients cost nothing; the table keeps the
    ``join_failure_addresses`` most recent failers (least recently failed go
    first), so it cannot be grown without bound.
    """

    def __init__(self, settings: SignalingSettings, clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._clock = clock
        self._entries: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def allows(self, remote: str) -> bool:
        """True if a join from ``remote`` may be checked now."""
        entry = self._entries.get(throttle_key(remote))
        return entry is None or entry.bucket.has(1.0, self._clock())

    def failed(self, remote: str) -> None:
        """Count one failed join from ``remote``."""
        key = throttle_key(remote)
        entry = self._entries.get(key)
        if entry is None:
            settings = self._settings
            bucket = TokenBucket(settings.join_failures_per_second, settings.join_failure_burst)
            entry = self._entries[key] = _Failures(bucket)
            while len(self._entries) > settings.join_failure_addresses:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        entry.bucket.take(1.0, self._clock())

    def refused(self, remote: str) -> int:
        """Count a join refused unchecked; return how many to log now (0: not yet)."""
        entry = self._entries.get(throttle_key(remote))
        if entry is None:
            return 0
        entry.refused += 1
        now = self._clock()
        if now - entry.logged < self._settings.join_refusal_log_interval:
            return 0
        count, entry.refused, entry.logged = entry.refused, 0, now
        return count


def signature_valid(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s Ed25519 signature of ``message``.

    Synchronous on purpose (~0.1 ms): a join is checked and its failure counted
    without an ``await`` in between, so parallel guesses cannot all pass the
    throttle before the first one is counted.
    """
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
