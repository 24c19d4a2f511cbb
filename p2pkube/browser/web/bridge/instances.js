// instances.js — one job: pod instances, every one a WASI command module in its own dedicated
// Web Worker (worker.js), and the shared ring buffer its output comes up through
// (conventions: ../bridge.js).
//
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
//                 writable in-memory directories, like an emptyDir), files: {guestPath:
//                 [[relativePath, bytes]]} (optional: read-only directories of those files,
//                 like a configMap volume)}
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
//   Instance.updateFiles(files) -> bool   new contents of its read-only directories (the
//       options' files, same shape), taken by the running module at its next file lookup
//       (files.js); false when they cannot reach it while it runs (the page is not
//       crossOriginIsolated, it started without files, they outgrew their buffer, or it ended)
//   Instance.usage() -> {cpuMs, memoryBytes}   what it used (kubectl top): the time it ran
//       awake, as its Worker measured it (a Worker has no CPU clock; asleep or waiting for
//       ring space does not count, a busy-wait sleep without crossOriginIsolation does), and
//       its linear memory's byteLength as last seen by a WASI call (0 once ended)
//   Instance.done -> Promise<result>;  Instance.id;  Instance.digest;  Instance.ended (bool)
//   Instance.stats() -> {sleepMode: "atomics" | "busy-wait" | null, sleeps, sleptMs,
//       outputBytes, startMs (ms from startInstance until _start ran, null before)}
//   runtimeInfo() -> {crossOriginIsolated, sleepMode, modules: [digest], running: n, pool}
//   configure({workerUrl, workerPool})   app.js points the runtime at the (cache-busted)
//       worker.js; workerPool as configurePool
//   configurePool(size, refillDelayMs = 50)   idle Workers kept warm (browser.worker_pool and
//       worker_pool_refill_delay, set by the Python runtime): an instance takes one at once (no
//       Worker start, ~20-30 ms, on its path); refillDelayMs after the pool ran short it is
//       refilled in the background; a Worker whose instance exited or trapped goes back to the
//       pool (in place of a refill Worker not used yet, when the pool is full), one that was
//       killed (stop, deadline) or failed is terminated.
//       0: every instance starts its own Worker.
//   poolInfo() -> {size, idle, spawned, taken, reused, cold (takes that found it empty),
//       terminated}
//
// WASI in the worker is @bjorn3/browser_wasi_shim with p2pkube's own poll_oneoff (every
// subscription, clock sleeps with Atomics.wait — never a busy loop — when crossOriginIsolated;
// fd subscriptions ready at once, as natively), clock_time_get/clock_res_get (monotonic,
// realtime, and the CPU-time clocks as time since start), and stdout/stderr that are not
// terminals (so C stdio buffers fully, as under wasmtime).

import { errorText, fromPython, invoke, pick, release, toBytes } from "./interop.js";
import {
  H_BELL, H_KILL, H_MODE, H_READ, H_SLEEPS, H_SLEPT_MS, H_WRITE, HEADER_BYTES, RECORD_HEAD, RING_BYTES,
  USAGE_OFFSET, U_BUSY_US, U_MARK_US, U_MEMORY,
  SLEEP_MODES, STDERR,
} from "../ring.js";
import { allocateFiles, encodeFiles, publishFiles } from "../files.js";

const WASI_MODULE = "wasi_snapshot_preview1";

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

const modules = new Map(); // digest -> WebAssembly.Module
const running = new Set();
// import.meta.url is the bundle's (dist/bridge.js), beside which worker.js is copied.
let workerUrl = new URL("./worker.js", import.meta.url).href;
let nextInstanceId = 1;
let warnedBusy = false;

// The warm pool: idle Workers with worker.js loaded, so that an instance (an HTTP request to a
// handler pod above all) does not wait for a Worker to start. One is taken per instance and the
// pool is refilled in the background; a Worker whose instance ended cleanly ({kind: "exit"} or
// "trap": worker.js got back to its message loop) goes back to the pool, one that was killed
// (stop, deadline), overflowed its stack or failed is terminated, never reused, so an endless
// loop or a broken worker cannot poison the pool.
let poolSize = 2;
let refillMs = 50;
const idle = []; // [{worker, url}]
let refillTimer = null;
const poolStats = { spawned: 0, taken: 0, reused: 0, cold: 0, terminated: 0 };

/** configure()'s runtime part: app.js points at the cache-busted worker.js before the first start. */
export function configureRuntime(o) {
  if (o.workerUrl) {
    const url = new URL(String(o.workerUrl), location.href).href;
    if (url !== workerUrl) {
      workerUrl = url;
      while (idle.length) retire(idle.pop().worker);
    }
  }
  if (o.workerPool != null) configurePool(o.workerPool);
}

/** How many idle Workers to keep warm (0: none, every instance starts its own Worker), and how
 * long after the pool ran short it is topped up. */
export function configurePool(size, refillDelayMs = refillMs) {
  const n = Number(size);
  if (!Number.isInteger(n) || n < 0 || n > 64) throw new Error(`workerPool: want an integer 0-64, got ${size}`);
  const delay = Number(refillDelayMs);
  if (!(delay >= 0 && delay <= 60_000)) throw new Error(`workerPool refill delay: want 0-60000 ms, got ${refillDelayMs}`);
  poolSize = n;
  refillMs = delay;
  while (idle.length > poolSize) retire(idle.pop().worker);
  refillSoon();
}

export function poolInfo() {
  return { size: poolSize, idle: idle.length, ...poolStats };
}

function spawnWorker() {
  poolStats.spawned += 1;
  return new Worker(workerUrl, { type: "module", name: "p2pkube pod" });
}

function retire(worker) {
  poolStats.terminated += 1;
  try {
    worker.terminate();
  } catch (_) {
    // already gone
  }
}

/**
 * Top the pool up refillMs after it ran short: a short instance (most requests) gives its Worker
 * back before then, so a steady trickle of requests reuses Workers instead of starting new ones,
 * while a long one is replaced in the background.
 */
function refillSoon() {
  if (refillTimer != null || idle.length >= poolSize || modules.size === 0) return;
  refillTimer = setTimeout(() => {
    refillTimer = null;
    while (idle.length < poolSize && modules.size > 0) park({ worker: spawnWorker(), url: workerUrl, fresh: true });
  }, refillMs);
}

/** Put a Worker in the pool; one that fails to load meanwhile is dropped when taken. */
function park(entry) {
  entry.worker.onerror = (event) => {
    event.preventDefault();
    entry.failed = true;
  };
  idle.push(entry);
}

/** A Worker for a new instance: a warm idle one when there is one, else a new one. */
function takeWorker() {
  poolStats.taken += 1;
  let entry = idle.pop();
  while (entry && entry.failed) {
    retire(entry.worker);
    entry = idle.pop();
  }
  refillSoon();
  if (entry) return entry;
  poolStats.cold += 1;
  return { worker: spawnWorker(), url: workerUrl };
}

/**
 * An instance's Worker after it ended: back to the pool when it ended cleanly, else gone. When
 * the refill already filled the pool meanwhile (an instance that outlived refillMs, on a loaded
 * machine most of them), the returning Worker, whose worker.js has run, takes the place of a
 * refill Worker no instance used yet (it may still be loading), instead of being dropped.
 */
function giveBack(entry, clean) {
  const { worker } = entry;
  worker.onmessage = worker.onerror = worker.onmessageerror = null;
  if (!clean || entry.url !== workerUrl) {
    retire(worker);
    return;
  }
  if (idle.length >= poolSize) {
    const unused = idle.findIndex((other) => other.fresh);
    if (unused < 0) {
      retire(worker);
      return;
    }
    retire(idle.splice(unused, 1)[0].worker);
  }
  poolStats.reused += 1;
  entry.fresh = false;
  park(entry);
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
      // A function from elsewhere is a trap in the Worker (worker.js trappedImports).
      if (imp.kind === "function") continue;
      throw new Error(`unknown import ${imp.module}.${imp.name} (${imp.kind}): only functions may come from outside ${WASI_MODULE}`);
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
  refillSoon();
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
    pool: poolInfo(),
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
  return { argv, env, stdin, deadlineMs, dirs, files: normalizeFiles(o.files) };
}

/** {guestPath: [[relativePath, bytes]]} from Python, as Uint8Arrays. */
function normalizeFiles(given) {
  const files = {};
  for (const [dir, entries] of Object.entries(given || {})) {
    files[String(dir)] = Array.from(entries, ([path, data]) => [String(path), toBytes(data, path)]);
  }
  return files;
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
    this._startedAt = null; // ms since the epoch (the Worker's clock), once _start runs
    this._endedAt = null;
    this._memoryBytes = 0; // without a shared header: the Worker's last "usage" message
    this.done = new Promise((resolve) => (this._resolve = resolve));
    const opts = normalizeOptions(options);
    const shared = Boolean(globalThis.crossOriginIsolated) && typeof SharedArrayBuffer === "function";
    if (shared) {
      this._sab = new SharedArrayBuffer(HEADER_BYTES + RING_BYTES);
      this._hdr = new Int32Array(this._sab, 0, HEADER_BYTES / 4);
      this._ring = new Uint8Array(this._sab, HEADER_BYTES, RING_BYTES);
      this._usage = new BigInt64Array(this._sab, USAGE_OFFSET, 3);
      Atomics.store(this._usage, U_MARK_US, -1n); // not running until _start does
    } else {
      this._usage = null;
      this._sab = null;
      if (!warnedBusy) {
        warnedBusy = true;
        console.warn(
          "p2pjs: the page is not crossOriginIsolated (no COOP/COEP headers): no SharedArrayBuffer, " +
            "so sleeping pods busy-wait a core and output is batched by postMessage",
        );
      }
    }
    this._filesSab =
      shared && Object.keys(opts.files).length ? allocateFiles(encodeFiles(opts.files)) : null;
    this._sleepMode = null;
    this._entry = takeWorker();
    this.worker = this._entry.worker;
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
      files: opts.files,
      filesSab: this._filesSab,
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
        this._startedAt = Number(msg.at) || performance.timeOrigin + performance.now();
        break;
      case "usage":
        this._memoryBytes = Number(msg.memoryBytes) || 0;
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

  /** Read every record from the shared output ring (main thread side; see ../ring.js). */
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
      const head = take(read, RECORD_HEAD);
      const stream = head[0] === STDERR ? "stderr" : "stdout";
      const length = head[1] | (head[2] << 8) | (head[3] << 16) | (head[4] << 24);
      const last = chunks[chunks.length - 1];
      const payload = take(read + RECORD_HEAD, length);
      if (last && last.stream === stream && last.size + length <= RING_BYTES) {
        last.parts.push(payload);
        last.size += length;
      } else {
        chunks.push({ stream, parts: [payload], size: length });
      }
      read = (read + RECORD_HEAD + length) | 0;
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
    this._endedAt = performance.timeOrigin + performance.now();
    clearTimeout(this._deadline);
    this._drain();
    running.delete(this);
    giveBack(this._entry, result.kind === "exit" || result.kind === "trap");
    const plain = { ...result };
    invoke(this._onExit, "onExit", plain);
    release(this._onOutput);
    release(this._onExit);
    this._onOutput = this._onExit = null;
    this._resolve(plain);
  }

  updateFiles(files) {
    if (this.ended || this._filesSab == null) return false;
    return publishFiles(this._filesSab, encodeFiles(normalizeFiles(fromPython(files))));
  }

  kill(reason = "killed") {
    if (this.ended) return;
    if (this._hdr) {
      Atomics.store(this._hdr, H_KILL, 1);
      Atomics.notify(this._hdr, H_KILL);
      Atomics.notify(this._hdr, H_READ); // a writer waiting for ring space
    }
    this._drain();
    this.worker.terminate(); // at once, even mid-loop; _finish does not give it back
    this._finish({ kind: "killed", reason: String(reason) });
  }

  usage() {
    if (this._startedAt == null) return { cpuMs: 0, memoryBytes: 0 };
    const ranMs = Math.max(0, (this._endedAt ?? performance.timeOrigin + performance.now()) - this._startedAt);
    if (!this._usage) return { cpuMs: ranMs, memoryBytes: this.ended ? 0 : this._memoryBytes };
    const busyMs = Number(Atomics.load(this._usage, U_BUSY_US)) / 1000;
    const mark = Atomics.load(this._usage, U_MARK_US); // -1: asleep, or it ended
    const awakeMs = mark < 0n ? 0 : Math.max(0, ranMs - Number(mark) / 1000);
    const memoryBytes = this.ended ? 0 : Number(Atomics.load(this._usage, U_MEMORY));
    return { cpuMs: busyMs + awakeMs, memoryBytes };
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
