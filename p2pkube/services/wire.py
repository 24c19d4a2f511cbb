"""The request rpc: the bodies of ``svc.open``, ``svc.body``, ``svc.read`` and ``svc.cancel``.

A router that picked an endpoint on another node carries the request there over the mesh's rpc
(``p2pkube/net/rpc.py``); the body goes both ways in chunks of ``services.stream_chunk_bytes``
(well below ``rpc.max_request_bytes``). Like y-protocols, this module is only small functions
that build a message body and read one back, checked: every body a peer sends is untrusted, so
each reader checks types and sizes against the *receiving* node's own settings and raises
:class:`WireError` (answered ``bad-request`` and logged by the caller, never a crash). The
exchange, byte for byte, is in docs/protocol.md ("Request rpc"):

* ``svc.open`` ``{stream, ns, pod, port, req, body, more, deadline}`` -> the head answer
  ``{status, reason, headers, chunk, end}``, or ``{}`` when ``more`` (the body follows);
* ``svc.body`` ``{stream, seq, chunk, end}`` -> ``{}``, and the head answer for ``end``;
* ``svc.read`` ``{stream}`` -> ``{chunk, end}`` (a long poll: an empty chunk after a while);
* ``svc.cancel`` ``{stream}`` -> ``{}``.

An HTTP answer of the serving node's own (no such pod here 503, busy 503, handler 502/504) is
an rpc error whose code is ``http-<status>``, then ``;retry-after=<s>`` and ``;reached`` when
they apply (:func:`error_code`, :func:`http_error`).

Pure standard library plus the shared types: the browser node runs it too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from p2pkube.runtime.cgi import CgiRequest
from p2pkube.services.settings import ServiceSettings
from p2pkube.services.types import HttpError, ResponseHead

OPEN = "svc.open"
BODY = "svc.body"
READ = "svc.read"
CANCEL = "svc.cancel"
PING = "svc.ping"
"""Answered at once with ``{}``: a router asks whether a node it waits on is still there
(``services/liveness.py``); the body is ignored."""
METHODS = (OPEN, BODY, READ, CANCEL, PING)

BAD_REQUEST = "bad-request"
"""Error code of a malformed message (and of a body that contradicts its contentLength)."""
GONE = "gone"
"""Error code of ``svc.body``/``svc.read`` for a stream the server does not hold (expired,
cancelled, never opened): the caller's response is broken."""
BROKEN = "broken"
"""Error code of ``svc.read`` when the handler's body ended early (its message says why)."""

_STREAM_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Control characters (tab aside): CR/LF in a response header would split it at the client."""
_CODE = re.compile(r"http-([1-5][0-9][0-9])((?:;retry-after=[0-9]{1,6})?)((?:;reached)?)")
MAX_NAME = 253
"""Longest namespace or pod name (a DNS subdomain)."""
MAX_SHORT = 256
"""Longest remote address, server name, protocol or reason phrase."""
OPEN_OVERHEAD = 1024
"""Bytes of an open message besides its strings and body (keys, ints, names, the stream)."""
MAX_RESPONSE_HEADERS = 256
"""Most header fields in a head answer."""


class WireError(ValueError):
    """A message body that breaks the request rpc's shape; the text says which field."""


@dataclass(frozen=True)
class OpenMessage:
    """A checked ``svc.open``."""

    stream: str
    namespace: str
    pod: str
    port: int
    request: CgiRequest
    chunk: bytes
    more: bool
    deadline: float
    """Seconds the caller still gives the request (the server also applies its own cap)."""


@dataclass(frozen=True)
class BodyMessage:
    """A checked ``svc.body``: chunk ``seq`` (1, 2, ...; the open carried chunk 0)."""

    stream: str
    seq: int
    chunk: bytes
    end: bool


# -- building ----------------------------------------------------------------------------------
def open_message(
    stream: str,
    namespace: str,
    pod: str,
    port: int,
    request: CgiRequest,
    chunk: bytes,
    *,
    more: bool,
    deadline: float,
) -> dict[str, Any]:
    """The body of ``svc.open``: the request line and headers, the first body chunk."""
    return {
        "stream": stream,
        "ns": namespace,
        "pod": pod,
        "port": port,
        "req": {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": [[name, value] for name, value in request.headers],
            "remoteAddr": request.remote_addr,
            "serverName": request.server_name,
            "serverPort": request.server_port,
            "protocol": request.protocol,
            "contentLength": request.content_length,
        },
        "body": chunk,
        "more": more,
        "deadline": deadline,
    }


def head_size(request: CgiRequest) -> int:
    """A bound on the bytes of an open message without its body chunk (msgpack adds at most
    5 bytes per string and a few hundred for the keys)."""
    strings = [request.method, request.path, request.query, request.remote_addr]
    strings += [request.server_name, request.protocol]
    strings += [part for header in request.headers for part in header]
    return OPEN_OVERHEAD + sum(len(text.encode()) + 5 for text in strings)


def body_message(stream: str, seq: int, chunk: bytes, end: bool) -> dict[str, Any]:
    """The body of ``svc.body``: the next request body chunk."""
    return {"stream": stream, "seq": seq, "chunk": chunk, "end": end}


def stream_message(stream: str) -> dict[str, Any]:
    """The body of ``svc.read`` and ``svc.cancel``."""
    return {"stream": stream}


def head_answer(head: ResponseHead, chunk: bytes, end: bool) -> dict[str, Any]:
    """The answer that carries a response's head, its first body bytes, and whether that was
    all of it."""
    return {
        "status": head.status,
        "reason": head.reason,
        "headers": [[name, value] for name, value in head.headers],
        "chunk": chunk,
        "end": end,
    }


def chunk_answer(chunk: bytes, end: bool) -> dict[str, Any]:
    """The answer of ``svc.read``."""
    return {"chunk": chunk, "end": end}


def error_code(error: HttpError) -> str:
    """The rpc error code carrying ``error`` (its message travels as the rpc message)."""
    code = f"http-{error.status}"
    if error.retry_after is not None:
        code += f";retry-after={max(0, int(error.retry_after))}"
    return code + (";reached" if error.reached_handler else "")


# -- reading -----------------------------------------------------------------------------------
def http_error(code: str, message: str) -> HttpError | None:
    """The HttpError an ``http-...`` rpc error code stands for; None for other codes."""
    match = _CODE.fullmatch(code)
    if match is None:
        return None
    status, retry, reached = match.groups()
    return HttpError(
        int(status),
        message,
        retry_after=int(retry.partition("=")[2]) if retry else None,
        reached_handler=bool(reached),
    )


def _map(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WireError(f"{what}: not a map")
    return body


def _str(body: dict[str, Any], key: str, limit: int, *, empty: bool = True) -> str:
    value = body.get(key)
    if not isinstance(value, str) or len(value) > limit or (not empty and not value):
        raise WireError(f"{key}: want a string of {0 if empty else 1}..{limit} characters")
    return value


def _int(body: dict[str, Any], key: str, low: int, high: int) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise WireError(f"{key}: want an int in {low}..{high}")
    return value


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if not isinstance(value, bool):
        raise WireError(f"{key}: want a bool")
    return value


def _bin(body: dict[str, Any], key: str, limit: int) -> bytes:
    value = body.get(key)
    if not isinstance(value, bytes) or len(value) > limit:
        raise WireError(f"{key}: want bin of at most {limit} bytes")
    return value


def _stream(body: dict[str, Any]) -> str:
    value = body.get("stream")
    if not isinstance(value, str) or not _STREAM_ID.fullmatch(value):
        raise WireError("stream: want 1-64 characters of [0-9A-Za-z_-]")
    return value


def _pairs(value: Any, what: str, most: int, limit: int) -> tuple[tuple[str, str], ...]:
    """A list of [name, value] string pairs, at most ``most`` of them, ``limit`` bytes in all."""
    if not isinstance(value, list) or len(value) > most:
        raise WireError(f"{what}: want a list of at most {most} [name, value] pairs")
    pairs, total = [], 0
    for pair in value:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], str)
        ):
            raise WireError(f"{what}: every entry must be [name: str, value: str]")
        total += len(pair[0]) + len(pair[1]) + 4
        if total > limit:
            raise WireError(f"{what}: over {limit} bytes")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _request(value: Any, limits: ServiceSettings) -> CgiRequest:
    req = _map(value, "req")
    text = limits.max_request_header_bytes
    try:
        method = _str(req, "method", 32, empty=False)
        if not _TOKEN.fullmatch(method):
            raise WireError("method: not an HTTP token")
        length = req.get("contentLength")
        if length is not None:
            length = _int(req, "contentLength", 0, limits.max_request_body_bytes)
        headers = _pairs(
            req.get("headers"),
            "req.headers",
            limits.max_request_headers,
            text * max(1, limits.max_request_headers),
        )
        return CgiRequest(
            method=method,
            path=_str(req, "path", text),
            query=_str(req, "query", text),
            headers=headers,
            remote_addr=_str(req, "remoteAddr", MAX_SHORT),
            server_name=_str(req, "serverName", MAX_SHORT),
            server_port=_int(req, "serverPort", 0, 65535),
            protocol=_str(req, "protocol", 32, empty=False),
            content_length=length,
        )
    except WireError as exc:
        raise WireError(f"req.{exc}") from None


def read_open(body: Any, limits: ServiceSettings) -> OpenMessage:
    """A ``svc.open`` body, checked against this node's ``limits``."""
    body = _map(body, OPEN)
    deadline = body.get("deadline")
    if (
        not isinstance(deadline, (int, float))
        or isinstance(deadline, bool)
        or not math.isfinite(deadline)
        or deadline <= 0
    ):
        raise WireError("deadline: want a positive number of seconds")
    return OpenMessage(
        stream=_stream(body),
        namespace=_str(body, "ns", MAX_NAME, empty=False),
        pod=_str(body, "pod", MAX_NAME, empty=False),
        port=_int(body, "port", 1, 65535),
        request=_request(body.get("req"), limits),
        chunk=_bin(body, "body", limits.stream_chunk_bytes),
        more=_bool(body, "more"),
        deadline=min(float(deadline), limits.request_deadline),
    )


def read_body(body: Any, limits: ServiceSettings) -> BodyMessage:
    """A ``svc.body`` body."""
    body = _map(body, BODY)
    return BodyMessage(
        stream=_stream(body),
        seq=_int(body, "seq", 1, 2**31),
        chunk=_bin(body, "chunk", limits.stream_chunk_bytes),
        end=_bool(body, "end"),
    )


def read_stream(body: Any) -> str:
    """The stream id of a ``svc.read`` or ``svc.cancel`` body."""
    return _stream(_map(body, "svc.read/svc.cancel"))


def read_ack(body: Any) -> None:
    """The answer to an open with ``more`` or to a body chunk that is not the last: ``{}``."""
    _map(body, "acknowledgement")


def read_head_answer(body: Any, limits: ServiceSettings) -> tuple[ResponseHead, bytes, bool]:
    """A head answer (from the node that ran the handler): head, first chunk, end."""
    body = _map(body, "head answer")
    head = ResponseHead(
        status=_int(body, "status", 100, 599),
        reason=_str(body, "reason", MAX_SHORT),
        headers=_pairs(
            body.get("headers"), "headers", MAX_RESPONSE_HEADERS, limits.max_response_header_bytes
        ),
    )
    if _CONTROL.search(head.reason):
        raise WireError("reason: control character")
    for name, value in head.headers:
        if not _FIELD_NAME.fullmatch(name) or _CONTROL.search(value):
            raise WireError(f"headers: {name[:64]!r} is no valid header field")
    return head, _bin(body, "chunk", limits.stream_chunk_bytes), _bool(body, "end")


def read_chunk_answer(body: Any, limits: ServiceSettings) -> tuple[bytes, bool]:
    """A ``svc.read`` answer: the next chunk (maybe empty) and whether the body ended."""
    body = _map(body, "read answer")
    return _bin(body, "chunk", limits.stream_chunk_bytes), _bool(body, "end")
