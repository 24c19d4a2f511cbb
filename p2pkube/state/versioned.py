"""Versioned map values: every entry carries a hybrid-logical-clock stamp; deletes are tombstones.

Why: Yjs resolves two concurrent writes to one map key by the higher *client id*,
not by the later write, and a generation switch (docs/state.md) re-applies values
from an old document into a new one, where "which value is newer" must be decided
from the values themselves. So every stored blob says when it was written, and a
delete is a value too (a tombstone), so that a peer still holding an older value
can tell that it was deleted and cannot resurrect it.

Byte format (msgpack, nothing else; see docs/state.md for the byte-by-byte layout)::

    value     := fixarray(4) [wall_ms, counter, writer, value]
    tombstone := fixarray(3) [wall_ms, counter, writer]

`wall_ms`, `counter` and `writer` are msgpack *unsigned* ints (positive fixint or
uint 8/16/32/64, whatever width) in [0, 2**53 - 1] (exact in a JS number, for the
browser node); a tombstone has nothing after them. Versions of one key are ordered by the
tuple (wall_ms, counter, writer): a total order, since `writer` is unique per
process run and the clock never issues the same (wall_ms, counter) twice in one run.

This module is pure Python + msgpack on purpose: the browser node runs it under
Pyodide unchanged, only the document store below it is JS `yjs`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import msgpack

__all__ = [
    "MAX_STAMP_INT",
    "HybridClock",
    "Stamp",
    "Version",
    "decode_version",
    "encode_tombstone",
    "encode_version",
    "header_size",
    "inspect_blob",
    "read_stamp",
]

log = logging.getLogger(__name__)

MAX_STAMP_INT: Final = 2**53 - 1
"""Largest int a stamp field may hold: exact in a JS number (the browser node)."""
_VALUE_LEN: Final = 4
_TOMBSTONE_LEN: Final = 3
_FIXARRAY_VALUE: Final = 0x94
_FIXARRAY_TOMBSTONE: Final = 0x93
_UINT_WIDTHS: Final = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
"""msgpack uint 8/16/32/64 type bytes -> payload width (big-endian)."""
_COMMON: Final = struct.Struct(">xxQBxQ")
"""The usual layout, parsed in one call: head, 0xcf wall(u64), fixint counter,
0xcf writer(u64) (ms timestamps and random 53-bit writer ids need 64 bits)."""


class Stamp(NamedTuple):
    """When and by whom a version was written; tuple order is the version order."""

    wall: int
    """Hybrid-clock wall time in milliseconds since the Unix epoch."""
    counter: int
    """Tie breaker for writes within one millisecond (or while the wall clock lags)."""
    writer: int
    """Unique id of the writing process run (its Yjs client id): makes the order total."""

    def successor(self, writer: int) -> Stamp:
        """The smallest stamp of `writer` that orders after this one.

        Used when the stamp to overwrite is ahead of our clock (a peer whose clock
        runs fast): our write must still win over the version it replaces.
        """
        if self.counter < MAX_STAMP_INT:
            return Stamp(self.wall, self.counter + 1, writer)
        if self.wall < MAX_STAMP_INT:
            return Stamp(self.wall + 1, 0, writer)
        raise ValueError("cannot order a write after a maximal stamp")


@dataclass(frozen=True, slots=True)
class Version:
    """One decoded map entry: a value or a tombstone, with its stamp."""

    stamp: Stamp
    tombstone: bool
    value: Any = None


def _valid_int(x: object) -> bool:
    # bool is an int subclass in Python; msgpack true/false must not pass as a stamp field.
    return type(x) is int and 0 <= x <= MAX_STAMP_INT


def _check_stamp(stamp: Stamp) -> None:
    if not all(_valid_int(x) for x in stamp):
        raise ValueError(f"stamp fields must be ints in [0, 2**53 - 1]: {stamp!r}")


def encode_version(stamp: Stamp, value: Any) -> bytes:
    """Encode a live value: fixarray(4) [wall, counter, writer, value]."""
    return encode_packed_version(stamp, msgpack.packb(value, use_bin_type=True))


def encode_packed_version(stamp: Stamp, packed_value: bytes) -> bytes:
    """`encode_version` of a value already packed (its size checked on the way): a msgpack
    array is its header followed by its elements' encodings, so the bytes are the same and
    the value is not encoded twice (a 1,000-pod commit did it twice)."""
    _check_stamp(stamp)
    return b"\x94" + _pack_stamp(stamp) + packed_value


def _pack_stamp(stamp: Stamp) -> bytes:
    return b"".join(msgpack.packb(x) for x in (stamp.wall, stamp.counter, stamp.writer))


def encode_tombstone(stamp: Stamp) -> bytes:
    """Encode a delete: fixarray(3) [wall, counter, writer]."""
    _check_stamp(stamp)
    return msgpack.packb([stamp.wall, stamp.counter, stamp.writer], use_bin_type=True)


def read_stamp(blob: bytes | bytearray | None) -> tuple[Stamp, bool] | None:
    """(stamp, is_tombstone) of a stored blob without decoding its value, or None if the
    blob is absent or has no valid stamp (a buggy or hostile peer).

    This is what conflict resolution and compaction look at: it is cheap (no value
    is decoded), and it defines which blobs are versions at all. A blob with a valid
    stamp but an undecodable value is still a version (it orders and replaces like
    any other, identically on every peer) that reads as absent. A blob without a
    valid stamp orders below every version, so any write replaces it.
    """
    if blob is None or len(blob) < 4:
        return None
    head = blob[0]
    if head != _FIXARRAY_VALUE and head != _FIXARRAY_TOMBSTONE:
        return None
    size = len(blob)
    if size >= 20 and blob[1] == 0xCF and blob[10] < 0x80 and blob[11] == 0xCF:
        wall, counter, writer = _COMMON.unpack_from(blob)
        pos = 20
        if wall > MAX_STAMP_INT or writer > MAX_STAMP_INT:
            return None
        return _finish(head, size, pos, Stamp(wall, counter, writer))
    pos = 1
    fields: list[int] = []
    for _ in range(3):
        if pos >= size:
            return None
        byte = blob[pos]
        if byte < 0x80:  # positive fixint
            fields.append(byte)
            pos += 1
            continue
        width = _UINT_WIDTHS.get(byte)
        if width is None or pos + 1 + width > size:
            return None  # not an unsigned int (negative, float, str, ...) or truncated
        number = int.from_bytes(blob[pos + 1 : pos + 1 + width], "big")
        if number > MAX_STAMP_INT:
            return None
        fields.append(number)
        pos += 1 + width
    return _finish(head, size, pos, Stamp(fields[0], fields[1], fields[2]))


def header_size(blob: bytes | bytearray) -> int:
    """Bytes of the stamp header at the start of a blob with a valid stamp (`read_stamp`
    not None): the array byte and the three unsigned ints. What a size limit leaves out."""
    pos = 1
    for _ in range(3):
        byte = blob[pos]
        pos += 1 if byte < 0x80 else 1 + _UINT_WIDTHS[byte]
    return pos


def _finish(head: int, size: int, pos: int, stamp: Stamp) -> tuple[Stamp, bool] | None:
    """Check what follows the stamp: nothing for a tombstone, something for a value."""
    tombstone = head == _FIXARRAY_TOMBSTONE
    if tombstone and pos != size:
        return None  # trailing bytes after a tombstone
    if not tombstone and pos >= size:
        return None  # a value without its value
    return stamp, tombstone


def decode_version(blob: bytes | bytearray) -> Version:
    """Decode a stored blob; ValueError (family) if it is not a readable version."""
    header = read_stamp(blob)
    if header is None:
        raise ValueError("not a versioned value")
    stamp, tombstone = header
    if tombstone:
        return Version(stamp, True)
    item = msgpack.unpackb(bytes(blob), raw=False, strict_map_key=False)
    return Version(stamp, False, item[3])


def inspect_blob(blob: bytes | bytearray | None) -> Version | None:
    """`decode_version`, or None for an absent or unreadable blob."""
    if blob is None:
        return None
    try:
        return decode_version(blob)
    except Exception:
        return None


class HybridClock:
    """A hybrid logical clock (wall ms, counter): never goes backwards on its own, and after
    `observe(s)` every stamp it issues orders after `s`, within a bound.

    `max_skew_ms` is how far ahead of our wall clock a peer's stamp may be before the
    receiver refuses it (`ClusterState`). The clock follows remote stamps only *half* that
    far (`follow_ms`), and never issues a time beyond our wall clock + `follow_ms`, even
    when it was restored from a run whose clock ran ahead: so a stamp we issue is taken by
    every node whose clock is at most `follow_ms` behind ours, and one peer with a clock
    years ahead cannot drag every clock in the cluster with it. Writes still overwrite a
    value stamped further ahead, because a write's stamp is at least the successor of the
    version it replaces (`ClusterState._stamp_for`).
    """

    def __init__(self, wall_clock: Callable[[], float], max_skew_ms: int) -> None:
        self._wall_clock = wall_clock
        self.max_skew_ms = max_skew_ms
        """Stamps further ahead of our wall clock than this are not accepted from peers."""
        self.follow_ms = max_skew_ms // 2
        """How far ahead of our wall clock this clock may run (after observing, or restored)."""
        self._wall = 0
        self._counter = 0
        self.clamped = 0
        """How many remote stamps were beyond `follow_ms` (a stats counter)."""
        self.lowered = 0
        """How many times the clock was beyond `follow_ms` when issuing (restored from a run
        whose wall clock was ahead, or the wall clock stepped back) and was pulled back."""

    def wall_ms(self) -> int:
        """The physical clock in ms (the injected wall clock, seconds -> ms)."""
        return int(self._wall_clock() * 1000)

    def beyond_bound(self, wall: int) -> bool:
        """Whether a stamp's wall time is further ahead of our wall clock than peers may be."""
        return wall > self.wall_ms() + self.max_skew_ms

    @property
    def state(self) -> tuple[int, int]:
        """(wall_ms, counter) of the last issued or observed time; persisted in snapshots."""
        return self._wall, self._counter

    def now(self) -> tuple[int, int]:
        """Issue a fresh (wall_ms, counter): after everything seen so far, but never beyond
        our wall clock + `follow_ms` (a later time no peer would accept)."""
        physical = self.wall_ms()
        ceiling = physical + self.follow_ms
        if self._wall > ceiling:
            self.lowered += 1
            if self.lowered == 1 or self.lowered % 1000 == 0:
                log.warning(
                    "hybrid clock %.1f s ahead of the wall clock (restored from a run whose "
                    "clock was ahead, or the clock stepped back): issuing stamps at most "
                    "%.1f s ahead (%d times so far)",
                    (self._wall - physical) / 1000,
                    self.follow_ms / 1000,
                    self.lowered,
                )
            self._wall, self._counter = ceiling, 0
        if physical > self._wall:
            self._wall, self._counter = physical, 0
        else:
            self._counter += 1
        return self._wall, self._counter

    def observe(self, wall: int, counter: int) -> None:
        """Move the clock to at least (wall, counter), clamped to now + `follow_ms`."""
        limit = self.wall_ms() + self.follow_ms
        if wall > limit:
            self.clamped += 1
            if self.clamped == 1 or self.clamped % 1000 == 0:
                log.warning(
                    "a peer's clock is %.1f s ahead (beyond the %.1f s the clock follows): "
                    "clamping (%d times so far)",
                    (wall - limit + self.follow_ms) / 1000,
                    self.follow_ms / 1000,
                    self.clamped,
                )
            wall, counter = limit, 0
        if (wall, counter) > (self._wall, self._counter):
            self._wall, self._counter = wall, counter

    def restore(self, wall: int, counter: int) -> None:
        """Resume from a persisted state. Not clamped here: it is our own past, and a clock
        that stepped back a little (e.g. a reset RTC) must not make stamps go backwards;
        `now()` pulls a clock that is beyond `follow_ms` back when it issues."""
        if (wall, counter) > (self._wall, self._counter):
            self._wall, self._counter = wall, counter
