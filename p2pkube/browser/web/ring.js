// ring.js — one job: the layout of the shared output ring, the contract between the page's side
// of a pod instance (bridge/instances.js allocates the ring, drains it and raises the kill flag)
// and the pod's Worker (worker.js writes its output there and sleeps on it). Both import this
// module (esbuild bundles it into each), so the two sides cannot drift apart.
//
// One SharedArrayBuffer per instance: a header of HEADER_BYTES (the Int32 slots H_* below), then
// the ring of RING_BYTES (a power of two). The worker appends records, each [stream u8][length
// u32 little-endian][bytes], at H_WRITE and rings the doorbell (H_BELL 0 -> 1, then a "drain"
// message); the page reads from H_READ up to H_WRITE. Positions are byte counts that wrap (| 0);
// a position's place in the ring is pos & (RING_BYTES - 1).

export const RING_BYTES = 1 << 20;
export const HEADER_BYTES = 64;
// Int32 slots of the header.
export const H_WRITE = 0, H_READ = 1, H_BELL = 2, H_KILL = 3, H_SLEEPS = 4, H_SLEPT_MS = 5, H_MODE = 6;
/** Bytes before a record's payload: its stream (u8) and the payload's length (u32 LE). */
export const RECORD_HEAD = 5;
/** A record's stream byte: the WASI fd the guest wrote to. */
export const STDOUT = 1, STDERR = 2;
/** H_MODE: how the worker sleeps (0 before its first sleep); SLEEP_MODES[mode] names it. */
export const MODE_ATOMICS = 1, MODE_BUSY = 2;
export const SLEEP_MODES = [null, "atomics", "busy-wait"];
/**
 * The instance's usage (what `kubectl top` shows of it), in the header's second half, read
 * through a BigInt64Array at USAGE_OFFSET (Atomics work on it, and nothing overflows in a pod's
 * months): U_BUSY_US, the microseconds it ran (not asleep) up to U_MARK_US; U_MARK_US, the
 * Worker's clock (microseconds since the instance started) when it last woke, or -1 while it
 * sleeps or after it ended; U_MEMORY, its linear memory's byteLength, as last seen by a WASI
 * call. The page adds the time since U_MARK_US while the instance runs (a Worker has no CPU
 * clock: time awake in a Worker of its own is the nearest measure).
 */
export const USAGE_OFFSET = 32;
export const U_BUSY_US = 0, U_MARK_US = 1, U_MEMORY = 2;
