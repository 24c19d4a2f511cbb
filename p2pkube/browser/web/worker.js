// worker.js — runs WebAssembly pod instances (WASI preview 1 commands), one at a time. Started
// by bridge/instances.js, which keeps a few idle in a warm pool; per instance it receives a
// "start" message:
//   {type: "start", module: WebAssembly.Module, argv: [str], env: ["K=V"], stdin: Uint8Array|null,
//    dirs: [guestPath], sab: SharedArrayBuffer|null, ringBytes, headerBytes}
// and answers with:
//   {type: "started", at}                      _start is about to run (at: its start, ms since
//                                              the epoch, performance.timeOrigin-based)
//   {type: "usage", memoryBytes}               its memory, without a shared header (1/s at most)
//   {type: "drain"}                            output waits in the shared ring (doorbell)
//   {type: "out", stream, data: Uint8Array}    output, when there is no shared ring
//   {type: "sleep-mode", mode}                 first sleep: "atomics" or "busy-wait"
//   {type: "exit", result}                     how it ended (shapes: see bridge.js); then it
//                                              waits for the next "start" (the page reuses it
//                                              only after an exit or a trap; others terminate it)
// A kill or a deadline is bridge.js calling worker.terminate(): nothing here has to cooperate.
// But Chromium lets a terminated worker that is still running script go on for 2 s (Blink's
// kForcibleTerminationDelay) before it stops it by force, and the kill's Atomics.notify wakes a
// sleeping or output-blocked pod first: so a wait that sees the kill flag never returns to the
// guest, it throws Killed, which unwinds the instance (see stopIfKilled).
//
// WASI is @bjorn3/browser_wasi_shim with these replaced:
// * poll_oneoff: the shim handles one clock subscription only, busy-waits, and never writes the
//   event count. Here: any number of subscriptions; fd_read/fd_write ones are ready at once
//   (stdin is a memory file, output never blocks), as in p2pkube/runtime/engine.py; otherwise it
//   sleeps until the earliest clock fires, with Atomics.wait on the shared header (woken early by
//   a kill), or a busy wait when the page is not crossOriginIsolated (no SharedArrayBuffer).
// * clock_time_get / clock_res_get: realtime, monotonic, and the process/thread CPU-time clocks
//   (time since the instance started: the shim returns 0 for them).
// * stdout/stderr: not terminals (so stdio buffers fully, as under wasmtime), written to the
//   shared ring: records [stream u8][length u32 LE][bytes], a pipe the main thread drains
//   (layout: ring.js).
// `make browser` bundles it with ring.js into dist/worker.js (browser_wasi_shim.mjs stays its own
// file, imported as it is).
import {
  WASI,
  WASIProcExit,
  Directory,
  File,
  OpenFile,
  PreopenDirectory,
  Fd,
  wasi as W,
} from "./browser_wasi_shim.mjs";
import {
  H_BELL, H_KILL, H_MODE, H_READ, H_SLEEPS, H_SLEPT_MS, H_WRITE, MODE_ATOMICS, MODE_BUSY, RECORD_HEAD,
  SLEEP_MODES, STDERR, STDOUT, USAGE_OFFSET, U_BUSY_US, U_MARK_US, U_MEMORY,
} from "./ring.js";
import { readFiles } from "./files.js";

const SUBSCRIPTION_SIZE = 48;
const EVENT_SIZE = 32;
const MAX_SUBSCRIPTIONS = 4096;
const BATCH_MS = 2;

/** Thrown into the guest when the page killed it: its run ends here, nothing is reported. */
class Killed extends Error {}

let hdr = null; // Int32Array over the shared header, or null without SharedArrayBuffer
let ring = null;
let ringMask = 0;
let ringBytes = 0;
let startedAt = 0;
let sleepModeSent = false;
// The instance's usage for the page (ring.js, U_*): a BigInt64Array over the shared header, or
// null without SharedArrayBuffer (then its memory is posted, at most once a second).
let usage = null;
let memoryOf = null;
let lastUsagePost = 0;
const USAGE_POST_MS = 1000;
// Without a shared ring: output batched for at most BATCH_MS, then posted.
let pending = [];
let pendingStream = 0;
let lastPost = 0;

function postPending() {
  if (pending.length === 0) return;
  let size = 0;
  for (const p of pending) size += p.length;
  const data = new Uint8Array(size);
  let offset = 0;
  for (const p of pending) {
    data.set(p, offset);
    offset += p.length;
  }
  const stream = pendingStream === STDERR ? "stderr" : "stdout";
  pending = [];
  lastPost = performance.now();
  postMessage({ type: "out", stream, data }, [data.buffer]);
}

function usageNowUs() {
  return BigInt(Math.round((performance.now() - startedAt) * 1000));
}

/** Tell the page the instance's memory size (its linear memory's byteLength now). */
function noteMemory() {
  let bytes = 0;
  try {
    bytes = memoryOf ? memoryOf() : 0;
  } catch (_) {
    // no memory export (yet)
  }
  if (usage) {
    Atomics.store(usage, U_MEMORY, BigInt(bytes));
    return;
  }
  const now = performance.now();
  if (now - lastUsagePost >= USAGE_POST_MS) {
    lastUsagePost = now;
    postMessage({ type: "usage", memoryBytes: bytes });
  }
}

/** The instance stops running (it sleeps, waits for ring space, or ended): its time awake
 * since it last woke goes into U_BUSY_US. */
function usageAsleep() {
  noteMemory();
  if (!usage) return;
  const mark = Atomics.load(usage, U_MARK_US);
  if (mark < 0n) return;
  Atomics.add(usage, U_BUSY_US, usageNowUs() - mark);
  Atomics.store(usage, U_MARK_US, -1n);
}

/** The instance runs again from now. */
function usageAwake() {
  if (usage) Atomics.store(usage, U_MARK_US, usageNowUs());
}

function ringPut(pos, bytes) {
  const start = pos & ringMask;
  const first = Math.min(bytes.length, ringBytes - start);
  ring.set(bytes.subarray(0, first), start);
  if (first < bytes.length) ring.set(bytes.subarray(first), 0);
}

/** Append one output record to the shared ring; waits (like a full pipe) while it is full. */
function ringWrite(stream, bytes) {
  const maxRecord = ringBytes >> 2;
  for (let offset = 0; offset < bytes.length; offset += maxRecord) {
    const chunk = bytes.subarray(offset, Math.min(bytes.length, offset + maxRecord));
    const need = RECORD_HEAD + chunk.length;
    const write = Atomics.load(hdr, H_WRITE);
    for (;;) {
      stopIfKilled();
      const read = Atomics.load(hdr, H_READ);
      if (ringBytes - ((write - read) >>> 0) >= need) break;
      ringBell();
      usageAsleep();
      Atomics.wait(hdr, H_READ, read, 100);
      usageAwake();
    }
    const head = new Uint8Array(RECORD_HEAD);
    head[0] = stream;
    new DataView(head.buffer).setUint32(1, chunk.length, true);
    ringPut(write, head);
    ringPut(write + RECORD_HEAD, chunk);
    Atomics.store(hdr, H_WRITE, (write + need) | 0);
    ringBell();
  }
}

function ringBell() {
  if (Atomics.compareExchange(hdr, H_BELL, 0, 1) === 0) postMessage({ type: "drain" });
}

function output(stream, data) {
  if (data.length === 0) return;
  if (hdr) {
    ringWrite(stream, data);
    return;
  }
  if (pending.length && pendingStream !== stream) postPending();
  pendingStream = stream;
  pending.push(data);
  if (performance.now() - lastPost >= BATCH_MS) postPending();
}

/** stdout or stderr: a write-only stream that is not a terminal. */
class OutputFd extends Fd {
  constructor(stream) {
    super();
    this.stream = stream;
  }
  fd_fdstat_get() {
    const stat = new W.Fdstat(W.FILETYPE_UNKNOWN, 0);
    stat.fs_rights_base = BigInt(W.RIGHTS_FD_WRITE);
    return { ret: W.ERRNO_SUCCESS, fdstat: stat };
  }
  fd_filestat_get() {
    return { ret: W.ERRNO_SUCCESS, filestat: new W.Filestat(0n, W.FILETYPE_UNKNOWN, 0n) };
  }
  fd_write(data) {
    output(this.stream, data);
    return { ret: W.ERRNO_SUCCESS, nwritten: data.byteLength };
  }
}

function nowNs(clock) {
  switch (clock) {
    case W.CLOCKID_REALTIME:
      return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
    case W.CLOCKID_MONOTONIC:
      return BigInt(Math.round(performance.now() * 1e6));
    case W.CLOCKID_PROCESS_CPUTIME_ID:
    case W.CLOCKID_THREAD_CPUTIME_ID:
      return BigInt(Math.round((performance.now() - startedAt) * 1e6));
    default:
      return null;
  }
}

function noteSleepMode(mode) {
  if (hdr) {
    Atomics.store(hdr, H_MODE, mode);
  }
  if (!sleepModeSent) {
    sleepModeSent = true;
    const name = SLEEP_MODES[mode];
    postMessage({ type: "sleep-mode", mode: name });
    if (mode === MODE_BUSY) {
      console.warn("p2pkube pod: not crossOriginIsolated, so poll_oneoff sleeps by busy-waiting a core");
    }
  }
}

/**
 * After a kill the guest must not run again: a wait woken by the kill returning normally would
 * hand it back its next instruction (a sleep reported as elapsed), and it would run free, e.g.
 * a ticker calling poll_oneoff hundreds of thousands of times, until Chromium stops the
 * worker by force 2 s later. Throwing unwinds the wasm stack back to run().
 */
function stopIfKilled() {
  if (Atomics.load(hdr, H_KILL) !== 0) throw new Killed();
}

/** Sleep ms milliseconds without spinning when possible; a kill ends it (throws Killed). */
function sleep(ms) {
  if (!(ms > 0)) return;
  if (hdr) {
    stopIfKilled();
    noteSleepMode(MODE_ATOMICS);
    Atomics.add(hdr, H_SLEEPS, 1);
    usageAsleep();
    const end = performance.now() + ms;
    for (let left = ms; left > 0; left = end - performance.now()) {
      Atomics.wait(hdr, H_KILL, 0, left);
      stopIfKilled();
    }
    usageAwake();
    Atomics.add(hdr, H_SLEPT_MS, Math.round(ms));
    return;
  }
  noteMemory(); // a busy wait spins a core: the instance's time awake goes on
  noteSleepMode(MODE_BUSY);
  postPending();
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // no SharedArrayBuffer: nothing to block on
  }
}

function run(msg) {
  const { module, argv, env, stdin, dirs, files } = msg;
  live = msg.filesSab ? { sab: msg.filesSab, taken: null } : null;
  if (msg.sab) {
    hdr = new Int32Array(msg.sab, 0, msg.headerBytes / 4);
    ring = new Uint8Array(msg.sab, msg.headerBytes, msg.ringBytes);
    ringBytes = msg.ringBytes;
    ringMask = ringBytes - 1;
    usage = new BigInt64Array(msg.sab, USAGE_OFFSET, 3);
  }
  const fds = [
    new OpenFile(new File(stdin || new Uint8Array(0), { readonly: true })),
    new OutputFd(STDOUT),
    new OutputFd(STDERR),
  ];
  for (const dir of dirs || []) fds.push(new Preopen(dir, new Map()));
  for (const [dir, entries] of Object.entries(files || {})) {
    fds.push(new ReadonlyPreopen(dir, readonlyTree(entries)));
  }
  const wasi = new WASI(argv, env, fds, { debug: false }); // the shim logs every call by default
  const memory = () => wasi.inst.exports.memory;
  const imports = wasi.wasiImport;

  imports.clock_time_get = (clock, _precision, out) => {
    const now = nowNs(clock);
    if (now == null) return W.ERRNO_INVAL;
    new DataView(memory().buffer).setBigUint64(out, now, true);
    return W.ERRNO_SUCCESS;
  };
  imports.clock_res_get = (clock, out) => {
    if (nowNs(clock) == null) return W.ERRNO_INVAL;
    const res = globalThis.crossOriginIsolated ? 5000n : 100000n; // performance.now() granularity
    new DataView(memory().buffer).setBigUint64(out, res, true);
    return W.ERRNO_SUCCESS;
  };
  imports.poll_oneoff = (inPtr, outPtr, count, neventsPtr) => {
    count >>>= 0;
    if (count === 0 || count > MAX_SUBSCRIPTIONS) return W.ERRNO_INVAL;
    let view = new DataView(memory().buffer);
    const clocks = []; // [userdata, ns to wait]
    const ready = []; // [userdata, eventtype]
    for (let i = 0; i < count; i++) {
      const base = inPtr + i * SUBSCRIPTION_SIZE;
      const userdata = view.getBigUint64(base, true);
      const tag = view.getUint8(base + 8);
      if (tag === W.EVENTTYPE_CLOCK) {
        const clock = view.getUint32(base + 16, true);
        let timeout = view.getBigUint64(base + 24, true);
        const flags = view.getUint16(base + 40, true);
        if (flags & W.SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME) {
          const now = nowNs(clock);
          if (now == null) return W.ERRNO_INVAL;
          timeout = timeout > now ? timeout - now : 0n;
        } else if (nowNs(clock) == null) {
          return W.ERRNO_INVAL;
        }
        clocks.push([userdata, timeout]);
      } else if (tag === W.EVENTTYPE_FD_READ || tag === W.EVENTTYPE_FD_WRITE) {
        ready.push([userdata, tag]);
      } else {
        return W.ERRNO_INVAL;
      }
    }
    if (ready.length === 0 && clocks.length) {
      let wait = clocks[0][1];
      for (const [, t] of clocks) if (t < wait) wait = t;
      if (!hdr) postPending();
      sleep(Number(wait) / 1e6);
      for (const [userdata, t] of clocks) if (t <= wait) ready.push([userdata, W.EVENTTYPE_CLOCK]);
      view = new DataView(memory().buffer);
    }
    for (let i = 0; i < ready.length; i++) {
      const base = outPtr + i * EVENT_SIZE;
      for (let b = 0; b < EVENT_SIZE; b += 4) view.setUint32(base + b, 0, true);
      view.setBigUint64(base, ready[i][0], true);
      view.setUint16(base + 8, W.ERRNO_SUCCESS, true);
      view.setUint8(base + 10, ready[i][1]);
    }
    view.setUint32(neventsPtr, ready.length, true);
    return W.ERRNO_SUCCESS;
  };
  // One record per fd_write (the shim writes each iovec separately: a line and its newline, or
  // stdio's buffer and the rest, would reach the log as two pieces).
  const shimWrite = imports.fd_write;
  imports.fd_write = (fd, iovs, iovsLen, nwrittenPtr) => {
    const target = wasi.fds[fd];
    noteMemory();
    if (!(target instanceof OutputFd)) return shimWrite(fd, iovs, iovsLen, nwrittenPtr);
    const view = new DataView(memory().buffer);
    const bytes = new Uint8Array(memory().buffer);
    const parts = [];
    let total = 0;
    for (let i = 0; i < iovsLen >>> 0; i++) {
      const ptr = view.getUint32(iovs + 8 * i, true);
      const len = view.getUint32(iovs + 8 * i + 4, true);
      if (len) parts.push(bytes.subarray(ptr, ptr + len));
      total += len;
    }
    let data = parts.length === 1 ? parts[0].slice() : new Uint8Array(total);
    if (parts.length > 1) {
      let offset = 0;
      for (const part of parts) {
        data.set(part, offset);
        offset += part.length;
      }
    }
    target.fd_write(data);
    new DataView(memory().buffer).setUint32(nwrittenPtr, total, true);
    return W.ERRNO_SUCCESS;
  };
  imports.proc_raise = (sig) => {
    throw new WASIProcExit(128 + (sig >>> 0));
  };
  for (const name of ["sock_accept", "sock_recv", "sock_send", "sock_shutdown"]) {
    imports[name] = () => W.ERRNO_NOTSUP;
  }

  let instance = null;
  let result;
  try {
    instance = new WebAssembly.Instance(module, {
      ...trappedImports(module),
      wasi_snapshot_preview1: imports,
    });
    startedAt = performance.now();
    memoryOf = () => instance.exports.memory.buffer.byteLength;
    usageAwake();
    noteMemory();
    postMessage({ type: "started", at: performance.timeOrigin + startedAt });
    const code = wasi.start(instance);
    result = { kind: "exit", code: Number(code) };
  } catch (e) {
    if (e instanceof Killed) return; // the page has already ended this instance
    result = classify(e, instance);
  }
  usageAsleep();
  if (!hdr) postPending();
  postMessage({ type: "exit", result });
}

/** A preopened directory nothing may be created in, written to, renamed or removed from. */
/**
 * A preopened directory as wasmtime serves one, where the shim differs in a way modules see:
 * readlink of a path that exists but is no symlink (the shim has none) is EINVAL, not ENOTSUP.
 * musl's realpath() reads every component as a link and takes EINVAL for "not one"; with
 * ENOTSUP it fails, and MicroPython, which resolves a script's path first, could not run a
 * script file ("[Errno 58] Not supported").
 */
class Preopen extends PreopenDirectory {
  path_readlink(path) {
    const { ret, inode_obj } = this.path_lookup(path, 0);
    return { ret: inode_obj == null ? ret : W.ERRNO_INVAL, data: null };
  }
}

/** The instance's live files (files.js): the buffer, and the newest version taken from it. */
let live = null;

/** The newest complete version of the instance's read-only directories, or null when it has
 * no live files (it keeps those it started with). */
function latestFiles() {
  if (live == null) return null;
  const got = readFiles(live.sab, live.taken ? live.taken.version : 0);
  if (got != null) live.taken = got;
  return live.taken;
}

class ReadonlyPreopen extends Preopen {
  constructor(name, contents) {
    super(name, contents);
    this.version = 0;
  }

  /** Take a newer version of this directory's files, if the page published one: a lookup
   * after a ConfigMap changed sees the new files (a descriptor opened before keeps what it
   * read, as a renamed-over file on a native node). */
  refresh() {
    const latest = latestFiles();
    if (latest == null || latest.version === this.version) return;
    this.version = latest.version;
    this.dir.contents.clear();
    for (const [name, entry] of readonlyTree(latest.files[this.prestat_name] || [])) {
      this.dir.contents.set(name, entry);
    }
  }

  path_filestat_get(flags, path) {
    this.refresh();
    return super.path_filestat_get(flags, path);
  }

  fd_readdir_single(cookie) {
    if (cookie === 0n) this.refresh();
    return super.fd_readdir_single(cookie);
  }

  path_open(dirflags, path, oflags, rightsBase, rightsInheriting, fdFlags) {
    this.refresh();
    const writes = (oflags & (W.OFLAGS_CREAT | W.OFLAGS_TRUNC)) !== 0;
    if (writes || (BigInt(rightsBase) & BigInt(W.RIGHTS_FD_WRITE)) !== 0n) {
      return { ret: W.ERRNO_ROFS, fd_obj: null };
    }
    return super.path_open(dirflags, path, oflags, rightsBase, rightsInheriting, fdFlags);
  }
  path_create_directory() { return W.ERRNO_ROFS; }
  path_link() { return W.ERRNO_ROFS; }
  path_unlink() { return { ret: W.ERRNO_ROFS, inode_obj: null }; }
  path_unlink_file() { return W.ERRNO_ROFS; }
  path_remove_directory() { return W.ERRNO_ROFS; }
}

/**
 * A read-only directory tree (a configMap volume the kubelet projected) from
 * [[relative path, bytes], ...]: copied into this Worker at the instance's start.
 */
function readonlyTree(entries) {
  const root = new Map();
  for (const [path, data] of entries) {
    const parts = path.split("/");
    let level = root;
    for (const part of parts.slice(0, -1)) {
      if (!level.has(part)) level.set(part, new Directory(new Map()));
      level = level.get(part).contents;
    }
    level.set(parts[parts.length - 1], new File(data, { readonly: true }));
  }
  return root;
}

/**
 * Every function the module imports from outside WASI preview 1, as a function that traps
 * naming itself when called (wasmtime's --trap-unknown-imports; the native runtime does the
 * same): toolchains leave such imports in modules that never call them on a WASI host.
 * Other kinds of foreign import were refused by the runtime's prepare before this.
 */
function trappedImports(module) {
  const namespaces = {};
  for (const { module: name, name: field, kind } of WebAssembly.Module.imports(module)) {
    if (name === "wasi_snapshot_preview1" || kind !== "function") continue;
    namespaces[name] ??= {};
    namespaces[name][field] = () => {
      throw new WebAssembly.RuntimeError(`unknown import: \`${name}::${field}\` has not been defined`);
    };
  }
  return namespaces;
}

function classify(e, instance) {
  const message = e && e.message != null ? String(e.message) : String(e);
  if (e instanceof WebAssembly.RuntimeError) {
    let memoryBytes = null;
    try {
      memoryBytes = instance.exports.memory.buffer.byteLength;
    } catch (_) {
      // no memory export
    }
    return { kind: "trap", message, memoryBytes };
  }
  if (e instanceof RangeError && /call stack/i.test(message)) {
    return { kind: "stack-overflow", message };
  }
  if (e instanceof WebAssembly.LinkError) {
    return { kind: "error", message: `cannot instantiate: ${message}` };
  }
  return { kind: "error", message };
}

/** Forget the last instance: a Worker that ended one cleanly is reused from the page's pool. */
function reset() {
  hdr = null;
  ring = null;
  ringMask = 0;
  ringBytes = 0;
  startedAt = 0;
  usage = null;
  memoryOf = null;
  lastUsagePost = 0;
  sleepModeSent = false;
  pending = [];
  pendingStream = 0;
  lastPost = 0;
}

// One instance at a time. The page's pool hands this Worker a new "start" only after an "exit"
// whose result was a clean end ({kind: "exit"} or "trap"); after a kill it terminates it.
let busy = false;
self.onmessage = (event) => {
  const msg = event.data;
  if (!msg || msg.type !== "start" || busy) return;
  busy = true;
  try {
    run(msg);
  } finally {
    reset();
    busy = false;
  }
};
