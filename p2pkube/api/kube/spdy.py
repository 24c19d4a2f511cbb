"""SPDY/3.1, the multiplexing that ``kubectl port-forward`` (and exec, attach) speaks.

Why SPDY at all: kubectl's streaming subresources still carry SPDY/3.1 sessions, either on an
HTTP connection upgraded with ``Upgrade: SPDY/3.1``, or (kubectl 1.31+, the default) tunnelled
through the binary messages of a WebSocket whose subprotocol is ``SPDY/3.1+portforward.k8s.io``
(client-go ``tools/portforward/tunneling_connection.go``). Either way the bytes are the same
SPDY framing, produced on kubectl's side by moby/spdystream. No maintained Python library
implements SPDY (it was superseded by HTTP/2 in 2015), so this module does, for what kubectl
needs and no more: no server push, no priorities, no credential frames.

Shape (after aiortc's RFC-named modules): frames are small frozen dataclasses;
:class:`FrameEncoder` / :class:`FrameDecoder` turn them into bytes and back, holding the
session's two zlib contexts (SPDY/3 compresses every header block of a session in one
stream per direction, primed with the SPDY/3 dictionary, each block ending with a sync flush);
:class:`SpdySession` runs one session over an abstract :class:`ByteTransport` and hands out
:class:`SpdyStream` objects with asyncio ``read``/``write``/``close``/``reset``.

Bounds and flow control, as spdystream actually behaves:

- spdystream neither sends WINDOW_UPDATE nor counts windows: it writes each ``Write`` as one
  DATA frame and ignores WINDOW_UPDATE and SETTINGS (``connection.go``: "unhandled frame
  type"). A receiver that waited for kubectl to respect its window would stall, and a sender
  that respected windows would stall after 64 KiB, since no update ever comes. So, like
  spdystream, this session bounds memory by backpressure instead: a stream buffers at most
  ``stream_buffer_bytes`` before the session stops reading the transport until its consumer
  catches up (for at most ``stall_timeout``; then that stream alone is reset), and writers
  wait while more than ``write_buffer_bytes`` are queued for the transport.
- It still sends WINDOW_UPDATE (per stream and, SPDY/3.1, for the session) as data is
  consumed, so a peer that does count windows is never starved; and with
  ``enforce_send_window`` it honours the peer's windows when sending (off by default, for the
  reason above).

Every wait has a timeout: a peer silent for ``idle_timeout`` (kubectl pings every 5-10 s), a
writer that finds no room for ``write_timeout``, a stream reply not given within
``reply_timeout``. Malformed input ends the session with one log line and a GOAWAY
(PROTOCOL_ERROR), never an exception out of :meth:`SpdySession.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

VERSION = 3
MAX_LENGTH = 0xFFFFFF
"""A frame's length field is 24 bits."""
MAX_WINDOW = 0x7FFFFFFF
DEFAULT_WINDOW = 64 * 1024
"""SPDY/3.1's initial stream and session window (§2.6.8)."""

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_CLEAR_SETTINGS = 0x01

Headers = tuple[tuple[str, str], ...]
"""A header block as ordered (lower-case name, value) pairs; one pair per value."""


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingId(enum.IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


# --- the SPDY/3 header dictionary (SPDY/3 draft §2.6.10.1) -------------------------------------

_DICTIONARY_WORDS = (
    *"options head post put delete trace accept accept-charset accept-encoding".split(),
    *"accept-language accept-ranges age allow authorization cache-control connection".split(),
    *"content-base content-encoding content-language content-length content-location".split(),
    *"content-md5 content-range content-type date etag expect expires from host if-match".split(),
    *"if-modified-since if-none-match if-range if-unmodified-since last-modified".split(),
    *"location max-forwards pragma proxy-authenticate proxy-authorization range referer".split(),
    *"retry-after server te trailer transfer-encoding upgrade user-agent vary via".split(),
    *"warning www-authenticate method get status".split(),
    "200 OK",
    *"version HTTP/1.1 url public set-cookie keep-alive origin".split(),
)
"""The length-prefixed part: header names and a few values, in the specification's order."""

_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
"""The unprefixed part: status lines, dates and common values, run together."""


def _dictionary() -> bytes:
    prefixed = b"".join(len(w).to_bytes(4, "big") + w.encode() for w in _DICTIONARY_WORDS)
    return prefixed + _DICTIONARY_TAIL.encode()


HEADER_DICTIONARY = _dictionary()
"""The zlib preset dictionary of every SPDY/3 header block (1423 bytes, Adler-32 e3c6a7c2)."""


# --- frames -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStreamFrame:
    stream_id: int
    headers: Headers
    associated_to: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReplyFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStreamFrame:
    stream_id: int
    status: int


@dataclass(frozen=True)
class SettingsFrame:
    values: tuple[tuple[int, int, int], ...]
    """(flags, id, value) of each entry."""
    clear: bool = False


@dataclass(frozen=True)
class PingFrame:
    ping_id: int


@dataclass(frozen=True)
class GoAwayFrame:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdateFrame:
    stream_id: int
    """0: the session's window (SPDY/3.1)."""
    delta: int


Frame = (
    DataFrame
    | SynStreamFrame
    | SynReplyFrame
    | RstStreamFrame
    | SettingsFrame
    | PingFrame
    | GoAwayFrame
    | HeadersFrame
    | WindowUpdateFrame
)


class SpdyError(Exception):
    """Input that is not SPDY/3.1 as this module accepts it: the session ends."""


class StreamReset(ConnectionError):
    """The stream was reset (by the peer or by us) or its session ended."""


# --- header blocks ------------------------------------------------------------------------------


def encode_header_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """The uncompressed name/value block: repeated names become one NUL-joined value."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        if not name or "\0" in name or "\0" in value:
            raise ValueError(f"header {name!r}: empty, or a NUL in its name or value")
        merged.setdefault(name.lower(), []).append(value)
    out = [len(merged).to_bytes(4, "big")]
    for name, values in merged.items():
        raw_name, raw_value = name.encode(), "\0".join(values).encode()
        out += [len(raw_name).to_bytes(4, "big"), raw_name]
        out += [len(raw_value).to_bytes(4, "big"), raw_value]
    return b"".join(out)


def decode_header_block(raw: bytes) -> Headers:
    """The pairs of an uncompressed block; SpdyError when it is malformed."""
    view = memoryview(raw)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise SpdyError("header block ends early")
        chunk = bytes(view[pos : pos + n])
        pos += n
        return chunk

    def field() -> str:
        size = int.from_bytes(take(4), "big")
        try:
            return take(size).decode()
        except UnicodeDecodeError:
            raise SpdyError("header block: a name or value is not UTF-8") from None

    count = int.from_bytes(take(4), "big")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for _ in range(count):
        name, value = field(), field()
        if not name or name != name.lower() or name in seen:
            raise SpdyError(f"header block: empty, upper-case or repeated name {name!r}")
        seen.add(name)
        pairs.extend((name, part) for part in value.split("\0"))
    if pos != len(view):
        raise SpdyError("header block: bytes after its last pair")
    return tuple(pairs)


class HeaderCompressor:
    """One direction's header compression: a zlib stream over the whole session."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(level=9, zdict=HEADER_DICTIONARY)

    def compress(self, headers: Iterable[tuple[str, str]]) -> bytes:
        block = encode_header_block(headers)
        return self._zlib.compress(block) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The other direction's: each block must decompress whole and stay under ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self._zlib = zlib.decompressobj(zdict=HEADER_DICTIONARY)
        self._max_bytes = max_bytes

    def decompress(self, data: bytes) -> Headers:
        try:
            raw = self._zlib.decompress(data, self._max_bytes + 1)
        except zlib.error as exc:
            raise SpdyError(f"header block does not decompress: {exc}") from None
        if len(raw) > self._max_bytes or self._zlib.unconsumed_tail:
            raise SpdyError(f"header block over {self._max_bytes:,} bytes")
        if self._zlib.eof:
            raise SpdyError("header compression stream ended")
        return decode_header_block(raw)


# --- frame codec --------------------------------------------------------------------------------

_CONTROL = struct.Struct(">HHI")  # C bit + version, type, flags + length
_DATA = struct.Struct(">II")  # stream id, flags + length
_U32 = struct.Struct(">I")
_TWO_U32 = struct.Struct(">II")
_SYN_STREAM = struct.Struct(">IIBB")


def _control(kind: FrameType, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"{kind.name} frame of {len(payload):,} bytes is over the 24-bit length")
    return _CONTROL.pack(0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


class FrameEncoder:
    """Frames -> bytes for one direction of a session (it owns that direction's zlib stream,
    so frames must be sent in the order they are encoded)."""

    def __init__(self) -> None:
        self._headers = HeaderCompressor()

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case DataFrame(stream_id, data, fin):
                if len(data) > MAX_LENGTH:
                    raise ValueError(f"DATA frame of {len(data):,} bytes")
                head = _DATA.pack(stream_id & MAX_WINDOW, (int(fin) << 24) | len(data))
                return head + data
            case SynStreamFrame(sid, headers, associated, priority, slot, fin, uni):
                flags = (FLAG_FIN if fin else 0) | (FLAG_UNIDIRECTIONAL if uni else 0)
                fixed = _SYN_STREAM.pack(sid, associated, (priority & 7) << 5, slot)
                payload = fixed + self._headers.compress(headers)
                return _control(FrameType.SYN_STREAM, flags, payload)
            case SynReplyFrame(sid, headers, fin):
                payload = _U32.pack(sid) + self._headers.compress(headers)
                return _control(FrameType.SYN_REPLY, FLAG_FIN if fin else 0, payload)
            case HeadersFrame(sid, headers, fin):
                payload = _U32.pack(sid) + self._headers.compress(headers)
                return _control(FrameType.HEADERS, FLAG_FIN if fin else 0, payload)
            case RstStreamFrame(sid, status):
                return _control(FrameType.RST_STREAM, 0, _TWO_U32.pack(sid, status))
            case SettingsFrame(values, clear):
                entries = b"".join(_TWO_U32.pack((f << 24) | i, v) for f, i, v in values)
                payload = _U32.pack(len(values)) + entries
                return _control(FrameType.SETTINGS, FLAG_CLEAR_SETTINGS if clear else 0, payload)
            case PingFrame(ping_id):
                return _control(FrameType.PING, 0, _U32.pack(ping_id))
            case GoAwayFrame(last_good, status):
                return _control(FrameType.GOAWAY, 0, _TWO_U32.pack(last_good, status))
            case WindowUpdateFrame(sid, delta):
                return _control(FrameType.WINDOW_UPDATE, 0, _TWO_U32.pack(sid, delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameDecoder:
    """Bytes -> frames for the other direction, fed as they arrive (any split).

    Holds at most one frame's bytes plus one fed chunk: a frame whose length field is over
    ``max_frame_bytes`` is refused before its payload is awaited.
    """

    def __init__(self, *, max_frame_bytes: int, max_header_bytes: int) -> None:
        self._buffer = bytearray()
        self._headers = HeaderDecompressor(max_header_bytes)
        self._max_frame_bytes = max_frame_bytes

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by ``data``; SpdyError for malformed input."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first, second = _TWO_U32.unpack_from(self._buffer)
            length = second & MAX_LENGTH
            if length > self._max_frame_bytes:
                raise SpdyError(f"frame of {length:,} bytes, over {self._max_frame_bytes:,}")
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            flags = second >> 24
            if first & 0x80000000:
                frames.append(self._control(first, flags, payload))
            else:
                frames.append(self._data(first, flags, payload))
        return frames

    @staticmethod
    def _data(first: int, flags: int, payload: bytes) -> DataFrame:
        stream_id = first & MAX_WINDOW
        if stream_id == 0:
            raise SpdyError("DATA frame on stream 0")
        return DataFrame(stream_id, payload, bool(flags & FLAG_FIN))

    def _control(self, first: int, flags: int, payload: bytes) -> Frame:
        version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise SpdyError(f"SPDY version {version}, not {VERSION}")
        fin = bool(flags & FLAG_FIN)
        try:
            match kind:
                case FrameType.SYN_STREAM:
                    sid, associated, priority, slot = _SYN_STREAM.unpack_from(payload)
                    headers = self._headers.decompress(payload[_SYN_STREAM.size :])
                    frame: Frame = SynStreamFrame(
                        self._stream_id(sid),
                        headers,
                        associated & MAX_WINDOW,
                        priority >> 5,
                        slot,
                        fin,
                        bool(flags & FLAG_UNIDIRECTIONAL),
                    )
                case FrameType.SYN_REPLY:
                    (sid,) = _U32.unpack_from(payload)
                    headers = self._headers.decompress(payload[4:])
                    frame = SynReplyFrame(self._stream_id(sid), headers, fin)
                case FrameType.HEADERS:
                    (sid,) = _U32.unpack_from(payload)
                    headers = self._headers.decompress(payload[4:])
                    frame = HeadersFrame(self._stream_id(sid), headers, fin)
                case FrameType.RST_STREAM:
                    sid, status = self._fixed(payload, 8)
                    if status == 0:
                        raise SpdyError("RST_STREAM with status 0")
                    frame = RstStreamFrame(self._stream_id(sid), status)
                case FrameType.SETTINGS:
                    (count,) = _U32.unpack_from(payload)
                    if len(payload) != 4 + 8 * count:
                        raise SpdyError(f"SETTINGS of {len(payload)} bytes for {count} entries")
                    entries = tuple(
                        (key >> 24, key & 0xFFFFFF, value)
                        for key, value in _TWO_U32.iter_unpack(payload[4:])
                    )
                    frame = SettingsFrame(entries, bool(flags & FLAG_CLEAR_SETTINGS))
                case FrameType.PING:
                    if len(payload) != 4:
                        raise SpdyError(f"PING of {len(payload)} bytes")
                    frame = PingFrame(_U32.unpack(payload)[0])
                case FrameType.GOAWAY:
                    last_good, status = self._fixed(payload, 8)
                    frame = GoAwayFrame(last_good & MAX_WINDOW, status)
                case FrameType.WINDOW_UPDATE:
                    sid, delta = self._fixed(payload, 8)
                    delta &= MAX_WINDOW
                    if delta == 0:
                        raise SpdyError("WINDOW_UPDATE of 0")
                    frame = WindowUpdateFrame(sid & MAX_WINDOW, delta)
                case _:
                    raise SpdyError(f"unknown control frame type {kind}")
        except struct.error:
            raise SpdyError(f"{FrameType(kind).name} of {len(payload)} bytes") from None
        return frame

    @staticmethod
    def _fixed(payload: bytes, size: int) -> tuple[int, int]:
        if len(payload) != size:
            raise SpdyError(f"control frame of {len(payload)} bytes, not {size}")
        first, second = _TWO_U32.unpack(payload)
        return first, second

    @staticmethod
    def _stream_id(raw: int) -> int:
        stream_id = raw & MAX_WINDOW
        if stream_id == 0:
            raise SpdyError("stream id 0")
        return stream_id


# --- the session --------------------------------------------------------------------------------


class ByteTransport(Protocol):
    """What a session runs over: a WebSocket's binary messages, or an upgraded connection."""

    async def read(self) -> bytes:
        """The next bytes; ``b""`` once the peer closed. Raises ConnectionError."""
        ...

    async def write(self, data: bytes) -> None:
        """Send ``data``, waiting while the transport's own buffer is full."""
        ...

    async def close(self) -> None:
        """Close the transport (idempotent)."""
        ...


@dataclass
class SpdySettings:
    """Every limit and timeout of a session, with its default."""

    stream_buffer_bytes: int = DEFAULT_WINDOW
    """Received bytes a stream holds unread before the session stops reading the transport
    (and the initial window it grants, so a peer that counts windows never exceeds it)."""
    write_buffer_bytes: int = 256 * 1024
    """Encoded bytes queued for the transport before stream writers wait."""
    max_frame_bytes: int = 1024 * 1024
    """Largest frame accepted. spdystream sends one DATA frame per Write, and kubectl's
    io.Copy writes at most 32 KiB at a time."""
    max_header_bytes: int = 64 * 1024
    """Largest decompressed header block accepted."""
    data_frame_bytes: int = 32 * 1024
    """Largest DATA frame sent."""
    max_streams: int = 256
    """Open streams at once (kubectl opens two per forwarded connection); more are refused."""
    idle_timeout: float = 300.0
    """Seconds without any frame from the peer before the session ends (kubectl pings)."""
    write_timeout: float = 30.0
    """Seconds a writer waits for room (buffer, window), and one transport write may take."""
    stall_timeout: float = 60.0
    """Seconds the session waits for a stream's reader to make room before resetting it."""
    reply_timeout: float = 30.0
    """Seconds :meth:`SpdySession.open_stream` waits for the peer's SYN_REPLY."""
    close_timeout: float = 5.0
    """Seconds a closing session spends flushing its last frames."""
    enforce_send_window: bool = False
    """Honour the peer's windows when sending. Off: spdystream sends no WINDOW_UPDATE."""


Acceptor = Callable[["SpdyStream"], bool]
"""Called with each stream the peer opens (its headers known): True sends SYN_REPLY, False
refuses it (RST_STREAM REFUSED_STREAM). Runs on the read loop: must not block."""


class _Window:
    """One flow-control window we send into (a stream's or the session's)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.changed = asyncio.Event()

    def grow(self, delta: int) -> None:
        self.size += delta
        self.changed.set()


class SpdyStream:
    """One stream of a session: a byte pipe both ways, plus the headers it was opened with."""

    def __init__(self, session: SpdySession, stream_id: int, headers: Headers) -> None:
        self.id = stream_id
        self.headers = headers
        self._session = session
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._unacked = 0
        self.send_window = _Window(session.peer_initial_window)
        self.remote_closed = False
        """The peer sent FIN: :meth:`read` returns ``b""`` once the buffer is empty."""
        self.local_closed = False
        """We sent FIN: :meth:`write` refuses."""
        self.reset_reason: str | None = None
        self.replied = asyncio.get_running_loop().create_future()

    def header(self, name: str) -> str | None:
        """The first value of a header (names are lower case), None if absent."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def done(self) -> bool:
        """Closed both ways, or reset."""
        return self.reset_reason is not None or (self.remote_closed and self.local_closed)

    async def read(self) -> bytes:
        """The next chunk the peer sent; ``b""`` after its FIN; StreamReset if reset. It waits
        as long as the peer is silent: callers bound it (``asyncio.timeout``), and the
        session's ``idle_timeout`` ends every stream of a silent peer."""
        while not self._chunks:
            if self.reset_reason is not None:
                raise StreamReset(self.reset_reason)
            if self.remote_closed:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < self._session.settings.stream_buffer_bytes:
            self._room.set()
        self._consumed(len(chunk))
        return chunk

    def _consumed(self, size: int) -> None:
        self._unacked += size
        if self._unacked >= self._session.settings.stream_buffer_bytes // 2 and not self.done:
            self._session.send_frame(WindowUpdateFrame(self.id, self._unacked))
            self._unacked = 0
        self._session.consumed(size)

    async def write(self, data: bytes) -> None:
        """Send ``data`` in DATA frames, waiting (at most ``write_timeout`` each) for room."""
        session = self._session
        view = memoryview(data)
        while view:
            self._check_writable()
            size = min(len(view), session.settings.data_frame_bytes)
            if session.settings.enforce_send_window:
                size = min(size, await self._window_room())
            await session.send_data(DataFrame(self.id, bytes(view[:size])))
            self.send_window.size -= size
            session.send_window.size -= size
            view = view[size:]

    async def _window_room(self) -> int:
        session = self._session
        async with asyncio.timeout(session.settings.write_timeout):
            while (room := min(self.send_window.size, session.send_window.size)) <= 0:
                self._check_writable()
                waiting = self.send_window if self.send_window.size <= 0 else session.send_window
                waiting.changed.clear()
                await waiting.changed.wait()
        return room

    def _check_writable(self) -> None:
        if self.reset_reason is not None:
            raise StreamReset(self.reset_reason)
        if self.local_closed:
            raise StreamReset(f"stream {self.id}: written after its FIN")

    async def close(self) -> None:
        """Send FIN: no more data from us (the peer may still send). Idempotent."""
        if self.local_closed or self.reset_reason is not None:
            return
        self.local_closed = True
        self._session.send_frame(DataFrame(self.id, b"", fin=True))
        self._session.forget_if_done(self)

    def reset(self, status: int = RstStatus.CANCEL) -> None:
        """Abort both ways (RST_STREAM). Idempotent."""
        if self.reset_reason is not None:
            return
        if not (self.local_closed and self.remote_closed):
            self._session.send_frame(RstStreamFrame(self.id, status))
        self._ended(f"stream {self.id} reset by us ({_status_name(status)})")

    # -- the session's side ----------------------------------------------------------------

    async def deliver(self, data: bytes, fin: bool) -> None:
        """Queue what a DATA frame carried; waits while the buffer is full (stall_timeout)."""
        if data and self.reset_reason is None:
            if self._buffered >= self._session.settings.stream_buffer_bytes:
                self._room.clear()
                try:
                    async with asyncio.timeout(self._session.settings.stall_timeout):
                        await self._room.wait()
                except TimeoutError:
                    stall = self._session.settings.stall_timeout
                    log.info("spdy: stream %d not read for %.1f s; resetting it", self.id, stall)
                    self.reset(RstStatus.FLOW_CONTROL_ERROR)
                    return
            if self.reset_reason is None:
                self._chunks.append(data)
                self._buffered += len(data)
        if fin:
            self.remote_closed = True
        self._readable.set()
        self._session.forget_if_done(self)

    def _ended(self, reason: str) -> None:
        """Reset (by either side) or its session went: wake every waiter."""
        if self.reset_reason is None:
            self.reset_reason = reason
        self._chunks.clear()
        self._buffered = 0
        for event in (self._readable, self._room, self.send_window.changed):
            event.set()
        if not self.replied.done():
            self.replied.set_exception(StreamReset(reason))
            self.replied.exception()  # retrieved: nobody may be waiting on it
        self._session.forget_if_done(self)


def _status_name(status: int) -> str:
    try:
        return RstStatus(status).name
    except ValueError:
        return str(status)


class SpdySession:
    """One SPDY/3.1 session over ``transport`` (see the module docstring).

    :meth:`run` serves it until the peer closes, goes silent, or sends garbage, and always
    leaves it closed: every stream reset, its writer task ended, the transport closed.
    ``client`` picks the stream-id and ping-id parity (a server's streams are even).
    """

    def __init__(
        self,
        transport: ByteTransport,
        *,
        accept: Acceptor | None = None,
        client: bool = False,
        settings: SpdySettings | None = None,
        name: str = "spdy",
    ) -> None:
        self.transport = transport
        self.settings = settings or SpdySettings()
        self.name = name
        self._accept = accept
        self._client = client
        self._encoder = FrameEncoder()
        self._decoder = FrameDecoder(
            max_frame_bytes=self.settings.max_frame_bytes,
            max_header_bytes=self.settings.max_header_bytes,
        )
        self.streams: dict[int, SpdyStream] = {}
        self._next_id = 1 if client else 2
        self._last_peer_id = 0
        self.peer_initial_window = DEFAULT_WINDOW
        self.send_window = _Window(DEFAULT_WINDOW)
        self._unacked = 0
        self._out = bytearray()
        self._out_ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self.going_away = False
        """A GOAWAY went either way: no new stream."""
        self.ended = asyncio.Event()
        """Set once :meth:`run` has finished."""

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the session until it ends (module docstring); never raises but CancelledError."""
        writer = asyncio.create_task(self._write_loop(), name=f"{self.name} writer")
        reader = asyncio.create_task(self._read_loop(), name=f"{self.name} reader")
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer.done() or not reader.done():
                return
            status = reader.result()
            self.send_frame(GoAwayFrame(self._last_peer_id, status))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.close_timeout):
                    while self._out and not writer.done():
                        self._room.clear()
                        await self._room.wait()
        finally:
            self._closed = True
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            self._end_streams("the session ended")
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.close_timeout):
                    await self.transport.close()
            self.ended.set()

    async def _read_loop(self) -> int:
        """Read and dispatch until the peer closes; returns the GOAWAY status to send."""
        try:
            while True:
                async with asyncio.timeout(self.settings.idle_timeout):
                    data = await self.transport.read()
                if not data:
                    return GoAwayStatus.OK
                for frame in self._decoder.feed(data):
                    await self._dispatch(frame)
        except SpdyError as exc:
            log.info("%s: malformed SPDY from the peer, ending the session: %s", self.name, exc)
            return GoAwayStatus.PROTOCOL_ERROR
        except TimeoutError:
            idle = self.settings.idle_timeout
            log.info("%s: nothing from the peer for %.0f s; ending the session", self.name, idle)
            return GoAwayStatus.OK
        except (ConnectionError, OSError) as exc:
            log.debug("%s: transport failed: %s", self.name, exc)
            return GoAwayStatus.OK
        except Exception:
            log.exception("%s: ending the session on an internal error", self.name)
            return GoAwayStatus.INTERNAL_ERROR

    async def _write_loop(self) -> None:
        """Move queued frames to the transport, as few writes as there are gaps."""
        try:
            while True:
                await self._out_ready.wait()
                data = bytes(self._out)
                self._out.clear()
                self._out_ready.clear()
                self._room.set()
                async with asyncio.timeout(self.settings.write_timeout):
                    await self.transport.write(data)
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.debug("%s: cannot write to the peer: %s", self.name, exc)
        finally:
            self._closed = True
            self._room.set()  # wake writers: they find the session closed

    # -- sending ---------------------------------------------------------------------------

    def send_frame(self, frame: Frame) -> None:
        """Queue a frame without waiting (control frames, FIN); dropped once closed."""
        if self._closed:
            return
        self._out += self._encoder.encode(frame)
        self._out_ready.set()
        if len(self._out) >= self.settings.write_buffer_bytes:
            self._room.clear()

    async def send_data(self, frame: DataFrame) -> None:
        """Queue a DATA frame once there is room (write_timeout; StreamReset once closed)."""
        async with asyncio.timeout(self.settings.write_timeout):
            while len(self._out) >= self.settings.write_buffer_bytes and not self._closed:
                self._room.clear()
                await self._room.wait()
        if self._closed:
            raise StreamReset("the session ended")
        self.send_frame(frame)

    async def open_stream(
        self, headers: Iterable[tuple[str, str]], *, fin: bool = False
    ) -> SpdyStream:
        """Open a stream (SYN_STREAM) and wait for its SYN_REPLY (reply_timeout)."""
        if self._closed or self.going_away:
            raise StreamReset("the session is ending")
        if self._next_id > MAX_WINDOW:
            raise StreamReset("stream ids are used up")
        block = tuple((name.lower(), value) for name, value in headers)
        stream = SpdyStream(self, self._next_id, block)
        self._next_id += 2
        self.streams[stream.id] = stream
        stream.local_closed = fin
        self.send_frame(SynStreamFrame(stream.id, block, fin=fin))
        try:
            async with asyncio.timeout(self.settings.reply_timeout):
                await asyncio.shield(stream.replied)
        except TimeoutError:
            stream.reset()
            raise
        return stream

    def consumed(self, size: int) -> None:
        """A stream's reader took ``size`` bytes: grow the session's window in halves."""
        self._unacked += size
        if self._unacked >= self.settings.stream_buffer_bytes // 2:
            self.send_frame(WindowUpdateFrame(0, self._unacked))
            self._unacked = 0

    def forget_if_done(self, stream: SpdyStream) -> None:
        if stream.done and self.streams.get(stream.id) is stream:
            del self.streams[stream.id]

    def _end_streams(self, reason: str) -> None:
        for stream in list(self.streams.values()):
            stream._ended(reason)
        self.streams.clear()
        self.send_window.changed.set()  # a writer waiting on the session's window: it ended

    async def aclose(self) -> None:
        """End the session from our side: GOAWAY, then close the transport (run ends)."""
        if not self._closed:
            self.going_away = True
            self.send_frame(GoAwayFrame(self._last_peer_id))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.close_timeout):
                    while self._out and not self._closed:
                        self._room.clear()
                        await self._room.wait()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.settings.close_timeout):
                await self.transport.close()

    # -- receiving -------------------------------------------------------------------------

    async def _dispatch(self, frame: Frame) -> None:
        match frame:
            case DataFrame(sid, data, fin):
                stream = self.streams.get(sid)
                if stream is None:
                    self.consumed(len(data))  # a stream we closed or reset: drop it
                elif stream.remote_closed:
                    stream.reset(RstStatus.STREAM_ALREADY_CLOSED)
                else:
                    await stream.deliver(data, fin)
            case SynStreamFrame():
                self._on_syn_stream(frame)
            case SynReplyFrame(sid, _, fin):
                stream = self.streams.get(sid)
                if stream is not None and not stream.replied.done():
                    stream.replied.set_result(None)
                    if fin:
                        await stream.deliver(b"", True)
            case HeadersFrame(sid, _, fin):
                stream = self.streams.get(sid)
                if stream is not None and fin:
                    await stream.deliver(b"", True)
            case RstStreamFrame(sid, status):
                stream = self.streams.get(sid)
                if stream is not None:
                    stream._ended(f"stream {sid} reset by the peer ({_status_name(status)})")
            case SettingsFrame(values):
                self._on_settings(values)
            case PingFrame(ping_id):
                if ping_id % 2 != (1 if self._client else 0):
                    self.send_frame(frame)  # the peer's ping: echo it
            case GoAwayFrame():
                self.going_away = True
            case WindowUpdateFrame(sid, delta):
                window = self.send_window if sid == 0 else None
                if sid != 0 and (stream := self.streams.get(sid)) is not None:
                    window = stream.send_window
                if window is not None:
                    if window.size + delta > MAX_WINDOW:
                        raise SpdyError(f"window of stream {sid} grown past 2^31-1")
                    window.grow(delta)

    def _on_syn_stream(self, frame: SynStreamFrame) -> None:
        sid = frame.stream_id
        if sid % 2 != (0 if self._client else 1) or sid <= self._last_peer_id:
            raise SpdyError(f"SYN_STREAM {sid} after {self._last_peer_id}, or of our parity")
        self._last_peer_id = sid
        if self.going_away or self._closed or len(self.streams) >= self.settings.max_streams:
            self.send_frame(RstStreamFrame(sid, RstStatus.REFUSED_STREAM))
            return
        stream = SpdyStream(self, sid, frame.headers)
        stream.remote_closed = frame.fin
        stream.local_closed = frame.unidirectional
        stream.replied.set_result(None)
        self.streams[sid] = stream
        try:
            accepted = self._accept is not None and self._accept(stream)
        except Exception:
            log.exception("%s: accepting stream %d failed", self.name, sid)
            accepted = False
        if stream.reset_reason is not None:
            return  # the acceptor reset it itself
        if not accepted:
            stream.reset(RstStatus.REFUSED_STREAM)
            return
        self.send_frame(SynReplyFrame(sid, ()))

    def _on_settings(self, values: tuple[tuple[int, int, int], ...]) -> None:
        for _flags, key, value in values:
            if key == SettingId.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise SpdyError(f"initial window of {value}")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window.grow(delta)
