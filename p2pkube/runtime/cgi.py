"""The CGI protocol (RFC 3875) that handler pods speak, shared by the native and browser runtimes.

A WASI preview 1 module cannot listen on a socket, but both runtimes give it env, stdin and
stdout, which is all CGI needs (as WAGI runs WASI commands). So each HTTP request runs one
instance: the request becomes meta-variables in its env (``cgi_environ``), the body goes on
stdin, and the instance writes a header block, a blank line and the body on stdout, which
``CgiResponseParser`` turns into a status, headers and streamed body chunks.

This module is pure standard library so that the browser node (Pyodide) imports it too; it does
no I/O. Everything here treats the handler's output as hostile: a pod prints whatever it likes,
and a bad response must become a ``CgiError`` (the router answers 502), never a broken agent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus

from p2pkube import __version__

SERVER_SOFTWARE = f"p2pkube/{__version__}"

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
"""The response header block at most; a handler printing endless headers is cut off here."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP field name (RFC 9110 §5.1): anything else could smuggle syntax into the response."""

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Control characters (tab aside): CR/LF split headers, NUL truncates them in C handlers."""

_STATUS = re.compile(r"([2-5][0-9][0-9])(?:[ \t]+(.*))?")
"""A Status value (RFC 3875 §6.3.3): three digits, then an optional reason phrase."""

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers about one connection (RFC 9110 §7.6.1): they describe the link to the client or to the
router, not the request or the response, so they never cross the CGI boundary either way."""


class CgiError(Exception):
    """A handler's output that is not a valid CGI response; ``reason`` goes into the 502.

    ``head_sent`` and ``body_bytes_sent`` say what the caller had already received from the
    parser when the error struck: once the head has gone to the client, a 502 is no longer
    possible and the router can only cut the response short.
    """

    def __init__(self, reason: str, *, head_sent: bool = False, body_bytes_sent: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.head_sent = head_sent
        self.body_bytes_sent = body_bytes_sent


@dataclass(frozen=True)
class CgiRequest:
    """What the router knows of one HTTP request, as the CGI environment needs it.

    ``path`` is the path below the handler (PATH_INFO), already percent-decoded as RFC 3875
    §4.1.5 asks; ``query`` is the raw query string, without the '?'. ``content_length`` is None
    when the request has no body, so that CONTENT_LENGTH is set only when one comes on stdin.
    """

    method: str
    path: str
    query: str = ""
    headers: Sequence[tuple[str, str]] = ()
    remote_addr: str = ""
    server_name: str = "localhost"
    server_port: int = 80
    protocol: str = "HTTP/1.1"
    content_length: int | None = None
    script_name: str = ""
    """The path the handler is mounted at; "" for a handler at the root, as every pod is today."""


def _check_text(what: str, text: str) -> None:
    if _CONTROL.search(text):
        raise ValueError(f"{what}: control character in {text!r}")


def cgi_environ(
    request: CgiRequest,
    *,
    container_env: Mapping[str, str],
    pod_name: str,
    pod_namespace: str,
    node_name: str,
) -> dict[str, str]:
    """The env of the instance that handles ``request`` (RFC 3875 §4.1).

    Layers, later ones winning: the container's own env, then the pod's identity (what the
    Downward API would give), then the request's meta-variables, so a container env cannot
    forge what the request says (WAGI does the same).

    Raises ValueError, naming the header, for control characters or a malformed header name:
    CR/LF or NUL in an env value would reach a C handler's getenv() as something else.
    """
    if not _TOKEN.fullmatch(request.method):
        raise ValueError(f"method: not a token: {request.method!r}")
    _check_text("path", request.path)
    _check_text("query", request.query)
    _check_text("script name", request.script_name)

    joined: dict[str, list[str]] = {}
    for name, value in request.headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header {name!r}: not a valid field name")
        _check_text(f"header {name}", value)
        joined.setdefault(name.lower(), []).append(value.strip(" \t"))
    # Connection may name more hop-by-hop headers of its own (RFC 9110 §7.6.1).
    dropped = set(_HOP_BY_HOP)
    for value in joined.get("connection", []):
        dropped.update(part.strip().lower() for part in value.split(","))

    meta: dict[str, str] = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": request.script_name,
        "PATH_INFO": request.path,
        "QUERY_STRING": request.query,
        "SERVER_NAME": request.server_name,
        "SERVER_PORT": str(request.server_port),
        "SERVER_PROTOCOL": request.protocol,
        "REMOTE_ADDR": request.remote_addr,
    }
    if request.content_length is not None:
        meta["CONTENT_LENGTH"] = str(request.content_length)
    for name, values in joined.items():
        if name == "content-type":
            meta["CONTENT_TYPE"] = values[-1]
            continue
        # Content-Length is the router's (it knows the body it puts on stdin); Proxy is httpoxy
        # (CVE-2016-5385): as HTTP_PROXY it would set the handler's outgoing proxy. A name with
        # '_' would map onto the same variable as its '-' twin and could shadow it (nginx and
        # Apache drop those too).
        if name in dropped or name in ("content-length", "proxy") or "_" in name:
            continue
        sep = "; " if name == "cookie" else ", "  # RFC 6265 §5.4: cookies join with "; "
        meta["HTTP_" + name.upper().replace("-", "_")] = sep.join(values)

    env = dict(container_env)
    env.update(POD_NAME=pod_name, POD_NAMESPACE=pod_namespace, NODE_NAME=node_name)
    env.update(meta)
    return env


@dataclass(frozen=True)
class CgiHead:
    """The parsed header block: what the router sends before the body.

    ``headers`` keep the handler's order and spelling, Content-Type and Location included, the
    Status field and the framing headers (Content-Length, hop-by-hop ones) left out: the router
    frames the streamed body itself.
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lower = name.lower()
        return next((v for n, v in self.headers if n.lower() == lower), None)


CgiEvent = CgiHead | bytes
"""What ``CgiResponseParser.feed`` yields: the head once, then body chunks."""


class CgiResponseParser:
    """Turns a handler's stdout, fed in chunks as it is written, into a head and body chunks.

    Incremental so the body streams to the client as the instance writes it, instead of waiting
    for the instance to end. Bounded: the header block may not exceed ``max_header_bytes`` and
    the body ``max_body_bytes``, whatever the chunking, and the buffered header bytes never
    exceed the cap plus one chunk. After a ``CgiError`` the parser stays failed.
    """

    def __init__(
        self,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_body_bytes: int | None = None,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._scan = 0  # where the next header line starts in _buf
        self._lines: list[bytes] = []
        self._head: CgiHead | None = None
        self.head_sent = False
        self.body_bytes_sent = 0
        self._error: CgiError | None = None
        self._closed = False

    def _fail(self, reason: str) -> CgiError:
        self._error = CgiError(
            reason, head_sent=self.head_sent, body_bytes_sent=self.body_bytes_sent
        )
        self._buf.clear()
        return self._error

    def feed(self, data: bytes) -> list[CgiEvent]:
        """Take the next chunk of stdout; return the head (once complete) and body bytes.

        The events of a call that raises are not delivered: ``head_sent`` and
        ``body_bytes_sent`` on the error count only what earlier calls returned.
        """
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RuntimeError("feed() after close()")
        events: list[CgiEvent] = []
        if self._head is not None:
            body = bytes(data)
        else:
            self._buf += data
            head = self._parse_head()
            if head is None:
                return events
            events.append(head)
            body = bytes(self._buf[self._scan :])
            self._buf.clear()
        if body:
            total = self.body_bytes_sent + len(body)
            if self.max_body_bytes is not None and total > self.max_body_bytes:
                raise self._fail(f"response too large: body over {self.max_body_bytes} bytes")
            events.append(body)
        # Only now, with nothing left to raise, count what the caller receives.
        self.head_sent = self.head_sent or bool(events and isinstance(events[0], CgiHead))
        self.body_bytes_sent += len(body)
        return events

    def close(self) -> None:
        """The handler's stdout reached EOF: an error if the header block never ended."""
        if self._error is not None:
            raise self._error
        self._closed = True
        if self._head is None:
            raise self._fail("handler ended before the end of its response headers")

    def _parse_head(self) -> CgiHead | None:
        """Consume complete header lines; the head at the blank line, None until then."""
        cap = self.max_header_bytes
        while True:
            # The block, line ends included, must fit the cap: look no further than it.
            nl = self._buf.find(b"\n", self._scan, cap)
            if nl < 0:
                if len(self._buf) >= cap:
                    raise self._fail(f"response headers over {cap} bytes")
                return None
            line = bytes(self._buf[self._scan : nl])
            self._scan = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                self._head = self._build_head()
                return self._head
            self._lines.append(line)

    def _build_head(self) -> CgiHead:
        """Apply RFC 3875 §6's rules to the header lines."""
        status: str | None = None
        headers: list[tuple[str, str]] = []
        seen: set[str] = set()
        for raw in self._lines:
            # latin-1 maps every byte to one character, so any byte is kept and checked.
            text = raw.decode("latin-1")
            name, colon, value = text.partition(":")
            if not colon or not _TOKEN.fullmatch(name) or _CONTROL.search(value):
                raise self._fail(f"malformed response header line {text[:80]!r}")
            value = value.strip(" \t")
            lower = name.lower()
            if lower in ("status", "content-type", "location"):
                if lower in seen:
                    raise self._fail(f"{name} given twice")
                seen.add(lower)
            if lower == "status":
                status = value
            elif lower in _HOP_BY_HOP or lower == "content-length":
                continue
            else:
                headers.append((name, value))
        self._lines.clear()

        if status is None:
            if "location" in seen:
                code, reason = 302, "Found"
            elif "content-type" in seen:
                code, reason = 200, "OK"
            else:
                raise self._fail("response has no Content-Type, Status or Location")
        else:
            # A final status: 1xx is interim and cannot end a CGI response.
            match = _STATUS.fullmatch(status)
            if match is None:
                raise self._fail(f"invalid Status {status[:40]!r}")
            code = int(match[1])
            reason = (match[2] or "").strip(" \t")
            if not reason:
                try:
                    reason = HTTPStatus(code).phrase
                except ValueError:
                    reason = ""
        return CgiHead(status=code, reason=reason, headers=tuple(headers))
