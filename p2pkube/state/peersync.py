"""Peer sync: y-protocols sync sessions with the attached neighbours, and anti-entropy.

The transport (WebRTC data channels, or plain callables in tests) owns the
connections; sync only needs, per neighbour, a synchronous and non-blocking
`send(bytes)` and a call to `receive(peer_id, bytes)` for every state message that
neighbour sent. The protocol is y-protocols sync with flooding:

* on attach, and then every `anti_entropy_interval`, we send step 1 (our state
  vector); a step 1 is answered with step 2 (exactly what the asker misses).
  The periodic step 1 repairs anything a bounded transport queue dropped or a
  peer could not integrate yet (Yjs keeps structs with missing dependencies
  pending until they arrive);
* every transaction applied here (a local write, or an update from peer X) is
  relayed as an update message to every attached peer except X. Applying an
  already-known update produces no transaction, so flooding stops by itself.

Every state message names its document generation (compaction.py): a message of an
older generation is answered with our step 1 (the peer then fetches ours), one of a
newer generation makes us fetch that document and switch to it. What a peer's update
may write is checked first (admission.py: a byte budget per link, bounded stamps and
sizes). `PeerSync` is the session side of `ClusterState`, which hands it the document.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from p2pkube.ticker import sleep_to_beat

from .admission import LinkBudget, RefusalKind, TokenBucket, check_update
from .settings import StateSettings
from .sizes import MAX_PEERS_IN_REFUSAL_STATS, StateStats
from .store import StateStore
from .sync import (
    EMPTY_STATE_VECTOR,
    Generation,
    SyncMessageKind,
    SyncProtocolError,
    decode_state_message,
    decode_state_vector,
    encode_state_message,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)
from .versioned import HybridClock

__all__ = ["PeerSync", "SendFn", "guarded"]

log = logging.getLogger("p2pkube.state.cluster")  # the name operators know these lines by

SendFn = Callable[[bytes], None]
"""Hands one state message to the transport; raises when its queue is full or closing."""


@dataclass(slots=True)
class _Fetch:
    """An outstanding request for the whole document of a newer generation."""

    generation: Generation
    peer: str
    deadline: float
    """`time.monotonic()` after which another request may replace this one."""


def _is_rust_panic(exc: BaseException) -> bool:
    """pyo3 turns a Rust panic into PanicException, a BaseException subclass."""
    return type(exc).__name__ == "PanicException"


def _message_name(kind: SyncMessageKind) -> str:
    return "a step 2" if kind is SyncMessageKind.STEP2 else "an update"


def guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a CRDT call on peer-supplied bytes; any decode failure is the peer's."""
    try:
        return fn(*args)
    except ValueError as exc:
        raise SyncProtocolError(f"CRDT rejected peer data: {exc}") from exc
    except BaseException as exc:
        if _is_rust_panic(exc):
            raise SyncProtocolError(f"CRDT panicked on peer data: {exc}") from exc
        raise


class PeerSync:
    """The sync sessions of one node's state with its attached peers.

    It holds no document: `document()` is the current one (RuntimeError when the state
    is not open), `generation()` its generation, `new_document()` an empty document with
    our client id (the base of a fetched generation), `switch(generation, base)` replaces
    the document, and `applied()` runs after each update from a peer is integrated (the
    conflict repair). `stats` are the state's counters, updated in place.
    """

    def __init__(
        self,
        settings: StateSettings,
        stats: StateStats,
        hlc: HybridClock,
        *,
        document: Callable[[], StateStore],
        generation: Callable[[], Generation],
        new_document: Callable[[], StateStore],
        switch: Callable[[Generation, StateStore], None],
        applied: Callable[[], None],
        relay_exclude: Callable[[str], Collection[str]] | None = None,
    ) -> None:
        self.settings = settings
        self._stats = stats
        self._hlc = hlc
        self._document = document
        self._generation = generation
        self._new_document = new_document
        self._switch = switch
        self._applied = applied
        self._relay_exclude = relay_exclude or (lambda peer_id: ())
        """Peers that need not get an update relayed from a given peer, because that peer is
        linked to them and forwards it itself (membership knows; see Membership.relay_exclude).
        Anti-entropy repairs a copy missed through a stale neighbour list."""
        self._peers: dict[str, SendFn] = {}
        self._budgets: dict[str, LinkBudget] = {}
        """Per attached peer: its update byte budget and our unanswered step 1s."""
        self._fetch: _Fetch | None = None
        self._nudged: dict[str, float] = {}
        self.caught_up = False
        """Whether a peer's step 2 was applied at least once."""
        self._last_burst = float("-inf")
        """`time.monotonic()` when a large update or step 2 from a peer was last applied."""
        self._closed = False

    def close(self) -> None:
        """Forget every peer; later attaches and messages are ignored."""
        self._closed = True
        self._peers.clear()

    # -- sessions ------------------------------------------------------------
    def attach_peer(self, peer_id: str, send: SendFn) -> None:
        """Start syncing with a neighbour: remember its `send`, send our step 1.

        Ignored once closed (a link can come up while the agent shuts down)."""
        if self._closed:
            return
        self._document()
        self._peers[peer_id] = send
        s = self.settings
        self._budgets[peer_id] = LinkBudget(
            TokenBucket(s.link_update_bytes_per_second, s.link_update_burst_bytes)
        )
        self._nudged.pop(peer_id, None)
        self._send_step1(peer_id, send)

    def detach_peer(self, peer_id: str) -> None:
        """Stop syncing with a neighbour (its late messages are ignored)."""
        self._peers.pop(peer_id, None)
        self._budgets.pop(peer_id, None)
        self._nudged.pop(peer_id, None)
        if self._fetch is not None and self._fetch.peer == peer_id:
            self._fetch = None  # ask the next peer that advertises it

    @property
    def peers(self) -> list[str]:
        """Ids of the attached peers."""
        return list(self._peers)

    def receive(self, peer_id: str, message: bytes) -> None:
        """Handle one state message from `peer_id` (see ClusterState.receive)."""
        if self._closed:
            return
        store = self._document()
        send = self._peers.get(peer_id)
        if send is None:
            log.debug("frame from detached peer %s ignored", peer_id)
            return
        try:
            decoded = decode_state_message(message, self.settings.max_message_bytes)
            generation, ours = decoded.generation, self._generation()
            if generation.number > ours.number + self.settings.max_generation_jump:
                raise SyncProtocolError(
                    f"generation {generation} is implausibly far ahead of {ours}"
                )
            if decoded.kind is SyncMessageKind.STEP1:
                self._stats.sync_step1_received += 1
                decode_state_vector(decoded.payload, self.settings.max_state_vector_entries)
            if generation < ours:
                self._stats.stale_frames += 1
                self._nudge(peer_id, send)
                return
            if generation > ours:
                self._newer_generation(peer_id, send, generation, decoded.kind, decoded.payload)
                return
            if decoded.kind is SyncMessageKind.STEP1:
                diff = guarded(store.encode_diff, decoded.payload)
                self._stats.sync_step2_bytes_sent += len(diff)
                self._send(peer_id, send, encode_state_message(ours, encode_sync_step2(diff)))
                return
            if decoded.kind is SyncMessageKind.STEP2:
                self._stats.sync_step2_received += 1
                self._stats.sync_step2_bytes_received += len(decoded.payload)
            else:
                self._stats.updates_received += 1
                self._stats.update_bytes_received += len(message)
            if not self._admit(peer_id, decoded.kind, decoded.payload):
                return
            guarded(store.apply_update, decoded.payload, peer_id)
            if len(decoded.payload) >= self.settings.anti_entropy_burst_bytes:
                self._last_burst = time.monotonic()
            if decoded.kind is SyncMessageKind.STEP2:
                self.caught_up = True
            self._applied()
        except SyncProtocolError:
            self._stats.protocol_errors += 1
            raise

    def relay(self, update: bytes, origin: object) -> None:
        """Send a committed transaction's update to every attached peer but its origin
        (and those the origin forwards it to itself)."""
        message: bytes | None = None
        skip = self._relay_exclude(origin) if isinstance(origin, str) else ()
        for peer_id, send in list(self._peers.items()):
            if peer_id == origin or peer_id in skip:
                continue
            if message is None:
                message = encode_state_message(self._generation(), encode_update(update))
            self._stats.updates_sent += 1
            self._stats.update_bytes_sent += len(message)
            self._send(peer_id, send, message)

    def advertise(self) -> None:
        """Send our step 1 to every peer (after a switch: peers on the old generation
        fetch this one, peers on this one send what we miss)."""
        for peer_id, send in list(self._peers.items()):
            self._send_step1(peer_id, send)

    async def anti_entropy_loop(self) -> None:
        """Every `anti_entropy_interval`, a step 1 to the next `anti_entropy_fanout` peers,
        round-robin (until closed); postponed while a burst is arriving (see
        `StateSettings.anti_entropy_quiet`)."""
        turn = 0
        postponed = 0
        while True:
            await sleep_to_beat(self.settings.anti_entropy_interval)
            if self._closed:
                return
            if self._busy() and postponed < self.settings.anti_entropy_max_postponed:
                postponed += 1
                self._stats.anti_entropy_postponed += 1
                continue
            postponed = 0
            self._stats.anti_entropy_rounds += 1
            peers = list(self._peers.items())
            fanout = self.settings.anti_entropy_fanout
            if fanout <= 0 or fanout >= len(peers):
                chosen = peers
            else:
                turn %= len(peers)
                chosen = (peers + peers)[turn : turn + fanout]
                turn += fanout
            for peer_id, send in chosen:
                self._send_step1(peer_id, send)

    def _busy(self) -> bool:
        """Whether a burst from peers is arriving now (a large update applied within
        `anti_entropy_quiet` seconds)."""
        quiet = self.settings.anti_entropy_quiet
        return quiet > 0 and time.monotonic() - self._last_burst < quiet

    # -- generations -----------------------------------------------------------
    @property
    def fetching(self) -> bool:
        """Whether the document of a newer generation is on its way (within its deadline)."""
        return self._fetch is not None and time.monotonic() < self._fetch.deadline

    def switched(self) -> None:
        """The document was replaced: no fetch outstanding, nobody nudged yet."""
        self._fetch = None
        self._nudged.clear()

    def _nudge(self, peer_id: str, send: SendFn) -> None:
        """Tell a peer on an older generation about ours (it then fetches ours).

        Its writes in that generation are not lost: it carries them over itself
        when it switches."""
        now = time.monotonic()
        last = self._nudged.get(peer_id)
        if last is not None and now - last < self.settings.generation_nudge_interval:
            return
        self._nudged[peer_id] = now
        self._send_step1(peer_id, send)

    def _newer_generation(
        self,
        peer_id: str,
        send: SendFn,
        generation: Generation,
        kind: SyncMessageKind,
        payload: bytes,
    ) -> None:
        """A message of a newer generation: fetch that document, or switch to it if this
        is the answer to our fetch."""
        fetch = self._fetch
        now = time.monotonic()
        if (
            kind is SyncMessageKind.STEP2
            and fetch is not None
            and fetch.generation == generation
            and fetch.peer == peer_id
        ):
            self._stats.sync_step2_bytes_received += len(payload)
            base: StateStore | None = None
            try:
                if not self._admit(peer_id, kind, payload):
                    return  # the fetch stays outstanding until its deadline, then is asked again
                base = self._new_document()
                guarded(base.apply_update, payload, peer_id)
            except SyncProtocolError:
                if base is not None:
                    base.close()
                self._fetch = None
                raise
            self._switch(generation, base)
            return
        if fetch is None or generation > fetch.generation or now >= fetch.deadline:
            # Everything else of that generation is useless without its document.
            self._fetch = _Fetch(generation, peer_id, now + self.settings.generation_fetch_timeout)
            self._stats.generation_fetches += 1
            log.info("fetching state generation %s from %s", generation, peer_id)
            message = encode_state_message(generation, encode_sync_step1(EMPTY_STATE_VECTOR))
            if self._send(peer_id, send, message):
                self._asked(peer_id)

    # -- admission and sending -------------------------------------------------
    def _asked(self, peer_id: str) -> None:
        budget = self._budgets.get(peer_id)
        if budget is not None:
            budget.asked()

    def _admit(self, peer_id: str, kind: SyncMessageKind, payload: bytes) -> bool:
        """Whether an update or step 2 from `peer_id` may be applied: within the link's
        budget, and no value stamped too far ahead or too large (admission.py). A refusal
        is counted and logged with the link; SyncProtocolError if the update is unreadable."""
        budget = self._budgets.get(peer_id)
        if budget is None:
            return False
        now = time.monotonic()
        s = self.settings
        if not budget.admit(len(payload), step2=kind is SyncMessageKind.STEP2, now=now):
            self._stats.budget_drops += 1
            self._stats.budget_dropped_bytes += len(payload)
            self._count_refusal(
                peer_id,
                budget,
                now,
                f"dropped {_message_name(kind)} of {len(payload):,} bytes from peer {peer_id}: "
                f"over the link's budget (state.link_update_bytes_per_second "
                f"{s.link_update_bytes_per_second:,}, burst {s.link_update_burst_bytes:,}); "
                "anti-entropy fetches it again",
            )
            return False
        refusal = guarded(
            lambda: check_update(
                payload,
                wall_ms=self._hlc.wall_ms(),
                max_skew_ms=self._hlc.max_skew_ms,
                max_value_bytes=s.max_object_bytes,
            )
        )
        if refusal is None:
            return True
        if refusal.kind is RefusalKind.FUTURE_STAMP:
            self._stats.refused_future_stamps += 1
        else:
            self._stats.refused_oversize += 1
        self._count_refusal(
            peer_id, budget, now, f"refused {_message_name(kind)} from peer {peer_id}: {refusal}"
        )
        return False

    def _count_refusal(self, peer_id: str, budget: LinkBudget, now: float, message: str) -> None:
        """Count a refused or dropped update for its link; log it (paced per link)."""
        by_peer = self._stats.refusals_by_peer
        by_peer[peer_id] = by_peer.pop(peer_id, 0) + 1  # re-inserted: most recent last
        if len(by_peer) > MAX_PEERS_IN_REFUSAL_STATS:
            del by_peer[next(iter(by_peer))]
        folded = budget.pacer.report(now, self.settings.refusal_log_interval)
        if folded is not None:
            more = f" ({folded - 1} more since the last report)" if folded > 1 else ""
            log.warning("%s%s", message, more)

    def _send(self, peer_id: str, send: SendFn, data: bytes) -> bool:
        """Hand a state message to the transport; False (counted) if it would not take it."""
        try:
            send(data)
        except Exception:
            # The transport's queue is full or closing: anti-entropy repairs it.
            self._stats.send_errors += 1
            log.debug("send to %s failed", peer_id, exc_info=True)
            return False
        return True

    def _send_step1(self, peer_id: str, send: SendFn) -> None:
        sv = self._document().state_vector()
        self._stats.sync_step1_sent += 1
        message = encode_state_message(self._generation(), encode_sync_step1(sv))
        if self._send(peer_id, send, message):
            self._asked(peer_id)
