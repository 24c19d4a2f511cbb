// bridge.js — what the browser can do that Pyodide's Python cannot: the JavaScript half of the
// p2pkube browser node. app.js registers this module in Pyodide as `p2pjs`
// (`pyodide.registerJsModule("p2pjs", bridge)`), so the agent's Python does `import p2pjs`.
//
// Conventions (every function below follows them):
// * Every `async` function returns a Promise; Python awaits it (`await p2pjs.kvGet(...)`). A
//   rejection arrives in Python as a `JsException` whose message says what failed.
// * Bytes cross as Uint8Array. Arguments accept a Uint8Array, any ArrayBuffer(View), or a Python
//   bytes-like object passed straight from Python (a PyProxy with a buffer): it is copied at
//   once, so the Python object may change afterwards. Values handed to Python are fresh
//   Uint8Arrays (`.to_bytes()` in Python).
// * Callbacks and handler objects may be JS functions or Python callables. Python proxies are
//   copied (`PyProxy.copy()`) so they outlive the call that passed them (no `create_proxy`
//   needed) and destroyed when the object they belong to is finished. They are called
//   defensively: an exception (or a rejected Promise / failed coroutine) is logged with
//   console.error and never breaks the bridge. A handler object is a JS object, a Python
//   object with those attributes, or a Python dict (looked up with `.get(name)`); a missing
//   handler is skipped.
// * Option objects may be JS objects or Python dicts (converted with `toJs`).
//
// Signaling
//   openSocket(url, onMessage(text), onClose(code, reason), timeoutMs = 10000) -> Promise<Socket>
//       A WebSocket. Resolves once open; rejects with a message if it cannot open (bad URL,
//       refused, closed before open, timeout). onMessage gets each text frame (binary frames
//       are dropped with a console warning). onClose is called once when an open socket closes
//       (whoever closed it), not when the open failed.
//   Socket.send(text) -> bool        false when the socket is not open (nothing queued)
//   Socket.close(code = 1000, reason = "")   codes other than 1000 and 3000-4999 become 1000
//   Socket.readyState -> 0 connecting, 1 open, 2 closing, 3 closed;  Socket.bufferedAmount
//
// WebRTC (one RTCPeerConnection + one data channel per neighbour, as p2pkube/net/link.py)
//   newPeer(iceServersJson, handlers) -> Peer
//       iceServersJson: JSON text of a list of ICE server URLs ("stun:host:3478") or of
//       RTCIceServer objects ({urls, username, credential}); "" or "[]" for none.
//       handlers: {onOpen(), onMessage(Uint8Array | string), onClose(reason),
//       onConnectionState(state), onBufferedLow()}. The data channel is created at once:
//       label "p2pkube", negotiated, id 0, ordered, reliable, binaryType "arraybuffer",
//       bufferedAmountLowThreshold 256 KiB. onMessage gets a Uint8Array per binary message
//       and the string itself for a text message (a protocol violation the caller decides
//       about). onConnectionState gets every RTCPeerConnection.connectionState change
//       ("new", "connecting", "connected", "disconnected", "failed", "closed"). onClose is
//       called once, when the channel closes or the connection fails; not after close().
//   Peer.createOffer() -> Promise<sdp>     setLocalDescription, waits for ICE gathering to be
//       complete (no trickle: the SDP carries every candidate, like aiortc), returns the SDP.
//   Peer.acceptOffer(sdp) -> Promise<answerSdp>   the same for a remote offer.
//   Peer.acceptAnswer(sdp) -> Promise<void>
//   Peer.send(bytes) -> bool         false when the channel is not open or the send failed
//   Peer.bufferedAmount() -> number  bytes queued on the channel
//   Peer.setBufferedLowThreshold(n)  when onBufferedLow fires (bufferedAmount fell to n)
//   Peer.channelState() -> "connecting" | "open" | "closing" | "closed"
//   Peer.connectionState() -> RTCPeerConnection.connectionState
//   Peer.localSdp() / Peer.remoteSdp() -> string ("" before there is one)
//   Peer.close()                     closes channel and connection; no callback after it
//   Peer.stats() -> Promise<JSON text> {connectionState, iceConnectionState, channel:
//       {state, bufferedAmount, messagesSent, messagesReceived, bytesSent, bytesReceived},
//       selected: null | {state, rttMs, bytesSent, bytesReceived, local: {type, address, port,
//       protocol}, remote: {...}}}
//
// Ed25519 (the same keys and signatures as `cryptography` natively)
//   ed25519Generate() -> Promise<{pub: Uint8Array(32, raw), pkcs8: Uint8Array(48, DER)}>
//   ed25519Sign(pkcs8, data) -> Promise<Uint8Array(64)>
//   ed25519Verify(pub, sig, data) -> Promise<bool>   false also for a malformed key/signature
//   cryptoInfo() -> {ed25519: "webcrypto" | "noble" | null (not chosen yet), reason,
//       requested: "auto" | "webcrypto" | "noble", secureContext, subtle, loadMs}
//   Two implementations, chosen once, at the first Ed25519 call:
//   * "webcrypto": crypto.subtle with {name: "Ed25519"}, used whenever the page has it: a
//     secure context (https, or http from localhost / 127.0.0.1, which is what
//     `p2pkube signal` prints first) in a browser whose WebCrypto has Ed25519 (probed by
//     importing a public key).
//   * "noble": @noble/ed25519 with @noble/hashes' sha512 (set as its `hashes.sha512` and
//     `hashes.sha512Async`, so it never touches crypto.subtle), bundled as ed25519.mjs and
//     imported only then: on a page that is not a secure context (http from a LAN address,
//     where crypto.subtle is undefined), or whose WebCrypto lacks Ed25519. Randomness is
//     crypto.getRandomValues, which insecure pages have. Verification is the library's strict
//     RFC 8032 / FIPS 186-5 mode ({zip215: false}: canonical encodings). One difference: it
//     refuses small-order public keys, for which Chromium's WebCrypto and `cryptography`
//     accept a trivial signature (R = identity, S = 0); no real node has such a key (its
//     signatures would prove nothing).
//   Both use the same formats: the raw 32-byte public key, and the private key as the 48-byte
//   PKCS#8 DER WebCrypto exports (RFC 8410: a fixed 16-byte prefix, then the 32-byte seed),
//   so a key stored in IndexedDB by one works with the other; Ed25519 is deterministic, so
//   both give the very same signature. configure({ed25519: "noble" | "webcrypto" | "auto"})
//   before the first call forces one (tests).
//
// Storage (IndexedDB database "p2pkube"; stores "identity", "state", "blobs", "logs")
//   kvGet(store, key) -> Promise<Uint8Array | null>
//   kvPut(store, key, bytes) -> Promise<void>        committed with strict durability
//   kvPutMany(store, [[key, bytes], ...]) -> Promise<void>   one transaction, all or nothing
//   kvDelete(store, key) -> Promise<void>
//   kvKeys(store) -> Promise<string[]>               sorted
//   kvClear(store) -> Promise<void>
//   acquireNodeLock(name = "p2pkube-node") -> Promise<bool>   a Web Lock held for the page's
//       life: false when another tab of this origin (sharing this IndexedDB, hence the node
//       identity) already runs a node.
//
// Runtime (every pod instance in its own dedicated Web Worker, worker.js)
//   compileModule(digest, bytes) -> Promise<true>
//       WebAssembly.compile, kept in memory by digest. Rejects with the compile error's text,
//       or when the module is no WASI preview 1 command (no `_start` function or `memory`
//       export, or an import other than a wasi_snapshot_preview1 function this runtime
//       offers: the message names it).
//   forgetModule(digest)             drops it (running instances keep their copy)
//   hasModule(digest) -> bool
//   startInstance(digest, options, handlers) -> Instance     throws if digest is not compiled
//       options: {argv: [str], env: [[k, v]] or {k: v}, stdin: bytes | null,
//                 deadlineMs: number | null (ms from now), dirs: [guestPath] (optional: empty
//                 writable in-memory directories, like an emptyDir)}
//       handlers: {onOutput(stream, Uint8Array), onExit(result)}; stream is "stdout" or
//       "stderr". Output is handed up as written: through a shared ring buffer when
//       crossOriginIsolated (a doorbell message per batch; a writer blocks while the ring, 1
//       MiB, is full, like a pipe; nothing written before a kill is lost), else by
//       postMessage in batches of at most 2 ms.
//       result, passed once to onExit (and resolving Instance.done):
//         {kind: "exit", code}                 proc_exit(code), or _start returned (code 0)
//         {kind: "trap", message, memoryBytes} a WebAssembly.RuntimeError ("unreachable",
//                                              "memory access out of bounds", ...); memoryBytes
//                                              is the instance memory's byteLength then
//         {kind: "stack-overflow", message}    RangeError: Maximum call stack size exceeded
//         {kind: "killed", reason}             Instance.kill(reason), or reason "deadline"
//                                              when deadlineMs passed (worker.terminate())
//         {kind: "error", message}             anything else (a link error naming the import,
//                                              an exception of the WASI layer, a worker that
//                                              could not start)
//   Instance.kill(reason = "killed")  terminates the worker at once (even mid-loop or asleep)
//   Instance.done -> Promise<result>;  Instance.id;  Instance.digest;  Instance.ended (bool)
//   Instance.stats() -> {sleepMode: "atomics" | "busy-wait" | null, sleeps, sleptMs,
//       outputBytes, startMs (ms from startInstance until _start ran, null before)}
//   runtimeInfo() -> {crossOriginIsolated, sleepMode, modules: [digest], running: n}
//   configure({workerUrl, ed25519Url, ed25519})   app.js points the runtime at the
//       (cache-busted) worker.js and the Ed25519 fallback at ed25519.mjs; ed25519 forces an
//       implementation (see Ed25519 above)
//
// WASI in the worker is @bjorn3/browser_wasi_shim with p2pkube's own poll_oneoff (every
// subscription, clock sleeps with Atomics.wait — never a busy loop — when crossOriginIsolated;
// fd subscriptions ready at once, as natively), clock_time_get/clock_res_get (monotonic,
// realtime, and the CPU-time clocks as time since start), and stdout/stderr that are not
// terminals (so C stdio buffers fully, as under wasmtime).

const WASI_MODULE = "wasi_snapshot_preview1";
const LOW_THRESHOLD = 256 * 1024;
const GATHER_TIMEOUT_MS = 10000;
const RING_BYTES = 1 << 20;
// Int32 slots of the ring header shared with worker.js (keep both in sync).
const H_WRITE = 0, H_READ = 1, H_BELL = 2, H_KILL = 3, H_SLEEPS = 4, H_SLEPT_MS = 5, H_MODE = 6;
const HEADER_BYTES = 64;
const SLEEP_MODES = [null, "atomics", "busy-wait"];

// The WASI preview 1 functions worker.js provides (the shim's, plus its own overrides).
const WASI_FUNCTIONS = new Set([
  "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get",
  "clock_time_get", "fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get",
  "fd_fdstat_set_flags", "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size",
  "fd_filestat_set_times", "fd_pread", "fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite",
  "fd_read", "fd_readdir", "fd_renumber", "fd_seek", "fd_sync", "fd_tell", "fd_write",
  "path_create_directory", "path_filestat_get", "path_filestat_set_times", "path_link",
  "path_open", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
  "path_unlink_file", "poll_oneoff", "proc_exit", "proc_raise", "sched_yield", "random_get",
  "sock_accept", "sock_recv", "sock_send", "sock_shutdown",
]);

// -- helpers -------------------------------------------------------------------------------------

function isPyProxy(x) {
  return (
    x != null &&
    (typeof x === "object" || typeof x === "function") &&
    typeof x.toJs === "function" &&
    typeof x.destroy === "function" &&
    typeof x.copy === "function"
  );
}

/** A callback we may keep: Python proxies are copied so the caller's borrowed one may go. */
function keep(fn) {
  if (fn == null) return null;
  if (isPyProxy(fn)) return fn.copy();
  return typeof fn === "function" ? fn : null;
}

function release(fn) {
  if (isPyProxy(fn)) {
    try {
      fn.destroy();
    } catch (_) {
      // already destroyed
    }
  }
}

function errorText(e) {
  if (e == null) return String(e);
  if (typeof e === "string") return e;
  return e.message ? String(e.message) : String(e);
}

/** Call a callback; never throws. Results that are Promises (or Python awaitables) are watched. */
function invoke(fn, what, ...args) {
  if (!fn) return;
  try {
    const result = fn(...args);
    if (result != null && typeof result.then === "function") {
      result.then(
        (value) => release(value),
        (e) => console.error(`p2pjs: ${what} failed:`, e),
      );
    } else {
      release(result);
    }
  } catch (e) {
    console.error(`p2pjs: ${what} failed:`, e);
  }
}

/** handlers[name] of a JS object, Python object or Python dict; null when missing. */
function pick(handlers, name) {
  if (handlers == null) return null;
  let fn;
  try {
    fn = handlers[name];
  } catch (_) {
    fn = undefined;
  }
  if (fn == null && isPyProxy(handlers) && typeof handlers.get === "function") {
    try {
      fn = handlers.get(name);
    } catch (_) {
      fn = undefined;
    }
  }
  const kept = keep(fn);
  if (isPyProxy(fn) && kept !== fn) release(fn);
  return kept;
}

/** A fresh, tight Uint8Array copy of bytes given by JS or Python. */
function toBytes(x, what = "bytes") {
  if (x == null) throw new TypeError(`${what}: expected bytes, got ${x}`);
  if (x instanceof Uint8Array) return x.slice();
  if (x instanceof ArrayBuffer) return new Uint8Array(x.slice(0));
  if (ArrayBuffer.isView(x)) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength).slice();
  if (typeof x === "string") return new TextEncoder().encode(x);
  if (isPyProxy(x)) {
    if (typeof x.getBuffer === "function") {
      const buffer = x.getBuffer("u8");
      try {
        return buffer.data.slice();
      } finally {
        buffer.release();
      }
    }
    const value = x.toJs();
    if (value !== x) return toBytes(value, what);
  }
  throw new TypeError(`${what}: expected bytes, got ${Object.prototype.toString.call(x)}`);
}

/** A JS value of an option object given by JS or Python (dicts become objects). */
function fromPython(x) {
  if (isPyProxy(x)) return x.toJs({ dict_converter: Object.fromEntries, create_pyproxies: false });
  return x;
}

// -- signaling socket ----------------------------------------------------------------------------

class Socket {
  constructor(ws) {
    this._ws = ws;
  }
  get readyState() {
    return this._ws.readyState;
  }
  get bufferedAmount() {
    return this._ws.bufferedAmount;
  }
  get url() {
    return this._ws.url;
  }
  send(text) {
    if (this._ws.readyState !== WebSocket.OPEN) return false;
    try {
      this._ws.send(String(text));
      return true;
    } catch (e) {
      console.warn("p2pjs: WebSocket send failed:", e);
      return false;
    }
  }
  close(code = 1000, reason = "") {
    code = Number(code);
    if (!(code === 1000 || (code >= 3000 && code <= 4999))) code = 1000;
    reason = String(reason ?? "");
    while (new TextEncoder().encode(reason).length > 123) reason = reason.slice(0, -1);
    try {
      this._ws.close(code, reason);
    } catch (e) {
      console.warn("p2pjs: WebSocket close failed:", e);
    }
  }
}

export function openSocket(url, onMessage, onClose, timeoutMs = 10000) {
  const onMsg = keep(onMessage);
  const onCls = keep(onClose);
  const done = () => {
    release(onMsg);
    release(onCls);
  };
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(String(url));
    } catch (e) {
      done();
      reject(new Error(`cannot open a WebSocket to ${url}: ${errorText(e)}`));
      return;
    }
    let opened = false;
    let failed = false;
    const timer = setTimeout(() => {
      if (opened) return;
      failed = true;
      reject(new Error(`WebSocket to ${url}: not open after ${timeoutMs} ms`));
      try {
        ws.close();
      } catch (_) {
        // ignore
      }
    }, Number(timeoutMs));
    ws.onopen = () => {
      if (failed) return;
      opened = true;
      clearTimeout(timer);
      resolve(new Socket(ws));
    };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") invoke(onMsg, "onMessage", event.data);
      else console.warn("p2pjs: binary WebSocket frame dropped");
    };
    ws.onclose = (event) => {
      clearTimeout(timer);
      if (opened) {
        invoke(onCls, "onClose", event.code, event.reason);
      } else if (!failed) {
        failed = true;
        reject(
          new Error(`WebSocket to ${url} failed (close code ${event.code}${event.reason ? `: ${event.reason}` : ""})`),
        );
      }
      done();
    };
  });
}

// -- WebRTC --------------------------------------------------------------------------------------

function parseIceServers(json) {
  if (json == null || json === "") return [];
  const list = typeof json === "string" ? JSON.parse(json) : fromPython(json);
  if (!Array.isArray(list)) throw new TypeError("iceServersJson must be a JSON list");
  return list.map((item) => (typeof item === "string" ? { urls: item } : item));
}

class Peer {
  constructor(iceServers, handlers) {
    this._h = {
      onOpen: pick(handlers, "onOpen"),
      onMessage: pick(handlers, "onMessage"),
      onClose: pick(handlers, "onClose"),
      onConnectionState: pick(handlers, "onConnectionState"),
      onBufferedLow: pick(handlers, "onBufferedLow"),
    };
    this._closed = false;
    this.pc = new RTCPeerConnection({ iceServers });
    const channel = this.pc.createDataChannel("p2pkube", { negotiated: true, id: 0, ordered: true });
    channel.binaryType = "arraybuffer";
    channel.bufferedAmountLowThreshold = LOW_THRESHOLD;
    this.channel = channel;
    channel.onopen = () => !this._closed && invoke(this._h.onOpen, "onOpen");
    channel.onmessage = (event) => {
      if (this._closed) return;
      const data = event.data;
      invoke(this._h.onMessage, "onMessage", typeof data === "string" ? data : new Uint8Array(data));
    };
    channel.onbufferedamountlow = () => !this._closed && invoke(this._h.onBufferedLow, "onBufferedLow");
    channel.onclose = () => this._ended("data channel closed");
    channel.onerror = (event) => {
      const e = event && event.error;
      if (this._closed || !e) return;
      const detail = [e.errorDetail, e.sctpCauseCode != null ? `SCTP cause ${e.sctpCauseCode}` : null, e.message];
      console.warn(`p2pjs: data channel error: ${detail.filter(Boolean).join(", ")}`);
    };
    this.pc.onconnectionstatechange = () => {
      const state = this.pc.connectionState;
      if (this._closed) return;
      invoke(this._h.onConnectionState, "onConnectionState", state);
      if (state === "failed" || state === "closed") this._ended(`connection ${state}`);
    };
  }

  _ended(reason) {
    if (this._closed) return;
    this._closed = true;
    invoke(this._h.onClose, "onClose", reason);
    this._release();
  }

  _release() {
    for (const fn of Object.values(this._h)) release(fn);
    this._h = {};
  }

  _gathered(timeoutMs = GATHER_TIMEOUT_MS) {
    const pc = this.pc;
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        pc.removeEventListener("icecandidate", onCandidate);
        resolve();
      };
      const check = () => pc.iceGatheringState === "complete" && finish();
      const onCandidate = (event) => event.candidate == null && finish();
      const timer = setTimeout(() => {
        console.warn(`p2pjs: ICE gathering not complete after ${timeoutMs} ms; using what there is`);
        finish();
      }, timeoutMs);
      pc.addEventListener("icegatheringstatechange", check);
      pc.addEventListener("icecandidate", onCandidate);
    });
  }

  async createOffer() {
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    await this._gathered();
    return this.pc.localDescription.sdp;
  }

  async acceptOffer(sdp) {
    await this.pc.setRemoteDescription({ type: "offer", sdp: String(sdp) });
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    await this._gathered();
    return this.pc.localDescription.sdp;
  }

  async acceptAnswer(sdp) {
    await this.pc.setRemoteDescription({ type: "answer", sdp: String(sdp) });
  }

  send(data) {
    if (this._closed || this.channel.readyState !== "open") return false;
    try {
      this.channel.send(toBytes(data, "Peer.send"));
      return true;
    } catch (e) {
      console.warn("p2pjs: data channel send failed:", errorText(e));
      return false;
    }
  }

  bufferedAmount() {
    return this.channel.bufferedAmount;
  }

  setBufferedLowThreshold(bytes) {
    this.channel.bufferedAmountLowThreshold = Math.max(0, Number(bytes) | 0);
  }

  channelState() {
    return this.channel.readyState;
  }

  connectionState() {
    return this.pc.connectionState;
  }

  localSdp() {
    return this.pc.localDescription ? this.pc.localDescription.sdp : "";
  }

  remoteSdp() {
    return this.pc.remoteDescription ? this.pc.remoteDescription.sdp : "";
  }

  close() {
    const wasClosed = this._closed;
    this._closed = true;
    try {
      this.channel.close();
    } catch (_) {
      // ignore
    }
    try {
      this.pc.close();
    } catch (_) {
      // ignore
    }
    if (!wasClosed) this._release();
  }

  async stats() {
    const report = await this.pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    let pair = null;
    for (const s of byId.values()) {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId) || pair;
    }
    if (!pair) {
      for (const s of byId.values()) {
        if (s.type === "candidate-pair" && s.state === "succeeded" && (s.nominated || s.selected)) pair = s;
      }
    }
    const candidate = (id) => {
      const c = byId.get(id);
      return c ? { type: c.candidateType, address: c.address ?? c.ip ?? null, port: c.port, protocol: c.protocol } : null;
    };
    let channel = { state: this.channel.readyState, bufferedAmount: this.channel.bufferedAmount };
    for (const s of byId.values()) {
      if (s.type === "data-channel" && s.dataChannelIdentifier === 0) {
        channel = {
          ...channel,
          messagesSent: s.messagesSent,
          messagesReceived: s.messagesReceived,
          bytesSent: s.bytesSent,
          bytesReceived: s.bytesReceived,
        };
      }
    }
    return JSON.stringify({
      connectionState: this.pc.connectionState,
      iceConnectionState: this.pc.iceConnectionState,
      channel,
      selected: pair
        ? {
            state: pair.state,
            rttMs: pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null,
            bytesSent: pair.bytesSent,
            bytesReceived: pair.bytesReceived,
            local: candidate(pair.localCandidateId),
            remote: candidate(pair.remoteCandidateId),
          }
        : null,
    });
  }
}

export function newPeer(iceServersJson, handlers) {
  return new Peer(parseIceServers(iceServersJson), handlers);
}

// -- Ed25519 -------------------------------------------------------------------------------------

const ED25519 = { name: "Ed25519" };
const signingKeys = new Map(); // hex of pkcs8 -> CryptoKey
// RFC 8410 PrivateKeyInfo of an Ed25519 key, as WebCrypto exports it and `cryptography`
// writes it (PKCS8, DER, no encryption): SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 },
// OCTET STRING { OCTET STRING (32 bytes: the seed) } }.
const PKCS8_PREFIX = Uint8Array.of(
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
);
// RFC 8032 test 1's public key: what the WebCrypto probe imports.
const PROBE_PUBLIC = Uint8Array.from(
  "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a".match(/../g),
  (h) => parseInt(h, 16),
);
const ED25519_MODES = ["auto", "webcrypto", "noble"];
let ed25519Url = new URL("./ed25519.mjs", import.meta.url).href;
let ed25519Requested = "auto";
let ed25519Choice = null; // Promise<{name, impl}> once the first call chose
const cryptoState = { ed25519: null, reason: "no Ed25519 call yet", loadMs: null };

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function sameBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The 32-byte seed of a 48-byte RFC 8410 PKCS#8 DER key; throws for anything else. */
function seedOf(der) {
  if (der.length !== PKCS8_PREFIX.length + 32 || !sameBytes(der.subarray(0, PKCS8_PREFIX.length), PKCS8_PREFIX)) {
    throw new Error(`not an Ed25519 PKCS#8 key (expected ${PKCS8_PREFIX.length + 32} bytes of RFC 8410 DER, got ${der.length})`);
  }
  return der.slice(PKCS8_PREFIX.length);
}

function pkcs8Of(seed) {
  const der = new Uint8Array(PKCS8_PREFIX.length + 32);
  der.set(PKCS8_PREFIX, 0);
  der.set(seed, PKCS8_PREFIX.length);
  return der;
}

const webcrypto = {
  async generate() {
    const pair = await crypto.subtle.generateKey(ED25519, true, ["sign", "verify"]);
    const pub = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
    return { pub, pkcs8 };
  },
  async sign(der, message) {
    const id = hex(der);
    let key = signingKeys.get(id);
    if (!key) {
      key = await crypto.subtle.importKey("pkcs8", der, ED25519, false, ["sign"]);
      if (signingKeys.size > 16) signingKeys.clear();
      signingKeys.set(id, key);
    }
    return new Uint8Array(await crypto.subtle.sign(ED25519, key, message));
  },
  async verify(raw, signature, message) {
    const key = await crypto.subtle.importKey("raw", raw, ED25519, false, ["verify"]);
    return await crypto.subtle.verify(ED25519, key, signature, message);
  },
};

/** The noble implementation over the lazily imported ed25519.mjs (sha512 already set there). */
function nobleOver(ed) {
  return {
    async generate() {
      const seed = ed.utils.randomSecretKey(); // crypto.getRandomValues
      return { pub: ed.getPublicKey(seed), pkcs8: pkcs8Of(seed) };
    },
    async sign(der, message) {
      return ed.sign(message, seedOf(der));
    },
    async verify(raw, signature, message) {
      return ed.verify(signature, message, raw, { zip215: false });
    },
  };
}

/** Why WebCrypto's Ed25519 cannot be used here, or null when it can. */
async function webcryptoMissing() {
  if (!globalThis.crypto || !globalThis.crypto.subtle) {
    return globalThis.isSecureContext === false
      ? "crypto.subtle is undefined: the page is not a secure context"
      : "crypto.subtle is undefined";
  }
  try {
    await crypto.subtle.importKey("raw", PROBE_PUBLIC, ED25519, false, ["verify"]);
    return null;
  } catch (e) {
    return `WebCrypto has no Ed25519 (${e && e.name ? e.name : errorText(e)})`;
  }
}

async function loadNoble() {
  const started = performance.now();
  let module;
  try {
    module = await import(ed25519Url);
  } catch (e) {
    throw new Error(`cannot load the Ed25519 fallback ${ed25519Url}: ${errorText(e)}`);
  }
  if (typeof module.hashes?.sha512 !== "function") {
    throw new Error(`${ed25519Url} is not the Ed25519 bundle (no hashes.sha512 set)`);
  }
  cryptoState.loadMs = Math.round((performance.now() - started) * 10) / 10;
  return nobleOver(module);
}

async function choose(requested) {
  const missing = await webcryptoMissing();
  if (requested === "webcrypto" || (requested === "auto" && missing === null)) {
    if (missing !== null) throw new Error(`Ed25519 through WebCrypto: ${missing}`);
    return { name: "webcrypto", impl: webcrypto, reason: requested === "auto" ? "WebCrypto has Ed25519" : "forced by configure()" };
  }
  const impl = await loadNoble();
  return { name: "noble", impl, reason: requested === "auto" ? missing : "forced by configure()" };
}

/** The implementation in use, chosen by the first call (a failed choice is retried). */
function ed25519Impl() {
  if (!ed25519Choice) {
    const requested = ed25519Requested;
    ed25519Choice = choose(requested).then(
      (chosen) => {
        cryptoState.ed25519 = chosen.name;
        cryptoState.reason = chosen.reason;
        if (chosen.name === "noble" && requested === "auto") {
          console.info(`p2pjs: Ed25519 by @noble/ed25519 (${chosen.reason})`);
        }
        return chosen.impl;
      },
      (e) => {
        ed25519Choice = null;
        cryptoState.reason = errorText(e);
        throw e;
      },
    );
  }
  return ed25519Choice;
}

function setEd25519Mode(mode) {
  mode = String(mode);
  if (!ED25519_MODES.includes(mode)) throw new Error(`ed25519: one of ${ED25519_MODES.join(", ")}, not ${JSON.stringify(mode)}`);
  if (mode === ed25519Requested) return;
  ed25519Requested = mode;
  ed25519Choice = null;
  signingKeys.clear();
  Object.assign(cryptoState, { ed25519: null, reason: "no Ed25519 call yet" });
}

export function cryptoInfo() {
  return {
    ...cryptoState,
    requested: ed25519Requested,
    secureContext: Boolean(globalThis.isSecureContext),
    subtle: Boolean(globalThis.crypto && globalThis.crypto.subtle),
  };
}

export async function ed25519Generate() {
  return (await ed25519Impl()).generate();
}

export async function ed25519Sign(pkcs8, data) {
  const der = toBytes(pkcs8, "ed25519Sign pkcs8");
  const message = toBytes(data, "ed25519Sign data");
  return (await ed25519Impl()).sign(der, message);
}

export async function ed25519Verify(pub, sig, data) {
  let raw, signature, message;
  try {
    raw = toBytes(pub, "ed25519Verify pub");
    signature = toBytes(sig, "ed25519Verify sig");
    message = toBytes(data, "ed25519Verify data");
  } catch (_) {
    return false;
  }
  if (raw.length !== 32 || signature.length !== 64) return false;
  const impl = await ed25519Impl();
  try {
    return Boolean(await impl.verify(raw, signature, message));
  } catch (_) {
    return false;
  }
}

// -- IndexedDB key-value -------------------------------------------------------------------------

const DB_NAME = "p2pkube";
const STORES = ["identity", "state", "blobs", "logs"];
let dbPromise = null;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** Open the database at whatever version it has; add missing stores with a version bump. */
function openDatabase(version) {
  return new Promise((resolve, reject) => {
    const req = version === undefined ? indexedDB.open(DB_NAME) : indexedDB.open(DB_NAME, version);
    req.onupgradeneeded = () => {
      const db = req.result;
      for (const name of STORES) if (!db.objectStoreNames.contains(name)) db.createObjectStore(name);
    };
    req.onblocked = () => console.warn("p2pjs: IndexedDB upgrade waits for another tab to close it");
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(new Error(`IndexedDB ${DB_NAME}: ${errorText(req.error)}`));
  });
}

async function database() {
  if (!dbPromise) {
    dbPromise = (async () => {
      let db = await openDatabase();
      if (STORES.some((name) => !db.objectStoreNames.contains(name))) {
        const next = db.version + 1;
        db.close();
        db = await openDatabase(next);
      }
      db.onversionchange = () => {
        db.close(); // let another tab upgrade; we reopen on the next call
        dbPromise = null;
      };
      db.onclose = () => {
        dbPromise = null;
      };
      return db;
    })();
    dbPromise.catch(() => {
      dbPromise = null;
    });
  }
  return dbPromise;
}

async function transact(store, mode, work) {
  if (!STORES.includes(store)) throw new Error(`unknown store ${JSON.stringify(store)} (one of ${STORES.join(", ")})`);
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode, mode === "readwrite" ? { durability: "strict" } : undefined);
    let result;
    const req = work(tx.objectStore(store));
    if (req) req.onsuccess = () => (result = req.result);
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(new Error(`IndexedDB ${store}: ${errorText(tx.error)}`));
    tx.onabort = () => reject(new Error(`IndexedDB ${store}: aborted: ${errorText(tx.error)}`));
  });
}

export async function kvGet(store, key) {
  const value = await transact(String(store), "readonly", (s) => s.get(String(key)));
  if (value == null) return null;
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return toBytes(value);
  return toBytes(String(value));
}

export async function kvPut(store, key, value) {
  const bytes = toBytes(value, "kvPut value");
  await transact(String(store), "readwrite", (s) => s.put(bytes, String(key)));
}

export async function kvPutMany(store, entries) {
  const list = fromPython(entries).map(([key, value]) => [String(key), toBytes(value, "kvPutMany value")]);
  await transact(String(store), "readwrite", (s) => {
    for (const [key, value] of list) s.put(value, key);
    return null;
  });
}

export async function kvDelete(store, key) {
  await transact(String(store), "readwrite", (s) => s.delete(String(key)));
}

export async function kvKeys(store) {
  const keys = await transact(String(store), "readonly", (s) => s.getAllKeys());
  return keys.map(String).sort();
}

export async function kvClear(store) {
  await transact(String(store), "readwrite", (s) => s.clear());
}

const heldLocks = new Set();

export async function acquireNodeLock(name = "p2pkube-node") {
  name = String(name);
  if (heldLocks.has(name)) return true;
  if (!navigator.locks) return true; // no Web Locks: cannot tell, assume alone
  return new Promise((resolve) => {
    navigator.locks
      .request(name, { ifAvailable: true }, (lock) => {
        if (!lock) {
          resolve(false);
          return undefined;
        }
        heldLocks.add(name);
        resolve(true);
        return new Promise(() => {}); // held until the page goes
      })
      .catch((e) => {
        console.warn("p2pjs: Web Lock failed:", e);
        resolve(true);
      });
  });
}

// -- runtime: Web Workers ------------------------------------------------------------------------

const modules = new Map(); // digest -> WebAssembly.Module
const running = new Set();
let workerUrl = new URL("./worker.js", import.meta.url).href;
let spare = null;
let nextInstanceId = 1;
let warnedBusy = false;

/** app.js points at the cache-busted worker.js and ed25519.mjs before the first start. */
export function configure(options) {
  const o = fromPython(options) || {};
  if (o.workerUrl) {
    workerUrl = new URL(String(o.workerUrl), location.href).href;
    if (spare) {
      spare.terminate();
      spare = null;
    }
  }
  if (o.ed25519Url) ed25519Url = new URL(String(o.ed25519Url), location.href).href;
  if (o.ed25519 != null) setEd25519Mode(o.ed25519);
}

function spawnWorker() {
  return new Worker(workerUrl, { type: "module", name: "p2pkube pod" });
}

/** A worker for a new instance; one spare is kept loaded so a start does not wait for it. */
function takeWorker() {
  const worker = spare || spawnWorker();
  spare = null;
  setTimeout(() => {
    if (!spare) spare = spawnWorker();
  }, 50);
  return worker;
}

function checkCommandModule(module) {
  const exports = WebAssembly.Module.exports(module);
  if (!exports.some((e) => e.name === "_start" && e.kind === "function")) {
    throw new Error("not a WASI command module: no exported _start function");
  }
  if (!exports.some((e) => e.name === "memory" && e.kind === "memory")) {
    throw new Error("not a WASI command module: no exported memory");
  }
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== WASI_MODULE) {
      throw new Error(`unknown import ${imp.module}.${imp.name}: only ${WASI_MODULE} functions are offered`);
    }
    if (imp.kind !== "function" || !WASI_FUNCTIONS.has(imp.name)) {
      throw new Error(`unknown import ${imp.module}.${imp.name} (${imp.kind}): not a WASI preview 1 function`);
    }
  }
}

export async function compileModule(digest, bytes) {
  const code = toBytes(bytes, "compileModule bytes");
  let module;
  try {
    module = await WebAssembly.compile(code);
  } catch (e) {
    throw new Error(`cannot compile ${digest}: ${errorText(e)}`);
  }
  checkCommandModule(module);
  modules.set(String(digest), module);
  if (!spare) setTimeout(() => spare || (spare = spawnWorker()), 0);
  return true;
}

export function forgetModule(digest) {
  modules.delete(String(digest));
}

export function hasModule(digest) {
  return modules.has(String(digest));
}

export function runtimeInfo() {
  return {
    crossOriginIsolated: Boolean(globalThis.crossOriginIsolated),
    sleepMode: globalThis.crossOriginIsolated ? "atomics" : "busy-wait",
    modules: Array.from(modules.keys()),
    running: running.size,
  };
}

function normalizeOptions(options) {
  const o = fromPython(options) || {};
  const argv = Array.from(o.argv || [], String);
  let env = o.env || [];
  if (!Array.isArray(env)) env = Object.entries(env);
  env = env.map(([k, v]) => `${k}=${v}`);
  const stdin = o.stdin == null ? null : toBytes(o.stdin, "stdin");
  const deadlineMs = o.deadlineMs == null ? null : Number(o.deadlineMs);
  const dirs = Array.from(o.dirs || [], String);
  return { argv, env, stdin, deadlineMs, dirs };
}

class Instance {
  constructor(digest, module, options, handlers) {
    this.id = nextInstanceId++;
    this.digest = digest;
    this.ended = false;
    this._onOutput = pick(handlers, "onOutput");
    this._onExit = pick(handlers, "onExit");
    this._outputBytes = 0;
    this._created = performance.now();
    this._startMs = null;
    this.done = new Promise((resolve) => (this._resolve = resolve));
    const opts = normalizeOptions(options);
    const shared = Boolean(globalThis.crossOriginIsolated) && typeof SharedArrayBuffer === "function";
    if (shared) {
      this._sab = new SharedArrayBuffer(HEADER_BYTES + RING_BYTES);
      this._hdr = new Int32Array(this._sab, 0, HEADER_BYTES / 4);
      this._ring = new Uint8Array(this._sab, HEADER_BYTES, RING_BYTES);
    } else {
      this._sab = null;
      if (!warnedBusy) {
        warnedBusy = true;
        console.warn(
          "p2pjs: the page is not crossOriginIsolated (no COOP/COEP headers): no SharedArrayBuffer, " +
            "so sleeping pods busy-wait a core and output is batched by postMessage",
        );
      }
    }
    this._sleepMode = null;
    this.worker = takeWorker();
    this.worker.onmessage = (event) => this._message(event.data);
    this.worker.onerror = (event) => {
      event.preventDefault();
      this._finish({ kind: "error", message: `worker failed: ${event.message || "could not load worker.js"}` });
    };
    this.worker.onmessageerror = () => this._finish({ kind: "error", message: "worker message could not be read" });
    running.add(this);
    this.worker.postMessage({
      type: "start",
      module,
      argv: opts.argv,
      env: opts.env,
      stdin: opts.stdin,
      dirs: opts.dirs,
      sab: this._sab,
      ringBytes: RING_BYTES,
      headerBytes: HEADER_BYTES,
    });
    if (opts.deadlineMs != null && Number.isFinite(opts.deadlineMs)) {
      this._deadline = setTimeout(() => this.kill("deadline"), Math.max(0, opts.deadlineMs));
    }
  }

  _message(msg) {
    if (this.ended || msg == null) return;
    switch (msg.type) {
      case "drain":
        this._drain();
        break;
      case "out":
        this._emit(msg.stream, msg.data);
        break;
      case "started":
        this._startMs = performance.now() - this._created;
        break;
      case "sleep-mode":
        this._sleepMode = msg.mode;
        break;
      case "exit":
        this._finish(msg.result);
        break;
      default:
        console.warn("p2pjs: unknown worker message", msg);
    }
  }

  _emit(stream, data) {
    if (!data || data.length === 0) return;
    this._outputBytes += data.length;
    invoke(this._onOutput, "onOutput", stream, data);
  }

  /** Read every record from the shared output ring (main thread side; see worker.js). */
  _drain() {
    const hdr = this._hdr;
    if (!hdr) return;
    Atomics.store(hdr, H_BELL, 0);
    const write = Atomics.load(hdr, H_WRITE);
    let read = Atomics.load(hdr, H_READ);
    if (read === write) return;
    const ring = this._ring;
    const mask = RING_BYTES - 1;
    const take = (pos, n) => {
      const out = new Uint8Array(n);
      const start = pos & mask;
      const first = Math.min(n, RING_BYTES - start);
      out.set(ring.subarray(start, start + first), 0);
      if (first < n) out.set(ring.subarray(0, n - first), first);
      return out;
    };
    const chunks = [];
    while (read !== write) {
      const head = take(read, 5);
      const stream = head[0] === 2 ? "stderr" : "stdout";
      const length = head[1] | (head[2] << 8) | (head[3] << 16) | (head[4] << 24);
      const last = chunks[chunks.length - 1];
      const payload = take(read + 5, length);
      if (last && last.stream === stream && last.size + length <= RING_BYTES) {
        last.parts.push(payload);
        last.size += length;
      } else {
        chunks.push({ stream, parts: [payload], size: length });
      }
      read = (read + 5 + length) | 0;
    }
    Atomics.store(hdr, H_READ, read);
    Atomics.notify(hdr, H_READ);
    for (const chunk of chunks) {
      let data = chunk.parts[0];
      if (chunk.parts.length > 1) {
        data = new Uint8Array(chunk.size);
        let offset = 0;
        for (const part of chunk.parts) {
          data.set(part, offset);
          offset += part.length;
        }
      }
      this._emit(chunk.stream, data);
    }
  }

  _finish(result) {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this._deadline);
    this._drain();
    running.delete(this);
    try {
      this.worker.terminate();
    } catch (_) {
      // ignore
    }
    const plain = { ...result };
    invoke(this._onExit, "onExit", plain);
    release(this._onOutput);
    release(this._onExit);
    this._onOutput = this._onExit = null;
    this._resolve(plain);
  }

  kill(reason = "killed") {
    if (this.ended) return;
    if (this._hdr) {
      Atomics.store(this._hdr, H_KILL, 1);
      Atomics.notify(this._hdr, H_KILL);
      Atomics.notify(this._hdr, H_READ); // a writer waiting for ring space
    }
    this._drain();
    this.worker.terminate();
    this._finish({ kind: "killed", reason: String(reason) });
  }

  stats() {
    const hdr = this._hdr;
    return {
      sleepMode: hdr ? SLEEP_MODES[Atomics.load(hdr, H_MODE)] ?? null : this._sleepMode,
      sleeps: hdr ? Atomics.load(hdr, H_SLEEPS) : null,
      sleptMs: hdr ? Atomics.load(hdr, H_SLEPT_MS) : null,
      outputBytes: this._outputBytes,
      startMs: this._startMs,
    };
  }
}

export function startInstance(digest, options, handlers) {
  const key = String(digest);
  const module = modules.get(key);
  if (!module) throw new Error(`module ${key} is not compiled (compileModule first)`);
  return new Instance(key, module, options, handlers);
}
