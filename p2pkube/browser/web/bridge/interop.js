// interop.js — one job: how values cross between the agent's Python (Pyodide) and the bridge.
// Every other bridge module takes callbacks, handler objects, option objects and bytes through
// these helpers, which implement the conventions listed at the top of ../bridge.js (Python
// proxies copied and released, callbacks called defensively, bytes copied into fresh
// Uint8Arrays, Python dicts converted).

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
export function keep(fn) {
  if (fn == null) return null;
  if (isPyProxy(fn)) return fn.copy();
  return typeof fn === "function" ? fn : null;
}

export function release(fn) {
  if (isPyProxy(fn)) {
    try {
      fn.destroy();
    } catch (_) {
      // already destroyed
    }
  }
}

export function errorText(e) {
  if (e == null) return String(e);
  if (typeof e === "string") return e;
  return e.message ? String(e.message) : String(e);
}

/** Call a callback; never throws. Results that are Promises (or Python awaitables) are watched. */
export function invoke(fn, what, ...args) {
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
export function pick(handlers, name) {
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
export function toBytes(x, what = "bytes") {
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
export function fromPython(x) {
  if (isPyProxy(x)) return x.toJs({ dict_converter: Object.fromEntries, create_pyproxies: false });
  return x;
}
