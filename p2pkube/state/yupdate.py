"""Read the values a Yjs update would write, without applying it.

Why: a Yjs update cannot be partly applied or rolled back, and once applied it is relayed
and logged. To refuse what a peer may not write (a stamp far in the future, a value over the
size cap; see `admission.py`), the receiver must see every value *before* the document does.
The key a value is written under is not always in the update (an overwrite names only the
item it follows), but the value's bytes are, verbatim, and they carry their own stamp.

This is a strict reader of the Yjs update format v1 (yjs ``readClientsStructRefs`` and
``readDeleteSet``, lib0 encoding), the format pycrdt (Yrs) and JS ``yjs`` exchange::

    update     := varUint(#clients) { varUint(#structs) varUint(client) varUint(clock)
                                      struct* }*  delete-set
    struct     := u8 info, then by info & 0x1f:
                  0 GC | 10 Skip:  varUint(length)
                  else an item:    [origin: varUint client, varUint clock]     if info & 0x80
                                   [right origin: the same]                    if info & 0x40
                                   [parent: varUint(1) varString(root name)
                                          | varUint(0) varUint client, varUint clock
                                    parentSub: varString                     if info & 0x20]
                                                                  if neither origin is there
                                   content (below)
    content    := 1 deleted: varUint(length) | 2 JSON: varUint(n) varString*n
                | 3 binary: varUint8Array | 4 string: varString | 5 embed: varString
                | 6 format: varString varString | 7 type: varUint(ref) [varString if ref is 3 or 5]
                | 8 any: varUint(n) any*n | 9 doc: varString any
    delete-set := varUint(#clients) { varUint(client) varUint(#ranges)
                                      { varUint(clock) varUint(length) }* }*
    any        := u8 tag: 127 undefined, 126 null, 121 false, 120 true | 125 varInt | 124 f32
                | 123 f64 | 122 i64 | 119 varString | 118 varUint(n) {varString any}*n
                | 117 varUint(n) any*n | 116 varUint8Array

Map values in p2pkube are byte strings: pycrdt stores them as an `any` item holding one
buffer (tag 116), JS yjs as a binary item (content 3). Both are returned. Nothing else is
interpreted. Reading is stricter than applying on purpose: varUints are limited to 2**53 - 1,
`any` values to `MAX_ANY_DEPTH` levels, and trailing bytes are an error, so an update this
reader cannot account for is refused rather than applied unchecked. Pure Python: the browser
node runs it too.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from p2pkube.state.sync import SyncProtocolError, read_var_uint

__all__ = ["MAX_ANY_DEPTH", "UpdateFormatError", "UpdateValue", "update_values"]

MAX_ANY_DEPTH: Final = 32
"""Deepest nesting of `any` values accepted (p2pkube writes none; a hostile peer could nest
arrays until the reader's stack ran out)."""
_GC: Final = 0
_SKIP: Final = 10
_BUFFER_TAG: Final = 116


class UpdateFormatError(ValueError):
    """The bytes are not a Yjs v1 update this reader can account for."""


class UpdateValue(NamedTuple):
    """One byte-string value an update writes, with the id of the item holding it."""

    client: int
    clock: int
    blob: bytes


class _Reader:
    """A cursor over the update's bytes; every read checks the bounds."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)

    def u8(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise UpdateFormatError("truncated update")
        self.pos = pos + 1
        return self.data[pos]

    def var_uint(self) -> int:
        data, pos = self.data, self.pos
        if pos < self.end and data[pos] < 0x80:  # the common one-byte case
            self.pos = pos + 1
            return data[pos]
        try:
            value, self.pos = read_var_uint(data, pos)  # the sync layer's bounded reader
        except SyncProtocolError as exc:
            raise UpdateFormatError(str(exc)) from None
        return value

    def skip_var_int(self) -> None:
        """A signed lib0 varInt: continuation bit 0x80 on every byte but the last."""
        for _ in range(9):
            if self.u8() < 0x80:
                return
        raise UpdateFormatError("varInt too long")

    def take(self, length: int) -> bytes:
        pos = self.pos
        if length > self.end - pos:
            raise UpdateFormatError("truncated update")
        self.pos = pos + length
        return self.data[pos : pos + length]

    def skip(self, length: int) -> None:
        if length > self.end - self.pos:
            raise UpdateFormatError("truncated update")
        self.pos += length

    def buffer(self) -> bytes:
        return self.take(self.var_uint())

    def skip_string(self) -> None:
        self.skip(self.var_uint())

    def string_length_utf16(self) -> int:
        """Skip a varString; its length in UTF-16 units (what a string item's length counts)."""
        raw = self.take(self.var_uint())
        try:
            return len(raw.decode("utf-8").encode("utf-16-le")) // 2
        except UnicodeDecodeError:
            raise UpdateFormatError("string is not UTF-8") from None


def _skip_any(r: _Reader, depth: int) -> None:
    if depth > MAX_ANY_DEPTH:
        raise UpdateFormatError(f"value nested deeper than {MAX_ANY_DEPTH}")
    tag = r.u8()
    if tag in (127, 126, 121, 120):
        return
    if tag == 125:
        r.skip_var_int()
    elif tag == 124:
        r.skip(4)
    elif tag in (123, 122):
        r.skip(8)
    elif tag in (119, _BUFFER_TAG):
        r.skip_string()
    elif tag == 118:
        for _ in range(r.var_uint()):
            r.skip_string()
            _skip_any(r, depth + 1)
    elif tag == 117:
        for _ in range(r.var_uint()):
            _skip_any(r, depth + 1)
    else:
        raise UpdateFormatError(f"unknown value tag {tag}")


def _content(r: _Reader, ref: int, client: int, clock: int, out: list[UpdateValue]) -> int:
    """Read one item's content; return its length (how many clock ticks the item spans)."""
    if ref == 1:  # deleted
        return r.var_uint()
    if ref == 2:  # JSON
        count = r.var_uint()
        for _ in range(count):
            r.skip_string()
        return count
    if ref == 3:  # binary (JS yjs map values)
        out.append(UpdateValue(client, clock, r.buffer()))
        return 1
    if ref == 4:  # string
        return r.string_length_utf16()
    if ref == 5:  # embed
        r.skip_string()
        return 1
    if ref == 6:  # format
        r.skip_string()
        r.skip_string()
        return 1
    if ref == 7:  # a nested type
        if r.var_uint() in (3, 5):  # XmlElement, XmlHook: a name
            r.skip_string()
        return 1
    if ref == 8:  # any (pycrdt map values: one buffer)
        count = r.var_uint()
        for i in range(count):
            if r.pos < r.end and r.data[r.pos] == _BUFFER_TAG:
                r.pos += 1
                out.append(UpdateValue(client, clock + i, r.buffer()))
            else:
                _skip_any(r, 1)
        return count
    if ref == 9:  # a subdocument
        r.skip_string()
        _skip_any(r, 1)
        return 1
    raise UpdateFormatError(f"unknown content type {ref}")


def _item(r: _Reader, info: int, client: int, clock: int, out: list[UpdateValue]) -> int:
    if info & 0x80:  # origin
        r.var_uint()
        r.var_uint()
    if info & 0x40:  # right origin
        r.var_uint()
        r.var_uint()
    if not info & 0xC0:  # parent info is only written when neither origin is
        if r.var_uint() == 1:
            r.skip_string()  # a root type's name
        else:
            r.var_uint()  # the parent item's id
            r.var_uint()
        if info & 0x20:
            r.skip_string()  # the map key
    length = _content(r, info & 0x1F, client, clock, out)
    if length < 1:
        raise UpdateFormatError(f"item {client}:{clock} of length 0")
    return length


def update_values(update: bytes) -> list[UpdateValue]:
    """Every byte-string value `update` would write, in the order it holds them.

    Raises UpdateFormatError when the update is malformed, truncated, has trailing bytes, or
    uses something this reader does not know.
    """
    r = _Reader(bytes(update))
    out: list[UpdateValue] = []
    for _ in range(r.var_uint()):
        structs = r.var_uint()
        client = r.var_uint()
        clock = r.var_uint()
        for _ in range(structs):
            info = r.u8()
            ref = info & 0x1F
            if ref == _GC or ref == _SKIP:
                clock += r.var_uint()
            else:
                clock += _item(r, info, client, clock, out)
    for _ in range(r.var_uint()):  # the delete set: read to find the end
        r.var_uint()
        for _ in range(r.var_uint()):
            r.var_uint()
            r.var_uint()
    if r.pos != r.end:
        raise UpdateFormatError(f"{r.end - r.pos} trailing bytes after the update")
    return out
