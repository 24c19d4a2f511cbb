"""RFC 3339 timestamps as Kubernetes writes them (``2026-11-27T07:00:00Z``).

Every timestamp the cluster stores (``creationTimestamp``, ``startTime``, ``lastTimestamp``,
heartbeat times ...) is a string made by ``utc_now``, and every reader goes through
``parse_datetime`` (the one parser), so writer and readers cannot drift apart. Standard library
only: the agent, the browser node and the CLI all import it.

The module is not called ``time`` so that ``from p2pkube.model import time`` can never shadow the
standard library's ``time`` in a module that uses both (the kubelet does).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["parse_datetime", "parse_time", "utc_now"]

_last: tuple[int, str] = (-1, "")
"""The last second formatted and its text: HTTP handler pods stamp every request's instance
(start and end), so formatting once per second keeps strftime off that path. A tuple swapped
whole, so threads (the native runtime's) read a consistent pair."""


def utc_now() -> str:
    """Now as an RFC 3339 timestamp like Kubernetes prints (second precision, ``Z``)."""
    global _last
    second = int(time.time())
    cached_second, text = _last
    if second != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        _last = (second, text)
    return text


def parse_datetime(text: object) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime; None if absent or unreadable.

    The value may come from a peer or a manifest, so anything that is not a non-empty string
    parses to None rather than raising. ``Z`` and numeric offsets are honoured; a timestamp
    without an offset is taken as UTC (Kubernetes writes only UTC).
    """
    if not isinstance(text, str) or not text:
        return None
    try:
        then = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return then if then.tzinfo is not None else then.replace(tzinfo=UTC)


def parse_time(text: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp (``parse_datetime``); None if absent
    or unreadable. What the controllers and the kubelet compare with ``time.time()``."""
    then = parse_datetime(text)
    return None if then is None else then.timestamp()
