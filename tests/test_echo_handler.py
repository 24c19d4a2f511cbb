"""examples/pods/echo.c, the example HTTP handler (issue 12): a CGI script (RFC 3875).

Run with the native runtime (no agent): the request's meta-variables in env, the body on stdin,
the response (headers, a blank line, the body) on stdout, read back from the instance's log.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pkube.runtime import interface as rt
from p2pkube.runtime.native import NativeRuntime

REPO = Path(__file__).resolve().parent.parent
ECHO = REPO / "examples" / "build" / "echo.wasm"
REQUESTS = itertools.count()


@pytest.fixture(scope="module")
def echo_module() -> tuple[str, Path]:
    """(digest, path) of echo.wasm, built (incrementally) first."""
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    return "sha256:" + hashlib.sha256(ECHO.read_bytes()).hexdigest(), ECHO


async def handle(
    runtime: NativeRuntime,
    module: tuple[str, Path],
    tmp_path: Path,
    env: list[tuple[str, str]],
    stdin: bytes | None = None,
) -> tuple[rt.Termination, list[tuple[str, str]]]:
    """Run one request; its termination and its (stream, line) output."""
    digest, path = module
    spec = rt.Launch(
        pod="default/echo",
        container="main",
        image=digest,
        module_path=path,
        argv=["echo"],
        env=env,
        limits=rt.Limits(memory_bytes=64 << 20, deadline=time.monotonic() + 20),
        log_path=tmp_path / "logs" / f"request-{next(REQUESTS)}" / "0.log",  # one log each
        stdin=stdin,
    )
    await runtime.prepare(spec.image, spec.module_path)
    async with asyncio.timeout(20):
        termination = await runtime.start(spec).done
    lines = await runtime.read_log(spec.log_path)
    return termination, [(line.stream, line.text) for line in lines]


def stdout(*lines: str) -> list[tuple[str, str]]:
    return [("stdout", line) for line in lines]


async def test_get_with_a_query_and_a_header(
    runtime: NativeRuntime, echo_module: tuple[str, Path], tmp_path: Path
) -> None:
    env = [
        ("REQUEST_METHOD", "GET"),
        ("PATH_INFO", "/hello/world"),
        ("QUERY_STRING", "a=1&b=two"),
        ("CONTENT_LENGTH", "0"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("HTTP_X_ECHO", "ping pong"),
        ("POD_NAME", "web-7d9f-abcde"),
        ("POD_NAMESPACE", "default"),
        ("NODE_NAME", "n2"),
    ]
    termination, output = await handle(runtime, echo_module, tmp_path, env)
    assert (termination.exit_code, termination.reason) == (0, rt.COMPLETED)
    assert output == stdout(
        "Status: 200 OK",
        "Content-Type: text/plain",
        "",
        "method: GET",
        "path: /hello/world",
        "query: a=1&b=two",
        "x-echo: ping pong",
        "body: 0 bytes",
        "pod: web-7d9f-abcde",
        "node: n2",
    )


async def test_post_counts_a_100_kb_body(
    runtime: NativeRuntime, echo_module: tuple[str, Path], tmp_path: Path
) -> None:
    body = bytes(range(256)) * 400  # 102,400 bytes, every byte value (NUL and LF included)
    env = [
        ("REQUEST_METHOD", "POST"),
        ("PATH_INFO", "/upload"),
        ("QUERY_STRING", ""),
        ("CONTENT_TYPE", "application/octet-stream"),
        ("CONTENT_LENGTH", str(len(body))),
        ("POD_NAME", "web-1"),
        ("NODE_NAME", "n1"),
    ]
    termination, output = await handle(runtime, echo_module, tmp_path, env, body)
    assert (termination.exit_code, termination.reason) == (0, rt.COMPLETED)
    assert output[3:] == stdout(
        "method: POST",
        "path: /upload",
        "query: -",
        "x-echo: -",
        "body: 102400 bytes",
        "pod: web-1",
        "node: n1",
    )

    # Only CONTENT_LENGTH bytes are the body; without it, stdin is read to its end.
    _, output = await handle(runtime, echo_module, tmp_path, [("CONTENT_LENGTH", "1000")], body)
    assert ("stdout", "body: 1000 bytes") in output
    _, output = await handle(runtime, echo_module, tmp_path, [], body)
    assert ("stdout", "body: 102400 bytes") in output


async def test_no_env_and_bad_input_print_dashes_and_exit_0(
    runtime: NativeRuntime, echo_module: tuple[str, Path], tmp_path: Path
) -> None:
    termination, output = await handle(runtime, echo_module, tmp_path, [])
    assert (termination.exit_code, termination.reason) == (0, rt.COMPLETED)
    assert output == stdout(
        "Status: 200 OK",
        "Content-Type: text/plain",
        "",
        "method: -",
        "path: -",
        "query: -",
        "x-echo: -",
        "body: 0 bytes",
        "pod: -",
        "node: -",
    )

    # A CONTENT_LENGTH that is not a number is ignored (stdin read to its end); one larger
    # than what arrives reads what there is.
    for length in ("abc", "-5", "99999999999999999999999", "500"):
        termination, output = await handle(
            runtime, echo_module, tmp_path, [("CONTENT_LENGTH", length)], b"x" * 300
        )
        assert termination.exit_code == 0, length
        assert ("stdout", "body: 300 bytes") in output, length
