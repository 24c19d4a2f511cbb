"""End-to-end signatures on what travels through other nodes: member records and routed
messages.

A link's handshake proves who the *neighbour* is, but SWIM's updates are gossiped and ROUTE
frames relayed, so the node a message speaks for is usually not the neighbour that handed it
over. Without a signature of their own, any member could speak for any other: declare it gone
with a forged LEFT, or fill a node's rpc slots with requests from sources it made up. So the
originator signs with its node key (the Ed25519 key its id is derived from) and the receiver
checks, whatever path the message took.

What is signed is a msgpack array that starts with a domain string (one per kind of message,
so a signature made for one kind never verifies as another, nor as the link handshake's) and
the cluster id (a node in two clusters cannot have one cluster's messages replayed into the
other)::

    transcript := msgpack([domain, cluster, field, ...])

The hop count (``ttl``) is left out: relays decrement it.

Checking is asynchronous (WebCrypto is, in a browser tab), so :class:`Signatures` runs checks
one after another in a task of its own, behind a bounded queue with a share per neighbour:
beyond it a message is dropped (counted), so a neighbour that floods with messages to check
delays only its own. Natively a check is ~0.14 ms and signing ~0.05 ms (``cryptography``;
``bench.bench_idle --microbench``).

This module imports no crypto library: the platform's :class:`~p2pkube.net.keys.NodeKey` and
:data:`~p2pkube.net.keys.SignatureCheck` do the work, so it runs in Pyodide as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgpack

from p2pkube.net.keys import NodeKey, SignatureCheck
from p2pkube.pacing import LogPacer

log = logging.getLogger(__name__)

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32

Checked = Callable[[bool], None]
"""Called with the outcome of one check (True: the signature is valid)."""


def transcript(domain: str, cluster: str, *fields: Any) -> bytes:
    """The bytes a signature covers: ``msgpack([domain, cluster, *fields])``."""
    return msgpack.packb([domain, cluster, *fields], use_bin_type=True)


class LogThrottle:
    """At most one warning per kind per ``interval`` seconds, with how many were left out:
    a peer that sends thousands of bad messages must not fill the log (nor the disk)."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._log = logger
        self.interval = interval
        self._pacers: dict[str, LogPacer] = {}

    def warning(self, kind: str, message: str, *args: Any) -> None:
        """Log ``message % args`` unless a ``kind`` warning was logged in the last interval.
        ``kind`` is one of a fixed few strings per caller (never peer input), so the table
        stays small."""
        pacer = self._pacers.setdefault(kind, LogPacer())
        now = time.monotonic()
        since = now - pacer.last  # read before report() moves it
        folded = pacer.report(now, self.interval)
        if folded is None:
            return
        if folded > 1:
            message += " (and %d more like it in the last %.0fs)"
            args = (*args, folded - 1, since)
        self._log.warning(message, *args)


class Signatures:
    """This node's signing key and a bounded queue of signature checks (see module docstring).

    ``check`` never blocks and never raises for bad input: it queues the check and calls
    ``done(valid)`` later, from the queue's task, or returns False at once when the queue (or
    the neighbour's share of it) is full. A ``done`` that raises is a bug: it is logged.
    """

    def __init__(
        self,
        key: NodeKey,
        cluster: str,
        check_signature: SignatureCheck,
        *,
        max_queued: int = 1024,
        max_queued_per_neighbour: int = 256,
    ) -> None:
        self.key = key
        self.cluster = cluster
        self.public_key = key.public_key
        """The raw public key (read once: a native key serializes it on every access)."""
        self.node_id = key.node_id
        self._check_signature = check_signature
        self._max_per_neighbour = max_queued_per_neighbour
        self._queue: asyncio.Queue[tuple[str, bytes, bytes, bytes, Checked]] = asyncio.Queue(
            max_queued
        )
        self._queued: dict[str, int] = {}
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.signed = 0
        self.checked = 0
        self.invalid = 0
        self.dropped = 0
        """Checks refused because the queue (or the neighbour's share) was full."""

    async def sign(self, domain: str, *fields: Any) -> bytes:
        """This node's signature of ``transcript(domain, cluster, *fields)``."""
        self.signed += 1
        return await self.key.sign(transcript(domain, self.cluster, *fields))

    def check(
        self, neighbour: str, public_key: bytes, signature: bytes, message: bytes, done: Checked
    ) -> bool:
        """Queue a check of ``signature`` over ``message`` (a :func:`transcript`) for a
        message that ``neighbour`` handed over; False (and ``done`` is never called) when the
        queue is full or closed."""
        if self._closed:
            return False
        queued = self._queued.get(neighbour, 0)
        if queued >= self._max_per_neighbour or self._queue.full():
            self.dropped += 1
            return False
        self._queue.put_nowait((neighbour, public_key, signature, message, done))
        self._queued[neighbour] = queued + 1
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return True

    async def _run(self) -> None:
        while True:
            neighbour, public_key, signature, message, done = await self._queue.get()
            left = self._queued.get(neighbour, 1) - 1
            if left > 0:
                self._queued[neighbour] = left
            else:
                self._queued.pop(neighbour, None)
            valid = await self._valid(public_key, signature, message)
            self.checked += 1
            self.invalid += not valid
            try:
                done(valid)
            except Exception:
                log.exception("handling a checked message from %s failed", neighbour)

    async def _valid(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
            return False
        try:
            return bool(await self._check_signature(public_key, signature, message))
        except Exception as exc:  # a SignatureCheck must not raise; a failed WebCrypto call
            log.warning("signature check failed: %s", exc)
            return False

    async def close(self) -> None:
        """Stop checking; queued checks are dropped (their ``done`` is never called)."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def stats(self) -> dict[str, int]:
        return {
            "signed": self.signed,
            "checked": self.checked,
            "invalid": self.invalid,
            "dropped": self.dropped,
            "queued": self._queue.qsize(),
        }
