"""The browser node's JavaScript side in a real headless Chromium, without the Python node.

Against the real signaling server serving the real bundle (tests/browser.py): the files and
their headers, Pyodide with the wheels and the agent's sources, and each part of the bridge
(p2pkube/browser/web/bridge.js): Ed25519 against Python's ``cryptography``, IndexedDB across a
reload, the Worker runtime with the example pods (examples/build/*.wasm), and WebRTC with a
real aiortc peer in this process, negotiated like p2pkube/net/link.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import sys
import time
from typing import Any

import psutil
import pytest
from aiohttp import ClientSession
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2pkube.devcluster import free_port
from signaling.server import SignalingServer
from signaling.static import StaticFiles
from tests.browser import *  # noqa: F403  (the fixtures: bundle, web_server, browser, page)
from tests.browser import RUNTIME_HELPERS, open_node_page, wasm_b64

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def python_key_and_signature(message: bytes) -> tuple[bytes, bytes, bytes]:
    """A fresh Ed25519 key made by ``cryptography``: its raw public key, its PKCS#8 DER and
    its signature of ``message`` (what the page's Ed25519 must read and verify alike)."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return public, pkcs8, key.sign(message)


async def raw_get(port: int, target: str) -> tuple[int, dict[str, str], bytes]:
    """An HTTP/1.1 GET with the request target sent verbatim (no client-side normalization)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode("latin-1")
    )
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body


# -- (a) serving, loading ----------------------------------------------------------------------


async def test_bundle_served_with_types_caching_isolation(web_server: SignalingServer) -> None:
    manifest_files: dict[str, Any]
    base = web_server.http_url
    async with ClientSession() as http:
        async with http.get(base + "manifest.json") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/json"
            manifest = await r.json()
        manifest_files = manifest["files"]
        wheel = manifest["wheels"][0]
        pyodide = manifest["pyodide"]["indexURL"]
        expected = {
            "": ("text/html; charset=utf-8", "no-cache"),
            "index.html": ("text/html; charset=utf-8", "no-cache"),
            "app.js": ("text/javascript; charset=utf-8", "no-cache"),
            "bridge.js": ("text/javascript; charset=utf-8", "no-cache"),
            "worker.js": ("text/javascript; charset=utf-8", "no-cache"),
            "yjs.mjs": ("text/javascript; charset=utf-8", "no-cache"),
            "ed25519.mjs": ("text/javascript; charset=utf-8", "no-cache"),
            "app.css": ("text/css; charset=utf-8", "no-cache"),
            wheel: ("application/octet-stream", "no-cache"),
            manifest["python"]["zip"]: ("application/octet-stream", "no-cache"),
            pyodide + "pyodide.asm.wasm": ("application/wasm", "immutable"),
            pyodide + "pyodide.mjs": ("text/javascript; charset=utf-8", "immutable"),
            pyodide + "python_stdlib.zip": ("application/octet-stream", "immutable"),
        }
        for path, (content_type, cache) in expected.items():
            async with http.get(base + path) as r:
                body = await r.read()
                assert r.status == 200, path
                assert r.headers["Content-Type"] == content_type, path
                assert cache in r.headers["Cache-Control"], path
                assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin", path
                assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp", path
                assert "ETag" in r.headers, path
                if path and "Content-Encoding" not in r.headers:
                    assert hashlib.sha256(body).hexdigest() == manifest_files[path]["sha256"]
        # Pre-compressed: the same bytes, gzip on the wire, still application/wasm.
        async with http.get(
            base + pyodide + "pyodide.asm.wasm", headers={"Accept-Encoding": "gzip"}
        ) as r:
            assert r.headers.get("Content-Encoding") == "gzip"
            assert r.headers["Content-Type"] == "application/wasm"
            body = await r.read()  # aiohttp decodes it
            digest = manifest_files[pyodide + "pyodide.asm.wasm"]["sha256"]
            assert hashlib.sha256(body).hexdigest() == digest
        # Revalidation: 304 for an unchanged file.
        async with http.get(base + "app.js") as r:
            etag = r.headers["ETag"]
        async with http.get(base + "app.js", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        async with http.head(base + "index.html") as r:
            assert r.status == 200
        # The signaling routes still answer, and a missing file is 404.
        async with http.get(base + "healthz") as r:
            assert r.status == 200 and await r.text() == "ok"
        async with http.get(base + "no-such-file.js") as r:
            assert r.status == 404
        async with http.post(base + "index.html") as r:
            assert r.status in (404, 405)


async def test_path_traversal_refused(web_server: SignalingServer, tmp_path: Any) -> None:
    port = web_server.port
    for target in [
        "/../pyproject.toml",
        "/../../p2pkube/browser/build.py",
        "/%2e%2e/build.py",
        "/%2e%2e%2fbuild.py",
        "/..%2f..%2fsignaling%2fserver.py",
        "/pyodide/..%2f..%2fbuild.py",
        "/pyodide/%2e%2e/%2e%2e/build.py",
        "/..\\build.py",
        "/%5c..%5cbuild.py",
        "/.cache/x",
        "/pyodide/",
        "/pyodide",
        "//etc/passwd",
        "/%00index.html",
        "/index.html%00.js",
    ]:
        status, _headers, body = await raw_get(port, target)
        assert status in (400, 404), (target, status, body[:80])
        assert b"def " not in body and b"root:" not in body, target
    status, _headers, _body = await raw_get(port, "/index.html")
    assert status == 200
    # A symlink inside the root that points outside it is not followed out.
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.txt").write_text("fine")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    files = StaticFiles(root)
    assert files.resolve("ok.txt") == (root / "ok.txt").resolve()
    assert files.resolve("link.txt") is None
    assert files.resolve("../secret.txt") is None
    assert files.resolve("sub/../../secret.txt") is None


async def _signal_command(*args: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    """`p2pkube signal --port 0 ARGS`, up to its "signaling server:" line (and the next)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pkube", "signal", "--port", "0", "--log-level", "warning", *args,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    while not any(line.startswith("signaling server:") for line in lines):
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert line, f"p2pkube signal ended: {lines}"
        lines.append(line.decode().strip())
    with contextlib.suppress(TimeoutError):
        lines.append((await asyncio.wait_for(proc.stdout.readline(), 0.5)).decode().strip())
    return proc, lines


async def test_signal_command_serves_the_page(bundle: Any) -> None:
    proc, lines = await _signal_command("--token", "cli-token-for-the-page")
    try:
        page_lines = [line for line in lines if line.startswith("browser node page: ")]
        assert page_lines, lines
        url = page_lines[0].removeprefix("browser node page: ")
        assert url.endswith("/#token=TOKEN")  # a given token is not echoed
        async with ClientSession() as http, http.get(url.split("#")[0]) as r:
            assert r.status == 200
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert "p2pkube" in await r.text()
    finally:
        proc.terminate()
        await proc.wait()
    proc, lines = await _signal_command("--token", "cli-token-for-the-page", "--no-web")
    try:
        assert not any(line.startswith("browser node page") for line in lines)
        base = lines[-1].removeprefix("signaling server: ").replace("ws://", "http://")
        base = base.removesuffix("/ws")
        async with ClientSession() as http:
            async with http.get(base + "/") as r:
                assert r.status == 404
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
    finally:
        proc.terminate()
        await proc.wait()


async def test_page_loads_pyodide_wheels_and_agent_sources(
    page: Any, web_server: SignalingServer
) -> None:
    started = time.monotonic()
    timings = await open_node_page(page, web_server)
    seconds = time.monotonic() - started
    # No token in the URL: the page asks for one and starts no node.
    assert await page.is_visible("#token-form")
    assert await page.evaluate("crossOriginIsolated") is True
    result = await page.evaluate(
        """async () => {
            const py = window.p2pkube.pyodide;
            const t = performance.now();
            py.runPython("import p2pkube.net.frames, p2pkube.net.signaling_wire, msgpack");
            const importMs = performance.now() - t;
            const out = py.runPython(`
import json, sys
import msgpack, p2pkube.net.jointoken as jt, p2pkube.net.signaling_wire
from p2pkube.net.frames import FrameType, decode_frame, encode_frame
import yjs, p2pjs
frame = decode_frame(encode_frame(FrameType.PING, {}))
doc = yjs.Doc.new()
doc.getMap("objects").set("k", "v")
json.dumps({
    "msgpack": list(msgpack.version),
    "frame": frame.type.name,
    "cluster": jt.cluster_id("t"),
    "server_loaded": "signaling" in sys.modules,
    "yjs": doc.getMap("objects").get("k"),
    "bridge": callable(p2pjs.newPeer),
    "python": sys.version.split()[0],
})`);
            return { importMs, out: JSON.parse(out) };
        }"""
    )
    out = result["out"]
    assert out["frame"] == "PING"
    assert out["msgpack"][:2] == [1, 2] or out["msgpack"][0] >= 1
    assert out["server_loaded"] is False
    assert out["yjs"] == "v"
    assert out["bridge"] is True
    assert out["python"].startswith("3.14")
    from p2pkube.net.jointoken import cluster_id

    assert out["cluster"] == cluster_id("t")
    print(
        f"\npage load to Python ready: {seconds:.2f} s (page timings {timings}); "
        f"import p2pkube.net.frames, p2pkube.net.signaling_wire, msgpack: "
        f"{result['importMs']:.0f} ms"
    )
    assert seconds < 30
    # Pyodide came from the bundle's memory snapshot (build.py, web/snapshot.mjs), with the
    # standard library the agent imports already in it.
    assert timings.get("snapshot") is True, timings
    assert await page.evaluate(
        "window.p2pkube.pyodide.runPython(\"import sys; 'asyncio.base_events' in sys.modules\")"
    )


async def test_page_without_its_snapshot_starts_pyodide_from_scratch(
    page: Any, web_server: SignalingServer
) -> None:
    """The snapshot is only a shortcut: when it cannot be fetched the page says so in the
    console and starts Pyodide the long way, and Python works the same."""
    await page.route("**/snapshot.bin*", lambda route: route.fulfill(status=404, body="gone"))
    timings = await open_node_page(page, web_server)
    assert "snapshot" not in timings, timings
    assert any("snapshot did not load" in m and "404" in m for m in page.console), page.console
    assert await page.evaluate("window.p2pkube.pyodide.runPython('1 + 1')") == 2


async def test_page_with_a_wrong_token_says_the_server_refused_it(
    page: Any, web_server: SignalingServer
) -> None:
    """Bad input gets a clear error: the node does not start and the page says why."""
    await open_node_page(page, web_server, token="not-this-clusters-token")
    assert not await page.is_visible("#token-form")
    error = await asyncio.wait_for(
        page.evaluate("window.p2pkubeReady.then(() => null, (e) => String(e))"), 60
    )
    assert error is not None and "bad-token" in error, error
    # The page writes its message after the promise settles: wait for it rather than read
    # it at once (under load the test read the status line that came before it).
    with contextlib.suppress(Exception):
        await page.wait_for_function(
            "document.querySelector('#message').innerText.includes('could not start')",
            timeout=10_000,
        )
    message = await page.inner_text("#message")
    assert "could not start" in message and "bad-token" in message, message


async def test_page_with_a_short_token_says_how_to_make_one(
    page: Any, web_server: SignalingServer
) -> None:
    """The tab refuses a token too short to be safe, before it connects, and says why."""
    await open_node_page(page, web_server, token="short-token")
    error = await asyncio.wait_for(
        page.evaluate("window.p2pkubeReady.then(() => null, (e) => String(e))"), 60
    )
    assert error is not None and "at least 22 characters" in error, error
    message = await page.inner_text("#message")
    assert "could not start" in message and "p2pkube token" in message, message
    assert not web_server.state.sessions  # it never even connected


# -- signaling WebSocket --------------------------------------------------------------------------


async def test_websocket_to_the_signaling_server(page: Any, web_server: SignalingServer) -> None:
    """openSocket from Python in Pyodide, with plain Python callables as callbacks; the page
    answers the server's challenge with its WebCrypto key, as the tab's node does."""
    from tests.browser import TOKEN

    await open_node_page(page, web_server)
    page_code = """
import asyncio, json
import p2pjs
from p2pkube.browser.identity import BrowserIdentity
from p2pkube.net.signaling_client import answer_challenge
from p2pkube.net.jointoken import b64decode, cluster_id, signaling_key
from p2pkube.net.signaling_wire import encode, join_message

keys = await p2pjs.ed25519Generate()
me = BrowserIdentity(bytes(keys.pub.to_bytes()), bytes(keys.pkcs8.to_bytes()))

async def received(got, closed, count):
    for _ in range(100):
        if len(got) >= count or closed.done():
            break
        await asyncio.sleep(0.05)

async def session(token):
    got, closed = [], asyncio.get_running_loop().create_future()
    def on_close(code, reason):
        if not closed.done():
            closed.set_result([code, str(reason)])
    sock = await p2pjs.openSocket(WS, lambda text: got.append(json.loads(str(text))), on_close)
    state = sock.readyState
    await received(got, closed, 1)  # the challenge
    nonce = b64decode(got[0]["nonce"])
    join = await answer_challenge(
        nonce, signaling_key(token), cluster_id(token), me, "tab-test", "browser"
    )
    sent = sock.send(encode(join_message(join)))
    await received(got, closed, 2)
    if not closed.done():
        sock.close(1000, "bye")
    result = await asyncio.wait_for(closed, 5)
    return {"state": state, "sent": sent, "got": got, "closed": result,
            "after": sock.send("late"), "peer": me.node_id}

good = await session(TOKEN)
bad = await session("not-the-token-but-long-enough")
try:
    await p2pjs.openSocket(REFUSED, lambda t: None, lambda c, r: None, 3000)
    refused = None
except Exception as exc:
    refused = str(exc)
json.dumps({"good": good, "bad": bad, "refused": refused})
"""
    out = json.loads(
        await page.evaluate(
            """async ([code, ws, token, refused]) => {
                const py = window.p2pkube.pyodide;
                py.globals.set("WS", ws);
                py.globals.set("TOKEN", token);
                py.globals.set("REFUSED", refused);
                return py.runPythonAsync(code);
            }""",
            [page_code, web_server.url, TOKEN, f"ws://127.0.0.1:{free_port()}/ws"],
        )
    )
    good, bad = out["good"], out["bad"]
    assert good["state"] == 1 and good["sent"] is True
    assert good["got"][0]["type"] == "challenge"
    assert good["got"][1]["type"] == "welcome" and good["got"][1]["peer"] == good["peer"]
    assert good["closed"][0] == 1000  # (aiohttp answers a close without its reason)
    assert good["after"] is False
    assert bad["got"][1]["type"] == "error" and bad["got"][1]["code"] == "bad-token"
    assert bad["closed"][0] == 4001
    assert "failed" in out["refused"] or "not open" in out["refused"]


# -- (b) Ed25519 ---------------------------------------------------------------------------------


async def test_ed25519_interop_with_cryptography(page: Any, web_server: SignalingServer) -> None:
    await open_node_page(page, web_server)
    message = b"p2pkube-auth-v1 transcript \x00\xff"
    made = await page.evaluate(
        """async (m) => {
            const b = window.p2pkube.bridge;
            const enc = (u8) => btoa(String.fromCharCode(...u8));
            const msg = Uint8Array.from(atob(m), (c) => c.charCodeAt(0));
            const key = await b.ed25519Generate();
            const sig = await b.ed25519Sign(key.pkcs8, msg);
            return { pub: enc(key.pub), pkcs8: enc(key.pkcs8), sig: enc(sig),
                     self: await b.ed25519Verify(key.pub, sig, msg) };
        }""",
        b64(message),
    )
    pub, pkcs8, sig = unb64(made["pub"]), unb64(made["pkcs8"]), unb64(made["sig"])
    assert len(pub) == 32 and len(sig) == 64 and made["self"] is True
    Ed25519PublicKey.from_public_bytes(pub).verify(sig, message)  # raises if bad
    loaded = serialization.load_der_private_key(pkcs8, password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    raw = loaded.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert raw == pub

    # Python signs; the browser verifies (and refuses a changed message or signature), and
    # signs with a key Python made (PKCS#8 DER both ways).
    py_pub, py_pkcs8, py_sig = python_key_and_signature(message)
    bad_sig = bytes([py_sig[0] ^ 1]) + py_sig[1:]
    checks = await page.evaluate(
        """async ([pub, sig, bad, msg, pkcs8]) => {
            const b = window.p2pkube.bridge;
            const dec = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
            const m = dec(msg);
            const other = new Uint8Array([...m, 1]);
            const sig2 = await b.ed25519Sign(dec(pkcs8), m);
            return {
                good: await b.ed25519Verify(dec(pub), dec(sig), m),
                badSig: await b.ed25519Verify(dec(pub), dec(bad), m),
                otherMsg: await b.ed25519Verify(dec(pub), dec(sig), other),
                shortKey: await b.ed25519Verify(new Uint8Array(5), dec(sig), m),
                sig2: btoa(String.fromCharCode(...sig2)),
            };
        }""",
        [b64(py_pub), b64(py_sig), b64(bad_sig), b64(message), b64(py_pkcs8)],
    )
    assert checks["good"] is True
    assert checks["badSig"] is False
    assert checks["otherMsg"] is False
    assert checks["shortKey"] is False
    Ed25519PublicKey.from_public_bytes(py_pub).verify(unb64(checks["sig2"]), message)

    # The same calls from Python in Pyodide, bytes passed straight from Python.
    from_python = await page.evaluate(
        """async () => window.p2pkube.pyodide.runPythonAsync(`
import p2pjs
key = await p2pjs.ed25519Generate()
pub, pkcs8 = key.pub.to_bytes(), key.pkcs8.to_bytes()
sig = (await p2pjs.ed25519Sign(pkcs8, b"from python")).to_bytes()
ok = await p2pjs.ed25519Verify(pub, sig, b"from python")
bad = await p2pjs.ed25519Verify(pub, sig, b"from pythoN")
import json
json.dumps([ok, bad, pub.hex(), sig.hex()])
`)"""
    )
    ok, bad, pub_hex, sig_hex = json.loads(from_python)
    assert ok is True and bad is False
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(pub_hex)).verify(
        bytes.fromhex(sig_hex), b"from python"
    )


async def test_ed25519_fallback_same_keys_and_signatures_as_webcrypto_and_cryptography(
    page: Any, web_server: SignalingServer
) -> None:
    """The @noble/ed25519 fallback (what a page that is not a secure context uses), forced
    on this secure page: the same key formats and byte-for-byte the same signatures as
    WebCrypto and ``cryptography``, loaded only once asked for."""
    await open_node_page(page, web_server)
    message = b"p2pkube-auth-v1 transcript \x00\xff" * 3
    py_pub, py_pkcs8, py_sig = python_key_and_signature(message)
    out = await page.evaluate(
        """async ([msg64, pub64, pkcs864, sig64]) => {
            const b = window.p2pkube.bridge;
            const enc = (u8) => btoa(String.fromCharCode(...u8));
            const dec = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
            const [msg, pyPub, pyPkcs8, pySig] = [msg64, pub64, pkcs864, sig64].map(dec);
            const loaded = () => performance.getEntriesByType("resource")
                .some((e) => e.name.includes("ed25519.mjs"));
            const before = b.cryptoInfo();
            const time = async (n, f) => {
                const t = performance.now();
                for (let i = 0; i < n; i++) await f();
                return (performance.now() - t) / n;
            };
            // Auto on a secure page: WebCrypto, and the fallback is never fetched.
            const wc = await b.ed25519Generate();
            const wcSig = await b.ed25519Sign(wc.pkcs8, msg);
            const wcOnPy = await b.ed25519Sign(pyPkcs8, msg);
            const webcrypto = { info: b.cryptoInfo(), loaded: loaded(),
                signMs: await time(200, () => b.ed25519Sign(wc.pkcs8, msg)),
                verifyMs: await time(200, () => b.ed25519Verify(wc.pub, wcSig, msg)) };

            b.configure({ ed25519: "noble" });
            const reset = b.cryptoInfo();
            const nb = await b.ed25519Generate();
            const nbSig = await b.ed25519Sign(nb.pkcs8, msg);
            const noble = {
                info: b.cryptoInfo(), loaded: loaded(),
                pub: enc(nb.pub), pkcs8: enc(nb.pkcs8), sig: enc(nbSig),
                self: await b.ed25519Verify(nb.pub, nbSig, msg),
                // the WebCrypto key and Python's key, signed here: the very same signatures
                onWc: enc(await b.ed25519Sign(wc.pkcs8, msg)), wcSig: enc(wcSig),
                onPy: enc(await b.ed25519Sign(pyPkcs8, msg)), wcOnPy: enc(wcOnPy),
                verifiesWc: await b.ed25519Verify(wc.pub, wcSig, msg),
                verifiesPy: await b.ed25519Verify(pyPub, pySig, msg),
                badSig: await b.ed25519Verify(
                    pyPub, Uint8Array.from(pySig, (x, i) => (i ? x : x ^ 1)), msg),
                otherMsg: await b.ed25519Verify(pyPub, pySig, new Uint8Array([...msg, 1])),
                shortKey: await b.ed25519Verify(new Uint8Array(5), pySig, msg),
                // a small-order key (the identity point): refused (stricter than WebCrypto)
                smallOrder: await b.ed25519Verify(Uint8Array.of(1, ...new Uint8Array(31)),
                    new Uint8Array(64), msg),
                badPkcs8: await b.ed25519Sign(nb.pkcs8.slice(1), msg)
                    .then(() => "signed", (e) => String(e.message)),
                signMs: await time(200, () => b.ed25519Sign(nb.pkcs8, msg)),
                verifyMs: await time(200, () => b.ed25519Verify(nb.pub, nbSig, msg)),
            };
            // Back to WebCrypto: it takes the fallback's key and makes the same signature.
            b.configure({ ed25519: "webcrypto" });
            const back = { sig: enc(await b.ed25519Sign(nb.pkcs8, msg)), info: b.cryptoInfo(),
                           verifies: await b.ed25519Verify(nb.pub, nbSig, msg) };
            return { before, webcrypto, reset, noble, back };
        }""",
        [b64(message), b64(py_pub), b64(py_pkcs8), b64(py_sig)],
    )
    print(
        f"Ed25519 per call: WebCrypto sign {out['webcrypto']['signMs']:.3f} ms, verify "
        f"{out['webcrypto']['verifyMs']:.3f} ms; noble sign {out['noble']['signMs']:.3f} ms, "
        f"verify {out['noble']['verifyMs']:.3f} ms; ed25519.mjs loaded in "
        f"{out['noble']['info']['loadMs']} ms"
    )
    assert out["before"]["ed25519"] is None and out["before"]["requested"] == "auto"
    assert out["before"]["secureContext"] is True and out["before"]["subtle"] is True
    assert out["webcrypto"]["info"]["ed25519"] == "webcrypto"
    assert out["webcrypto"]["loaded"] is False  # a secure page never fetches the fallback
    assert out["reset"]["ed25519"] is None and out["reset"]["requested"] == "noble"

    noble = out["noble"]
    assert (
        noble["info"]["ed25519"] == "noble" and noble["info"]["reason"] == "forced by configure()"
    )
    assert noble["loaded"] is True and noble["info"]["loadMs"] is not None
    pub, pkcs8, sig = unb64(noble["pub"]), unb64(noble["pkcs8"]), unb64(noble["sig"])
    assert len(pub) == 32 and len(pkcs8) == 48 and len(sig) == 64 and noble["self"] is True
    Ed25519PublicKey.from_public_bytes(pub).verify(sig, message)  # raises if bad
    loaded = serialization.load_der_private_key(pkcs8, password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    assert (
        loaded.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        == pub
    )
    assert loaded.sign(message) == sig  # deterministic: cryptography signs the same bytes
    assert noble["onWc"] == noble["wcSig"]
    assert unb64(noble["onPy"]) == py_sig and unb64(noble["wcOnPy"]) == py_sig
    assert noble["verifiesWc"] is True and noble["verifiesPy"] is True
    assert noble["badSig"] is False and noble["otherMsg"] is False and noble["shortKey"] is False
    assert noble["smallOrder"] is False
    assert "not an Ed25519 PKCS#8 key" in noble["badPkcs8"]
    assert out["back"]["info"]["ed25519"] == "webcrypto" and out["back"]["verifies"] is True
    assert unb64(out["back"]["sig"]) == sig
    assert noble["signMs"] < 50 and noble["verifyMs"] < 50, noble

    # From Python in Pyodide through the fallback, as BrowserIdentity calls it.
    from_python = await page.evaluate(
        """async () => {
            window.p2pkube.bridge.configure({ ed25519: "noble" });
            return window.p2pkube.pyodide.runPythonAsync(`
import p2pjs, json
key = await p2pjs.ed25519Generate()
pub, pkcs8 = key.pub.to_bytes(), key.pkcs8.to_bytes()
sig = (await p2pjs.ed25519Sign(pkcs8, b"from python")).to_bytes()
ok = await p2pjs.ed25519Verify(pub, sig, b"from python")
bad = await p2pjs.ed25519Verify(pub, sig, b"from pythoN")
json.dumps([ok, bad, pub.hex(), sig.hex(), p2pjs.cryptoInfo().to_py()["ed25519"]])
`);
        }"""
    )
    ok, bad, pub_hex, sig_hex, used = json.loads(from_python)
    assert ok is True and bad is False and used == "noble"
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(pub_hex)).verify(
        bytes.fromhex(sig_hex), b"from python"
    )


# -- (c) IndexedDB -------------------------------------------------------------------------------


async def test_indexeddb_survives_reload_and_upgrades(
    page: Any, web_server: SignalingServer
) -> None:
    await open_node_page(page, web_server)
    # An old database with only one store: the bridge adds the others with a version bump.
    await page.evaluate(
        """() => new Promise((resolve, reject) => {
            const del = indexedDB.deleteDatabase("p2pkube");
            del.onblocked = () => reject(new Error("delete blocked"));
            del.onerror = () => reject(del.error);
            del.onsuccess = () => {
                const open = indexedDB.open("p2pkube", 1);
                open.onupgradeneeded = () => open.result.createObjectStore("identity");
                open.onsuccess = () => { open.result.close(); resolve(); };
                open.onerror = () => reject(open.error);
            };
        })"""
    )
    blob = bytes(range(256)) * 40
    await page.evaluate(
        """async ([blob]) => {
            const b = window.p2pkube.bridge;
            const dec = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
            await b.kvPut("identity", "key", new Uint8Array([1, 2, 3]));
            await b.kvPut("state", "snapshot", dec(blob));
            await b.kvPutMany("logs", [
                ["a/0.log", new Uint8Array([97])], ["a/1.log", new Uint8Array([98])],
            ]);
            await b.kvPut("blobs", "gone", new Uint8Array([9]));
            await b.kvDelete("blobs", "gone");
        }""",
        [b64(blob)],
    )
    # Python in Pyodide writes too, passing bytes as they are.
    await page.evaluate(
        """() => window.p2pkube.pyodide.runPythonAsync(`
import p2pjs
await p2pjs.kvPut("blobs", "sha256:ab", b"\\\\x00\\\\x01python")
`)"""
    )
    await page.reload()
    await page.wait_for_function("window.p2pkube && window.p2pkube.bridge")
    got = await page.evaluate(
        """async () => {
            const b = window.p2pkube.bridge;
            const enc = (u8) => u8 === null ? null : btoa(String.fromCharCode(...u8));
            const version = await new Promise((resolve) => {
                const r = indexedDB.open("p2pkube");
                r.onsuccess = () => { const v = r.result.version; r.result.close(); resolve(v); };
            });
            let unknown = null;
            try { await b.kvGet("nope", "x"); } catch (e) { unknown = String(e.message); }
            return {
                identity: enc(await b.kvGet("identity", "key")),
                state: enc(await b.kvGet("state", "snapshot")),
                logs: await b.kvKeys("logs"),
                blobs: await b.kvKeys("blobs"),
                py: enc(await b.kvGet("blobs", "sha256:ab")),
                missing: await b.kvGet("state", "no-such-key"),
                version, unknown,
            };
        }"""
    )
    assert unb64(got["identity"]) == b"\x01\x02\x03"
    assert unb64(got["state"]) == blob
    assert got["logs"] == ["a/0.log", "a/1.log"]
    assert got["blobs"] == ["sha256:ab"]
    assert unb64(got["py"]) == b"\x00\x01python"
    assert got["missing"] is None
    assert got["version"] == 2
    assert "unknown store" in got["unknown"]
    await page.evaluate("window.p2pkube.bridge.kvClear('logs')")
    assert await page.evaluate("window.p2pkube.bridge.kvKeys('logs')") == []


# -- (d) the Worker runtime ----------------------------------------------------------------------


async def runtime_page(page: Any, server: SignalingServer, *names: str) -> None:
    await open_node_page(page, server)
    await page.evaluate(RUNTIME_HELPERS)
    for name in names:
        await page.evaluate("([n, b]) => window.t.compile(n, b)", [name, wasm_b64(name)])


async def run_to_end(page: Any, name: str, options: dict[str, Any]) -> dict[str, Any]:
    return await page.evaluate(
        """async ([name, options]) => {
            if (options.stdin != null) options.stdin = new TextEncoder().encode(options.stdin);
            const { instance, out } = window.t.start(name, options);
            await instance.done;
            return { ...out, stats: instance.stats() };
        }""",
        [name, options],
    )


async def test_worker_runtime_exit_codes_traps_and_output(
    page: Any, web_server: SignalingServer
) -> None:
    await runtime_page(page, web_server, "hello", "crash", "stackbomb", "files")
    hello = {
        "argv": ["hello", "a", "two words"],
        "env": [["K", "V"], ["X", "y=z"]],
        "stdin": "line one\nline two\n",
    }
    cold = await run_to_end(page, "hello", hello)
    assert cold["result"] == {"kind": "exit", "code": 0}
    assert cold["stdout"].splitlines() == [
        "hello from hello",
        "argv[1] = a",
        "argv[2] = two words",
        "K=V",
        "X=y=z",
        "stdin: line one",
        "stdin: line two",
    ]
    assert cold["stderr"] == ""
    warm = await run_to_end(page, "hello", {"argv": ["hi"], "env": {"A": "1"}, "stdin": None})
    assert warm["result"] == {"kind": "exit", "code": 0}
    assert warm["stdout"].splitlines() == ["hello from hi", "A=1"]

    crash = await run_to_end(page, "crash", {"argv": ["crash"]})
    assert crash["result"] == {"kind": "exit", "code": 3}
    assert crash["stdout"] == "about to fail\n"
    assert crash["stderr"] == "fatal: simulated failure\n"

    abort = await run_to_end(page, "crash", {"argv": ["crash", "abort"]})
    assert abort["result"]["kind"] == "trap"
    assert "unreachable" in abort["result"]["message"]
    assert abort["result"]["memoryBytes"] >= 65536
    assert abort["stderr"] == "fatal: simulated failure\n"

    # An emptyDir-like directory (options.dirs): writable, and nothing else of a host.
    files = await run_to_end(page, "files", {"argv": ["files", "/scratch"], "dirs": ["/scratch"]})
    assert files["result"] == {"kind": "exit", "code": 0}, files
    assert "write /scratch/output.txt: ok" in files["stdout"].splitlines()
    assert "open /etc/passwd: ok" not in files["stdout"]
    nodir = await run_to_end(page, "files", {"argv": ["files", "/data"]})
    assert nodir["result"] == {"kind": "exit", "code": 1}, nodir

    bomb = await run_to_end(page, "stackbomb", {"argv": ["stackbomb"]})
    assert bomb["result"]["kind"] == "stack-overflow", bomb["result"]
    assert "call stack" in bomb["result"]["message"]
    assert bomb["stdout"] == "diving\n"
    print(
        f"\nhello: {cold['ms']:.0f} ms cold (first start, _start after "
        f"{cold['stats']['startMs']:.0f} ms), {warm['ms']:.0f} ms warm "
        f"(_start after {warm['stats']['startMs']:.0f} ms); stackbomb {bomb['ms']:.0f} ms"
    )


def _module(*sections: bytes) -> bytes:
    return b"\0asm\x01\0\0\0" + b"".join(sections)


def _section(kind: int, payload: bytes) -> bytes:
    return bytes([kind, len(payload)]) + payload


def _name(text: str) -> bytes:
    return bytes([len(text)]) + text.encode()


async def test_worker_runtime_refuses_invalid_modules(
    page: Any, web_server: SignalingServer
) -> None:
    await runtime_page(page, web_server)
    # A global from outside WASI has no stand-in (a function from there would be a trap).
    imports_env = _module(
        _section(1, b"\x01\x60\x00\x00"),  # type 0: () -> ()
        _section(2, b"\x01" + _name("env") + _name("missing_global") + b"\x03\x7f\x00"),
        _section(3, b"\x01\x00"),  # one function of type 0
        _section(5, b"\x01\x00\x01"),  # one memory, 1 page
        _section(7, b"\x02" + _name("_start") + b"\x00\x00" + _name("memory") + b"\x02\x00"),
        _section(10, b"\x01\x02\x00\x0b"),
    )
    no_start = _module(
        _section(5, b"\x01\x00\x01"), _section(7, b"\x01" + _name("memory") + b"\x02\x00")
    )
    errors = await page.evaluate(
        """async (cases) => {
            const out = {};
            for (const [name, b64] of Object.entries(cases)) {
                try {
                    await window.p2pkube.bridge.compileModule(name, window.t.bytes(b64));
                    out[name] = null;
                } catch (e) { out[name] = String(e.message); }
            }
            let start = null;
            try { window.p2pkube.bridge.startInstance("never-compiled", {}, {}); }
            catch (e) { start = String(e.message); }
            out.start = start;
            return out;
        }""",
        {"env": b64(imports_env), "nostart": b64(no_start), "junk": b64(b"not wasm at all")},
    )
    assert "env.missing_global" in errors["env"]
    assert "_start" in errors["nostart"]
    assert "cannot compile junk" in errors["junk"]
    assert "not compiled" in errors["start"]


async def _page_lateness(page: Any, action_js: str, arg: Any) -> dict[str, Any]:
    """Run action_js (an async function of arg) while measuring setTimeout lateness."""
    return await page.evaluate(
        """async ([action, arg]) => {
            let late = 0, ticks = 0, running = true;
            const probe = () => {
                const t = performance.now();
                setTimeout(() => {
                    late = Math.max(late, performance.now() - t - 20);
                    ticks += 1;
                    if (running) probe();
                }, 20);
            };
            probe();
            const result = await (eval(action))(arg);
            running = false;
            return { ...result, maxTimerLateMs: late, timerTicks: ticks };
        }""",
        [action_js, arg],
    )


@pytest.mark.serial  # times a deadline
async def test_worker_runtime_loop_killed_at_deadline_page_responsive(
    page: Any, web_server: SignalingServer
) -> None:
    await runtime_page(page, web_server, "loop")
    out = await _page_lateness(
        page,
        """async () => {
            const { instance, out } = window.t.start("loop", { argv: ["loop"], deadlineMs: 1000 });
            const result = await instance.done;
            return { result, ms: out.ms, stdout: out.stdout };
        }""",
        None,
    )
    assert out["result"] == {"kind": "killed", "reason": "deadline"}
    assert out["stdout"] == "looping\n"
    assert 950 <= out["ms"] <= 1300, out
    assert out["timerTicks"] >= 20 and out["maxTimerLateMs"] < 150, out
    print(
        f"\nloop killed at its deadline after {out['ms']:.0f} ms; page timers "
        f"at most {out['maxTimerLateMs']:.0f} ms late meanwhile"
    )


def _browser_cpu_seconds() -> float:
    """CPU time used so far by every Chromium process (descendants of this test process)."""
    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chrom" in proc.name().lower():
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
    return total


@pytest.mark.serial  # times a sleeping module's wake-ups
async def test_worker_runtime_ticker_sleeps_without_spinning(
    page: Any, web_server: SignalingServer
) -> None:
    await runtime_page(page, web_server, "ticker")
    assert await page.evaluate("window.p2pkube.bridge.runtimeInfo().sleepMode") == "atomics"
    out = await page.evaluate(
        """async () => {
            const { instance, out } = window.t.start("ticker", { argv: ["ticker", "0.2", "5"] });
            await instance.done;
            return { ...out, stats: instance.stats() };
        }"""
    )
    assert out["result"] == {"kind": "exit", "code": 0}
    assert out["stdout"].splitlines() == [f"tick {n}" for n in range(1, 6)]
    arrivals = [t for stream, t, _ in out["times"] if stream == "stdout"]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(gaps) == 4 and all(150 <= g <= 400 for g in gaps), gaps
    assert out["stats"]["sleepMode"] == "atomics"
    assert out["stats"]["sleeps"] == 4

    # A long sleep uses no CPU, and a kill ends it at once.
    await page.evaluate(
        "() => { window.sleeper = window.t.start('ticker', { argv: ['ticker', '30'] }); }"
    )
    await page.wait_for_function("window.sleeper.out.stdout.includes('tick 1')")
    await asyncio.sleep(0.2)
    cpu0, wall0 = _browser_cpu_seconds(), time.monotonic()
    await asyncio.sleep(1.5)
    cpu = (_browser_cpu_seconds() - cpu0) / (time.monotonic() - wall0)
    # The kill wakes the sleeping worker, and Chromium lets a terminated worker run on for up to
    # 2 s (Blink's forcible-termination delay): look at the sleep count again after a while, so
    # a killed pod that went on running (its sleeps returning at once) is seen every time.
    killed = await page.evaluate(
        """async () => {
            const s = window.sleeper;
            const asleep = s.instance.stats().sleeps;
            const t = performance.now();
            s.instance.kill("pod deleted");
            const result = await s.instance.done;
            const ms = performance.now() - t;
            await new Promise((r) => setTimeout(r, 200));
            return { result, ms, asleep, stats: s.instance.stats() };
        }"""
    )
    assert killed["result"] == {"kind": "killed", "reason": "pod deleted"}
    assert killed["ms"] < 100
    assert killed["asleep"] == 1  # 1.7 s into a 30 s sleep: one poll_oneoff, not chunks
    assert killed["stats"]["sleeps"] == 1, "the killed pod went on calling poll_oneoff"
    print(
        f"\nticker 0.2 5: gaps {[round(g) for g in gaps]} ms; asleep in ticker 30 the browser "
        f"used {cpu:.2f} of a core; killed in {killed['ms']:.1f} ms"
    )
    assert cpu < 0.35, f"the browser used {cpu:.2f} of a core while the pod slept"


@pytest.mark.serial  # times the page's timers under a flood, as its two siblings do
async def test_worker_runtime_flood_streams_output_and_is_killed(
    page: Any, web_server: SignalingServer
) -> None:
    await runtime_page(page, web_server, "flood")
    out = await _page_lateness(
        page,
        """async () => {
            let lines = 0, bytes = 0, chunks = 0, first = null, bad = 0, tail = "";
            const dec = new TextDecoder();
            const t0 = performance.now();
            let firstMs = null;
            const instance = window.p2pkube.bridge.startInstance("flood", { argv: ["flood"] }, {
                onOutput(stream, data) {
                    chunks += 1; bytes += data.length;
                    if (firstMs === null) firstMs = performance.now() - t0;
                    const text = tail + dec.decode(data, { stream: true });
                    const parts = text.split("\\n");
                    tail = parts.pop();
                    for (const line of parts) {
                        lines += 1;
                        if (first === null) first = line.slice(0, 16);
                        const number = String(lines).padStart(10, "0");
                        if (line.length !== 99 || line.slice(6, 16) !== number) bad += 1;
                    }
                },
                onExit() {},
            });
            await new Promise((r) => setTimeout(r, 1500));
            const t = performance.now();
            instance.kill("OutputFlood");
            const result = await instance.done;
            const killMs = performance.now() - t;
            return { result, lines, bytes, chunks, first, bad, firstMs, killMs };
        }""",
        None,
    )
    assert out["result"] == {"kind": "killed", "reason": "OutputFlood"}
    assert out["first"] == "flood 0000000001"
    assert out["bad"] == 0, out  # every line arrived, in order, none torn (ring wrap-arounds)
    assert out["lines"] > 10_000, out
    assert out["chunks"] < out["lines"] / 10, out  # batched
    assert out["firstMs"] < 500
    assert out["maxTimerLateMs"] < 250, out
    print(
        f"\nflood: {out['bytes'] / 1.5e6:.1f} MB/s into the page ({out['lines']} lines in "
        f"{out['chunks']} chunks in 1.5 s); timers at most {out['maxTimerLateMs']:.0f} ms late"
    )


# -- (e) WebRTC with aiortc ----------------------------------------------------------------------

PEER_HELPERS = """
() => {
  const b = window.p2pkube.bridge;
  const state = { opened: false, closed: null, states: [], got: [], bytes: 0, low: 0 };
  window.rtc = { state };
  window.rtc.peer = b.newPeer("[]", {
    onOpen() { state.opened = true; },
    onClose(reason) { state.closed = reason; },
    onConnectionState(s) { state.states.push(s); },
    onBufferedLow() { state.low += 1; },
    onMessage(data) {
      if (typeof data === "string") { state.got.push("text:" + data); return; }
      if (state.bulk) {
        state.bytes += data.length;
        state.chunks.push(data);
        if (state.bytes >= state.bulk) window.rtc.peer.send(new Uint8Array([4]));  // all here
        return;
      }
      if (data[0] === 1) { window.rtc.peer.send(data); return; }  // ping: echo
      state.got.push(btoa(String.fromCharCode(...data)));
    },
  });
}
"""


async def _webrtc_exchange(page: Any, pc: Any, channel: Any, *, browser_offers: bool) -> str:
    from aiortc import RTCSessionDescription

    await page.evaluate(PEER_HELPERS)
    started = time.monotonic()
    if browser_offers:
        offer = await page.evaluate("window.rtc.peer.createOffer()")
        assert "a=ice-ufrag" in offer
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await page.evaluate("(sdp) => window.rtc.peer.acceptAnswer(sdp)", pc.localDescription.sdp)
    else:
        await pc.setLocalDescription(await pc.createOffer())
        answer = await page.evaluate(
            "(sdp) => window.rtc.peer.acceptOffer(sdp)", pc.localDescription.sdp
        )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await page.wait_for_function("window.rtc.state.opened", timeout=15000)
    for _ in range(100):
        if channel.readyState == "open":
            break
        await asyncio.sleep(0.05)
    assert channel.readyState == "open"
    connect = time.monotonic() - started
    assert await page.evaluate("window.rtc.peer.localSdp().length > 0")
    assert await page.evaluate("window.rtc.peer.remoteSdp().length > 0")
    return f"connected in {connect * 1000:.0f} ms"


async def _webrtc_traffic(page: Any, channel: Any) -> str:
    received: asyncio.Queue[bytes | str] = asyncio.Queue()
    channel.on("message", received.put_nowait)

    # Browser -> aiortc: a few messages, bytes intact.
    sent = [b"\x00hello", b"\x00" + bytes(range(256)), b"\x00" * 1000]
    for item in sent:
        ok = await page.evaluate(
            "(s) => window.rtc.peer.send(Uint8Array.from(atob(s), (c) => c.charCodeAt(0)))",
            b64(item),
        )
        assert ok is True
    for item in sent:
        assert await asyncio.wait_for(received.get(), 5) == item

    # aiortc -> browser.
    channel.send(b"\x00from aiortc")
    await page.wait_for_function("window.rtc.state.got.length >= 1")
    assert unb64((await page.evaluate("window.rtc.state.got"))[0]) == b"\x00from aiortc"

    # RTT: pings the browser echoes.
    rtts = []
    for n in range(20):
        ping = b"\x01" + n.to_bytes(4, "big")
        t = time.monotonic()
        channel.send(ping)
        assert await asyncio.wait_for(received.get(), 5) == ping
        rtts.append((time.monotonic() - t) * 1000)

    # 1 MB aiortc -> browser in 60 KiB messages.
    size, piece = 1024 * 1024, 60 * 1024
    payload = os.urandom(size)
    await page.evaluate(
        f"() => {{ window.rtc.state.bulk = {size}; window.rtc.state.chunks = []; }}"
    )
    t = time.monotonic()
    for offset in range(0, size, piece):
        channel.send(payload[offset : offset + piece])
    assert await asyncio.wait_for(received.get(), 30) == b"\x04"
    down = size / (time.monotonic() - t) / 1e6
    digest = await page.evaluate(
        """async () => {
            const chunks = window.rtc.state.chunks;
            const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
            let o = 0; for (const c of chunks) { all.set(c, o); o += c.length; }
            const h = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
            return Array.from(h, (x) => x.toString(16).padStart(2, "0")).join("");
        }"""
    )
    assert digest == hashlib.sha256(payload).hexdigest()

    # 1 MB browser -> aiortc, paced by bufferedAmount / onBufferedLow like the native link.
    t = time.monotonic()
    sender = asyncio.ensure_future(
        page.evaluate(
            """async ([size, piece]) => {
            const p = window.rtc.peer;
            const data = new Uint8Array(size);
            crypto.getRandomValues(data.subarray(0, 65536));
            for (let i = 65536; i < size; i++) data[i] = data[i % 65536];
            data[0] = 3;
            p.setBufferedLowThreshold(256 * 1024);
            for (let o = 0; o < size; o += piece) {
                while (p.bufferedAmount() > 1024 * 1024) await new Promise((r) => setTimeout(r, 5));
                if (!p.send(data.subarray(o, o + piece))) throw new Error("send refused");
            }
            const h = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
            return Array.from(h, (x) => x.toString(16).padStart(2, "0")).join("");
        }""",
            [size, piece],
        )
    )
    got = bytearray()
    while len(got) < size:
        chunk = await asyncio.wait_for(received.get(), 10)
        assert isinstance(chunk, bytes)
        got += chunk
    up = size / (time.monotonic() - t) / 1e6
    assert hashlib.sha256(got).hexdigest() == await sender

    stats = json.loads(await page.evaluate("window.rtc.peer.stats()"))
    assert stats["connectionState"] == "connected"
    selected = stats["selected"]
    assert selected is not None and selected["remote"]["address"] == "127.0.0.1", stats
    rtts.sort()
    return (
        f"RTT median {rtts[len(rtts) // 2]:.2f} ms (max {rtts[-1]:.2f}); 1 MB aiortc->browser "
        f"{down:.1f} MB/s, browser->aiortc {up:.1f} MB/s; pair {selected['local']['type']}->"
        f"{selected['remote']['type']} {selected['remote']['address']}"
    )


@pytest.mark.parametrize("browser_offers", [True, False], ids=["browser-offers", "aiortc-offers"])
async def test_webrtc_with_aiortc(
    page: Any, web_server: SignalingServer, browser_offers: bool
) -> None:
    from aiortc import RTCPeerConnection

    from p2pkube.net.ice import use_host_addresses
    from p2pkube.net.settings import TransportSettings

    await open_node_page(page, web_server)
    use_host_addresses(["127.0.0.1"])  # aioice skips loopback addresses by default
    pc = RTCPeerConnection()
    channel = pc.createDataChannel("p2pkube", negotiated=True, id=0, ordered=True)
    if pc.sctp is not None:  # as p2pkube/net/link.py: a window the UDP receive buffer holds
        pc.sctp._advertised_rwnd = TransportSettings().sctp_receive_window
    try:
        connected = await _webrtc_exchange(page, pc, channel, browser_offers=browser_offers)
        traffic = await _webrtc_traffic(page, channel)
        print(
            f"\nWebRTC ({'browser' if browser_offers else 'aiortc'} offers): {connected}; {traffic}"
        )
        # aiortc closes: the browser hears of it once.
        await pc.close()
        await page.wait_for_function("window.rtc.state.closed !== null", timeout=15000)
        assert await page.evaluate("window.rtc.peer.send(new Uint8Array([0]))") is False
    finally:
        await pc.close()
        use_host_addresses([])
        await page.evaluate("window.rtc && window.rtc.peer.close()")
