"""p2pkube.runtime.cgi: the request env and the response parser, fed in awkward chunkings."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest

from p2pkube.runtime.cgi import (
    SERVER_SOFTWARE,
    CgiError,
    CgiHead,
    CgiRequest,
    CgiResponseParser,
    cgi_environ,
)

IDENTITY = {"pod_name": "web-1", "pod_namespace": "default", "node_name": "n1"}


def env_of(request: CgiRequest, container_env: dict[str, str] | None = None) -> dict[str, str]:
    return cgi_environ(request, container_env=container_env or {}, **IDENTITY)


def test_environ_meta_variables() -> None:
    req = CgiRequest(
        method="POST",
        path="/echo/a b",
        query="x=1&y=2",
        headers=[("Content-Type", "text/plain"), ("Content-Length", "5"), ("Host", "h:30080")],
        remote_addr="10.0.0.9",
        server_name="h",
        server_port=30080,
        content_length=5,
    )
    env = env_of(req)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/echo/a b"
    assert env["QUERY_STRING"] == "x=1&y=2"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "5"
    assert env["SERVER_NAME"] == "h"
    assert env["SERVER_PORT"] == "30080"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "10.0.0.9"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["SERVER_SOFTWARE"] == SERVER_SOFTWARE
    assert env["SCRIPT_NAME"] == ""
    assert env["HTTP_HOST"] == "h:30080"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["POD_NAME"] == "web-1"
    assert env["POD_NAMESPACE"] == "default"
    assert env["NODE_NAME"] == "n1"


def test_environ_no_body_no_content_length() -> None:
    env = env_of(CgiRequest(method="GET", path="/"))
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert env["QUERY_STRING"] == ""


def test_environ_headers_joined_and_filtered() -> None:
    headers = [
        ("Accept", "text/html"),
        ("accept", "application/json"),
        ("X-Trace-Id", " abc "),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
        ("Connection", "keep-alive, X-Secret"),
        ("X-Secret", "hop"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "websocket"),
        ("Proxy", "http://evil:8080"),
        ("X_Trace_Id", "forged"),
    ]
    env = env_of(CgiRequest(method="GET", path="/", headers=headers))
    assert env["HTTP_ACCEPT"] == "text/html, application/json"
    assert env["HTTP_X_TRACE_ID"] == "abc"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    for gone in (
        "HTTP_CONNECTION",
        "HTTP_X_SECRET",
        "HTTP_KEEP_ALIVE",
        "HTTP_TRANSFER_ENCODING",
        "HTTP_UPGRADE",
        "HTTP_PROXY",
    ):
        assert gone not in env


def test_environ_request_overrides_container_env() -> None:
    container = {
        "GREETING": "hi",
        "REQUEST_METHOD": "FAKE",
        "HTTP_HOST": "fake",
        "POD_NAME": "fake",
        "HTTP_PROXY": "http://corp:3128",
    }
    req = CgiRequest(method="GET", path="/", headers=[("Host", "real")])
    env = env_of(req, container)
    assert env["GREETING"] == "hi"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["HTTP_HOST"] == "real"
    assert env["POD_NAME"] == "web-1"
    # The container's own proxy setting is its own; only a request cannot set it.
    assert env["HTTP_PROXY"] == "http://corp:3128"


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-Evil", "a\r\nX-Other: b"), ("X-Nul", "a\x00b"), ("X-Del", "a\x7f"), ("Bad Name", "v")],
)
def test_environ_rejects_control_characters(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        env_of(CgiRequest(method="GET", path="/", headers=[(name, value)]))


def test_environ_allows_tab_in_value() -> None:
    env = env_of(CgiRequest(method="GET", path="/", headers=[("X-T", "a\tb")]))
    assert env["HTTP_X_T"] == "a\tb"


def test_environ_rejects_control_in_path_and_method() -> None:
    with pytest.raises(ValueError, match="path"):
        env_of(CgiRequest(method="GET", path="/a\nb"))
    with pytest.raises(ValueError, match="method"):
        env_of(CgiRequest(method="GE T", path="/"))


# --- the response parser ---


def split_every(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


def run(chunks: Iterable[bytes], **kw: int) -> tuple[CgiHead, bytes]:
    parser = CgiResponseParser(**kw)
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    parser.close()
    assert events and isinstance(events[0], CgiHead)
    assert sum(isinstance(e, CgiHead) for e in events) == 1
    body = b"".join(e for e in events[1:] if isinstance(e, bytes))
    return events[0], body


DOC = (
    b"Content-Type: text/plain\r\nX-A: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
    b"\r\nhello\r\n\r\nworld"
)


def chunkings(data: bytes) -> list[list[bytes]]:
    cut = data.index(b"\r\n") + 1  # a CRLF split between chunks
    return [
        [data],
        split_every(data, 1),
        split_every(data, 3),
        split_every(data, 7),
        [data[:cut], data[cut:]],
        [data[:10], b"", data[10:]],
    ]


@pytest.mark.parametrize("chunks", chunkings(DOC))
def test_document_response_any_chunking(chunks: list[bytes]) -> None:
    head, body = run(chunks)
    assert (head.status, head.reason) == (200, "OK")
    assert head.headers == (
        ("Content-Type", "text/plain"),
        ("X-A", "1"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    )
    assert head.get("content-type") == "text/plain"
    assert body == b"hello\r\n\r\nworld"


@pytest.mark.parametrize("chunks", chunkings(b"Status: 404\nContent-Type: text/plain\n\r\nnope"))
def test_status_and_lf_line_ends(chunks: list[bytes]) -> None:
    head, body = run(chunks)
    assert (head.status, head.reason) == (404, "Not Found")
    assert body == b"nope"


def test_status_with_reason_and_no_content_type() -> None:
    head, body = run([b"Status: 204 Nothing Here\n\n"])
    assert (head.status, head.reason, head.headers, body) == (204, "Nothing Here", (), b"")
    head, _ = run([b"Status:\t418\tI'm a teapot \n\n"])
    assert (head.status, head.reason) == (418, "I'm a teapot")
    head, _ = run([b"Status: 599\n\n"])  # valid, though HTTP names no phrase for it
    assert (head.status, head.reason) == (599, "")


def test_module_imports_only_the_standard_library() -> None:
    """The browser node (Pyodide) imports it: no aiohttp, wasmtime or any other platform library."""
    import ast
    import sys

    import p2pkube.runtime.cgi as cgi

    with open(cgi.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    roots = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    roots |= {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
    }
    assert roots - set(sys.stdlib_module_names) == {"p2pkube"}


@pytest.mark.parametrize("location", [b"/other", b"https://example.com/x"])
def test_location_without_status_is_302(location: bytes) -> None:
    head, _ = run(split_every(b"Location: " + location + b"\r\n\r\n", 1))
    assert head.status == 302
    assert head.get("Location") == location.decode()


def test_location_with_status_keeps_status() -> None:
    head, _ = run([b"Status: 301 Moved\nLocation: /new\nContent-Type: text/html\n\n<a>"])
    assert (head.status, head.reason) == (301, "Moved")


def test_framing_headers_dropped() -> None:
    out = b"Content-Type: a/b\nContent-Length: 99\nTransfer-Encoding: chunked\nConnection: x\n\nok"
    head, body = run([out])
    assert head.headers == (("Content-Type", "a/b"),)
    assert body == b"ok"


def test_body_streams_as_fed() -> None:
    parser = CgiResponseParser()
    assert parser.feed(b"Content-Type: text/plain\n") == []
    events = parser.feed(b"\nfirst")
    assert isinstance(events[0], CgiHead) and events[1:] == [b"first"]
    assert parser.feed(b"second") == [b"second"]
    assert parser.feed(b"") == []
    parser.close()
    assert (parser.head_sent, parser.body_bytes_sent) == (True, 11)


def failure(chunks: Iterable[bytes], **kw: int) -> CgiError:
    parser = CgiResponseParser(**kw)
    with pytest.raises(CgiError) as info:
        for chunk in chunks:
            parser.feed(chunk)
        parser.close()
    # The parser stays failed.
    with pytest.raises(CgiError):
        parser.feed(b"more")
    return info.value


def test_document_needs_content_type_or_status() -> None:
    assert "Content-Type" in failure([b"X-A: 1\n\nbody"]).reason


def test_eof_before_blank_line() -> None:
    for chunks in ([b""], [b"Content-Type: text/plain\r\n"], [b"Content-Type: text/plain\r\n\r"]):
        assert "ended before" in failure(chunks).reason


@pytest.mark.parametrize(
    "line",
    [
        b"no colon here",
        b"Bad Name: v",
        b": empty name",
        b" folded: v",
        b"X-Nul: a\x00b",
        b"X-Cr: a\rb",
        b"X-Esc: \x1b[31m",
        b"X\x00: v",
        b"X-Del: \x7f",
    ],
)
def test_malformed_header_lines(line: bytes) -> None:
    data = b"Content-Type: text/plain\r\n" + line + b"\r\n\r\nbody"
    err = failure(split_every(data, 1))
    assert "malformed" in err.reason and not err.head_sent


@pytest.mark.parametrize("status", [b"999", b"abc", b"99", b"2000 OK", b"100 Continue", b""])
def test_invalid_status(status: bytes) -> None:
    err = failure([b"Status: " + status + b"\nContent-Type: text/plain\n\n"])
    assert "invalid Status" in err.reason


def test_duplicate_status_rejected() -> None:
    assert "twice" in failure([b"Status: 200\nStatus: 404\n\n"]).reason


def test_header_block_over_cap() -> None:
    line = b"X-Pad: " + b"a" * 100 + b"\n"
    err = failure([b"Content-Type: a/b\n" + line * 20 + b"\n"], max_header_bytes=1024)
    assert "over 1024" in err.reason
    # Exactly at the cap is fine.
    block = b"Content-Type: a/b\n" + b"X: " + b"a" * (1024 - 18 - 3 - 2) + b"\n\n"
    assert len(block) == 1024
    head, body = run([block, b"ok"], max_header_bytes=1024)
    assert head.status == 200 and body == b"ok"


def test_ten_megabytes_without_newline_fails_fast() -> None:
    start = time.monotonic()
    err = failure([b"X" * (10 * 1024 * 1024)])
    assert "over 65536" in err.reason
    parser = CgiResponseParser()
    with pytest.raises(CgiError):
        for chunk in split_every(b"X" * (10 * 1024 * 1024), 4096):
            parser.feed(chunk)
    assert len(parser._buf) == 0
    assert time.monotonic() - start < 2


def test_one_byte_at_a_time_header_over_cap() -> None:
    parser = CgiResponseParser(max_header_bytes=256)
    with pytest.raises(CgiError, match="over 256"):
        for _ in range(10_000):
            parser.feed(b"Y")


def test_body_over_cap_after_streaming() -> None:
    parser = CgiResponseParser(max_body_bytes=10)
    events = parser.feed(b"Content-Type: text/plain\n\n123456")
    assert events[1:] == [b"123456"]
    assert parser.feed(b"7890") == [b"7890"]
    with pytest.raises(CgiError) as info:
        parser.feed(b"!")
    err = info.value
    assert "response too large" in err.reason
    assert (err.head_sent, err.body_bytes_sent) == (True, 10)
    with pytest.raises(CgiError):
        parser.close()


def test_body_over_cap_in_first_chunk_sends_nothing() -> None:
    err = failure([b"Content-Type: text/plain\n\n" + b"x" * 11], max_body_bytes=10)
    assert "response too large" in err.reason
    assert (err.head_sent, err.body_bytes_sent) == (False, 0)


def test_body_exactly_at_cap() -> None:
    _, body = run(split_every(b"Content-Type: a/b\n\n" + b"x" * 10, 1), max_body_bytes=10)
    assert body == b"x" * 10
